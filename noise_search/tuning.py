"""Private hyperparameter tuning: the privacy of returning the best of a random number of runs.

Papernot and Steinke (ICLR 2022, "Hyperparameter Tuning with Renyi Differential Privacy")
bound the Renyi DP of this procedure: draw ``K`` from a distribution fixed in advance, run the
mechanism ``K`` times, each time with hyperparameters drawn at random independently of the
data, and release only the best run (its output, hyperparameters and score). If one run is
``(lambda, eps(lambda))``-RDP at every order, the selected result is ``(lambda, eps'(lambda))``-RDP
with (docs/privacy.md section 7):

* ``K`` truncated negative binomial with shape ``eta`` in (-1, inf) and parameter ``gamma`` in
  (0, 1) (``eta = 0`` logarithmic, ``eta = 1`` geometric), their Theorem 2::

      eps'(lambda) = eps(lambda) + (1 + eta) min_mu [(1 - 1/mu) eps(mu) + log(1/gamma)/mu]
                     + log(E[K]) / (lambda - 1)

* ``K`` Poisson with mean ``m`` (``shape = inf``), their Theorem 6::

      eps'(lambda) = eps(lambda) + m delta_hat + log(m) / (lambda - 1)

  with ``delta_hat`` the single run's delta at ``eps_hat = log(1 + 1/(lambda - 1))``.

Both are applied on the accountant's order grid (``mu`` ranges over the same grid), then RDP's
monotonicity in the order carries each value down to smaller orders. dp-accounting implements
the same theorems for ``shape >= 0`` (``RepeatAndSelectDpEvent``); the tests compare.

:class:`TuningDistribution` is the distribution of ``K``: its parameter from the mean, its
probability mass function and an exact sampler, so the sweep draws ``K`` from exactly the law
the bound assumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from noise_search.errors import ParameterError

#: The Poisson limit of the truncated negative binomial (``shape = inf``).
POISSON = math.inf

#: Largest mean number of runs accepted (a sweep draws this many trials per cell on average).
MAX_MEAN = 1e6


#: Smallest parameter ``gamma`` a truncated negative binomial may have: below it ``gamma`` is no
#: longer a normal float (a shape near -1 with a mean well above 1 needs such a law).
MIN_GAMMA = 1e-300

#: The quantile of ``K`` a sweep states, and caps (``tuning.max_runs``), before it starts.
RUNS_QUANTILE = 0.999


def check_tuning(
    mean: float, shape: float, *, mean_field: str = "mean", shape_field: str = "shape"
) -> tuple[float, float]:
    """Validate a tuning distribution: ``shape`` in (-1, inf) or ``inf`` (Poisson); ``mean`` in
    [1, 1e6] for Poisson and (1, 1e6] for a truncated negative binomial (which never draws 0),
    whose parameter ``gamma`` must be at least :data:`MIN_GAMMA` (a shape near -1 is refused
    with the smallest shape the mean allows)."""
    if isinstance(shape, bool) or not isinstance(shape, (int, float)) or math.isnan(shape):
        raise ParameterError(shape_field, f"must be a number > -1 or inf (Poisson), got {shape!r}")
    if not shape > -1.0:
        raise ParameterError(
            shape_field, f"must be > -1 (a truncated negative binomial's shape) or inf (Poisson), got {shape:g}"
        )
    if isinstance(mean, bool) or not isinstance(mean, (int, float)) or math.isnan(mean):
        raise ParameterError(mean_field, f"must be a number in [1, {MAX_MEAN:g}], got {mean!r}")
    if shape == POISSON:
        if not 1.0 <= mean <= MAX_MEAN:
            raise ParameterError(mean_field, f"must be in [1, {MAX_MEAN:g}] (mean number of runs), got {mean:g}")
        return float(mean), float(shape)
    if not 1.0 < mean <= MAX_MEAN:
        raise ParameterError(
            mean_field,
            f"must be in (1, {MAX_MEAN:g}] for a truncated negative binomial (it draws at least one run), got {mean:g}",
        )
    if _solve_log_gamma(float(mean), float(shape)) is None:
        if shape < 0 and _log_tnb_mean(math.log(MIN_GAMMA), shape) < math.log(mean):
            raise ParameterError(
                shape_field,
                f"must be > {_min_shape(float(mean)):.4g} with mean {mean:g}, got {shape:g}: closer to -1 the law "
                f"needs a parameter gamma below {MIN_GAMMA:g} (a tail too heavy to draw from or bound)",
            )
        raise ParameterError(mean_field, f"no truncated negative binomial with shape {shape:g} has mean {mean:g}")
    return float(mean), float(shape)


def _tnb_mean(gamma: float, shape: float) -> float:
    """Mean of the truncated negative binomial with parameters ``gamma`` in (0, 1), ``shape``."""
    if shape == 0.0:
        return (1.0 - gamma) / (gamma * -math.log(gamma))
    # eta (1 - gamma) / (gamma (1 - gamma^eta)), with 1 - gamma^eta = -expm1(eta log gamma)
    return shape * (1.0 - gamma) / (gamma * -math.expm1(shape * math.log(gamma)))


def _log_tnb_mean(log_gamma: float, shape: float) -> float:
    """``log`` of the truncated negative binomial's mean at ``log(gamma)`` < 0, computed in logs
    (no underflow of ``gamma`` itself): ``mean = eta (1 - gamma) / (gamma (1 - gamma^eta))``."""
    x, eta = log_gamma, shape
    log_one_minus_gamma = math.log(-math.expm1(x))
    if eta == 0.0:
        return log_one_minus_gamma - x - math.log(-x)
    # |1 - gamma^eta|: in (0, 1) for eta > 0; gamma^eta - 1 > 0 for eta < 0, in logs without overflow
    log_denominator = math.log(-math.expm1(eta * x)) if eta > 0.0 else eta * x + math.log(-math.expm1(-eta * x))
    return math.log(abs(eta)) + log_one_minus_gamma - log_denominator - x


def _solve_log_gamma(mean: float, shape: float) -> float | None:
    """``log(gamma)`` of the truncated negative binomial with ``mean`` and ``shape`` (the mean
    falls from +inf at ``gamma -> 0`` to 1 at ``gamma -> 1``), or None when ``gamma`` would be
    below :data:`MIN_GAMMA` or the mean is too close to 1 to solve for."""
    target = math.log(mean)
    lo, hi = math.log(MIN_GAMMA), -1e-12
    if _log_tnb_mean(lo, shape) < target or _log_tnb_mean(hi, shape) > target:
        return None
    return float(brentq(lambda x: _log_tnb_mean(x, shape) - target, lo, hi, xtol=1e-15, rtol=1e-14))


def _min_shape(mean: float) -> float:
    """The smallest shape in (-1, 0) whose law with ``mean`` has ``gamma >= MIN_GAMMA``, rounded up
    to 4 significant digits (the mean grows with the shape at a fixed ``gamma``)."""
    x = math.log(MIN_GAMMA)
    eta = brentq(lambda e: _log_tnb_mean(x, e) - math.log(mean), -1.0 + 1e-15, 0.0, xtol=1e-15)
    digits = 3 - math.floor(math.log10(abs(eta)))
    return math.ceil(eta * 10**digits) / 10**digits


@dataclass(frozen=True)
class TuningDistribution:
    """The law of the number of runs ``K``: truncated negative binomial (``shape`` finite) or
    Poisson (``shape = inf``), parametrised by its mean.

    ``gamma`` is the truncated negative binomial's parameter solved from ``mean``; ``mean`` is
    then recomputed from ``gamma`` (to rounding), so the bound and the sampler use one law.
    """

    mean: float
    shape: float
    gamma: float | None = None

    @classmethod
    def from_mean(cls, mean: float, shape: float) -> TuningDistribution:
        m, eta = check_tuning(mean, shape)
        if eta == POISSON:
            return cls(m, eta, None)
        log_gamma = _solve_log_gamma(m, eta)
        assert log_gamma is not None  # check_tuning refused the laws it cannot solve
        gamma = math.exp(log_gamma)
        return cls(_tnb_mean(gamma, eta), eta, gamma)

    @property
    def name(self) -> str:
        if self.shape == POISSON:
            return "poisson"
        if self.shape == 0.0:
            return "logarithmic"
        if self.shape == 1.0:
            return "geometric"
        return "truncated-negative-binomial"

    def pmf(self, k: np.ndarray | int) -> np.ndarray:
        """``P[K = k]`` for integers ``k >= 0`` (0 for ``k = 0`` unless Poisson)."""
        k = np.atleast_1d(np.asarray(k, dtype=np.int64))
        if self.shape == POISSON:
            from scipy.stats import poisson

            return poisson.pmf(k, self.mean)
        top = int(max(k.max(initial=0), 1))
        table = np.zeros(top + 1)
        table[1:] = np.exp(self._log_pmf_table(top))
        return np.where(k >= 1, table[np.clip(k, 0, top)], 0.0)

    def _log_pmf_table(self, top: int) -> np.ndarray:
        """``log P[K = k]`` for ``k = 1..top`` by the ratio ``P[k+1]/P[k] = (1-gamma)(k+eta)/(k+1)``."""
        eta, g = self.shape, float(self.gamma)  # type: ignore[arg-type]
        if eta == 0.0:
            log_p1 = math.log1p(-g) - math.log(-math.log(g))
        else:  # eta (1 - gamma) / (gamma^-eta - 1): numerator and denominator share eta's sign
            log_p1 = math.log(eta * (1.0 - g) / math.expm1(-eta * math.log(g)))
        ks = np.arange(1, top, dtype=float)
        steps = math.log1p(-g) + np.log(ks + eta) - np.log(ks + 1.0)
        return log_p1 + np.concatenate([[0.0], np.cumsum(steps)])

    def quantile(self, p: float = RUNS_QUANTILE, limit: int = 10_000_000) -> int | None:
        """The ``p``-quantile of ``K``: the least ``k`` with ``P[K <= k] >= p``, computed exactly from the
        probability mass function (summed in blocks up to ``limit``); None when it is above ``limit``."""
        if self.shape == POISSON:
            from scipy.stats import poisson

            k = int(poisson.ppf(p, self.mean))
            return k if k <= limit else None
        total, start, block = 0.0, 1, 1 << 16
        while start <= limit:
            stop = min(start + block, limit + 1)
            cum = total + np.cumsum(np.exp(self._log_pmf_range(start, stop)))
            hit = int(np.searchsorted(cum, p))
            if hit < len(cum):
                return start + hit
            total, start, block = float(cum[-1]), stop, block * 2
        return None

    def tail(self, k: int) -> float:
        """``P[K > k]`` for an integer ``k >= 0``, from the probability mass function."""
        if self.shape == POISSON:
            from scipy.stats import poisson

            return float(poisson.sf(k, self.mean))
        return max(0.0, 1.0 - float(np.sum(np.exp(self._log_pmf_range(1, k + 1))))) if k >= 1 else 1.0

    def _log_pmf_range(self, start: int, stop: int) -> np.ndarray:
        """``log P[K = k]`` for ``k = start..stop-1`` (``start >= 1``), by the same recurrence as
        :meth:`_log_pmf_table` from ``log P[K = 1]`` and ``log Gamma``: the log ratio summed to ``k``
        is ``(k - 1) log(1 - gamma) + log Gamma(k + eta) - log Gamma(1 + eta) - log Gamma(k + 1)``."""
        from scipy.special import gammaln

        eta, g = self.shape, float(self.gamma)  # type: ignore[arg-type]
        log_p1 = float(self._log_pmf_table(1)[0])
        k = np.arange(start, stop, dtype=float)
        return log_p1 + (k - 1.0) * math.log1p(-g) + gammaln(k + eta) - gammaln(1.0 + eta) - gammaln(k + 1.0)

    def runs_summary(self, limit: int = 10_000_000) -> dict[str, float | int | None]:
        """What a user is told about ``K`` before any run: its mean and its 99.9% quantile
        (None when above ``limit``)."""
        return {"expected": self.mean, "quantile_999": self.quantile(RUNS_QUANTILE, limit)}

    def sample(self, rng: np.random.Generator) -> int:
        """One draw of ``K`` (inverse transform on the exact probability mass function)."""
        if self.shape == POISSON:
            return int(rng.poisson(self.mean))
        u = rng.random()
        eta, g = self.shape, float(self.gamma)  # type: ignore[arg-type]
        p = float(np.exp(self._log_pmf_table(1)[0]))
        cum, k = p, 1
        while cum < u and p > 0.0:
            p *= (1.0 - g) * (k + eta) / (k + 1.0)
            k += 1
            cum += p
        return k


def _runs_text(k: int | None, limit: int) -> str:
    return f"{k:,}" if k is not None else f"above {limit:,}"


def delta_from_rdp(rdp: np.ndarray, orders: np.ndarray, epsilon: float) -> float:
    """The smallest delta at ``epsilon`` that the RDP curve proves, by the conversion of
    :func:`noise_search.rdp.epsilon_from_rdp` solved for delta (orders with infinite RDP are
    skipped; at most 1)."""
    rdp = np.asarray(rdp, float)
    orders = np.asarray(orders, float)
    ok = np.isfinite(rdp) & (orders > 1.0)
    if not ok.any():
        return 1.0
    a, r = orders[ok], rdp[ok]
    log_delta = (a - 1.0) * (r - epsilon + np.log1p(-1.0 / a)) - np.log(a)
    return float(min(math.exp(min(float(np.min(log_delta)), 0.0)), 1.0))


def repeat_and_select_rdp(rdp: np.ndarray, orders: np.ndarray, dist: TuningDistribution) -> np.ndarray:
    """RDP at ``orders`` of the best of ``K ~ dist`` runs, each with RDP curve ``rdp`` (same
    orders, all ``> 1``); ``+inf`` where no bound is available."""
    rdp = np.asarray(rdp, float)
    orders = np.asarray(orders, float)
    if rdp.shape != orders.shape:
        raise ValueError("rdp and orders must have the same shape")
    if np.any(orders <= 1.0):
        raise ValueError("repeat-and-select needs orders > 1")
    if dist.shape == POISSON:
        out = np.empty_like(rdp)
        for i, lam in enumerate(orders):
            eps_hat = math.log1p(1.0 / (lam - 1.0))
            out[i] = rdp[i] + dist.mean * delta_from_rdp(rdp, orders, eps_hat) + math.log(dist.mean) / (lam - 1.0)
    else:
        gamma = float(dist.gamma)  # type: ignore[arg-type]
        with np.errstate(invalid="ignore"):
            inner = (1.0 - 1.0 / orders) * rdp + math.log(1.0 / gamma) / orders
        c = (1.0 + dist.shape) * float(np.min(np.where(np.isfinite(inner), inner, np.inf)))
        out = rdp + c + math.log(dist.mean) / (orders - 1.0)
    out = np.where(np.isnan(out), np.inf, out)
    # RDP does not decrease with the order: a bound at a larger order holds at a smaller one.
    by_order = np.argsort(orders)
    suffix_min = np.minimum.accumulate(out[by_order][::-1])[::-1]
    result = np.empty_like(out)
    result[by_order] = suffix_min
    return result
