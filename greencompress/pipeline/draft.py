"""`greencompress init`: a commented recipe drafted from what a user has (a model, its data), checked before it is
written.

What it infers, and from what: the task from a Hugging Face folder's config (its head's class name, a
sentence-transformers pooling folder); the data kind from the data path (a CSV, TSV or JSONL file is text, a
folder of split folders is images); a text file's columns and split values from its header and rows; an image
folder's splits and class count from its folders and its image size from one image (or a vision transformer's
config). What it cannot infer it asks for by name (a checkpoint's architecture). Stages are the safe start: int8
of the exported file (dynamic for text, static for images), no pruning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from greencompress.core.errors import RecipeError
from greencompress.core.registry import unknown_choice
from greencompress.models.tasks import task_named, task_names
from greencompress.models.text import read_rows, read_text_table

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".bin")
EVAL_SPLITS = ("test", "val", "validation", "dev", "eval")
CALIBRATION_SPLITS = ("train", "calibration", "training")


@dataclass(frozen=True)
class Draft:
    """A recipe as YAML text with comments, and what was inferred (for the command's message)."""

    text: str
    inferred: tuple[str, ...]


def draft_recipe(
    model: Path, data: Path, task: str | None = None, architecture: str | None = None, name: str | None = None
) -> Draft:
    """A recipe for `model` (a Hugging Face folder or zip, or a checkpoint with `architecture`) and `data`."""
    model, data = model.resolve(), data.resolve()
    if not model.exists():
        raise RecipeError(f"--model: not found: {model}")
    if not data.exists():
        raise RecipeError(f"--data: not found: {data}")
    inferred: list[str] = []
    from_checkpoint = not (model.is_dir() or model.suffix == ".zip")
    if not from_checkpoint:
        model_lines, task, config = _hugging_face(model, task, inferred)
    elif model.suffix in CHECKPOINT_SUFFIXES:
        if architecture is None:
            raise RecipeError(
                f"--model: {model.name} holds weights only; say which architecture they are for: "
                f"--architecture resnet18 (a torchvision name) or --architecture my_models.py:net"
            )
        model_lines, config = _checkpoint(model, architecture), {}
        task = task or "image-classification"
    else:
        raise RecipeError(
            f"--model: {model} is neither a Hugging Face folder (or zip) nor a checkpoint "
            f"({', '.join(CHECKPOINT_SUFFIXES)})"
        )
    if task not in task_names():
        raise RecipeError(f"--task: {unknown_choice('task', task, task_names())}")
    kind = task_named(task)
    if data.is_file() and data.suffix.lower() in TEXT_SUFFIXES:
        data_lines, classes = _text_data(data, inferred)
    elif data.is_dir():
        data_lines, classes = _image_data(data, kind.data_hints(model, config), inferred)
    else:
        raise RecipeError(f"--data: {data} is neither a text file ({', '.join(TEXT_SUFFIXES)}) nor an image folder")
    new_head = kind.needs_new_head(config)
    if from_checkpoint:  # its head is sized by the data
        model_lines.append(f"  num_classes: {classes}                      # from the data's classes")
    elif new_head:
        model_lines.append(f"  num_classes: {classes}                      # a new head, one output per label")
    stages = _stages(kind.takes_tokens, new_head)
    positions = int(config.get("max_position_embeddings", 512))
    lengths = sorted({min(32, positions), min(128, positions)})
    lines = [
        f"# Drafted by greencompress init from {model.name} and {data.name}; read it, then:",
        "#   greencompress validate THIS_FILE && greencompress run THIS_FILE",
        f"name: {name or _name_of(model)}",
        "seed: 0",
        "",
        "model:",
        *model_lines,
        f"  task: {task}",
        "",
        "data:",
        *data_lines,
        "",
        "stages:",
        *stages,
        "",
        "benchmark:",
        "  batch_sizes: [1, 8]                 # the batch sizes you serve",
        *([f"  sequence_lengths: {lengths}          # tokens per input you serve"] if kind.takes_tokens else []),
        "  runtimes: auto                      # every runtime installed here (ONNX Runtime, OpenVINO, ...)",
        "",
    ]
    return Draft("\n".join(lines), tuple(inferred))


def _name_of(model: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in model.stem).strip("-.") or "model"
    return stem if stem[0].isalnum() else f"m{stem}"


def _hugging_face(model: Path, task: str | None, inferred: list[str]) -> tuple[list[str], str, dict]:
    from greencompress.models.huggingface import model_folder, task_of_config

    folder = model_folder(model, None)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RecipeError(f"--model: {folder / 'config.json'}: {error}") from None
    if task is None:
        task = task_of_config(config)
        heads = [str(name) for name in config.get("architectures") or ()]
        inferred.append(f"task {task} (from config.json architectures {heads or 'none'})")
    return ["  source: huggingface", f"  path: {model}"], task, config


def _checkpoint(model: Path, architecture: str) -> list[str]:
    if ":" in architecture:
        return [
            "  source: callable",
            f"  architecture: {architecture}",
            f"  checkpoint: {model}",
            "  # trust_checkpoint: true           # only for a pickled checkpoint you made yourself",
        ]
    return [
        "  source: checkpoint",
        f"  name: {architecture}                 # a torchvision architecture",
        f"  checkpoint: {model}",
    ]


def _text_data(path: Path, inferred: list[str]) -> tuple[list[str], int]:
    header = _header(path)
    text_column = next((c for c in ("text", "sentence", "sentence1", "content", "review") if c in header), header[0])
    label_column = next((c for c in ("label", "labels", "category", "class", "target") if c in header), header[-1])
    split_column = next((c for c in ("split", "set", "fold") if c in header), None)
    table = read_text_table(path, text_column, None, label_column, split_column or "split")
    lines = ["  kind: text", f"  path: {path}", f"  text_column: {text_column}", f"  label_column: {label_column}"]
    inferred.append(f"text column {text_column!r}, label column {label_column!r} (of {', '.join(header)})")
    if split_column is not None:
        values = sorted(set(table.splits))
        eval_split, calibration = _splits_among(values)
        if eval_split is None or calibration is None:
            raise RecipeError(
                f"--data: {path}: split column {split_column!r} has {', '.join(values)}; name the "
                f"evaluated rows one of {', '.join(EVAL_SPLITS)} and the training rows 'train'"
            )
        lines += [
            f"  split_column: {split_column}",
            f"  eval_split: {eval_split}",
            f"  calibration_split: {calibration}",
        ]
        inferred.append(f"splits {eval_split!r} evaluated, {calibration!r} calibrates")
    else:
        lines.append("  test_fraction: 0.2                  # no split column: a seeded 20% is evaluated")
    lines.append("  batch_size: 32")
    return lines, len(set(table.labels))


def _splits_among(names: list[str]) -> tuple[str | None, str | None]:
    """(the evaluated split, the calibration split) by their usual names, each None when none is there."""
    return (
        next((n for n in EVAL_SPLITS if n in names), None),
        next((n for n in CALIBRATION_SPLITS if n in names), None),
    )


def _header(path: Path) -> list[str]:
    rows = read_rows(path)  # as a run reads it: the delimiter sniffed, a byte-order mark dropped
    if not rows:
        raise RecipeError(f"--data: {path}: no rows")
    return [str(name) for name in rows[0]]


def _image_data(root: Path, hints: dict, inferred: list[str]) -> tuple[list[str], int]:
    splits = sorted(child.name for child in root.iterdir() if child.is_dir())
    eval_split, calibration = _splits_among(splits)
    if eval_split is None or calibration is None:
        raise RecipeError(
            f"--data: {root}: expected split folders (train/ and one of {', '.join(EVAL_SPLITS)}), each "
            f"with a folder per class; found: {', '.join(splits) or 'none'}"
        )
    classes = sorted(child.name for child in (root / eval_split).iterdir() if child.is_dir())
    lines = [
        "  kind: imagefolder",
        f"  root: {root}",
        f"  eval_split: {eval_split}",
        f"  calibration_split: {calibration}",
    ]
    if hints:  # the model states them (a vision transformer's processor)
        lines += [f"  image_size: {hints['image_size']}", f"  mean: {hints['mean']}", f"  std: {hints['std']}"]
        inferred.append(f"image size {hints['image_size']} and normalisation from the model's processor")
    else:
        size = _image_size(root / eval_split)
        lines += [
            f"  image_size: {size}                     # from the images; set what the model was trained on",
            "  mean: [0.485, 0.456, 0.406]         # ImageNet's: set your training normalisation",
            "  std: [0.229, 0.224, 0.225]",
        ]
        inferred.append(f"image size {size} (from the images), ImageNet normalisation (check it)")
    inferred.append(f"{len(classes)} classes, splits {eval_split!r} evaluated, {calibration!r} calibrates")
    lines.append("  batch_size: 32")
    return lines, len(classes)


def _image_size(folder: Path) -> int:
    from PIL import Image

    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
            with Image.open(path) as image:
                side = min(image.size)
            return side if side <= 64 else 224  # small images (CIFAR, digits) as they are; photos at 224
    raise RecipeError(f"--data: no images under {folder}")


def _stages(takes_tokens: bool, new_head: bool) -> list[str]:
    lines = []
    if new_head:
        lines.append("  - finetune: {epochs: 3, optimizer: adamw, learning_rate: 3.0e-5}   # trains the new head")
    if takes_tokens:
        lines.append("  - quantize: {method: dynamic}        # int8 weights, activations quantised at run time")
    else:
        lines.append("  - quantize: {method: static, calibration_samples: 256}   # int8, calibrated on training images")
    return lines
