"""Re-run a search's best.yaml from scratch and compare with the trial it came from.

    python scripts/reproduce_best.py SEARCH_FOLDER OUT_FOLDER

Runs best.yaml through the pipeline with an empty stage cache (so pruning, fine-tuning, export and
quantization all run again) and prints, for the chosen candidate, the trial's and the re-run's
top-1 and paired latency and energy ratios against the unpruned model.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greencompress.pipeline.execute import run  # noqa: E402
from greencompress.pipeline.recipe import load_recipe  # noqa: E402
from greencompress.search.trial import read_outcome  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    summary = json.loads((folder / "search.json").read_text())
    if summary["chosen"] is None:
        print("the search chose no trial (none within the budget): nothing to reproduce")
        return 1
    row = next(r for r in summary["rows"] if r["number"] == summary["chosen"])
    (out / "run").mkdir(parents=True, exist_ok=True)
    report = run(load_recipe(folder / "best.yaml"), out / "run", shared_cache=out / "fresh-stage-cache")
    again = read_outcome(report, [row["outcome"]["runtime"]], row["outcome"]["batch_size"])
    for key in ("candidate", "top1", "latency_ratio", "energy_ratio"):
        print(f"{key}: trial {row['number']}: {row['outcome'][key]} | best.yaml re-run: {getattr(again, key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
