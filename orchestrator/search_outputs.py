"""The files of a noise search: the result JSON, the frontier CSV and the frontier plot.

:func:`write_outputs` writes ``FILE`` (the result JSON, schema in
:mod:`noise_search.search_result`), ``FILE``'s stem + ``.frontier.csv`` (every candidate meeting
the largest target, with its epsilon, objective and parameters, Pareto points flagged, plus the
chosen points of every family) and ``.frontier.png`` (objective vs epsilon per family). Files are
written to temporary names and renamed, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from noise_search.evaluator import MAXIMISED
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.search import SearchOutcome, SearchProblem
from orchestrator.serialize import jsonable

LMO_FIELDS = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")


def output_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """``{"json": FILE, "csv": <stem>.frontier.csv, "png": <stem>.frontier.png}`` next to ``FILE``."""
    path = Path(out)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return {
        "json": path,
        "csv": path.with_name(f"{stem}.frontier.csv"),
        "png": path.with_name(f"{stem}.frontier.png"),
    }


def pareto_mask(epsilon: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Points not dominated by another with epsilon <= and score < (score is minimised)."""
    order = np.lexsort((score, epsilon))
    best = np.minimum.accumulate(score[order])
    prev = np.concatenate([[np.inf], best[:-1]])
    mask = np.zeros(epsilon.size, dtype=bool)
    mask[order] = score[order] < prev
    return mask


def _frontier_rows(outcome: SearchOutcome) -> list[dict[str, Any]]:
    problem, grid = outcome.problem, outcome.grid
    rows: list[dict[str, Any]] = []
    if grid.index.size:
        params = problem.space.take(grid.index)
        score = problem.score(grid.objective)
        pareto = pareto_mask(grid.epsilon, score)
        cols = {f: getattr(params, f) for f in LMO_FIELDS}
        for j in range(grid.index.size):
            rows.append(
                {
                    "family": LMO.name,
                    "source": "grid",
                    "epsilon_target": "",
                    "index": int(grid.index[j]),
                    "epsilon": float(grid.epsilon[j]),
                    "order": float(grid.order[j]),
                    "objective": float(grid.objective[j]),
                    "pareto": int(pareto[j]),
                    **{f: float(cols[f][j]) for f in LMO_FIELDS},
                }
            )
    for r in outcome.rows:
        t = r.epsilon_target
        if r.lmo is not None:
            params = r.lmo.to_dict()
            rows.append(
                {
                    "family": LMO.name,
                    "source": f"best:{r.source}",
                    "epsilon_target": t,
                    "epsilon": r.epsilon,
                    "order": r.order,
                    "objective": r.objective,
                    **{f: params[f] for f in LMO_FIELDS},
                }
            )
        for entry, key in ((r.laplace, "u0"), (r.gaussian, "sigma")):
            if entry.value is not None:
                rows.append(
                    {
                        "family": entry.family,
                        "source": f"calibrated:{entry.accountant}",
                        "epsilon_target": t,
                        "epsilon": entry.epsilon,
                        "order": entry.order,
                        "objective": entry.objective,
                        key: entry.value,
                    }
                )
    return rows


def _write_csv(outcome: SearchOutcome, path: Path) -> None:
    header = ["family", "source", "epsilon_target", "index", "epsilon", "order", "objective", "pareto",
              *LMO_FIELDS, "u0", "sigma"]  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in _frontier_rows(outcome):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _laplace_curve(problem: SearchProblem, eps_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon and objective of plain Laplace over a range of ``u0`` (RDP, as the accountant)."""
    from noise_search.mechanisms import Laplace
    from noise_search.rdp import DEFAULT_ORDERS, epsilon_from_rdp, laplace_log_expected_a, subsampled_rdp
    from noise_search.search import mechanism_objective

    u0 = np.geomspace(1e-3, 1e2, 80)
    rdp = subsampled_rdp(laplace_log_expected_a(u0, int(DEFAULT_ORDERS.max())), DEFAULT_ORDERS, problem.sample_rate)
    eps, _ = epsilon_from_rdp(problem.steps * rdp, DEFAULT_ORDERS, problem.delta)
    keep = (eps > 0) & (eps <= eps_max)
    obj = np.array([mechanism_objective(Laplace(u), problem.objective, problem.gamma) for u in u0[keep]])
    return eps[keep], obj


def _write_png(outcome: SearchOutcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem, grid = outcome.problem, outcome.grid
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    eps_max = max(problem.targets) * 1.05
    if grid.index.size:
        step = max(1, grid.index.size // 20000)
        ax.scatter(grid.epsilon[::step], grid.objective[::step], s=4, alpha=0.25, color="tab:blue",
                   label=f"LMO candidates ({grid.index.size:,} meet eps <= {max(problem.targets):g})")  # fmt: skip
        pareto = pareto_mask(grid.epsilon, problem.score(grid.objective))
        order = np.argsort(grid.epsilon[pareto])
        ax.step(grid.epsilon[pareto][order], grid.objective[pareto][order], where="post", color="tab:blue",
                label="LMO frontier (grid)")  # fmt: skip
    lap_e, lap_o = _laplace_curve(problem, eps_max)
    if lap_e.size:
        ax.plot(lap_e, lap_o, color="tab:orange", label="Laplace (RDP)")
    best = [(r.epsilon_target, r.objective) for r in outcome.rows if r.feasible]
    if best:
        ax.plot(*zip(*best, strict=True), "o", color="tab:blue", mec="k", label="best LMO per target")
    for fam, color in ((Laplace.name, "tab:orange"), (Gaussian.name, "tab:green")):
        pts = [(r.epsilon_target, r.baseline(fam).objective) for r in outcome.rows if r.baseline(fam).objective]
        if pts:
            acc = outcome.rows[0].baseline(fam).accountant
            ax.plot(*zip(*pts, strict=True), "s--", color=color, ms=5, label=f"{fam} calibrated ({acc})")
    ax.set_xlabel("epsilon (sound upper bound)")
    ax.set_ylabel(problem.objective + (f" (gamma = {problem.gamma:g})" if problem.gamma else ""))
    if problem.objective not in MAXIMISED:
        ax.set_yscale("log")
    ax.set_title(
        f"{problem.space.describe()['space']} space, q = {problem.sample_rate:.4g}, T = {problem.steps}, "
        f"delta = {problem.delta:g}",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_outputs(outcome: SearchOutcome, out: str | os.PathLike[str], result: dict[str, Any]) -> dict[str, Path]:
    """Write the JSON, CSV and PNG (temporary names first, then renamed together)."""
    paths = output_paths(out)
    directory = paths["json"].parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp: dict[str, Path] = {}
    try:
        for kind, final in paths.items():
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=directory)
            os.close(fd)
            os.chmod(name, 0o644)  # mkstemp creates 0600; results are meant to be shared
            tmp[kind] = Path(name)
        tmp["json"].write_text(json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
        _write_csv(outcome, tmp["csv"])
        _write_png(outcome, tmp["png"])
        for kind, final in paths.items():
            os.replace(tmp[kind], final)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return paths
