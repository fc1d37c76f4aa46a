"""Sweep reports from MLflow: PNG plots and one HTML page.

:func:`write_report` reads a sweep's parent run and its child (trial) runs and writes into
``out_dir``:

* ``utility.png`` -- the headline metric (test accuracy, or perplexity for a causal LM)
  against the target epsilon, one line per mechanism, mean and min-max spread over seeds
  (with a learning-rate grid, the rate with the best mean validation metric per point);
* ``noise.png`` -- the noise search's objective (e.g. E|Z| per coordinate, C = 1) against the
  target epsilon per family, from the parent run's ``search/search.json``;
* ``privacy.png`` -- epsilon spent (the accountant's upper bound) against the target for
  every trial, with the audit's empirical lower bound where a trial was audited;
* ``trials.csv`` and ``index.html`` -- a table of every trial and the plots.
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from noise_search.errors import InputError
from orchestrator.tracking import KIND_TAG, PARENT_TAG, Tracker

FAMILY_COLORS = {"gaussian": "tab:blue", "laplace": "tab:orange", "lmo": "tab:green"}


def find_parent_run(tracker: Tracker, experiment: str, parent_run_id: str | None = None) -> Any:
    """The sweep's parent run: ``parent_run_id``, else the newest sweep run of ``experiment``."""
    exp = tracker.client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(f"--experiment: no MLflow experiment named {experiment!r} at {tracker.uri}")
    if parent_run_id:
        return tracker.client.get_run(parent_run_id)
    runs = tracker.client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise InputError(f"--experiment: {experiment!r} has no sweep runs (run lmo-dp sweep first)")
    return runs[0]


def trial_rows(tracker: Tracker, parent: Any) -> list[dict[str, Any]]:
    """One flat row per child run of ``parent``."""
    runs = tracker.client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=5000
    )
    rows = []
    for run in runs:
        p, m, tags = run.data.params, run.data.metrics, run.data.tags
        rows.append(
            {
                "key": p.get("trial.key", run.info.run_name),
                "mechanism": p.get("privacy.mechanism"),
                "epsilon_target": _float(p.get("privacy.epsilon")),
                "epsilon": m.get("epsilon_spent"),
                "epsilon_lower_bound": m.get("epsilon_lower_bound"),
                "seed": _int(p.get("training.seed")),
                "learning_rate": _float(p.get("training.learning_rate")),
                "status": tags.get("lmodp.status") or run.info.status.lower(),
                "accuracy": m.get("accuracy"),
                "val_accuracy": m.get("val_accuracy"),
                "perplexity": m.get("perplexity"),
                "val_perplexity": m.get("val_perplexity"),
                "steps": m.get("steps_taken"),
                "mlflow_run_id": run.info.run_id,
            }
        )
    rows.sort(key=lambda r: (r["epsilon_target"] or 0, r["mechanism"] or "", r["seed"] or 0, r["learning_rate"] or 0))
    return rows


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


def headline(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """(metric name, higher is better)."""
    if any(r["accuracy"] is not None for r in rows):
        return "accuracy", True
    return "perplexity", False


def utility_points(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """Per mechanism: ``(epsilon, mean, min, max, n_seeds)`` of the headline metric."""
    metric, higher = headline(rows)
    by_point: dict[tuple[str, float, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r[metric] is not None and r["mechanism"] and r["epsilon_target"] is not None:
            by_point[(r["mechanism"], r["epsilon_target"], r["learning_rate"] or 0.0)].append(r)
    best: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for (mech, eps, _lr), group in by_point.items():
        val_key = f"val_{metric}"
        vals = [g[val_key] for g in group if g[val_key] is not None] or [g[metric] for g in group]
        score = statistics.fmean(vals) * (1 if higher else -1)
        current = best.get((mech, eps))
        if current is None or score > current[0]:
            best[(mech, eps)] = (score, group)  # type: ignore[assignment]
    out: dict[str, list[tuple[float, float, float, float, int]]] = defaultdict(list)
    for (mech, eps), (_score, group) in sorted(best.items()):  # type: ignore[misc]
        vals = [g[metric] for g in group]
        out[mech].append((eps, statistics.fmean(vals), min(vals), max(vals), len(vals)))
    return dict(out)


def _epsilon_axis(ax, epsilons: list[float]) -> None:
    """Log-scaled target-epsilon axis with the grid's own values as plain tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ticks = sorted({float(e) for e in epsilons if e})
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("target epsilon")


def _plain_log_y(ax) -> None:
    """Log-scaled y axis labelled with plain numbers (0.6, 2, 8) instead of 6x10^-1."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)


def _plot_utility(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, _ = headline(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mech, pts in utility_points(rows).items():
        eps = [p[0] for p in pts]
        ax.plot(eps, [p[1] for p in pts], "o-", color=FAMILY_COLORS.get(mech), label=mech)
        ax.fill_between(eps, [p[2] for p in pts], [p[3] for p in pts], color=FAMILY_COLORS.get(mech), alpha=0.2)
    _epsilon_axis(ax, [r["epsilon_target"] for r in rows])
    ax.set_ylabel(f"test {metric} (mean, min-max over seeds)")
    ax.set_title(f"{metric} vs privacy budget")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_privacy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    targets = [r["epsilon_target"] for r in rows if r["epsilon_target"]]
    if targets:
        lo, hi = min(targets), max(targets)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="target")
    for mech in sorted({r["mechanism"] for r in rows if r["mechanism"]}):
        pts = [r for r in rows if r["mechanism"] == mech and r["epsilon"] is not None]
        ax.scatter(
            [r["epsilon_target"] for r in pts],
            [r["epsilon"] for r in pts],
            color=FAMILY_COLORS.get(mech),
            label=f"{mech}: spent (upper bound)",
        )
        lbs = [r for r in pts if r["epsilon_lower_bound"] is not None and r["epsilon_lower_bound"] > 0]
        if lbs:
            ax.scatter(
                [r["epsilon_target"] for r in lbs],
                [r["epsilon_lower_bound"] for r in lbs],
                marker="v",
                color=FAMILY_COLORS.get(mech),
                label=f"{mech}: audit lower bound",
            )
    _epsilon_axis(ax, targets)
    _plain_log_y(ax)
    ax.set_ylabel("epsilon (audit lower bounds of 0 not drawn)")
    ax.set_title("privacy spent per trial")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def search_result(tracker: Tracker, parent: Any) -> dict[str, Any] | None:
    """The parent run's ``search/search.json`` artifact, if any."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracker.client.download_artifacts(parent.info.run_id, "search/search.json", tmp)
        except Exception:  # absent artifact: MLflow raises various types
            return None
        return json.loads(Path(local).read_text())


def _plot_noise(search: dict[str, Any], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = search.get("settings", {}).get("objective", "objective")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = sorted(search.get("results", []), key=lambda r: r["epsilon_target"])
    series = {
        "lmo": [(r["epsilon_target"], r.get("objective")) for r in rows if r.get("feasible", True)],
        "laplace": [(r["epsilon_target"], (r.get("laplace") or {}).get("objective")) for r in rows],
        "gaussian": [(r["epsilon_target"], (r.get("gaussian") or {}).get("objective")) for r in rows],
    }
    for fam, pts in series.items():
        pts = [(e, v) for e, v in pts if v is not None and math.isfinite(v)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=FAMILY_COLORS[fam], label=fam)
    _epsilon_axis(ax, [r["epsilon_target"] for r in rows])
    if objective in ("mean-abs", "variance"):
        _plain_log_y(ax)
    ax.set_ylabel(f"{objective} per coordinate (C = 1)")
    ax.set_title("noise at the searched parameters")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return objective


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


COLUMNS = [
    "key",
    "mechanism",
    "epsilon_target",
    "epsilon",
    "epsilon_lower_bound",
    "seed",
    "learning_rate",
    "status",
    "accuracy",
    "val_accuracy",
    "perplexity",
    "steps",
    "mlflow_run_id",
]


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _html(
    experiment: str, parent: Any, rows: list[dict[str, Any]], images: list[tuple[str, str]], notes: list[str]
) -> str:
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    figs = "\n".join(
        f'<figure><img src="{src}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>'
        for src, cap in images
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmo-dp sweep {html.escape(experiment)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}}table{{border-collapse:collapse;font-size:.85em}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:right}}figure{{display:inline-block;margin:.5em}}
img{{max-width:40em}}</style></head><body>
<h1>Sweep <code>{html.escape(experiment)}</code></h1>
<p>Parent MLflow run <code>{html.escape(parent.info.run_id)}</code>, {len(rows)} trials. Epsilon values are the
accountant's proven upper bounds; audit lower bounds (where present) are empirical.</p>
<ul>{note_html}</ul>
{figs}
<h2>Trials</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
</body></html>
"""


def write_report(tracker: Tracker, experiment: str, out_dir: str | Path, *, parent_run_id: str | None = None) -> Path:
    """Write the report of a sweep into ``out_dir``; returns the path of ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parent = find_parent_run(tracker, experiment, parent_run_id)
    rows = trial_rows(tracker, parent)
    images: list[tuple[str, str]] = []
    notes: list[str] = []
    if rows:
        _plot_utility(rows, out / "utility.png")
        metric, _ = headline(rows)
        images.append(("utility.png", f"test {metric} vs target epsilon per mechanism"))
        _plot_privacy(rows, out / "privacy.png")
        images.append(("privacy.png", "epsilon spent (and audit lower bound) per trial"))
    search = search_result(tracker, parent)
    if search is not None:
        objective = _plot_noise(search, out / "noise.png")
        images.append(
            (
                "noise.png",
                f"noise search: {objective} per coordinate vs target epsilon per family, for sensitivity 1 in each "
                "mechanism's own norm (L2 for Gaussian, L1 for Laplace/LMO: not directly comparable)",
            )
        )
        for r in search.get("results", []):
            if r.get("note"):
                notes.append(f"epsilon {r['epsilon_target']:g}: {r['note']}")
    _write_csv(rows, out / "trials.csv")
    index = out / "index.html"
    index.write_text(_html(experiment, parent, rows, images, notes))
    return index
