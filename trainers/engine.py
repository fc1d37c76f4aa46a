"""The DP fine-tuning loop: one trial from a :class:`~trainers.config.TrialConfig`.

Order of work in :func:`train` (everything that can refuse the trial happens before the
model is loaded):

1. load the dataset and apply ``max_train_examples`` / ``max_eval_examples``;
2. fill unset training settings from the recipe (:meth:`TrialConfig.resolve`) and plan
   ``q = B / N`` and ``T`` (:func:`trainers.budget.make_plan`);
3. private runs: resolve the noise and account the whole plan; refuse if it exceeds the
   target (:func:`trainers.budget.plan_privacy`);
4. inside ``torch.random.fork_rng`` seeded from the config (head init, LoRA init, dropout;
   the caller's global RNG state is restored afterwards): build the trainable set and its
   inputs (:func:`trainers.trainable.build_trainable`: the whole model on tokens, or a head /
   top layers on cached frozen activations), wrap the model in Opacus's ``GradSampleModule``
   (hooks mode: materialised per-example gradients, needed for L1), wrap the optimizer in
   :class:`~trainers.optimizer.MechanismDPOptimizer`;
5. ``T`` Poisson-sampled steps (:func:`trainers.sampling.poisson_batches`); a batch larger
   than ``training.physical_batch_size`` is processed in several forward/backward passes whose
   clipped per-example gradients are summed before the one noise draw of the step (Opacus's
   skip-step mechanism), so the release is the same as one pass; before each step the
   :class:`~trainers.budget.BudgetGuard` checks that it stays within the target; after it the
   epsilon spent is computed and reported with the loss through ``on_step``;
6. evaluate on the validation and test splits;
7. with ``config.audit``: the trial-level privacy audit (:mod:`trainers.trial_audit`) --
   gradient canaries join the clipped sums through the optimizer's ``extra_contributions``
   hook, the privatized gradients are summed after every step, and the epsilon lower bound
   and its inputs go into the metrics (``epsilon_lower_bound``, ``audit_*``).

Seeds: model/dropout, Poisson sampling (per rank), noise and audit canaries each get their own
seed derived from ``training.seed`` with ``numpy.random.SeedSequence``; sampling, noise and
canaries use explicit ``torch.Generator`` objects. A run is reproducible from its seed on the same machine and
thread count.

Data parallel: when ``torch.distributed`` is initialised (gloo on CPU, NCCL on GPU) each
rank samples its shard, clips its examples, only rank 0 adds noise and the gradients are
summed (see :mod:`trainers.optimizer`); every rank takes every step. Rank 0 evaluates and
the metrics are broadcast.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from noise_search.mechanisms import Mechanism
from trainers.budget import BudgetGuard, Plan, PrivacyPlan, make_plan, plan_privacy
from trainers.config import DataSettings, TrialConfig
from trainers.data import TextDataset, load_dataset
from trainers.evaluate import evaluate
from trainers.optimizer import ExtraContributions, make_dp_optimizer
from trainers.sampling import poisson_batches
from trainers.trainable import Trainable, build_trainable
from trainers.trial_audit import TrialAudit, TrialAuditResult

log = logging.getLogger(__name__)

SEED_MODEL, SEED_SAMPLING, SEED_NOISE, SEED_AUDIT = 0, 1, 2, 3

#: Harmless warnings every run would print: Opacus's hooks on a model whose inputs (token
#: ids) need no gradient, and a transformers deprecation triggered inside PEFT.
EXPECTED_WARNINGS = (
    "Full backward hook is firing when gradients are computed with respect to module outputs",
    "`is_gradient_checkpointing` is deprecated",
)


@dataclass(frozen=True)
class StepRecord:
    """What :func:`train` reports after each step."""

    step: int  #: steps done so far (1-based)
    loss: float | None  #: mean per-example loss of the batch; None for an empty batch
    epsilon: float | None  #: epsilon spent after this step; None for a non-private run
    batch_size: int  #: examples in this step's Poisson batch (all ranks)


StepCallback = Callable[[StepRecord], None]


@dataclass
class TrainResult:
    """The outcome of one trial."""

    config: TrialConfig
    mechanism: Mechanism | None
    noise_source: str | None
    privacy_plan: PrivacyPlan | None
    epsilon: float | None
    order: float | None
    steps: int
    planned_steps: int
    sample_rate: float
    stopped_early: bool
    stop_reason: str | None
    metrics: dict[str, float]
    dataset: dict[str, Any]
    model: dict[str, Any]
    history: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    #: with ``train(..., keep_update=True)``: final minus initial value of every trainable
    #: parameter (CPU float32), in optimizer order -- the order ``extra_contributions`` uses
    parameter_update: list[torch.Tensor] | None = field(default=None, repr=False)
    #: with ``config.audit`` (rank 0): the trial-level audit's scores, bits and bound
    audit: TrialAuditResult | None = field(default=None, repr=False)
    #: feature-cache use of a head / top-layers trial (``hits``, ``builds``, ``root``)
    cache: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The ``lmo-dp train --json`` object (``mlflow_run_id`` is filled by the CLI)."""
        p = self.config.privacy
        t = self.config.training
        recipe = self.config.recipe
        return {
            "mechanism": p.mechanism,
            "epsilon_target": p.epsilon if self.mechanism is not None else None,
            "epsilon": self.epsilon,
            "delta": p.delta if self.mechanism is not None else None,
            "steps": self.steps,
            "sample_rate": self.sample_rate,
            "metrics": dict(self.metrics),
            "mlflow_run_id": None,
            "planned_steps": self.planned_steps,
            "planned_epsilon": None if self.privacy_plan is None else self.privacy_plan.planned.epsilon,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "accountant": p.accountant if self.mechanism is not None else None,
            "order": self.order,
            "clip": p.clip,
            "noise": None if self.mechanism is None else self.mechanism.to_dict(),
            "noise_source": self.noise_source,
            "dataset": self.dataset,
            "model": self.model,
            "seed": self.config.training.seed,
            "seconds": self.seconds,
            "trainable": self.config.model.trainable_kind,
            "training": {
                "learning_rate": t.learning_rate,
                "batch_size": t.batch_size,
                "epochs": t.epochs,
                "optimizer": t.optimizer,
                "physical_batch_size": t.physical_batch_size,
            },
            "recipe": None if recipe is None else recipe.to_dict(),
            "feature_cache": dict(self.cache) or None,
        }


def derive_seed(seed: int, purpose: int, rank: int = 0) -> int:
    """An independent 32-bit seed for one purpose (model, sampling, noise) and rank."""
    return int(np.random.SeedSequence([seed, purpose, rank]).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from noise_search.errors import ParameterError

        raise ParameterError("training.device", f"{name} requested but no CUDA device is available")
    return dev


def load_settings_dataset(d: DataSettings, task: str) -> TextDataset:
    """The dataset named by a config's ``data`` section, after its example limits."""
    ds = load_dataset(
        d.name,
        task=task,
        path=d.path,
        validation_path=d.validation_path,
        test_path=d.test_path,
        text_field=d.text_field,
        label_field=d.label_field,
    )
    return ds.limit(d.max_train_examples, d.max_eval_examples)


def prepare_dataset(config: TrialConfig, dataset: TextDataset | None = None) -> TextDataset:
    if dataset is None:
        return load_settings_dataset(config.data, config.model.task)
    return dataset.limit(config.data.max_train_examples, config.data.max_eval_examples)


def _distributed() -> tuple[bool, int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _make_base_optimizer(params: list[torch.nn.Parameter], config: TrialConfig) -> torch.optim.Optimizer:
    t = config.training
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.learning_rate, weight_decay=t.weight_decay)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False, file=sys.stderr)


def train(
    config: TrialConfig,
    *,
    on_step: StepCallback | None = None,
    extra_contributions: ExtraContributions | None = None,
    dataset: TextDataset | None = None,
    keep_update: bool = False,
) -> TrainResult:
    """Run one trial. Raises :class:`~noise_search.errors.InputError` for a bad config or a
    plan over budget (before any training), other ``LmoDpError`` for runtime failures.

    ``extra_contributions`` is the audit hook of :mod:`trainers.optimizer` (private runs only;
    not together with ``config.audit``, which installs its own).
    ``dataset`` replaces loading ``config.data`` (tests); the config's limits still apply.
    ``keep_update`` fills :attr:`TrainResult.parameter_update`.
    """
    started = time.perf_counter()
    cfg, t = config, config.training
    if cfg.audit is not None and extra_contributions is not None:
        raise ValueError("extra_contributions: config.audit installs its own canary hook; pass one or the other")
    private = cfg.privacy.mechanism != "none"
    distributed, rank, world = _distributed()
    device = resolve_device(t.device)

    ds = prepare_dataset(cfg, dataset)
    if cfg.model.task == "classification" and ds.num_labels is None:
        from noise_search.errors import ParameterError

        raise ParameterError("data.name", f"{ds.name} has no labels: use it with model.task causal-lm")
    if len(ds.train) < 1:
        from noise_search.errors import ParameterError

        raise ParameterError("data.max_train_examples", "the training split is empty")
    cfg = cfg.resolve(len(ds.train))
    t = cfg.training
    plan = make_plan(len(ds.train), t.batch_size, epochs=t.epochs, steps=t.steps)
    privacy_plan = plan_privacy(cfg.privacy, plan) if private else None
    guard = BudgetGuard(privacy_plan) if privacy_plan is not None else None

    threads = torch.get_num_threads()
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices), warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            torch.manual_seed(derive_seed(t.seed, SEED_MODEL))
            trainable = build_trainable(cfg, ds, device)
            trainable.model.to(device)
            ctx = _Run(cfg, trainable, ds, plan, privacy_plan, guard, device, distributed, rank)
            audit = _start_audit(ctx) if rank == 0 else None
            observe = None
            if audit is not None:
                extra_contributions, observe = audit.contributions, audit.observe
            history, stop_reason, update = _run_steps(ctx, on_step, extra_contributions, keep_update, observe)
            audit_result = audit.finish(cfg.privacy.delta) if audit is not None else None
            metrics = _evaluate_all(ctx)
            if audit_result is not None:
                metrics.update(audit_result.metrics())
    finally:
        torch.set_num_threads(threads)
    train_losses = [h.loss for h in history[-50:] if h.loss is not None]
    if train_losses:
        metrics["train_loss"] = float(np.mean(train_losses))
    spent = guard.spent if guard is not None else None
    return TrainResult(
        config=cfg,
        mechanism=None if privacy_plan is None else privacy_plan.mechanism,
        noise_source=None if privacy_plan is None else privacy_plan.source,
        privacy_plan=privacy_plan,
        epsilon=None if spent is None else spent.epsilon,
        order=None if spent is None else spent.order,
        steps=len(history),
        planned_steps=plan.steps,
        sample_rate=plan.sample_rate,
        stopped_early=stop_reason is not None,
        stop_reason=stop_reason,
        metrics=metrics,
        dataset=ds.info(),
        model={**trainable.describe(), "world_size": world},
        history=history,
        seconds=time.perf_counter() - started,
        parameter_update=update,
        audit=audit_result,
        cache=trainable.cache,
    )


def _start_audit(ctx: _Run) -> TrialAudit | None:
    """The canaries of ``config.audit`` over the trainable parameters (None without audit)."""
    settings, privacy_plan = ctx.cfg.audit, ctx.privacy_plan
    if settings is None or privacy_plan is None:
        return None
    return TrialAudit(
        privacy_plan.mechanism,
        [p.shape for p in ctx.trainable.parameters],
        clip_bound=ctx.cfg.privacy.clip,
        sample_rate=ctx.plan.sample_rate,
        canaries=settings.canaries,
        confidence=settings.confidence,
        generator=torch.Generator().manual_seed(derive_seed(ctx.cfg.training.seed, SEED_AUDIT)),
        device=ctx.device,
    )


@dataclass(frozen=True)
class _Run:
    """Everything one trial's loop and evaluation need."""

    cfg: TrialConfig
    trainable: Trainable
    ds: TextDataset
    plan: Plan
    privacy_plan: PrivacyPlan | None
    guard: BudgetGuard | None
    device: torch.device
    distributed: bool
    rank: int


def _run_steps(
    ctx: _Run,
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
    base = _make_base_optimizer(params, cfg)
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
    else:
        train_model, optimizer = model, base
    sample_gen = torch.Generator().manual_seed(derive_seed(t.seed, SEED_SAMPLING, rank))
    batches = poisson_batches(
        len(inputs), sample_rate=plan.sample_rate, steps=plan.steps, generator=sample_gen, distributed=distributed
    )
    history: list[StepRecord] = []
    stop_reason = None
    model.train()
    bar = _progress(plan.steps, f"train {cfg.privacy.mechanism}")
    try:
        for idx in batches:
            if guard is not None and not guard.allows_next_step():
                nxt = guard.ledger.epsilon_after(guard.steps + 1).epsilon
                stop_reason = (
                    f"stopped before step {guard.steps + 1}: epsilon would reach {nxt:.6g} > target {guard.target:g}"
                )
                log.warning(stop_reason)
                break
            n = len(idx)
            loss_sum = _step(ctx, train_model, optimizer, inputs, idx, private=privacy_plan is not None)
            if observe is not None:
                observe([p.grad for p in params])
            total_n = n
            if distributed:
                on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
                stats = torch.tensor([float(loss_sum), float(n)], dtype=torch.float64, device=on)
                torch.distributed.all_reduce(stats)
                loss_sum, total_n = float(stats[0]), int(stats[1])
            spent = guard.record_step() if guard is not None else None
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


def _step(
    ctx: _Run,
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


def _evaluate_all(ctx: _Run) -> dict[str, float]:
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
