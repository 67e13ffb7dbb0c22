"""What a run makes before it measures: the original model's exports, the techniques on the PyTorch model (and the
compressed model's exports), then the techniques on ONNX files, each on every export.

Every stage is looked up in the run's StageStore first (pipeline/stages.py): a finished stage is reused, so
`run --resume` continues where a run stopped, and exports and quantized files are shared between runs with
the same inputs. Techniques and their configs come from the recipe; a stage gets a StageContext and never
the recipe itself.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, replace
from pathlib import Path

from greencompress.compress import distributed
from greencompress.compress.technique import StageContext, TorchModel, tag_words
from greencompress.compress.training import FineTuning
from greencompress.measure.accuracy import evaluate
from greencompress.models.data import batches, fixed_batch
from greencompress.pipeline.artifacts import Made, artifact_name
from greencompress.pipeline.deploy import write_deploy_folders
from greencompress.pipeline.prepare import Prepared
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report.schema import StageRecord
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.export import FusionPlan, export_with_parity, with_fusion
from greencompress.runtimes.pytorch import TorchRunner

log = logging.getLogger(__name__)


class Producer:
    """Makes a prepared run's models and files in order, recording each stage; `finished` names the stages done
    (for the note an interrupted run leaves), `records` what each technique reported."""

    def __init__(self, prepared: Prepared, run_dir: Path, store: StageStore, progress=None):
        self.prepared, self.run_dir, self.store, self.progress = prepared, run_dir, store, progress
        self.recipe = prepared.recipe
        self.fine_tuning = FineTuning(prepared.loaded.module, prepared.data, self.recipe.seed, progress)
        self.finished: list[str] = ["load"]
        self.records: list[StageRecord] = []
        self.fusion: FusionPlan = prepared.fusion  # `auto` may be decided by measuring (fusion_check.py)
        self.parity: dict = {}  # the original model's export: its parity, the fused operators, the fusion plan
        self.deploy_folders: dict[str, str] = {}  # each ONNX file's deployable folder (pipeline/deploy.py)

    def made(self) -> tuple[list[Made], str | None]:
        """Every model and file the recipe makes, and where the compressed Hugging Face model was saved (or why
        not; None when the run compresses no such model). Each ONNX file also gets its deployable folder."""
        recipe, loaded = self.recipe, self.prepared.loaded
        original = self._made(
            TorchModel(loaded.module),
            (),
            stage_key(
                "load",
                recipe.model.model_dump(mode="json"),
                loaded.provenance.get("sha256"),
                *([recipe.data.model_dump(mode="json"), recipe.seed] if self.prepared.head else []),
            ),
        )
        if recipe.export.transformer_fusion == "auto" and self.fusion.fused:
            self.fusion = self._measured_fusion(original.key)
        exports = self._exports(original, "model_fp32", "export")
        compressed, hugging_face_folder = self._model_stages(original), None
        if compressed is not None:
            if loaded.hugging_face_folder is not None:
                hugging_face_folder = self._save_hugging_face_folder(compressed)
            exports += self._exports(compressed, "model_compressed_fp32", "export-compressed")
        made = [original, *([compressed] if compressed else []), *exports, *self._file_stages(exports)]
        self.deploy_folders = write_deploy_folders(self.prepared, self.run_dir, made)
        return made, hugging_face_folder

    def _made(self, model: TorchModel, techniques: tuple[str, ...], key: str) -> Made:
        import torch_pruning

        # A transformer's MACs are those of one sequence of the longest benchmarked length.
        example = self.prepared.inputs.example(1, max(self.recipe.benchmark.sequence_lengths))
        macs, params = torch_pruning.utils.count_ops_and_params(model.module, example)
        return Made(model, None, "fp32", techniques, (), int(params), int(macs), key)

    def _context(self, work_dir: Path, output_path: Path | None = None, source: TorchModel | None = None):
        prepared, recipe = self.prepared, self.recipe
        return StageContext(
            prepared.data,
            prepared.inputs,
            recipe.data.batch_size,
            recipe.seed,
            work_dir,
            output_path,
            source,
            self.fine_tuning,
            lambda model, path: asdict(self._export_checked(model, path, not self.fusion.portable)),
            self.progress,
            self._latency_check(),
            prepared.scorer,
        )

    def _latency_check(self):
        """Untrained latency on the run's file runtimes at its batch sizes and served precision (a CNN's channels)."""
        from greencompress.pipeline.proxy import UntrainedLatency

        recipe = self.recipe
        runtimes = [name for name in recipe.benchmark.runtimes if RUNTIMES.get(name).runs == "onnx"]
        if not runtimes:
            return None
        return UntrainedLatency(
            self.prepared.inputs,
            runtimes,
            list(recipe.benchmark.batch_sizes),
            recipe.benchmark.runner_settings,
            recipe.stage("quantize"),
            self.prepared.data.calibration,
            recipe.export.opset,
        )

    def _measured_fusion(self, model_key: str) -> FusionPlan:
        """`auto`: ONNX Runtime keeps the fused graph unless it is measured slower here (pipeline/fusion_check.py)."""
        from greencompress.measure.environment import runtime_versions
        from greencompress.pipeline.fusion_check import FusionCheck, decide, measure_fusion
        from greencompress.pipeline.proxy import cpu_identity

        recipe, prepared = self.recipe, self.prepared
        shape = (min(recipe.benchmark.batch_sizes), max(recipe.benchmark.sequence_lengths))
        settings = recipe.benchmark.runner_settings
        key = stage_key(
            "fusion-check",
            model_key,
            asdict(prepared.inputs),
            recipe.export.model_dump(),
            cpu_identity(),
            runtime_versions().get("onnxruntime"),
            settings.threads,
            shape,
        )
        record = self.store.finished("fusion-check", key)
        if record is None:
            log.info("transformer fusion check: is the fused graph faster on this CPU?")
            parity = list(batches(prepared.data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples))
            record = asdict(
                measure_fusion(
                    prepared.loaded.module,
                    prepared.inputs,
                    recipe.export,
                    parity,
                    fixed_batch(prepared.data.eval, *shape),
                    settings,
                    shape,
                )
            )
            self.store.save("fusion-check", key, record, share=True)
        return decide(self.fusion, FusionCheck(**record))

    def _export_checked(self, model, output: Path, fused: bool):
        recipe = self.recipe
        return export_with_parity(
            model,
            self.prepared.inputs,
            output,
            with_fusion(recipe.export, fused),
            batches(self.prepared.data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples),
            recipe.benchmark.threads,
            self.prepared.scorer,
        )

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
        key = stage_key(stage, source.key, asdict(self.prepared.inputs), spec.model_dump())
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
            key = stage_key(
                name, key, resolved, recipe.data.model_dump(mode="json"), recipe.seed, distributed.world_size()
            )
            record = self.store.finished(name, key, files=(output,))
            if record is None:
                log.info("stage %s", stage.technique)
                result = stage.method.apply(stage.config, current, self._context(self.run_dir / "stages" / name))
                current = result.model
                record = {
                    "settings": result.settings,
                    "metrics": {**result.metrics, **self._torch_metrics(current, f"evaluating after {name}")},
                }
                current.save(self.run_dir / output)
                self.store.save(name, key, record, files=(output,), share=True)
            else:  # rebuilt on a copy of the loaded model, its fitted head included
                current = TorchModel.load(
                    self.run_dir / output, copy.deepcopy(self.prepared.loaded.module), self.prepared.inputs
                )
            self.records.append(StageRecord(stage.technique, record["settings"], record["metrics"]))
            self.finished.append(name)
            done += (stage.technique,)
        return self._made(current, done, key) if done else None

    def _save_hugging_face_folder(self, compressed: Made) -> str:
        """The compressed transformer as a folder plain transformers reloads (model_compressed_hf/), where it can;
        returns where it is, or why it is not."""
        import shutil
        import tempfile

        from greencompress.models.huggingface import save_folder

        loaded, target = self.prepared.loaded, self.run_dir / "model_compressed_hf"
        with tempfile.TemporaryDirectory(dir=self.run_dir) as scratch:
            why_not = save_folder(
                compressed.model.module,
                loaded.tokenizer,
                Path(scratch) / "folder",
                loaded.hugging_face_folder / "preprocessor_config.json",
            )
            if why_not is None:
                shutil.rmtree(target, ignore_errors=True)
                (Path(scratch) / "folder").rename(target)
        saved = why_not or f"{target.name}/ (save_pretrained: reloads with from_pretrained)"
        log.info("compressed model: %s", saved)
        return saved

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
                file_name = (
                    f"model_{'compressed_' if tags else ''}{stage.method.tag}{'_' + variant if variant else ''}"
                    f"{'_' + twin if twin else ''}.onnx"
                )
                key = stage_key(
                    stage.technique,
                    source.key,
                    stage.method.resolved(stage.config),
                    recipe.data.model_dump(mode="json"),
                    recipe.seed,
                )
                record = self.store.finished(name, key, files=(file_name,))
                if record is None:
                    log.info("stage %s (%s)", stage.technique, source.path.name)
                    result = stage.method.apply(
                        stage.config,
                        source.path,
                        self._context(self.run_dir / "stages" / name, self.run_dir / file_name, source.model),
                    )
                    record = {"settings": result.settings, "metrics": result.metrics, "precision": result.precision}
                    self.store.save(name, key, record, files=(file_name,), share=True)
                settings = record["settings"]
                if record["metrics"]:
                    by_source[artifact_name("onnxruntime", source.model_techniques, source.precision)] = record[
                        "metrics"
                    ]
                made.append(
                    replace(
                        source,
                        path=self.run_dir / file_name,
                        precision=record["precision"],
                        file_techniques=(*source.file_techniques, stage.technique),
                        key=key,
                        variant=variant,
                    )
                )
            self.records.append(StageRecord(stage.technique, settings, {"by_source": by_source} if by_source else {}))
            self.finished.append("-".join(part for part in (stage.technique, variant) if part))
        return made

    def _torch_metrics(self, model: TorchModel, label: str) -> dict:
        """What a stage on the PyTorch model left: accuracy on the evaluation split, MACs, parameters, weights size."""
        made = self._made(model, (), "")
        metrics = {
            "macs": made.macs,
            "params": made.params,
            "state_dict_bytes": sum(t.numel() * t.element_size() for t in model.module.state_dict().values()),
        }
        if self.prepared.data.labelled:
            accuracy = evaluate(
                TorchRunner(model.module),
                self.prepared.data.eval,
                self.recipe.data.batch_size,
                self.progress,
                label,
                self.prepared.scorer,
            )
            metrics.update(top1=accuracy.top1, top5=accuracy.top5)
        return metrics
