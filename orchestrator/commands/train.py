"""``lmo-dp train --config FILE.yaml [--json]``: one DP fine-tuning trial, locally.

Prints ``{"mechanism", "epsilon_target", "epsilon", "delta", "steps", "sample_rate",
"metrics", "mlflow_run_id", ...}``. When ``MLFLOW_TRACKING_URI`` is set the trial is a run of
experiment ``experiment`` (config key): params (the flattened config, plan and noise),
per-step ``loss`` and ``epsilon``, the evaluation metrics, and as artifacts the config as
given, the noise parameters, the dataset record and the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.cli import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one DP fine-tuning trial from a YAML config")
    p.add_argument("--config", required=True, help="trial config YAML (see examples/trial-minilm-mr.yaml)")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


class MlflowStepLogger:
    """Buffers per-step ``loss``/``epsilon`` and writes them to the run in batches."""

    def __init__(self, tracker: Any, run_id: str, every: int = 25) -> None:
        self.tracker, self.run_id, self.every = tracker, run_id, every
        self.buffer: list[Any] = []

    def __call__(self, record: Any) -> None:
        import time

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
            self.tracker.client.log_batch(self.run_id, metrics=self.buffer)
            self.buffer = []


def run(args: argparse.Namespace) -> dict:
    from orchestrator.tracking import tracking_configured
    from trainers.config import TrialConfig

    config = TrialConfig.from_yaml(args.config)
    if not tracking_configured():
        from trainers.engine import train

        return train(config).summary()
    return _run_tracked(config, Path(args.config))


def _run_tracked(config: Any, path: Path) -> dict:
    from orchestrator.tracking import Tracker
    from trainers.engine import train

    tracker = Tracker()
    tags = {"lmodp.kind": "trial", "lmodp.mechanism": config.privacy.mechanism}
    with tracker.run(config.experiment, run_name=config.name or path.stem, tags=tags) as run_id:
        tracker.log_params(run_id, config.flat())
        tracker.log_text(run_id, path.read_text(), "config.yaml")
        steps = MlflowStepLogger(tracker, run_id)
        try:
            result = train(config, on_step=steps)
        finally:
            steps.flush()
        summary = result.summary()
        summary["mlflow_run_id"] = run_id
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
        final = dict(result.metrics)
        final.update({"epsilon_spent": result.epsilon, "steps_taken": result.steps})
        if result.privacy_plan is not None:
            final["epsilon_planned"] = result.privacy_plan.planned.epsilon
            final["epsilon_target"] = result.privacy_plan.target_epsilon
        tracker.log_metrics(run_id, final, step=result.steps)
        if result.mechanism is not None:
            tracker.log_dict(run_id, {**result.mechanism.to_dict(), "clip": config.privacy.clip}, "noise.json")
        tracker.log_dict(run_id, result.dataset, "dataset.json")
        tracker.log_dict(run_id, summary, "result.json")
    return summary


def render(r: dict) -> str:
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["metrics"].items()) if isinstance(v, (int, float)))
    if r["epsilon"] is None:
        privacy = "non-private"
    else:
        privacy = f"epsilon {r['epsilon']:.4g} of target {r['epsilon_target']:g} at delta {r['delta']:g}"
    lines = [
        f"{r['mechanism']}: {privacy}; {r['steps']} steps at sample rate {r['sample_rate']:.4g}",
        f"  {metrics}",
    ]
    if r.get("stop_reason"):
        lines.append(f"  {r['stop_reason']}")
    if r.get("mlflow_run_id"):
        lines.append(f"  MLflow run {r['mlflow_run_id']}")
    return "\n".join(lines)
