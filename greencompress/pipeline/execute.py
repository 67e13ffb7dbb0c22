"""run(recipe) -> RunReport: prepare, make, measure, report. Owns the run folder.

Order: the recipe is prepared (pipeline/prepare.py: device, meter, model, data); the FP32 model is
exported and checked for parity, the techniques on the PyTorch model run in order and their result is
exported too, the techniques on ONNX files run on each export (pipeline/produce.py); then every artifact
(PyTorch eager FP32 as the as-trained reference, and every file on every runtime the recipe lists) is
evaluated and benchmarked the same way (pipeline/measurement.py). Every finished stage is recorded
(stages.py), so `run --resume` continues where a run stopped; a Ctrl-C during measurement still writes a
report of what finished, marked incomplete.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from greencompress.compress import distributed
from greencompress.compress.training import serve
from greencompress.core.cache import cache_dir
from greencompress.core.files import write_text_atomic
from greencompress.pipeline.folder import create_run_dir, interrupted_note, save_recipe
from greencompress.pipeline.measurement import measure_run
from greencompress.pipeline.prepare import prepare
from greencompress.pipeline.produce import Producer
from greencompress.pipeline.recipe import Recipe, recipe_to_dict
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report.schema import RunReport
from greencompress.runtimes.pytorch import set_threads

__all__ = ["create_run_dir", "run", "serve_fine_tuning"]

log = logging.getLogger(__name__)


def run(
    recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None, shared_cache: Path | None = None
) -> RunReport:
    """Execute a validated recipe into `run_dir` (new, or one to resume) and return the report.

    The report is also written as report.json, report.md and report.html. `shared_cache` (default:
    `<cache>/stages`) holds export and quantization outputs that later runs with the same inputs reuse.
    """
    if recipe.task.workload_kind == "generate":  # a causal LM: prompts and tokens, not batches (pipeline/generate.py)
        from greencompress.pipeline.generate import run_generation

        try:
            return run_generation(recipe, run_dir, recipe_path, progress)
        finally:
            distributed.share({"kind": "done"})  # under torchrun, the other ranks may stop waiting
    store = StageStore(run_dir, shared_cache or cache_dir() / "stages")
    started = store.finished("run", stage_key(recipe_to_dict(recipe)))
    if started is None:
        save_recipe(recipe, run_dir, recipe_path)
        started = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        store.save("run", stage_key(recipe_to_dict(recipe)), started)
    _seed(recipe)
    finished: list[str] = []
    try:
        producer = Producer(prepare(recipe, progress), run_dir, store, progress)
        finished = producer.finished
        made, hugging_face_folder = producer.made()
        return measure_run(producer, made, hugging_face_folder, started["created_utc"])
    except KeyboardInterrupt:
        if not (run_dir / "report.json").exists():
            write_text_atomic(run_dir / "report.md", interrupted_note(recipe, run_dir, finished))
        raise
    finally:
        distributed.share({"kind": "done"})  # under torchrun, the other ranks may stop waiting


def serve_fine_tuning(recipe: Recipe) -> None:
    """The loop of a torchrun rank other than 0: train along with rank 0 whenever it fine-tunes (a causal LM: whenever
    it distils), write nothing."""
    _seed(recipe)
    if recipe.task.workload_kind == "generate":
        from greencompress.pipeline.generate import serve_distillation

        serve_distillation(recipe)
        return
    prepared = prepare(recipe)
    serve(prepared.loaded.module, prepared.data, recipe.seed, prepared.inputs)


def _seed(recipe: Recipe) -> None:
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
