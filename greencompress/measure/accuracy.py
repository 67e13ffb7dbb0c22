"""Top-1 and top-5 accuracy of a runner on a labelled split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greencompress.models.data import batches


@dataclass(frozen=True)
class Accuracy:
    """Fractions in [0, 1] over `samples` images."""

    top1: float
    top5: float
    samples: int


def evaluate(runner, dataset, batch_size: int, progress=None, label: str = "evaluating") -> Accuracy:
    """Accuracy of `runner` on every sample of `dataset`."""
    task = progress.add_task(label, total=len(dataset)) if progress else None
    top1 = top5 = total = 0
    for inputs, labels in batches(dataset, batch_size):
        logits = runner(inputs)
        ranked = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked == labels[:, None]).any(axis=1).sum())
        total += len(labels)
        if progress:
            progress.update(task, advance=len(labels))
    return Accuracy(top1=top1 / total, top5=top5 / total, samples=total)
