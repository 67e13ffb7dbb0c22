"""Text files as people have them: semicolons, a byte-order mark, a misspelt split column, a row that does not fit."""

from __future__ import annotations

import re

import pytest

from greencompress.core.errors import DataError
from greencompress.models.text import read_text_table

ROWS = [("a small boat", "vehicle", "train"), ("a red apple", "food", "train"), ("a fast car", "vehicle", "test")]


def write(path, header=("text", "label", "split"), delimiter=",", encoding="utf-8", rows=ROWS):
    lines = [delimiter.join(header), *(delimiter.join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def read(path, split_column="split", delimiter=None):
    return read_text_table(path, "text", None, "label", split_column, delimiter)


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path, delimiter):
    table = read(write(tmp_path / "texts.csv", delimiter=delimiter))
    assert table.texts == ["a small boat", "a red apple", "a fast car"] and table.splits == ["train", "train", "test"]


def test_a_byte_order_mark_is_what_spreadsheets_write_and_is_dropped(tmp_path):
    table = read(write(tmp_path / "texts.csv", delimiter=";", encoding="utf-8-sig"))
    assert table.labels == ["vehicle", "food", "vehicle"]


def test_a_split_column_that_was_meant_is_never_silently_replaced_by_a_random_split(tmp_path):
    misspelt = write(tmp_path / "texts.csv", header=("text", "label", "spilt"))
    with pytest.raises(DataError, match=re.escape("data.split_column: no column 'split'; did you mean 'spilt'?")):
        read(misspelt)
    with pytest.raises(DataError, match="data.split_column: no column 'part'"):
        read(write(tmp_path / "other.csv"), split_column="part")
    unsplit = write(tmp_path / "plain.csv", header=("text", "label", "source"))  # nothing like a split column
    assert read(unsplit).splits is None


def test_a_row_with_more_or_fewer_fields_than_the_header_is_named(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text,label,split\na boat,vehicle,train\nan apple, a red one,food,train\n")
    with pytest.raises(DataError, match=r"texts.csv: line 3: 4 field\(s\) where the header has 3"):
        read(path)
    path.write_text("text;label;split\na boat;vehicle;train\nan apple;food\n")
    with pytest.raises(DataError, match=r"line 3: 2 field\(s\) where the header has 3 \(delimiter ';'"):
        read(path)


def test_a_delimiter_can_be_given(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text:label:split\nboat:vehicle:train\napple:food:test\n")
    assert read(path, delimiter=":").labels == ["vehicle", "food"]
