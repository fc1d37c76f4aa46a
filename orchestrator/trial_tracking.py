"""MLflow records of training trials, shared by ``lmo-dp train`` and sweeps.

A trial run holds: params (the flattened trial config with the recipe's values filled in,
``recipe.name`` and ``recipe.applied`` -- which fields the recipe supplied -- the plan and the
noise), per-step
``loss`` / ``epsilon`` / ``batch_size`` metrics, the final evaluation metrics with
``epsilon_spent``, ``epsilon_planned`` and ``epsilon_target``, and artifacts ``noise.json``,
``dataset.json`` and ``result.json``; unless ``training.save_model: none``, the trained model as
the run's logged model ``model`` (:mod:`orchestrator.model_logging`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from orchestrator.provenance import CONFIG_HASH_TAG, config_sha256
from orchestrator.tracking import Tracker

if TYPE_CHECKING:  # torch is imported only when a trial runs
    from collections.abc import Sequence

    from trainers.checkpoint import Checkpointing
    from trainers.hooks import LoopHook


class StepLogger:
    """An ``on_step`` callback that buffers per-step metrics and writes them in batches."""

    def __init__(self, tracker: Tracker, run_id: str, every: int = 25) -> None:
        self.tracker, self.run_id, self.every = tracker, run_id, every
        self.buffer: list[Any] = []

    def __call__(self, record: Any) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        if record.loss is not None:
            self.buffer.append(Metric("loss", float(record.loss), ts, record.step))
        if record.epsilon is not None:
            self.buffer.append(Metric("epsilon", float(record.epsilon), ts, record.step))
        self.buffer.append(Metric("batch_size", float(record.batch_size), ts, record.step))
        if len(self.buffer) >= self.every * 3:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.tracker.log_metric_batch(self.run_id, self.buffer)
            self.buffer = []


#: Tag of a run whose trial resumed from a checkpoint: the steps the checkpoint held.
RESUMED_TAG = "lmodp.resumed_from_step"

#: config keys that are not hyperparameters of a trial (how it runs, not what it computes)
NOT_PARAMS: tuple[str, ...] = ("training.checkpoint_every", "training.save_model")


def trial_params(trial_cfg: Any) -> dict[str, Any]:
    """MLflow params of a resolved trial config: its flattened settings (minus :data:`NOT_PARAMS`)
    and its recipe."""
    out = {k: v for k, v in trial_cfg.flat().items() if k not in NOT_PARAMS}
    recipe = trial_cfg.recipe
    if recipe is not None:
        out["recipe.name"] = recipe.name
        out["recipe.applied"] = ",".join(sorted(recipe.applied)) or "none"
    return out


def final_metrics(result: Any) -> dict[str, float | None]:
    """Evaluation metrics plus the privacy spend of a :class:`~trainers.engine.TrainResult`."""
    out: dict[str, float | None] = dict(result.metrics)
    out.update({"epsilon_spent": result.epsilon, "steps_taken": float(result.steps)})
    if result.privacy_plan is not None:
        out["epsilon_planned"] = result.privacy_plan.planned.epsilon
        out["epsilon_target"] = result.privacy_plan.target_epsilon
    return out


def log_result(tracker: Tracker, run_id: str, result: Any, summary: dict[str, Any]) -> None:
    """Plan and noise params, final metrics and artifacts of a finished trial."""
    plan = {
        "plan.sample_rate": result.sample_rate,
        "plan.steps": result.planned_steps,
        "plan.n_train": result.dataset["train_size"],
        "data.sha256": result.dataset["sha256"],
        "noise.source": result.noise_source,
    }
    if result.mechanism is not None:
        plan.update({f"noise.{k}": v for k, v in result.mechanism.to_dict().items()})
    tracker.log_params(run_id, plan)
    if result.resumed_from:
        tracker.set_tags(run_id, {RESUMED_TAG: str(result.resumed_from)})
    tracker.log_metrics(run_id, final_metrics(result), step=result.steps)
    if result.mechanism is not None:
        tracker.log_dict(run_id, {**result.mechanism.to_dict(), "clip": result.config.privacy.clip}, "noise.json")
    tracker.log_dict(run_id, result.dataset, "dataset.json")
    tracker.log_dict(run_id, summary, "result.json")


def train_and_log(
    tracker: Tracker | None,
    run_id: str | None,
    trial_cfg: Any,
    *,
    train_fn: Any = None,
    dataset: Any = None,
    checkpoints: Checkpointing | None = None,
    hooks: Sequence[LoopHook] = (),
) -> tuple[Any, dict[str, Any]]:
    """The one train-and-track path of ``lmo-dp train`` and of every sweep trial.

    Trains ``trial_cfg`` (with ``train_fn``, default :func:`trainers.engine.train`), logging
    per-step metrics to ``run_id`` while it runs and the result (params, final metrics,
    artifacts) afterwards. Without a tracker (the other ranks of a data-parallel trial) it only
    trains. Returns ``(result, summary)``; ``summary`` is the ``lmo-dp train --json`` object.

    ``checkpoints`` (a :class:`trainers.checkpoint.Checkpointing`) is passed on to ``train_fn``
    only when given; ``hooks`` (early stopping's :class:`~trainers.loop_hooks.RungHook`, say)
    join the loop after the per-step logger. On a resume the trainer replays the restored steps
    through the hooks, so ``run_id`` (a fresh run) gets the whole per-step history.
    """
    from trainers.engine import train
    from trainers.loop_hooks import OnStep

    train_fn = train_fn or train
    kwargs: dict[str, Any] = {} if dataset is None else {"dataset": dataset}
    if checkpoints is not None:
        kwargs["checkpoints"] = checkpoints
    if tracker is None or run_id is None:
        result = train_fn(trial_cfg, hooks=tuple(hooks), **kwargs)
        return result, result.summary()
    tracker.set_tags(run_id, {CONFIG_HASH_TAG: config_sha256(trial_cfg.to_dict())})
    steps = StepLogger(tracker, run_id)
    try:
        result = train_fn(trial_cfg, hooks=(OnStep(steps), *hooks), **kwargs)
    finally:
        steps.flush()
    summary = result.summary()
    summary["mlflow_run_id"] = run_id
    log_result(tracker, run_id, result, summary)
    from orchestrator.model_logging import log_trial_model, wants_model

    if wants_model(trial_cfg, result):  # training.save_model (orchestrator.model_logging)
        summary.update(log_trial_model(tracker, run_id, result))
    return result, summary
