"""The run folder: created once per run, holding the recipe as given and resolved, and a note if interrupted early."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from greencompress.core.files import write_text_atomic
from greencompress.pipeline.recipe import Recipe, recipe_to_dict


def create_run_dir(recipe: Recipe, output_dir: Path | None = None) -> Path:
    """A new, empty `<output>/<recipe name>/<UTC timestamp>` folder."""
    base = Path(output_dir or recipe.output.dir) / recipe.name
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir, attempt = base / stamp, 1
    while run_dir.exists():  # two runs in the same second
        attempt += 1
        run_dir = base / f"{stamp}-{attempt}"
    run_dir.mkdir(parents=True)
    return run_dir


def save_recipe(recipe: Recipe, run_dir: Path, recipe_path: Path | None) -> None:
    if recipe_path is not None:
        shutil.copyfile(recipe_path, run_dir / "recipe.yaml")
    # The validated recipe with every default filled in and overrides applied: enough to reproduce the run.
    write_text_atomic(run_dir / "recipe.resolved.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))


def interrupted_note(recipe: Recipe, run_dir: Path, finished: list[str]) -> str:
    done = ", ".join(finished) or "none"
    return (
        f"# greencompress report: {recipe.name} (INCOMPLETE)\n\nInterrupted before any measurement finished. "
        f"Finished stages: {done}.\n\nResume with: `greencompress run --resume {run_dir}`\n"
    )
