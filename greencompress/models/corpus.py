"""Text for a language model: evaluation and calibration token ids, and prompts drawn from them.

A corpus comes from `data.path` (a plain-text file, a folder of them, or JSONL with a `text_column`) or, without a
path, from the shipped Shakespeare plays (resources/shakespeare.jsonl: Macbeth and Twelfth Night evaluate, The
Tempest and Julius Caesar calibrate). JSONL rows whose `split_column` is `eval_split` evaluate and those of
`calibration_split` calibrate; text without splits is cut once, its last `test_fraction` evaluating. Calibration
never sees the evaluation text: perplexity is judged on tokens no data-aware method looked at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from greencompress.core.errors import DataError

SHIPPED = "shakespeare.jsonl"


@dataclass(frozen=True)
class Corpus:
    """Token ids of the evaluation and calibration text, and where they came from."""

    evaluation: np.ndarray  # int64 [tokens]
    calibration: np.ndarray
    description: str

    def calibration_windows(self, count: int, length: int) -> list[np.ndarray]:
        """Up to `count` consecutive, disjoint windows of `length` calibration tokens, each [1, length]."""
        starts = range(0, max(len(self.calibration) - length, 0) + 1, length)
        return [self.calibration[None, start : start + length] for start in list(starts)[:count]]

    def prompt(self, index: int, tokens: int, batch_size: int = 1) -> np.ndarray:
        """The `index`-th prompt set, [batch_size, tokens] of evaluation text: consecutive windows, then (once they
        run out) the same windows shifted by one token per pass, so that no two prompts are ever the same."""
        room = len(self.evaluation) - tokens
        if room < 0:
            raise DataError(
                f"data: the evaluation text has {len(self.evaluation)} tokens, fewer than a prompt's {tokens}"
            )
        rows = [self.evaluation[start : start + tokens] for start in self._starts(index, tokens, batch_size, room)]
        return np.stack(rows)

    @staticmethod
    def _starts(index: int, tokens: int, batch_size: int, room: int) -> list[int]:
        starts = []
        for n in range(index * batch_size, (index + 1) * batch_size):
            left, shift = n, 0
            while shift < tokens and shift <= room:  # pass `shift`: windows at shift, shift + tokens, ...
                count = (room - shift) // tokens + 1
                if left < count:
                    starts.append(left * tokens + shift)
                    break
                left, shift = left - count, shift + 1
            else:
                raise DataError(
                    f"data: the evaluation text is too short for {n + 1} distinct prompts of {tokens} tokens"
                )
        return starts


def texts(data, field: str = "data.path") -> tuple[list[str], list[str], str]:
    """(evaluation texts, calibration texts, description) of a DataSpec's text for a language model."""
    if data.path is None:
        lines = resources.files("greencompress.resources").joinpath(SHIPPED).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        plays = lambda split: sorted({r["play"] for r in records if r["split"] == split})  # noqa: E731
        return (
            [r["text"] for r in records if r["split"] == "test"],
            [r["text"] for r in records if r["split"] == "train"],
            f"Shakespeare (shipped, public domain): evaluation {', '.join(plays('test'))}; "
            f"calibration {', '.join(plays('train'))}",
        )
    path = Path(data.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{field}: {path} holds no .txt file")
        return _cut([_read(p, field) for p in files], data.test_fraction, f"{len(files)} text files in {path}")
    if path.suffix.lower() in (".jsonl", ".json"):
        return _jsonl(path, data, field)
    return _cut([_read(path, field)], data.test_fraction, str(path))


def load_corpus(data, tokenizer, window: int) -> Corpus:
    """The DataSpec's text tokenised; DataError (naming the file and field) for text too short to judge a model."""
    evaluation, calibration, description = texts(data)
    ids = lambda parts: np.asarray(  # noqa: E731
        [t for part in parts for t in tokenizer(part)["input_ids"]], dtype=np.int64
    )
    corpus = Corpus(ids(evaluation), ids(calibration), description)
    where = data.path or SHIPPED
    if len(corpus.evaluation) <= window:
        raise DataError(
            f"data.path: {where}: the evaluation text is {len(corpus.evaluation)} tokens, shorter than one perplexity "
            f"window of {window} (+1): give more text"
        )
    if len(corpus.calibration) == 0:
        raise DataError(f"data.path: {where}: no calibration text (rows of split {data.calibration_split!r})")
    return corpus


def _read(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{field}: {path} is not UTF-8 text: {error}") from None


def _cut(parts: list[str], fraction: float, description: str) -> tuple[list[str], list[str], str]:
    """The text's last `fraction` (by characters, at a line break where there is one) evaluates, the rest calibrates."""
    text = "\n\n".join(part for part in parts if part.strip())
    if not text.strip():
        raise DataError(f"data.path: {description} holds no text")
    cut = int(len(text) * (1 - fraction))
    cut = text.rfind("\n", 0, cut) + 1 or cut
    return [text[cut:]], [text[:cut]], f"{description} (last {fraction:.0%} evaluates, the rest calibrates)"


def _jsonl(path: Path, data, field: str) -> tuple[list[str], list[str], str]:
    rows = []
    for number, line in enumerate(_read(path, field).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DataError(f"{path}:{number}: not a JSON object: {error}") from None
        if not isinstance(row, dict) or not isinstance(row.get(data.text_column), str):
            raise DataError(f"{path}:{number}: no text field {data.text_column!r} (data.text_column)")
        rows.append(row)
    if not rows:
        raise DataError(f"data.path: {path} holds no text")
    if not any(data.split_column in row for row in rows):
        return _cut([row[data.text_column] for row in rows], data.test_fraction, str(path))
    evaluation = [row[data.text_column] for row in rows if row.get(data.split_column) == data.eval_split]
    calibration = [row[data.text_column] for row in rows if row.get(data.split_column) == data.calibration_split]
    if not evaluation:
        raise DataError(f"{path}: no row of split {data.eval_split!r} (data.eval_split, column {data.split_column!r})")
    return (
        evaluation,
        calibration,
        f"{path} (split {data.eval_split!r} evaluates, {data.calibration_split!r} calibrates)",
    )
