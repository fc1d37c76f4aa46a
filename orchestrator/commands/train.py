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


def run(args: argparse.Namespace) -> dict:
    from orchestrator.tracking import tracking_configured
    from trainers.config import TrialConfig
    from trainers.engine import load_settings_dataset, train

    config = TrialConfig.from_yaml(args.config)
    dataset = load_settings_dataset(config.data, config.model.task)
    if not tracking_configured():
        return train(config, dataset=dataset).summary()
    return _run_tracked(config, Path(args.config), dataset)


def _run_tracked(config: Any, path: Path, dataset: Any) -> dict:
    from noise_search.errors import ParameterError
    from orchestrator.tracking import KIND_TAG, Tracker
    from orchestrator.trial_tracking import train_and_log, trial_params

    if len(dataset.train) < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    config = config.resolve(len(dataset.train))  # params record the recipe's values, not nulls
    tracker = Tracker()
    tags = {KIND_TAG: "trial", "lmodp.mechanism": config.privacy.mechanism}
    with tracker.run(config.experiment, run_name=config.name or path.stem, tags=tags) as run_id:
        tracker.log_params(run_id, trial_params(config))
        tracker.log_text(run_id, path.read_text(), "config.yaml")
        _, summary = train_and_log(tracker, run_id, config, dataset=dataset)
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
