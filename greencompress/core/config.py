"""The base of every recipe section, and the path rules they share.

Each section is defined beside the code that reads it (models/sources.py: ModelSpec, models/data.py:
DataSpec, compress/prune.py: PruneConfig, ...); pipeline/recipe.py assembles them into a Recipe. A section rejects
unknown keys and is immutable once validated. Relative paths are resolved against the recipe's
folder, which load_recipe passes in the validation context.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo

BASE_DIR_KEY = "base_dir"


class Section(BaseModel):
    """A recipe section: unknown keys rejected, frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """`value` made absolute against the recipe's folder (the working directory outside a recipe)."""
    base_dir = (info.context or {}).get(BASE_DIR_KEY, Path.cwd())
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(base_dir) / path).resolve()


def resolve_existing(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a recipe path and require that it exists (a field validator)."""
    if value is None:
        return None
    path = resolve_path(value, info)
    if not path.exists():
        raise ValueError(f"file or folder not found: {path}")
    return path
