"""run(recipe) -> RunReport: load, export, compress, measure, report. Owns the run folder.

Order: the model and data are loaded; the FP32 model is exported to ONNX and checked for parity;
techniques on the PyTorch model (prune, finetune) run in order and their result is exported too;
techniques on an ONNX file (quantize) run on each export; then every artifact (PyTorch eager FP32
as the as-trained reference, and every file on every runtime the recipe lists) is evaluated and
benchmarked the same way. Techniques and runtimes come from their registries. Every finished
stage is recorded (stages.py), so `run --resume` continues where a run stopped; a Ctrl-C during
measurement still writes a report of what finished, marked incomplete.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from greencompress.compress import distributed
from greencompress.compress.technique import StageContext, TorchModel, tag_words
from greencompress.compress.training import FineTuning, serve
from greencompress.core.cache import cache_dir
from greencompress.core.errors import DataError, RecipeError
from greencompress.core.files import write_text_atomic
from greencompress.measure.accuracy import evaluate
from greencompress.measure.energy import select_meter
from greencompress.measure.energy.carbon import carbon_settings
from greencompress.measure.environment import environment
from greencompress.measure.lock import measurement_lock
from greencompress.models.data import DataSplits, batches, fixed_batch, load_data
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import LoadedModel, load_model
from greencompress.pipeline.artifacts import (
    Made,
    artifact_name,
    plan_artifacts,
    reduced_precisions,
)
from greencompress.pipeline.folder import create_run_dir, interrupted_note, save_recipe
from greencompress.pipeline.gates import check_energy_gate_is_measurable, evaluate_gates
from greencompress.pipeline.measurement import (
    accuracies,
    benchmark_all,
    saved_idle_checks,
    sweep_power_limits,
)
from greencompress.pipeline.recipe import Recipe, recipe_to_dict
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report import write_reports
from greencompress.report.schema import (
    ArtifactResult,
    RunReport,
    StageRecord,
    compare_same_runtime,
)
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.device import resolve_device
from greencompress.runtimes.export import (
    export_with_parity,
    exporter_of,
    plan_fusion,
    with_fusion,
)
from greencompress.runtimes.pytorch import TorchRunner, set_threads

__all__ = ["create_run_dir", "run", "serve_fine_tuning"]

log = logging.getLogger(__name__)


def run(recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None,
        shared_cache: Path | None = None) -> RunReport:
    """Execute a validated recipe into `run_dir` (new, or one to resume) and return the report.

    The report is also written as report.json, report.md and report.html. `shared_cache` (default:
    `<cache>/stages`) holds export and quantization outputs that later runs with the same inputs reuse.
    """
    store = StageStore(run_dir, shared_cache or cache_dir() / "stages")
    started = store.finished("run", stage_key(recipe_to_dict(recipe)))
    if started is None:
        save_recipe(recipe, run_dir, recipe_path)
        started = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        store.save("run", stage_key(recipe_to_dict(recipe)), started)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    attempt = _Run(recipe, run_dir, store, progress)
    try:
        return attempt.execute(started["created_utc"])
    except KeyboardInterrupt:
        if not (run_dir / "report.json").exists():
            write_text_atomic(run_dir / "report.md", interrupted_note(recipe, run_dir, attempt.finished))
        raise
    finally:
        distributed.share({"kind": "done"})  # under torchrun, the other ranks may stop waiting


def serve_fine_tuning(recipe: Recipe) -> None:
    """The loop of a torchrun rank other than 0: train along with rank 0 whenever it fine-tunes, write nothing."""
    torch.manual_seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    loaded = load_model(recipe.model)
    serve(lambda: load_model(recipe.model).module, load_model_data(recipe, loaded), recipe.seed, recipe.input_shape)


def load_model_data(recipe: Recipe, loaded: LoadedModel) -> DataSplits:
    """The recipe's data as the model needs it: text tokenised by its tokenizer, images checked against how a
    vision transformer's processor prepares them and labelled in its head's order."""
    if loaded.image_preprocessing is not None:
        from greencompress.models.huggingface import check_image_data

        check_image_data(loaded.image_preprocessing, recipe.data, loaded.provenance["folder"])
    data = load_data(recipe.data, recipe.seed, loaded.tokenization(),
                     loaded.label_names if loaded.tokenizer is None else None)
    head = getattr(getattr(loaded.module, "network", None), "config", None)
    if loaded.image_preprocessing is not None and head is not None and data.labelled \
            and head.num_labels != data.num_classes:
        raise DataError(f"data: {data.num_classes} classes, but the model's head has {head.num_labels} outputs with no "
                        f"label names to match them by; set model.num_classes: {data.num_classes} with a finetune "
                        f"stage for a new head, or name the head's labels (config.json id2label)")
    return data


class _Run:
    """One attempt at a run: the stages in order, each reused when an earlier attempt finished it."""

    def __init__(self, recipe: Recipe, run_dir: Path, store: StageStore, progress):
        self.recipe, self.run_dir, self.store, self.progress = recipe, run_dir, store, progress
        self.finished: list[str] = []
        self.records: list[StageRecord] = []
        self.lock = None  # the machine's measurement lock, once held (measure/lock.py)
        self.sweep: tuple[dict, ...] = ()  # rows of a GPU power-limit sweep (benchmark.gpu_power_limits)
        self.hugging_face_folder: str | None = None  # where the compressed transformer was saved, or why it was not

    def execute(self, created: str) -> RunReport:
        recipe = self.recipe
        self.device = resolve_device(recipe.benchmark.device)  # first: a GPU or meter asked for but absent stops here
        meter, reason = select_meter(recipe.energy, gpu_uuid=self.device.uuid if self.device.kind == "cuda" else None)
        log.info("energy meter: %s (%s)", meter.method, reason)
        check_energy_gate_is_measurable(recipe.gates, meter.describe().measured, meter.method)
        log.info("stage load: model (%s) and data (%s)", recipe.model.source, recipe.data.kind)
        self.loaded = load_model(recipe.model, self.progress)  # first: text data is tokenised by the model's tokenizer
        self.inputs = self.loaded.inputs or ModelInputs.image(recipe.input_shape)
        self.fusion = plan_fusion(recipe.export, recipe.benchmark.runtimes, self.inputs)
        check_sequence_length(recipe, self.inputs)
        if self.loaded.provenance.get("new_head") and not any(s.technique == "finetune" for s in recipe.stages):
            raise RecipeError("stages: the model folder has no classification head, so greencompress made a new one "
                              "at random: add a finetune stage (before quantize) to train it")
        self.data = load_model_data(recipe, self.loaded)
        self.head = self.loaded.fit_head(self.data, recipe.data.batch_size)
        if self.head:
            log.info("model head: %s (%d texts)", self.head["head"], self.head["texts"])
        self.fine_tuning = FineTuning(self.loaded.module, self.data, recipe.seed, self.progress)
        self.finished.append("load")
        original = self._made(TorchModel(self.loaded.module), (), stage_key(
            "load", recipe.model.model_dump(mode="json"), self.loaded.provenance.get("sha256"),
            *([recipe.data.model_dump(mode="json"), recipe.seed] if self.head else [])))
        if recipe.export.transformer_fusion == "auto" and self.fusion.fused:
            self.fusion = self._measured_fusion(original.key)
        exports = self._exports(original, "model_fp32", "export")
        compressed = self._model_stages(original)
        if compressed is not None:
            if self.loaded.provenance.get("source") == "huggingface":
                self._save_hugging_face_folder(compressed)
            exports += self._exports(compressed, "model_compressed_fp32", "export-compressed")
        made = [original, *([compressed] if compressed else []), *exports, *self._file_stages(exports)]
        return self._measure(made, meter, reason, created)

    def _made(self, model: TorchModel, techniques: tuple[str, ...], key: str) -> Made:
        import torch_pruning

        # A transformer's MACs are those of one sequence of the longest benchmarked length.
        example = self.inputs.example(1, max(self.recipe.benchmark.sequence_lengths))
        macs, params = torch_pruning.utils.count_ops_and_params(model.module, example)
        return Made(model, None, "fp32", techniques, (), int(params), int(macs), key)

    def _context(self, work_dir: Path, output_path: Path | None = None, source: TorchModel | None = None):
        recipe = self.recipe
        return StageContext(self.data, self.inputs, recipe.data.batch_size, recipe.seed, work_dir, output_path,
                            source, self.fine_tuning,
                            lambda model, path: asdict(self._export_checked(model, path, not self.fusion.portable)),
                            self.progress, self._latency_check())

    def _latency_check(self):
        """Untrained latency on the run's file runtimes at its batch sizes and served precision (CNNs: it prunes channels)."""
        from greencompress.pipeline.proxy import UntrainedLatency

        recipe = self.recipe
        runtimes = [name for name in recipe.benchmark.runtimes if RUNTIMES.get(name).runs == "onnx"]
        if not runtimes or self.inputs.encoder:
            return None
        quantize = next((stage.config for stage in recipe.stages if stage.technique == "quantize"), None)
        return UntrainedLatency(self.inputs.image_shape, runtimes, list(recipe.benchmark.batch_sizes),
                                recipe.benchmark.runner_settings, quantize, self.data.calibration, recipe.export.opset)

    def _measured_fusion(self, model_key: str):
        """`auto`: ONNX Runtime keeps the fused graph unless it is measured slower here (pipeline/fusion_check.py)."""
        from greencompress.measure.environment import runtime_versions
        from greencompress.pipeline.fusion_check import (
            FusionCheck,
            decide,
            measure_fusion,
        )
        from greencompress.pipeline.proxy import cpu_identity

        recipe = self.recipe
        shape = (min(recipe.benchmark.batch_sizes), max(recipe.benchmark.sequence_lengths))
        settings = recipe.benchmark.runner_settings
        key = stage_key("fusion-check", model_key, asdict(self.inputs), recipe.export.model_dump(), cpu_identity(),
                        runtime_versions().get("onnxruntime"), settings.threads, shape)
        record = self.store.finished("fusion-check", key)
        if record is None:
            log.info("transformer fusion check: is the fused graph faster on this CPU?")
            parity = list(batches(self.data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples))
            record = asdict(measure_fusion(self.loaded.module, self.inputs, recipe.export, parity,
                                           fixed_batch(self.data.eval, *shape), settings, shape))
            self.store.save("fusion-check", key, record, share=True)
        return decide(self.fusion, FusionCheck(**record))

    def _export_checked(self, model, output: Path, fused: bool):
        recipe = self.recipe
        return export_with_parity(model, self.inputs, output, with_fusion(recipe.export, fused),
                                  batches(self.data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples),
                                  recipe.benchmark.threads)

    def _exports(self, source: Made, stem: str, stage: str) -> list[Made]:
        """The exports of one model the fusion plan asks for: the portable graph, the fused one, or both (the fused
        twin then named `..._fused.onnx`)."""
        made, parities = [], []
        for fused in [False] * self.fusion.portable + [True] * self.fusion.fused:
            twin = "_fused" if fused and self.fusion.portable else ""
            exported, parity = self._export(source, f"{stem}{twin}.onnx", stage + twin.replace("_", "-"), fused)
            made.append(exported)
            parities.append(parity)
        if stage == "export":  # the report's export line: the first file's parity, what fused, and why so
            self.parity = {**parities[0], "fusion": parities[-1].get("fusion"), "fusion_plan": self.fusion.note}
        return made

    def _export(self, source: Made, file_name: str, stage: str, fused: bool) -> tuple[Made, dict]:
        spec = with_fusion(self.recipe.export, fused)
        key = stage_key(stage, source.key, asdict(self.inputs), spec.model_dump())
        record = self.store.finished(stage, key, files=(file_name,))
        if record is None:
            record = {"parity": asdict(self._export_checked(source.model.module, self.run_dir / file_name, fused))}
            self.store.save(stage, key, record, files=(file_name,), share=True)
        self.finished.append(stage)
        return replace(source, path=self.run_dir / file_name, key=key, fused=fused), record["parity"]

    def _model_stages(self, original: Made) -> Made | None:
        """The techniques on the PyTorch model, each on the last one's output; None when the recipe has none."""
        recipe, current, key, done = self.recipe, original.model, original.key, ()
        for index, stage in enumerate([s for s in recipe.stages if s.method.works_on == "torch"], start=1):
            name, output = f"{index}-{stage.technique}", f"model_{index}_{stage.technique}.pt"
            # Training on N processes shuffles differently from one: the process count is part of the key.
            resolved = stage.method.resolved(stage.config)
            if stage.method.uses_latency_check(stage.config) and (check := self._latency_check()) is not None:
                resolved["latency_check"] = check.identity()  # what the timing depends on decides the stage too
            key = stage_key(name, key, resolved, recipe.data.model_dump(mode="json"), recipe.seed,
                            distributed.world_size())
            record = self.store.finished(name, key, files=(output,))
            if record is None:
                log.info("stage %s", stage.technique)
                result = stage.method.apply(stage.config, current, self._context(self.run_dir / "stages" / name))
                current = result.model
                record = {"settings": result.settings,
                          "metrics": {**result.metrics, **self._torch_metrics(current, f"evaluating after {name}")}}
                current.save(self.run_dir / output)
                self.store.save(name, key, record, files=(output,), share=True)
            else:
                current = TorchModel.load(self.run_dir / output, self._fresh_original(), self.inputs)
            self.records.append(StageRecord(stage.technique, record["settings"], record["metrics"]))
            self.finished.append(name)
            done += (stage.technique,)
        return self._made(current, done, key) if done else None

    def _save_hugging_face_folder(self, compressed: Made) -> None:
        """The compressed transformer as a folder plain transformers reloads (model_compressed_hf/), where it can."""
        import shutil
        import tempfile

        from greencompress.models.huggingface import save_folder

        target = self.run_dir / "model_compressed_hf"
        with tempfile.TemporaryDirectory(dir=self.run_dir) as scratch:
            why_not = save_folder(compressed.model.module, self.loaded.tokenizer, Path(scratch) / "folder",
                                  Path(self.loaded.provenance["folder"]) / "preprocessor_config.json")
            if why_not is None:
                shutil.rmtree(target, ignore_errors=True)
                (Path(scratch) / "folder").rename(target)
        self.hugging_face_folder = why_not or f"{target.name}/ (save_pretrained: reloads with from_pretrained)"
        log.info("compressed model: %s", self.hugging_face_folder)

    def _fresh_original(self):
        """A new copy of the loaded model, its fitted head included (to rebuild a saved stage's model on)."""
        import copy

        return copy.deepcopy(self.loaded.module)

    def _file_stages(self, exports: list[Made]) -> list[Made]:
        """The techniques on an ONNX file, each on every export (the original model's, and the compressed one's)."""
        recipe, made = self.recipe, []
        on_files = [s for s in recipe.stages if s.method.works_on == "onnx"]
        for stage in on_files:
            settings, by_source = {}, {}
            # Named by variant only beside another stage of the technique (recipe.py checks they differ).
            alike = sum(other.technique == stage.technique for other in on_files) > 1
            variant = stage.method.variant(stage.config) if alike else ""
            for source in exports:
                tags = tag_words(source.model_techniques)
                twin = "fused" if source.fused and self.fusion.portable else ""  # beside a portable file of its own
                name = "-".join(part for part in (stage.technique, variant, tags, twin) if part)
                file_name = (f"model_{'compressed_' if tags else ''}{stage.method.tag}{'_' + variant if variant else ''}"
                             f"{'_' + twin if twin else ''}.onnx")
                key = stage_key(stage.technique, source.key, stage.method.resolved(stage.config),
                                recipe.data.model_dump(mode="json"), recipe.seed)
                record = self.store.finished(name, key, files=(file_name,))
                if record is None:
                    log.info("stage %s (%s)", stage.technique, source.path.name)
                    result = stage.method.apply(stage.config, source.path, self._context(
                        self.run_dir / "stages" / name, self.run_dir / file_name, source.model))
                    record = {"settings": result.settings, "metrics": result.metrics, "precision": result.precision}
                    self.store.save(name, key, record, files=(file_name,), share=True)
                settings = record["settings"]
                if record["metrics"]:
                    by_source[artifact_name("onnxruntime", source.model_techniques, source.precision)] = record["metrics"]
                made.append(replace(source, path=self.run_dir / file_name, precision=record["precision"],
                                    file_techniques=(*source.file_techniques, stage.technique), key=key,
                                    variant=variant))
            self.records.append(StageRecord(stage.technique, settings, {"by_source": by_source} if by_source else {}))
            self.finished.append("-".join(part for part in (stage.technique, variant) if part))
        return made

    def _torch_metrics(self, model: TorchModel, label: str) -> dict:
        """What a stage on the PyTorch model left: accuracy on the evaluation split, MACs, parameters, weights size."""
        made = self._made(model, (), "")
        metrics = {"macs": made.macs, "params": made.params,
                   "state_dict_bytes": sum(t.numel() * t.element_size() for t in model.module.state_dict().values())}
        if self.data.labelled:
            accuracy = evaluate(TorchRunner(model.module), self.data.eval, self.recipe.data.batch_size, self.progress,
                                label)
            metrics.update(top1=accuracy.top1, top5=accuracy.top5)
        return metrics

    def _measure(self, made: list[Made], meter, meter_reason: str, created: str) -> RunReport:
        recipe, store = self.recipe, self.store
        reduced, self.precision_reason = reduced_precisions(recipe.benchmark, self.device)
        checkpoint = self.loaded.provenance.get("path") or self.loaded.provenance.get("checkpoint")
        artifacts = plan_artifacts(made, recipe.benchmark.runtimes, reduced, Path(checkpoint) if checkpoint else None,
                                   "torch" if self.device.kind == "cpu" else "torch-cuda")
        key = stage_key("measure", [item.key for item in made], recipe.data.model_dump(mode="json"), recipe.seed,
                        recipe.benchmark.model_dump(), recipe.energy.model_dump())
        settings = replace(recipe.benchmark.runner_settings, device_index=self.device.index or 0)
        runners = {name: RUNTIMES.get(artifact.runtime).runner(source, replace(settings, precision=artifact.precision))
                   for name, (artifact, source) in artifacts.items()}
        # The original FP32 model as trained (PyTorch): what every artifact's embeddings must agree with.
        reference = next((name for name, (artifact, _) in artifacts.items() if artifact.is_original_model
                          and artifact.precision == "fp32" and artifact.source == "torch"), None)
        accuracy = accuracies(runners, self.data, recipe.data.batch_size, store, key, self.progress, reference)
        self.finished.append("accuracy")
        idle_checks = saved_idle_checks(store, key)
        benchmarks: dict[str, list] = {name: [] for name in artifacts}

        def report(complete: bool) -> RunReport:
            results = [ArtifactResult(artifact, accuracy[name], tuple(benchmarks[name]))
                       for name, (artifact, _) in artifacts.items()]
            return _report(recipe, self, results, meter, meter_reason, idle_checks, created, complete)

        try:
            with measurement_lock(f"run {recipe.name}") as self.lock:  # never beside another process's windows
                benchmark_all(runners, self.data, recipe.benchmark, meter, recipe.energy.idle_s, store, key,
                              benchmarks, idle_checks, self.progress, self.inputs.are_tokens)
                if recipe.benchmark.gpu_power_limits:
                    self.sweep = sweep_power_limits(runners, self.data, recipe.benchmark, meter, recipe.energy.idle_s,
                                                    store, key, self.device.uuid, self.progress)
        except KeyboardInterrupt:
            if any(benchmarks.values()):
                write_reports(report(complete=False), self.run_dir)
                log.warning("interrupted: report of the finished batch sizes written to %s, marked incomplete",
                            self.run_dir)
            raise
        final = report(complete=True)
        write_reports(final, self.run_dir)
        log.info("report written to %s", self.run_dir)
        return final


def check_sequence_length(recipe: Recipe, inputs: ModelInputs) -> None:
    """A benchmarked sequence length the model cannot take stops the run before any work."""
    too_long = [length for length in recipe.benchmark.sequence_lengths if length > inputs.max_sequence_length]
    if inputs.are_tokens and too_long:
        raise RecipeError(f"benchmark.sequence_lengths: {too_long[0]} is above the model's maximum sequence length "
                          f"{inputs.max_sequence_length} (its config's max_position_embeddings)")


def _report(recipe: Recipe, attempt: _Run, results: list[ArtifactResult], meter, meter_reason: str, idle_checks,
            created: str, complete: bool) -> RunReport:
    comparisons = compare_same_runtime(results)
    notes = [] if attempt.data.labelled else ["Synthetic inputs: no accuracy is reported, only latency and energy."]
    notes.append(attempt.precision_reason + ".")
    if attempt.inputs.are_tokens:
        lengths = ", ".join(map(str, recipe.benchmark.sequence_lengths))
        notes.append(f"Transformer benchmarks (shape: batch x sequence): every input is a real evaluated text padded "
                     f"(or cut) to the sequence length ({lengths} tokens), attention_mask 0 on padding. Real text "
                     f"lengths are in the data line.")
    if attempt.hugging_face_folder:
        notes.append(f"Compressed transformer: {attempt.hugging_face_folder}.")
    if not complete:
        notes.append(f"INCOMPLETE: interrupted during benchmarking; resume with: greencompress run --resume "
                     f"{attempt.run_dir}")
    loaded: LoadedModel = attempt.loaded
    return RunReport(
        name=recipe.name, created_utc=created, run_dir=attempt.run_dir, recipe=recipe_to_dict(recipe),
        environment={**environment(recipe.benchmark.threads, recipe.benchmark.allow_spinning, attempt.device.torch_name,
                                   meter.identity() if hasattr(meter, "identity") else None),
                     **({"measurement_lock": attempt.lock.to_dict()} if attempt.lock else {})},
        provenance={**loaded.provenance, **({"head": attempt.head} if attempt.head else {})},
        data=attempt.data.description,
        export={**dict(zip(("exporter", "opset"), exporter_of(attempt.inputs, recipe.export.opset))),
                "torch_version": torch.__version__,
                "parity": attempt.parity},
        stages=attempt.records, energy_meter=meter.describe(), energy_meter_reason=meter_reason,
        idle=idle_checks[0], idle_checks=tuple(idle_checks),
        carbon=carbon_settings(recipe.energy.region, recipe.energy.carbon_intensity, recipe.energy.pue,
                               recipe.energy.electricity_price_per_kwh, recipe.energy.currency),
        artifacts=results, comparisons=comparisons, notes=notes,
        gates=tuple(evaluate_gates(recipe.gates, comparisons)), complete=complete, power_limit_sweep=attempt.sweep,
    )
