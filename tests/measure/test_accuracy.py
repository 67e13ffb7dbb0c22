"""Embedding agreement with the original model: mean cosine, nearest neighbour kept, recall@10."""

from __future__ import annotations

import numpy as np

from greencompress.measure.accuracy import embedding_agreement


def test_recall_at_10_counts_the_reference_neighbours_an_index_of_these_embeddings_still_returns():
    # 12 points on an arc: each one's neighbours are the points beside it, in order of distance.
    reference = np.stack([np.cos(np.linspace(0, 1.1, 12)), np.sin(np.linspace(0, 1.1, 12))], axis=1)
    assert embedding_agreement(reference, reference) == (1.0, 1.0, 1.0)
    swapped = reference[[1, 0, *range(2, 12)]]  # texts 0 and 1 get each other's embeddings
    cosine, nearest, recall = embedding_agreement(swapped, reference)
    assert cosine < 1.0 and nearest < 1.0 and 0.9 < recall < 1.0
    # Unrelated embeddings keep about k / (n - 1) of each neighbourhood: 10 of 11 here.
    unrelated = np.random.default_rng(0).standard_normal((12, 2))
    assert embedding_agreement(unrelated, reference)[2] < 1.0
