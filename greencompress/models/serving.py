"""What a deployment runs of a model: the module exported, measured and served, and the names of its outputs.

A model may train through one forward and serve through another: a sentence embedder trains through its
centroid head but serves its embeddings (models/huggingface.py: `for_serving`). Export and the runners
read the served module, so what is measured is what a user deploys; a `Scorer` (the task's) turns what
it serves into class scores outside the graph.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from torch import nn


def served(module: nn.Module) -> nn.Module:
    """The module a deployment runs: `module.for_serving()` where the model defines one, else `module` itself."""
    return module.for_serving() if hasattr(module, "for_serving") else module


def output_names(module: nn.Module) -> tuple[str, ...]:
    """The names of a served module's outputs: its own `output_names`, or `logits` for a classifier."""
    return tuple(getattr(module, "output_names", ("logits",)))


# What a model's served outputs score as: (class scores to rank, the embedding a fidelity is judged on, or None).
# The task owns it (models/tasks/: Task.scorer), so that scoring stays outside the graph a user deploys.
Scorer = Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, np.ndarray | None]]


def logits_only(outputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, None]:
    """A classifier's scoring: its first output is its logits, and it has no embedding to judge."""
    return outputs[0], None


def outputs_of(runner, inputs) -> tuple[np.ndarray, ...]:
    """Every output of a runner (runtimes/base.py: Runner.outputs), or of a plain callable, its one output."""
    return runner.outputs(inputs) if hasattr(runner, "outputs") else (runner(inputs),)
