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
