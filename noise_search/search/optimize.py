"""Stage 3 of the search (strategy ``optimize``): differential evolution per target.

scipy's differential evolution over the continuous parameters of the space in log scale, from
the grid's best candidates of several discrete families, with the epsilon constraint handled by
DE's feasibility rules, followed by an exact 1-D polish of the overall weight scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from noise_search.evaluator import objective_values, rdp_curves
from noise_search.mgf import MixtureArrays
from noise_search.search.grid import GridOutcome
from noise_search.search.problem import SearchProblem
from noise_search.spaces import Space, lmo_from_row, lmo_params

_WEIGHTS = ("a1", "a3", "a4")


@dataclass(frozen=True)
class OptimizeOutcome:
    """The optimiser's best re-checked point for one target (``None`` if it found none)."""

    params: dict[str, Any] | None
    evaluations: int


def _free_fields(space: Space, start: MixtureArrays) -> list[str]:
    bounds = space.continuous_bounds()
    present = {"a1": start.a1[0] > 0, "a3": start.a3[0] > 0, "a4": start.a4[0] > 0, "G_k": start.a1[0] > 0}
    return [f for f in bounds if present.get(f, True)]


def _with_fields(start: MixtureArrays, names: list[str], values: np.ndarray) -> MixtureArrays:
    """``values.shape == (len(names), S)``: ``S`` copies of ``start`` with ``names`` replaced."""
    s = values.shape[1]
    base = {f: np.repeat(getattr(start, f), s) for f in ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")}
    for name, v in zip(names, values, strict=True):
        base[name] = v
    return MixtureArrays.stack(**base)


def _valid(p: MixtureArrays) -> np.ndarray:
    return p.zero_concentration() > 2.0


def _largest_feasible_scale(problem: SearchProblem, row: MixtureArrays, target: float, c_max: float) -> float:
    """Largest ``c`` in ``[1, c_max]`` (to 1e-6 relative) with the weights times ``c`` meeting ``target``.

    Epsilon increases with the scale of ``u`` (more ``u``, less noise), so this is a monotone
    1-D search; every step evaluates a block of 32 scales at once.
    """
    lo, hi = 0.0, math.log(max(c_max, 1.0))
    for _ in range(5):
        if hi - lo < 1e-6:
            break
        logs = np.linspace(lo, hi, 33)
        rows = _scaled(row, np.exp(logs))
        eps, _ = rdp_curves(rows, problem.sample_rate).epsilon(problem.steps, problem.delta)
        ok = np.flatnonzero(eps <= target)
        if ok.size == 0:
            break
        j = int(ok.max())
        if j == logs.size - 1:
            lo = hi
            break
        lo, hi = logs[j], logs[j + 1]
    return math.exp(lo)


def _scaled(row: MixtureArrays, factors: np.ndarray | float) -> MixtureArrays:
    """Copies of the one-row ``row`` with the weights ``a1, a3, a4`` multiplied by each factor."""
    fields_ = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")
    return MixtureArrays.stack(**{f: getattr(row, f)[0] * (factors if f in _WEIGHTS else 1.0) for f in fields_})


def optimize_target(problem: SearchProblem, target: float, starts: MixtureArrays, seed_key: int) -> OptimizeOutcome:
    """Differential evolution from each start row (multi-start), best feasible point kept.

    Variables: the space's continuous fields present in the start (log scale, within the space's
    bounds); discrete fields stay as in the start. Constraint ``epsilon <= target`` through
    DE's feasibility rules (a feasible point always beats an infeasible one). The winner's
    weights are then scaled up as far as the target allows, and the accountant re-checks it.
    """
    from scipy.optimize import NonlinearConstraint, differential_evolution

    bounds_all = problem.space.continuous_bounds()
    evaluations = 0
    best: tuple[float, dict[str, Any]] | None = None
    for k in range(len(starts)):
        start = starts.take(np.array([k]))
        names = _free_fields(problem.space, start)
        if not names:
            continue
        lo = np.log([bounds_all[n][0] for n in names])
        hi = np.log([bounds_all[n][1] for n in names])
        x0 = np.clip(np.log([getattr(start, n)[0] for n in names]), lo, hi)

        def rows_of(x: np.ndarray, start: MixtureArrays = start, names: list[str] = names) -> MixtureArrays:
            x = np.asarray(x, float)
            return _with_fields(start, names, np.exp(x.reshape(len(names), -1)))

        def eps_of(x: np.ndarray, rows_of: Callable = rows_of) -> np.ndarray:
            nonlocal evaluations
            p = rows_of(x)
            evaluations += len(p)
            eps, _ = rdp_curves(p, problem.sample_rate).epsilon(problem.steps, problem.delta)
            # DE sums violations: keep them finite so infeasible points still rank.
            return np.where(_valid(p) & np.isfinite(eps), eps, 1e6)

        def score_of(x: np.ndarray, rows_of: Callable = rows_of) -> np.ndarray:
            p = rows_of(x)
            values = objective_values(p, problem.objective, problem.gamma)
            return np.where(_valid(p), problem.score(values), np.inf)

        res = differential_evolution(
            score_of,
            list(zip(lo, hi, strict=True)),
            constraints=NonlinearConstraint(lambda x, f=eps_of: f(x).reshape(1, -1), -np.inf, target),
            x0=x0,
            rng=np.random.default_rng([problem.seed, seed_key, k]),
            vectorized=True,
            updating="deferred",
            maxiter=problem.optimizer_generations,
            popsize=10,
            tol=1e-8,
            polish=False,
            init="sobol",
        )
        row = rows_of(res.x)
        if not (eps_of(res.x)[0] <= target):
            continue
        # Exact polish of the active constraint: scale all weights up while the target allows.
        caps = [bounds_all[n][1] / getattr(row, n)[0] for n in _WEIGHTS if n in bounds_all and getattr(row, n)[0] > 0]
        c = _largest_feasible_scale(problem, row, target, min(caps) if caps else 1.0)
        if c > 1.0:
            row = _scaled(row, c)
        value = float(problem.score(objective_values(row, problem.objective, problem.gamma))[0])
        if best is None or value < best[0]:
            best = (value, lmo_params(lmo_from_row(row, 0)))
    return OptimizeOutcome(None if best is None else best[1], evaluations)


def optimizer_starts(problem: SearchProblem, grid: GridOutcome, target: float) -> MixtureArrays:
    """Up to ``problem.optimizer_starts`` start rows: the grid's best for ``target`` in distinct
    discrete families; for an infeasible target, the lowest-epsilon rows instead."""
    ranked = grid.index[grid.ranked(problem, target)]
    if ranked.size == 0:
        minima = sorted(grid.block_minima, key=lambda m: (m[1], m[0]))
        ranked = np.array([m[0] for m in minima if math.isfinite(m[1])], dtype=np.int64)
    if ranked.size == 0:
        return problem.space.take(np.zeros(0, dtype=np.int64))
    head = ranked[:4096]
    keys = problem.space.family_key(head)
    _, first = np.unique(keys, return_index=True)
    chosen = head[np.sort(first)][: problem.optimizer_starts]
    return problem.space.take(chosen)
