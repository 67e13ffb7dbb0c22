"""Finished stages of a run, so an interrupted run resumes and an unchanged recipe prefix is not redone.

Each stage's record lands in `<run>/stages/<stage>.json` with the key of everything it depended on:
the recipe sections as resolved for this machine, upstream keys, the versions of the libraries
that produce files, and a hash of greencompress's own code. Output files are written under a temporary name and
renamed, so a file that exists is whole. Stages whose outputs do not depend on this machine's
timing (export, quantization) are also kept in the shared cache, `<cache>/stages/<key>/`, where a
later run with the same recipe prefix finds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from greencompress.core.cache import mark_used, prune_cache
from greencompress.core.files import write_text_atomic

log = logging.getLogger(__name__)

# Libraries whose version changes what a stage writes (an exporter, a quantizer, a pruner).
PRODUCING_LIBRARIES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxscript", "onnxruntime")


@lru_cache(maxsize=1)
def code_fingerprint() -> dict[str, str]:
    """The versions of the producing libraries and a hash of every greencompress source file."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    versions = {}
    for library in PRODUCING_LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "absent"
    return {"greencompress_code": digest.hexdigest()[:16], **versions}


def stage_key(*parts) -> str:
    """A short hash of a stage's inputs (any JSON-ready values), of the library versions and of greencompress's code."""
    text = json.dumps([code_fingerprint(), *parts], sort_keys=True, default=str)
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
            mark_used(cached)
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
            for removed in prune_cache(self.shared_cache.parent, keep=cached):
                log.info(
                    "cache over its size cap: removed %s (%.1f MB, least recently used)",
                    removed.path,
                    removed.size_bytes / 1e6,
                )

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
