"""The cache folder: built-in models and finished stage outputs that later runs reuse.

Location: `$GREENCOMPRESS_CACHE`, else `$XDG_CACHE_HOME/greencompress`, else `~/.cache/greencompress`.
Entries are used least-recently first to stay under a size cap (`$GREENCOMPRESS_CACHE_MAX_GB`,
default 4 GiB); `greencompress cache list` and `greencompress cache clear` show and empty it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_GB = 4.0


def cache_dir() -> Path:
    """Where greencompress keeps built models and reusable stage outputs."""
    if os.environ.get("GREENCOMPRESS_CACHE"):
        return Path(os.environ["GREENCOMPRESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "greencompress"


def max_cache_bytes() -> int:
    """The size cap: `$GREENCOMPRESS_CACHE_MAX_GB` (a number of GB) or the default."""
    text = os.environ.get("GREENCOMPRESS_CACHE_MAX_GB", "")
    try:
        gigabytes = float(text) if text else DEFAULT_MAX_GB
    except ValueError:
        from greencompress.core.errors import GreencompressError

        raise GreencompressError(f"GREENCOMPRESS_CACHE_MAX_GB={text!r}: expected a number of gigabytes") from None
    return int(gigabytes * 1024**3)


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache: a built model file (with its provenance) or a folder of one stage's outputs."""

    kind: str  # "model" | "stage"
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch (the entry's modification time, renewed on every reuse)
    description: str


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry in the cache, least recently used first."""
    root = root or cache_dir()
    entries = []
    for model in sorted((root / "models").glob("*.pt")):
        provenance = model.with_suffix(".json")
        size = model.stat().st_size + (provenance.stat().st_size if provenance.exists() else 0)
        entries.append(CacheEntry("model", model, size, model.stat().st_mtime, f"built-in model {model.stem}"))
    for folder in sorted(path for path in (root / "stages").glob("*") if path.is_dir()):
        files = [path for path in folder.iterdir() if path.is_file()]
        stages = sorted(path.stem for path in files if path.suffix == ".json")
        entries.append(
            CacheEntry(
                "stage",
                folder,
                sum(path.stat().st_size for path in files),
                folder.stat().st_mtime,
                f"stage {', '.join(stages) or '(unfinished)'}",
            )
        )
    return sorted(entries, key=lambda entry: entry.last_used)


def mark_used(path: Path) -> None:
    """Renew an entry's last use, so the size cap removes it after entries left unused longer."""
    now = time.time()
    os.utime(path, (now, now))


def remove_entry(entry: CacheEntry) -> None:
    if entry.kind == "stage":
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)
        entry.path.with_suffix(".json").unlink(missing_ok=True)


def prune_cache(root: Path | None = None, max_bytes: int | None = None, keep: Path | None = None) -> list[CacheEntry]:
    """Remove least-recently-used entries until the cache is under `max_bytes`; never `keep`. Returns the removed."""
    max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
    entries = cache_entries(root)
    total, removed = sum(entry.size_bytes for entry in entries), []
    for entry in entries:
        if total <= max_bytes:
            break
        if keep is not None and entry.path == keep:
            continue
        remove_entry(entry)
        total -= entry.size_bytes
        removed.append(entry)
    return removed


def clear_cache(root: Path | None = None) -> list[CacheEntry]:
    """Remove every entry; returns what was removed."""
    entries = cache_entries(root)
    for entry in entries:
        remove_entry(entry)
    return entries
