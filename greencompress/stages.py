"""Finished stages of a run, so an interrupted run resumes and an unchanged recipe prefix is not redone.

Each stage's record lands in `<run>/stages/<stage>.json` with the key of everything it depended on
(recipe sections, upstream keys, versions). Output files are written under a temporary name and
renamed, so a file that exists is whole. Stages whose outputs do not depend on this machine's
timing (export, quantization) are also kept in the shared cache, `<cache>/stages/<key>/`, where a
later run with the same recipe prefix finds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from greencompress import __version__
from greencompress.files import write_text_atomic

log = logging.getLogger(__name__)


def stage_key(*parts) -> str:
    """A short hash of a stage's inputs (any JSON-ready values), including the greencompress version."""
    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StageStore:
    """Records of finished stages in one run folder, with an optional shared cache for reusable outputs."""

    def __init__(self, run_dir: Path, shared_cache: Path | None):
        self.run_dir = run_dir
        self.folder = run_dir / "stages"
        self.folder.mkdir(exist_ok=True)
        self.shared_cache = shared_cache

    def finished(self, stage: str, key: str, files: tuple[str, ...] = ()) -> dict | None:
        """The record of `stage` if it finished with this key (here, or in the shared cache), else None."""
        record = self._read(self.folder / f"{stage}.json")
        if record and record["key"] == key and all((self.run_dir / name).is_file() for name in files):
            log.info("%s: reusing the finished stage in this run folder (key %s)", stage, key)
            return record["result"]
        if self.shared_cache is None:
            return None
        cached = self.shared_cache / key
        record = self._read(cached / f"{stage}.json")
        if record and all((cached / name).is_file() for name in files):
            for name in files:
                _copy_atomic(cached / name, self.run_dir / name)
            write_text_atomic(self.folder / f"{stage}.json", json.dumps(record, indent=2))
            log.info("%s: reusing the output of an earlier run with the same inputs (cache %s)", stage, cached)
            return record["result"]
        return None

    def save(self, stage: str, key: str, result: dict, files: tuple[str, ...] = (), share: bool = False) -> None:
        """Record that `stage` finished; with `share`, copy its files to the shared cache too."""
        record = {"key": key, "result": result}
        write_text_atomic(self.folder / f"{stage}.json", json.dumps(record, indent=2))
        if share and self.shared_cache is not None:
            cached = self.shared_cache / key
            cached.mkdir(parents=True, exist_ok=True)
            for name in files:
                _copy_atomic(self.run_dir / name, cached / name)
            write_text_atomic(cached / f"{stage}.json", json.dumps(record, indent=2))  # last: marks it complete

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # absent or half-written: the stage runs again


def _copy_atomic(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    temporary.replace(target)
