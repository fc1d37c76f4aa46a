"""What a sweep logs on its parent MLflow run: the noise search (run here, at the plan's ``(q, T)``)
and its outputs, the sweep's inputs, the tuning law and cells, early stopping's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.sweep.plan import SharedPlan
from orchestrator.sweep.tuning import TunedCell, tuning_summary
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import Tracker


def run_search(cfg: SweepConfig, plan: SharedPlan) -> tuple[Any, dict[str, Any]]:
    """The noise search for every target at the plan's ``(q, T)``: (outcome, its JSON object)."""
    from noise_search.search import SearchProblem
    from orchestrator import search_runner
    from orchestrator.serialize import jsonable

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
        lmo_accountant=cfg.privacy.lmo_accountant,
    )
    outcome = search_runner.run(problem)
    return outcome, jsonable(outcome.to_dict())


def log_tuning(tracker: Tracker, parent_run_id: str, cfg: SweepConfig, cells: list[dict[str, Any]]) -> None:
    """The tuning law and every cell's K, per-run and tuned epsilon on the parent run (params,
    metrics ``tuning.eps_<E>.<mechanism>.*`` and the ``tuning.json`` artifact)."""
    summary = tuning_summary(cfg, [TunedCell.from_dict(c) for c in cells])
    tracker.log_params(
        parent_run_id,
        {f"tuning.{k}": summary[k] for k in ("mean", "shape", "distribution", "noise", "seed")},
    )
    metrics: dict[str, float] = {}
    for c in summary["cells"]:
        prefix = f"tuning.eps_{c['epsilon']:g}.{c['mechanism']}" if c["epsilon"] is not None else "tuning.none"
        metrics[f"{prefix}.runs"] = c["runs"]
        for key in ("epsilon_per_run", "epsilon_tuned"):
            if c.get(key) is not None:
                metrics[f"{prefix}.{key}"] = c[key]
    tracker.log_metrics(parent_run_id, metrics)
    tracker.log_dict(parent_run_id, summary, "tuning.json")


def log_early_stopping(tracker: Tracker, parent_run_id: str, summary: dict[str, Any]) -> None:
    """ASHA's settings, the stopped trials and every cell's selection epsilon on the parent run
    (params ``early_stopping.*``, metrics ``early_stopping.eps_<E>.<mechanism>.*``, ``early_stopping.json``)."""
    tracker.log_params(
        parent_run_id, {f"early_stopping.{k}": summary[k] for k in ("scheduler", "grace_epochs", "reduction_factor")}
    )
    metrics: dict[str, float] = {"early_stopping.stopped": summary["stopped"]}
    for c in summary["cells"]:
        prefix = f"early_stopping.eps_{c['epsilon']:g}.{c['mechanism']}"
        for key in ("runs", "stopped", "epsilon_per_run", "epsilon_selection"):
            metrics[f"{prefix}.{key}"] = c[key]
    tracker.log_metrics(parent_run_id, metrics)
    tracker.log_dict(parent_run_id, summary, "early_stopping.json")


def log_parent_inputs(
    tracker: Tracker,
    parent_run_id: str,
    cfg: SweepConfig,
    plan: SharedPlan,
    outcome: Any,
    result: dict[str, Any],
    out_dir: Path,
) -> None:
    from orchestrator.search_outputs import write_outputs

    flat = {
        "experiment": cfg.experiment,
        "epsilons": ",".join(f"{e:g}" for e in cfg.privacy.epsilons),
        "mechanisms": ",".join(cfg.privacy.mechanisms),
        **({"variants": ",".join(f"{k}={v.mechanism}" for k, v in cfg.variants.items())} if cfg.variants else {}),
        "data.test_size": plan.dataset.get("test_size"),
        "data.validation_size": plan.dataset.get("validation_size"),
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
    for path in write_outputs(outcome, search_dir / "search.json", result).values():
        tracker.log_artifact(parent_run_id, str(path), "search")
    metrics = {f"baseline.majority_{k}": v for k, v in (plan.majority or {}).items()}
    for row in outcome.rows:
        e = row.epsilon_target
        if row.objective is not None:
            metrics[f"search.lmo.objective.eps_{e:g}"] = row.objective
        for entry in (row.laplace, row.gaussian):
            if entry.objective is not None:
                metrics[f"search.{entry.family}.objective.eps_{e:g}"] = entry.objective
    tracker.log_metrics(parent_run_id, metrics)


def log_report(tracker: Tracker, parent_run_id: str, experiment: str, out: Path) -> tuple[Path, dict[str, Any]]:
    """Write the sweep's report under ``out`` and log it, its tables and the verdicts' metrics on the
    parent run; returns (the report's page, the verdicts)."""
    from orchestrator.report import write_report
    from orchestrator.report_statistics import read_verdicts, verdict_metrics

    report, _ = write_report(tracker, experiment, out, parent_run_id=parent_run_id, live=True)
    tracker.log_artifacts(parent_run_id, report.parent, "report")
    verdicts = read_verdicts(report.parent)
    tracker.log_metrics(parent_run_id, verdict_metrics(verdicts))
    for name in ("cells.csv", "comparisons.csv"):
        tracker.log_artifact(parent_run_id, report.parent / name)
    return report, verdicts
