"""Sweep reports from MLflow: PNG plots and one HTML page.

:func:`write_report` reads a sweep's parent run and its child (trial) runs and writes into
``out_dir``:

* ``utility.png`` -- the headline metric (test accuracy, or perplexity for a causal LM)
  against the target epsilon, one line per mechanism: for each point the configuration
  (learning rate x clip) with the best mean *validation* metric (:mod:`orchestrator.selection`),
  its mean test metric and min-max bars over seeds; markers of different mechanisms at the same
  epsilon are set slightly apart so none hides another. The non-private reference (best
  configuration, mean and min-max band) and the majority-class baseline are horizontal lines;
* ``noise.png`` -- the noise search's objective (e.g. E|Z| per coordinate, C = 1) against the
  target epsilon for the families the sweep ran, from the parent run's ``search/search.json``
  (and a tuned sweep's noise from ``tuning.json``);
* ``privacy.png`` -- epsilon spent (the accountant's upper bound) against the target for
  every trial, with the audit's empirical lower bound where a trial was audited (and a tuned
  sweep's per-run and tuned epsilon); ``plots.json`` holds both plots' numbers;
* ``privacy.csv`` / ``privacy.json`` -- what each (target, mechanism) cell guarantees
  (:mod:`orchestrator.report_privacy`);
* ``trials.csv`` and ``index.html`` -- the privacy table, the selected configuration per point, a
  table of every trial with its test score (``test_accuracy``), trainable set and recipe (learning
  rate, clip, batch size, epochs, optimizer), and the plots, inlined as data URIs: the page is one
  self-contained file that renders in the MLflow artifact viewer or from S3, and fits a
  1,400-pixel window (tables scroll in their own boxes; :mod:`orchestrator.report_page`).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import tempfile
from pathlib import Path
from typing import Any

from noise_search.errors import InputError, LmoDpError
from noise_search.mechanisms import LMO
from orchestrator.report_page import STYLE, TABLE_SCRIPT
from orchestrator.report_plots import plot_noise, plot_privacy, plot_utility
from orchestrator.report_privacy import (
    lower_bound_text,
    privacy_cells,
    privacy_fields,
    privacy_html,
    upper_bound_text,
    write_privacy,
)
from orchestrator.report_statistics import analyse_sweep, cells_html, comparisons_html, write_verdicts
from orchestrator.selection import Selected, headline_metric, select, with_selection_bound, with_tuning
from orchestrator.tracking import KIND_TAG, PARENT_TAG, Tracker


def find_parent_run(tracker: Tracker, experiment: str, parent_run_id: str | None = None) -> Any:
    """The sweep's parent run: ``parent_run_id``, else the newest sweep run of ``experiment``."""
    exp_id = tracker.experiment_id_of(experiment)
    if exp_id is None:
        raise InputError(f"--experiment: no MLflow experiment named {experiment!r} at {tracker.uri}")
    if parent_run_id:
        try:
            run = tracker.get_run(parent_run_id)
        except Exception as exc:  # MLflow raises its own exception type for an unknown id
            raise InputError(f"--run-id: no MLflow run {parent_run_id!r} at {tracker.uri}") from exc
        if run.info.experiment_id != exp_id or run.data.tags.get(KIND_TAG) != "sweep":
            raise InputError(f"--run-id: {parent_run_id} is not a sweep run of experiment {experiment!r}")
        return run
    runs = tracker.find_runs(experiment, {KIND_TAG: "sweep"}, max_results=1)
    if not runs:
        raise InputError(f"--experiment: {experiment!r} has no sweep runs (run lmo-dp sweep first)")
    return runs[0]


def trial_rows(tracker: Tracker, parent: Any) -> list[dict[str, Any]]:
    """One flat row per child run of ``parent``."""
    experiment = tracker.experiment_name(parent.info.experiment_id)
    runs = tracker.find_runs(experiment, {PARENT_TAG: parent.info.run_id})
    rows = []
    for run in runs:
        p, m, tags = run.data.params, run.data.metrics, run.data.tags
        rows.append(
            {
                "key": p.get("trial.key", run.info.run_name),
                # the arm: a variant's name (tagged by the sweep), else the mechanism trained
                "mechanism": tags.get("lmodp.mechanism") or p.get("privacy.mechanism"),
                "epsilon_target": _float(p.get("privacy.epsilon")),
                "epsilon": m.get("epsilon_spent"),
                "epsilon_lower_bound": m.get("epsilon_lower_bound"),
                "seed": _int(p.get("training.seed")),
                "tuning_run": _int(p.get("tuning.run")),
                "trainable": _trainable(p),
                "learning_rate": _float(p.get("training.learning_rate")),
                "clip": _float(p.get("privacy.clip")),
                "batch_size": _int(p.get("training.batch_size")),
                "epochs": _float(p.get("training.epochs")),
                "optimizer": _str(p.get("training.optimizer")),
                "recipe": _str(p.get("recipe.name")),
                "status": tags.get("lmodp.status") or run.info.status.lower(),
                "accuracy": m.get("accuracy"),
                "val_accuracy": m.get("val_accuracy"),
                "perplexity": m.get("perplexity"),
                "val_perplexity": m.get("val_perplexity"),
                "steps": m.get("steps_taken"),
                "mlflow_run_id": run.info.run_id,
                **privacy_fields(p),
            }
        )
    rows.sort(
        key=lambda r: (
            r["epsilon_target"] is None,
            r["epsilon_target"] or 0,
            r["mechanism"] or "",
            r["seed"] or 0,
            r["learning_rate"] or 0,
            r["clip"] or 0,
        )
    )
    return rows


def _trainable(params: dict[str, str]) -> str | None:
    """``head``, ``lora``, ``full``, or ``lora top 1`` from a trial's params."""
    kind = params.get("model.trainable")
    if kind is None:  # runs logged before trainable sets existed
        rank = params.get("model.lora.rank")
        return None if rank is None else ("full" if rank in _NULLS else "lora")
    top = params.get("model.top_layers")
    return f"{kind} top {top}" if top not in (None, *_NULLS) else kind


#: how a null parameter reads back from MLflow
_NULLS = ("null", "None")


def _float(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _int(x: Any) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _str(x: Any) -> str | None:
    return None if x is None or x in _NULLS else str(x)


def search_result(tracker: Tracker, parent: Any) -> dict[str, Any] | None:
    """The parent run's ``search/search.json`` artifact, if any."""
    return _json_artifact(tracker, parent, "search/search.json")


def tuning_result(tracker: Tracker, parent: Any) -> dict[str, Any] | None:
    """The parent run's ``tuning.json`` (a sweep with a tuning section), if any."""
    if "tuning.mean" not in parent.data.params:
        return None
    return _json_artifact(tracker, parent, "tuning.json")


def early_stopping_result(tracker: Tracker, parent: Any) -> dict[str, Any] | None:
    """The parent run's ``early_stopping.json`` (a sweep with an early_stopping section), if any."""
    if "early_stopping.scheduler" not in parent.data.params:
        return None
    return _json_artifact(tracker, parent, "early_stopping.json")


def _json_artifact(tracker: Tracker, parent: Any, path: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracker.download_artifact(parent.info.run_id, path, tmp)
        except Exception:  # absent artifact: MLflow raises various types
            return None
        return json.loads(Path(local).read_text())


class EmptyReportError(LmoDpError):
    """A sweep that did not finish and has no trial results: there is nothing to report."""


def sweep_warnings(parent: Any, rows: list[dict[str, Any]], *, live: bool = False) -> list[str]:
    """What a reader must know before trusting the report: a sweep that did not finish, or
    trials that failed. ``live``: the report is written by the running sweep itself."""
    warnings = []
    status = parent.info.status
    finished = "trials" in parent.data.metrics  # logged by the sweep's last stage only
    if status in ("FAILED", "KILLED") and not finished:
        warnings.append(
            f"the sweep's parent run ended {status} before the sweep finished: results are partial "
            "(rerun lmo-dp sweep with --resume)"
        )
    elif status == "RUNNING" and not live:
        warnings.append(
            "the sweep's parent run is still RUNNING: the sweep is under way or its driver died; results may be partial"
        )
    failed = [r for r in rows if r["status"] in _FAILED]
    if failed:
        keys = ", ".join(str(r["key"]) for r in failed[:5]) + (", ..." if len(failed) > 5 else "")
        warnings.append(f"{len(failed)} trial(s) failed and are missing from the plots: {keys}")
    return warnings


#: trial statuses of runs that produced no result
_FAILED = ("error", "refused", "failed", "killed")


def _fmt(x: Any, column: str = "") -> str:
    """A table cell: floats to 4 significant digits, rounded *up* for upper bounds on epsilon
    (the printed value stays a bound) and *down* for the audit's lower bound."""
    if x is None:
        return ""
    if isinstance(x, float):
        if column in UPPER_BOUNDS:
            return upper_bound_text(x)
        if column == "epsilon_lower_bound":
            return lower_bound_text(x)
        return f"{x:.4g}"
    return str(x)


#: columns holding an accountant's upper bound on epsilon
UPPER_BOUNDS = frozenset({"epsilon", "epsilon_max", "epsilon_per_run", "epsilon_tuned", "epsilon_selection"})


COLUMNS = [
    "key",
    "tuning_run",
    "mechanism",
    "epsilon_target",
    "epsilon",
    "epsilon_lower_bound",
    "seed",
    "trainable",
    "recipe",
    "learning_rate",
    "clip",
    "batch_size",
    "epochs",
    "optimizer",
    "status",
    "accuracy",
    "val_accuracy",
    "perplexity",
    "steps",
    "mlflow_run_id",
]


#: what a column is called on the page and in ``trials.csv`` where its row key says less
LABELS = {"accuracy": "test_accuracy", "perplexity": "test_perplexity"}


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([LABELS.get(c, c) for c in COLUMNS])
        w.writerows([r.get(c) for c in COLUMNS] for r in rows)


SELECTED_COLUMNS = [
    "epsilon_target",
    "mechanism",
    "learning_rate",
    "clip",
    "val_mean",
    "test_mean",
    "test_min",
    "test_max",
    "seeds",
    "configurations",
    "epsilon_max",
]

#: the selected table of a tuned sweep: one run per configuration, no seeds to average
TUNED_COLUMNS = [
    "epsilon_target",
    "mechanism",
    "key",
    "trainable",
    "learning_rate",
    "clip",
    "epochs",
    "val_mean",
    "test_mean",
    "runs",
    "epsilon_per_run",
    "epsilon_tuned",
    "tuning_accountant",
    "mlflow_run_id",
]


#: the selected table of a sweep with early stopping: the grid's columns and the selection's epsilon
EARLY_STOPPING_COLUMNS = [*SELECTED_COLUMNS, "runs", "epsilon_per_run", "epsilon_selection"]


def _selected_html(
    selected: list[Selected],
    majority: float | None,
    tuning: dict[str, Any] | None = None,
    early: dict[str, Any] | None = None,
) -> str:
    if not selected:
        return ""
    metric = selected[0].metric
    columns = TUNED_COLUMNS if tuning is not None else EARLY_STOPPING_COLUMNS if early else SELECTED_COLUMNS
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for s in selected:
        row = s.to_dict()
        row["epsilon_target"] = "non-private" if s.epsilon_target is None else s.epsilon_target
        body.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c), c))}</td>" for c in columns) + "</tr>")
    base = "" if majority is None else f" The majority-class baseline scores {majority:.4g} on the test split."
    if early is not None:
        text = (
            f"Early stopping (ASHA: first rung after {early['grace_epochs']} epoch(s), reduction factor "
            f"{early['reduction_factor']}; {early['stopped']} trial(s) stopped at a rung, each charged its full "
            f"plan's epsilon). For each target epsilon and mechanism, the (learning rate, clip) with the "
            f"best mean validation {metric} over the seeds that ran to the end; test {metric} as mean, min and max "
            f"over them.{base} The stopping compares trials, so the returned configuration is covered only by "
            "epsilon_selection: all 'runs' trials of the cell composed, each at its full plan (RDP accountant; "
            "docs/privacy.md section 8); epsilon_per_run is one trial's."
        )
    elif tuning is None:
        text = (
            f"For each target epsilon and mechanism, the (learning rate, clip) with the best mean validation {metric} "
            f"over seeds; test {metric} as mean, min and max over the same seeds.{base} Each trial's epsilon covers "
            "that trial only: picking the best trial of this grid on private validation data is not covered by the "
            "per-trial epsilon. Add a tuning section to the sweep for an epsilon that covers the selection "
            "(docs/privacy.md section 7)."
        )
    else:
        shape = tuning["shape"]
        law = f"{tuning['distribution']}, mean {tuning['mean']:g}" + (
            "" if isinstance(shape, str) else f", shape {shape:g}"
        )
        noise = (
            "each run's noise was set so that the selected run meets the target"
            if tuning["noise"] == "selected"
            else "each run's noise meets the target on its own, so the selected run's epsilon is the larger "
            "epsilon_tuned"
        )
        text = (
            f"Private hyperparameter selection: for each target epsilon and mechanism the sweep drew a random number "
            f"of runs ({law}; 'runs' is the number drawn), each with hyperparameters drawn at random, and returns "
            f"the run with the best validation {metric}; its test {metric} is shown.{base} epsilon_tuned is the "
            f"epsilon of the returned run, the choice included (Papernot and Steinke 2022, RDP accountant): the "
            f"number the target bounds; epsilon_per_run is the most any one run of the space can spend alone (its "
            f"longest plan); each trial's own epsilon in the trials table is what that run spent, at most "
            f"epsilon_per_run; {noise}."
        )
    return f"""<h2>Selected configuration per target</h2>
<p>{html.escape(text)}</p>
<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>
{"".join(body)}
</tbody></table></div>
"""


def provenance_line(tags: dict[str, str]) -> str:
    """Who ran the sweep, where, with which code and config (the parent run's provenance tags)."""
    commit = tags.get("mlflow.source.git.commit")
    code = f"git {commit[:12]}" if commit else "no git checkout"
    if commit and tags.get("lmodp.git_dirty") == "true":
        code += " with uncommitted changes"
    parts = [
        f"run by {tags.get('mlflow.user', 'unknown')} on {tags.get('lmodp.host', 'unknown')}",
        f"lmo-dp {tags.get('lmodp.version', 'unknown')} ({code})",
        f"config sha256 {tags.get('lmodp.config_sha256', 'unknown')[:16]}",
    ]
    if tags.get("lmodp.versions"):
        parts.append(tags["lmodp.versions"])
    return "; ".join(parts)


def _provenance_html(tags: dict[str, str]) -> str:
    return f'<p class="provenance">{html.escape(provenance_line(tags))}</p>'


def _data_uri(png: Path) -> str:
    """The PNG inlined, so the page renders wherever it is opened on its own (the MLflow artifact
    viewer, a browser on an S3 object, a mail attachment)."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, mechanism): trials, finished and failed counts, the best validation and test
    metric, the largest epsilon spent and the mean training steps -- the page's overview when a
    sweep has hundreds of trials."""
    metric, higher = headline_metric(rows) if rows else ("accuracy", True)
    best = max if higher else min
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("epsilon_target"), r.get("mechanism")), []).append(r)
    out = []
    for (eps, mech), group in sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1] or "")):
        done = [g for g in group if g.get(metric) is not None]
        vals = [g[f"val_{metric}"] for g in done if g.get(f"val_{metric}") is not None]
        spent = [g["epsilon"] for g in group if g.get("epsilon") is not None]
        out.append(
            {
                "epsilon_target": "non-private" if eps is None else eps,
                "mechanism": mech,
                "trials": len(group),
                "finished": len(done),
                "failed": sum(g.get("status") in _FAILED for g in group),
                f"best_val_{metric}": best(vals) if vals else None,
                f"best_test_{metric}": best(g[metric] for g in done) if done else None,
                "epsilon_max": max(spent) if spent else None,
            }
        )
    return out


def _summary_html(rows: list[dict[str, Any]]) -> str:
    table = summary_rows(rows)
    if len(table) < 2 and len(rows) < 20:
        return ""
    cols = list(table[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c), c))}</td>" for c in cols) + "</tr>" for r in table
    )
    return f"""<h2>Summary per target and mechanism</h2>
<p>Counts of every trial, the best validation and test scores among them (the test column is for
orientation only: the selection above uses validation), and the largest epsilon one trial spent.</p>
<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
"""


def _html(
    experiment: str,
    parent: Any,
    rows: list[dict[str, Any]],
    images: list[tuple[Path, str]],
    notes: list[str],
    selected_html: str = "",
    warnings: list[str] | None = None,
    privacy_table: str = "",
) -> str:
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(LABELS.get(c, c))}</th>" for c in cols)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c), c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    figs = "\n".join(
        f'<figure><img src="{_data_uri(path)}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption>'
        "</figure>"
        for path, cap in images
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    warn_html = "".join(f'<p class="warning"><strong>Warning:</strong> {html.escape(w)}</p>' for w in warnings or [])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmo-dp sweep {html.escape(experiment)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{STYLE}</head><body>
<h1>Sweep <code>{html.escape(experiment)}</code></h1>
{warn_html}
{_provenance_html(parent.data.tags)}
<p>Parent MLflow run <code>{html.escape(parent.info.run_id)}</code>, {len(rows)} trials. Epsilon values are the
accountant's proven upper bounds; audit lower bounds (where present) are empirical. A trial's epsilon is what
that trial spent; what a selection among trials spends is stated with the selection.</p>
<ul>{note_html}</ul>
{figs}
{privacy_table}
{selected_html}
{_summary_html(rows)}
<h2>Trials</h2>
<p>Click a column header to sort; type to show only the rows containing the text:
<input id="trials-filter" type="search" placeholder="filter, e.g. laplace or failed"></p>
<div class="scroll" id="trials-scroll"><table id="trials"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
{TABLE_SCRIPT}
</body></html>
"""


def write_report(
    tracker: Tracker,
    experiment: str,
    out_dir: str | Path,
    *,
    parent_run_id: str | None = None,
    live: bool = False,
) -> tuple[Path, list[str]]:
    """Write the report of a sweep into ``out_dir``: (path of ``index.html``, warnings shown on
    its page). ``live``: written by the running sweep (its parent run is RUNNING on purpose).

    Raises :class:`EmptyReportError` (nothing written) for a sweep that did not finish and has
    no trial runs.
    """
    parent = find_parent_run(tracker, experiment, parent_run_id)
    rows = trial_rows(tracker, parent)
    warnings = sweep_warnings(parent, rows, live=live)
    if not rows and parent.info.status != "FINISHED" and not live:
        raise EmptyReportError(
            f"sweep {experiment!r} (parent run {parent.info.run_id}, {parent.info.status}) has no trial runs: "
            "nothing to report; rerun lmo-dp sweep with --resume"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    majority = parent.data.metrics.get("baseline.majority_test_accuracy")
    verdicts = analyse_sweep(rows, parent, _json_artifact(tracker, parent, "statistics.json"))
    write_verdicts(verdicts, out)
    tuning = tuning_result(tracker, parent)
    early = early_stopping_result(tracker, parent)
    images, notes, plots = _plots(rows, out, majority, verdicts["cells"], search_result(tracker, parent), tuning)
    (out / "plots.json").write_text(json.dumps(plots, indent=1))
    privacy = privacy_cells(rows, tuning, early)
    write_privacy(privacy, out)
    chosen = select(rows)
    if early is not None:
        chosen = with_selection_bound(chosen, early["cells"])
    if tuning is not None:
        chosen = with_tuning(chosen, tuning["cells"])
        for c in tuning["cells"]:
            where = f"epsilon {c['epsilon']:g} {c['mechanism']}" if c["epsilon"] is not None else "non-private"
            if c["runs"] == 0:
                notes.append(f"{where}: the tuning law drew no run (K = 0), so nothing is returned for it")
            if c.get("note"):
                notes.append(f"{where}: {c['note']}")
    _write_csv(rows, out / "trials.csv")
    index = out / "index.html"
    selected_html = cells_html(verdicts, majority) + comparisons_html(verdicts)
    selected_html += _selected_html(chosen, majority, tuning, early)
    index.write_text(_html(experiment, parent, rows, images, notes, selected_html, warnings, privacy_html(privacy)))
    return index, warnings


def families_run(rows: list[dict[str, Any]]) -> set[str]:
    """The noise families the sweep's trials used (a variant counts as its family)."""
    return {(r.get("noise") or {}).get("mechanism") or r["mechanism"] for r in rows if r.get("mechanism")} - {"none"}


def _plots(
    rows: list[dict[str, Any]],
    out: Path,
    majority: float | None,
    cells: list[dict[str, Any]],
    search: dict[str, Any] | None,
    tuning: dict[str, Any] | None,
) -> tuple[list[tuple[Path, str]], list[str], dict[str, Any]]:
    """The plots (path and caption), the search's notes on the families the sweep ran, and the
    plots' data (``plots.json``)."""
    images: list[tuple[Path, str]] = []
    notes: list[str] = []
    data: dict[str, Any] = {}
    families = families_run(rows)
    if rows:
        plot_utility(rows, out / "utility.png", majority, cells)
        metric, _ = headline_metric(rows)
        images.append((out / "utility.png", f"test {metric} vs target epsilon per mechanism, with 95% intervals"))
        data["privacy"] = plot_privacy(rows, out / "privacy.png", tuning)
        images.append((out / "privacy.png", data["privacy"]["caption"]))
    if search is not None and families:
        data["noise"] = plot_noise(search, out / "noise.png", families, tuning)
        tuned = " and the noise the tuned runs used (calibrated for the selection)" if tuning is not None else ""
        images.append(
            (
                out / "noise.png",
                f"noise search: {data['noise']['objective']} per coordinate vs target epsilon for the families "
                f"this sweep ran{tuned}, for sensitivity 1 in each mechanism's own norm (L2 for Gaussian, L1 for "
                "Laplace/LMO: not directly comparable)",
            )
        )
        notes += search_notes(search, families)
    return images, notes, data


def search_notes(search: dict[str, Any], families: set[str]) -> list[str]:
    """The noise search's notes per target: they are about its LMO pick, so only for a sweep that ran LMO."""
    results = search.get("results", []) if LMO.name in families else []
    return [f"epsilon {r['epsilon_target']:g}: {r['note']}" for r in results if r.get("note")]
