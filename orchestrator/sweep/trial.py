"""One sweep trial as a Ray Tune function trainable, tracked in its own MLflow child run.

:func:`run_trial` claims the trial's child run (closing and deleting an unfinished one of an
earlier attempt, or reporting a finished one instead of training again), resolves the trial
config against the recipe, logs its params, trains -- in this process, or under Ray Train's
``TorchTrainer`` when ``resources.workers > 1`` -- and reports a
:class:`~orchestrator.sweep.outcomes.TrialOutcome` to Tune. A trial refused by bad input (a plan
over its budget, say) is not retried: its run ends FAILED, tagged ``lmodp.status = refused`` and
``lmodp.error``, so a resumed sweep does not count it as done.

With ``training.checkpoint_every: N`` a single-process trial saves a checkpoint with its
privacy state (:mod:`trainers.checkpoint`) every N steps and when training ends, and hands
each one to Tune (``tune.report(..., checkpoint=...)``, an intermediate result with
``lmodp_status: running``). When the trial's worker dies, Tune retries the trial
(``max_retries``) from its latest checkpoint: the new attempt restores the steps, the
accountant's composed steps and the generators, logs the whole step history to a fresh child
run (tagged ``lmodp.resumed_from_step``) and ends with the steps and epsilon of an
uninterrupted trial. In a resumed sweep (a fresh Tune run) a trial without a Tune checkpoint of
its own starts from the newest one an earlier Tune run left for its key, when that can be read.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noise_search.errors import InputError, one_line
from orchestrator.sweep.context import SweepContext
from orchestrator.sweep.outcomes import TrialOutcome
from orchestrator.sweep.specs import TrialSpec
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import KIND_TAG, PARENT_TAG, TRIAL_KEY_TAG, TRIAL_TAG, Tracker

if TYPE_CHECKING:
    from trainers.config import TrialConfig

SWEEP_TAG = "lmodp.sweep"
#: tag of a sweep's parent run: its run folder (where its lock is; ``lmo-dp report`` asks it)
RUN_DIR_TAG = "lmodp.run_dir"

#: ``trial_fn(trial_config, hooks=..., **kwargs) -> TrainResult`` (:func:`trainers.engine.train`'s
#: signature); the default runs the real trainer.
TrialFn = Callable[..., Any]


def claim_run(tracker: Tracker, ctx: SweepContext, spec: TrialSpec, trial_id: str) -> tuple[str | None, Any]:
    """(run id to log into, finished run or None).

    Earlier attempts are found by the trial's key under the sweep's parent run (Tune's trial ids
    change when a sweep's Tune state is rebuilt). A finished one is returned so the trial is
    not trained twice; unfinished or failed ones are closed and deleted.
    """
    earlier = tracker.find_runs(ctx.experiment, {TRIAL_KEY_TAG: spec.key, PARENT_TAG: ctx.parent_run_id})
    for run in earlier:
        if run.info.status == "FINISHED":
            return None, run
    for run in earlier:
        tracker.discard_run(run.info.run_id)
    tags = {
        TRIAL_KEY_TAG: spec.key,
        TRIAL_TAG: trial_id,
        KIND_TAG: "trial",
        SWEEP_TAG: ctx.experiment,
        "lmodp.mechanism": spec.mechanism,
        "lmodp.epsilon_target": "none" if spec.epsilon is None else f"{spec.epsilon:g}",
        "lmodp.seed": str(spec.seed),
    }
    run_id = tracker.start_run(ctx.experiment, run_name=spec.key, tags=tags, parent_run_id=ctx.parent_run_id)
    return run_id, None


def run_trial(config: dict[str, Any], trial_fn: TrialFn | None = None) -> None:
    """The Tune function trainable: ``config = {"spec": TrialSpec dict, "ctx": sweep context}``."""
    from ray import tune

    try:
        _trial(config, trial_fn)
    except _TrialRefused as refused:  # the run is closed FAILED; Tune gets the outcome, no retry
        tune.report(refused.outcome.report())


def _open_tracker(uri: str) -> Tracker:
    """The trial's tracker; a tracking server that does not answer (restarting, say) gets as long
    to come back as MLflow's client gives one request, instead of failing the trial at once."""
    from orchestrator.sweep.health import client_retry_window, server_problem

    server_problem(uri, patience=client_retry_window())
    return Tracker(uri)


class _TrialRefused(Exception):
    def __init__(self, outcome: TrialOutcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


def _trial(config: dict[str, Any], trial_fn: TrialFn | None) -> None:
    import ray
    from ray import tune

    from orchestrator.trial_tracking import trial_params

    spec, ctx = TrialSpec.from_dict(config["spec"]), SweepContext.from_dict(config["ctx"])
    trial_id = tune.get_context().get_trial_id()
    sweep = ctx.sweep
    tracker = _open_tracker(ctx.tracking_uri)
    run_id, finished = claim_run(tracker, ctx, spec, trial_id)
    if finished is not None:
        tune.report(TrialOutcome.from_run(finished).report())
        return
    trial_cfg = sweep.trial_config(
        mechanism=spec.mechanism,
        epsilon=spec.epsilon,
        seed=spec.seed,
        learning_rate=spec.learning_rate,
        params=spec.params,
        name=spec.key,
        clip=spec.clip,
        epochs=spec.epochs,
        trainable=spec.trainable,
    ).resolve(ctx.n_train)
    with tracker.run(ctx.experiment, run_id=run_id):
        tracker.set_tags(run_id, {"lmodp.node_ip": ray.util.get_node_ip_address()})
        tuning = {} if spec.tuning_run is None else {"tuning.run": spec.tuning_run}
        tracker.log_params(run_id, {**trial_params(trial_cfg), "trial.key": spec.key, "trial.id": trial_id, **tuning})
        tracker.log_dict(run_id, trial_cfg.to_dict(), "trial-config.json")
        if sweep.resources.workers > 1:
            outcome = _run_data_parallel(sweep, trial_cfg, ctx, run_id)
        else:
            rungs = None if sweep.early_stopping is None else asha_rungs(sweep, trial_cfg, tracker, run_id)
            earlier = (ctx.run_dir, ctx.checkpoint_of(spec.key))
            outcome = _run_local(trial_cfg, tracker, run_id, trial_fn, rungs, earlier)
        if outcome.status == "stopped":
            # Tune stopped this trial at a rung: the rung's report is its last result; the run ends
            # FINISHED, tagged stopped
            tracker.set_tags(run_id, {"lmodp.status": "stopped"})
        elif outcome.status != "finished":
            tracker.set_tags(run_id, {"lmodp.status": outcome.status, "lmodp.error": outcome.error or ""})
            # a refused trial is over, but FINISHED would let a resume report it as done: the run
            # context ends it FAILED, run_trial reports the outcome to Tune (no retry)
            raise _TrialRefused(outcome)
    if outcome.status == "stopped":
        # the exit Tune's session expects from a stopped trial: returning normally would make
        # its wrapper report once more and wait for a step that never comes
        raise SystemExit(0)
    tune.report(outcome.report())


#: Tune's names of a rung result: the epoch (ASHA's time attribute) and the score (higher is better)
RUNG_EPOCH, RUNG_SCORE = "rung_epoch", "rung_score"


def asha_rungs(sweep: SweepConfig, trial_cfg: TrialConfig, tracker: Tracker, run_id: str) -> Any:
    """The trial's :class:`~trainers.loop_hooks.RungHook` for ``early_stopping``: at each rung it logs
    the validation score, then reports to Tune a result that is the trial's outcome should ASHA
    stop it there (status ``stopped``, its full plan's epsilon); ASHA's stop reaches the trial as
    ``SystemExit`` from ``tune.report``, which tells the loop to stop."""
    import os
    import time

    from ray import tune

    from orchestrator.sweep.outcomes import hyperparameters
    from trainers.loop_hooks import RungHook

    # after a stop Tune waits this long for the trial's thread (its run's last MLflow writes)
    # before it gives the actor to the next trial; Tune's default is 2 s
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "60"
    es = sweep.early_stopping
    assert es is not None
    accuracy = trial_cfg.model.task == "classification"
    name = "val_accuracy" if accuracy else "val_perplexity"
    hps = hyperparameters(trial_cfg)
    started = time.perf_counter()

    def decide(epoch: int, scores: dict[str, float], epsilon: float | None) -> bool:
        score = scores.get(name)
        if score is None:
            return True
        # what a stop here leaves in the run even if Tune removes the actor before the trial's own
        # closing writes (the driver then closes the run): the steps kept, the plan, its epsilon.
        # A trial that goes on overwrites the metrics at its last step; the params do not change.
        assert hook.plan is not None and hook.step is not None
        tracker.log_params(run_id, {"plan.sample_rate": hook.plan.sample_rate, "plan.steps": hook.plan.steps})
        tracker.log_metrics(
            run_id,
            {f"rung.{name}": score, "steps_taken": float(hook.step), "epsilon_planned": epsilon},
            step=epoch,
        )
        outcome = TrialOutcome("stopped", epsilon, scores, run_id, time.perf_counter() - started, hps)
        result = {**outcome.report(), RUNG_EPOCH: epoch, RUNG_SCORE: score if accuracy else -score}
        try:
            tune.report(result)
        except SystemExit:
            return False
        return True

    hook = RungHook(es.rung_epochs(), decide)
    return hook


#: Tune metric of an intermediate result: the steps the reported checkpoint holds.
CHECKPOINT_STEPS = "checkpoint_steps"


def _run_local(
    trial_cfg: TrialConfig,
    tracker: Tracker,
    run_id: str,
    trial_fn: TrialFn | None,
    rungs: Any = None,
    earlier: tuple[str | None, str | None] = (None, None),
) -> TrialOutcome:
    from orchestrator.trial_tracking import train_and_log

    with tune_checkpoints(trial_cfg, *earlier) as checkpoints:
        try:
            result, _ = train_and_log(
                tracker,
                run_id,
                trial_cfg,
                train_fn=trial_fn,
                checkpoints=checkpoints,
                hooks=() if rungs is None else (rungs,),
            )
        except InputError as exc:  # e.g. a plan over budget: retrying cannot help
            return TrialOutcome("refused", mlflow_run_id=run_id, error=one_line(exc))
    return TrialOutcome.from_train(result, run_id)


@contextlib.contextmanager
def tune_checkpoints(trial_cfg: TrialConfig, run_dir: str | None = None, earlier: str | None = None) -> Iterator[Any]:
    """The trial's :class:`~trainers.checkpoint.Checkpointing` under Tune (None without
    ``training.checkpoint_every``): a scratch folder filled from Tune's latest checkpoint of this
    trial, if any -- else, on a resumed sweep, from ``earlier``, the newest checkpoint folder (relative
    to ``run_dir``) an earlier Tune run left for this trial's key, when it can be read -- whose every
    save is reported to Tune. The folder is removed afterwards."""
    every = trial_cfg.training.checkpoint_every
    if every is None:
        yield None
        return
    from ray import tune

    from trainers.checkpoint import Checkpointing

    def report(directory: Path, steps: int) -> None:
        # Tune copies the folder into the trial's storage before this returns, so the loop may
        # overwrite the file afterwards
        tune.report(
            {"lmodp_status": "running", CHECKPOINT_STEPS: steps},
            checkpoint=tune.Checkpoint.from_directory(str(directory)),
        )

    with tempfile.TemporaryDirectory(prefix="lmodp-trial-checkpoint-") as scratch:
        checkpointing = Checkpointing(Path(scratch), every=every, on_save=report, field="training.checkpoint_every")
        latest = tune.get_checkpoint()
        if latest is not None:
            latest.to_directory(scratch)
        elif run_dir and earlier:
            _restore_earlier(checkpointing, run_dir, earlier)
        yield checkpointing


def _restore_earlier(checkpointing: Any, run_dir: str, earlier: str) -> None:
    """Fill ``checkpointing``'s folder from checkpoint folder ``earlier`` under ``run_dir``; one that
    cannot be copied or read (cut short by a full disk, say) is dropped: the trial starts over."""
    import logging

    from ray import tune

    from orchestrator.sweep.storage import _fs_and_path

    try:
        fs, base = _fs_and_path(run_dir)
        tune.Checkpoint(f"{base.rstrip('/')}/{earlier}", filesystem=fs).to_directory(str(checkpointing.directory))
        checkpointing.load()
    except Exception as exc:
        logging.getLogger(__name__).warning(
            "checkpoint %s/%s of an earlier attempt cannot be used (%s); the trial starts over",
            run_dir, earlier, one_line(exc),
        )  # fmt: skip
        with contextlib.suppress(OSError):
            checkpointing.path.unlink()


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train loop: every worker trains its shard; rank 0 logs to MLflow and reports."""
    import ray.train

    from orchestrator.trial_tracking import train_and_log
    from trainers.config import TrialConfig

    rank = ray.train.get_context().get_world_rank()
    trial_cfg = TrialConfig.from_dict(config["trial"])
    tracker = Tracker(config["tracking_uri"]) if rank == 0 else None
    try:
        result, _ = train_and_log(tracker, config["run_id"], trial_cfg)
    except InputError as exc:
        ray.train.report(TrialOutcome("refused", error=one_line(exc)).report())
        return
    ray.train.report(TrialOutcome.from_train(result, None).report())


def _run_data_parallel(sweep: SweepConfig, trial_cfg: TrialConfig, ctx: SweepContext, run_id: str) -> TrialOutcome:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = sweep.resources
    per_worker: dict[str, float] = {"CPU": float(r.cpus_per_trial)}
    if r.gpus_per_trial:
        per_worker["GPU"] = float(r.gpus_per_trial)
    if r.memory_gb:
        per_worker["memory"] = float(r.memory_gb) * 2**30
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"trial": trial_cfg.to_dict(), "tracking_uri": ctx.tracking_uri, "run_id": run_id},
        scaling_config=ScalingConfig(
            num_workers=r.workers, use_gpu=r.gpus_per_trial > 0, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if r.gpus_per_trial > 0 else "gloo"),
        run_config=RunConfig(name=f"{run_id}-train", storage_path=ctx.train_storage),
    )
    outcome = TrialOutcome.from_report(trainer.fit().metrics)
    return TrialOutcome(
        outcome.status,
        outcome.epsilon,
        outcome.metrics,
        run_id,
        outcome.train_seconds,
        outcome.hyperparameters,
        outcome.error,
    )
