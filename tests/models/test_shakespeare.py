"""The shipped text for language models: real Shakespeare, evaluation plays apart from calibration plays, its
provenance and licence beside it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from importlib import resources


def test_scenes_of_four_plays_split_by_play_with_their_provenance():
    folder = resources.files("greencompress.resources")
    raw = folder.joinpath("shakespeare.jsonl").read_bytes()
    notice = folder.joinpath("SHAKESPEARE_LICENSE.md").read_text(encoding="utf-8")
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    plays = Counter((record["play"], record["split"]) for record in records)
    assert plays == {
        ("Macbeth", "test"): 26,
        ("Twelfth Night", "test"): 18,
        ("The Tempest", "train"): 9,
        ("Julius Caesar", "train"): 18,
    }
    # No window evaluated shares a play with calibration or healing text.
    assert not {p for p, s in plays if s == "test"} & {p for p, s in plays if s == "train"}
    assert all("SCENE" in record["text"][:20] and len(record["text"]) > 300 for record in records)
    assert sum(len(record["text"]) for record in records if record["split"] == "test") > 200_000
    macbeth = next(record["text"] for record in records if record["play"] == "Macbeth")
    assert "When shall we three meet again?" in macbeth
    assert f"SHA-256 of the file: {hashlib.sha256(raw).hexdigest()}" in notice
    assert "public domain" in notice and "CC-BY 2.5" in notice
