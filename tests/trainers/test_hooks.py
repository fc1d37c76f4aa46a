"""The training loop's one extension interface (:class:`trainers.hooks.LoopHook`): a hook that is
not built in attaches without editing the loop, is called in the documented order, may stop the
loop, and is refused under torch.distributed when it needs one process.

Trains a head on a tiny random BERT's cached features over 200 real movie-review sentences.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import head_config

from trainers.engine import train
from trainers.hooks import Loop, LoopHook
from trainers.loop_hooks import OnStep
from trainers.results import StepRecord


class LossScheduler(LoopHook):
    """A scheduler-like hook: halves the learning rate after step 5, stops after step ``stop``."""

    def __init__(self, stop: int | None) -> None:
        self.stop = stop
        self.calls: list[str] = []

    def contributions(self):
        self.calls.append("contributions")
        return None

    def start(self, loop: Loop) -> None:
        self.calls.append(f"start {len(loop.history)}")

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        self.calls.append(f"step {record.step}")
        if record.step == 5:
            for group in loop.parts.base.param_groups:
                group["lr"] /= 2
        return "told to stop" if record.step == self.stop else None

    def end(self, loop: Loop, stop_reason: str | None) -> None:
        self.calls.append(f"end {len(loop.history)} {stop_reason}")

    def close(self) -> None:
        self.calls.append("close")


def test_a_hook_of_ones_own_attaches_changes_the_run_and_stops_it(tiny_bert: Path, tmp_path: Path, reviews_200) -> None:
    cfg = head_config(tiny_bert, tmp_path / "features", mechanism="laplace", epochs=2)
    reference = train(cfg, dataset=reviews_200)
    assert reference.steps == 20

    scheduler = LossScheduler(stop=None)
    scheduled = train(cfg, dataset=reviews_200, hooks=[scheduler])
    assert scheduler.calls == ["contributions", "start 0", *(f"step {i}" for i in range(1, 21)), "end 20 None", "close"]
    # the same noise and batches up to step 5; a halved learning rate after it
    assert scheduled.history[:5] == reference.history[:5] and scheduled.history[5:] != reference.history[5:]
    assert scheduled.epsilon == reference.epsilon  # a hook does not touch the accounting

    stopper, seen = LossScheduler(stop=7), []
    stopped = train(cfg, dataset=reviews_200, hooks=[stopper, OnStep(seen.append)])
    assert stopped.steps == 7 and stopped.stop_reason == "told to stop" and stopped.stopped_early
    assert stopper.calls[-2:] == ["end 7 told to stop", "close"]
    # the hooks after the one that stopped are not called for that step
    assert [r.step for r in seen] == list(range(1, 7))
    assert stopped.epsilon is not None and stopped.epsilon < reference.epsilon  # 7 steps spent, not 20


class Failing(LoopHook):
    def __init__(self) -> None:
        self.closed = False

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        if record.step == 2:
            raise RuntimeError("hook failed at step 2")
        return None

    def close(self) -> None:
        self.closed = True


def test_a_failing_hook_is_closed_and_its_error_ends_the_trial(tiny_bert: Path, tmp_path: Path, reviews_200) -> None:
    failing = Failing()
    with pytest.raises(RuntimeError, match="hook failed at step 2"):
        train(
            head_config(tiny_bert, tmp_path / "features", mechanism="laplace", epochs=2),
            dataset=reviews_200,
            hooks=[failing],
        )
    assert failing.closed


def test_two_contribution_hooks_are_refused(tiny_bert: Path, tmp_path: Path, reviews_200) -> None:
    from trainers.loop_hooks import Contributions

    with pytest.raises(ValueError, match="at most one hook may add contributions"):
        train(
            head_config(tiny_bert, tmp_path / "features", mechanism="laplace", epochs=2),
            dataset=reviews_200,
            hooks=[Contributions(lambda s: None), Contributions(lambda s: None)],
        )
