"""The training loop of one trial: Poisson-sampled steps through the DP optimizer, then evaluation.

:func:`run_steps` takes the run's ``T`` steps (stopping before one the budget guard forbids);
:func:`take_step` is one step, in passes of at most ``training.physical_batch_size`` examples;
:func:`evaluate_all` scores the validation and test splits (rank 0, broadcast under DDP).
Everything optional attaches as a :class:`~trainers.hooks.LoopHook` (per-step callbacks, the
audit, checkpoints, early stopping: :mod:`trainers.loop_hooks`).
:func:`capture_state` / :func:`restore_state` move the loop's state into and out of a
:class:`~trainers.checkpoint.TrialState` (checkpoints, :mod:`trainers.checkpoint`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from noise_search.errors import LmoDpError
from trainers.budget import BudgetGuard, NoisePlan, StepPlan
from trainers.checkpoint import TrialState
from trainers.config import TrialConfig
from trainers.data import TextDataset
from trainers.evaluate import evaluate
from trainers.hooks import Loop, LoopHook
from trainers.optimizer import make_dp_optimizer
from trainers.progress import progress_bar
from trainers.results import StepRecord
from trainers.sampling import poisson_batches
from trainers.seeds import SEED_NOISE, SEED_SAMPLING, derive_seed
from trainers.trainable import Trainable

log = logging.getLogger(__name__)


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


def run_steps(ctx: RunContext, hooks: Sequence[LoopHook] = ()) -> tuple[list[StepRecord], str | None]:
    """Train; returns the history (restored steps included) and the stop reason (None: every
    planned step ran). ``hooks`` attach per-step callbacks, the audit, checkpoints and early
    stopping (:mod:`trainers.hooks` states when each of their methods is called)."""
    cfg, plan, privacy_plan, guard = ctx.cfg, ctx.plan, ctx.privacy_plan, ctx.guard
    device, distributed, rank = ctx.device, ctx.distributed, ctx.rank
    hooks = tuple(hooks)
    if distributed:
        for h in hooks:
            if h.single_process:
                raise ValueError(f"{type(h).__name__}: runs in a single process, not under torch.distributed")
    contributions = [c for h in hooks if (c := h.contributions()) is not None]
    if len(contributions) > 1:
        raise ValueError("extra_contributions: at most one hook may add contributions to the noisy sum")
    t = cfg.training
    model = ctx.trainable.model
    params = ctx.trainable.parameters
    if distributed:
        for p in params:  # identical start on every rank
            torch.distributed.broadcast(p.data, src=0)
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
            extra_contributions=contributions[0] if contributions else None,
            distributed=distributed,
        )
        if guard is not None:
            guard.attach(optimizer)
    else:
        train_model, optimizer = model, base
    sample_gen = torch.Generator().manual_seed(derive_seed(t.seed, SEED_SAMPLING, rank))
    parts = _Parts(base, optimizer, train_model, sample_gen, noise_gen)
    loop = Loop(ctx, parts)
    stop_reason = None
    try:
        for h in hooks:
            h.start(loop)
        resume = next((state for h in hooks if (state := h.restore()) is not None), None)
        finished = False
        if resume is not None:
            restore_state(ctx, parts, resume)
            loop.history, stop_reason, finished = list(resume.history), resume.stop_reason, resume.finished
            for record in loop.history:
                for h in hooks:
                    h.replay(record)
        if not finished:
            stop_reason = _train(ctx, loop, hooks)
        for h in hooks:
            h.end(loop, stop_reason)
    finally:
        for h in hooks:
            h.close()
    if privacy_plan is not None:
        optimizer.zero_grad(set_to_none=True)
        train_model.to_standard_module()  # type: ignore[operator]  # remove Opacus hooks and attributes
    return loop.history, stop_reason


def _train(ctx: RunContext, loop: Loop, hooks: tuple[LoopHook, ...]) -> str | None:
    """The steps after the ``len(loop.history)`` already done; appends to it, returns the stop reason."""
    cfg, plan, guard = ctx.cfg, ctx.plan, ctx.guard
    device, distributed = ctx.device, ctx.distributed
    parts, history = loop.parts, loop.history
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
    ctx.trainable.model.train()
    bar = progress_bar(plan.steps, f"train {cfg.privacy.mechanism}")
    bar.update(len(history))
    try:
        for idx in batches:
            if guard is not None and not guard.allows_next_step():
                nxt = guard.next_spent().epsilon
                stop_reason = (
                    f"stopped before step {guard.steps + 1}: epsilon would reach {nxt:.6g} > target {guard.target:g}"
                )
                log.warning(stop_reason)
                break
            n = len(idx)
            loss_sum = take_step(ctx, parts.train_model, parts.optimizer, inputs, idx, private=private)
            total_n = n
            if distributed:
                on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
                stats = torch.tensor([float(loss_sum), float(n)], dtype=torch.float64, device=on)
                torch.distributed.all_reduce(stats)
                loss_sum, total_n = float(stats[0]), int(stats[1])
            spent = None
            if guard is not None:
                if guard.steps != len(history) + 1:  # the optimizer's step hook composes each noisy step
                    raise LmoDpError(f"accounting: {guard.steps} noisy steps composed after {len(history) + 1} steps")
                spent = guard.spent
            record = StepRecord(
                step=len(history) + 1,
                loss=float(loss_sum) / total_n if total_n > 0 else None,
                epsilon=None if spent is None else spent.epsilon,
                batch_size=total_n,
            )
            history.append(record)
            bar.update(1)
            if record.loss is not None and not math.isfinite(record.loss):  # before a hook saves or scores it
                raise LmoDpError(
                    f"training diverged at step {record.step} (loss {record.loss}); lower the learning rate"
                )
            for h in hooks:
                stop_reason = h.after_step(loop, record)
                if stop_reason is not None:
                    break
            if stop_reason is not None:
                break
    finally:
        bar.close()
    return stop_reason


def capture_state(
    ctx: RunContext, parts: _Parts, history: list[StepRecord], *, finished: bool, stop_reason: str | None = None
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
