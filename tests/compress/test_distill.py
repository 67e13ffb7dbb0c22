"""Healing by distillation: the loss is the teacher-to-student KL per token, and training on calibration windows
brings a shallower tiny Llama's next-token distributions closer to the original's on windows it never saw."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from greencompress.compress.decoder_surgery import remove_decoder_layers
from greencompress.compress.distill import DistillConfig, distill, distillation_loss
from greencompress.core.errors import GreencompressError
from tests.measure.test_perplexity import tiny


def test_the_loss_is_zero_for_the_teachers_own_logits_and_the_kl_divergence_otherwise():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    other = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(1))
    assert float(distillation_loss(logits, logits, 2.0)) == pytest.approx(0, abs=1e-6)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(other, -1), torch.log_softmax(logits, -1), log_target=True, reduction="none"
    ).sum(-1)
    assert float(distillation_loss(other, logits, 1.0)) == pytest.approx(float(expected.mean()), rel=1e-5)


def held_out_divergence(student, teacher, ids: np.ndarray) -> float:
    with torch.no_grad():
        batch = torch.from_numpy(ids)
        return float(distillation_loss(student(input_ids=batch).logits, teacher(input_ids=batch).logits, 1.0))


def test_distillation_brings_a_shallower_model_closer_to_the_original_on_windows_it_never_saw():
    teacher = tiny("llama", layers=3).eval()
    with torch.no_grad():  # a random model predicts nearly uniformly; sharper predictions make the layer matter
        teacher.lm_head.weight.mul_(30)
    student = copy.deepcopy(teacher)
    remove_decoder_layers(student, [1])
    rng = np.random.default_rng(0)
    calibration, unseen = rng.integers(0, 97, 16384), rng.integers(0, 97, (4, 32))
    before = held_out_divergence(student, teacher, unseen)
    config = DistillConfig(tokens=16384, window=32, batch_windows=4, learning_rate=3e-3, precision="fp32")
    done = distill(student, teacher, calibration, config, seed=0, bf16=False)
    assert done["steps"] == 128 and done["tokens"] == 16384 and done["passes_over_calibration_text"] == 1.0
    assert done["last_loss"] < done["first_loss"]
    assert held_out_divergence(student, teacher, unseen) < 0.5 * before
    assert not student.training and len(student.model.layers) == 2


def test_a_window_longer_than_the_calibration_text_is_refused():
    with pytest.raises(GreencompressError, match="fewer than one window of 256"):
        distill(tiny("llama"), tiny("llama"), np.arange(100), DistillConfig(), seed=0, bf16=False)
