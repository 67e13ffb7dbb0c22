"""The task seam: what kind of model this is, and everything that follows from it.

A task owns how its models load and are fed (their `ModelInputs`), which data kinds it reads and how
they are labelled, what it fits on the data before a run (a sentence embedder's centroid head), which
metric a budget applies to, what a benchmark workload is (batch sizes, and sequence lengths for token
models), and which structure the structural techniques remove (a CNN's channels and residual blocks, an
encoder's heads, FFN neurons and layers). Code outside the task modules asks the task; it never tests
what kind of model it holds. A plugin registers a `Task` in the `greencompress.tasks` entry-point group.
"""

from __future__ import annotations

import difflib
from abc import ABC
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from greencompress.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from greencompress.models.data import DataSpec, DataSplits
    from greencompress.models.inputs import ModelInputs
    from greencompress.models.serving import Scorer
    from greencompress.models.sources import LoadedModel, ModelSpec

# What the structural techniques (prune, depth) and static int8 act on: a CNN's output channels and identity
# residual blocks, or a transformer encoder's attention heads, FFN neurons and layers (int8 of matrix products only);
# a causal LM's decoder layers take weight-only rounding (compress/weight_only.py).
Structure = Literal["channels", "encoder", "decoder"]


@dataclass(frozen=True)
class Workload:
    """What a run will feed the model, for preflight to check against it: sequence (or prompt) lengths in tokens,
    and the tokens a generation run adds after each prompt (benchmark.sequence_lengths, benchmark.new_tokens)."""

    sequence_lengths: tuple[int, ...]
    new_tokens: int = 0


class Task(ABC):
    """A kind of model. Subclasses set the class attributes; the hooks have defaults for image classifiers."""

    name: ClassVar[str]  # the recipe's `model.task`
    aliases: ClassVar[tuple[str, ...]] = ()  # other names users know it by (Hugging Face's pipeline tags)
    sources: ClassVar[tuple[str, ...]]  # the model.source values it loads
    data_kinds: ClassVar[tuple[str, ...]]  # the data.kind values it reads
    takes_tokens: ClassVar[bool] = False  # benchmarks then measure every benchmark.sequence_lengths too
    # What a budget (the recommendation, a search's budget) judges: `top1` points lost, `embedding` fidelity
    # to the original model (measure/quality.py), or a language model's `perplexity` increase.
    primary_metric: ClassVar[Literal["top1", "embedding", "perplexity"]] = "top1"
    # How a run measures it: `classify` (pipeline/produce.py and measurement.py: batches of inputs through exported
    # files) or `generate` (pipeline/generate.py: prompts, prefill and decode, per generated token).
    workload_kind: ClassVar[Literal["classify", "generate"]] = "classify"

    def structure(self, model: ModelSpec) -> Structure:
        """What structure the model of `model` has (and so what the structural techniques remove)."""
        return "channels"

    def check_recipe(self, model: ModelSpec, data: DataSpec) -> None:
        """Raise ValueError when the model or data sections cannot serve this task (called at recipe load)."""
        if model.source not in self.sources:
            raise ValueError(
                f"model.task {self.name}: loads models of source {', '.join(self.sources)}, got {model.source!r}"
            )
        if data.kind not in self.data_kinds:
            close = difflib.get_close_matches(data.kind, list(self.data_kinds), n=1)
            raise ValueError(
                f"data.kind: {self.name} models are fed data of kind {' or '.join(self.data_kinds)}, got "
                f"{data.kind!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            )

    def preflight(self, model: ModelSpec, data: DataSpec, workload: Workload) -> None:
        """Check what a run would read (model files, data files) and that the workload fits the model, without
        loading weights or all the data; raise ModelLoadError or DataError naming the file and field. `validate` and
        every run call it first."""
        from greencompress.models.sources import check_model_files

        check_model_files(model)

    def needs_new_head(self, config: dict) -> bool:
        """Whether a model with this Hugging Face config lacks the head this task needs (a finetune stage then trains
        a new one with model.num_classes outputs); False for models without such a config."""
        return False

    def data_hints(self, model: Path, config: dict) -> dict:
        """Data settings the model itself states (a vision transformer's image size and normalisation), for a recipe
        drafted by `greencompress init`; {} when the data must say."""
        return {}

    def load(self, spec: ModelSpec, progress=None) -> LoadedModel:
        """The model in eval mode, with its provenance."""
        from greencompress.models.sources import load_model

        return load_model(spec, progress)

    def inputs(self, loaded: LoadedModel, data: DataSpec) -> ModelInputs:
        """What the model takes: by default one image of the data's size, channels first."""
        from greencompress.models.inputs import ModelInputs

        return loaded.inputs or ModelInputs.image((3, data.image_size, data.image_size))

    def load_data(self, loaded: LoadedModel, data: DataSpec, seed: int) -> DataSplits:
        """The recipe's data as this model needs it."""
        from greencompress.models.data import load_data

        return load_data(data, seed)

    def fit_head(self, loaded: LoadedModel, data: DataSplits, batch_size: int) -> dict:
        """Fit what the model's head learns from the data before a run; {} when nothing (the default)."""
        return {}

    def scorer(self, module: nn.Module) -> Scorer:
        """How the served outputs of `module` (models/serving.py) are scored, outside the graph a user deploys: by
        default the first output is the logits, and there is no embedding to judge."""
        from greencompress.models.serving import logits_only

        return logits_only

    def serving_files(
        self, loaded: LoadedModel, data: DataSpec, splits: DataSplits, module: nn.Module, folder: Path
    ) -> list[str]:
        """Write into `folder`, beside a deployable ONNX file exported from `module`, what a user's code needs to feed
        it and read its outputs (pipeline/deploy.py); returns the names written. By default an image model's
        preprocessing: how the run prepared its images, and the class names in output order."""
        import json

        resize = data.resize_to or data.image_size
        preprocessing = {
            "input": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "resize_shorter_side": resize,
            "center_crop": data.image_size,
            "scale": "divide by 255, then (value - mean) / std per channel",
            "mean": list(data.mean),
            "std": list(data.std),
            "labels": list(splits.class_names) if splits.class_names else None,
            "data_kind": data.kind,
        }
        (folder / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n", encoding="utf-8")
        return ["preprocessing.json"]

    def loading_snippet(self, folder: str) -> str:
        """Python that loads a deploy folder (`folder`, as the run names it) and runs it once: for a README."""
        return "\n".join(
            [
                "import json",
                "import onnxruntime",
                "from PIL import Image",
                "from torchvision import transforms",
                "",
                f'folder = "{folder}"',
                'prep = json.load(open(f"{folder}/preprocessing.json"))',
                "prepare = transforms.Compose([",
                '    transforms.Resize(prep["resize_shorter_side"]),',
                '    transforms.CenterCrop(prep["center_crop"]),',
                "    transforms.ToTensor(),",
                '    transforms.Normalize(prep["mean"], prep["std"]),',
                "])",
                'session = onnxruntime.InferenceSession(f"{folder}/onnx/model.onnx")',
                'image = prepare(Image.open("your_image.jpg").convert("RGB"))[None].numpy()',
                'logits = session.run(None, {"input": image})[0]',
                'print(prep["labels"][logits.argmax()] if prep["labels"] else logits.argmax())',
            ]
        )

    def check_inputs(self, inputs: ModelInputs, sequence_lengths: list[int]) -> None:
        """Raise RecipeError for a benchmark shape the model cannot take; nothing to check for images."""

    def workload(self, batch_sizes: list[int], sequence_lengths: list[int]) -> list[tuple[int, int | None]]:
        """The shapes a benchmark measures: (batch size, sequence length or None)."""
        lengths = sequence_lengths if self.takes_tokens else [None]
        return [(size, length) for size in batch_sizes for length in lengths]

    def workload_note(self, sequence_lengths: list[int]) -> str | None:
        """What the report says of the benchmark's inputs, where there is more to say than the batch size."""
        return None


TASKS: Registry[Task] = Registry("task", "greencompress.tasks", lambda entry: entry.name)


def task_named(name: str) -> Task:
    """The registered task `name`, or the one that has it as an alias (UnknownName, with hints, when none)."""
    if name not in TASKS:
        for task in TASKS:
            if name in task.aliases:
                return task
    return TASKS.get(name)


def task_names() -> list[str]:
    """Every name a recipe may give `model.task`: the registered tasks and their aliases."""
    return [name for task in TASKS for name in (task.name, *task.aliases)]
