"""Top-1 and top-5 accuracy of a runner on a labelled split; for an embedding model, agreement with the FP32 one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greencompress.models.data import batches
from greencompress.models.serving import Scorer, logits_only, outputs_of


@dataclass(frozen=True)
class Accuracy:
    """Fractions in [0, 1] over `samples` inputs.

    For a model that also returns an embedding, how its embeddings agree with the FP32 model's on the
    same texts: the mean cosine, the share of texts whose nearest other text is the same by both, and
    recall@10: the share of each text's 10 nearest others by the FP32 embeddings that are also among its
    10 nearest by these (what a search index built on them would still return).
    """

    top1: float
    top5: float
    samples: int
    embedding_cosine: float | None = None
    neighbour_agreement: float | None = None
    recall_at_10: float | None = None


def evaluate(
    runner, dataset, batch_size: int, progress=None, label: str = "evaluating", scorer: Scorer = logits_only
) -> Accuracy:
    """Accuracy of `runner` on every sample of `dataset`."""
    return evaluate_with_embeddings(runner, dataset, batch_size, progress, label, scorer)[0]


def evaluate_with_embeddings(
    runner, dataset, batch_size: int, progress=None, label: str = "evaluating", scorer: Scorer = logits_only
) -> tuple[Accuracy, np.ndarray | None]:
    """Accuracy of `runner` on every sample of `dataset`, and its embeddings where `scorer` finds them (else None)."""
    task = progress.add_task(label, total=len(dataset)) if progress else None
    top1 = top5 = total = 0
    embeddings = []
    for inputs, labels in batches(dataset, batch_size):
        logits, embedding = scorer(outputs_of(runner, inputs))
        if embedding is not None:
            embeddings.append(embedding)
        ranked = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked == labels[:, None]).any(axis=1).sum())
        total += len(labels)
        if progress:
            progress.update(task, advance=len(labels))
    return (
        Accuracy(top1=top1 / total, top5=top5 / total, samples=total),
        np.concatenate(embeddings) if embeddings else None,
    )


def embedding_agreement(embeddings: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """(mean cosine of each embedding to the reference's for the same input, nearest-neighbour agreement,
    recall@10 of the reference's 10 nearest neighbours; fewer than 10 when there are fewer other inputs)."""

    def unit(values):
        return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)

    ours, theirs = unit(embeddings.astype(np.float64)), unit(reference.astype(np.float64))
    cosine = float((ours * theirs).sum(axis=1).mean())

    def ranked(values):
        similarity = values @ values.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")

    k = min(10, len(embeddings) - 1)
    ours_ranked, theirs_ranked = ranked(ours), ranked(theirs)
    nearest = float((ours_ranked[:, 0] == theirs_ranked[:, 0]).mean())
    recall = np.mean([len(set(mine[:k]) & set(original[:k])) / k for mine, original in zip(ours_ranked, theirs_ranked)])
    return cosine, nearest, float(recall)
