"""The report's statistics: every cell with its interval, every comparison with its verdict.

:func:`analyse_sweep` turns a sweep's trial rows (read from MLflow) into the ``cells``,
``comparisons`` and ``statistics`` objects of ``lmo-dp report --json`` and ``lmo-dp sweep --json``
(:func:`orchestrator.statistics.analyse`), with what the sweep recorded on its parent run: the
test split's size (param ``data.test_size``), the majority-class baseline and ``statistics.json``
(the planned looks of seeds until decided and why each cell stopped). :func:`write_verdicts` puts
them in the report folder as ``verdicts.json``, ``cells.csv`` and ``comparisons.csv``;
:func:`verdict_metrics` names them as parent-run metrics; the two HTML tables show them.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path
from typing import Any

from orchestrator import statistics

VERDICTS = "verdicts.json"

CELL_COLUMNS = [
    "epsilon_target",
    "mechanism",
    "seeds",
    "stopped",
    "learning_rate",
    "clip",
    "val_mean",
    "test_mean",
    "test_ci95_lo",
    "test_ci95_hi",
    "test_sd",
    "interval",
    "below_baseline",
]
COMPARISON_COLUMNS = [
    "epsilon_target",
    "a",
    "b",
    "seeds",
    "difference",
    "ci95_lo",
    "ci95_hi",
    "level",
    "p_value",
    "p_value_unadjusted",
    "looks",
    "verdict",
    "note",
]


def analyse_sweep(rows: list[dict[str, Any]], parent: Any, record: dict[str, Any] | None) -> dict[str, Any]:
    """``{"cells", "comparisons", "statistics"}`` of a sweep from its trial rows and parent run
    (``record``: the parent's ``statistics.json``, None for sweeps that predate it)."""
    size = parent.data.params.get("data.test_size")
    n_test = int(size) if size not in (None, "", "None", "null") else None
    majority = parent.data.metrics.get("baseline.majority_test_accuracy")
    seeds = (record or {}).get("seeds") or {}
    stopping = {(c["mechanism"], c["epsilon"]): c for c in seeds.get("cells", [])}
    plan = statistics.Plan.from_dict((record or {}).get("plan"))
    out = statistics.analyse(rows, n_test=n_test, majority=majority, plan=plan, stopping=stopping)
    if seeds:
        keys = ("min", "max", "growth", "looks", "compare", "decided_on", "history")
        out["statistics"]["seeds"] = {k: seeds.get(k) for k in keys}
    return out


def write_verdicts(verdicts: dict[str, Any], out_dir: Path) -> None:
    """``verdicts.json``, ``cells.csv`` and ``comparisons.csv`` in ``out_dir``."""
    (out_dir / VERDICTS).write_text(json.dumps(verdicts, indent=1))
    with (out_dir / "cells.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CELL_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for c in verdicts["cells"]:
            ci = c["test_ci95"] or (None, None)
            w.writerow({**c, "test_ci95_lo": ci[0], "test_ci95_hi": ci[1]})
    with (out_dir / "comparisons.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COMPARISON_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for c in verdicts["comparisons"]:
            ci = c["ci95"] or (None, None)
            a, b = c["mechanisms"]
            w.writerow({**c, "a": a, "b": b, "ci95_lo": ci[0], "ci95_hi": ci[1]})


def read_verdicts(out_dir: str | Path) -> dict[str, Any]:
    """What :func:`write_verdicts` wrote into ``out_dir``."""
    return json.loads((Path(out_dir) / VERDICTS).read_text())


def _name(x: str) -> str:
    """A mechanism name as MLflow accepts it inside a metric name."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", x)


def _where(eps: float | None) -> str:
    return "none" if eps is None else f"eps_{eps:g}"


#: a verdict as a number (parent-run metric ``comparison.<...>.verdict``)
VERDICT_CODE = {"a_better": 1.0, "within_noise": 0.0, "b_better": -1.0}


def verdict_metrics(verdicts: dict[str, Any]) -> dict[str, float]:
    """Parent-run metrics: ``cell.<eps_E|none>.<mechanism>.{test_mean, test_ci95_lo, test_ci95_hi,
    val_mean, seeds, below_baseline}`` and ``comparison.eps_E.<a>_vs_<b>.{difference, ci95_lo,
    ci95_hi, p_value, verdict}`` (verdict: 1 a better, -1 b better, 0 within noise)."""
    out: dict[str, float] = {}
    for c in verdicts["cells"]:
        prefix = f"cell.{_where(c['epsilon_target'])}" + (
            "" if c["mechanism"] == "none" else f".{_name(c['mechanism'])}"
        )
        ci = c["test_ci95"] or (None, None)
        values = {"test_mean": c["test_mean"], "test_ci95_lo": ci[0], "test_ci95_hi": ci[1], "val_mean": c["val_mean"]}
        values |= {"seeds": c["seeds"], "below_baseline": float(c["below_baseline"])}
        out |= {f"{prefix}.{k}": v for k, v in values.items() if v is not None}
    for c in verdicts["comparisons"]:
        a, b = (_name(m) for m in c["mechanisms"])
        prefix = f"comparison.{_where(c['epsilon_target'])}.{a}_vs_{b}"
        ci = c["ci95"] or (None, None)
        values = {"difference": c["difference"], "ci95_lo": ci[0], "ci95_hi": ci[1], "p_value": c["p_value"]}
        values["verdict"] = VERDICT_CODE[c["verdict"]]
        out |= {f"{prefix}.{k}": v for k, v in values.items() if v is not None}
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _interval(ci: list[float] | None, digits: int = 3) -> str:
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def cells_html(verdicts: dict[str, Any], majority: float | None) -> str:
    """The page's table of cells: mean test score, 95% interval, seeds and why, the flag."""
    cells = verdicts["cells"]
    if not cells:
        return ""
    st = verdicts["statistics"]
    metric = st["metric"]
    head = ["target", "mechanism", "seeds", "stopped", f"val {metric}", f"test {metric}", "95% interval", "interval"]
    rows = []
    for c in cells:
        flag = " below_baseline" if c["below_baseline"] else ""
        eps = "non-private" if c["epsilon_target"] is None else f"{c['epsilon_target']:g}"
        values = [eps, c["mechanism"], c["seeds"], c["stopped"], _fmt(c["val_mean"]), _fmt(c["test_mean"]),
                  _interval(c["test_ci95"]) + flag, c["interval"] or "none (one seed, no test-set size)"]  # fmt: skip
        cls = ' class="below"' if c["below_baseline"] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    base = "" if majority is None else f" below_baseline: the interval lies under the majority class ({majority:.3f})."
    seeds = st.get("seeds")
    growth = (
        ""
        if not seeds
        else f" Seeds until decided: every cell started with {seeds['min']} seeds; cells of undecided compared pairs "
        f"got more at the looks {', '.join(str(x) for x in seeds['looks'])} (decided on validation scores), up to "
        f"{seeds['max']}; 'stopped' says why each cell has its seeds (decided, cap, not_compared)."
    )
    text = (
        f"Each cell's configuration is the one with the best mean validation {metric}; its test {metric} is "
        "shown as the mean over seeds and a 95% interval: with two or more seeds, the seeds' t half-width "
        "(training randomness) and the test set's binomial half-width (the draw of the test sentences) added "
        "in quadrature; with one seed, the test set's Wilson interval only (seed-to-seed variation not "
        f"included).{base}{growth}"
    )
    return f"""<h2>Cells: mean and 95% interval</h2>
<p>{html.escape(text)}</p>
<div class="scroll"><table id="cells">
<thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead><tbody>
{"".join(rows)}
</tbody></table></div>
"""


def comparisons_html(verdicts: dict[str, Any]) -> str:
    """The page's table of paired comparisons and verdicts."""
    comparisons = verdicts["comparisons"]
    if not comparisons:
        return ""
    st = verdicts["statistics"]
    head = ["target", "a", "b", "shared seeds", "a - b", "interval", "level", "p (adjusted)", "verdict", "note"]
    rows = []
    for c in comparisons:
        a, b = c["mechanisms"]
        verdict = {"a_better": f"{a} better", "b_better": f"{b} better"}.get(c["verdict"], "within noise")
        level = "" if c["level"] is None else f"{100 * c['level']:.2f}%"
        p = "" if c["p_value"] is None else f"{c['p_value']:.3g}"
        values = [f"{c['epsilon_target']:g}", a, b, c["seeds"], _fmt(c["difference"], 4), _interval(c["ci95"], 4),
                  level, p, verdict, c.get("note") or ""]  # fmt: skip
        cls = ' class="decided"' if c["verdict"] != "within_noise" else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    looks = (
        f" Pairs whose seeds were added sequentially are charged the {st['looks']} planned looks first (their "
        "p-value times the looks: valid at whichever look the sweep stopped)."
        if st["looks"] > 1
        else ""
    )
    text = (
        f"Every pair of mechanisms at the same target, compared seed by seed: the difference a - b of their test "
        f"{st['metric']} on the seeds both have, a paired t-test, and Holm's correction over the "
        f"{st['comparisons']} comparisons of this page.{looks} Each interval is at the level its Holm step used, "
        "so a pair is declared better only when its interval excludes 0 (family-wise error at most 5%); "
        "otherwise it is within noise. The comparison is conditional on this test set, which both arms share."
    )
    return f"""<h2>Comparisons: paired verdicts</h2>
<p>{html.escape(text)}</p>
<div class="scroll"><table id="comparisons">
<thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead><tbody>
{"".join(rows)}
</tbody></table></div>
"""
