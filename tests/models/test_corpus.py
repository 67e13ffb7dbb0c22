"""Text for a language model: where it comes from, how it splits, prompts that never repeat, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greencompress.core.errors import DataError
from greencompress.models.corpus import Corpus, texts
from greencompress.models.data import DataSpec


def spec(**settings) -> DataSpec:
    return DataSpec.model_validate({"kind": "text", **settings})


def test_the_shipped_plays_evaluate_and_calibrate_apart():
    evaluation, calibration, description = texts(spec())
    assert "Macbeth" in description and "The Tempest" in description
    assert "Fair is foul" in "".join(evaluation) and "Fair is foul" not in "".join(calibration)


def test_a_plain_file_is_cut_once_at_a_line_break_its_end_evaluating(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {n}\n" for n in range(100)))
    evaluation, calibration, _ = texts(spec(path=str(path), test_fraction=0.2))
    assert evaluation[0].startswith("line ") and calibration[0].endswith("\n")
    assert evaluation[0] + calibration[0] != "" and (calibration[0] + evaluation[0]) == path.read_text()
    assert 15 <= evaluation[0].count("\n") <= 21


def test_jsonl_rows_follow_their_split_column(tmp_path):
    path = tmp_path / "texts.jsonl"
    rows = [{"body": f"text {n}", "part": "val" if n % 3 == 0 else "train"} for n in range(9)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    evaluation, calibration, _ = texts(spec(path=str(path), text_column="body", split_column="part"))
    assert evaluation == ["text 0", "text 3", "text 6"] and len(calibration) == 6


@pytest.mark.parametrize(
    "content, expected",
    [("", "holds no text"), ("  \n\n ", "holds no text"), ('{"txt": "a"}\n', "no text field 'text'")],
)
def test_empty_or_unreadable_text_is_refused_naming_the_file(tmp_path, content, expected):
    path = tmp_path / ("bad.jsonl" if content.startswith("{") else "bad.txt")
    path.write_text(content)
    with pytest.raises(DataError, match=expected):
        texts(spec(path=str(path)))


def test_prompts_never_repeat_even_after_the_text_runs_out():
    corpus = Corpus(np.arange(100, dtype=np.int64), np.arange(10, dtype=np.int64), "numbers")
    seen = {corpus.prompt(n, 16).tobytes() for n in range(40)}
    assert len(seen) == 40 and corpus.prompt(0, 16).shape == (1, 16)
    assert corpus.prompt(3, 8, batch_size=2).shape == (2, 8)
    with pytest.raises(DataError, match="fewer than a prompt"):
        corpus.prompt(0, 200)
    assert [w.shape for w in corpus.calibration_windows(5, 4)] == [(1, 4), (1, 4)]
