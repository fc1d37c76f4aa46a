"""The offline noise search: for every target epsilon, the least noisy LMO, Laplace and Gaussian.

:class:`SearchProblem` is the whole question, validated once where it enters: target epsilons,
``delta``, Poisson sample rate ``q``, steps ``T``, objective (``mean-abs``, ``variance`` or
``usefulness`` at ``gamma``), space (:mod:`noise_search.spaces`), strategy and seed.

:func:`run_search` answers it in three stages, each a list of independent tasks given to an
:class:`Executor` (in-process here, Ray tasks in :mod:`orchestrator.search_runner`; both run the
same functions on the same inputs, so the results are identical):

1. **Grid** (:func:`search_block`): the space in blocks; each block's RDP curves are computed
   once (:mod:`noise_search.evaluator`), epsilons follow for ``T``, and the objective is computed
   only for rows meeting the largest target. A block returns its feasible rows and its
   smallest epsilon.
2. **Baselines** (:func:`calibrate_baselines`): per target, the calibrated Laplace ``u0`` and the
   calibrated Gaussian ``sigma`` (RDP; PRV or PLD as well when asked).
3. **Optimize** (strategy ``optimize``, :func:`optimize_target`): per target, scipy's
   differential evolution over the continuous parameters of the space in log scale, from the
   grid's best candidates of several discrete families, with the epsilon constraint handled
   by DE's feasibility rules, followed by an exact 1-D polish of the overall weight scale.

Every reported LMO is re-checked by the RDP accountant
(:func:`noise_search.accountants.compute_epsilon`) and only kept if it meets its target; an
optimised point is only kept if it is at least as good as the grid's. A target that no
candidate meets is reported as infeasible, not raised.

Under the joint-convexity bound a plain Laplace with ``u0 = E[u]`` is never worse than the
mixture (PRIVACY_MATH.md section 6), so the best LMO is normally dominated by the calibrated
Laplace; each result says so in its ``note`` rather than hiding it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from noise_search.accountants import ACCOUNTANTS, PrivacySpent, check_accounting_inputs, compute_epsilon
from noise_search.calibration import calibrate, solve_monotone
from noise_search.errors import CalibrationError, ParameterError, check_int, require_finite_number
from noise_search.evaluator import (
    MAXIMISED,
    OBJECTIVES,
    check_objective,
    evaluate_block,
    objective_values,
    rdp_curves,
    to_score,
)
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism
from noise_search.mgf import MixtureArrays
from noise_search.rdp import GAUSSIAN_ORDERS, epsilon_from_rdp
from noise_search.spaces import SPACES, PaperSpace, Space, WideSpace, lmo_from_row, lmo_params, make_space

STRATEGIES: tuple[str, ...] = ("grid", "optimize")
#: Relative precision of the calibrated Laplace u0 and Gaussian sigma (tighter than the optimiser's
#: 1e-6 scale polish, so baseline calibration slack never shows up as an LMO advantage).
BASELINE_REL_TOL = 1e-7
#: Objectives within this relative distance count as a tie in the dominance note.
TIE_REL_TOL = 1e-6
#: Candidates per block (one Ray task): paper blocks are cheap (orders <= 20), wide ones are not.
DEFAULT_BLOCK_SIZE = {"paper": 8192, "wide": 2048}

# Coarse Gaussian RDP orders (a subset of GAUSSIAN_ORDERS) for the first calibration pass.
_GAUSSIAN_COARSE_ORDERS = np.array(
    [
        1.5,
        2,
        2.5,
        3,
        4,
        5,
        6,
        7,
        8,
        10,
        12,
        14,
        16,
        20,
        24,
        28,
        32,
        40,
        48,
        56,
        64,
        80,
        96,
        112,
        128,
        160,
        192,
        224,
        256,
    ],
    dtype=float,
)


# --- the problem ---------------------------------------------------------------------------------


def _check_targets(targets: Any) -> tuple[float, ...]:
    if isinstance(targets, (int, float)):
        targets = (targets,)
    try:
        values = [require_finite_number("targets", t) for t in targets]
    except TypeError:
        raise ParameterError("targets", f"must be a list of epsilons > 0, got {targets!r}") from None
    if not values:
        raise ParameterError("targets", "at least one target epsilon is needed")
    bad = [v for v in values if v <= 0]
    if bad:
        raise ParameterError("targets", f"every target epsilon must be > 0, got {bad[0]!r}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class SearchProblem:
    """One noise-search question, validated on construction.

    ``targets`` are sorted and de-duplicated. ``space`` is ``"paper"``, ``"wide"`` or a
    :class:`~noise_search.spaces.PaperSpace` / :class:`~noise_search.spaces.WideSpace`
    (stored resolved). ``candidates`` sizes the wide space. ``accountant`` is the Gaussian
    baseline's accountant (``rdp``, ``prv`` or ``pld``; the RDP one is always reported).
    ``gamma`` is required for ``usefulness``. ``block_size`` is the number of candidates per
    task (default per space, :data:`DEFAULT_BLOCK_SIZE`; results do not depend on it).
    ``optimizer_starts`` (distinct discrete families) and ``optimizer_generations`` size the
    ``optimize`` strategy; ``seed`` seeds it and the wide space.
    """

    targets: tuple[float, ...]
    delta: float
    sample_rate: float
    steps: int
    objective: str = "mean-abs"
    gamma: float | None = None
    space: str | Space = "paper"
    strategy: str = "grid"
    seed: int = 0
    accountant: str = "rdp"
    candidates: int | None = None
    block_size: int | None = None
    optimizer_starts: int = 3
    optimizer_generations: int = 60

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "targets", _check_targets(self.targets))
        q, t, d = check_accounting_inputs(self.sample_rate, self.steps, self.delta)
        set_(self, "sample_rate", q)
        set_(self, "steps", t)
        set_(self, "delta", d)
        set_(self, "gamma", check_objective(self.objective, self.gamma))
        if self.strategy not in STRATEGIES:
            raise ParameterError("strategy", f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ParameterError("accountant", f"must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}")
        set_(self, "seed", check_int("seed", self.seed, ge=0))
        set_(self, "optimizer_starts", check_int("optimizer_starts", self.optimizer_starts, ge=1))
        set_(self, "optimizer_generations", check_int("optimizer_generations", self.optimizer_generations, ge=1))
        if self.candidates is not None:
            set_(self, "candidates", check_int("candidates", self.candidates, ge=1))
        if isinstance(self.space, str):
            if self.space not in SPACES:
                raise ParameterError("space", f"must be one of {', '.join(SPACES)}, got {self.space!r}")
            set_(self, "space", make_space(self.space, size=self.candidates, seed=self.seed))
        elif not isinstance(self.space, (PaperSpace, WideSpace)):
            raise ParameterError("space", f"must be one of {', '.join(SPACES)} or a space object")
        if self.block_size is None:
            set_(self, "block_size", DEFAULT_BLOCK_SIZE[self.space.name])
        set_(self, "block_size", check_int("block_size", self.block_size, ge=1))

    @property
    def n_blocks(self) -> int:
        return -(-self.space.size // self.block_size)

    def settings(self) -> dict[str, Any]:
        """The inputs as the result file's ``settings`` object."""
        space = self.space.describe()
        return {
            "targets": list(self.targets),
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "objective": self.objective,
            "gamma": self.gamma,
            "space": space.pop("space"),
            "space_size": space.pop("size"),
            "space_details": space,
            "strategy": self.strategy,
            "seed": self.seed,
            "accountant": self.accountant,
            "lmo_accountant": "rdp",
            "block_size": self.block_size,
        }

    def score(self, values: np.ndarray) -> np.ndarray:
        return to_score(np.asarray(values, float), self.objective)


def mechanism_objective(mech: Mechanism, objective: str, gamma: float | None) -> float:
    """A mechanism's objective through its own methods (the values the result reports)."""
    if objective == "mean-abs":
        return float(mech.mean_abs())
    if objective == "variance":
        return float(mech.variance())
    return float(mech.usefulness(gamma))


# --- executors --------------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs independent tasks. ``submit`` may start a task at once; ``gather`` returns results in order."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def gather(self, handles: Sequence[Any], on_done: Callable[[int], None] | None = None) -> list[Any]: ...


@dataclass
class _Deferred:
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class LocalExecutor:
    """Runs every task in this process, in ``gather`` order."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Deferred:
        return _Deferred(fn, args)

    def gather(self, handles: Sequence[_Deferred], on_done: Callable[[int], None] | None = None) -> list[Any]:
        out = []
        for i, h in enumerate(handles):
            out.append(h.fn(*h.args))
            if on_done is not None:
                on_done(i)
        return out


# --- stage 1: grid -------------------------------------------------------------------------------------


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


def _accept(problem: SearchProblem, mech: LMO, target: float, source: str, index: int | None) -> LmoPick | None:
    spent = compute_epsilon(
        mech, sample_rate=problem.sample_rate, steps=problem.steps, delta=problem.delta, accountant="rdp"
    )
    if not spent.epsilon <= target:
        return None
    return LmoPick(mech, spent, mechanism_objective(mech, problem.objective, problem.gamma), source, index)


def grid_pick(problem: SearchProblem, grid: GridOutcome, target: float, *, tries: int = 50) -> LmoPick | None:
    """The grid's best candidate for ``target`` that the accountant confirms (next best if a
    rounding-level disagreement rejects it)."""
    ranked = grid.ranked(problem, target)[:tries]
    if ranked.size == 0:
        return None
    rows = problem.space.take(grid.index[ranked])
    for j, pos in enumerate(ranked):
        pick = _accept(problem, lmo_from_row(rows, j), target, "grid", int(grid.index[pos]))
        if pick is not None:
            return pick
    return None


# --- stage 2: baselines ----------------------------------------------------------------------------


def _gaussian_proxy(sigma: float, orders: np.ndarray, q: float, steps: int, delta: float) -> tuple[float, float]:
    """Epsilon of the sampled Gaussian from Opacus's RDP at a *subset* of the accountant's orders.

    A minimum over fewer orders is an upper bound on the accountant's epsilon, so a sigma that
    meets the target here meets it under the accountant too.
    """
    from noise_search.accountants import gaussian_rdp_curve

    eps, order = epsilon_from_rdp(steps * gaussian_rdp_curve(sigma, q, orders)[None, :], orders, delta)
    return float(eps[0]), float(order[0])


def calibrate_gaussian_rdp(
    target: float, *, sample_rate: float, steps: int, delta: float
) -> tuple[Gaussian, PrivacySpent]:
    """The smallest sigma (to 1e-4 relative) meeting ``target`` under the RDP accountant.

    Same answer as :func:`noise_search.calibration.calibrate` at a fraction of the cost: the
    root search runs on subsets of the orders (coarse, then the accountant's orders around the
    coarse optimum), and only the final sigma is evaluated on all orders, by the accountant.
    """
    q, t, d = sample_rate, steps, delta
    coarse = _GAUSSIAN_COARSE_ORDERS
    s1, _ = solve_monotone(
        lambda s: _gaussian_proxy(s, coarse, q, t, d)[0],
        target,
        increasing=False,
        start=1.0,
        lower=1e-3,
        upper=1e5,
        rel_tol=1e-3,
    )
    o1 = _gaussian_proxy(s1, coarse, q, t, d)[1]
    i = int(np.searchsorted(coarse, o1))
    lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, coarse.size - 1)]
    every = GAUSSIAN_ORDERS
    fine = every[(every >= lo) & (every <= hi)]
    s2, _ = solve_monotone(
        lambda s: _gaussian_proxy(s, fine, q, t, d)[0],
        target,
        increasing=False,
        start=s1,
        lower=s1 / 1.2,
        upper=1e5,
        rel_tol=BASELINE_REL_TOL,
    )
    for sigma in (s2, s1):
        mech = Gaussian(sigma)
        spent = compute_epsilon(mech, sample_rate=q, steps=t, delta=d, accountant="rdp")
        if spent.epsilon <= target:
            return mech, spent
    cal = calibrate("gaussian", epsilon=target, delta=d, sample_rate=q, steps=t)  # pragma: no cover - defensive
    return cal.mechanism, cal.spent  # pragma: no cover


def _entry(mech: Mechanism, spent: PrivacySpent, problem: SearchProblem) -> dict[str, Any]:
    param = {"u": mech.u0} if isinstance(mech, Laplace) else {"sigma": mech.sigma}
    out = {
        **param,
        "epsilon": spent.epsilon,
        "order": spent.order,
        "objective": mechanism_objective(mech, problem.objective, problem.gamma),
    }
    if isinstance(mech, Gaussian):
        out["accountant"] = spent.accountant
    return out


def _tighter_gaussian_sigma(acc: Any, target: float, sigma_rdp: float, kw: dict[str, Any]) -> float:
    """Smallest sigma meeting ``target`` under ``acc`` (PRV/PLD), searched below the RDP sigma.

    Those accountants are tighter than RDP, so their sigma is at most the RDP one and usually
    within a few percent: bracketing in ``[sigma_rdp / 1.5, sigma_rdp]`` first saves most calls.
    """

    def eps(s: float) -> float:
        return acc.epsilon(Gaussian(s), **kw).epsilon

    lower = sigma_rdp / 1.5
    sigma, _ = solve_monotone(eps, target, increasing=False, start=sigma_rdp, lower=lower, upper=1e5, rel_tol=1e-4)
    if sigma <= lower * (1 + 1e-9):  # the bracket was too narrow: search the whole range
        sigma, _ = solve_monotone(eps, target, increasing=False, start=lower, lower=1e-3, upper=1e5, rel_tol=1e-4)
    return sigma


def calibrate_baselines(problem: SearchProblem, target: float) -> dict[str, Any]:
    """Calibrated Laplace (RDP) and Gaussian (RDP, plus ``problem.accountant`` if not RDP) for ``target``."""
    kw = {"sample_rate": problem.sample_rate, "steps": problem.steps, "delta": problem.delta}
    out: dict[str, Any] = {}
    try:
        # tight: a loose u0 would let a near-degenerate LMO "beat" Laplace by the tolerance
        cal = calibrate("laplace", epsilon=target, rel_tol=BASELINE_REL_TOL, **kw)
        out["laplace"] = _entry(cal.mechanism, cal.spent, problem)
    except CalibrationError as exc:
        out["laplace"] = {"u": None, "error": str(exc)}
    try:
        mech, spent = calibrate_gaussian_rdp(target, **kw)
        rdp_entry = _entry(mech, spent, problem)
    except CalibrationError as exc:
        mech, rdp_entry = None, {"sigma": None, "accountant": "rdp", "error": str(exc)}
    if problem.accountant == "rdp":
        out["gaussian"] = rdp_entry
        return out
    out["gaussian_rdp"] = rdp_entry
    try:
        if mech is None:
            cal = calibrate("gaussian", epsilon=target, accountant=problem.accountant, **kw)
            g_mech, g_spent = cal.mechanism, cal.spent
        else:  # the RDP sigma is an upper bound on the tighter accountant's answer: start there
            from noise_search.accountants import get_accountant

            acc = get_accountant(problem.accountant)
            sigma = _tighter_gaussian_sigma(acc, target, mech.sigma, kw)
            g_mech = Gaussian(sigma)
            g_spent = compute_epsilon(g_mech, accountant=problem.accountant, **kw)
        out["gaussian"] = _entry(g_mech, g_spent, problem)
    except CalibrationError as exc:
        out["gaussian"] = {"sigma": None, "accountant": problem.accountant, "error": str(exc)}
    return out


# --- stage 3: optimize ------------------------------------------------------------------------------


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


# --- the whole search ----------------------------------------------------------------------------------


@dataclass
class SearchOutcome:
    """A finished search: the result object and the grid data behind the frontier outputs."""

    problem: SearchProblem
    results: list[dict[str, Any]]
    evaluated: int
    seconds: float
    grid: GridOutcome
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result file / ``--json`` object (schema: :mod:`noise_search.search_result`)."""
        return {
            "settings": self.problem.settings(),
            "results": self.results,
            "evaluated": self.evaluated,
            "seconds": self.seconds,
            **self.extra,
        }


def _better(problem: SearchProblem, a: float, b: float, rel_tol: float = 0.0) -> bool:
    """Whether objective ``a`` is at least as good as ``b`` (or within ``rel_tol`` of it)."""
    slack = rel_tol * abs(b)
    return a >= b - slack if problem.objective in MAXIMISED else a <= b + slack


def honesty_note(problem: SearchProblem, row: dict[str, Any]) -> tuple[list[str], str | None]:
    """Which baselines are at least as good as the best LMO, and a sentence saying so."""
    if not row["feasible"]:
        return [], None
    lmo = row["objective"]
    dominated = [
        fam
        for fam in ("laplace", "gaussian")
        if row.get(fam, {}).get("objective") is not None and _better(problem, row[fam]["objective"], lmo, TIE_REL_TOL)
    ]
    if not dominated:
        return [], None
    parts = []
    if "laplace" in dominated:
        parts.append(
            f"the calibrated Laplace (u0 = {row['laplace']['u']:.4g}, {problem.objective} "
            f"{row['laplace']['objective']:.4g})"
        )
    if "gaussian" in dominated:
        parts.append(
            f"the calibrated Gaussian (sigma = {row['gaussian']['sigma']:.4g}, {problem.objective} "
            f"{row['gaussian']['objective']:.4g}; L2 sensitivity, not L1)"
        )
    note = (
        f"The best LMO ({problem.objective} {lmo:.4g}) is dominated by {' and '.join(parts)} at epsilon "
        f"{row['epsilon_target']:g}. This is expected: under the joint-convexity RDP bound a plain Laplace "
        "with u0 = E[u] is never worse than the mixture (PRIVACY_MATH.md section 6); only a tighter "
        "accountant for the mixture could change that."
    )
    return dominated, note


def _infeasible_note(problem: SearchProblem, grid: GridOutcome, target: float) -> str:
    where = problem.space.describe()["space"]
    smallest = (
        f"{grid.min_epsilon:.4g}" if math.isfinite(grid.min_epsilon) else "inf (no candidate has a finite epsilon)"
    )
    return (
        f"infeasible: no candidate of the {where} space has epsilon <= {target:g} at q = {problem.sample_rate:g}, "
        f"T = {problem.steps}, delta = {problem.delta:g} (smallest epsilon in the space: {smallest})"
    )


def build_row(
    problem: SearchProblem, target: float, pick: LmoPick | None, baselines: dict[str, Any], grid: GridOutcome
) -> dict[str, Any]:
    row: dict[str, Any] = {"epsilon_target": target, "feasible": pick is not None}
    if pick is None:
        row.update({"epsilon": None, "order": None, "objective": None, "params": None, "source": None})
    else:
        row.update(
            {
                "epsilon": pick.spent.epsilon,
                "order": pick.spent.order,
                "objective": pick.objective,
                "params": lmo_params(pick.mechanism),
                "source": pick.source,
                "mean_u": pick.mechanism.mean_u(),
            }
        )
    row.update(baselines)
    dominated, note = honesty_note(problem, row)
    row["dominated_by"] = dominated
    row["note"] = note if pick is not None else _infeasible_note(problem, grid, target)
    return row


def run_search(
    problem: SearchProblem,
    executor: Executor | None = None,
    *,
    on_block_done: Callable[[int], None] | None = None,
) -> SearchOutcome:
    """Answer ``problem``; ``executor`` decides where tasks run (default: this process)."""
    ex = executor or LocalExecutor()
    t0 = time.perf_counter()
    base_handles = [ex.submit(calibrate_baselines, problem, t) for t in problem.targets]
    block_handles = [ex.submit(search_block, problem, b) for b in range(problem.n_blocks)]
    grid = reduce_blocks(ex.gather(block_handles, on_done=on_block_done))
    picks = [grid_pick(problem, grid, t) for t in problem.targets]
    evaluated = grid.evaluated
    if problem.strategy == "optimize":
        opt_handles = [
            ex.submit(optimize_target, problem, t, optimizer_starts(problem, grid, t), i)
            for i, t in enumerate(problem.targets)
        ]
        for i, (t, opt) in enumerate(zip(problem.targets, ex.gather(opt_handles), strict=True)):
            evaluated += opt.evaluations
            if opt.params is None:
                continue
            cand = _accept(problem, LMO.from_dict(opt.params), t, "optimize", None)
            if cand is not None and (picks[i] is None or _better(problem, cand.objective, picks[i].objective)):
                picks[i] = cand
    baselines = ex.gather(base_handles)
    results = [
        build_row(problem, t, pick, base, grid) for t, pick, base in zip(problem.targets, picks, baselines, strict=True)
    ]
    return SearchOutcome(problem, results, evaluated, time.perf_counter() - t0, grid)


__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "BlockSummary",
    "Executor",
    "GridOutcome",
    "LocalExecutor",
    "SearchOutcome",
    "SearchProblem",
    "calibrate_baselines",
    "calibrate_gaussian_rdp",
    "grid_pick",
    "optimize_target",
    "reduce_blocks",
    "run_search",
    "search_block",
]
