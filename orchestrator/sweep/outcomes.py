"""What a trial ended with, in one shape from the trainer to Tune, the ``--json`` output and MLflow.

:class:`TrialOutcome` is built where a trial ends -- from a :class:`~trainers.results.TrainResult`,
from the finished MLflow run of an earlier attempt, or from the metrics Tune recorded -- and
turned into Tune's flat metrics (:meth:`~TrialOutcome.report`: ``lmodp_status``,
``epsilon_spent``, ``metric/<name>``, ``hp/<name>``) or into the sweep's trial entry
(:func:`trial_entry`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from noise_search.errors import one_line
from orchestrator.sweep.specs import TrialSpec

#: the settings a trial's selection compares, as ``hp/<name>`` in Tune and from MLflow params
_HYPERPARAMETER_PARAMS = (
    ("learning_rate", "training.learning_rate", float),
    ("clip", "privacy.clip", float),
    ("batch_size", "training.batch_size", int),
    ("epochs", "training.epochs", float),
    ("optimizer", "training.optimizer", str),
)
#: per-step metrics of a trial's MLflow run (not final results)
_STEP_METRICS = ("loss", "epsilon", "batch_size")


def hyperparameters(trial_cfg: Any) -> dict[str, Any]:
    """The resolved settings of a trial config that the selection compares."""
    t = trial_cfg.training
    return {
        "learning_rate": t.learning_rate,
        "clip": trial_cfg.privacy.clip,
        "batch_size": t.batch_size,
        "epochs": t.epochs,
        "optimizer": t.optimizer,
        "trainable": trial_cfg.model.trainable_kind,
    }


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended."""

    #: finished | stopped (by early stopping, at a rung) | refused (bad input, e.g. over budget) | error |
    #: infeasible | unknown
    status: str
    epsilon: float | None = None  #: epsilon spent (the accountant's bound)
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    train_seconds: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_train(cls, result: Any, run_id: str | None) -> TrialOutcome:
        return cls(
            "finished" if result.pruned_at_epoch is None else "stopped",
            result.epsilon,
            dict(result.metrics),
            run_id,
            result.seconds,
            hyperparameters(result.config),
        )

    @classmethod
    def from_run(cls, run: Any) -> TrialOutcome:
        """A finished MLflow child run of an earlier attempt."""
        m, p = run.data.metrics, run.data.params
        hps: dict[str, Any] = {}
        for key, param, cast in _HYPERPARAMETER_PARAMS:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                hps[key] = cast(p[param]) if p[param] not in ("null", "None") else None
        metrics = {k: v for k, v in m.items() if k not in _STEP_METRICS and not k.startswith("rung.")}
        status = "stopped" if run.data.tags.get("lmodp.status") == "stopped" else "finished"
        return cls(status, m.get("epsilon_spent"), metrics, run.info.run_id, None, hps)

    def report(self) -> dict[str, Any]:
        """Tune's flat metrics for this outcome (None values left out)."""
        flat: dict[str, Any] = {
            "lmodp_status": self.status,
            "epsilon_spent": self.epsilon,
            "mlflow_run_id": self.mlflow_run_id,
            "error": self.error,
            "train_seconds": self.train_seconds,
        }
        flat.update({f"hp/{k}": v for k, v in self.hyperparameters.items()})
        flat.update({f"metric/{k}": v for k, v in self.metrics.items()})
        return {k: v for k, v in flat.items() if v is not None}

    @classmethod
    def from_report(cls, m: dict[str, Any] | None, error: BaseException | None = None) -> TrialOutcome:
        """What Tune recorded for a trial (``error``: the exception of a trial that failed for good)."""
        m = m or {}
        status = m.get("lmodp_status") or ("error" if error else "unknown")
        if error is not None and status != "finished":
            status = "error"
        message = one_line(error)[:500] if status == "error" and error is not None else m.get("error")
        return cls(
            status,
            m.get("epsilon_spent"),
            {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("metric/")},
            m.get("mlflow_run_id"),
            m.get("train_seconds"),
            {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("hp/")},
            message,
        )


def trial_entry(spec: TrialSpec, outcome: TrialOutcome, trial_id: str | None = None) -> dict[str, Any]:
    """One element of the ``lmo-dp sweep --json`` ``trials`` list."""
    entry = {
        "trial_id": trial_id,
        "key": spec.key,
        "mechanism": spec.mechanism,
        "epsilon_target": spec.epsilon,
        "seed": spec.seed,
        "learning_rate": outcome.hyperparameters.get("learning_rate", spec.learning_rate),
        "clip": outcome.hyperparameters.get("clip", spec.clip),
        "epochs": outcome.hyperparameters.get("epochs", spec.epochs),
        "trainable": outcome.hyperparameters.get("trainable", spec.trainable),
        "tuning_run": spec.tuning_run,
        "epsilon": outcome.epsilon,
        "status": outcome.status,
        "metrics": dict(outcome.metrics),
        "mlflow_run_id": outcome.mlflow_run_id,
    }
    if outcome.status != "infeasible":
        entry["train_seconds"] = outcome.train_seconds
    if outcome.error:
        entry["error"] = outcome.error
    return entry


#: the metrics the selection reads
SELECTION_METRICS = ("accuracy", "val_accuracy", "perplexity", "val_perplexity")


def selection_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished trial entries as rows for :func:`orchestrator.selection.select`."""
    return [
        {
            "key": t["key"],
            "mlflow_run_id": t.get("mlflow_run_id"),
            "mechanism": t["mechanism"],
            "epsilon_target": t["epsilon_target"],
            "seed": t.get("seed"),
            "learning_rate": t["learning_rate"],
            "clip": t.get("clip"),
            "epochs": t.get("epochs"),
            "trainable": t.get("trainable"),
            "tuning_run": t.get("tuning_run"),
            "epsilon": t["epsilon"],
            **{k: v for k, v in t["metrics"].items() if k in SELECTION_METRICS},
        }
        for t in trials
        if t["status"] == "finished"
    ]
