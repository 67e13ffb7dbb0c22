"""The shipped English text set: real WordNet definitions, balanced labels, its licence beside it, rebuilt exactly."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from tests.conftest import REPO

DATA_NOUN = Path("/usr/share/wordnet/data.noun")


def shipped() -> tuple[str, str]:
    folder = resources.files("greencompress.resources")
    return folder.joinpath("wordnet_glosses.csv").read_text(encoding="utf-8"), folder.joinpath(
        "WORDNET_LICENSE.md"
    ).read_text(encoding="utf-8")


def test_the_set_is_balanced_labelled_text_with_its_provenance_and_licence():
    text, notice = shipped()
    rows = list(csv.DictReader(text.splitlines()))
    assert Counter((row["label"], row["split"]) for row in rows) == {
        (label, split): count
        for label in ("animal", "artifact", "food", "location", "person", "plant")
        for split, count in (("train", 300), ("test", 100))
    }
    assert all(len(row["text"].split()) >= 4 and row["synset"].startswith("n") for row in rows)
    assert len({row["synset"] for row in rows}) == len(rows)  # no synset twice, so no test text is in train
    assert f"SHA-256 of the CSV: {hashlib.sha256(text.encode()).hexdigest()}" in notice
    assert "WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved." in notice


@pytest.mark.skipif(not DATA_NOUN.is_file(), reason="WordNet is not installed here (apt-get install wordnet-base)")
def test_the_script_rebuilds_the_shipped_file_from_wordnet(tmp_path):
    spec = importlib.util.spec_from_file_location("build", REPO / "scripts" / "build_wordnet_glosses.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.render_csv(build.build_rows(DATA_NOUN)) == shipped()[0]
