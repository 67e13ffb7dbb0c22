"""Deployable folders: every ONNX file a run measured, as a folder that a user's code loads as it is.

    deploy/<file stem>/
        onnx/model.onnx      the measured file (a hard link where the disk allows: no second copy)
        config.json, tokenizer files, sentence-transformers module files   (Hugging Face models)
        preprocessing.json   (image models: resize, crop, mean, std, layout, labels)
        greencompress.json   what the file is: precision, techniques, operators, inputs and outputs
        README.md            how to load it, with the libraries its users have

`onnx/model.onnx` is where sentence-transformers' ONNX backend and Optimum's ORTModel classes look. What
a task writes beside the file is the task's (models/tasks/: Task.serving_files, Task.loading_snippet).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from greencompress.pipeline.artifacts import Made
from greencompress.pipeline.prepare import Prepared

log = logging.getLogger(__name__)

DEPLOY_DIR = "deploy"
MODEL_FILE = "onnx/model.onnx"


def deploy_folder_of(file_name: str) -> str:
    """The deploy folder of a run's ONNX file, relative to the run folder: `deploy/model_int8_dynamic`."""
    return f"{DEPLOY_DIR}/{Path(file_name).stem}"


def write_deploy_folders(prepared: Prepared, run_dir: Path, made: list[Made]) -> dict[str, str]:
    """A deploy folder for each ONNX file in `made`; returns file name -> its folder (relative to `run_dir`)."""
    folders = {}
    for item in made:
        if item.path is None or item.path.name in folders:
            continue
        relative = deploy_folder_of(item.path.name)
        write_deploy_folder(prepared, item, run_dir / relative)
        folders[item.path.name] = relative
    if folders:
        log.info("deployable folders: %s/ (%d)", DEPLOY_DIR, len(folders))
    return folders


def write_deploy_folder(prepared: Prepared, item: Made, folder: Path) -> None:
    """One file's folder, written in a scratch folder first and renamed: a folder there is always whole."""
    scratch = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "onnx").mkdir(parents=True)
    _link_or_copy(item.path, scratch / MODEL_FILE)
    task, loaded = prepared.task, prepared.loaded
    written = task.serving_files(loaded, prepared.recipe.data, prepared.data, item.model.module, scratch)
    manifest = describe_file(item.path)
    manifest.update(
        task=task.name,
        precision=item.precision,
        techniques={"on_the_model": list(item.model_techniques), "on_the_file": list(item.file_techniques)},
        measured_file=item.path.name,
        source_model={key: loaded.provenance.get(key) for key in ("source", "path", "folder", "sha256")},
        files=[MODEL_FILE, *written, "greencompress.json", "README.md"],
    )
    (scratch / "greencompress.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    (scratch / "README.md").write_text(_readme(task, folder.name, manifest), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)


def describe_file(path: Path) -> dict:
    """What an ONNX file takes and gives, and whether only ONNX Runtime runs it (its com.microsoft operators)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}

    def tensors(values):
        return [
            {
                "name": value.name,
                "shape": [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim],
                "type": onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower(),
            }
            for value in values
            if value.name not in initializers
        ]

    only_ort = sorted({node.op_type for node in graph.node if node.domain == "com.microsoft"})
    return {
        "inputs": tensors(graph.input),
        "outputs": tensors(graph.output),
        "opset": max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=None),
        "operators": "onnxruntime-only" if only_ort else "portable",
        "onnxruntime_only_operators": only_ort,
    }


def _readme(task, name: str, manifest: dict) -> str:
    fused = ", ".join(manifest["onnxruntime_only_operators"])
    runs_on = (
        f"ONNX Runtime only: it holds ONNX Runtime's own fused operators ({fused})"
        if manifest["operators"] == "onnxruntime-only"
        else "any ONNX runtime (standard operators only)"
    )
    techniques = [*manifest["techniques"]["on_the_model"], *manifest["techniques"]["on_the_file"]]
    inputs = ", ".join(f"{t['name']} {t['shape']}" for t in manifest["inputs"])
    outputs = ", ".join(f"{t['name']} {t['shape']}" for t in manifest["outputs"])
    return "\n".join(
        [
            f"# {name}",
            "",
            f"`{MODEL_FILE}`: {manifest['task']}, {manifest['precision']}, "
            f"{' + '.join(techniques) or 'as given (exported, not compressed)'}. Runs on {runs_on}.",
            "",
            f"Inputs: {inputs}. Outputs: {outputs}.",
            "",
            "Load it (paths from the run folder):",
            "",
            "```python",
            task.loading_snippet(f"{DEPLOY_DIR}/{name}"),
            "```",
            "",
            "What greencompress measured on it is in the run's report.md (this folder is the run's "
            f"`{manifest['measured_file']}`).",
            "",
        ]
    )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(source, target)
