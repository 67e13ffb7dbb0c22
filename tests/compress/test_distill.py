"""Healing by distillation: the loss is the teacher-to-student KL per token, and training on calibration windows
brings a shallower tiny Llama's next-token distributions closer to the original's on windows it never saw."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from greencompress.compress.decoder_surgery import remove_decoder_layers
from greencompress.compress.distill import (
    DistillConfig,
    distill,
    distillation_loss,
    hidden_state_loss,
    layer_outputs,
)
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


def test_the_hidden_state_loss_matches_each_layer_with_the_teacher_layer_it_came_from():
    teacher = tiny("llama", layers=3).eval()
    student = copy.deepcopy(teacher)
    remove_decoder_layers(student, [1])  # the student's layers came from the teacher's 0 and 2
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, 97, (2, 24)))
    outputs = {}
    for name, model in (("teacher", teacher), ("student", student)):
        with torch.no_grad(), layer_outputs(model, True) as recorded:
            model(input_ids=ids)
        outputs[name] = list(recorded)
    assert len(outputs["teacher"]) == 3 and len(outputs["student"]) == 2
    # The first layer sees the same input in both: its own origin matches exactly, a wrong one does not.
    assert float(hidden_state_loss(outputs["student"][:1], outputs["teacher"], [0])) == pytest.approx(0, abs=1e-6)
    assert float(hidden_state_loss(outputs["student"][:1], outputs["teacher"], [2])) > 1e-3
    config = DistillConfig(tokens=2048, window=32, batch_windows=4, learning_rate=3e-3, hidden_states=1.0)
    calibration = np.random.default_rng(0).integers(0, 97, 4096)
    done = distill(student, teacher, calibration, config, seed=0, bf16=False, origin=[0, 2])
    assert "layers' outputs" in done["method"] and done["last_loss"] < done["first_loss"]
    with pytest.raises(GreencompressError, match="3 layer origins for a student of other depth"):
        distill(student, teacher, calibration, config, seed=0, bf16=False, origin=[0, 1, 2])


def test_an_interrupted_distillation_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import greencompress.compress.distill as distill_module

    teacher = tiny("llama", layers=2).eval()
    calibration = np.random.default_rng(0).integers(0, 97, 4096)
    config = DistillConfig(tokens=2048, window=32, batch_windows=4, learning_rate=3e-3, precision="fp32")
    whole = copy.deepcopy(teacher)
    remove_decoder_layers(whole, [1])
    interrupted = copy.deepcopy(whole)
    distill(whole, teacher, calibration, config, seed=0, bf16=False)
    checkpoint, calls = tmp_path / "student.checkpoint.pt", {"count": 0}
    loss = distill_module.distillation_loss

    def stopping(*args):
        calls["count"] += 1
        if calls["count"] == 11:  # Ctrl-C during step 11 of 16: the checkpoint holds 10 steps
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(distill_module, "distillation_loss", stopping)
    with pytest.raises(KeyboardInterrupt):
        distill(interrupted, teacher, calibration, config, seed=0, bf16=False, checkpoint=checkpoint)
    assert checkpoint.is_file()
    monkeypatch.setattr(distill_module, "distillation_loss", loss)
    done = distill(interrupted, teacher, calibration, config, seed=0, bf16=False, checkpoint=checkpoint)
    assert done["resumed_at_step"] == 11 and done["steps"] == 16 and not checkpoint.exists()
    for (name, mine), theirs in zip(interrupted.state_dict().items(), whole.state_dict().values()):
        assert torch.allclose(mine, theirs, atol=1e-6), name
