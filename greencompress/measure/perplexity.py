"""Perplexity of a causal language model over fixed windows of a token stream, with a stride.

Each window holds `window` tokens and starts `stride` tokens after the previous one; it scores only the
tokens the previous window did not (the rest are its context), so with a stride below the window every
token after the first is scored exactly once, with at least `window - stride` tokens of context before it.
Disjoint windows (stride = window) cannot predict their first token, which is then left unscored. The figure is
exp(mean negative log-likelihood per scored token), and it states the window, the stride and the count of
tokens: perplexities are comparable only at the same three and the same tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

LogitsOf = Callable[[np.ndarray], np.ndarray]  # token ids [1, T] (int64) -> logits [1, T, vocabulary]


@dataclass(frozen=True)
class Window:
    """Token ids [start, end) of the stream, scoring the predictions of its last `scored` tokens."""

    start: int
    end: int
    scored: int


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll_per_token: float  # nats
    tokens: int  # tokens scored
    windows: int
    window: int
    stride: int
    predictions: np.ndarray | None = None  # the most likely next token at every scored position, in order

    def agreement(self, other: Perplexity) -> float:
        """The share of scored positions where this model's most likely next token is `other`'s (same windows)."""
        if self.predictions is None or other.predictions is None or len(self.predictions) != len(other.predictions):
            raise ValueError("next-token agreement needs both models' predictions over the same windows")
        return float(np.mean(self.predictions == other.predictions))


def windows(length: int, window: int, stride: int, limit: int | None = None) -> list[Window]:
    """The windows over a stream of `length` tokens (at most `limit` of them, from its start)."""
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    if length < 2:
        raise ValueError(f"a stream of {length} token(s) has nothing to predict")
    found, scored_until = [], 1  # the first token has no prediction
    start = 0
    while scored_until < length and (limit is None or len(found) < limit):
        end = min(start + window, length)
        found.append(Window(start, end, min(end - scored_until, end - start - 1)))
        scored_until = end
        start += stride
        if end == length:
            break
    return found


def perplexity(logits_of: LogitsOf, ids: np.ndarray, window: int, stride: int, limit: int | None = None) -> Perplexity:
    """Perplexity of the model behind `logits_of` on the token stream `ids`, window by window."""
    chosen = windows(len(ids), window, stride, limit)
    total, count, predictions = 0.0, 0, []
    for part in chosen:
        tokens = np.asarray(ids[part.start : part.end], dtype=np.int64)[None]
        logits = np.asarray(logits_of(tokens), dtype=np.float64)[0]
        # Position p predicts token p + 1: the last `scored` tokens are predicted by the positions before them.
        predicting = logits[len(tokens[0]) - part.scored - 1 : -1]
        targets = tokens[0, len(tokens[0]) - part.scored :]
        peak = predicting.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(predicting - peak).sum(axis=1))
        total += float((log_norm - predicting[np.arange(len(targets)), targets]).sum())
        count += len(targets)
        predictions.append(predicting.argmax(axis=1))
    nll = total / count
    return Perplexity(math.exp(nll), nll, count, len(chosen), window, stride, np.concatenate(predictions))


def torch_logits(model) -> LogitsOf:
    """`logits_of` for a transformers causal LM (or any module returning `.logits` or a tensor) in PyTorch."""
    import torch

    def run(tokens: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = model(input_ids=torch.from_numpy(tokens))
        logits = output.logits if hasattr(output, "logits") else output
        return logits.float().numpy()

    return run
