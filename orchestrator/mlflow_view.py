"""What the MLflow UI shows when a researcher opens an lmo-dp experiment, and the URL that opens it.

MLflow 3's UI opens an experiment on its GenAI overview (traces, latency, tokens) unless the URL
asks for the training workflow (``workflowType=machine_learning``; the experiment tag
``mlflow.experimentKind`` is not read by MLflow 3.17's UI). Its runs table shows Run Name, Created,
Dataset, Duration, Source and Models by default, and nests child runs under their parent, closed.

A *shared view* changes that: the experiment tag ``mlflow.sharedViewState.<KEY>`` holds a JSON view
state (search filter, sort, selected columns, column order and widths), which the UI applies when
the URL names the key (``viewStateShareKey=<KEY>``) on the experiment's ``/runs`` route (on the
experiment's bare route the UI redirects to ``/runs`` and drops the key). lmo-dp writes such a view,
under the key :data:`VIEW_KEY`, on every experiment it logs into (:meth:`Tracker.set_view
<orchestrator.tracking.Tracker.set_view>`) and prints :func:`runs_url`:

* sweeps and ``lmo-dp train``: the trial runs only, flat, sorted by target epsilon, with the target
  epsilon, mechanism, seed and the hyperparameters the grid varies, then ``epsilon_spent`` (and
  ``epsilon_lower_bound`` with an audit), the validation and the test metric; the Run Name column
  is as wide as the longest trial key (:func:`trials_view`);
* searches: the search runs with their settings, candidates evaluated and seconds (:func:`search_view`).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

#: the share key of lmo-dp's view, in the experiment tag and in the URL
VIEW_KEY = "lmodp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: where ``mlflow ui`` serves by default (``--host 127.0.0.1 --port 5000``)
LOCAL_UI = "http://127.0.0.1:5000"
RUN_NAME_COLUMN = "attributes.`Run Name`"
#: width of the Run Name column (pixels) when the run names are not known in advance; MLflow's is 190
DEFAULT_RUN_NAME_WIDTH = 260


def param(name: str) -> str:
    """The UI's column id of param ``name``."""
    return f"params.`{name}`"


def metric(name: str) -> str:
    """The UI's column id of metric ``name``."""
    return f"metrics.`{name}`"


def run_name_width(names: Iterable[str]) -> int:
    """Pixels the Run Name column needs to show the longest of ``names`` whole: 6.5 px per
    character of MLflow's 13 px font (6.1 measured in Chromium for trial keys) plus 44 px for the
    colour dot and padding; 190 (MLflow's default) to 480. Without names, :data:`DEFAULT_RUN_NAME_WIDTH`."""
    longest = max((len(n) for n in names), default=0)
    if longest == 0:
        return DEFAULT_RUN_NAME_WIDTH
    return max(190, min(480, math.ceil(44 + 6.5 * longest)))


def _view(search_filter: str, order_by: str, ascending: bool, columns: Sequence[str], width: int) -> dict[str, Any]:
    return {
        "searchFilter": search_filter,
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "selectedColumns": list(columns),
        "columnOrder": [RUN_NAME_COLUMN, *columns],
        "columnWidths": {RUN_NAME_COLUMN: width},
    }


def trials_view(
    *,
    task: str = "classification",
    varied: Sequence[str] = (),
    audit: bool = False,
    run_names: Iterable[str] = (),
) -> dict[str, Any]:
    """The runs table of a sweep's or ``lmo-dp train``'s experiment: its trial runs (tag
    ``lmodp.kind = trial``; a sweep's parent run is left out: its page is printed apart), by target
    epsilon (the non-private reference last).

    ``task``: ``classification`` (accuracy columns) or ``causal-lm`` (perplexity); ``varied``: the
    trial params besides target, mechanism and seed that differ between trials (e.g.
    ``training.learning_rate``); ``audit``: add ``epsilon_lower_bound``; ``run_names``: the trial
    keys, to size the Run Name column."""
    score = "accuracy" if task == "classification" else "perplexity"
    columns = [
        param("privacy.epsilon"),
        param("privacy.mechanism"),
        param("training.seed"),
        *(param(p) for p in varied),
        metric("epsilon_spent"),
        *([metric("epsilon_lower_bound")] if audit else []),
        metric(f"val_{score}"),
        metric(f"test_{score}"),
    ]
    return _view("tags.`lmodp.kind` = 'trial'", metric("epsilon_target"), True, columns, run_name_width(run_names))


def search_view() -> dict[str, Any]:
    """The runs table of ``lmo-dp search``'s experiment: its searches, newest first, with their
    targets, delta, q, T, objective, space, strategy and accountants, candidates evaluated and seconds."""
    columns = [
        *(
            param(p)
            for p in ("targets", "delta", "sample_rate", "steps", "objective", "space", "strategy", "lmo_accountant")
        ),
        metric("evaluated"),
        metric("seconds"),
    ]
    return _view("tags.`lmodp.kind` = 'search'", "attributes.start_time", False, columns, DEFAULT_RUN_NAME_WIDTH)


def view_text(view: dict[str, Any]) -> str:
    """The tag value: the view as compact JSON with sorted keys (equal views, equal text)."""
    return json.dumps(view, sort_keys=True, separators=(",", ":"))


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def runs_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table with lmo-dp's view: on the tracking server ``tracking_uri``, or,
    for a local store, where ``mlflow ui`` serves it (:data:`LOCAL_UI`, see :func:`ui_command`)."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves a local store's UI at :data:`LOCAL_UI` (None for a tracking server)."""
    if is_server(tracking_uri):
        return None
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} --port 5000"


def browse_lines(url: str, command: str | None) -> list[str]:
    """Where to browse the runs, for a command's human output: the runs table's ``url``, after the
    ``command`` that serves a local store (:func:`ui_command`; None for a tracking server)."""
    if command is None:
        return [f"browse the runs: {url}"]
    return [f"browse the runs: {command}", f"  then open {url}"]


#: trial spec fields a grid or a tuning space may vary, and the trial param that records each
_VARIED = (
    ("learning_rate", "training.learning_rate"),
    ("clip", "privacy.clip"),
    ("epochs", "training.epochs"),
    ("trainable", "model.trainable"),
)


def sweep_view(cfg: Any, specs: Sequence[Any]) -> dict[str, Any]:
    """:func:`trials_view` of a sweep (a :class:`~orchestrator.sweep_config.SweepConfig`) over its
    trial specs (:class:`~orchestrator.sweep.specs.TrialSpec`): the hyperparameters that take more
    than one value among them are columns, and the Run Name column fits their keys."""
    varied = [name for field, name in _VARIED if len({getattr(s, field) for s in specs} - {None}) > 1]
    return trials_view(
        task=cfg.model.task, varied=varied, audit=cfg.audit is not None, run_names=[s.key for s in specs]
    )
