"""The sweep pipeline: noise search for every target epsilon, then a Ray Tune grid of trials.

:func:`run_sweep` runs, in order:

1. **Plan** -- the training-set size after ``data.max_train_examples`` and the recipe (or the
   config's batch size and epochs) give the Poisson rate ``q = batch_size / N`` and the steps
   ``T`` shared by every private trial; the majority-class baseline is measured; for a head or
   top-layers sweep the frozen activations are computed into the feature cache once.
2. **Search** -- :mod:`orchestrator.search_runner` on Ray tasks, all target epsilons at once,
   for that ``(q, T, delta)``: the best LMO parameters and the calibrated Laplace ``u0`` and
   Gaussian ``sigma`` per target. Saved as ``search.json`` beside the Tune run and on the
   parent MLflow run.
3. **Trials** -- a Ray Tune grid over epsilon x mechanism x seed x each mechanism's
   (learning rate x clip) grid, plus the non-private reference when asked. Each trial
   runs :func:`trainers.engine.train` with its searched or calibrated noise (given explicitly,
   so the trainer re-accounts its own plan and refuses anything over budget), under Ray
   Train's ``TorchTrainer`` when ``resources.workers > 1``. A failing trial is retried
   ``max_retries`` times and never stops the others; a target the search found no LMO
   parameters for is reported as ``infeasible`` without a trial.
4. **Tracking** -- one MLflow experiment per sweep, a parent run (config, search results,
   report) and one child run per trial, tagged with the Tune trial id. A trial that finds an
   unfinished run of its own id (an interrupted attempt) closes and deletes it before it
   starts again, and one that finds a finished run reports it instead of training again, so
   a resumed sweep adds no duplicate runs and leaves none open.
5. **Report** -- :mod:`orchestrator.report`, written locally and logged to the parent run.

``resume=True`` restores the Tune run from its storage path (finished trials are not rerun)
and reopens the same parent run; its manifest ``lmodp-sweep.json`` lives next to the Tune
state, so it works for ``s3://`` storage too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, LmoDpError, ParameterError, one_line
from noise_search.search_result import SearchResult, SearchRow
from orchestrator.selection import select
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import KIND_TAG, PARENT_TAG, TRIAL_TAG, Tracker, tracking_uri

log = logging.getLogger(__name__)

MANIFEST = "lmodp-sweep.json"
SWEEP_TAG = "lmodp.sweep"

#: ``trial_fn(trial_config, on_step) -> TrainResult``; the default runs the real trainer.
TrialFn = Callable[..., Any]


class SweepError(LmoDpError):
    """The sweep could not run (Ray, storage or tracking failed)."""


# --- plan and grid --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    """What every private trial of the sweep shares, and the data's reference numbers."""

    n_train: int
    batch_size: int
    sample_rate: float
    steps: int
    dataset: dict[str, Any]
    #: the majority-class baseline: ``{"label", "val_accuracy", "test_accuracy"}`` (classification)
    majority: dict[str, Any] | None = None
    #: the private trials' training settings after the recipe (``section.key -> value``)
    training: dict[str, Any] | None = None


def _private_training(cfg: SweepConfig, n_train: int) -> dict[str, Any]:
    """The resolved batch size, epochs and steps of the private trials (one plan for all)."""
    from trainers.recipes import recipe_for

    t = cfg.training
    seen: dict[str, dict[str, Any]] = {}
    for mech in cfg.privacy.mechanisms:
        recipe = recipe_for(cfg.model.trainable_kind, mech)
        seen[mech] = {
            "batch_size": t.batch_size if t.batch_size is not None else recipe.batch_size(n_train),
            "epochs": t.epochs if t.epochs is not None or t.steps is not None else recipe.epochs,
            "steps": t.steps,
        }
    first = next(iter(seen.values()))
    for mech, value in seen.items():
        if value != first:
            raise ParameterError(
                "training.batch_size",
                f"the recipes give {mech} a different plan ({value}) than the other mechanisms ({first}); "
                "set training.batch_size and training.epochs so every private trial shares one plan",
            )
    return first


def majority_baseline(ds: Any) -> dict[str, Any] | None:
    """The majority-class baseline: the accuracy of the best constant prediction on each split
    (its most frequent label's share; an upper bound on any constant classifier, so a model must
    beat it to have learned anything). None for unlabelled data."""
    if ds.train.labels is None:
        return None
    out: dict[str, Any] = {}
    for name, split in (("train", ds.train), ("val", ds.validation), ("test", ds.test)):
        if split.labels:
            counts: dict[int, int] = {}
            for y in split.labels:
                counts[y] = counts.get(y, 0) + 1
            out[f"{name}_accuracy"] = max(counts.values()) / len(split.labels)
    return out


def plan_sweep(cfg: SweepConfig, *, warm_cache: bool = True) -> SweepPlan:
    """Load the data once (after its limits) to fix ``q`` and ``T`` for every private trial.

    With ``warm_cache`` and a head or top-layers model, the frozen activations of every split
    are computed into the feature cache here, once, before any trial starts.
    """
    from trainers.budget import make_step_plan
    from trainers.engine import load_settings_dataset

    ds = load_settings_dataset(cfg.data, cfg.model.task)
    if len(ds.train) < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    training = _private_training(cfg, len(ds.train))
    plan = make_step_plan(len(ds.train), training["batch_size"], epochs=training["epochs"], steps=training["steps"])
    if warm_cache and cfg.model.cached_prefix:
        _warm_feature_cache(cfg, ds)
    return SweepPlan(
        plan.n_train, plan.batch_size, plan.sample_rate, plan.steps, ds.info(), majority_baseline(ds), training
    )


def _warm_feature_cache(cfg: SweepConfig, ds: Any) -> None:
    """Compute the frozen activations on the driver's CPU before the trials start (CPU sweeps;
    GPU trials compute them on their own node, one builder per entry)."""
    import torch

    from trainers.trainable import build_trainable

    if cfg.training.device not in ("cpu", "auto") or (cfg.training.device == "auto" and torch.cuda.is_available()):
        return
    trial = cfg.trial_config(mechanism="none", epsilon=None, seed=0, learning_rate=None, params=None, name="cache")
    started = time.perf_counter()
    with torch.random.fork_rng():
        built = build_trainable(trial.resolve(len(ds.train)), ds, torch.device("cpu"))
    if built.cache.get("builds") and _show_progress():
        print(
            f"feature cache: computed {built.cache['builds']} entries in {time.perf_counter() - started:.0f} s "
            f"under {built.cache.get('root')} (reused from now on)",
            file=sys.stderr,
            flush=True,
        )


def trial_key(
    mechanism: str,
    epsilon: float | None,
    seed: int,
    learning_rate: float | None,
    n_lrs: int,
    clip: float | None = None,
    n_clips: int = 1,
) -> str:
    key = f"eps={epsilon:g}_{mechanism}_seed={seed}" if epsilon is not None else f"{mechanism}_seed={seed}"
    key += f"_lr={learning_rate:g}" if n_lrs > 1 and learning_rate is not None else ""
    return key + (f"_clip={clip:g}" if n_clips > 1 and clip is not None else "")


def _noise_params(mech: str, row: SearchRow) -> dict[str, Any] | None:
    """The trial's noise parameters from the search row (None: the search found none)."""
    found = row.lmo if mech == "lmo" else row.baseline(mech).mechanism
    if found is None:
        return None
    params = found.to_dict()
    params.pop("mechanism", None)
    return params


def trial_specs(cfg: SweepConfig, search: SearchResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runnable trial specs, infeasible grid points) for the sweep's grid."""
    specs, infeasible = [], []
    points: list[tuple[str, float | None, dict[str, Any] | None]] = [
        (mech, eps, _noise_params(mech, search.row(eps)))
        for eps in cfg.privacy.epsilons
        for mech in cfg.privacy.mechanisms
    ]
    if cfg.non_private:
        points.append(("none", None, None))
    for mech, eps, params in points:
        lrs, clips = cfg.learning_rate_grid(mech), cfg.clip_grid(mech)
        for seed in cfg.seeds:
            for lr in lrs:
                for clip in clips:
                    spec = {
                        "key": trial_key(mech, eps, seed, lr, len(lrs), clip, len(clips)),
                        "mechanism": mech,
                        "epsilon": eps,
                        "seed": seed,
                        "learning_rate": lr,
                        "clip": clip,
                        "params": params,
                    }
                    (specs if params is not None or mech == "none" else infeasible).append(spec)
    return specs, infeasible


# --- Ray ----------------------------------------------------------------------------------------------


def check_address(address: str) -> None:
    """Fail fast (exit 2) when a ``host:port`` or ``ray://host:port`` address does not answer."""
    if address == "auto":
        return
    target = address.split("://", 1)[1] if "://" in address else address
    if address.startswith(("http://", "https://")):
        raise ParameterError(
            "--address",
            f"expects the Ray cluster (GCS) address host:port or ray://host:port, got {address!r} "
            "(the dashboard URL is for lmo-dp submit)",
        )
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError("--address", f"must be host:port, ray://host:port or auto, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ParameterError("--address", f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def connect_ray(address: str | None) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``, as inside a Ray job), else start a local instance.

    Returns whether this call started Ray (and so should shut it down).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except Exception as exc:  # Ray raises many types here
        raise SweepError(f"Ray: cannot {'reach ' + address if address else 'start'}: {exc}") from exc
    return True


def check_resources(cfg: SweepConfig, cluster: dict[str, float]) -> None:
    """Refuse (exit 2) a trial that can never be scheduled on this cluster."""
    r = cfg.resources
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    need_cpu = r.cpus_per_trial * r.workers
    if need_cpu > cpus:
        raise ParameterError(
            "resources.workers",
            f"a trial needs {r.workers} worker(s) x {r.cpus_per_trial} CPU(s) = {need_cpu} CPUs, "
            f"but the Ray cluster has {cpus:g}",
        )
    if r.gpus_per_trial * r.workers > gpus:
        raise ParameterError(
            "resources.gpus_per_trial",
            f"a trial needs {r.gpus_per_trial * r.workers:g} GPU(s), but the Ray cluster has {gpus:g}",
        )


def check_tracking_reachable(nodes: list[dict[str, Any]]) -> None:
    """A multi-node sweep needs a tracking server: trials on other nodes cannot reach (and must
    not each create) the driver's local SQLite file."""
    from orchestrator.tracking import tracking_configured

    if len(nodes) > 1 and not tracking_configured():
        raise InputError(
            f"MLFLOW_TRACKING_URI: the Ray cluster has {len(nodes)} nodes; set it to an MLflow server every node "
            "can reach (docs/tracking.md) -- the local SQLite default only works on one machine"
        )


# --- storage --------------------------------------------------------------------------------------------


def _fs_and_path(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def read_manifest(run_dir: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    target = f"{path.rstrip('/')}/{MANIFEST}"
    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


def write_manifest(run_dir: str, manifest: dict[str, Any]) -> None:
    fs, path = _fs_and_path(run_dir)
    fs.create_dir(path, recursive=True)
    tmp, final = f"{path.rstrip('/')}/.{MANIFEST}.tmp", f"{path.rstrip('/')}/{MANIFEST}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(manifest, indent=2).encode())
    fs.move(tmp, final)


def run_dir_exists(run_dir: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


# --- the trial ----------------------------------------------------------------------------------------


def _trial_runs(tracker: Tracker, experiment: str, parent_run_id: str, trial_id: str) -> list[Any]:
    exp = tracker.client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    flt = f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return list(tracker.client.search_runs([exp.experiment_id], filter_string=flt))


def _summary_from_run(run: Any) -> dict[str, Any]:
    m, p = run.data.metrics, run.data.params
    hps: dict[str, Any] = {}
    for key, param, cast in (
        ("learning_rate", "training.learning_rate", float),
        ("clip", "privacy.clip", float),
        ("batch_size", "training.batch_size", int),
        ("epochs", "training.epochs", float),
        ("optimizer", "training.optimizer", str),
    ):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            hps[key] = cast(p[param]) if p[param] not in ("null", "None") else None
    return {
        "status": "finished",
        "epsilon": m.get("epsilon_spent"),
        "metrics": {k: v for k, v in m.items() if k not in ("loss", "epsilon", "batch_size")},
        "mlflow_run_id": run.info.run_id,
        "hyperparameters": hps,
    }


def _claim_run(tracker: Tracker, ctx: dict[str, Any], spec: dict[str, Any], trial_id: str) -> tuple[str | None, Any]:
    """(run id to log into, finished run or None). Unfinished earlier attempts are closed and
    deleted; a finished one is returned so the trial is not trained twice."""
    for run in _trial_runs(tracker, ctx["experiment"], ctx["parent_run_id"], trial_id):
        if run.info.status == "FINISHED":
            return None, run
        if run.info.status == "RUNNING":
            tracker.end_run(run.info.run_id, "KILLED")
        tracker.client.delete_run(run.info.run_id)
    tags = {
        TRIAL_TAG: trial_id,
        KIND_TAG: "trial",
        SWEEP_TAG: ctx["experiment"],
        "lmodp.mechanism": spec["mechanism"],
        "lmodp.epsilon_target": "none" if spec["epsilon"] is None else f"{spec['epsilon']:g}",
        "lmodp.seed": str(spec["seed"]),
    }
    run_id = tracker.start_run(ctx["experiment"], run_name=spec["key"], tags=tags, parent_run_id=ctx["parent_run_id"])
    return run_id, None


def _report_final(summary: dict[str, Any]) -> None:
    from ray import tune

    flat: dict[str, Any] = {
        "lmodp_status": summary["status"],
        "epsilon_spent": summary.get("epsilon"),
        "mlflow_run_id": summary.get("mlflow_run_id"),
        "error": summary.get("error"),
        "train_seconds": summary.get("train_seconds"),
    }
    flat.update({f"hp/{k}": v for k, v in (summary.get("hyperparameters") or {}).items()})
    flat.update({f"metric/{k}": v for k, v in (summary.get("metrics") or {}).items()})
    tune.report({k: v for k, v in flat.items() if v is not None})


def run_trial(config: dict[str, Any], trial_fn: TrialFn | None = None) -> None:
    """The Tune function trainable: one grid point, tracked in its own MLflow child run."""
    from ray import tune

    spec, ctx = config["spec"], config["ctx"]
    trial_id = tune.get_context().get_trial_id()
    sweep = SweepConfig.from_dict(ctx["sweep"])
    tracker = Tracker(ctx["tracking_uri"])
    run_id, finished = _claim_run(tracker, ctx, spec, trial_id)
    if finished is not None:
        _report_final(_summary_from_run(finished))
        return
    trial_cfg = sweep.trial_config(
        mechanism=spec["mechanism"],
        epsilon=spec["epsilon"],
        seed=spec["seed"],
        learning_rate=spec["learning_rate"],
        params=spec["params"],
        name=spec["key"],
        clip=spec.get("clip"),
    ).resolve(ctx["n_train"])
    with tracker.run(ctx["experiment"], run_id=run_id):
        import ray

        from orchestrator.trial_tracking import trial_params

        tracker.set_tags(run_id, {"lmodp.node_ip": ray.util.get_node_ip_address()})
        tracker.log_params(run_id, {**trial_params(trial_cfg), "trial.key": spec["key"], "trial.id": trial_id})
        tracker.log_dict(run_id, trial_cfg.to_dict(), "trial-config.json")
        if sweep.resources.workers > 1:
            summary = _run_data_parallel(sweep, trial_cfg, ctx, run_id)
        else:
            summary = _run_local(trial_cfg, tracker, run_id, trial_fn)
        if summary["status"] != "finished":
            tracker.set_tags(run_id, {"lmodp.status": summary["status"], "lmodp.error": summary.get("error", "")})
    _report_final(summary)


def _run_local(trial_cfg: Any, tracker: Tracker, run_id: str, trial_fn: TrialFn | None) -> dict[str, Any]:
    from orchestrator.trial_tracking import StepLogger, log_result
    from trainers.engine import train

    steps = StepLogger(tracker, run_id)
    try:
        result = (trial_fn or train)(trial_cfg, on_step=steps)
    except InputError as exc:  # e.g. a plan over budget: retrying cannot help
        return {"status": "refused", "error": one_line(exc), "mlflow_run_id": run_id, "metrics": {}}
    finally:
        steps.flush()
    summary = result.summary()
    summary["mlflow_run_id"] = run_id
    log_result(tracker, run_id, result, summary)
    return {
        "status": "finished",
        "epsilon": result.epsilon,
        "metrics": result.metrics,
        "mlflow_run_id": run_id,
        "train_seconds": result.seconds,
        "hyperparameters": hyperparameters(result.config),
    }


def hyperparameters(trial_cfg: Any) -> dict[str, Any]:
    """The resolved settings a trial's selection compares (reported to Tune as ``hp/...``)."""
    t = trial_cfg.training
    return {
        "learning_rate": t.learning_rate,
        "clip": trial_cfg.privacy.clip,
        "batch_size": t.batch_size,
        "epochs": t.epochs,
        "optimizer": t.optimizer,
        "trainable": trial_cfg.model.trainable_kind,
    }


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train loop: every worker trains its shard; rank 0 logs to MLflow and reports."""
    import ray.train

    from orchestrator.trial_tracking import StepLogger, log_result
    from trainers.config import TrialConfig
    from trainers.engine import train

    rank = ray.train.get_context().get_world_rank()
    trial_cfg = TrialConfig.from_dict(config["trial"])
    tracker = Tracker(config["tracking_uri"]) if rank == 0 else None
    steps = StepLogger(tracker, config["run_id"]) if tracker is not None else None
    try:
        result = train(trial_cfg, on_step=steps)
    except InputError as exc:
        ray.train.report({"lmodp_status": "refused", "error": one_line(exc)})
        return
    finally:
        if steps is not None:
            steps.flush()
    metrics: dict[str, Any] = {"lmodp_status": "finished", "epsilon_spent": result.epsilon}
    metrics.update({f"metric/{k}": v for k, v in result.metrics.items()})
    metrics.update({f"hp/{k}": v for k, v in hyperparameters(result.config).items()})
    if tracker is not None:
        summary = result.summary()
        summary["mlflow_run_id"] = config["run_id"]
        log_result(tracker, config["run_id"], result, summary)
    ray.train.report(metrics)


def _run_data_parallel(sweep: SweepConfig, trial_cfg: Any, ctx: dict[str, Any], run_id: str) -> dict[str, Any]:
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
        train_loop_config={"trial": trial_cfg.to_dict(), "tracking_uri": ctx["tracking_uri"], "run_id": run_id},
        scaling_config=ScalingConfig(
            num_workers=r.workers, use_gpu=r.gpus_per_trial > 0, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if r.gpus_per_trial > 0 else "gloo"),
        run_config=RunConfig(name=f"{run_id}-train", storage_path=ctx["train_storage"]),
    )
    result = trainer.fit()
    m = result.metrics or {}
    if m.get("lmodp_status") == "refused":
        return {"status": "refused", "error": m.get("error"), "mlflow_run_id": run_id, "metrics": {}}
    metrics = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("metric/")}
    hps = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("hp/")}
    return {
        "status": "finished",
        "epsilon": m.get("epsilon_spent"),
        "metrics": metrics,
        "mlflow_run_id": run_id,
        "hyperparameters": hps,
    }


# --- progress -------------------------------------------------------------------------------------------


def _show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _progress_callback(total: int):
    from ray.tune import Callback

    class TrialProgress(Callback):
        """One stderr line per finished or failed trial (terminal only)."""

        def __init__(self) -> None:
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            res = trial.last_result or {}
            acc = next((res[k] for k in ("metric/accuracy", "metric/perplexity") if k in res), None)
            eps = res.get("epsilon_spent")
            extra = "" if acc is None else f" headline {acc:.4g}"
            extra += "" if eps is None else f", epsilon {eps:.4g}"
            key = trial.config["spec"]["key"]
            print(f"[{self.done}/{total}] {key}: {res.get('lmodp_status', 'done')}{extra}", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            print(f"[{self.done}/{total}] {trial.config['spec']['key']}: error", file=sys.stderr, flush=True)

    return TrialProgress()


# --- the pipeline -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Route everything written to fd 1 (Ray and Tune print there) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _search(cfg: SweepConfig, plan: SweepPlan) -> dict[str, Any]:
    from noise_search.search import SearchProblem
    from orchestrator import search_runner

    problem = SearchProblem(
        targets=cfg.privacy.epsilons,
        delta=cfg.privacy.delta,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        objective=cfg.search.objective,
        gamma=cfg.search.gamma,
        space=cfg.search.space,
        strategy=cfg.search.strategy,
        seed=cfg.search.seed,
        accountant=cfg.privacy.accountant,
    )
    outcome = search_runner.run(problem)
    result = search_runner.jsonable(outcome.to_dict())
    return {"outcome": outcome, "result": result}


def _local_out_dir(cfg: SweepConfig, run_dir: str) -> Path:
    if "://" in run_dir:
        return (Path.cwd() / "lmodp-out" / "reports" / cfg.experiment).resolve()
    return Path(run_dir)


def _quiet_libraries() -> None:
    """Tune's console tables and MLflow's download bars would clutter the driver's output."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def run_sweep(
    cfg: SweepConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    trial_fn: TrialFn | None = None,
) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the ``lmo-dp sweep --json`` object."""
    _quiet_libraries()
    if address:
        check_address(address)
    storage = cfg.storage_uri()
    run_dir = f"{storage.rstrip('/')}/{cfg.experiment}"
    manifest = read_manifest(run_dir)
    if resume and manifest is None:
        raise InputError(f"--resume: no sweep {cfg.experiment!r} to resume at {run_dir}")
    if not resume and (manifest is not None or run_dir_exists(run_dir)):
        status = manifest.get("status", "unknown") if manifest else "unknown"
        raise InputError(
            f"experiment: a sweep {cfg.experiment!r} already exists at {run_dir} (status: {status}); "
            "pass --resume to continue it, or choose another experiment name or storage_path"
        )
    if resume and manifest and manifest.get("config") != cfg.to_dict():
        raise InputError(f"--config: differs from the config of the sweep being resumed ({run_dir}/{MANIFEST})")
    if (
        not resume
        and "://" not in storage
        and cfg.resources.workers > (os.cpu_count() or 1)
        and not address
        and not os.environ.get("RAY_ADDRESS")
    ):
        raise ParameterError(
            "resources.workers",
            f"{cfg.resources.workers} workers per trial, but this machine has {os.cpu_count()} CPUs",
        )

    started_ray = connect_ray(address)
    try:
        import ray

        check_resources(cfg, ray.cluster_resources())
        check_tracking_reachable([n for n in ray.nodes() if n.get("Alive")])
        return _run(cfg, run_dir, manifest, resume, trial_fn)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _run(
    cfg: SweepConfig, run_dir: str, manifest: dict[str, Any] | None, resume: bool, trial_fn: TrialFn | None
) -> dict[str, Any]:
    from ray import tune

    t0 = time.perf_counter()
    uri = tracking_uri()
    tracker = Tracker(uri)
    out_dir = _local_out_dir(cfg, run_dir)

    timings: dict[str, float] = {}
    if manifest is None:
        started = time.perf_counter()
        plan = plan_sweep(cfg)
        timings["plan_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        searched = _search(cfg, plan)
        timings["search_seconds"] = time.perf_counter() - started
        search_json = searched["result"]
        parent_run_id = tracker.start_run(
            cfg.experiment,
            run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={KIND_TAG: "sweep", SWEEP_TAG: cfg.experiment},
        )
        manifest = {
            "experiment": cfg.experiment,
            "parent_run_id": parent_run_id,
            "tracking_uri": uri,
            "run_dir": run_dir,
            "status": "running",
            "config": cfg.to_dict(),
            "plan": plan.__dict__,
            "search": search_json,
        }
        write_manifest(run_dir, manifest)
        _log_parent_inputs(tracker, parent_run_id, cfg, plan, searched, out_dir)
    else:
        parent_run_id = manifest["parent_run_id"]
        tracker.client.update_run(parent_run_id, status="RUNNING")
        manifest["status"] = "running"
        write_manifest(run_dir, manifest)
    search = SearchResult.from_dict(manifest["search"], source=f"{run_dir}/{MANIFEST}")
    specs, infeasible = trial_specs(cfg, search)

    ctx = {
        "experiment": cfg.experiment,
        "parent_run_id": parent_run_id,
        "tracking_uri": uri,
        "sweep": cfg.to_dict(),
        "train_storage": f"{run_dir}/ray-train",
        "n_train": manifest["plan"]["n_train"],
    }
    r = cfg.resources
    if r.workers > 1:
        resources: dict[str, float] = {"cpu": 0, "memory": 256 * 2**20}
    else:
        resources = {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}
        if r.memory_gb:
            resources["memory"] = r.memory_gb * 2**30
    fn = tune.with_parameters(run_trial, trial_fn=trial_fn) if trial_fn is not None else run_trial
    trainable = tune.with_resources(fn, resources)
    callbacks = [_progress_callback(len(specs))] if _show_progress() else []
    failure = tune.FailureConfig(max_failures=cfg.max_retries)
    status = "finished"
    try:
        if specs:
            if resume:
                tuner = tune.Tuner.restore(
                    run_dir,
                    trainable=trainable,
                    resume_unfinished=True,
                    restart_errored=True,
                    param_space=_param_space(specs, ctx),
                )
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space=_param_space(specs, ctx),
                    tune_config=tune.TuneConfig(
                        max_concurrent_trials=cfg.max_concurrent_trials,
                        trial_name_creator=_trial_name,
                        trial_dirname_creator=_trial_name,
                    ),
                    run_config=tune.RunConfig(
                        name=cfg.experiment,
                        storage_path=cfg.storage_uri(),
                        failure_config=failure,
                        callbacks=callbacks,
                        verbose=0,
                    ),
                )
            fit_started = time.perf_counter()
            grid = tuner.fit()
            trials_seconds = time.perf_counter() - fit_started
            results = list(grid)
        else:
            results, trials_seconds = [], 0.0
    except KeyboardInterrupt:
        status = "interrupted"
        tracker.end_run(parent_run_id, "KILLED")
        manifest["status"] = status
        write_manifest(run_dir, manifest)
        raise
    trials = [_trial_entry(res) for res in results]
    trials += [
        {
            "trial_id": None,
            "key": s["key"],
            "mechanism": s["mechanism"],
            "epsilon_target": s["epsilon"],
            "seed": s["seed"],
            "learning_rate": s["learning_rate"],
            "clip": s.get("clip"),
            "epsilon": None,
            "status": "infeasible",
            "metrics": {},
            "mlflow_run_id": None,
        }
        for s in infeasible
    ]
    trials.sort(
        key=lambda t: (
            t["epsilon_target"] is None,
            t["epsilon_target"] or 0.0,
            t["mechanism"],
            t["seed"],
            t["learning_rate"] or 0.0,
            t.get("clip") or 0.0,
        )
    )

    from orchestrator.report import write_report

    report = write_report(tracker, cfg.experiment, out_dir / "report", parent_run_id=parent_run_id)
    tracker.log_artifacts(parent_run_id, report.parent, "report")
    failed = sum(t["status"] == "error" for t in trials)
    tracker.log_metrics(
        parent_run_id, {"trials": len(trials), "trials_failed": failed, "seconds": time.perf_counter() - t0}
    )
    selected = [s.to_dict() for s in select(_selection_rows(trials))]
    tracker.log_dict(parent_run_id, {"trials": trials, "selected": selected}, "trials.json")
    tracker.end_run(parent_run_id, "FINISHED" if failed == 0 else "FAILED")
    manifest["status"] = status if failed == 0 else "finished-with-errors"
    write_manifest(run_dir, manifest)
    return {
        "experiment": cfg.experiment,
        "parent_run_id": parent_run_id,
        "report": str(report),
        "run_dir": run_dir,
        "tracking_uri": uri,
        "trials": trials,
        "selected": selected,
        "baselines": {"majority": manifest["plan"].get("majority")},
        "plan": {k: manifest["plan"].get(k) for k in ("n_train", "batch_size", "sample_rate", "steps", "training")},
        "seconds": time.perf_counter() - t0,
        "trials_seconds": trials_seconds,
        **timings,
    }


_SELECTION_METRICS = ("accuracy", "val_accuracy", "perplexity", "val_perplexity")


def _selection_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished trials as rows for :func:`orchestrator.selection.select`."""
    rows = []
    for t in trials:
        if t["status"] != "finished":
            continue
        rows.append(
            {
                "mechanism": t["mechanism"],
                "epsilon_target": t["epsilon_target"],
                "learning_rate": t["learning_rate"],
                "clip": t.get("clip"),
                "epsilon": t["epsilon"],
                **{k: v for k, v in t["metrics"].items() if k in _SELECTION_METRICS},
            }
        )
    return rows


def _trial_name(trial: Any) -> str:
    return f"{trial.trial_id}_{trial.config['spec']['key']}"


def _param_space(specs: list[dict[str, Any]], ctx: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    return {"spec": tune.grid_search(specs), "ctx": ctx}


def _trial_entry(res: Any) -> dict[str, Any]:
    spec = res.config["spec"]
    m = res.metrics or {}
    status = m.get("lmodp_status") or ("error" if res.error else "unknown")
    if res.error is not None and status != "finished":
        status = "error"
    entry = {
        "trial_id": m.get("trial_id"),
        "key": spec["key"],
        "mechanism": spec["mechanism"],
        "epsilon_target": spec["epsilon"],
        "seed": spec["seed"],
        "learning_rate": m.get("hp/learning_rate", spec["learning_rate"]),
        "clip": m.get("hp/clip", spec.get("clip")),
        "epsilon": m.get("epsilon_spent"),
        "status": status,
        "metrics": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("metric/")},
        "mlflow_run_id": m.get("mlflow_run_id"),
        "train_seconds": m.get("train_seconds"),
    }
    if status == "error":
        entry["error"] = one_line(res.error)[:500]
    elif m.get("error"):
        entry["error"] = m["error"]
    return entry


def _log_parent_inputs(
    tracker: Tracker, parent_run_id: str, cfg: SweepConfig, plan: SweepPlan, searched: dict[str, Any], out_dir: Path
) -> None:
    from orchestrator import search_runner

    flat = {
        "experiment": cfg.experiment,
        "epsilons": ",".join(f"{e:g}" for e in cfg.privacy.epsilons),
        "mechanisms": ",".join(cfg.privacy.mechanisms),
        "seeds": ",".join(str(s) for s in cfg.seeds),
        "delta": cfg.privacy.delta,
        "clip": cfg.privacy.clip,
        "plan.sample_rate": plan.sample_rate,
        "plan.steps": plan.steps,
        "plan.n_train": plan.n_train,
        "data.name": cfg.data.name,
        "data.sha256": plan.dataset.get("sha256"),
        "search.objective": cfg.search.objective,
        "search.space": cfg.search.space,
        "search.strategy": cfg.search.strategy,
        "model.trainable": cfg.model.trainable_kind,
        "non_private": cfg.non_private,
        **{f"plan.{k}": v for k, v in (plan.training or {}).items()},
    }
    tracker.log_params(parent_run_id, flat)
    tracker.log_dict(parent_run_id, cfg.to_dict(), "sweep-config.json")
    search_dir = out_dir / "search"
    search_dir.mkdir(parents=True, exist_ok=True)
    files = search_runner.write_outputs(searched["outcome"], search_dir / "search.json", searched["result"])
    for path in files.values():
        tracker.log_artifact(parent_run_id, str(path), "search")
    metrics = {}
    for k, v in (plan.majority or {}).items():
        metrics[f"baseline.majority_{k}"] = v
    for row in searched["result"]["results"]:
        e = row["epsilon_target"]
        if row.get("objective") is not None:
            metrics[f"search.lmo.objective.eps_{e:g}"] = row["objective"]
        for fam in ("laplace", "gaussian"):
            if (row.get(fam) or {}).get("objective") is not None:
                metrics[f"search.{fam}.objective.eps_{e:g}"] = row[fam]["objective"]
    tracker.log_metrics(parent_run_id, metrics)
