"""The DP fine-tuning loop: one trial from a :class:`~trainers.config.TrialConfig`.

Order of work in :func:`train` (everything that can refuse the trial happens before the
model is loaded):

1. load the dataset and apply ``max_train_examples`` / ``max_eval_examples``;
2. fill unset training settings from the recipe (:meth:`TrialConfig.resolve`) and plan
   ``q = B / N`` and ``T`` (:func:`trainers.budget.make_step_plan`);
3. private runs: resolve the noise and account the whole plan; refuse if it exceeds the
   target (:func:`trainers.budget.plan_noise`);
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
   :class:`~trainers.budget.BudgetGuard` (the run's accountant, attached to the optimizer's
   step) checks that it stays within the target; the step's noise composes one step event into
   it, and the epsilon spent is reported with the loss to the loop's hooks (:mod:`trainers.hooks`);
6. evaluate on the validation and test splits;
7. with ``config.audit``: the trial-level privacy audit (:mod:`trainers.audit_canaries`) --
   gradient canaries join the clipped sums through the optimizer's ``extra_contributions``
   hook, the privatized gradients are summed after every step, and the epsilon lower bound
   and its inputs go into the metrics (``epsilon_lower_bound``, ``audit_*``).

Seeds: model/dropout, Poisson sampling (per rank), noise and audit canaries each get their own
seed derived from ``training.seed`` with ``numpy.random.SeedSequence``; sampling, noise and
canaries use explicit ``torch.Generator`` objects. A run is reproducible from its seed on the same machine and
thread count.

Checkpoints (``train(..., checkpoints=Checkpointing(...))``, :mod:`trainers.checkpoint`): the
loop saves the trainable parameters, optimizer state, step history, budget guard and generator
states every ``every`` steps, when it ends, and after the current step on SIGTERM (then it
raises :class:`~trainers.checkpoint.TrainingInterrupted`). A trial started on a folder that
holds a checkpoint of the same trial resumes from it (its history is replayed through
the hooks) and ends with the same steps, epsilon and -- on the same machine and thread count --
the same parameters and metrics as an uninterrupted run. Not with ``config.audit`` (the canaries'
state is not saved) nor under ``torch.distributed``: both are refused before any work.

Data parallel: when ``torch.distributed`` is initialised (gloo on CPU, NCCL on GPU) each
rank samples its shard, clips its examples, only rank 0 adds noise and the gradients are
summed (see :mod:`trainers.optimizer`); every rank takes every step. Rank 0 evaluates and
the metrics are broadcast.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from trainers.audit_canaries import TrialAudit
from trainers.budget import BudgetGuard, make_step_plan, plan_noise
from trainers.checkpoint import Checkpointing, CheckpointSession, check_checkpointable, trial_identity
from trainers.config import TrialConfig
from trainers.data import TextDataset, load_dataset
from trainers.hooks import LoopHook
from trainers.loop import RunContext, evaluate_all, run_steps
from trainers.loop_hooks import Checkpoints, Contributions, KeepUpdate, RungHook
from trainers.results import StepRecord, TrainResult
from trainers.seeds import SEED_AUDIT, SEED_MODEL, derive_seed
from trainers.settings import DataSettings
from trainers.trainable import build_trainable

__all__ = ["StepRecord", "TrainResult", "derive_seed", "load_settings_dataset", "resolve_device", "train"]

#: Harmless warnings every run would print: Opacus's hooks on a model whose inputs (token
#: ids) need no gradient, and a transformers deprecation triggered inside PEFT.
EXPECTED_WARNINGS = (
    "Full backward hook is firing when gradients are computed with respect to module outputs",
    "`is_gradient_checkpointing` is deprecated",
)


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


def train(
    config: TrialConfig,
    *,
    hooks: Sequence[LoopHook] = (),
    dataset: TextDataset | None = None,
    keep_update: bool = False,
    checkpoints: Checkpointing | None = None,
) -> TrainResult:
    """Run one trial. Raises :class:`~noise_search.errors.InputError` for a bad config or a
    plan over budget (before any training), other ``LmoDpError`` for runtime failures.

    ``hooks`` attach to the training loop (:class:`~trainers.hooks.LoopHook`, built-ins in
    :mod:`trainers.loop_hooks`): :class:`~trainers.loop_hooks.OnStep` per-step callbacks,
    :class:`~trainers.loop_hooks.Contributions` for the optimizer's extra contributions (private
    runs only; not together with ``config.audit``, which installs its own),
    :class:`~trainers.loop_hooks.RungHook` for early stopping (single process; a trial it stops
    ends with its last validation scores as metrics, :attr:`TrainResult.pruned_at_epoch` set and
    its whole plan's epsilon as :attr:`TrainResult.epsilon`).
    ``dataset`` replaces loading ``config.data`` (tests); the config's limits still apply.
    ``keep_update`` fills :attr:`TrainResult.parameter_update`.
    ``checkpoints``: save checkpoints and resume from the one in its folder (single process,
    without ``config.audit``; see :mod:`trainers.checkpoint`). A checkpoint of another trial is
    refused (:class:`~noise_search.errors.ParameterError` naming ``checkpoints.field``) before
    the model is loaded; SIGTERM during the steps raises
    :class:`~trainers.checkpoint.TrainingInterrupted` after saving one. On a resume the restored
    steps are replayed through the hooks (:meth:`~trainers.hooks.LoopHook.replay`); a
    contributions hook keeps its own state and is called with the step index where the run left
    off.
    """
    started = time.perf_counter()
    cfg, t = config, config.training
    hooks = list(hooks)
    if cfg.audit is not None and any(h.contributions() is not None for h in hooks):
        raise ValueError("extra_contributions: config.audit installs its own canary hook; pass one or the other")
    rungs = next((h for h in hooks if isinstance(h, RungHook)), None)
    private = cfg.privacy.mechanism != "none"
    distributed, rank, world = _distributed()
    if checkpoints is not None:
        check_checkpointable(cfg, checkpoints, distributed=distributed)
    for h in hooks:
        if h.single_process and distributed:
            raise ValueError(f"{type(h).__name__}: runs in a single process, not under torch.distributed")
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
    plan = make_step_plan(len(ds.train), t.batch_size, epochs=t.epochs, steps=t.steps)
    privacy_plan = plan_noise(cfg.privacy, plan) if private else None
    guard = BudgetGuard(privacy_plan) if privacy_plan is not None else None
    session = None
    if checkpoints is not None:
        mechanism = None if privacy_plan is None else privacy_plan.mechanism
        identity = trial_identity(cfg, dataset_sha256=ds.sha256(), plan=plan, mechanism=mechanism, device=device)
        session = checkpoints.open(identity)

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
            ctx = RunContext(cfg, trainable, ds, plan, privacy_plan, guard, device, distributed, rank)
            audit = _start_audit(ctx) if rank == 0 else None
            update = KeepUpdate() if keep_update else None
            attached = [
                *([update] if update is not None else []),
                *([Contributions(audit.contributions, audit.observe)] if audit is not None else []),
                *(h for h in hooks if not h.may_stop),
                *([Checkpoints(session)] if session is not None else []),
                *(h for h in hooks if h.may_stop),  # after the step's checkpoint is saved
            ]
            history, stop_reason = run_steps(ctx, attached)
            audit_result = audit.finish(cfg.privacy.delta) if audit is not None else None
            # a trial stopped by early stopping keeps its last validation scores and never sees the test split
            metrics = dict(rungs.stopped[1]) if rungs is not None and rungs.stopped else evaluate_all(ctx)
            if audit_result is not None:
                metrics.update(audit_result.metrics())
    finally:
        torch.set_num_threads(threads)
    train_losses = [h.loss for h in history[-50:] if h.loss is not None]
    if train_losses:
        metrics["train_loss"] = float(np.mean(train_losses))
    spent = guard.spent if guard is not None else None
    if rungs is not None and rungs.stopped is not None and privacy_plan is not None:
        # stopped at a rung chosen from the data: charged the whole plan (see trainers.loop_hooks.RungHook)
        spent = privacy_plan.planned
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
        parameter_update=None if update is None else update.update,
        audit=audit_result,
        cache=trainable.cache,
        resumed_from=_resumed_steps(session),
        pruned_at_epoch=rungs.stopped[0] if rungs is not None and rungs.stopped else None,
        trained=trainable,
    )


def _resumed_steps(session: CheckpointSession | None) -> int:
    return 0 if session is None else session.resumed_steps


def _start_audit(ctx: RunContext) -> TrialAudit | None:
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
