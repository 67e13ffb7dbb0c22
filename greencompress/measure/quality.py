"""What "within budget" means for a task's primary metric: top-1 points lost, an embedder's fidelity, or a language
model's perplexity increase.

A classifier is judged by its top-1 against the original model's. A sentence embedder is served for its
embeddings (search, retrieval, clustering): it is judged by how closely they follow the original model's,
the mean cosine between the two embeddings of each text and the share of texts whose nearest other text
stays the same; its label top-1 (a nearest-centroid head fitted on the data) is reported beside, never
decisive. The recommendation, the search's budget and the gates read the same `QualityBudget`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from greencompress.measure.accuracy import Accuracy

# Fidelity a user serving search would accept: dynamic int8 MiniLM keeps cosine 0.99 and 84% of nearest
# neighbours, static int8 0.965 and 73% (docs/BENCHMARKS.md), where rankings visibly change.
DEFAULT_MIN_EMBEDDING_COSINE = 0.98
DEFAULT_MIN_NEIGHBOUR_AGREEMENT = 0.80
DEFAULT_MAX_DROP_POINTS = 1.0
# A language model's perplexity increase over the original's, in percent (report/generation.py's recommendation).
DEFAULT_MAX_PERPLEXITY_INCREASE = 5.0


@dataclass(frozen=True)
class QualityBudget:
    """The primary metric (`top1`, `embedding` fidelity or `perplexity`) and the limits an artifact must keep to be
    eligible."""

    metric: Literal["top1", "embedding", "perplexity"] = "top1"
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS  # top-1 points below the original model's
    min_embedding_cosine: float = DEFAULT_MIN_EMBEDDING_COSINE
    min_neighbour_agreement: float = DEFAULT_MIN_NEIGHBOUR_AGREEMENT
    max_perplexity_increase: float = DEFAULT_MAX_PERPLEXITY_INCREASE  # percent over the original's

    def excess(
        self,
        top1_drop_points: float | None,
        embedding_cosine: float | None = None,
        neighbour_agreement: float | None = None,
        perplexity_increase: float | None = None,
    ) -> float | None:
        """How far beyond the budget, in points (percent of perplexity for an LM; <= 0: within); None where the metric
        was not measured."""
        if self.metric == "perplexity":
            return None if perplexity_increase is None else perplexity_increase - self.max_perplexity_increase
        if self.metric == "embedding":
            if embedding_cosine is None or neighbour_agreement is None:
                return None
            return 100 * max(
                self.min_embedding_cosine - embedding_cosine, self.min_neighbour_agreement - neighbour_agreement
            )
        return None if top1_drop_points is None else top1_drop_points - self.max_drop_points

    def excess_of(self, candidate: Accuracy | None, reference: Accuracy | None) -> float | None:
        """`excess` for a measured artifact against the original model's accuracy."""
        if candidate is None:
            return None
        drop = 100 * (reference.top1 - candidate.top1) if reference is not None else None
        return self.excess(drop, candidate.embedding_cosine, candidate.neighbour_agreement)

    def describe(self) -> str:
        """The budget in words, naming the metric that decides."""
        if self.metric == "embedding":
            return (
                f"embedding fidelity to the original FP32 model: mean cosine >= {self.min_embedding_cosine:g} and "
                f"nearest neighbour kept for >= {100 * self.min_neighbour_agreement:g}% of texts (label top-1 is "
                f"reported beside, not decisive)"
            )
        if self.metric == "perplexity":
            return f"perplexity within +{self.max_perplexity_increase:g}% of the original model's"
        return f"top-1 within {self.max_drop_points:g} point(s) of the original model's"


def quality_budget(
    metric: str,
    max_drop_points: float | None = None,
    min_embedding_cosine: float | None = None,
    min_neighbour_agreement: float | None = None,
    max_perplexity_increase: float | None = None,
) -> QualityBudget:
    """The budget for a task's primary metric, each limit the one given or the default."""
    return QualityBudget(
        metric,
        DEFAULT_MAX_DROP_POINTS if max_drop_points is None else max_drop_points,
        DEFAULT_MIN_EMBEDDING_COSINE if min_embedding_cosine is None else min_embedding_cosine,
        DEFAULT_MIN_NEIGHBOUR_AGREEMENT if min_neighbour_agreement is None else min_neighbour_agreement,
        DEFAULT_MAX_PERPLEXITY_INCREASE if max_perplexity_increase is None else max_perplexity_increase,
    )
