"""The stage cache: keys that never serve a stale file, a size cap, `cache list|clear`, XDG_CACHE_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from greencompress.compress.quantize import Quantize, QuantizeConfig
from greencompress.core.cache import cache_dir, cache_entries, prune_cache
from greencompress.core.hardware import CpuInfo
from greencompress.pipeline import stages
from greencompress.pipeline.stages import StageStore, stage_key


def test_cache_location_follows_greencompress_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("GREENCOMPRESS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "greencompress"
    monkeypatch.setenv("GREENCOMPRESS_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("GREENCOMPRESS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "greencompress"


def quantize_key(config: QuantizeConfig) -> str:
    return stage_key(
        "quantize", "upstream", Quantize().resolved(config), {"kind": "digits"}, 0
    )  # as pipeline.py keys it


def test_a_cached_int8_file_is_not_reused_after_the_resolved_reduce_range_changes(tmp_path, monkeypatch):
    run_dir, shared = tmp_path / "run", tmp_path / "cache" / "stages"
    run_dir.mkdir()
    (run_dir / "model_int8.onnx").write_bytes(b"int8 made with 7-bit weights")
    monkeypatch.setattr("greencompress.compress.quantize.cpu_info", lambda: CpuInfo("AVX2 CPU", 2, ("avx2",)))
    avx2_key = quantize_key(QuantizeConfig())
    StageStore(run_dir, shared).save("quantize", avx2_key, {"settings": {}}, files=("model_int8.onnx",), share=True)

    monkeypatch.setattr(
        "greencompress.compress.quantize.cpu_info", lambda: CpuInfo("VNNI CPU", 2, ("avx2", "avx512_vnni"))
    )
    vnni_key = quantize_key(QuantizeConfig())
    assert vnni_key != avx2_key  # `auto` resolves to False here: another int8 file
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert StageStore(fresh, shared).finished("quantize", vnni_key, files=("model_int8.onnx",)) is None
    assert quantize_key(QuantizeConfig(reduce_range=True)) == avx2_key  # same resolved setting: reused
    assert StageStore(fresh, shared).finished("quantize", avx2_key, files=("model_int8.onnx",)) is not None


def test_keys_change_with_the_onnxruntime_version_and_with_greencompress_code(monkeypatch):
    before = stage_key("quantize", {"a": 1})
    real_version = stages.metadata.version
    stages.code_fingerprint.cache_clear()
    monkeypatch.setattr(
        stages.metadata, "version", lambda name: "9.9.9" if name == "onnxruntime" else real_version(name)
    )
    try:
        assert stage_key("quantize", {"a": 1}) != before
        assert stages.code_fingerprint()["onnxruntime"] == "9.9.9"
    finally:
        monkeypatch.undo()
        stages.code_fingerprint.cache_clear()
    assert stage_key("quantize", {"a": 1}) == before
    assert len(stages.code_fingerprint()["greencompress_code"]) == 16


def make_entry(root: Path, name: str, size: int, age_s: float) -> Path:
    folder = root / "stages" / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * size)
    (folder / "quantize.json").write_text("{}")
    when = 1_700_000_000 - age_s
    os.utime(folder, (when, when))
    return folder


def test_size_cap_removes_the_least_recently_used_first(tmp_path):
    old, middle, new = (make_entry(tmp_path, name, 1000, age) for name, age in (("a", 300), ("b", 200), ("c", 100)))
    assert [entry.path for entry in cache_entries(tmp_path)] == [old, middle, new]
    removed = prune_cache(tmp_path, max_bytes=2100, keep=old)  # 3 x ~1002 bytes; `old` was just written
    assert [entry.path for entry in removed] == [middle]
    assert old.exists() and new.exists() and not middle.exists()


def test_cache_list_and_clear_from_the_command_line(tmp_path):
    make_entry(tmp_path, "k1", 2_000_000, 10)
    environment = {**os.environ, "GREENCOMPRESS_CACHE": str(tmp_path)}
    listed = subprocess.run(
        [sys.executable, "-m", "greencompress", "cache", "list"],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert listed.returncode == 0 and "stage quantize" in listed.stdout and "2.0" in listed.stdout
    cleared = subprocess.run(
        [sys.executable, "-m", "greencompress", "cache", "clear"],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert cleared.returncode == 0 and "removed 1 entries (2.0 MB)" in cleared.stdout
    assert cache_entries(tmp_path) == []
