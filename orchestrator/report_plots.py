"""The sweep report's plots (PNG, matplotlib's Agg backend): utility, privacy spent, noise.

* :func:`plot_utility` -- test metric vs target epsilon per mechanism for the configuration
  chosen on validation (mean and 95% interval, :mod:`orchestrator.statistics`; open markers for
  cells below the majority-class baseline), markers of different mechanisms at the same epsilon
  set slightly apart (:func:`dodge`), the non-private reference (mean and its interval as a band)
  and the majority-class baseline as horizontal lines;
* :func:`plot_privacy` -- epsilon spent (upper bound) per trial against its target, audit lower
  bounds, and for a tuned sweep the bound on one run and on the returned run (selection included);
  linear from 0 unless the values span more than a factor 30;
* :func:`plot_noise` -- the noise search's objective for the families the sweep ran, and the
  tuned runs' noise.

Each plot's data (:func:`privacy_plot_data`, :func:`noise_plot_data`) is returned too: the report
keeps it as ``plots.json``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from noise_search.mechanisms import LMO, Gaussian, Laplace, mechanisms
from orchestrator.selection import headline_metric, select

#: the baselines a search file holds beside the LMO, in the order the noise plot draws them
BASELINES = (Laplace.name, Gaussian.name)


def family_color(mechanism: str) -> str | None:
    """A mechanism's colour in every plot (its class's ``color``; None: the plot's next colour)."""
    classes = mechanisms()
    return classes[mechanism].color if mechanism in classes else None


def utility_points(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """Per private mechanism: ``(epsilon, mean, min, max, n_seeds)`` of the headline test metric
    for the configuration selected on the validation split."""
    out: dict[str, list[tuple[float, float, float, float, int]]] = defaultdict(list)
    for sel in select(rows):
        if sel.epsilon_target is not None:
            out[sel.mechanism].append((sel.epsilon_target, sel.test_mean, sel.test_min, sel.test_max, sel.seeds))
    return {k: sorted(v) for k, v in out.items()}


def dodge(eps: float, index: int, count: int, spread: float = 0.035) -> float:
    """``eps`` moved by a small factor so markers of ``count`` mechanisms do not overlap (log x)."""
    return eps * math.exp((index - (count - 1) / 2) * spread)


def _epsilon_axis(ax, epsilons: list[float]) -> None:
    """Log-scaled target-epsilon axis with the grid's own values as plain tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ticks = sorted({float(e) for e in epsilons if e})
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    if len(ticks) == 1:  # one target: a window around it, not a log axis fitted to the dodged markers
        ax.set_xlim(ticks[0] / 1.25, ticks[0] * 1.25)
    ax.set_xlabel("target epsilon")


def _plain_log_y(ax) -> None:
    """Log-scaled y axis labelled with plain numbers (0.6, 2, 8) instead of 6x10^-1."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)


def interval_points(cells: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float, float, bool]]]:
    """Per private mechanism: ``(epsilon, mean, lo, hi, below baseline)`` from the report's cells
    (:func:`orchestrator.statistics.analyse`); a cell without an interval spans its mean."""
    out: dict[str, list[tuple[float, float, float, float, bool]]] = defaultdict(list)
    for c in cells:
        if c["epsilon_target"] is not None:
            lo, hi = c["test_ci95"] or (c["test_mean"], c["test_mean"])
            out[c["mechanism"]].append((c["epsilon_target"], c["test_mean"], lo, hi, c["below_baseline"]))
    return {k: sorted(v) for k, v in out.items()}


def plot_utility(
    rows: list[dict[str, Any]], path: Path, majority: float | None = None, cells: list[dict[str, Any]] | None = None
) -> None:
    """The utility plot; ``cells`` (the report's, with intervals) give the error bars, else the
    min-max over seeds of :func:`utility_points`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, _ = headline_metric(rows)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    if cells is not None:
        points = interval_points(cells)
        spread = "mean, 95% interval"
    else:
        points = {m: [(*p[:4], False) for p in pts] for m, pts in utility_points(rows).items()}
        spread = "mean, min-max over seeds"
    mechs = sorted(points)
    below_any = False
    for i, mech in enumerate(mechs):
        pts = points[mech]
        xs = [dodge(p[0], i, len(mechs)) for p in pts]
        means = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        color = family_color(mech)
        line = ax.errorbar(xs, means, yerr=err, fmt="o-", capsize=3, color=color, label=mech, ms=5)
        below = [(x, p[1]) for x, p in zip(xs, pts, strict=True) if p[4]]
        if below:
            below_any = True
            ax.scatter(*zip(*below, strict=True), s=40, facecolors="white", edgecolors=line[0].get_color(), zorder=3)
    eps_all = sorted({r["epsilon_target"] for r in rows if r["epsilon_target"]})
    reference = next((c for c in cells or [] if c["mechanism"] == "none"), None)
    if reference is not None:
        lo, hi = reference["test_ci95"] or (reference["test_mean"], reference["test_mean"])
        mean = reference["test_mean"]
    else:
        sel = next((s for s in select(rows) if s.mechanism == "none"), None)
        mean, lo, hi = (None, None, None) if sel is None else (sel.test_mean, sel.test_min, sel.test_max)
    if mean is not None:
        ax.axhline(mean, color="black", lw=1.2, label=f"non-private ({mean:.3f})")
        if eps_all:
            ax.axhspan(lo, hi, color="black", alpha=0.08)
    if majority is not None and metric == "accuracy":
        label = f"majority class ({majority:.3f})" + ("; open marker: interval below it" if below_any else "")
        ax.axhline(majority, color="gray", ls=":", lw=1.2, label=label)
    _epsilon_axis(ax, eps_all)
    ax.set_ylabel(f"test {metric} ({spread})")
    ax.set_title(f"{metric} vs privacy budget (configuration chosen on validation)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scale_of(values: list[float]) -> str:
    """``log`` when the positive values span more than a factor 30, else ``linear`` (from 0)."""
    pos = [v for v in values if v > 0]
    return "log" if pos and max(pos) / min(pos) > 30 else "linear"


def privacy_plot_data(rows: list[dict[str, Any]], tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the privacy plot draws: the targets, the y scale and one series per (mechanism, kind):
    ``spent`` (each trial's epsilon, the accountant's upper bound), ``audit`` (each audited
    trial's empirical lower bound), and for a tuned sweep ``per_run`` (the most one run of the
    cell's space can spend) and ``tuned`` (the returned run, selection included). Points are
    ``[target, epsilon]``."""
    targets = sorted({r["epsilon_target"] for r in rows if r["epsilon_target"]})
    mechs = sorted({r["mechanism"] for r in rows if r["mechanism"] and r["mechanism"] != "none"})
    series = []
    for mech in mechs:
        pts = [r for r in rows if r["mechanism"] == mech and r["epsilon"] is not None]
        series.append(
            {"mechanism": mech, "kind": "spent", "points": [[r["epsilon_target"], r["epsilon"]] for r in pts]}
        )
        audited = [r for r in pts if r.get("epsilon_lower_bound") is not None]
        if audited:
            points = [[r["epsilon_target"], r["epsilon_lower_bound"]] for r in audited]
            series.append({"mechanism": mech, "kind": "audit", "points": points})
        cells = [c for c in (tuning or {}).get("cells", []) if c["mechanism"] == mech and c.get("epsilon_tuned")]
        if cells:
            series.append(
                {"mechanism": mech, "kind": "per_run", "points": [[c["epsilon"], c["epsilon_per_run"]] for c in cells]}
            )
            series.append(
                {"mechanism": mech, "kind": "tuned", "points": [[c["epsilon"], c["epsilon_tuned"]] for c in cells]}
            )
    values = targets + [p[1] for s in series for p in s["points"]]
    return {"targets": targets, "mechanisms": mechs, "scale": _scale_of(values), "series": series}


#: how each kind of privacy point is drawn and named in the legend
_PRIVACY_KINDS = {
    "spent": ("o", 36, "spent per trial (upper bound)"),
    "audit": ("v", 36, "audit lower bound per trial"),
    "per_run": ("_", 160, "any one run at most (upper bound)"),
    "tuned": ("*", 130, "returned run, selection included (tuned)"),
}


def plot_privacy(rows: list[dict[str, Any]], path: Path, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The privacy plot; returns its data (:func:`privacy_plot_data`) with ``caption``: what a
    reader needs besides the axes (e.g. audit lower bounds of 0 left out on a log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = privacy_plot_data(rows, tuning)
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    mechs, log = data["mechanisms"], data["scale"] == "log"
    for i, t in enumerate(data["targets"]):  # each target as a short level across its markers
        half = 1.04 + 0.02 * len(mechs)
        ax.hlines(t, t / half, t * half, colors="k", linestyles="--", lw=1, label="target" if i == 0 else None)
    zeros = 0
    for s in data["series"]:
        i = mechs.index(s["mechanism"])
        pts = [p for p in s["points"] if not (log and p[1] <= 0)]
        zeros += len(s["points"]) - len(pts)
        if not pts:
            continue
        marker, size, what = _PRIVACY_KINDS[s["kind"]]
        color = family_color(s["mechanism"])
        ax.scatter([dodge(p[0], i, len(mechs)) for p in pts], [p[1] for p in pts], marker=marker, s=size,
                   color=color, label=f"{s['mechanism']}: {what}", zorder=3)  # fmt: skip
    _epsilon_axis(ax, data["targets"])
    if log:
        _plain_log_y(ax)
    else:  # from 0, with room above the highest point (the target's level)
        top = max([*data["targets"], *(p[1] for s in data["series"] for p in s["points"])], default=1.0)
        ax.set_ylim(0, 1.1 * top)
    ax.set_ylabel("epsilon")
    ax.set_title("privacy per trial: accountant's bound, audit's lower bound", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below: no point hidden
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    caption = "epsilon spent per trial (the accountant's upper bound) against its target"
    if any(s["kind"] == "audit" for s in data["series"]):
        caption += ", with the audit's empirical lower bound"
    if any(s["kind"] == "tuned" for s in data["series"]):
        caption += (
            "; a tuned sweep also shows, per cell, the most any one run can spend and the returned run's "
            "epsilon with the selection included (the one the target bounds)"
        )
    if zeros:
        caption += f"; {zeros} audit lower bound(s) of 0 are not drawn (log scale)"
    return {**data, "caption": caption}


def _objective_of(mech: Any, objective: str, gamma: float | None) -> float | None:
    if objective == "mean-abs":
        return mech.mean_abs()
    if objective == "variance":
        return mech.variance()
    if objective == "usefulness" and gamma is not None:
        return mech.usefulness(gamma)
    return None


def noise_plot_data(search: dict[str, Any], families: set[str], tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the noise plot draws, for the noise families the sweep ran only: per family the
    ``search`` series (the noise search's pick per target: LMO's best mixture, the calibrated
    Laplace and Gaussian) and, for a tuned sweep, the ``tuned`` series (the noise its runs used,
    calibrated for the selection; the objective computed from the mechanism). Points are
    ``[target, objective]``."""
    from noise_search.mechanisms import mechanism_from_dict

    settings = search.get("settings", {})
    objective = settings.get("objective", "objective")
    rows = sorted(search.get("results", []), key=lambda r: r["epsilon_target"])
    picks = {
        LMO.name: [(r["epsilon_target"], r.get("objective")) for r in rows if r.get("feasible", True)],
        **{fam: [(r["epsilon_target"], (r.get(fam) or {}).get("objective")) for r in rows] for fam in BASELINES},
    }
    series = []
    for fam, pts in picks.items():
        pts = [[e, v] for e, v in pts if v is not None and math.isfinite(v)]
        if fam in families and pts:
            series.append({"family": fam, "kind": "search", "points": pts})
    for fam in sorted(families):
        tuned = []
        for c in (tuning or {}).get("cells", []):
            if c["mechanism"] == fam and c.get("params"):
                value = _objective_of(mechanism_from_dict({**c["params"], "mechanism": fam}), objective,
                                      settings.get("gamma"))  # fmt: skip
                if value is not None:
                    tuned.append([c["epsilon"], value])
        if tuned:
            series.append({"family": fam, "kind": "tuned", "points": sorted(tuned)})
    return {"objective": objective, "targets": [r["epsilon_target"] for r in rows], "series": series}


def plot_noise(
    search: dict[str, Any], path: Path, families: set[str], tuning: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The noise plot; returns its data (:func:`noise_plot_data`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = noise_plot_data(search, families, tuning)
    objective = data["objective"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tuned = any(s["kind"] == "tuned" for s in data["series"])
    for s in data["series"]:
        pts = s["points"]
        style, label = ("o-", s["family"]) if s["kind"] == "search" else ("*--", f"{s['family']}: tuned runs")
        if tuned and s["kind"] == "search":
            label = f"{s['family']}: one run at the target"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=family_color(s["family"]), label=label,
                ms=9 if s["kind"] == "tuned" else 6)  # fmt: skip
    _epsilon_axis(ax, data["targets"])
    if objective in ("mean-abs", "variance"):
        _plain_log_y(ax)
    ax.set_ylabel(f"{objective} per coordinate (C = 1)")
    ax.set_title("noise at the searched parameters" + (" and the tuned runs' noise" if tuned else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    if data["series"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data
