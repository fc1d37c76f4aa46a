"""The training loop of one trial: Poisson-sampled steps through the DP optimizer, then evaluation.

:func:`run_steps` takes the run's ``T`` steps (stopping before one the budget guard forbids);
:func:`take_step` is one step, in passes of at most ``training.physical_batch_size`` examples;
:func:`evaluate_all` scores the validation and test splits (rank 0, broadcast under DDP).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainers.budget import BudgetGuard, NoisePlan, StepPlan
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


def run_steps(
    ctx: RunContext,
    on_step: StepCallback | None,
    extra_contributions: ExtraContributions | None,
    keep_update: bool,
    observe: Callable[[list[torch.Tensor]], None] | None = None,
) -> tuple[list[StepRecord], str | None, list[torch.Tensor] | None]:
    """Train; ``observe`` (private runs) gets every step's privatized gradients ``p.grad``."""
    cfg, plan, privacy_plan, guard = ctx.cfg, ctx.plan, ctx.privacy_plan, ctx.guard
    device, distributed, rank = ctx.device, ctx.distributed, ctx.rank
    t = cfg.training
    model = ctx.trainable.model
    params = ctx.trainable.parameters
    inputs = ctx.trainable.inputs["train"]
    if distributed:
        for p in params:  # identical start on every rank
            torch.distributed.broadcast(p.data, src=0)
    initial = [p.detach().float().cpu().clone() for p in params] if keep_update else None
    base = make_base_optimizer(params, cfg)
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
    batches = poisson_batches(
        len(inputs), sample_rate=plan.sample_rate, steps=plan.steps, generator=sample_gen, distributed=distributed
    )
    history: list[StepRecord] = []
    stop_reason = None
    model.train()
    bar = progress_bar(plan.steps, f"train {cfg.privacy.mechanism}")
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
            loss_sum = take_step(ctx, train_model, optimizer, inputs, idx, private=privacy_plan is not None)
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
                    from noise_search.errors import LmoDpError

                    raise LmoDpError(f"accounting: {guard.steps} noisy steps composed after {len(history) + 1} steps")
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
                from noise_search.errors import LmoDpError

                raise LmoDpError(
                    f"training diverged at step {record.step} (loss {record.loss}); lower the learning rate"
                )
    finally:
        bar.close()
    if privacy_plan is not None:
        optimizer.zero_grad(set_to_none=True)
        train_model.to_standard_module()  # type: ignore[operator]  # remove Opacus hooks and attributes
    update = None
    if initial is not None:
        update = [p.detach().float().cpu() - i for p, i in zip(params, initial, strict=True)]
    return history, stop_reason, update


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


def evaluate_all(ctx: RunContext) -> dict[str, float]:
    cfg, device = ctx.cfg, ctx.device
    task = cfg.model.task
    metrics: dict[str, float] = {}
    if ctx.rank == 0:
        for split_name, key in (("val", "validation"), ("test", "test")):
            inputs = ctx.trainable.inputs.get(key)
            if inputs is None or len(inputs) == 0:
                continue
            for k, v in evaluate(
                ctx.trainable.model, inputs, task=task, batch_size=cfg.training.eval_batch_size, device=device
            ).items():
                metrics[f"{split_name}_{k}"] = v
        headline = "accuracy" if task == "classification" else "perplexity"
        if f"test_{headline}" in metrics:
            metrics[headline] = metrics[f"test_{headline}"]
    if ctx.distributed:
        box = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics
