"""Stage 1 of the search: the space in blocks, and the best grid candidate per target.

:func:`search_block` evaluates one block (a task): its RDP curves once
(:mod:`noise_search.evaluator`), epsilons for ``T``, and the objective only for rows meeting the
largest target; it returns its feasible rows and its smallest epsilon. :func:`reduce_blocks`
merges blocks in block order; :func:`grid_pick` takes the best row the accountant confirms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from noise_search.accountants import PrivacySpent, compute_epsilon
from noise_search.evaluator import evaluate_block
from noise_search.mechanisms import LMO
from noise_search.search.problem import SearchProblem, mechanism_objective
from noise_search.spaces import lmo_from_row


@dataclass(frozen=True)
class BlockSummary:
    """What one block contributes: its rows meeting the largest target, and its smallest epsilon."""

    block: int
    evaluated: int
    index: np.ndarray
    epsilon: np.ndarray
    order: np.ndarray
    objective: np.ndarray
    min_index: int
    min_epsilon: float


def search_block(problem: SearchProblem, block: int) -> BlockSummary:
    """Evaluate block ``block`` of the problem's space (a Ray task in the distributed path)."""
    start = block * problem.block_size
    stop = min(start + problem.block_size, problem.space.size)
    p = problem.space.block(start, stop)
    top = max(problem.targets)
    ev = evaluate_block(
        p,
        sample_rate=problem.sample_rate,
        steps=problem.steps,
        delta=problem.delta,
        objective=problem.objective,
        gamma=problem.gamma,
        objective_below=top,
    )
    eps, order = ev.epsilon[0], ev.order[0]
    keep = np.flatnonzero(eps <= top)
    i_min = int(np.argmin(eps)) if len(p) else 0
    return BlockSummary(
        block=block,
        evaluated=len(p),
        index=(start + keep).astype(np.int64),
        epsilon=eps[keep],
        order=order[keep],
        objective=ev.objective[keep],
        min_index=start + i_min,
        min_epsilon=float(eps[i_min]) if len(p) else math.inf,
    )


@dataclass(frozen=True)
class GridOutcome:
    """All blocks merged: rows meeting the largest target (by index) and the space's smallest epsilon."""

    evaluated: int
    index: np.ndarray
    epsilon: np.ndarray
    order: np.ndarray
    objective: np.ndarray
    min_index: int
    min_epsilon: float
    block_minima: tuple[tuple[int, float], ...]

    def ranked(self, problem: SearchProblem, target: float) -> np.ndarray:
        """Positions of rows with ``epsilon <= target``, best objective first (ties: lower index)."""
        rows = np.flatnonzero(self.epsilon <= target)
        score = problem.score(self.objective[rows])
        return rows[np.lexsort((self.index[rows], score))]


def reduce_blocks(summaries: Sequence[BlockSummary]) -> GridOutcome:
    ordered = sorted(summaries, key=lambda s: s.block)

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(s, name) for s in ordered]) if ordered else np.zeros(0, dtype)

    minima = tuple((s.min_index, s.min_epsilon) for s in ordered)
    best = min(minima, key=lambda m: (m[1], m[0])) if minima else (-1, math.inf)
    return GridOutcome(
        evaluated=sum(s.evaluated for s in ordered),
        index=cat("index", np.int64),
        epsilon=cat("epsilon", float),
        order=cat("order", float),
        objective=cat("objective", float),
        min_index=int(best[0]),
        min_epsilon=float(best[1]),
        block_minima=minima,
    )


@dataclass(frozen=True)
class LmoPick:
    """A re-checked LMO for one target."""

    mechanism: LMO
    spent: PrivacySpent
    objective: float
    source: str
    index: int | None = None


def accept_lmo(problem: SearchProblem, mech: LMO, target: float, source: str, index: int | None) -> LmoPick | None:
    spent = compute_epsilon(
        mech, sample_rate=problem.sample_rate, steps=problem.steps, delta=problem.delta, accountant="rdp"
    )
    if not spent.epsilon <= target:
        return None
    return LmoPick(mech, spent, mechanism_objective(mech, problem.objective, problem.gamma), source, index)


def grid_pick(problem: SearchProblem, grid: GridOutcome, target: float, *, tries: int = 50) -> LmoPick | None:
    """The grid's best candidate for ``target`` that the accountant confirms (next best if a
    rounding-level disagreement rejects it)."""
    found = grid_picks(problem, grid, target, 1, tries=tries)
    return found[0] if found else None


def grid_picks(
    problem: SearchProblem, grid: GridOutcome, target: float, count: int, *, tries: int = 50
) -> list[LmoPick]:
    """The grid's ``count`` best candidates for ``target`` that the accountant confirms, best first."""
    ranked = grid.ranked(problem, target)[: tries + count - 1]
    if ranked.size == 0:
        return []
    rows = problem.space.take(grid.index[ranked])
    out: list[LmoPick] = []
    for j, pos in enumerate(ranked):
        pick = accept_lmo(problem, lmo_from_row(rows, j), target, "grid", int(grid.index[pos]))
        if pick is not None:
            out.append(pick)
            if len(out) == count:
                break
    return out


def rescale_hidden_u(problem: SearchProblem, pick: LmoPick, target: float) -> LmoPick:
    """``pick`` rescaled (its ``u`` multiplied by a factor >= 1) to spend ``target`` under the
    ``rdp-hidden-u`` accountant; ``source`` gains ``+hidden-u``. The pick meets the target under RDP,
    hence under the tighter accountant, so the factor is at least 1. Raises
    :class:`~noise_search.errors.CalibrationError` if the calibration fails."""
    from noise_search.calibration import calibrate

    cal = calibrate(
        pick.mechanism,
        epsilon=target,
        delta=problem.delta,
        sample_rate=problem.sample_rate,
        steps=problem.steps,
        accountant="rdp-hidden-u",
        rel_tol=1e-3,
    )
    mech = cal.mechanism
    if mech.mean_u() < pick.mechanism.mean_u():  # the solver's tolerance: never report more noise than the pick
        mech = pick.mechanism
        spent = compute_epsilon(
            mech, sample_rate=problem.sample_rate, steps=problem.steps, delta=problem.delta, accountant="rdp-hidden-u"
        )
    else:
        spent = cal.spent
    objective = mechanism_objective(mech, problem.objective, problem.gamma)
    return LmoPick(mech, spent, objective, f"{pick.source}+hidden-u", pick.index)


def try_rescale_hidden_u(problem: SearchProblem, pick: LmoPick, target: float) -> tuple[LmoPick, str | None]:
    """:func:`rescale_hidden_u`, or the pick unchanged and why (a failed calibration is reported, not raised)."""
    from noise_search.errors import CalibrationError, UnsupportedError

    try:
        return rescale_hidden_u(problem, pick, target), None
    except (CalibrationError, UnsupportedError, ValueError, OverflowError) as exc:
        return pick, f"rescaling under rdp-hidden-u failed: {exc}"
