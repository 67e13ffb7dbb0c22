"""Build (train and cache) every built-in model now, e.g. while baking a container image.

    python scripts/build_builtin_models.py        # prints each model's cache path and provenance

Runs on first use anyway; this only moves the one-time cost (about 2 minutes per model on 2 cores).
"""

from __future__ import annotations

import json
import logging

from greencompress.models.zoo import BUILTIN_MODELS, load_builtin


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in BUILTIN_MODELS:
        _, provenance = load_builtin(name)
        print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
