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


def check_tuning(
    mean: float, shape: float, *, mean_field: str = "mean", shape_field: str = "shape"
) -> tuple[float, float]:
    """Validate a tuning distribution: ``shape`` in (-1, inf) or ``inf`` (Poisson); ``mean`` in
    [1, 1e6] for Poisson and (1, 1e6] for a truncated negative binomial (which never draws 0)."""
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
    elif not 1.0 < mean <= MAX_MEAN:
        raise ParameterError(
            mean_field,
            f"must be in (1, {MAX_MEAN:g}] for a truncated negative binomial (it draws at least one run), got {mean:g}",
        )
    return float(mean), float(shape)


def _tnb_mean(gamma: float, shape: float) -> float:
    """Mean of the truncated negative binomial with parameters ``gamma`` in (0, 1), ``shape``."""
    if shape == 0.0:
        return (1.0 - gamma) / (gamma * -math.log(gamma))
    # eta (1 - gamma) / (gamma (1 - gamma^eta)), with 1 - gamma^eta = -expm1(eta log gamma)
    return shape * (1.0 - gamma) / (gamma * -math.expm1(shape * math.log(gamma)))


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
        # The mean falls from +inf (gamma -> 0) to 1 (gamma -> 1): solve on log(gamma).
        lo = -1.0
        while _tnb_mean(math.exp(lo), eta) < m:
            lo *= 2.0
            if lo < -1e4:
                raise ParameterError("mean", f"no truncated negative binomial with shape {eta:g} has mean {m:g}")
        hi = -1e-12
        log_gamma = brentq(lambda x: _tnb_mean(math.exp(x), eta) - m, lo, hi, xtol=1e-15, rtol=1e-14)
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
