"""The Tune side of a sweep: the Tuner of a set of trials (resources, the scheduler, trial names,
retries, checkpoints kept) and the closing of runs early stopping stopped."""

from __future__ import annotations

import os
from typing import Any

from orchestrator.sweep.context import SweepContext
from orchestrator.sweep.outcomes import TrialOutcome
from orchestrator.sweep.specs import TrialSpec
from orchestrator.sweep.trial import TrialFn, run_trial
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import Tracker


def make_tuner(
    cfg: SweepConfig, run_dir: str, specs: list[TrialSpec], ctx: SweepContext, progress: Any,
    name: str | None = None, trial_fn: TrialFn | None = None,
) -> Any:  # fmt: skip
    """A fresh Tune run of ``specs`` (``name``: one of its own under ``run_dir``, for a later look)."""
    from ray import tune

    r = cfg.resources
    if r.workers > 1:  # the trial only drives a TorchTrainer, whose workers hold the resources
        resources: dict[str, float] = {"cpu": 0, "memory": 256 * 2**20}
    else:
        resources = {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}
        if r.memory_gb:
            resources["memory"] = r.memory_gb * 2**30
    fn = tune.with_parameters(run_trial, trial_fn=trial_fn) if trial_fn is not None else run_trial
    trainable = tune.with_resources(fn, resources)
    space = {"spec": tune.grid_search([s.to_dict() for s in specs]), "ctx": ctx.to_dict()}
    # always a fresh Tune run, also on --resume: what is finished comes from MLflow, so Tune's
    # saved state (which a full disk or a killed driver can cut short) is never needed
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(cfg),
            max_concurrent_trials=cfg.max_concurrent_trials,
            # one actor per concurrent slot runs trial after trial: imports, Ray worker start-up
            # and model loading are paid once per slot, not per trial (about 7 s each on 2 CPUs)
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name or cfg.experiment,
            storage_path=run_dir if name else cfg.storage_uri(),
            failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
            # a trial's latest checkpoint is all a retry needs (training.checkpoint_every)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[progress],
            stop=progress.stopper(),
            verbose=0,
        ),
    )


def _scheduler(cfg: SweepConfig) -> Any:
    """Tune's trial scheduler: with ``early_stopping``, ASHA per (target, mechanism) cell over the rung
    results of :func:`~orchestrator.sweep.trial.asha_rungs`; else FIFO (None)."""
    es = cfg.early_stopping
    if es is None:
        return None
    from orchestrator.sweep.scheduler import CellASHA
    from orchestrator.sweep.trial import RUNG_EPOCH, RUNG_SCORE
    from orchestrator.sweep_config import MAX_RUNG_EPOCHS

    # only rung results carry the score; the others (checkpoints, the final outcome) do not
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    return CellASHA(
        time_attr=RUNG_EPOCH,
        metric=RUNG_SCORE,
        mode="max",
        max_t=MAX_RUNG_EPOCHS,
        grace_period=es.grace_epochs,
        reduction_factor=es.reduction_factor,
    )


def close_stopped_runs(tracker: Tracker, results: list[Any]) -> int:
    """End FINISHED (tagged stopped, with the rung's epsilon and scores) the runs of trials that
    early stopping stopped but whose actor went away before the trial closed its run itself;
    returns how many."""
    closed = 0
    for res in results:
        m = res.metrics or {}
        run_id = m.get("mlflow_run_id")
        if res.error is not None or m.get("lmodp_status") != "stopped" or not run_id:
            continue
        if tracker.client.get_run(run_id).info.status != "RUNNING":
            continue
        outcome = TrialOutcome.from_report(m)
        tracker.log_metrics(run_id, {"epsilon_spent": outcome.epsilon, **outcome.metrics})
        tracker.set_tags(run_id, {"lmodp.status": "stopped"})
        tracker.end_run(run_id, "FINISHED")
        closed += 1
    return closed


def _trial_name(trial: Any) -> str:
    return f"{trial.trial_id}_{trial.config['spec']['key']}"
