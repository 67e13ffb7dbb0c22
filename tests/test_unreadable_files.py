"""Every file greencompress reads that is not what it expects ends in exit 2, one line naming it, never a traceback."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from greencompress.core.errors import ModelLoadError
from greencompress.models.sources import load_state_dict
from tests.conftest import make_image_folder
from tests.test_cli import BASE, greencompress


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr  # one message, on one line (progress logs may come before it)
    return lines[0]


@pytest.mark.slow
def test_a_recipe_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.replace("name: bad", "name: caf\xe9").encode("latin-1"))
    offset = BASE.encode().index(b"name: bad") + len("name: caf")
    for command in ("validate", "run"):
        line = one_error_line(
            greencompress(command, str(path), "--output", str(tmp_path / "runs"))
            if command == "run"
            else greencompress(command, str(path))
        )
        assert f"{path}: recipe is not UTF-8 text: byte 0xe9 at offset {offset} cannot be decoded" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_report_that_is_not_utf8_or_not_json(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_bytes(b'{"schema_version": "1.2", "name": "\xff"}')
    assert "report.json: report is not UTF-8 text: byte 0xff at offset 35" in one_error_line(
        greencompress("report", str(run_dir))
    )
    (run_dir / "report.json").write_text('{"schema_version": ')
    assert "report.json: not valid JSON" in one_error_line(greencompress("compare", str(run_dir), str(run_dir)))


@pytest.mark.slow
def test_class_folders_whose_names_are_not_utf8(tmp_path):
    root = make_image_folder(tmp_path / "images")
    for split in ("train", "val"):
        os.rename(os.fsencode(root / split / "dark"), os.fsencode(root / split) + b"/d\xe9rk")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        BASE.replace("{kind: digits, image_size: 64}", "{kind: imagefolder, root: images, image_size: 32}")
    )
    line = one_error_line(greencompress("run", str(recipe), "--output", str(tmp_path / "runs")))
    assert "class folder b'd\\xe9rk' has a name that is not UTF-8 text; rename it" in line


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"plain text, not a checkpoint\n",
        bytes(range(256)) * 20,
        b"PK\x03\x04 a zip that ends here",
        gzip.compress(b"a gzip file"),
        json.dumps({"weights": [1, 2]}).encode(),
    ],
    ids=["empty", "text", "random", "broken-zip", "gzip", "json"],
)
def test_checkpoints_that_are_neither_zip_nor_pickle(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"{path}: not a readable PyTorch checkpoint"):
        load_state_dict(path)


@pytest.mark.slow
def test_an_unreadable_checkpoint_exits_2_from_the_command_line(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"plain text, not a checkpoint\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        BASE.replace(
            "{source: builtin, name: resnet18-digits-64}",
            "{source: checkpoint, name: resnet18, checkpoint: weights.pt, num_classes: 10}",
        )
    )
    line = one_error_line(greencompress("run", str(recipe), "--output", str(tmp_path / "runs")))
    assert "weights.pt: not a readable PyTorch checkpoint" in line
