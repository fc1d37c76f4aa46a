"""``lmo-dp train --config FILE.yaml [--checkpoint-dir DIR] [--model-out DIR] [--json]``: one DP trial, locally.

Prints ``{"mechanism", "epsilon_target", "epsilon", "delta", "steps", "sample_rate",
"metrics", "mlflow_run_id", ...}``. When ``MLFLOW_TRACKING_URI`` is set the trial is a run of
experiment ``experiment`` (config key): params (the flattened config, plan and noise),
per-step ``loss`` and ``epsilon``, the evaluation metrics, and as artifacts the config as
given, the noise parameters, the dataset record and the result, and -- unless
``training.save_model: none`` -- the trained model as the run's logged model ``model``
(``model_uri`` and ``model_id`` in the output). ``--model-out DIR`` also writes that model to a
local MLflow model folder (tracked or not; ``model_dir`` in the output).

With ``--checkpoint-dir DIR`` the trial keeps a checkpoint in ``DIR`` (every
``training.checkpoint_every`` steps, when training ends, and on SIGTERM, after which it exits
1) and a rerun of the same command resumes from it (:mod:`trainers.checkpoint`); a tracked
rerun is a new MLflow run holding the whole per-step history.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli import add_json_flag

CHECKPOINT_FLAG = "--checkpoint-dir"
MODEL_OUT_FLAG = "--model-out"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one DP fine-tuning trial from a YAML config")
    p.add_argument("--config", required=True, help="trial config YAML (see examples/trial-minilm-mr.yaml)")
    p.add_argument(
        CHECKPOINT_FLAG,
        metavar="DIR",
        default=None,
        help="keep a checkpoint of the trial in DIR (created if missing; checked writable before any work): "
        "every training.checkpoint_every steps, when training ends, and on SIGTERM (then exit 1). If DIR holds "
        "a checkpoint of the same trial the run resumes from it (one line on stderr says so) and ends with the "
        "same steps and epsilon as an uninterrupted run; a finished run's checkpoint goes straight to "
        "evaluation. A checkpoint of a different config is refused (exit 2). Not with an audit section",
    )
    p.add_argument(
        MODEL_OUT_FLAG,
        metavar="DIR",
        default=None,
        help="also write the trained model to DIR as an MLflow model folder (DIR must not exist or be empty; "
        "lmo-dp predict --model DIR). Tracked trials log it to their run anyway (training.save_model)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from orchestrator.tracking import tracking_configured
    from trainers.config import TrialConfig
    from trainers.engine import load_settings_dataset, train

    config = TrialConfig.from_yaml(args.config)
    checkpoints = _checkpointing(args.checkpoint_dir, config)
    model_out = _check_model_out(args.model_out)
    if tracking_configured():
        _check_tracked(config, Path(args.config))
    dataset = load_settings_dataset(config.data, config.model.task)
    if not tracking_configured():
        result = train(config, dataset=dataset, checkpoints=checkpoints)
        summary = result.summary()
    else:
        result, summary = _run_tracked(config, Path(args.config), dataset, checkpoints)
    if model_out is not None:
        summary["model_dir"] = str(_write_model_out(result, model_out, summary.get("mlflow_run_id")))
    return summary


def _check_model_out(directory: str | None) -> Path | None:
    """``--model-out DIR``: a folder that does not exist or is empty, checked before any work."""
    if directory is None:
        return None
    from noise_search.errors import ParameterError
    from orchestrator.checks import check_output_dir

    folder = check_output_dir(directory, MODEL_OUT_FLAG)
    if folder.is_dir() and any(folder.iterdir()):
        raise ParameterError(MODEL_OUT_FLAG, f"{folder} is not empty (the model is written into a new folder)")
    return folder


def _write_model_out(result: Any, folder: Path, run_id: str | None) -> Path:
    """The trained model as an MLflow model folder (the same layout a tracked trial logs)."""
    import shutil
    import tempfile

    from orchestrator.model_logging import SINGLE_TRIAL_NOTE, model_metadata, write_model_folder

    metadata = model_metadata(result, trial_key=None, run_id=run_id, note=SINGLE_TRIAL_NOTE)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lmodp-model-", dir=folder.parent) as scratch:
        written = write_model_folder(result, Path(scratch) / "model", metadata)
        if folder.is_dir():
            folder.rmdir()  # empty (checked): replaced whole, never half-written
        shutil.move(str(written), str(folder))
    return folder


def _check_tracked(config: Any, path: Path) -> None:
    """Before the data is read: the tracking store can be used, and the run's name (``name``, or
    the config file's name) is a usable one."""
    from noise_search.errors import ParameterError
    from noise_search.names import check_name
    from orchestrator.tracking import check_tracking, tracking_uri

    if config.name is None:
        try:
            check_name("name", path.stem)
        except ParameterError as exc:
            raise ParameterError("name", f"{exc.detail} (the run is named after the config file; set name)") from None
    check_tracking(tracking_uri())


def _checkpointing(directory: str | None, config: Any) -> Any:
    """The trial's :class:`~trainers.checkpoint.Checkpointing` (None without ``--checkpoint-dir``),
    its folder checked usable and the config checked checkpointable before any model loading."""
    if directory is None:
        return None
    from orchestrator.checks import check_output_dir
    from trainers.checkpoint import Checkpointing, check_checkpointable

    folder = check_output_dir(directory, CHECKPOINT_FLAG)
    checkpoints = Checkpointing(
        folder, every=config.training.checkpoint_every, on_resume=_say_resuming, field=CHECKPOINT_FLAG
    )
    check_checkpointable(config, checkpoints)
    return checkpoints


def _say_resuming(path: Path, state: Any) -> None:
    if state.finished:
        what = f"training finished ({state.steps} of {state.planned_steps} steps); evaluating"
    else:
        what = f"resuming after step {state.steps} of {state.planned_steps}"
    print(f"lmo-dp train: {path} holds a checkpoint of this trial: {what}", file=sys.stderr, flush=True)


def _run_tracked(config: Any, path: Path, dataset: Any, checkpoints: Any) -> tuple[Any, dict]:
    from noise_search.errors import ParameterError
    from orchestrator.mlflow_view import runs_url, trials_view, ui_command
    from orchestrator.tracking import KIND_TAG, Tracker, check_artifact_store
    from orchestrator.trial_tracking import train_and_log, trial_params

    if len(dataset.train) < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    config = config.resolve(len(dataset.train))  # params record the recipe's values, not nulls
    _check_plan(config, len(dataset.train))  # before the run exists
    tracker = Tracker()
    if tracker.uri.startswith(("http://", "https://")):
        check_artifact_store(tracker.uri)  # before the run exists, not minutes of retries after training
    tags = {KIND_TAG: "trial", "lmodp.mechanism": config.privacy.mechanism}
    view = trials_view(
        task=config.model.task, varied=("training.learning_rate",), audit=config.audit is not None
    )  # the runs table of lmo-dp's URL
    experiment_id = tracker.set_view(config.experiment, view)
    with tracker.run(config.experiment, run_name=config.name or path.stem, tags=tags) as run_id:
        tracker.log_params(run_id, trial_params(config))
        tracker.log_text(run_id, path.read_text(), "config.yaml")
        result, summary = train_and_log(tracker, run_id, config, dataset=dataset, checkpoints=checkpoints)
    return result, {**summary, "runs_url": runs_url(tracker.uri, experiment_id), "ui_command": ui_command(tracker.uri)}


def _check_plan(config: Any, n_train: int) -> None:
    """What the data and the config decide, before a tracked run is created: the step plan,
    ``privacy.delta`` against the training-set size, the accountant's supported steps."""
    from noise_search.accountants import check_steps_supported
    from trainers.budget import check_delta, make_step_plan

    t = config.training
    plan = make_step_plan(n_train, t.batch_size, epochs=t.epochs, steps=t.steps)
    if config.privacy.mechanism != "none":
        check_delta(config.privacy.delta, n_train, allow=config.privacy.allow_large_delta, warn=False)
        check_steps_supported(config.privacy.accountant, plan.steps, "privacy.accountant")


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
    if r.get("resumed_from_step"):
        lines.append(f"  resumed from a checkpoint after step {r['resumed_from_step']}")
    if r.get("stop_reason"):
        lines.append(f"  {r['stop_reason']}")
    if r.get("model_dir"):
        lines.append(f"  model folder {r['model_dir']} (lmo-dp predict --model {r['model_dir']} --text TEXT)")
    if r.get("mlflow_run_id"):
        from orchestrator.mlflow_view import browse_lines

        lines.append(f"  MLflow run {r['mlflow_run_id']}")
        if r.get("model_uri"):
            lines.append(f"  model {r['model_uri']} (lmo-dp predict --model {r['model_uri']} --text TEXT)")
        lines += [f"  {line}" for line in browse_lines(r["runs_url"], r.get("ui_command"))]
    return "\n".join(lines)
