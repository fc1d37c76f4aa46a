"""Stage 2 of the search: the calibrated Laplace and Gaussian baselines of every target.

Laplace ``u0`` by the RDP accountant; Gaussian ``sigma`` by the RDP accountant through
:func:`calibrate_gaussian_rdp` (a root search on subsets of the orders, then one full check).
When the problem asks for a tighter accountant, each family it supports is calibrated again
under it (PRV: Gaussian; PLD: Gaussian and Laplace) and the RDP entry is kept beside it
(``gaussian_rdp``, ``laplace_rdp``). The LMO stays on its RDP bound, the only proven one for the
mixture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from noise_search.accountants import PrivacySpent, compute_epsilon, get_accountant
from noise_search.calibration import calibrate, solve_monotone
from noise_search.errors import CalibrationError, UnsupportedError
from noise_search.mechanisms import MAX_U0, Gaussian, Laplace
from noise_search.rdp import GAUSSIAN_ORDERS, epsilon_from_rdp
from noise_search.search.problem import SearchProblem, mechanism_objective
from noise_search.search_result import BaselineEntry

#: Relative precision of the calibrated Laplace u0 and Gaussian sigma (tighter than the optimiser's
#: 1e-6 scale polish, so baseline calibration slack never shows up as an LMO advantage).
BASELINE_REL_TOL = 1e-7

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


def _gaussian_proxy(sigma: float, orders: np.ndarray, q: float, steps: int, delta: float) -> tuple[float, float]:
    """Epsilon of the sampled Gaussian from the accountant's RDP at a *subset* of its orders.

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
    cal = calibrate(Gaussian, epsilon=target, delta=d, sample_rate=q, steps=t)  # pragma: no cover - defensive
    return cal.mechanism, cal.spent  # pragma: no cover


def _epsilon_or_inf(acc: Any, mech: Laplace | Gaussian, kw: dict[str, Any]) -> float:
    """``acc``'s epsilon for ``mech``, or ``inf`` where the library cannot evaluate it (extreme
    parameters): the root search then treats the point as missing the target and never returns it."""
    try:
        return acc.epsilon(mech, **kw).epsilon
    except UnsupportedError:
        return math.inf


def _tighter_gaussian_sigma(acc: Any, target: float, sigma_rdp: float, kw: dict[str, Any]) -> float:
    """Smallest sigma meeting ``target`` under ``acc`` (PRV/PLD), searched below the RDP sigma.

    Those accountants are tighter than RDP, so their sigma is at most the RDP one and usually
    within a few percent: bracketing in ``[sigma_rdp / 1.5, sigma_rdp]`` first saves most calls.
    """

    def eps(s: float) -> float:
        return _epsilon_or_inf(acc, Gaussian(s), kw)

    lower = sigma_rdp / 1.5
    sigma, _ = solve_monotone(eps, target, increasing=False, start=sigma_rdp, lower=lower, upper=1e5, rel_tol=1e-4)
    if sigma <= lower * (1 + 1e-9):  # the bracket was too narrow: search the whole range
        sigma, _ = solve_monotone(eps, target, increasing=False, start=lower, lower=1e-3, upper=1e5, rel_tol=1e-4)
    return sigma


def _tighter_laplace_u0(acc: Any, target: float, u0_rdp: float, kw: dict[str, Any]) -> float:
    """Largest ``u0`` meeting ``target`` under ``acc`` (PLD), searched from the RDP ``u0`` (epsilon
    grows with ``u0``; the tighter accountant usually allows a little more)."""

    def eps(u: float) -> float:
        return _epsilon_or_inf(acc, Laplace(u), kw)

    return solve_monotone(eps, target, increasing=True, start=u0_rdp, lower=1e-6, upper=MAX_U0, rel_tol=1e-4)[0]


def tighter_laplace(problem: SearchProblem, target: float) -> BaselineEntry:
    """The Laplace calibrated to ``target`` under ``problem.accountant`` (which supports Laplace)."""
    kw = {"sample_rate": problem.sample_rate, "steps": problem.steps, "delta": problem.delta}
    try:
        cal = calibrate(Laplace, epsilon=target, rel_tol=BASELINE_REL_TOL, **kw)
    except CalibrationError as exc:
        return BaselineEntry(Laplace.name, None, accountant=problem.accountant, error=str(exc))
    return _tighter_laplace(problem, target, _entry(Laplace.name, cal.mechanism, cal.spent, problem), kw)


@dataclass(frozen=True)
class Baselines:
    """The calibrated baselines of one target."""

    laplace: BaselineEntry
    gaussian: BaselineEntry
    gaussian_rdp: BaselineEntry | None = None  #: the RDP Gaussian when ``gaussian`` is PRV/PLD
    laplace_rdp: BaselineEntry | None = None  #: the RDP Laplace when ``laplace`` is PLD


def _entry(family: str, mech: Laplace | Gaussian, spent: PrivacySpent, problem: SearchProblem) -> BaselineEntry:
    return BaselineEntry(
        family,
        mech,
        spent.epsilon,
        spent.order,
        mechanism_objective(mech, problem.objective, problem.gamma),
        spent.accountant,
    )


def _tighter_laplace(problem: SearchProblem, target: float, rdp: BaselineEntry, kw: dict[str, Any]) -> BaselineEntry:
    """The Laplace calibrated under ``problem.accountant`` (which supports Laplace)."""
    try:
        if not isinstance(rdp.mechanism, Laplace):
            cal = calibrate(Laplace, epsilon=target, accountant=problem.accountant, **kw)
            return _entry(Laplace.name, cal.mechanism, cal.spent, problem)
        mech = Laplace(_tighter_laplace_u0(get_accountant(problem.accountant), target, rdp.mechanism.u0, kw))
        return _entry(Laplace.name, mech, compute_epsilon(mech, accountant=problem.accountant, **kw), problem)
    except (CalibrationError, UnsupportedError) as exc:
        return BaselineEntry(Laplace.name, None, accountant=problem.accountant, error=str(exc))


def calibrate_baselines(problem: SearchProblem, target: float) -> Baselines:
    """Calibrated Laplace and Gaussian for ``target``: by RDP, and by ``problem.accountant`` too
    for the families it supports (the RDP entries then move to ``laplace_rdp``/``gaussian_rdp``)."""
    kw = {"sample_rate": problem.sample_rate, "steps": problem.steps, "delta": problem.delta}
    try:
        # tight: a loose u0 would let a near-degenerate LMO "beat" Laplace by the tolerance
        cal = calibrate(Laplace, epsilon=target, rel_tol=BASELINE_REL_TOL, **kw)
        laplace = _entry(Laplace.name, cal.mechanism, cal.spent, problem)
    except CalibrationError as exc:
        laplace = BaselineEntry(Laplace.name, None, error=str(exc))
    try:
        mech, spent = calibrate_gaussian_rdp(target, **kw)
        rdp_entry = _entry(Gaussian.name, mech, spent, problem)
    except CalibrationError as exc:
        mech, rdp_entry = None, BaselineEntry(Gaussian.name, None, accountant="rdp", error=str(exc))
    if problem.accountant == "rdp":
        return Baselines(laplace, rdp_entry)
    laplace_rdp = None
    if get_accountant(problem.accountant).supports_class(Laplace):
        laplace, laplace_rdp = _tighter_laplace(problem, target, laplace, kw), laplace
    try:
        if mech is None:
            cal = calibrate(Gaussian, epsilon=target, accountant=problem.accountant, **kw)
            g_mech, g_spent = cal.mechanism, cal.spent
        else:  # the RDP sigma is an upper bound on the tighter accountant's answer: start there
            acc = get_accountant(problem.accountant)
            g_mech = Gaussian(_tighter_gaussian_sigma(acc, target, mech.sigma, kw))
            g_spent = compute_epsilon(g_mech, accountant=problem.accountant, **kw)
        gaussian = _entry(Gaussian.name, g_mech, g_spent, problem)
    except CalibrationError as exc:
        gaussian = BaselineEntry(Gaussian.name, None, accountant=problem.accountant, error=str(exc))
    return Baselines(laplace, gaussian, rdp_entry, laplace_rdp)
