"""The MLflow run of a noise search (``lmo-dp search`` with tracking configured): the inputs as
params, per-target results as metrics, the output files as artifacts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from noise_search.search import SearchOutcome
from orchestrator.search_outputs import write_outputs


def _metric_key(prefix: str, target: float) -> str:
    return f"{prefix}.eps_{target:g}"


#: the MLflow experiment of ``lmo-dp search``
EXPERIMENT = "lmo-dp-search"


def track(outcome: SearchOutcome, result: dict[str, Any], files: dict[str, Path] | None) -> dict[str, Any]:
    """One MLflow run: inputs as params, per-target results as metrics, files as artifacts.

    Returns the ``--json`` keys that say where it is: ``mlflow_run_id``, ``runs_url`` (the
    experiment's runs table with lmo-dp's view) and ``ui_command`` (what serves a local store's UI)."""
    from orchestrator.mlflow_view import runs_url, search_view, ui_command
    from orchestrator.tracking import Tracker

    problem = outcome.problem
    settings = dict(result["settings"])
    settings["targets"] = ",".join(f"{t:g}" for t in problem.targets)
    settings["space_details"] = json.dumps(settings.get("space_details") or {})
    metrics: dict[str, float | None] = {"evaluated": float(outcome.evaluated), "seconds": outcome.seconds}
    for r in outcome.rows:
        t = r.epsilon_target
        metrics[_metric_key("lmo_feasible", t)] = float(r.feasible)
        metrics[_metric_key("lmo_objective", t)] = r.objective
        metrics[_metric_key("lmo_epsilon", t)] = r.epsilon
        for entry in (r.laplace, r.gaussian):
            metrics[_metric_key(f"{entry.family}_objective", t)] = entry.objective
            metrics[_metric_key(f"{entry.family}_epsilon", t)] = entry.epsilon
        metrics[_metric_key("laplace_u0", t)] = r.laplace.value
        metrics[_metric_key("gaussian_sigma", t)] = r.gaussian.value
    tracker = Tracker()
    experiment_id = tracker.set_view(EXPERIMENT, search_view())
    with tracker.run(EXPERIMENT, run_name=f"search-{settings['space']}-{problem.strategy}",
                     tags={"lmodp.kind": "search"}) as run_id:  # fmt: skip
        tracker.log_params(run_id, settings)
        tracker.log_metrics(run_id, metrics)
        if files:
            for path in files.values():
                tracker.log_artifact(run_id, path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                for path in write_outputs(outcome, Path(tmp) / "search.json", result).values():
                    tracker.log_artifact(run_id, path)
    return {
        "mlflow_run_id": run_id,
        "runs_url": runs_url(tracker.uri, experiment_id),
        "ui_command": ui_command(tracker.uri),
    }
