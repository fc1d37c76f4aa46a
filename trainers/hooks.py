"""What attaches to a trial's training loop: one interface, :class:`LoopHook`.

Per-step metrics, the privacy audit's canaries, checkpoints, early stopping and the parameter
update a test compares are all hooks (:mod:`trainers.loop_hooks`); the loop
(:func:`trainers.loop.run_steps`) knows only this interface, so a scheduler or an audit attaches
without editing it. Every method has a default that does nothing; a hook overrides what it needs.

The loop calls, in this order, each hook in the order given:

1. :meth:`LoopHook.contributions` while the DP optimizer is built (private runs only): at most
   one hook may return the optimizer's ``extra_contributions`` callable
   (:mod:`trainers.optimizer`).
2. :meth:`LoopHook.start` once the model and optimizer exist, before any checkpoint is restored.
3. :meth:`LoopHook.restore`: the first hook that returns a
   :class:`~trainers.checkpoint.TrialState` is the state the run resumes from; then
   :meth:`LoopHook.replay` for each step of its history.
4. :meth:`LoopHook.after_step` after every step (its record is already in ``loop.history``):
   a hook that returns a text stops the loop after this step with that stop reason, and the
   hooks after it are not called for this step.
5. :meth:`LoopHook.end` after the last step, with the stop reason (None: every planned step ran).
6. :meth:`LoopHook.close`, always, also when a step or a hook raised.

A hook with ``single_process = True`` is refused under ``torch.distributed``.
:func:`trainers.engine.train` runs the hooks it is given in their order, after its own (the
parameter update, the audit's canaries) and before the checkpoint hook, except those with
``may_stop = True`` (early stopping), which run after the step's checkpoint is saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainers.checkpoint import TrialState
    from trainers.optimizer import ExtraContributions
    from trainers.results import StepRecord


@dataclass
class Loop:
    """What a hook sees of the running loop: ``ctx`` (a :class:`trainers.loop.RunContext`: config,
    trainable, dataset, plan, budget guard), ``parts`` (optimizers, generators) and ``history``
    (one :class:`~trainers.results.StepRecord` per step taken, restored ones included)."""

    ctx: Any
    parts: Any
    history: list[StepRecord] = field(default_factory=list)

    @property
    def params(self) -> list[Any]:
        """The trainable parameters, in optimizer order."""
        return self.ctx.trainable.parameters


class LoopHook:
    """One thing attached to the training loop (see the module docstring for the call order)."""

    #: refused under torch.distributed (it needs the whole run in one process)
    single_process: bool = False
    #: it may stop the loop (:func:`trainers.engine.train` runs it after the step's checkpoint)
    may_stop: bool = False

    def contributions(self) -> ExtraContributions | None:
        """The DP optimizer's ``extra_contributions`` callable, or None (the default)."""
        return None

    def start(self, loop: Loop) -> None:
        """Before the first step, and before a checkpoint is restored."""

    def restore(self) -> TrialState | None:
        """The state to resume from, or None (the default: start from scratch)."""
        return None

    def replay(self, record: StepRecord) -> None:
        """Each step restored from a checkpoint, in order."""

    def after_step(self, loop: Loop, record: StepRecord) -> str | None:
        """After each step; a returned text stops the loop after this step (the stop reason)."""
        return None

    def end(self, loop: Loop, stop_reason: str | None) -> None:
        """After the last step (not called when a step or a hook raised)."""

    def close(self) -> None:
        """Always last, also after an error: release what :meth:`start` took."""
