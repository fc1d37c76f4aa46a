"""Calibration: the noise parameter that meets a target epsilon (docs/privacy.md section 5).

:func:`solve_monotone` is the generic routine: given ``epsilon(x)`` monotone in a positive
parameter ``x``, find the least private ``x`` whose epsilon is still ``<= target``. It
brackets the root geometrically, then narrows the bracket with Brent's method on
``log x`` and always returns the bracket end that was *evaluated* and meets the target,
so the returned parameter fed back to the accountant satisfies the target by construction.

:func:`calibrate_parameter` applies it to any parameter -> privacy-event factory (the whole
run's event, see :mod:`noise_search.events`) under any accountant; :func:`calibrate` is the
shorthand for a mechanism: its declared scalar noise parameter
(:attr:`~noise_search.mechanisms.Mechanism.noise_parameter`: Gaussian ``sigma``, epsilon
decreasing with it; Laplace ``u0``, epsilon increasing), or the one-parameter family through a
given mechanism (:meth:`~noise_search.mechanisms.Mechanism.noise_family`: an LMO's scaling
factor of ``u``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy.optimize import brentq

from noise_search.accountants import Accountant, PrivacySpent, accountants_for, check_accounting_inputs, get_accountant
from noise_search.errors import CalibrationError, InputError, UnsupportedError, check_range
from noise_search.events import DpEvent, dp_sgd_event, tuned_event
from noise_search.mechanisms import Mechanism, NoiseParameter, mechanism_class, mechanism_names


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


def noise_family(
    what: str | type[Mechanism] | Mechanism,
) -> tuple[Callable[[float], Mechanism], NoiseParameter, float]:
    """What :func:`calibrate` moves: ``(parameter value -> mechanism, the parameter, where the
    search starts)``. A name or class: its declared scalar noise parameter, from 1; a mechanism:
    the family through it (:meth:`~noise_search.mechanisms.Mechanism.noise_family`)."""
    if isinstance(what, Mechanism):
        return what.noise_family()
    try:
        cls = mechanism_class(what) if isinstance(what, str) else what
    except InputError:
        cls = None
    p = None if cls is None or not isinstance(cls, type) else cls.noise_parameter
    if cls is None or p is None:
        scalar = [n for n in mechanism_names() if mechanism_class(n).noise_parameter is not None]
        raise UnsupportedError(
            f"mechanism: calibration supports {', '.join(scalar)} (one scalar noise parameter) or a base mechanism "
            f"to rescale, got {what!r}"
        )
    return (lambda value: cls.from_params({p.name: value})), p, 1.0


def least_noise_limit(mechanism: Mechanism) -> float | None:
    """The value of least noise :func:`calibrate` searches for ``mechanism``'s scalar noise
    parameter (Gaussian: its smallest sigma, Laplace: its largest u0); None without one."""
    p = type(mechanism).noise_parameter
    return None if p is None else p.least_noise


def at_least_noise_limit(mechanism: Mechanism) -> bool:
    """Whether a calibrated mechanism's scalar noise parameter sits at :func:`least_noise_limit`
    (to 1e-9): the target epsilon was not binding there, and the spend is below it."""
    limit, value = least_noise_limit(mechanism), mechanism.noise_value()
    if limit is None or value is None:
        return False
    return abs(value - limit) <= 1e-9 * limit


def calibrate(
    family: str | type[Mechanism] | Mechanism,
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    rel_tol: float = 1e-4,
    tuning: tuple[float, float] | None = None,
) -> Calibration:
    """Calibrate a mechanism to ``epsilon`` for ``steps`` Poisson-sampled releases at ``sample_rate``.

    ``family``: a mechanism's name or class (its scalar noise parameter: Gaussian ``sigma``,
    Laplace ``u0``), or a mechanism to rescale along :meth:`~noise_search.mechanisms.Mechanism.noise_family`
    (an LMO: ``base.scaled(c)`` over the factor ``c``). ``tuning`` ``(mean, shape)``: each run's
    noise is set so that the best of a random number of runs
    (:func:`~noise_search.events.tuned_event`) meets ``epsilon``.
    """
    target = check_range("epsilon", epsilon, gt=0.0)
    q, t, d = check_accounting_inputs(sample_rate, steps, delta)
    acc = get_accountant(accountant)
    if isinstance(family, Mechanism) and not acc.supports(family):
        able = " or ".join(accountants_for(family))
        raise UnsupportedError(f"accountant: '{acc.name}' does not support the {family.name} mechanism (use {able})")
    make, parameter, start = noise_family(family)

    def event_of(v: float) -> DpEvent:
        run = dp_sgd_event(make(v), q, t)
        return run if tuning is None else tuned_event(run, *tuning)

    if tuning is not None:
        tuned_event(dp_sgd_event(make(1.0), q, t), *tuning)  # bad tuning input fails before the search
    x, spent = calibrate_parameter(
        event_of,
        epsilon=target,
        delta=d,
        increasing=parameter.increasing,
        accountant=acc,
        start=start,
        lower=parameter.lower,
        upper=parameter.upper,
        rel_tol=rel_tol,
    )
    return Calibration(make(x), spent, target)
