"""Repeated log messages fold into one line per kind on the terminal; run.log keeps every item with its detail."""

from __future__ import annotations

import logging

from greencompress.core.logs import log_folded


def test_items_of_one_kind_fold_into_one_line_with_the_count_and_the_names(caplog):
    log = logging.getLogger("greencompress.test")
    reasons = {
        f"layer{i}.conv2": f"pruning its channels breaks the forward pass (mat1 and mat2 shapes 1x{i})"
        for i in range(27)
    }
    reasons["fc"] = "the final classifier"
    with caplog.at_level(logging.DEBUG, logger="greencompress.test"):
        log_folded(log, "prune: left untouched, layers:", reasons)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert info == [
        "prune: left untouched, layers: 27 (pruning its channels breaks the forward pass; each one's detail in "
        "run.log): " + ", ".join(f"layer{i}.conv2" for i in range(27)),
        "prune: left untouched, layers: 1 (the final classifier): fc",
    ]
    assert (
        len(debug) == 28
        and "prune: left untouched, layers: layer5.conv2: pruning its channels breaks the forward "
        "pass (mat1 and mat2 shapes 1x5)"
        in debug
    )
