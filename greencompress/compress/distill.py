"""Healing a causal LM after structure was removed: distillation from the original model's next-token
distributions on calibration text (never the evaluation text).

The loss is the KL divergence of the student's next-token distribution from the teacher's, per token, at a
temperature (scaled by its square so that gradients keep their size), as in Minitron's logit distillation; with
`hidden_states` > 0, plus that weight times the mean 1 - cosine between each student layer's output and the
output of the teacher layer it came from (a layer's origin survives depth and width removal). AdamW,
linear warm-up then cosine decay, over `tokens` tokens of calibration windows (passes over the text repeat in a
new seeded order when the budget exceeds it). Where the CPU has bf16 units, both models run under bf16 autocast
(`precision: auto`); the weights stay FP32.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from greencompress.compress import distributed
from greencompress.compress.decoder_surgery import decoder_layers
from greencompress.compress.finetune import save_state_atomic, warmup_cosine
from greencompress.compress.technique import StageContext, StageOutput, Technique, TorchModel
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError

log = logging.getLogger(__name__)


class DistillConfig(Section):
    """`distill`: the current model (after `depth`) trained towards the original's next-token distributions on
    `tokens` tokens of calibration text, in windows of `window` tokens, `batch_windows` per step."""

    tokens: int = Field(default=65536, ge=16)
    window: int = Field(default=256, ge=16)
    batch_windows: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    temperature: float = Field(default=1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast where the CPU has bf16 units
    # Weight of the per-layer hidden-state loss (1 - cosine to the teacher layer each layer came from); 0: logits
    # only.
    hidden_states: float = Field(default=0.0, ge=0)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean per-token KL(teacher || student) of the softened next-token distributions, times temperature^2."""
    teacher = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    per_token = (teacher.exp() * (teacher - student)).sum(-1)
    return per_token.mean() * temperature**2


def hidden_state_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], origin: list[int]) -> torch.Tensor:
    """Mean over the student's layers and tokens of 1 - cosine between a layer's output and that of the teacher
    layer `origin[layer]` it came from."""
    losses = [
        1 - nn.functional.cosine_similarity(mine.float(), teacher[source].float(), dim=-1).mean()
        for mine, source in zip(student, origin)
    ]
    return torch.stack(losses).mean()


@contextlib.contextmanager
def layer_outputs(model: nn.Module, enabled: bool):
    """Within the block, the list yielded holds each decoder layer's output of the latest forward pass."""
    outputs: list[torch.Tensor] = []
    if not enabled:
        yield outputs
        return
    layers = decoder_layers(model)[2]

    def hook(index: int):
        def record(_module, _args, output):
            if index == 0:
                outputs.clear()
            outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

        return record

    handles = [layer.register_forward_hook(hook(index)) for index, layer in enumerate(layers)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _resumed(path: Path | None, identity: dict, student, optimizer, schedule) -> tuple[int, list]:
    """(the step to start from, the losses so far): 0 and none unless `path` holds this distillation's state. Under
    torchrun every rank resumes from rank 0's checkpoint, as fine-tuning does."""
    if path is None:
        return 0, []
    state = torch.load(path, weights_only=True) if distributed.is_main() and path.is_file() else None
    state = distributed.share(state)
    if state is None:
        return 0, []
    if state["identity"] != identity:
        log.info("distill: %s is another distillation's checkpoint; starting from step 1", path)
        return 0, []
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    log.info("distill: resuming from %s at step %d", path, state["step"] + 1)
    return state["step"], list(state["losses"])


def _windows(ids: np.ndarray, length: int) -> np.ndarray:
    count = len(ids) // length
    if count == 0:
        raise GreencompressError(
            f"stages.distill.window: the calibration text has {len(ids)} tokens, fewer than one window of {length}"
        )
    return ids[: count * length].reshape(count, length)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    calibration: np.ndarray,
    config: DistillConfig,
    seed: int,
    bf16: bool,
    origin: Sequence[int] | None = None,
    checkpoint: Path | None = None,
) -> dict:
    """Train `student` (in place) towards `teacher` on windows of the calibration token ids; returns what was done
    (tokens, steps, passes, first and last loss, seconds, precision). `origin`: the teacher layer each student
    layer came from (the hidden-state loss needs it; by default the same layer). `checkpoint`: a file the state is
    saved to every tenth of the steps, and resumed from when it holds this same distillation's state (deleted at
    the end). Under torchrun every rank calls it alike: each trains on its share of every step's windows and
    DistributedDataParallel averages the gradients; rank 0 alone writes the checkpoint, and every rank resumes
    from it."""
    windows = _windows(calibration, config.window)
    matching = config.hidden_states > 0
    origin = list(range(len(decoder_layers(student)[2]))) if origin is None else origin
    if matching and len(origin) != len(decoder_layers(student)[2]):
        raise GreencompressError(f"distill: {len(origin)} layer origins for a student of other depth")
    steps = math.ceil(config.tokens / (config.window * config.batch_windows))
    needed = steps * config.batch_windows
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(windows)) for _ in range(math.ceil(needed / len(windows)))])
    processes, rank = distributed.world_size(), distributed.rank()
    if config.batch_windows % processes:
        raise GreencompressError(
            f"stages.distill.batch_windows: {config.batch_windows} windows per step cannot be shared equally by "
            f"{processes} processes"
        )
    torch.manual_seed(seed)
    student.train()
    teacher.eval()
    trained = student if processes == 1 else torch.nn.parallel.DistributedDataParallel(student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, steps))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    identity = {"config": config.model_dump(mode="json"), "seed": seed, "bf16": bf16, "windows": len(windows)}
    first_step, losses = _resumed(checkpoint, identity, student, optimizer, schedule)
    started, seen_before = time.perf_counter(), first_step * config.batch_windows * config.window
    with distributed.threads_per_process():  # ranks side by side on one machine share its cores
        for step in range(first_step, steps):
            chosen = order[step * config.batch_windows : (step + 1) * config.batch_windows]
            batch = torch.from_numpy(windows[chosen[rank::processes]])  # this process's share of the step
            with torch.no_grad(), autocast, layer_outputs(teacher, matching) as taught:
                target = teacher(input_ids=batch, use_cache=False).logits
            with autocast, layer_outputs(student, matching) as learnt:
                logits = trained(input_ids=batch, use_cache=False).logits
            loss = distillation_loss(logits, target, config.temperature)
            if matching:
                loss = loss + config.hidden_states * hidden_state_loss(learnt, taught, origin)
            if not torch.isfinite(loss.detach()):
                raise GreencompressError(
                    f"stages.distill: the loss became {float(loss)} at step {step + 1}: lower learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(distributed.mean_over_ranks(float(loss.detach())))  # the whole step's, every rank's share
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                seen = (step + 1) * config.batch_windows * config.window
                log.info(
                    "distill: step %d/%d, %d tokens, loss %.4f (first %.4f), %.0f tokens/s",
                    step + 1,
                    steps,
                    seen,
                    losses[-1],
                    losses[0],
                    (seen - seen_before) / (time.perf_counter() - started),
                )
                if checkpoint is not None and distributed.is_main() and step + 1 < steps:
                    state = {"identity": identity, "step": step + 1, "losses": losses}
                    state.update(student=student.state_dict(), optimizer=optimizer.state_dict())
                    save_state_atomic({**state, "schedule": schedule.state_dict()}, checkpoint)
    if checkpoint is not None and distributed.is_main():
        checkpoint.unlink(missing_ok=True)  # the healed model is saved by the caller
    student.eval()
    return {
        "method": "distillation from the original model's next-token distributions (KL per token)"
        + (f" and its layers' outputs (1 - cosine, weight {config.hidden_states})" if matching else ""),
        "tokens": steps * config.batch_windows * config.window,
        "steps": steps,
        "passes_over_calibration_text": round(needed / len(windows), 2),
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-max(1, steps // 10) :])),
        "seconds": round(time.perf_counter() - started, 1),
        **({"resumed_at_step": first_step + 1} if first_step else {}),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "processes": processes,
    }


class Distill(Technique):
    """Healing of a causal LM by distillation from the original. The text-generation run applies it
    (pipeline/generate.py); the stage pipeline of the other tasks never does."""

    name, config, works_on, tag = "distill", DistillConfig, "torch", "distilled"
    structures = ("decoder",)

    def apply(self, config: DistillConfig, source: TorchModel, context: StageContext) -> StageOutput:
        raise GreencompressError(
            "distill is applied by a text-generation run (pipeline/generate.py), not by the stage pipeline"
        )
