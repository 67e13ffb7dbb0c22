"""Derive the shipped English text set from WordNet 3.0: noun glosses labelled with their lexicographer category.

    apt-get install wordnet-base        # Debian's WordNet 3.0 database (/usr/share/wordnet)
    python scripts/build_wordnet_glosses.py [--wordnet /usr/share/wordnet] [--out greencompress/resources]

Each noun synset in data.noun carries its lexicographer file (noun.animal, noun.food, ...) and a gloss:
a definition, often followed by quoted examples. The set keeps the definition only (the examples often
name the word being defined), for six categories that are far apart in meaning, `PER_CLASS` synsets each
drawn with a fixed seed, split into train and test. The output is deterministic: running the script again
on the same package rewrites the same bytes (tests/models/test_text_set.py checks it where WordNet is
installed). WordNet's licence asks that its notice accompany every copy: it is written beside the file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import subprocess
from pathlib import Path

# Lexicographer file numbers of the noun categories used, from WordNet's lexnames(5WN).
CATEGORIES = {5: "animal", 6: "artifact", 13: "food", 15: "location", 18: "person", 20: "plant"}
PER_CLASS = {"train": 300, "test": 100}
SEED = 0
MIN_WORDS = 4  # shorter definitions ("a person") say too little to classify
CSV_NAME = "wordnet_glosses.csv"
NOTICE_NAME = "WORDNET_LICENSE.md"


def definitions(data_noun: Path) -> dict[str, list[tuple[str, str]]]:
    """Per category, (synset offset, definition) of every noun synset with a usable definition, in file order."""
    found: dict[str, list[tuple[str, str]]] = {name: [] for name in CATEGORIES.values()}
    for line in data_noun.read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):  # the licence header at the top of every data file
            continue
        fields, _, gloss = line.partition(" | ")
        offset, lexicographer_file = fields.split()[:2]
        category = CATEGORIES.get(int(lexicographer_file))
        definition = gloss.split('; "')[0].split(";")[0].strip().rstrip(".")
        if category and len(definition.split()) >= MIN_WORDS:
            found[category].append((offset, definition))
    return found


def build_rows(data_noun: Path) -> list[dict[str, str]]:
    """The labelled rows: text, label, split and the synset offset they come from, sorted for a stable file."""
    rng = random.Random(SEED)
    rows = []
    for category, items in sorted(definitions(data_noun).items()):
        chosen = rng.sample(items, sum(PER_CLASS.values()))
        cut = PER_CLASS["train"]
        for split, part in (("train", chosen[:cut]), ("test", chosen[cut:])):
            rows += [{"text": text, "label": category, "split": split, "synset": f"n{offset}"} for offset, text in part]
    return sorted(rows, key=lambda row: (row["split"] != "train", row["label"], row["synset"]))


def render_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["text", "label", "split", "synset"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def notice(wordnet: Path, csv_text: str) -> str:
    """The provenance of the file and WordNet's licence, whose terms ask it to accompany every copy."""
    version = (
        subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "wordnet-base"], capture_output=True, text=True
        ).stdout.strip()
        or "unknown"
    )
    copyright_file = Path("/usr/share/doc/wordnet-base/copyright").read_text(encoding="utf-8")
    licence = copyright_file.split("License: WordNet3.0\n", 1)[1].split("\n\nFiles:", 1)[0]
    licence = "\n".join(line[1:] if line.startswith(" ") else line for line in licence.splitlines())
    licence = licence.replace("\n.\n", "\n\n")
    counts = {
        split: sum(1 for line in csv_text.splitlines()[1:] if line.rsplit(",", 2)[1] == split) for split in PER_CLASS
    }
    return (
        f"# {CSV_NAME}: where it comes from\n\n"
        f"Derived by `scripts/build_wordnet_glosses.py` from WordNet 3.0 as Debian packages it "
        f"(`wordnet-base` {version}, `{wordnet / 'data.noun'}`): the definition part of noun synset glosses, "
        f"labelled with the synset's lexicographer category "
        f"({', '.join(f'noun.{c}' for c in sorted(CATEGORIES.values()))}), "
        f"{PER_CLASS['train']} train and {PER_CLASS['test']} test synsets per category drawn with seed {SEED} "
        f"({counts['train']} and {counts['test']} rows). Each row names its synset (`n` + offset in data.noun). "
        f"SHA-256 of the CSV: {hashlib.sha256(csv_text.encode()).hexdigest()}.\n\n"
        "The text is WordNet's, unchanged but for the cut after the definition; its licence follows.\n\n"
        "## WordNet 3.0 licence\n\n" + licence.strip() + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "greencompress" / "resources")
    arguments = parser.parse_args()
    data_noun = arguments.wordnet / "data.noun"
    if not data_noun.is_file():
        raise SystemExit(f"{data_noun} not found: apt-get install wordnet-base")
    text = render_csv(build_rows(data_noun))
    (arguments.out / CSV_NAME).write_text(text, encoding="utf-8")
    (arguments.out / NOTICE_NAME).write_text(notice(arguments.wordnet, text), encoding="utf-8")
    print(f"wrote {arguments.out / CSV_NAME} ({len(text.splitlines()) - 1} rows) and {arguments.out / NOTICE_NAME}")


if __name__ == "__main__":
    main()
