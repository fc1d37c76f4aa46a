"""Checks a sweep passes before anything starts: resources Ray can schedule, a tracking server the
nodes can reach, what the data decides (delta, steps), and the run folder's resume rules.

Each refuses bad input with one line naming its field (exit 2).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from noise_search.errors import InputError, ParameterError
from orchestrator.checks import check_output_dir
from orchestrator.sweep import lock
from orchestrator.sweep.storage import MANIFEST, read_manifest, run_dir_exists
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import tracking_configured

GIB = 2**30


def _per_worker(cfg: SweepConfig) -> dict[str, float]:
    """The Ray resources one worker of a trial asks for (the whole trial when ``workers`` is 1)."""
    r = cfg.resources
    need = {"CPU": float(r.cpus_per_trial), "GPU": float(r.gpus_per_trial)}
    if r.memory_gb:
        need["memory"] = r.memory_gb * GIB
    return need


def _fits(node: dict[str, float], need: dict[str, float]) -> int:
    """How many workers of ``need`` one node of total resources ``node`` holds at once."""
    counts = [int(node.get(k, 0.0) // v) for k, v in need.items() if v > 0]
    return min(counts) if counts else 1_000_000


def _amount(key: str, value: float) -> str:
    if key == "memory":
        return f"{value / GIB:.3g} GiB of memory"
    return f"{value:g} {key}{'' if value == 1 else 's'}"


def check_resources(cfg: SweepConfig, nodes: list[dict[str, float]]) -> None:
    """Refuse (exit 2) a trial that can never be scheduled on this cluster, whose alive nodes have
    the total resources ``nodes`` (Ray's ``CPU``, ``GPU``, ``memory`` in bytes): one worker must fit
    on one node, and ``resources.workers`` of them on the cluster at once -- else Tune would wait
    for ever. Fields: the resource that does not fit, or ``resources.workers``."""
    r = cfg.resources
    need = _per_worker(cfg)
    fields = {"CPU": "resources.cpus_per_trial", "GPU": "resources.gpus_per_trial", "memory": "resources.memory_gb"}
    for key, value in need.items():
        biggest = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if value > biggest:
            per = "per worker" if r.workers > 1 else "per trial"
            raise ParameterError(
                fields[key],
                f"{_amount(key, value)} {per}, but no node of the Ray cluster has that many "
                f"(the largest has {_amount(key, biggest)}; {len(nodes)} node(s))",
            )
    room = sum(_fits(n, need) for n in nodes)
    if r.workers > room:
        raise ParameterError(
            "resources.workers",
            f"a trial needs {r.workers} workers of {', '.join(_amount(k, v) for k, v in need.items() if v > 0)} "
            f"each at once, but the Ray cluster holds only {room} such workers",
        )


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_local_resources(cfg: SweepConfig, address: str | None) -> None:
    """Before Ray starts, when the sweep will start a local Ray instance (no ``--address``, no
    ``RAY_ADDRESS``, no Ray already running in this process): the CPUs and memory a trial asks
    for must exist on this machine (its Ray instance gets them all, memory less its object store;
    the exact check against Ray's resources follows once it runs)."""
    ray = sys.modules.get("ray")
    if address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return
    r, cpus, memory = cfg.resources, _local_cpus(), _local_memory()
    if r.cpus_per_trial > cpus:
        raise ParameterError(
            "resources.cpus_per_trial", f"must be at most {cpus} (the CPUs of this machine), got {r.cpus_per_trial}"
        )
    if r.cpus_per_trial * r.workers > cpus:
        raise ParameterError(
            "resources.workers",
            f"{r.workers} workers x {r.cpus_per_trial} CPU(s) = {r.workers * r.cpus_per_trial} CPUs per trial, but "
            f"this machine has {cpus}",
        )
    if r.memory_gb and memory is not None and r.memory_gb * r.workers * GIB > memory:
        field = "resources.memory_gb" if r.memory_gb * GIB > memory else "resources.workers"
        raise ParameterError(
            field,
            f"a trial asks for {r.workers} x {r.memory_gb:g} GiB of memory, but this machine has "
            f"{memory / GIB:.3g} GiB (less than that is Ray's to give)",
        )


def check_tracking_reachable(nodes: list[dict[str, Any]]) -> None:
    """A multi-node sweep needs a tracking server: trials on other nodes cannot reach (and must
    not each create) the driver's local SQLite file."""
    if len(nodes) > 1 and not tracking_configured():
        raise InputError(
            f"MLFLOW_TRACKING_URI: the Ray cluster has {len(nodes)} nodes; set it to an MLflow server every node "
            "can reach (docs/tracking.md) -- the local SQLite default only works on one machine"
        )


def check_plan(cfg: SweepConfig) -> None:
    """What the data decides, before anything is written or started (the data is loaded again,
    with the feature cache, by the plan): the data itself (labels, splits, file types),
    ``privacy.delta`` against the training-set size, and the private trials' steps against the
    accountant's supported range."""
    from noise_search.accountants import check_steps_supported
    from orchestrator.sweep.plan import _private_training
    from trainers.budget import check_delta, make_step_plan
    from trainers.engine import load_settings_dataset

    n_train = len(load_settings_dataset(cfg.data, cfg.model.task).train)
    check_delta(cfg.privacy.delta, n_train, allow=cfg.privacy.allow_large_delta, warn=False)
    if cfg.tuning is None:
        training = _private_training(cfg, n_train)
        plan = make_step_plan(n_train, training["batch_size"], epochs=training["epochs"], steps=training["steps"])
        check_steps_supported(cfg.privacy.accountant, plan.steps, "privacy.accountant")


def check_storage(cfg: SweepConfig, run_dir: str, resume: bool, address: str | None) -> dict[str, Any] | None:
    """The manifest of the sweep at ``run_dir`` (None: a new sweep), after the resume rules."""
    lock.check_free(run_dir)  # a sweep running into it: refused naming it, not "already exists"
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
    if "://" not in run_dir:
        check_output_dir(run_dir, "storage_path")
    return manifest
