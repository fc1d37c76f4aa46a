"""A proven *lower* bound on the epsilon of LMO (or Laplace) noise: what no accountant can beat.

This is not a privacy guarantee and lmo-dp never calibrates, logs or stops on it. It answers a
different question: how far could a tighter accountant than the RDP bound move LMO? With ``u``
hidden the d-dimensional worst case is unknown (docs/privacy.md, "Tight accounting with u
hidden"), but one neighbouring pair is certain: the whole clipping bound ``C`` on a single
coordinate. Any sound epsilon for the mechanism is at least the epsilon of that pair.

The bound is made rigorous by post-processing, which can only lower hockey-stick divergences:

* keep one coordinate (the others have the same law under both neighbours) and put its output
  into bins; each bin's probability is exact, from the noise's survival function
  ``P(Z > y) = E[e^(-u y)] / 2 = M(-y) / 2`` (``M`` the MGF of ``u``, ``y >= 0``, units of ``C``);
* Poisson subsampling mixes the binned laws exactly as it mixes the continuous ones, and the
  binned T-fold composition is a post-processing of the real one;
* dp-accounting's optimistic discretisation rounds every privacy loss *down*; the composition
  may drop a tail mass far below ``delta`` (at most 1e-15), and the epsilon is read at a delta
  raised by twice that, which undoes any increase the dropped mass could cause.

So :func:`epsilon_lower_bound` is at most the true epsilon of the real mechanism, up to floating
point, for both adjacency directions (the larger one is returned). Finer bins make it tighter.
It holds for both LMO variants (the shared variant's single coordinate has the same law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from noise_search.errors import check_int, check_range
from noise_search.mechanisms import LMO, Laplace
from noise_search.mgf import log_mgf

_LOG_HALF = math.log(0.5)


@dataclass(frozen=True)
class Binning:
    """Bins for one coordinate's output, in units of the clipping bound.

    Width ``width`` on ``[-core, core]``, then widths growing by ``growth`` per bin out to
    ``reach``, then one open bin on each side.
    """

    width: float = 1e-3
    core: float = 12.0
    growth: float = 1.01
    reach: float = 1e6

    def __post_init__(self) -> None:
        check_range("width", self.width, gt=0.0, le=1.0)
        check_range("core", self.core, ge=1.0)
        check_range("growth", self.growth, gt=1.0, le=2.0)
        check_range("reach", self.reach, gt=self.core)

    def edges(self) -> np.ndarray:
        """Sorted edges, symmetric about 0, with ``-inf`` and ``+inf`` at the ends."""
        core = np.arange(0.0, self.core + self.width / 2, self.width)
        steps = math.ceil(math.log(self.reach / core[-1]) / math.log(self.growth))
        outer = core[-1] * self.growth ** np.arange(1, steps + 1)
        right = np.concatenate([core[1:], outer])
        return np.concatenate([[-np.inf], -right[::-1], [0.0], right, [np.inf]])


def log_survival(mech: LMO | Laplace, y: np.ndarray) -> np.ndarray:
    """``log P(Z > y)`` for one coordinate's noise with ``u`` hidden, ``y >= 0`` in units of ``C``
    (``-inf`` at ``y = inf``)."""
    y = np.asarray(y, float)
    out = np.full(y.shape, -np.inf)
    finite = np.isfinite(y)
    if isinstance(mech, Laplace):
        out[finite] = _LOG_HALF - mech.u0 * y[finite]
    else:
        out[finite] = _LOG_HALF + log_mgf(mech.arrays, -y[finite])[0]
    return out


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """``log(1 - e^x)`` for ``x <= 0``, accurate at both ends."""
    x = np.asarray(x, float)
    with np.errstate(divide="ignore"):
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def log_bin_mass(mech: LMO | Laplace, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``log P(lo < Z <= hi)`` elementwise (``lo < hi``; infinite ends allowed)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
    out = np.empty(lo.shape)
    right, left = lo >= 0.0, hi <= 0.0
    for mask, a, b in ((right, lo, hi), (left, -hi, -lo)):  # left bins by symmetry
        sa, sb = log_survival(mech, a[mask]), log_survival(mech, b[mask])
        out[mask] = sa + _log1mexp(sb - sa)
    mid = ~(right | left)
    tails = np.exp(log_survival(mech, hi[mid])) + np.exp(log_survival(mech, -lo[mid]))
    out[mid] = np.log1p(-tails)
    return out


def binned_pair(mech: LMO | Laplace, sample_rate: float, binning: Binning) -> tuple[np.ndarray, np.ndarray]:
    """Log bin masses of the remove pair: ``lower`` = the noise ``Z``, ``upper`` = ``Z - 1`` with
    probability ``sample_rate``, else ``Z`` (the example's whole shift on one coordinate)."""
    e = binning.edges()
    lower = log_bin_mass(mech, e[:-1], e[1:])
    shifted = log_bin_mass(mech, e[:-1] + 1.0, e[1:] + 1.0)
    q = sample_rate
    with np.errstate(divide="ignore"):
        upper = np.logaddexp(math.log(q) + shifted, math.log1p(-q) + lower) if q < 1.0 else shifted
    return lower, upper


def _truncation(delta: float) -> float:
    """Tail mass dp-accounting may drop in each composition, far below ``delta``."""
    return min(1e-15, 1e-5 * delta)


def lower_bound_pld(
    mech: LMO | Laplace,
    *,
    sample_rate: float,
    steps: int,
    binning: Binning | None = None,
    value_discretization_interval: float = 2e-5,
    tail_mass_truncation: float = 0.0,
):
    """dp-accounting's ``PrivacyLossDistribution`` (both directions) of the binned one-coordinate
    pair, optimistic and composed ``steps`` times.

    With ``tail_mass_truncation = 0`` every delta it gives is at most the real one. With ``tau > 0``
    the composition keeps its size down by moving at most ``tau`` of mass to infinite loss and
    folding at most ``tau`` more into the kept range (the FFT wraps around), so its deltas are at
    most the real ones plus ``2 tau``.
    """
    import dp_accounting

    q = check_range("sample_rate", sample_rate, gt=0.0, le=1.0)
    t = check_int("steps", steps, ge=1)
    check_range("value_discretization_interval", value_discretization_interval, gt=0.0, le=0.1)
    tau = check_range("tail_mass_truncation", tail_mass_truncation, ge=0.0, lt=1e-3)
    lower, upper = binned_pair(mech, q, binning or Binning())
    idx = np.flatnonzero(np.isfinite(lower) | np.isfinite(upper))
    pld = dp_accounting.pld.privacy_loss_distribution.from_two_probability_mass_functions(
        {int(i): float(lower[i]) for i in idx},
        {int(i): float(upper[i]) for i in idx},
        pessimistic_estimate=False,
        value_discretization_interval=value_discretization_interval,
        symmetric=False,
    )
    return pld.self_compose(t, tail_mass_truncation=tau) if t > 1 else pld


def epsilon_lower_bound(
    mech: LMO | Laplace,
    *,
    sample_rate: float,
    steps: int,
    delta: float,
    binning: Binning | None = None,
    value_discretization_interval: float = 2e-5,
) -> float:
    """A lower bound on the epsilon of ``steps`` Poisson-sampled releases of ``mech`` (clipping
    bound 1, add/remove neighbours): no sound accountant can report less.

    ``sample_rate`` in (0, 1], ``steps >= 1``, ``delta`` in (0, 1). About 0.3 s at T = 197.
    The composition may drop tail mass ``tau`` (far below ``delta``) to stay small, which can raise
    its deltas by at most ``2 tau``; the epsilon is therefore read at ``delta + 2 tau``: wherever
    the composed delta exceeds that, the real one exceeds ``delta``.
    """
    d = check_range("delta", delta, gt=0.0, lt=1.0)
    tau = _truncation(d)
    pld = lower_bound_pld(
        mech,
        sample_rate=sample_rate,
        steps=steps,
        binning=binning,
        value_discretization_interval=value_discretization_interval,
        tail_mass_truncation=tau,
    )
    return max(float(pld.get_epsilon_for_delta(d + 2.0 * tau)), 0.0)
