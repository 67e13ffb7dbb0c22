"""Labelled text from a CSV or JSONL file (or the shipped WordNet glosses), tokenised once, padded per batch.

A text set is a `TokenizedTexts` dataset: each item is one text's token ids (truncated to
`max_length`, not padded) and its label; `collate` pads a batch to its longest text (or to
`max_length`, or to a given length for benchmarks) with the tokenizer's pad id and an
attention mask of 0 on padding, and returns named int64 arrays.
"""

from __future__ import annotations

import csv
import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from greencompress.core.errors import DataError

SHIPPED_TEXT = "wordnet_glosses.csv"  # in greencompress/resources, derived by scripts/build_wordnet_glosses.py


class TokenizedTexts(Dataset):
    """Token ids per text and integer labels; `collate` makes padded batches of named arrays."""

    def __init__(
        self,
        encodings: list[dict[str, list[int]]],
        labels: np.ndarray,
        input_names: tuple[str, ...],
        pad_id: int,
        padding: str,
        max_length: int,
    ):
        self.encodings, self.labels, self.input_names = encodings, labels, input_names
        self.pad_id, self.padding, self.max_length = pad_id, padding, max_length

    def __len__(self) -> int:
        return len(self.encodings)

    def __getitem__(self, index: int):
        return self.encodings[index], int(self.labels[index])

    def collate(self, items, length: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Pad `items` to `length` (truncating longer ones), else to the policy's length; returns (inputs, labels)."""
        if length is None:
            length = self.max_length if self.padding == "max_length" else max(len(ids["input_ids"]) for ids, _ in items)
        batch = {name: np.zeros((len(items), length), dtype=np.int64) for name in self.input_names}
        batch["input_ids"][:] = self.pad_id
        for row, (ids, _) in enumerate(items):
            used = min(length, len(ids["input_ids"]))
            batch["input_ids"][row, :used] = ids["input_ids"][:used]
            batch["attention_mask"][row, :used] = 1
            if "token_type_ids" in batch:
                batch["token_type_ids"][row, :used] = ids.get("token_type_ids", [0] * used)[:used]
        return batch, np.array([label for _, label in items], dtype=np.int64)


@dataclass(frozen=True)
class Tokenization:
    """What text data takes from the model: its tokenizer, input names, length limit and head labels (if any)."""

    tokenizer: object
    input_names: tuple[str, ...]
    max_sequence_length: int
    label_names: tuple[str, ...] | None
    new_head_classes: int | None = None  # a head to be trained: the data must have exactly this many labels


@dataclass(frozen=True)
class TextTable:
    """Rows of a text file: texts (and second texts of a pair), label strings and split names (None when absent)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    splits: list[str] | None
    source: str


def read_text_table(
    path: Path | None,
    text_column: str,
    pair_column: str | None,
    label_column: str,
    split_column: str,
    delimiter: str | None = None,
) -> TextTable:
    """Read a CSV or TSV (header row) or JSONL file, or the shipped set when `path` is None; DataError names file and
    field. A CSV's delimiter is `delimiter`, else sniffed from its first lines (comma, semicolon, tab or bar); a
    byte-order mark (what spreadsheet programs write for "CSV UTF-8") is dropped."""
    if path is None:
        file = resources.files("greencompress.resources") / SHIPPED_TEXT
        rows, source = list(csv.DictReader(file.read_text(encoding="utf-8").splitlines())), f"shipped {SHIPPED_TEXT}"
    else:
        rows, source = read_rows(path, delimiter), str(path)
    if not rows:
        raise DataError(f"{source}: no rows")
    for column, field in (
        (text_column, "text_column"),
        (label_column, "label_column"),
        (pair_column, "text_pair_column"),
    ):
        if column is not None and column not in rows[0]:
            raise DataError(f"{source}: data.{field}: no column {column!r}{_did_you_mean(column, rows[0])}")
    if split_column not in rows[0]:
        # Without the column a seeded random split is evaluated: never silently, for a column that was meant.
        close = difflib.get_close_matches(split_column, [str(name) for name in rows[0]], n=1, cutoff=0.7)
        if close or split_column != DEFAULT_SPLIT_COLUMN:
            raise DataError(
                f"{source}: data.split_column: no column {split_column!r}{_did_you_mean(split_column, rows[0])} "
                f"(without one, a seeded random share of data.test_fraction is evaluated)"
            )
    texts = [str(row[text_column] or "").strip() for row in rows]
    empty = [index for index, text in enumerate(texts) if not text]
    if empty:
        raise DataError(
            f"{source}: data.text_column: {len(empty)} empty text(s) in column {text_column!r}, first at "
            f"row {empty[0] + 1} (of the data rows); remove or fill them"
        )
    labels = [str(row[label_column]).strip() if row[label_column] is not None else "" for row in rows]
    if "" in labels:
        raise DataError(
            f"{source}: data.label_column: empty label in column {label_column!r} at row {labels.index('') + 1}"
        )
    splits = [str(row[split_column]).strip() for row in rows] if split_column in rows[0] else None
    pairs = [str(row[pair_column] or "") for row in rows] if pair_column else None
    return TextTable(texts, pairs, labels, splits, source)


DEFAULT_SPLIT_COLUMN = "split"  # DataSpec.split_column's default: a file without it is split at random
_DELIMITERS = ",;\t|"


def _did_you_mean(column: str, header) -> str:
    names = [str(name) for name in header if name is not None]
    close = difflib.get_close_matches(column, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; columns there: {', '.join(names)}"


def read_rows(path: Path, delimiter: str | None = None) -> list[dict]:
    """The rows of a CSV, TSV or JSONL file as dicts (a CSV's delimiter sniffed unless given); DataError names it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text: {error}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as error:
                    raise DataError(f"{path}: line {number}: not JSON: {error}") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {number}: expected an object of fields, got {type(row).__name__}")
                rows.append(row)
        return rows
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise DataError(f"{path}: data.path: expected a .csv, .tsv or .jsonl file")
    lines = text.splitlines()
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=_DELIMITERS).delimiter
        except csv.Error:  # rows that disagree: the one the header uses most, else the extension's
            counts = {candidate: lines[0].count(candidate) for candidate in _DELIMITERS} if lines else {}
            best = max(counts, key=counts.get, default=",")
            delimiter = best if counts.get(best) else "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # more or fewer fields than the header names
            fields = sum(value is not None for key, value in row.items() if key is not None) + len(row.get(None) or ())
            raise DataError(
                f"{path}: line {number}: {fields} field(s) where the header has {len(reader.fieldnames)} (delimiter "
                f"{delimiter!r}; set data.delimiter if that is not the file's)"
            )
    return rows


def tokenize(table: TextTable, rows: list[int], tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids of the chosen rows, truncated to `max_length`, unpadded."""
    texts = [table.texts[row] for row in rows]
    pairs = [table.pairs[row] for row in rows] if table.pairs else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    keys = [key for key in ("input_ids", "token_type_ids") if key in encoded]
    return [{key: encoded[key][index] for key in keys} for index in range(len(texts))]


def token_lengths(dataset: TokenizedTexts, tokenizer, table: TextTable, rows: list[int]) -> dict:
    """Median, p95 and maximum tokens per text, and how many texts `max_length` cut short."""
    lengths = np.array([len(ids["input_ids"]) for ids in dataset.encodings])
    untruncated = tokenizer([table.texts[row] for row in rows[:2000]], truncation=False)["input_ids"]
    cut = sum(len(ids) > dataset.max_length for ids in untruncated)
    return {
        "median": int(np.median(lengths)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "truncated": int(cut),
        "checked_for_truncation": len(untruncated),
    }
