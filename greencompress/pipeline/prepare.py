"""prepare(recipe) -> Prepared: what a run starts from, made once, the same way for every process that needs it.

The main run, every torchrun rank (pipeline/execute.py: serve_fine_tuning) and each search trial's shared
context (search/study.py) call `prepare`; nothing else loads a model or its data for a recipe. The order
is the order of what can fail cheapest: `preflight` first (the device and the meter, a GPU or meter asked
for but absent; the model's and the data's files, opened without loading weights), then the model, then
its data, which the model's tokenizer and head decide.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, replace

from greencompress.core.errors import RecipeError
from greencompress.measure.energy import select_meter
from greencompress.measure.energy.meter import EnergyMeter
from greencompress.models.data import DataSplits
from greencompress.models.inputs import ModelInputs
from greencompress.models.serving import Scorer
from greencompress.models.sources import LoadedModel
from greencompress.models.tasks import Task, Workload
from greencompress.pipeline.gates import check_energy_gate_is_measurable
from greencompress.pipeline.recipe import Recipe
from greencompress.runtimes.device import Device, resolve_device
from greencompress.runtimes.export import FusionPlan, plan_fusion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A recipe made ready to run: where it runs and how energy is read, the model, what it takes, its data."""

    recipe: Recipe
    task: Task
    device: Device
    meter: EnergyMeter
    meter_reason: str  # why this meter (what else was tried)
    loaded: LoadedModel
    inputs: ModelInputs
    data: DataSplits
    head: dict  # what the task fitted on the data before the run (a sentence embedder's centroids); {} when nothing
    fusion: FusionPlan  # the exports the run plans; `transformer_fusion: auto` may still decide by measuring

    @property
    def scorer(self) -> Scorer:
        """How every artifact's served outputs are scored (the task's; a sentence embedder's fitted centroids)."""
        return self.task.scorer(self.loaded.module)

    def fingerprint(self) -> dict:
        """What two preparations of one recipe must agree on, as plain data (the model by its weights' hash)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.loaded.module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {
            "task": self.task.name,
            "device": asdict(self.device),
            "meter": self.meter.method,
            "provenance": self.loaded.provenance,
            "inputs": asdict(self.inputs),
            "data": self.data.description,
            "samples": [len(self.data.eval), len(self.data.calibration)],
            "head": self.head,
            "fusion": asdict(self.fusion),
            "weights_sha256": digest.hexdigest(),
        }


def preflight(recipe: Recipe) -> tuple[Device, EnergyMeter, str]:
    """Everything a run would read or need, checked before any work and without loading weights: the device, the
    energy meter (and gates it must serve), the model's files and the data's (models/tasks/: Task.preflight).
    Returns the device, the meter and why it was chosen; a GreencompressError (exit 2) names the file and field."""
    device = resolve_device(recipe.benchmark.device)
    meter, reason = select_meter(recipe.energy, gpu_uuid=device.uuid if device.kind == "cuda" else None)
    check_energy_gate_is_measurable(recipe.gates, meter.describe().measured, meter.method)
    workload = Workload(tuple(recipe.benchmark.sequence_lengths), recipe.benchmark.new_tokens)
    recipe.task.preflight(recipe.model, recipe.data, workload)
    return device, meter, reason


def prepare(recipe: Recipe, progress=None) -> Prepared:
    """Resolve the device and meter, load the model and its data for `recipe`, and fit what the task fits first."""
    device, meter, reason = preflight(recipe)
    log.info("energy meter: %s (%s)", meter.method, reason)
    task = recipe.task
    log.info("stage load: model (%s, %s) and data (%s)", recipe.model.source, task.name, recipe.data.kind)
    loaded = task.load(recipe.model, progress)  # first: text data is tokenised by the model's tokenizer
    loaded = replace(loaded, provenance={**loaded.provenance, "task": task.name})
    inputs = task.inputs(loaded, recipe.data)
    task.check_inputs(inputs, recipe.benchmark.sequence_lengths)
    if loaded.provenance.get("new_head") and recipe.stage("finetune") is None:
        raise RecipeError(
            "stages: the model folder has no classification head, so greencompress made a new one "
            "at random: add a finetune stage (before quantize) to train it"
        )
    data = task.load_data(loaded, recipe.data, recipe.seed)
    head = task.fit_head(loaded, data, recipe.data.batch_size)
    if head:
        log.info("model head: %s (%d texts)", head["head"], head["texts"])
    fusion = plan_fusion(recipe.export, recipe.benchmark.runtimes, inputs)
    return Prepared(recipe, task, device, meter, reason, loaded, inputs, data, head, fusion)
