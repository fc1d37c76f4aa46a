"""The built-in :class:`~trainers.hooks.LoopHook` s: per-step callbacks, the optimizer's extra
contributions and the audit's observer, the parameter update, checkpoints, early stopping."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from trainers.checkpoint import CheckpointSession, TrainingInterrupted, TrialState, termination_watch
from trainers.hooks import Loop, LoopHook
from trainers.optimizer import ExtraContributions
from trainers.results import StepCallback, StepRecord


class OnStep(LoopHook):
    """Calls ``fn(record)`` after every step, and for every step a resumed run restored (so a
    fresh run that resumes a checkpoint still gets the whole per-step history)."""

    def __init__(self, fn: StepCallback):
        self.fn = fn

    def replay(self, record: StepRecord) -> None:
        self.fn(record)

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        self.fn(record)
        return None


class Contributions(LoopHook):
    """Adds ``fn(step)``'s tensors to each noisy step's clipped sum (the optimizer's
    ``extra_contributions``, :mod:`trainers.optimizer`); ``observe`` (optional) gets every step's
    privatized gradients ``p.grad`` after the step. The privacy audit's canaries are one such pair
    (:class:`trainers.audit_canaries.TrialAudit`)."""

    def __init__(self, fn: ExtraContributions, observe: Callable[[list[torch.Tensor]], None] | None = None):
        self.fn = fn
        self.observe = observe

    def contributions(self) -> ExtraContributions | None:
        return self.fn

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        if self.observe is not None:
            self.observe([p.grad for p in loop.params])
        return None


class KeepUpdate(LoopHook):
    """Keeps the run's parameter update: final minus initial value of every trainable parameter
    (CPU float32, optimizer order) in :attr:`update`. The initial values are taken before a
    checkpoint is restored, so a resumed run's update equals an uninterrupted one's."""

    def __init__(self) -> None:
        self.initial: list[torch.Tensor] | None = None
        self.update: list[torch.Tensor] | None = None

    def start(self, loop: Loop) -> None:
        self.initial = [p.detach().float().cpu().clone() for p in loop.params]

    def end(self, loop: Loop, stop_reason: str | None) -> None:
        assert self.initial is not None
        self.update = [p.detach().float().cpu() - i for p, i in zip(loop.params, self.initial, strict=True)]


class Checkpoints(LoopHook):
    """Checkpoints of one trial (:mod:`trainers.checkpoint`): resumes from the session's state,
    saves every ``checkpointing.every`` steps and when the loop ends, and on SIGTERM saves after
    the current step, then raises :class:`~trainers.checkpoint.TrainingInterrupted`."""

    single_process = True

    def __init__(self, session: CheckpointSession):
        self.session = session
        self._watch: contextlib.AbstractContextManager[Any] | None = None
        self._termination: Any = None

    def start(self, loop: Loop) -> None:
        self._watch = termination_watch(enabled=True)
        self._termination = self._watch.__enter__()

    def restore(self) -> TrialState | None:
        return self.session.resume

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        from trainers.loop import capture_state

        done, planned = len(loop.history), loop.ctx.plan.steps
        if self._termination is not None and self._termination.requested:
            path = self.session.save(capture_state(loop.ctx, loop.parts, loop.history, finished=done == planned))
            raise TrainingInterrupted(path, done, planned)
        if done < planned and self.session.checkpointing.due(done):  # the end saves the last one
            self.session.save(capture_state(loop.ctx, loop.parts, loop.history, finished=False))
        return None

    def end(self, loop: Loop, stop_reason: str | None) -> None:
        from trainers.loop import capture_state

        resume = self.session.resume
        if resume is not None and resume.finished:
            return  # restored a finished run: nothing new to save
        state = capture_state(loop.ctx, loop.parts, loop.history, finished=True, stop_reason=stop_reason)
        self.session.save(state)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.__exit__(None, None, None)
            self._watch = None


class RungHook(LoopHook):
    """Early stopping: after each epoch in ``epochs`` the loop scores the validation split and
    calls ``decide(epoch, validation metrics, epsilon charged)``; False stops training there.

    Epoch ``e`` ends at step ``round(e / q)`` (Poisson sampling: an epoch is ``1/q`` expected
    steps); a rung at or beyond the plan's last step is never asked (the trial ends anyway). The
    noise stays calibrated for the whole plan, and a trial is charged its whole plan's epsilon
    (None without privacy) wherever it stops: the accountant's value at a stopping step chosen
    from the data is not a bound (docs/privacy.md section 8). After a stop, :attr:`stopped`
    holds ``(epoch, validation metrics)``. While ``decide`` runs, :attr:`plan` is the trial's
    step plan and :attr:`step` the step the loop has reached (what a stop at this rung keeps).
    """

    single_process = True
    may_stop = True

    def __init__(self, epochs: tuple[int, ...], decide: Callable[[int, dict[str, float], float | None], bool]):
        if any(e < 1 for e in epochs):
            raise ValueError(f"rung epochs must be >= 1, got {epochs}")
        self.epochs = tuple(sorted(set(epochs)))
        self.decide = decide
        self.stopped: tuple[int, dict[str, float]] | None = None
        self.plan: Any = None
        self.step: int | None = None
        self._at: dict[int, int] = {}

    def steps(self, plan: Any) -> dict[int, int]:
        """``{step: epoch}`` of the rungs inside ``plan`` (a :class:`~trainers.budget.StepPlan`;
        steps 1 .. T-1)."""
        self.plan = plan
        out = {}
        for e in self.epochs:
            step = max(1, round(e / plan.sample_rate))
            if step < plan.steps:
                out[step] = e
        return out

    def start(self, loop: Loop) -> None:
        self._at = self.steps(loop.ctx.plan)

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        from trainers.loop import evaluate_splits

        epoch = self._at.get(record.step)
        if epoch is None:
            return None
        ctx = loop.ctx
        scores = evaluate_splits(ctx, ("validation",))
        ctx.trainable.model.train()
        charged = None if ctx.privacy_plan is None else ctx.privacy_plan.planned.epsilon
        self.step = record.step
        if self.decide(epoch, scores, charged):
            return None
        self.stopped = (epoch, scores)
        return f"early stopping: stopped after epoch {epoch} (step {record.step}/{ctx.plan.steps})"
