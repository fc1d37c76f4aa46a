"""The sweep report's plots (PNG, matplotlib's Agg backend): utility, privacy spent, noise.

* :func:`plot_utility` -- test metric vs target epsilon per mechanism for the configuration
  chosen on validation (mean and 95% interval, :mod:`orchestrator.statistics`; open markers for
  cells below the majority-class baseline), markers of different mechanisms at the same epsilon
  set slightly apart (:func:`dodge`), the non-private reference (mean and its interval as a band)
  and the majority-class baseline as horizontal lines;
* :func:`plot_privacy` -- epsilon spent (upper bound) per trial, audit lower bounds;
* :func:`plot_noise` -- the noise search's objective per family.
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


def plot_privacy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    targets = [r["epsilon_target"] for r in rows if r["epsilon_target"]]
    if targets:
        lo, hi = min(targets), max(targets)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="target")
    mechs = sorted({r["mechanism"] for r in rows if r["mechanism"] and r["mechanism"] != "none"})
    for i, mech in enumerate(mechs):
        pts = [r for r in rows if r["mechanism"] == mech and r["epsilon"] is not None]
        ax.scatter(
            [dodge(r["epsilon_target"], i, len(mechs)) for r in pts],
            [r["epsilon"] for r in pts],
            color=family_color(mech),
            label=f"{mech}: spent (upper bound)",
        )
        lbs = [r for r in pts if r["epsilon_lower_bound"] is not None and r["epsilon_lower_bound"] > 0]
        if lbs:
            ax.scatter(
                [dodge(r["epsilon_target"], i, len(mechs)) for r in lbs],
                [r["epsilon_lower_bound"] for r in lbs],
                marker="v",
                color=family_color(mech),
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


def plot_noise(search: dict[str, Any], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = search.get("settings", {}).get("objective", "objective")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = sorted(search.get("results", []), key=lambda r: r["epsilon_target"])
    series = {
        LMO.name: [(r["epsilon_target"], r.get("objective")) for r in rows if r.get("feasible", True)],
        **{fam: [(r["epsilon_target"], (r.get(fam) or {}).get("objective")) for r in rows] for fam in BASELINES},
    }
    for fam, pts in series.items():
        pts = [(e, v) for e, v in pts if v is not None and math.isfinite(v)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=family_color(fam), label=fam)
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
