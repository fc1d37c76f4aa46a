"""Renyi moments of per-coordinate LMO noise with ``u`` hidden: upper bounds that hold in ``d`` dimensions.

The RDP bound of :mod:`noise_search.rdp` averages the Laplace moments over ``u`` (as if each
coordinate's ``u`` were revealed). The noise a trial draws keeps ``u`` hidden: one coordinate has
the scale-mixture density ``f(x) = E_u[(u/2) e^(-u|x|)]`` (:func:`noise_search.hidden_u.log_density`),
and its Renyi moments ``m_j(s) = E_f[(f(x - s) / f(x))^j]`` for a shift ``s`` are smaller, often
by a lot (joint convexity). docs/privacy.md ("RDP with u hidden") proves what this module computes:

* **d dimensions.** For an L1 shift ``(s_1, ..., s_d)`` with ``sum s_i <= 1`` (units of the clipping
  bound) the product pair's moment is ``prod_i m_j(s_i)``, and
  ``sum_i log m_j(s_i) <= (sum_i s_i) sup_s log m_j(s) / s <= B_j`` with
  ``B_j = sup_{0 < s <= 1} log m_j(s) / s``. No worst split is needed: ``B_j`` bounds them all.
* **One shift, certified.** ``log m_j(s)`` is bounded above by binning ``x``: each bin's mass under
  ``f`` is exact (the survival function ``M(-y)/2``), and the likelihood ratio is monotone on each
  of ``x < 0``, ``0 <= x <= s`` and ``x > s``, so its largest value in a bin sits at a known end
  (:func:`log_moments`).
* **The sup over s.** On ``s`` in ``[a, b]``, ``log m_j(s) <= log m_j(a) + j phi(b - a)`` and
  ``<= log m_j(b) + j phi(b - a)`` (``phi`` the largest loss of a shift, :func:`~noise_search.hidden_u.max_loss`),
  so a grid of shifts with these interval bounds covers ``[s_0, 1]``; below ``s_0`` a second-order
  bound ``log m_j(s) / s <= min(j L, K_j(s_0) / s_0)`` holds (:func:`small_shift_bound`). The grid is
  refined where an interval's bound is loose; the result is an upper bound however coarse the grid.

Everything is in units of the clipping bound. Orders ``j = 0..max_order``; ``B_0 = B_1 = 0``.
Floating-point rounding is covered by a margin (``1e-10`` on every log term), not by interval
arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from noise_search.errors import check_int, check_range
from noise_search.hidden_u import log_density, max_loss
from noise_search.lower_bound import log_bin_mass
from noise_search.mechanisms import LMO

#: Added to every log likelihood ratio and log bin mass: covers the rounding of their evaluation.
_MARGIN = 1e-10


def slope_bound(mech: LMO) -> float:
    """``L = E[u^2] / E[u]``: the largest slope of ``-log f`` (the posterior mean of ``u`` at ``x = 0``),
    so ``phi(t) <= L t`` for every shift ``t >= 0``."""
    p = mech.arrays
    mean = float(p.mean()[0])
    var = float((p.a1**2 * p.G_k * p.G_theta**2 + (p.a3 / p.E_lambda) ** 2 + p.a4**2 * (p.U_b - p.U_a) ** 2 / 12.0)[0])
    return (var + mean * mean) / mean * (1.0 + 1e-9)


@dataclass(frozen=True)
class Bins:
    """Bins of one coordinate's output for a shift ``s``, in units of ``1 / L`` (``L`` = :func:`slope_bound`).

    ``mid_width`` on ``[0, s]`` (at most ``max_mid`` bins there: wider bins keep the bound valid, only looser);
    on each side the first bin is ``edge_width`` wide and widths grow by ``growth`` per bin out to
    ``reach`` (units of the clipping bound), then one open bin.
    """

    mid_width: float = 2.5e-4
    edge_width: float = 1e-3
    growth: float = 1.015
    reach: float = 1e7
    max_mid: int = 8000

    def __post_init__(self) -> None:
        check_range("mid_width", self.mid_width, gt=0.0, le=0.1)
        check_range("edge_width", self.edge_width, gt=0.0, le=0.1)
        check_range("growth", self.growth, gt=1.0, le=2.0)
        check_range("reach", self.reach, gt=1.0)
        check_int("max_mid", self.max_mid, ge=1)

    def offsets(self, scale: float) -> np.ndarray:
        """Distances ``0 < g_1 < ... < g_n`` of the side edges from ``0`` (left) and ``s`` (right)."""
        w = self.edge_width * scale
        n = math.ceil(math.log1p(self.reach / w * (self.growth - 1.0)) / math.log(self.growth))
        return w * np.expm1(np.arange(1, n + 1) * math.log(self.growth)) / (self.growth - 1.0)


def _log_ratio(mech: LMO, x: np.ndarray, shift: float) -> np.ndarray:
    """``log f(x - s) - log f(x)`` at finite ``x``."""
    return log_density(mech, x - shift) - log_density(mech, x)


#: Below the smallest normal double: a term that underflows loses less than this (in scaled units).
_UNDERFLOW = 2.3e-308


def _log_power_sums(log_q: np.ndarray, top: int, ratio: np.ndarray, *, upper: bool = True) -> np.ndarray:
    """``log sum_b exp(log_q[b] + j ratio[b])`` for ``j = 0..top``, by repeated multiplication.

    Scaled by the largest mass and the largest ratio, every factor is at most 1, so nothing
    overflows; a term that underflows is counted back as ``_UNDERFLOW`` per bin when ``upper`` (the
    products' rounding, at most ``top`` ulps, is far inside the ``1e-10`` margins).
    """
    q_max, l_max = float(log_q.max()), float(ratio.max())
    step = np.exp(ratio - l_max)
    term = np.exp(log_q - q_max)
    sums = np.empty(top + 1)
    for k in range(top + 1):
        sums[k] = term.sum()
        term *= step
    if upper:
        sums += ratio.size * _UNDERFLOW
    with np.errstate(divide="ignore"):
        return q_max + np.arange(top + 1) * l_max + np.log(sums)


def _bins_for(
    mech: LMO, s: float, bins: Bins, *, with_min: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``(log_mass, ratio_max, ratio_min, below)`` per bin for shift ``s``: the bin's exact log mass
    under ``f``, bounds on its log likelihood ratio (``ratio_min`` only ``with_min``), and whether it
    lies left of ``s``."""
    scale = 1.0 / slope_bound(mech)
    g = bins.offsets(scale)
    n_mid = min(bins.max_mid, max(1, math.ceil(s / (bins.mid_width * scale))))
    mid = np.linspace(0.0, s, n_mid + 1)
    edges = np.concatenate([[-np.inf], -g[::-1], mid, s + g, [np.inf]])
    lo, hi = edges[:-1], edges[1:]
    log_q = log_bin_mass(mech, lo, hi) + _MARGIN
    left, right = hi <= 0.0, lo >= s
    # the end where the ratio is largest: far end on the left, right end on [0, s], left end beyond s
    max_end = np.where(left | right, lo, hi)
    ratio_max = np.zeros(lo.shape)  # open bins: the ratio's limit is <= 1 on the left ...
    fin = np.isfinite(max_end)
    ratio_max[fin] = _log_ratio(mech, max_end[fin], s) + _MARGIN
    ratio_min = None
    if with_min:
        min_end = np.where(left | right, hi, lo)
        ratio_min = np.zeros(lo.shape)  # ... and >= 1 on the right
        fin = np.isfinite(min_end)
        ratio_min[fin] = _log_ratio(mech, min_end[fin], s) - _MARGIN
    return log_q, ratio_max, ratio_min, ~right


def log_moment_parts(mech: LMO, shift: float, max_order: int, bins: Bins = Bins()) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds on the parts of ``m_j(s)`` from ``x < s`` and from ``x >= s`` (logs, ``j = 0..max_order``)."""
    s = check_range("shift", shift, gt=0.0, le=1.0)
    top = check_int("max_order", max_order, ge=1)
    log_q, ratio_max, _, below = _bins_for(mech, s, bins, with_min=False)
    return _log_power_sums(log_q[below], top, ratio_max[below]), _log_power_sums(log_q[~below], top, ratio_max[~below])


def log_moments(mech: LMO, shift: float, max_order: int, bins: Bins = Bins()) -> tuple[np.ndarray, np.ndarray]:
    """``(upper, lower)`` on ``log m_j(s)`` for ``j = 0..max_order`` (one coordinate, shift ``s`` in ``(0, 1]``).

    ``m_j(s) = E_f[(f(x - s)/f(x))^j]``. Each bin contributes its exact mass times the ratio at the
    bin's end where the ratio is largest (``upper``) or smallest (``lower``): the ratio increases
    towards ``-inf`` on ``x < 0``, increases on ``[0, s]`` and decreases on ``x > s``
    (``log f`` is decreasing and convex in ``|x|``). ``lower`` is for checks; only ``upper`` is a bound.
    """
    s = check_range("shift", shift, gt=0.0, le=1.0)
    top = check_int("max_order", max_order, ge=1)
    log_q, ratio_max, ratio_min, _ = _bins_for(mech, s, bins)
    assert ratio_min is not None
    return _log_power_sums(log_q, top, ratio_max), _log_power_sums(log_q - 2 * _MARGIN, top, ratio_min, upper=False)


def small_shift_bound(mech: LMO, s0: float, max_order: int) -> np.ndarray:
    """An upper bound on ``sup_{0 < s <= s0} log m_j(s) / s`` for ``j = 0..max_order``.

    With ``|log ratio| <= phi(s) <= L s = v`` and ``E_f[ratio] = 1``: Taylor's theorem and the
    Bhatia-Davis inequality give ``m_j(s) <= 1 + K_j``, ``K_j = j(j-1)/2 e^((j-2)v) (e^v - 1)(1 - e^-v)``,
    and ``K_j(s)/s`` increases with ``s``; also ``log m_j(s) <= j phi(s) <= j L s``.
    """
    big_l = slope_bound(mech)
    v = big_l * s0
    j = np.arange(max_order + 1, dtype=float)
    spread = math.log(math.expm1(v) * -math.expm1(-v))  # Bhatia-Davis: Var(ratio) <= (e^v - 1)(1 - e^-v)
    log_k = np.log(np.maximum(j * (j - 1) / 2.0, 1e-300)) + np.maximum(j - 2, 0) * v + spread
    out = np.minimum(np.exp(log_k) / s0, j * big_l)
    out[:2] = 0.0
    return out * (1.0 + 1e-9)


@dataclass(frozen=True)
class SupResult:
    """``bound[j]`` >= ``sup_{0 < s <= 1} log m_j(s) / s`` (proven); ``attained[j]`` = the largest value
    ``upper(s)/s`` seen at a grid point (close to the sup from above, not a bound); ``shifts`` = the grid."""

    bound: np.ndarray
    attained: np.ndarray
    shifts: np.ndarray


def log_moment_sup(
    mech: LMO,
    max_order: int,
    *,
    rel_tol: float = 2e-3,
    max_evals: int = 160,
    bins: Bins = Bins(),
) -> SupResult:
    """``B_j``: an upper bound on ``sup_{0 < s <= 1} log m_j(s) / s`` for ``j = 0..max_order``.

    Starts from a geometric grid of shifts on ``[s_0, 1]`` (``s_0 = min(0.05, 0.01 / L)``) and splits
    the interval whose bound is loosest, relative to the best grid value and to the order's
    tolerance ``rel_tol * max(1, j / 8)`` (high orders weigh little in a subsampled bound), until every
    interval is within tolerance or ``max_evals`` shifts have been evaluated. The bound holds at any
    stage; refining usually tightens it (a split interval is bounded afresh, not by the old bound).
    """
    top = check_int("max_order", max_order, ge=2)
    tol = check_range("rel_tol", rel_tol, gt=0.0, lt=1.0)
    big_l = slope_bound(mech)
    s0 = min(0.05, 0.01 / big_l)
    parts = {float(s): log_moment_parts(mech, float(s), top, bins) for s in np.geomspace(s0, 1.0, 13)}
    small = small_shift_bound(mech, s0, top)
    j = np.arange(top + 1, dtype=float)
    tol_j = tol * np.maximum(1.0, j / 8.0)

    while True:
        grid = np.array(sorted(parts))
        below = np.array([parts[s][0] for s in grid])  # (S, J)
        above = np.array([parts[s][1] for s in grid])
        attained = (np.logaddexp(below, above) / grid[:, None]).max(axis=0)
        step = j[None, :] * (max_loss(mech, np.diff(grid)) + _MARGIN)[:, None]  # (S-1, J)
        # from the left end a, a larger shift raises the ratio only right of a; from the right end b,
        # a smaller shift raises it only left of b (each by at most e^(j phi(b - a)))
        from_left = np.logaddexp(below[:-1], above[:-1] + step)
        from_right = np.logaddexp(below[1:] + step, above[1:])
        inner = np.minimum(from_left, from_right) / grid[:-1, None]  # (S-1, J)
        bound = np.maximum(inner.max(axis=0), small)
        bound[:2] = 0.0
        attained[:2] = 0.0
        # looseness of each interval: its worst order's excess over the grid's best, in tolerances
        excess = (inner[:, 2:] - attained[None, 2:]) / (tol_j[None, 2:] * attained[None, 2:] + 1e-6)
        worst = excess.max(axis=1)
        k = int(np.argmax(worst))
        if worst[k] <= 1.0 or len(parts) >= max_evals:
            return SupResult(bound, attained, grid)
        s = float(math.sqrt(grid[k] * grid[k + 1]))
        parts[s] = log_moment_parts(mech, s, top, bins)


@lru_cache(maxsize=64)
def hidden_log_moments(mech: LMO, max_order: int, max_evals: int = 160) -> np.ndarray:
    """``B_j`` for ``j = 0..max_order`` (:func:`log_moment_sup`), cached per mixture; read-only."""
    out = log_moment_sup(mech, max_order, max_evals=max_evals).bound
    out.setflags(write=False)
    return out
