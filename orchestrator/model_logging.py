"""Trained models as MLflow logged models: written by the trial, kept or pruned by the sweep.

**Who logs.** The trial itself, from wherever it runs (a Ray worker on another node, say): after
its run's results, :func:`log_trial_model` saves the trained weights
(:func:`trainers.saved_model.save_trained`) as an MLflow ``pyfunc`` model
(:class:`orchestrator.pyfunc_model.LmoDpClassifier`) and uploads it to the tracking store as a
logged model named ``model`` whose source run is the trial's run (so ``runs:/<run_id>/model`` and
``models:/<model_id>`` both load it). Nothing depends on the driver's disk.

**What it carries.** The MLmodel ``metadata`` (and the logged model's params) hold the trial's
privacy guarantee (:func:`privacy_record`): target and spent epsilon (a proven upper bound),
delta, accountant, mechanism and noise parameters, clip, ``q``, ``T``, the trial key and the
metrics, plus a ``selection`` note.

**Which are kept** (``training.save_model``): ``none`` logs nothing; ``all`` keeps every finished
trial's model; ``best`` (the default) keeps one model per (target, mechanism) cell: the sweep's
driver, once every trial has finished, runs :func:`keep_cell_models` -- the selection
(:func:`orchestrator.selection.select_groups`) picks the cell's configuration by mean validation
score, the model kept is that configuration's trial with the best validation score (ties: the
lowest seed), it is tagged ``lmodp.selected = true`` with the cell and how it was chosen, and every
other model of the sweep is deleted. This is idempotent: a resumed sweep reuses finished trials
with their models (a finished trial is never trained or logged twice), and models of attempts
that did not finish (a worker that died after logging) are deleted at the end like any model not
kept.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.tracking import PARENT_TAG, TRIAL_KEY_TAG, Tracker

#: the logged model's name under its run: ``runs:/<run_id>/model``
MODEL_NAME = "model"
#: tags of a logged model
MODEL_PARENT_TAG = "lmodp.parent_run_id"
SELECTED_TAG = "lmodp.selected"
CELL_TAG = "lmodp.cell"
SELECTION_TAG = "lmodp.selection"

SINGLE_TRIAL_NOTE = "a single trial (lmo-dp train), not chosen among others: its epsilon covers this model"
SWEEP_TRIAL_NOTE = (
    "one trial of a sweep; the model a sweep keeps for a cell was chosen by validation scores on private "
    "data among the cell's trials, a further release its per-trial epsilon does not cover (a tuning section "
    f"covers it): the logged model's {SELECTION_TAG} tag says how it was chosen"
)
REFERENCE_NOTE = "non-private reference: no privacy guarantee"


def wants_model(trial_cfg: Any, result: Any) -> bool:
    """Whether a finished trial logs its model: ``training.save_model`` is not ``none``, the trial
    holds its trained model (rank 0) and early stopping did not prune it (a pruned trial was never
    evaluated on the test split)."""
    return (
        trial_cfg.training.save_model != "none"
        and getattr(result, "trained", None) is not None
        and result.pruned_at_epoch is None
    )


def privacy_record(result: Any) -> dict[str, Any]:
    """The privacy guarantee of a trial's model: what its epsilon covers and how it was computed."""
    p = result.config.privacy
    private = result.mechanism is not None
    return {
        "mechanism": p.mechanism,
        "epsilon_target": p.epsilon if private else None,
        "epsilon_spent": result.epsilon,  # the accountant's proven upper bound
        "epsilon_planned": None if result.privacy_plan is None else result.privacy_plan.planned.epsilon,
        "delta": p.delta if private else None,
        "accountant": p.accountant if private else None,
        "noise": None if result.mechanism is None else result.mechanism.to_dict(),
        "noise_source": result.noise_source,
        "clip": p.clip,
        "sample_rate": result.sample_rate,
        "steps": result.steps,
        "planned_steps": result.planned_steps,
        "train_size": result.dataset.get("train_size"),
    }


def _flat(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    return {} if value is None else {prefix: str(value)}


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("lmo-dp", "torch", "transformers", "peft", "safetensors", "pandas"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name}=={version(name)}")
    return out


def model_metadata(result: Any, *, trial_key: str | None, run_id: str | None, note: str) -> dict[str, Any]:
    """The MLmodel ``metadata`` of a trial's model (``lmodp`` key)."""
    summary_model = result.model or {}
    return {
        "lmodp": {
            "trial_key": trial_key,
            "mlflow_run_id": run_id,
            "task": result.config.model.task,
            "trainable": result.config.model.trainable_kind,
            "base_model": summary_model.get("path"),
            "labels": result.dataset.get("label_names"),
            "seed": result.config.training.seed,
            "privacy": privacy_record(result),
            "metrics": {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
            "dataset_sha256": result.dataset.get("sha256"),
            "selection": note,
        }
    }


def write_model_folder(result: Any, dest: str | Path, metadata: dict[str, Any], mlflow_model: Any = None) -> Path:
    """Save the trial's model as an MLflow ``pyfunc`` model folder ``dest`` (must not exist)."""
    import mlflow.pyfunc

    from orchestrator.pyfunc_model import ARTIFACT_KEY, CODE
    from trainers.saved_model import save_trained

    with tempfile.TemporaryDirectory(prefix="lmodp-model-") as scratch:
        weights = Path(scratch) / "lmodp-model"
        save_trained(result, weights)
        code = Path(scratch) / "lmodp_classifier.py"
        code.write_text(CODE)
        mlflow.pyfunc.save_model(
            str(dest),
            python_model=str(code),
            artifacts={ARTIFACT_KEY: str(weights)},
            mlflow_model=mlflow_model,
            pip_requirements=_requirements(),
            metadata=metadata,
        )
    return Path(dest)


def log_trial_model(tracker: Tracker, run_id: str, result: Any) -> dict[str, str]:
    """Log the trial's trained model as logged model ``model`` of run ``run_id``; returns
    ``{"model_uri": "runs:/<run_id>/model", "model_id": "m-..."}``. A failure to upload leaves
    the logged model FAILED (a sweep deletes it at the end) and is raised."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    run = tracker.get_run(run_id)
    tags = run.data.tags
    key, parent = tags.get(TRIAL_KEY_TAG), tags.get(PARENT_TAG)
    private = result.mechanism is not None
    note = REFERENCE_NOTE if not private else (SWEEP_TRIAL_NOTE if parent else SINGLE_TRIAL_NOTE)
    metadata = model_metadata(result, trial_key=key, run_id=run_id, note=note)
    model_tags = {
        "lmodp.trial_key": key or "",
        "lmodp.mechanism": result.config.privacy.mechanism,
        "lmodp.epsilon_target": f"{result.config.privacy.epsilon:g}" if private else "none",
        **({MODEL_PARENT_TAG: parent} if parent else {}),
    }
    client = tracker.client
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        tags=model_tags,
        params=_flat("privacy", privacy_record(result)),
        model_type=f"lmo-dp {result.config.model.task}",
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=result.steps)])
        with tempfile.TemporaryDirectory(prefix="lmodp-mlflow-model-") as scratch:
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_id=logged.model_id,
                model_uuid=logged.model_id,
                metadata=metadata,
            )
            folder = write_model_folder(result, Path(scratch) / MODEL_NAME, metadata, mlflow_model)
            client.log_model_artifacts(logged.model_id, str(folder))
    except BaseException:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return {"model_uri": f"runs:/{run_id}/{MODEL_NAME}", "model_id": logged.model_id}


def sweep_models(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every logged model of the sweep whose parent run is ``parent_run_id`` (all pages)."""
    out: list[Any] = []
    token = None
    while True:
        page = tracker.client.search_logged_models(
            [experiment_id],
            filter_string=f"tags.`{MODEL_PARENT_TAG}` = '{parent_run_id}'",
            max_results=100,
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def chosen_trial(selected: Any, group: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The trial of the selected configuration whose model a cell keeps: the best validation
    score (the selection's metric), ties to the lowest seed."""
    higher = selected.metric == "accuracy"
    val = f"val_{selected.metric}"

    def rank(row: Mapping[str, Any]) -> tuple[float, float]:
        v = row.get(val)
        score = float("-inf") if v is None else (float(v) if higher else -float(v))
        return score, -float(row.get("seed") or 0)

    return max(group, key=rank)


def selection_note(selected: Any, group: Sequence[Mapping[str, Any]]) -> str:
    """How the cell's model was chosen, and what its epsilon covers."""
    if selected.epsilon_target is None:
        return REFERENCE_NOTE
    metric = selected.metric
    if selected.epsilon_tuned is not None:
        return (
            f"chosen by validation {metric} among the K = {selected.runs} runs of a tuning section; "
            f"epsilon {selected.epsilon_tuned:.6g} (tuning included) covers the choice"
        )
    if selected.configurations == 1 and len(group) == 1 and selected.epsilon_selection is None:
        return "the cell's only trial: its epsilon covers this model"
    seeds = "its only seed" if len(group) == 1 else f"its best of {len(group)} seeds"
    text = (
        f"chosen on private validation data: the configuration with the best mean validation {metric} among "
        f"{selected.configurations}, then {seeds}; the choice is a further release the per-trial epsilon does "
        "not cover"
    )
    if selected.epsilon_selection is not None:
        text += f" (early stopping's selection epsilon: {selected.epsilon_selection:.6g})"
    return text


def keep_cell_models(
    tracker: Tracker,
    experiment_id: str,
    parent_run_id: str,
    groups: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
    trials: Sequence[Mapping[str, Any]],
    save_model: str,
) -> list[dict[str, Any]]:
    """Tag the model of every cell's chosen trial and delete the sweep's models not kept
    (``best``: all but the chosen; ``all``: those of runs that did not finish). Returns one entry
    per cell: ``epsilon_target``, ``mechanism``, ``key``, ``mlflow_run_id``, ``model_uri``
    (``runs:/...``, None when the trial has no model), ``model_id`` and ``selection``."""
    if save_model == "none":
        return []
    models = sweep_models(tracker, experiment_id, parent_run_id)
    by_run: dict[str, Any] = {}
    for m in sorted(models, key=lambda m: m.creation_timestamp or 0):
        if str(m.status).endswith("READY"):
            by_run[m.source_run_id] = m  # the newest ready model of a run
    out: list[dict[str, Any]] = []
    chosen_runs: set[str] = set()
    for selected, group in groups:
        row = chosen_trial(selected, group)
        run_id = row.get("mlflow_run_id")
        model = by_run.get(run_id) if run_id else None
        note = selection_note(selected, group)
        cell = (
            "non-private"
            if selected.epsilon_target is None
            else f"eps_{selected.epsilon_target:g}.{selected.mechanism}"
        )
        if model is not None:
            chosen_runs.add(run_id)
            tracker.client.set_logged_model_tags(
                model.model_id, {SELECTED_TAG: "true", CELL_TAG: cell, SELECTION_TAG: note}
            )
        out.append({
            "epsilon_target": selected.epsilon_target,
            "mechanism": selected.mechanism,
            "key": row.get("key"),
            "mlflow_run_id": run_id,
            "model_uri": None if model is None else f"runs:/{run_id}/{MODEL_NAME}",
            "model_id": None if model is None else model.model_id,
            "selection": note,
        })  # fmt: skip
    if save_model == "best":
        keep = {by_run[r].model_id for r in chosen_runs}
    else:
        finished = {t.get("mlflow_run_id") for t in trials if t.get("status") == "finished"}
        keep = {m.model_id for r, m in by_run.items() if r in finished}
    for m in models:
        if m.model_id not in keep:
            tracker.client.delete_logged_model(m.model_id)
    return out
