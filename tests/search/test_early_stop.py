"""Early stopping: checked once, part-way through the trial's fine-tuning, against a floor far below the budget."""

from __future__ import annotations

import types

import pytest

from greencompress.compress.finetune import FinetuneConfig
from greencompress.search.spec import SearchSpec
from greencompress.search.study import HopelessTrial, Search


class FakeTrial:
    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def observer_for(epochs: int | None, baseline: float = 99.0, warmup_epochs: float = 0.5, **early_stop):
    search = types.SimpleNamespace(
        spec=SearchSpec.model_validate(
            {"space": {"round_to": [8]}, "budget": {"max_accuracy_drop": 1.0}, "early_stop": early_stop}
        )
    )
    trial = FakeTrial()
    finetune = None if epochs is None else FinetuneConfig(epochs=epochs, warmup_epochs=warmup_epochs)
    observer = Search._early_stop(search, trial, types.SimpleNamespace(baseline_validation_top1=baseline), finetune)
    return observer, trial


def test_a_low_first_epoch_is_not_judged_but_a_low_half_way_epoch_is():
    observer, trial = observer_for(epochs=4)  # floor: 99 - 1 - 20 = 78%, checked after epoch 2
    observer(1, 0.083)  # at the warm-up's peak: chance level, and not judged
    with pytest.raises(HopelessTrial, match="validation top-1 40.0% after epoch 2 of 4, below 78.0%"):
        observer(2, 0.40)
    assert trial.user_attrs["checked_validation_top1"] == [2, 40.0]


def test_a_candidate_above_the_floor_runs_on_and_is_checked_once():
    observer, trial = observer_for(epochs=3, at_fraction=0.34, margin_points=5)  # floor 93%, after epoch 2
    observer(2, 0.95)
    observer(2, 0.10)  # a second fine-tuning in the same trial (QAT, steps) is not judged again
    assert trial.user_attrs["checked_validation_top1"] == [2, 95.0]


def test_no_check_without_fine_tuning_when_disabled_or_with_nothing_to_save():
    assert observer_for(epochs=None)[0] is None
    assert observer_for(epochs=3, enabled=False)[0] is None
    assert observer_for(epochs=2)[0] is None  # epoch 1 ends the warm-up; epoch 2 is the last
    assert observer_for(epochs=20, warmup_epochs=15)[0] is not None  # checked after epoch 16


def test_the_check_waits_for_the_epoch_after_the_warm_up():
    observer, trial = observer_for(epochs=10, at_fraction=0.1, warmup_epochs=2)  # not epoch 1: epoch 3
    observer(1, 0.05)
    observer(2, 0.05)
    with pytest.raises(HopelessTrial, match="after epoch 3 of 10"):
        observer(3, 0.05)
