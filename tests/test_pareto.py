"""Pareto dominance on known points: two and three objectives, maximised and minimised, ties kept."""

from greencompress.report.pareto import dominates, non_dominated


def test_dominance_needs_no_worse_everywhere_and_better_somewhere():
    directions = ("maximize", "minimize")  # top-1 up, joules down
    assert dominates((91.0, 0.010), (90.0, 0.012), directions)
    assert dominates((91.0, 0.010), (91.0, 0.012), directions)
    assert not dominates((91.0, 0.010), (91.0, 0.010), directions)  # equal: neither
    assert not dominates((92.0, 0.012), (91.0, 0.010), directions)  # a trade-off: neither


def test_front_of_known_points():
    points = [(91.4, 0.0100), (90.8, 0.0080), (90.9, 0.0085), (89.0, 0.0081), (91.0, 0.0120), (85.0, 0.0050)]
    # (89.0, 0.0081) loses to (90.8, 0.0080); (91.0, 0.0120) loses to (91.4, 0.0100).
    assert non_dominated(points, ("maximize", "minimize")) == [0, 1, 2, 5]


def test_equal_points_are_all_kept_and_three_objectives_count():
    assert non_dominated([(1.0, 2.0), (1.0, 2.0)], ("minimize", "minimize")) == [0, 1]
    # Worse on the first two objectives, but the only small file: on the front once size counts.
    points = [(90.0, 0.010, 5.0), (89.0, 0.011, 1.0), (88.0, 0.012, 6.0)]
    assert non_dominated(points, ("maximize", "minimize", "minimize")) == [0, 1]
    assert non_dominated([p[:2] for p in points], ("maximize", "minimize")) == [0]
