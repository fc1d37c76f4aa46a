"""The training loop of one trial: Poisson-sampled steps through the DP optimizer, then evaluation.

:func:`run_steps` takes the run's ``T`` steps (stopping before one the budget guard forbids);
:func:`take_step` is one step, in passes of at most ``training.physical_batch_size`` examples;
:func:`evaluate_all` scores the validation and test splits (rank 0, broadcast under DDP).
A :class:`RungHook` (early stopping in sweeps) scores the validation split after chosen epochs
and may stop the loop there.
:func:`capture_state` / :func:`restore_state` move the loop's state into and out of a
:class:`~trainers.checkpoint.TrialState` (checkpoints, :mod:`trainers.checkpoint`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from noise_search.errors import LmoDpError
from trainers.budget import BudgetGuard, NoisePlan, StepPlan
from trainers.checkpoint import (
    CheckpointSession,
    TerminationRequest,
    TrainingInterrupted,
    TrialState,
    termination_watch,
)
from trainers.config import TrialConfig
from trainers.data import TextDataset
from trainers.evaluate import evaluate
from trainers.optimizer import ExtraContributions, make_dp_optimizer
from trainers.progress import progress_bar
from trainers.results import StepCallback, StepRecord
from trainers.sampling import poisson_batches
from trainers.seeds import SEED_NOISE, SEED_SAMPLING, derive_seed
from trainers.trainable import Trainable

log = logging.getLogger(__name__)


class RungHook:
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

    def __init__(self, epochs: tuple[int, ...], decide: Callable[[int, dict[str, float], float | None], bool]):
        if any(e < 1 for e in epochs):
            raise ValueError(f"rung epochs must be >= 1, got {epochs}")
        self.epochs = tuple(sorted(set(epochs)))
        self.decide = decide
        self.stopped: tuple[int, dict[str, float]] | None = None
        self.plan: StepPlan | None = None
        self.step: int | None = None

    def steps(self, plan: StepPlan) -> dict[int, int]:
        """``{step: epoch}`` of the rungs inside ``plan`` (steps 1 .. T-1)."""
        self.plan = plan
        out = {}
        for e in self.epochs:
            step = max(1, round(e / plan.sample_rate))
            if step < plan.steps:
                out[step] = e
        return out


@dataclass(frozen=True)
class RunContext:
    """Everything one trial's loop and evaluation need."""

    cfg: TrialConfig
    trainable: Trainable
    ds: TextDataset
    plan: StepPlan
    privacy_plan: NoisePlan | None
    guard: BudgetGuard | None
    device: torch.device
    distributed: bool
    rank: int


def make_base_optimizer(params: list[torch.nn.Parameter], config: TrialConfig) -> torch.optim.Optimizer:
    t = config.training
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.learning_rate, weight_decay=t.weight_decay)


@dataclass
class _Parts:
    """The loop's moving parts: what a checkpoint captures and restores besides the model."""

    base: torch.optim.Optimizer
    optimizer: torch.optim.Optimizer
    train_model: torch.nn.Module
    sample_gen: torch.Generator
    noise_gen: torch.Generator | None


def run_steps(
    ctx: RunContext,
    on_step: StepCallback | None,
    extra_contributions: ExtraContributions | None,
    keep_update: bool,
    observe: Callable[[list[torch.Tensor]], None] | None = None,
    checkpoints: CheckpointSession | None = None,
    rungs: RungHook | None = None,
) -> tuple[list[StepRecord], str | None, list[torch.Tensor] | None]:
    """Train; ``observe`` (private runs) gets every step's privatized gradients ``p.grad``;
    ``rungs`` (single process) may stop the loop after an epoch (early stopping).

    With ``checkpoints`` (single process only): a checkpoint to resume from is restored first
    and its history replayed through ``on_step``; a checkpoint is saved every
    ``checkpoints.checkpointing.every`` steps, when the loop ends, and after the current step
    on SIGTERM (then :class:`~trainers.checkpoint.TrainingInterrupted` is raised).
    """
    cfg, plan, privacy_plan, guard = ctx.cfg, ctx.plan, ctx.privacy_plan, ctx.guard
    device, distributed, rank = ctx.device, ctx.distributed, ctx.rank
    t = cfg.training
    model = ctx.trainable.model
    params = ctx.trainable.parameters
    if distributed:
        for p in params:  # identical start on every rank
            torch.distributed.broadcast(p.data, src=0)
    initial = [p.detach().float().cpu().clone() for p in params] if keep_update else None
    base = make_base_optimizer(params, cfg)
    noise_gen = None
    if privacy_plan is not None:
        from opacus import GradSampleModule

        train_model: torch.nn.Module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        noise_gen = torch.Generator(device=device).manual_seed(derive_seed(t.seed, SEED_NOISE))
        optimizer = make_dp_optimizer(
            base,
            mechanism=privacy_plan.mechanism,
            max_grad_norm=cfg.privacy.clip,
            expected_batch_size=plan.sample_rate * plan.n_train,
            generator=noise_gen,
            extra_contributions=extra_contributions,
            distributed=distributed,
        )
        if guard is not None:
            guard.attach(optimizer)
    else:
        train_model, optimizer = model, base
    sample_gen = torch.Generator().manual_seed(derive_seed(t.seed, SEED_SAMPLING, rank))
    parts = _Parts(base, optimizer, train_model, sample_gen, noise_gen)
    history: list[StepRecord] = []
    stop_reason = None
    finished = False
    resume = None if checkpoints is None else checkpoints.resume
    if resume is not None:
        restore_state(ctx, parts, resume)
        history, stop_reason, finished = list(resume.history), resume.stop_reason, resume.finished
        if on_step is not None:
            for record in history:
                on_step(record)
    if not finished:
        stop_reason = _train(ctx, parts, history, on_step, observe, checkpoints, rungs)
        if checkpoints is not None:
            checkpoints.save(capture_state(ctx, parts, history, finished=True, stop_reason=stop_reason))
    if privacy_plan is not None:
        optimizer.zero_grad(set_to_none=True)
        train_model.to_standard_module()  # type: ignore[operator]  # remove Opacus hooks and attributes
    update = None
    if initial is not None:
        update = [p.detach().float().cpu() - i for p, i in zip(params, initial, strict=True)]
    return history, stop_reason, update


def _train(
    ctx: RunContext,
    parts: _Parts,
    history: list[StepRecord],
    on_step: StepCallback | None,
    observe: Callable[[list[torch.Tensor]], None] | None,
    checkpoints: CheckpointSession | None,
    rungs: RungHook | None = None,
) -> str | None:
    """The steps after the ``len(history)`` already done; appends to ``history``, returns the stop reason."""
    cfg, plan, guard = ctx.cfg, ctx.plan, ctx.guard
    device, distributed = ctx.device, ctx.distributed
    params = ctx.trainable.parameters
    inputs = ctx.trainable.inputs["train"]
    private = ctx.privacy_plan is not None
    batches = poisson_batches(
        len(inputs),
        sample_rate=plan.sample_rate,
        steps=plan.steps - len(history),
        generator=parts.sample_gen,
        distributed=distributed,
    )
    stop_reason = None
    rung_at = {} if rungs is None else rungs.steps(plan)
    ctx.trainable.model.train()
    bar = progress_bar(plan.steps, f"train {cfg.privacy.mechanism}")
    bar.update(len(history))
    try:
        with termination_watch(enabled=checkpoints is not None) as termination:
            for idx in batches:
                if guard is not None and not guard.allows_next_step():
                    nxt = guard.next_spent().epsilon
                    stop_reason = (
                        f"stopped before step {guard.steps + 1}: epsilon would reach {nxt:.6g} > "
                        f"target {guard.target:g}"
                    )
                    log.warning(stop_reason)
                    break
                n = len(idx)
                loss_sum = take_step(ctx, parts.train_model, parts.optimizer, inputs, idx, private=private)
                if observe is not None:
                    observe([p.grad for p in params])
                total_n = n
                if distributed:
                    on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
                    stats = torch.tensor([float(loss_sum), float(n)], dtype=torch.float64, device=on)
                    torch.distributed.all_reduce(stats)
                    loss_sum, total_n = float(stats[0]), int(stats[1])
                spent = None
                if guard is not None:
                    if guard.steps != len(history) + 1:  # the optimizer's step hook composes each noisy step
                        raise LmoDpError(
                            f"accounting: {guard.steps} noisy steps composed after {len(history) + 1} steps"
                        )
                    spent = guard.spent
                record = StepRecord(
                    step=len(history) + 1,
                    loss=float(loss_sum) / total_n if total_n > 0 else None,
                    epsilon=None if spent is None else spent.epsilon,
                    batch_size=total_n,
                )
                history.append(record)
                if on_step is not None:
                    on_step(record)
                bar.update(1)
                if record.loss is not None and not math.isfinite(record.loss):
                    raise LmoDpError(
                        f"training diverged at step {record.step} (loss {record.loss}); lower the learning rate"
                    )
                if checkpoints is not None:
                    _checkpoint_after_step(ctx, parts, history, checkpoints, termination)
                if record.step in rung_at and rungs is not None:
                    epoch = rung_at[record.step]
                    scores = evaluate_splits(ctx, ("validation",))
                    ctx.trainable.model.train()
                    charged = None if ctx.privacy_plan is None else ctx.privacy_plan.planned.epsilon
                    rungs.step = record.step
                    if not rungs.decide(epoch, scores, charged):
                        rungs.stopped = (epoch, scores)
                        stop_reason = f"early stopping: stopped after epoch {epoch} (step {record.step}/{plan.steps})"
                        break
    finally:
        bar.close()
    return stop_reason


def _checkpoint_after_step(
    ctx: RunContext,
    parts: _Parts,
    history: list[StepRecord],
    checkpoints: CheckpointSession,
    termination: TerminationRequest,
) -> None:
    """Save when SIGTERM asked for it (then stop) or a periodic checkpoint is due (not after the
    last step: the loop's end saves that one)."""
    done, planned = len(history), ctx.plan.steps
    if termination.requested:
        state = capture_state(ctx, parts, history, finished=done == planned, stop_reason=None)
        path = checkpoints.save(state)
        raise TrainingInterrupted(path, done, planned)
    if done < planned and checkpoints.checkpointing.due(done):
        checkpoints.save(capture_state(ctx, parts, history, finished=False, stop_reason=None))


def capture_state(
    ctx: RunContext, parts: _Parts, history: list[StepRecord], *, finished: bool, stop_reason: str | None
) -> TrialState:
    """The trial's state after ``len(history)`` steps (its identity is filled in when saved)."""
    device = ctx.device
    noise_steps = getattr(parts.optimizer, "noise_steps", 0)
    return TrialState(
        identity={},
        steps=len(history),
        planned_steps=ctx.plan.steps,
        finished=finished,
        stop_reason=stop_reason,
        history=list(history),
        parameters=[p.detach().cpu().clone() for p in ctx.trainable.parameters],
        optimizer=parts.base.state_dict(),
        sample_rng=parts.sample_gen.get_state(),
        torch_rng=torch.get_rng_state(),
        noise_rng=None if parts.noise_gen is None else parts.noise_gen.get_state(),
        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        budget=None if ctx.guard is None else ctx.guard.state(),
        noise_steps=int(noise_steps),
    )


def restore_state(ctx: RunContext, parts: _Parts, state: TrialState) -> None:
    """Put ``state`` back into the freshly built model, optimizer, generators and budget guard.

    Raises :class:`~noise_search.errors.LmoDpError` when the state does not fit this run
    (parameter shapes, privacy parts present or missing, accounting).
    """
    params = ctx.trainable.parameters
    if len(state.parameters) != len(params):
        raise LmoDpError(f"checkpoint: {len(state.parameters)} trainable tensors saved, the model has {len(params)}")
    for i, (p, saved) in enumerate(zip(params, state.parameters, strict=True)):
        if saved.shape != p.shape or saved.dtype != p.dtype:
            raise LmoDpError(
                f"checkpoint: trainable tensor {i} saved as {tuple(saved.shape)} {saved.dtype}, "
                f"the model has {tuple(p.shape)} {p.dtype}"
            )
    if (state.budget is None) != (ctx.guard is None) or (state.noise_rng is None) != (parts.noise_gen is None):
        raise LmoDpError("checkpoint: saved by a run with a different privacy set-up")
    with torch.no_grad():
        for p, saved in zip(params, state.parameters, strict=True):
            p.copy_(saved.to(p.device))
    parts.base.load_state_dict(state.optimizer)
    parts.sample_gen.set_state(state.sample_rng)
    if parts.noise_gen is not None and state.noise_rng is not None:
        parts.noise_gen.set_state(state.noise_rng)
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng, ctx.device)
    if ctx.guard is not None and state.budget is not None:
        if state.budget.steps != state.steps:
            raise LmoDpError(f"checkpoint: {state.budget.steps} noisy steps composed after {state.steps} steps")
        ctx.guard.restore(state.budget)
    if hasattr(parts.optimizer, "noise_steps"):
        parts.optimizer.noise_steps = state.noise_steps


def take_step(
    ctx: RunContext,
    train_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Any,
    idx: torch.Tensor,
    *,
    private: bool,
) -> float:
    """One optimizer step on the examples ``idx``; returns the sum of their losses.

    The examples go through the model in passes of at most ``training.physical_batch_size``.
    Private: every pass but the last tells Opacus to only clip and accumulate
    (``signal_skip_step``), so the step adds the mechanism's noise once to the clipped sum of
    the whole batch. Non-private: the gradients of the passes are weighted by their share of the
    batch, giving the batch mean. An empty private batch is a pure-noise release.
    """
    params = ctx.trainable.parameters
    task = ctx.cfg.model.task
    n = len(idx)
    loss_sum = 0.0
    optimizer.zero_grad(set_to_none=True)
    if n == 0:
        if private:
            for p in params:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            optimizer.step()
        return loss_sum
    chunks = inputs.chunks(idx, ctx.cfg.training.physical_batch_size)
    for j, chunk in enumerate(chunks):
        batch = inputs.batch(chunk, ctx.device)
        loss = inputs.loss(train_model, batch, task)
        loss_sum += float(loss.detach()) * len(chunk)
        if private:
            if j > 0:
                optimizer.zero_grad(set_to_none=True)  # clears this pass's grad_sample, keeps the clipped sum
            loss.backward()
            if j < len(chunks) - 1:
                optimizer.signal_skip_step(do_skip=True)  # type: ignore[attr-defined]
            optimizer.step()
        else:
            (loss * (len(chunk) / n)).backward()
    if not private:
        optimizer.step()
    return loss_sum


def evaluate_splits(ctx: RunContext, splits: tuple[str, ...] = ("validation", "test")) -> dict[str, float]:
    """``val_<metric>`` / ``test_<metric>`` of the model on ``splits`` (this process only)."""
    cfg = ctx.cfg
    metrics: dict[str, float] = {}
    for key in splits:
        inputs = ctx.trainable.inputs.get(key)
        if inputs is None or len(inputs) == 0:
            continue
        prefix = "val" if key == "validation" else key
        for k, v in evaluate(
            ctx.trainable.model, inputs, task=cfg.model.task, batch_size=cfg.training.eval_batch_size, device=ctx.device
        ).items():
            metrics[f"{prefix}_{k}"] = v
    return metrics


def evaluate_all(ctx: RunContext) -> dict[str, float]:
    task = ctx.cfg.model.task
    metrics: dict[str, float] = {}
    if ctx.rank == 0:
        metrics = evaluate_splits(ctx)
        headline = "accuracy" if task == "classification" else "perplexity"
        if f"test_{headline}" in metrics:
            metrics[headline] = metrics[f"test_{headline}"]
    if ctx.distributed:
        box = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics
