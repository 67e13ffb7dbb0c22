"""Ratio intervals: paired over interleaved rounds within a run, unpaired (Welch) across runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greencompress.measure.stats import paired_ratio_interval, unpaired_ratio_interval


def test_paired_interval_on_hand_made_rounds():
    baseline = [10.0, 12.0, 9.0, 11.0, 10.5]  # a drifting machine: every round scales both sides
    noise = [1.02, 0.99, 1.01, 0.98, 1.00]
    candidate = [0.4 * b * n for b, n in zip(baseline, noise)]
    interval = paired_ratio_interval(candidate, baseline)
    logs = np.log(0.4 * np.array(noise))
    # mean of the log-ratios, +- t(0.975, 4) = 2.7764 x sd / sqrt(5)
    half = 2.7764451 * logs.std(ddof=1) / math.sqrt(5)
    assert interval.ratio == pytest.approx(math.exp(logs.mean()))
    assert (interval.low, interval.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert interval.low < 0.4 < interval.high and not interval.within_noise
    assert interval.rounds == 5 and interval.method == "paired t on log-ratios over 5 interleaved rounds"
    # The drift is shared, so pairing removes it: unpaired, the same figures cannot tell 0.4 from more.
    unpaired = unpaired_ratio_interval(candidate, baseline)
    assert unpaired.high - unpaired.low > 5 * (interval.high - interval.low)


def test_a_ratio_that_straddles_one_is_within_noise():
    baseline = [1.0, 1.1, 0.9, 1.05]
    candidate = [1.02, 1.05, 0.93, 1.04]
    interval = paired_ratio_interval(candidate, baseline)
    assert interval.low < 1.0 < interval.high and interval.within_noise


def test_no_interval_without_positive_values_and_an_unbounded_one_for_one_round():
    assert paired_ratio_interval([0.5, -0.1], [1.0, 1.0]) is None  # active energy below idle: no log-ratio
    assert paired_ratio_interval([], []) is None
    single = paired_ratio_interval([2.0], [4.0])
    assert single.ratio == 0.5 and single.low == 0.0 and math.isinf(single.high) and single.within_noise


def test_unpaired_interval_holds_the_true_ratio_of_two_independent_series():
    baseline = 5.0 * np.array([1.01, 0.99, 1.02, 0.98, 1.0, 1.0])
    candidate = 2.0 * np.array([0.99, 1.01, 1.0, 1.02, 0.98])
    interval = unpaired_ratio_interval(candidate, baseline)
    assert interval.low < 0.4 < interval.high and interval.high / interval.low < 1.1
    assert not interval.paired and "Welch" in interval.method


def test_accuracy_drop_counts_discordant_samples_and_bounds_the_drop_from_above():
    from greencompress.measure.stats import accuracy_drop, smallest_certifiable_drop

    reference = np.array([True] * 90 + [False] * 10)
    candidate = reference.copy()
    candidate[:4] = False  # 4 lost
    candidate[95] = True  # 1 gained
    drop = accuracy_drop(reference, candidate)
    assert (drop.lost, drop.gained, drop.samples) == (4, 1, 100) and drop.points == 3.0
    # Agresti-Min: half a sample added to each cell, n + 2 = 102; by hand: 3/102 + 1.645 * sqrt(6 - 9/102) / 102.
    assert drop.upper_points == pytest.approx(100 * (3 / 102 + 1.6448536 * np.sqrt(6 - 9 / 102) / 102), rel=1e-6)
    # Full agreement still bounds the drop above 0, less so the more samples: 256 cannot certify 0.5 pt, 1,024 can.
    assert smallest_certifiable_drop(256) > 0.5 > smallest_certifiable_drop(1024) > 0
    assert accuracy_drop(reference, reference).points == 0
    with pytest.raises(ValueError, match="same non-empty samples"):
        accuracy_drop(reference, candidate[:50])
