"""MLflow tracking for searches, trials and sweeps.

Uses an explicit :class:`mlflow.MlflowClient` (no fluent global "active run"), so it is safe
in Ray workers and never leaves a run open behind the caller's back: :meth:`Tracker.run` is
a context manager that ends the run FINISHED, or FAILED/KILLED when the body raises.

Where runs go:

* ``MLFLOW_TRACKING_URI`` when set (a server such as ``http://127.0.0.1:5000``, or any URI
  MLflow accepts);
* otherwise a local SQLite store ``./mlruns-lmodp/mlflow.db`` with artifacts under
  ``./mlruns-lmodp/artifacts`` (MLflow 3 deprecates the plain ``./mlruns`` file store).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from noise_search.errors import InputError
from orchestrator.tracking_checks import (  # noqa: F401 - re-exported: callers import them from here
    DEFAULT_DIR,
    TrackingError,
    _uri_field,
    check_artifact_store,
    check_server,
    check_tracking,
    check_tracking_scheme,
    tracking_configured,
)

log = logging.getLogger(__name__)


#: Tag carrying the Ray Tune trial id (for reference; Tune ids change when a sweep restarts).
TRIAL_TAG = "lmodp.trial_id"
#: Tag carrying a sweep trial's own key (target, mechanism, seed, hyperparameters); a resumed
#: sweep finds its finished work under the parent run by it.
TRIAL_KEY_TAG = "lmodp.trial_key"
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "lmodp.kind"
#: MLflow's kind of experiment. Ours are model-training experiments; MLflow 3.17's UI does not read
#: the tag (the URL of :func:`orchestrator.mlflow_view.runs_url` opens the runs table), MLflow's
#: other clients and versions may.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _quote(value: str) -> str:
    """A value as an MLflow search-filter string literal.

    MLflow strips the quotes of a literal and unescapes nothing, so a value is quoted with the
    quote character it does not contain; one containing both cannot be searched for.
    """
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"tag value {text!r} contains both quote characters; MLflow cannot search for it")


def tag_filter(tags: Mapping[str, str]) -> str:
    """``tags.`k1` = 'v1' and tags.`k2` = 'v2'`` with every value safely quoted ('' for no tags)."""
    for key in tags:
        if "`" in key:
            raise ValueError(f"tag name {key!r} cannot contain a backquote")
    return " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())


def local_store_dir(base: str | os.PathLike[str] | None = None) -> Path:
    return Path(base or Path.cwd()).resolve() / DEFAULT_DIR


def tracking_uri(base: str | os.PathLike[str] | None = None) -> str:
    """The tracking URI lmo-dp uses: ``MLFLOW_TRACKING_URI`` or the local SQLite default."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{local_store_dir(base) / 'mlflow.db'}"


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        text = "null" if v is None else str(v)
        out[str(k)] = text if len(text) <= 6000 else text[:5997] + "..."
    return out


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of tracking server ``uri`` (None for a local store, which
    has no URL until ``mlflow ui`` serves it)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class Tracker:
    """A thin, explicit-client wrapper over MLflow for lmo-dp's runs.

    ``create=False`` refuses (:class:`~noise_search.errors.InputError`) to create the local
    default store when it does not exist yet (a read-only command has nothing to read then). An
    ``http(s)`` tracking URI must answer within the connect timeout (:func:`check_server`).
    """

    def __init__(self, uri: str | None = None, *, create: bool = True) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri or tracking_uri()
        check_tracking_scheme(self.uri)
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///") :])
            if not create and not db.is_file():
                raise InputError(f"{_uri_field()}: no MLflow tracking store at {db} (nothing has been tracked yet)")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{_uri_field()}: cannot create {db.parent}: {exc.strerror or exc}") from exc
            if not os.access(db.parent, os.W_OK):
                raise InputError(f"{_uri_field()}: {db.parent} is not writable")
        elif self.uri.startswith(("http://", "https://")):
            check_server(self.uri)
        self._mlflow = mlflow
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as exc:  # MLflow raises many types for an unreachable store
            raise TrackingError(f"MLflow tracking store {self.uri} is not usable: {exc}") from exc

    # --- experiments --------------------------------------------------------------------
    def set_view(self, experiment: str, view: Mapping[str, Any]) -> str:
        """Make ``view`` (:mod:`orchestrator.mlflow_view`) the runs table that lmo-dp's URL opens
        for ``experiment``: its shared view state tag, written when it is missing or differs.
        Returns the experiment's id."""
        from orchestrator.mlflow_view import VIEW_TAG, view_text

        exp_id = self.experiment_id(experiment)
        text = view_text(dict(view))
        try:
            if self.client.get_experiment(exp_id).tags.get(VIEW_TAG) != text:
                self.client.set_experiment_tag(exp_id, VIEW_TAG, text)
        except Exception as exc:
            raise TrackingError(f"cannot tag MLflow experiment {experiment!r} at {self.uri}: {exc}") from exc
        return exp_id

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (with a local artifact folder if local) if needed,
        and tagged as a model-training experiment for the MLflow UI."""
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                if EXPERIMENT_KIND_TAG not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return exp.experiment_id
            location = None
            if self.uri.startswith("sqlite:///"):
                store = Path(self.uri[len("sqlite:///") :]).parent
                location = (store / "artifacts").as_uri()
            return self.client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception as exc:
            raise TrackingError(f"cannot open MLflow experiment {name!r} at {self.uri}: {exc}") from exc

    # --- runs -----------------------------------------------------------------------------
    def start_run(
        self,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        from orchestrator.provenance import provenance_tags

        all_tags = {**provenance_tags(), **dict(tags or {})}  # who, where, which code (caller's tags win)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        # Against a server MLflow prints "View run ... at: URL" on stdout; stdout is for --json results.
        with contextlib.redirect_stdout(sys.stderr):
            self.client.set_terminated(run_id, status=status)

    @contextlib.contextmanager
    def run(
        self,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[str]:
        """Open (or re-open ``run_id``) and always close a run: FINISHED, or FAILED/KILLED."""
        rid = run_id or self.start_run(experiment, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
        if run_id:
            self.reopen_run(run_id)
        try:
            yield rid
        except KeyboardInterrupt:
            self.end_run(rid, "KILLED")
            raise
        except BaseException:
            self.end_run(rid, "FAILED")
            raise
        else:
            self.end_run(rid, "FINISHED")

    def find_runs(
        self,
        experiment: str,
        tags: Mapping[str, str] | None = None,
        *,
        newest_first: bool = True,
        max_results: int | None = None,
        include_deleted: bool = False,
        page_size: int = 1000,
    ) -> list[Any]:
        """Runs of ``experiment`` whose tags equal ``tags`` (all of them), every page of them.

        Values are quoted safely (:func:`tag_filter`): a value cannot change the filter.
        """
        from mlflow.entities import ViewType

        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        view = ViewType.ALL if include_deleted else ViewType.ACTIVE_ONLY
        out: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [exp.experiment_id],
                filter_string=tag_filter(tags or {}),
                run_view_type=view,
                order_by=["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"],
                max_results=min(page_size, max_results - len(out)) if max_results else page_size,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token or (max_results and len(out) >= max_results):
                return out

    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def experiment_id_of(self, name: str) -> str | None:
        """Id of an existing experiment ``name`` (None if there is none; nothing is created)."""
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else exp.experiment_id

    def reopen_run(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed sweep's parent run)."""
        self.client.update_run(run_id, status="RUNNING")

    def fail_open_children(self, experiment: str, parent_run_id: str) -> int:
        """End every child run of ``parent_run_id`` still RUNNING as FAILED (their trials are
        over: a worker that died for good never closed its run); returns how many."""
        stale = [r for r in self.find_runs(experiment, {PARENT_TAG: parent_run_id}) if r.info.status == "RUNNING"]
        for run in stale:
            self.client.set_tag(run.info.run_id, "lmodp.status", "error")
            self.end_run(run.info.run_id, "FAILED")
        return len(stale)

    def discard_run(self, run_id: str) -> None:
        """Close (KILLED) an unfinished run and delete it (an abandoned attempt)."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.end_run(run_id, "KILLED")
        self.client.delete_run(run_id)

    def download_artifact(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> str:
        return self.client.download_artifacts(run_id, path, str(dst))

    def log_metric_batch(self, run_id: str, metrics: list[Any]) -> None:
        """Pre-built ``mlflow.entities.Metric`` objects (steps and timestamps their own)."""
        self.client.log_batch(run_id, metrics=metrics)

    # --- logging --------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _clean_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, step or 0)
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_artifact(self, run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Every file under ``folder`` (recursively)."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_dict(self, run_id: str, data: Any, name: str) -> None:
        self.client.log_dict(run_id, data, name)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)
