"""Pareto dominance over any number of objectives, each maximised or minimised: for reports and the search."""

from __future__ import annotations

from typing import Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """`a` is no worse than `b` on every objective and strictly better on one."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if direction == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (equal points are all kept), in the order given."""
    return [
        i
        for i, point in enumerate(points)
        if not any(dominates(other, point, directions) for j, other in enumerate(points) if j != i)
    ]
