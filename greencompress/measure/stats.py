"""Confidence intervals over repeated measurement windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanInterval:
    """Mean of repeated windows and the half-width of its confidence interval (Student t, n-1 degrees of freedom)."""

    mean: float
    half_width: float
    samples: int
    confidence: float = 0.95

    @property
    def relative_half_width(self) -> float:
        return self.half_width / abs(self.mean) if self.mean else math.inf


def mean_interval(values, confidence: float = 0.95) -> MeanInterval:
    """The mean of `values` with a two-sided `confidence` interval; infinite half-width for one value."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return MeanInterval(float(values.mean()), math.inf, len(values), confidence)
    standard_error = values.std(ddof=1) / math.sqrt(len(values))
    quantile = stats.t.ppf(0.5 + confidence / 2, df=len(values) - 1)
    return MeanInterval(float(values.mean()), float(quantile * standard_error), len(values), confidence)


@dataclass(frozen=True)
class RatioInterval:
    """A ratio candidate / baseline with its 95% interval, from per-window figures.

    `ratio` is the geometric mean of the per-round ratios (paired) or the ratio of geometric means
    (unpaired); the interval is Student's t on the logarithms, turned back into a ratio.
    """

    ratio: float
    low: float
    high: float
    rounds: int
    paired: bool

    @property
    def within_noise(self) -> bool:
        """The interval holds 1: this measurement cannot tell the two apart."""
        return self.low <= 1.0 <= self.high

    @property
    def method(self) -> str:
        return (
            f"paired t on log-ratios over {self.rounds} interleaved rounds"
            if self.paired
            else f"Welch t on log values over {self.rounds} windows per side"
        )


def paired_ratio_interval(candidate, baseline, confidence: float = 0.95) -> RatioInterval | None:
    """The ratio of two series measured in the same rounds (window i of each in round i).

    None when a value is not positive (a log-ratio does not exist), e.g. an active energy at or
    below idle; a single round gives an unbounded interval.
    """
    from scipy import stats

    candidate, baseline = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    rounds = min(len(candidate), len(baseline))
    candidate, baseline = candidate[:rounds], baseline[:rounds]
    if rounds == 0 or (candidate <= 0).any() or (baseline <= 0).any():
        return None
    logs = np.log(candidate / baseline)
    center = float(logs.mean())
    if rounds < 2:
        return RatioInterval(math.exp(center), 0.0, math.inf, rounds, paired=True)
    half = stats.t.ppf(0.5 + confidence / 2, df=rounds - 1) * logs.std(ddof=1) / math.sqrt(rounds)
    return RatioInterval(math.exp(center), math.exp(center - half), math.exp(center + half), rounds, paired=True)


def unpaired_ratio_interval(candidate, baseline, confidence: float = 0.95) -> RatioInterval | None:
    """The ratio of two series measured at different times (two runs): Welch's t on the logarithms."""
    from scipy import stats

    candidate, baseline = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if len(candidate) == 0 or len(baseline) == 0 or (candidate <= 0).any() or (baseline <= 0).any():
        return None
    log_c, log_b = np.log(candidate), np.log(baseline)
    center = float(log_c.mean() - log_b.mean())
    rounds = min(len(candidate), len(baseline))
    if len(candidate) < 2 or len(baseline) < 2:
        return RatioInterval(math.exp(center), 0.0, math.inf, rounds, paired=False)
    var_c, var_b = log_c.var(ddof=1) / len(log_c), log_b.var(ddof=1) / len(log_b)
    standard_error = math.sqrt(var_c + var_b)
    if standard_error == 0:
        return RatioInterval(math.exp(center), math.exp(center), math.exp(center), rounds, paired=False)
    freedom = (var_c + var_b) ** 2 / (var_c**2 / (len(log_c) - 1) + var_b**2 / (len(log_b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df=freedom) * standard_error
    return RatioInterval(math.exp(center), math.exp(center - half), math.exp(center + half), rounds, paired=False)


@dataclass(frozen=True)
class AccuracyDrop:
    """How much lower a candidate's top-1 is than a reference's on the same samples, with a one-sided bound.

    `lost`: samples the reference classifies right and the candidate wrong; `gained`: the reverse. Only these
    discordant samples carry information about the difference (McNemar), so the bound is on them.
    """

    lost: int
    gained: int
    samples: int
    upper_points: float  # the drop is below this many points with `confidence`
    confidence: float = 0.95

    @property
    def points(self) -> float:
        return 100.0 * (self.lost - self.gained) / self.samples


def accuracy_drop(reference_correct, candidate_correct, confidence: float = 0.95) -> AccuracyDrop:
    """The paired top-1 drop of a candidate against a reference, per-sample correctness given as booleans.

    The one-sided upper bound is the Wald interval for a difference of matched proportions after adding half a
    sample to each of the four cells (Agresti and Min, Statistics in Medicine 24:729-740, 2005): without that
    correction, no disagreement on 16 samples would "prove" a drop of 0.
    """
    from scipy import stats

    reference, candidate = np.asarray(reference_correct, bool), np.asarray(candidate_correct, bool)
    if reference.shape != candidate.shape or reference.size == 0:
        raise ValueError(
            f"accuracy_drop: needs the same non-empty samples, got {reference.shape} and {candidate.shape}"
        )
    lost, gained = int((reference & ~candidate).sum()), int((~reference & candidate).sum())
    n = reference.size + 2.0
    b, c = lost + 0.5, gained + 0.5
    difference = (b - c) / n
    spread = math.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
    upper = difference + stats.norm.ppf(confidence) * spread
    return AccuracyDrop(lost, gained, int(reference.size), float(100.0 * upper), confidence)


def smallest_certifiable_drop(samples: int, confidence: float = 0.95) -> float:
    """The lowest upper bound (points) `accuracy_drop` can give on `samples`: that of a candidate agreeing on all."""
    return accuracy_drop(np.ones(samples, bool), np.ones(samples, bool), confidence).upper_points
