"""Calibration: the noise parameter that meets a target epsilon (docs/privacy.md section 5).

:func:`solve_monotone` is the generic routine: given ``epsilon(x)`` monotone in a positive
parameter ``x``, find the least private ``x`` whose epsilon is still ``<= target``. It
brackets the root geometrically, then narrows the bracket with Brent's method on
``log x`` and always returns the bracket end that was *evaluated* and meets the target,
so the returned parameter fed back to the accountant satisfies the target by construction.

:func:`calibrate_parameter` applies it to any parameter -> privacy-event factory (the whole
run's event, see :mod:`noise_search.events`) under any accountant; :func:`calibrate` is the
family shorthand: Gaussian ``sigma`` (epsilon decreases with sigma), Laplace ``u0`` and an LMO
scaling factor (epsilon increases with them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy.optimize import brentq

from noise_search.accountants import ACCOUNTANTS, Accountant, PrivacySpent, check_accounting_inputs, get_accountant
from noise_search.errors import CalibrationError, UnsupportedError, check_range
from noise_search.events import DpEvent, dp_sgd_event, tuned_event
from noise_search.mechanisms import LMO, MIN_SIGMA, Gaussian, Laplace, Mechanism


@dataclass(frozen=True)
class Calibration:
    """A calibrated mechanism and its (re-checked) privacy spend."""

    mechanism: Mechanism
    spent: PrivacySpent
    target_epsilon: float


def solve_monotone(
    epsilon_of: Callable[[float], float],
    target: float,
    *,
    increasing: bool,
    start: float = 1.0,
    lower: float = 1e-8,
    upper: float = 1e8,
    rel_tol: float = 1e-4,
) -> tuple[float, float]:
    """Largest (``increasing``) or smallest (decreasing) ``x`` in ``[lower, upper]`` with
    ``epsilon_of(x) <= target``, to relative precision ``rel_tol``.

    Returns ``(x, epsilon_of(x))``; ``epsilon_of(x) <= target`` always holds.
    Raises :class:`CalibrationError` when no ``x`` in range meets the target.
    """
    cache: dict[float, float] = {}

    def f(log_x: float) -> float:
        if log_x not in cache:
            cache[log_x] = float(epsilon_of(math.exp(log_x)))
        return cache[log_x]

    def ok(log_x: float) -> bool:
        return f(log_x) <= target

    lo_lim, hi_lim = math.log(lower), math.log(upper)
    x = min(max(math.log(start), lo_lim), hi_lim)
    good: float | None = x if ok(x) else None
    bad: float | None = None if good is not None else x
    # From a feasible point walk towards less noise until infeasible; from an infeasible
    # one walk towards more noise until feasible. Steps double each time.
    less_noise = 1.0 if increasing else -1.0
    direction = less_noise if good is not None else -less_noise
    step = math.log(4.0)
    while (good is None or bad is None) and lo_lim < x + direction * 1e-12 < hi_lim:
        x = min(max(x + direction * step, lo_lim), hi_lim)
        step *= 2.0
        if ok(x):
            good = x
        else:
            bad = x
    if good is None:
        raise CalibrationError(
            f"no parameter in [{lower:g}, {upper:g}] reaches epsilon <= {target:g} "
            f"(best found {min(cache.values()):.4g})"
        )
    if bad is None:
        return math.exp(good), f(good)

    def g(log_x: float) -> float:
        v = f(log_x)
        return (v - target) if math.isfinite(v) else 1e300

    tol = math.log1p(rel_tol)
    try:
        root = brentq(g, min(good, bad), max(good, bad), xtol=tol / 4, maxiter=200)
        probes = (root - tol / 2, root + tol / 2)
    except ValueError:  # no numerical sign change (flat or non-finite): plain bisection
        probes = ()
    # Classify the two points around Brent's root: they usually close the bracket at once.
    for x in probes:
        if min(good, bad) < x < max(good, bad):
            if ok(x):
                good = x
            else:
                bad = x
    while abs(good - bad) > tol:
        mid = 0.5 * (good + bad)
        if ok(mid):
            good = mid
        else:
            bad = mid
    return math.exp(good), f(good)


def calibrate_parameter(
    event_of: Callable[[float], DpEvent],
    *,
    epsilon: float,
    delta: float,
    increasing: bool,
    accountant: str | Accountant = "rdp",
    start: float = 1.0,
    lower: float = 1e-8,
    upper: float = 1e8,
    rel_tol: float = 1e-4,
) -> tuple[float, PrivacySpent]:
    """The least private parameter ``x`` in ``[lower, upper]`` whose event ``event_of(x)``
    (the whole run) spends at most ``epsilon`` under ``accountant``.

    ``increasing``: whether epsilon grows with ``x`` (an inverse scale) or falls (a noise
    multiplier). Returns ``(x, spent)`` with ``spent.epsilon <= epsilon``.
    """
    target = check_range("epsilon", epsilon, gt=0.0)
    d = check_range("delta", delta, gt=0.0, lt=1.0)
    acc = get_accountant(accountant) if isinstance(accountant, str) else accountant

    def spend(x: float) -> PrivacySpent:
        return type(acc).fresh(acc).compose(event_of(x)).spent(d)

    x, _ = solve_monotone(
        lambda v: spend(v).epsilon,
        target,
        increasing=increasing,
        start=start,
        lower=lower,
        upper=upper,
        rel_tol=rel_tol,
    )
    spent = spend(x)
    if not spent.epsilon <= target:  # defensive: solve_monotone already guarantees this
        raise CalibrationError(f"calibrated parameter {x} spends {spent.epsilon} > target {target}")
    return x, spent


#: Per family: the mechanism of a parameter, whether epsilon increases with it, and its range.
_FAMILIES: dict[str, tuple[Callable[[float], Mechanism], bool, float, float]] = {
    "gaussian": (Gaussian, False, MIN_SIGMA, 1e5),
    "laplace": (Laplace, True, 1e-6, 1e3),
}


def least_noise_limit(mechanism: Mechanism) -> float | None:
    """The parameter value of least noise :func:`calibrate` searches for ``mechanism``'s family
    (Gaussian: its smallest sigma, Laplace: its largest u0); None for other mechanisms."""
    entry = _FAMILIES.get(mechanism.name)
    if entry is None:
        return None
    _, increasing, lower, upper = entry
    return upper if increasing else lower


def at_least_noise_limit(mechanism: Mechanism) -> bool:
    """Whether a calibrated Gaussian or Laplace sits at :func:`least_noise_limit` (to 1e-9): the
    target epsilon was not binding there, and the spend is below it."""
    limit = least_noise_limit(mechanism)
    if limit is None:
        return False
    value = mechanism.sigma if isinstance(mechanism, Gaussian) else mechanism.u0
    return abs(value - limit) <= 1e-9 * limit


def calibrate(
    family: str | LMO,
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    rel_tol: float = 1e-4,
    tuning: tuple[float, float] | None = None,
) -> Calibration:
    """Calibrate ``gaussian`` (sigma), ``laplace`` (u0) or an LMO (scale of ``u``) to ``epsilon``
    for ``steps`` Poisson-sampled releases at ``sample_rate``.

    Passing an :class:`LMO` calibrates ``base.scaled(c)`` over the factor ``c``. ``tuning``
    ``(mean, shape)``: each run's noise is set so that the best of a random number of runs
    (:func:`~noise_search.events.tuned_event`) meets ``epsilon``.
    """
    target = check_range("epsilon", epsilon, gt=0.0)
    q, t, d = check_accounting_inputs(sample_rate, steps, delta)
    acc = get_accountant(accountant)
    if isinstance(family, LMO):
        base = family
        if not acc.supports(base):
            able = " or ".join(n for n in ACCOUNTANTS if get_accountant(n).supports(base))
            raise UnsupportedError(f"accountant: '{acc.name}' does not support the lmo mechanism (use {able})")
        make: Callable[[float], Mechanism] = base.scaled
        increasing, lower, upper = True, 1e-8, 1e8
    elif family in _FAMILIES:
        make, increasing, lower, upper = _FAMILIES[family]
    else:
        raise UnsupportedError(f"mechanism: calibration supports gaussian, laplace or an LMO base, got {family!r}")

    def event_of(v: float) -> DpEvent:
        run = dp_sgd_event(make(v), q, t)
        return run if tuning is None else tuned_event(run, *tuning)

    if tuning is not None:
        tuned_event(dp_sgd_event(make(1.0), q, t), *tuning)  # bad tuning input fails before the search
    x, spent = calibrate_parameter(
        event_of,
        epsilon=target,
        delta=d,
        increasing=increasing,
        accountant=acc,
        start=1.0,
        lower=lower,
        upper=upper,
        rel_tol=rel_tol,
    )
    return Calibration(make(x), spent, target)
