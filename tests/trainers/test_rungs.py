"""Early stopping in the loop (:class:`trainers.loop_hooks.RungHook`): rungs at epoch ends, a stop keeps
the steps taken and their epsilon, and scoring at a rung does not change the run.

Trains a head on a tiny random BERT's cached features over 200 real movie-review sentences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_models import head_config

from trainers.budget import make_step_plan
from trainers.data import TextDataset
from trainers.engine import train
from trainers.loop_hooks import RungHook


class Recorder:
    """A rung decision that records its calls and stops at ``stop_at`` (None: never)."""

    def __init__(self, stop_at: int | None) -> None:
        self.stop_at = stop_at
        self.calls: list[tuple[int, dict[str, float], float | None]] = []

    def __call__(self, epoch: int, scores: dict[str, float], epsilon: float | None) -> bool:
        self.calls.append((epoch, dict(scores), epsilon))
        return epoch != self.stop_at


def test_rungs_are_epoch_ends_inside_the_plan() -> None:
    plan = make_step_plan(200, 20, epochs=4)  # q = 0.1: an epoch is 10 steps, T = 40
    assert RungHook((1, 3, 9, 27), lambda *a: True).steps(plan) == {10: 1, 30: 3}
    assert RungHook((4,), lambda *a: True).steps(plan) == {}  # the last step: the trial ends anyway
    with pytest.raises(ValueError, match="rung epochs"):
        RungHook((0, 1), lambda *a: True)


def test_scoring_at_rungs_leaves_the_run_unchanged(tiny_bert: Path, tmp_path: Path, reviews_200: TextDataset) -> None:
    cfg = head_config(tiny_bert, tmp_path / "features")
    reference = train(cfg, dataset=reviews_200)
    going_on = Recorder(stop_at=None)
    hooked = train(cfg, dataset=reviews_200, hooks=[RungHook((1, 3), going_on)])
    assert (hooked.steps, hooked.epsilon, hooked.metrics, hooked.history) == (
        reference.steps, reference.epsilon, reference.metrics, reference.history,
    )  # fmt: skip
    assert hooked.pruned_at_epoch is None and not hooked.stopped_early
    # each rung is told the epsilon the trial is charged: its whole plan's
    planned = hooked.privacy_plan.planned.epsilon
    assert [(e, eps) for e, _, eps in going_on.calls] == [(1, planned), (3, planned)]
    assert all(set(s) == {"val_accuracy", "val_loss"} for _, s, _ in going_on.calls)


def test_a_stopped_trial_keeps_its_steps_epsilon_and_validation_scores_only(
    tiny_bert: Path, tmp_path: Path, reviews_200: TextDataset
) -> None:
    cfg = head_config(tiny_bert, tmp_path / "features")
    reference = train(cfg, dataset=reviews_200)
    stopper = Recorder(stop_at=3)
    hook = RungHook((1, 3), stopper)
    stopped = train(cfg, dataset=reviews_200, hooks=[hook])
    assert stopped.pruned_at_epoch == 3 and stopped.stopped_early
    # what the sweep logs at a rung before Tune may stop it: the step reached and the plan
    assert hook.step == stopped.steps == 30 and hook.plan is not None and hook.plan.steps == 40
    assert stopped.stop_reason is not None and stopped.stop_reason.startswith("early stopping: stopped after epoch 3")
    assert stopped.steps == 30 and stopped.planned_steps == reference.planned_steps == 40
    assert stopped.history == reference.history[:30]
    # noise calibrated for the whole plan, and the whole plan charged: where it stopped was chosen
    # from the data, so the accountant's value there (smaller) is not a bound
    assert stopped.privacy_plan is not None
    assert stopped.epsilon == stopped.privacy_plan.planned.epsilon == pytest.approx(reference.epsilon)
    assert stopped.epsilon <= 8.0
    assert stopped.history[-1].epsilon < stopped.epsilon and stopped.order == reference.order
    # the rung's validation scores, and nothing from the test split
    assert {k: v for k, v in stopped.metrics.items() if k != "train_loss"} == stopper.calls[-1][1]
    assert not any(k.startswith("test_") or k == "accuracy" for k in stopped.metrics)
    summary: dict[str, Any] = stopped.summary()
    assert summary["pruned_at_epoch"] == 3 and summary["steps"] == 30
