"""Log lines that summarise: many items with one kind of reason are one line on the terminal, all of them in run.log."""

from __future__ import annotations

import contextlib
import logging


def log_folded(log: logging.Logger, action: str, reasons: dict[str, str]) -> None:
    """One INFO line per kind of reason, with the count and the names; each item and its full reason at DEBUG.

    `reasons` maps a name (a layer, a node) to why `action` happened to it; the kind of a reason is its
    text before any parenthesised detail ("breaks the forward pass (mat1 and mat2 ...)" -> "breaks the
    forward pass"), so items that differ only in the detail share a line. The terminal shows INFO;
    run.log keeps DEBUG, where the details are.
    """
    by_kind: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        log.debug("%s %s: %s", action, name, reason)
        by_kind.setdefault(reason.split(" (", 1)[0], []).append(name)
    for kind, names in by_kind.items():
        log.info(
            "%s %d (%s%s): %s",
            action,
            len(names),
            kind,
            "; each one's detail in run.log" if any(" (" in reasons[n] for n in names) else "",
            ", ".join(names),
        )


@contextlib.contextmanager
def quiet_libraries(level: int = logging.INFO):
    """Silence records at `level` and below while a library call runs (ONNX Runtime's optimizer and quantizer log
    every pattern tried and every tensor's parameters on the root logger); by default warnings still show."""
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
