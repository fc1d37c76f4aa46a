"""Vectorised evaluation of blocks of LMO candidates: RDP curves, epsilons and objectives.

A block is a :class:`~noise_search.mgf.MixtureArrays` of ``n`` candidates. Everything here is
array code over the block; there is no per-candidate Python loop on the hot path.

* :func:`rdp_curves` -- per-step RDP of every candidate at integer orders ``2..K`` for one
  sample rate ``q`` (shape ``(n, K - 1)``), with the same formulas and functions as the RDP
  accountant (:func:`noise_search.rdp.log_expected_a`, :func:`noise_search.rdp.subsampled_rdp`).
  Computed once per ``(block, q)``; :meth:`RdpCurves.epsilon` turns it into ``(epsilon, order)``
  for any number of steps ``T`` and any ``delta`` without recomputing it.
* :func:`objective_values` -- ``mean-abs`` (``E[1/u]``), ``variance`` (``2 E[1/u**2]``) or
  ``usefulness`` (``1 - M(-gamma)``), exactly the quantities of :class:`~noise_search.mechanisms.LMO`.

Two things keep it fast without changing any number:

1. **Order truncation.** Order ``alpha`` is finite only while ``M(alpha - 1)`` is, i.e. while
   ``alpha - 1`` is inside the MGF's domain ``a1 G_theta t < 1``, ``a3 t < E_lambda``
   (docs/privacy.md section 3). :func:`max_finite_order` finds each row's last finite order
   ``K_i`` with the same floating-point expressions as :func:`noise_search.mgf.log_mgf`; rows
   are grouped by ``K_i`` (rounded up to a geometric ladder of levels) and each group is
   evaluated at orders up to its level only: every order past it is ``+inf`` for every row of
   the group, and orders between a row's ``K_i`` and the level come out ``+inf`` from the MGF
   itself. Rows with no finite order cost nothing. For the
   paper grid ``K_i <= 20`` (``a1 G_theta >= 0.05``), so the sampled-RDP sum is small.
2. **Factorised MGF.** ``log M = log M_Gamma + log M_Exp + log M_Uniform`` and each term depends on
   two or three fields only. :func:`factored_log_mgf` evaluates each term once per *distinct*
   ``(a1, G_k, G_theta)``, ``(a3, E_lambda)``, ``(a4, U_a, U_b)`` in the block and adds the
   gathered tables in the same order as :func:`~noise_search.mgf.log_mgf`, so the result is
   bitwise identical to it. On the paper grid a block of thousands of rows has at most 126,
   72 and 36 distinct terms; the quadrature of the objective then costs one gather-add and one
   log-sum-exp per node.

Memory is bounded by the block size: the largest temporaries are ``(rows, 417)`` quadrature
arrays, processed in chunks of :data:`QUADRATURE_CHUNK` rows, and ``(rows, K)`` curves.

Pure DP: the RDP accountant also reports ``T log(1 + q (e^eps0 - 1))`` when it is smaller, for
an LMO whose ``u`` is bounded (a Uniform only, ``eps0 = a4 U_b``, see
:func:`noise_search.accountants.pure_dp_epsilon`); :meth:`RdpCurves.epsilon` applies the same
rule with the accountant's own function, so candidate epsilons equal the accountant's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from noise_search.accountants import pure_dp_composition
from noise_search.errors import ParameterError, check_range
from noise_search.mgf import (
    MixtureArrays,
    inverse_moment_nodes,
    log_inverse_moment_from_log_mgf,
    log_mgf,
)
from noise_search.rdp import DEFAULT_ORDERS, epsilon_from_rdp, log_expected_a, subsampled_rdp

OBJECTIVES: tuple[str, ...] = ("mean-abs", "variance", "usefulness")
#: Objectives that are maximised (the others are minimised).
MAXIMISED: frozenset[str] = frozenset({"usefulness"})
#: Largest order evaluated, as the RDP accountant's default orders.
MAX_ORDER = int(DEFAULT_ORDERS.max())
#: Rows per chunk of the objective quadrature (a (rows, 417) float array is ~6.8 MB).
QUADRATURE_CHUNK = 2048
# Below this many rows factorising the MGF costs more than it saves.
_FACTOR_MIN_ROWS = 64
# Rows are grouped by their last finite order rounded up to one of these levels (ratio <= 1.25),
# so a block needs at most ~25 sampled-RDP calls whatever its spread of domains.
_ORDER_LEVELS = np.unique(np.ceil(np.geomspace(2, MAX_ORDER, 25)).astype(np.int64))
# Blocks smaller than this are evaluated as one group.
_GROUP_MIN_ROWS = 256


# --- MGF ----------------------------------------------------------------------------------------


def _distinct_rows(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of the stacked columns and, per input row, the index of its distinct row.

    Each column is coded by a 1-D ``np.unique`` and the codes are combined into one integer
    key (much faster than ``np.unique(..., axis=0)`` on float rows).
    """
    n = cols[0].shape[0]
    key = np.zeros(n, dtype=np.int64)
    for col in cols:
        values, codes = np.unique(col, return_inverse=True)
        key = key * values.size + codes.ravel()
    keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    del keys
    return np.stack([c[first] for c in cols], axis=1), inverse.ravel()


def factored_log_mgf(p: MixtureArrays, t: np.ndarray | float) -> np.ndarray:
    """``log E[exp(t u)]``, shape ``(n, len(t))``: bitwise equal to :func:`~noise_search.mgf.log_mgf`.

    Each component's term is computed once per distinct parameter tuple in the block (a
    sub-mixture holding only that component), then the gathered terms are added in
    ``log_mgf``'s order (Gamma, Exponential, Uniform).
    """
    t = np.atleast_1d(np.asarray(t, float))
    if len(p) < _FACTOR_MIN_ROWS:  # too few rows to share anything: the plain function is cheaper
        return log_mgf(p, t)
    g, g_inv = _distinct_rows(p.a1, p.G_k, p.G_theta)
    e, e_inv = _distinct_rows(p.a3, p.E_lambda)
    u, u_inv = _distinct_rows(p.a4, p.U_a, p.U_b)
    absent = {"a1": 0.0, "a3": 0.0, "a4": 0.0, "G_k": 1.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.0, "U_b": 1.0}
    gamma = MixtureArrays.stack(**{**absent, "a1": g[:, 0], "G_k": g[:, 1], "G_theta": g[:, 2]})
    expo = MixtureArrays.stack(**{**absent, "a3": e[:, 0], "E_lambda": e[:, 1]})
    unif = MixtureArrays.stack(**{**absent, "a4": u[:, 0], "U_a": u[:, 1], "U_b": u[:, 2]})
    # gather into preallocated buffers (these (rows, nodes) arrays dominate the cost); mode="clip"
    # avoids np.take's extra buffering (the indices are always in range)
    out = np.empty((len(p), t.size))
    tmp = np.empty_like(out)
    np.take(log_mgf(gamma, t), g_inv, axis=0, out=out, mode="clip")
    np.take(log_mgf(expo, t), e_inv, axis=0, out=tmp, mode="clip")
    out += tmp
    np.take(log_mgf(unif, t), u_inv, axis=0, out=tmp, mode="clip")
    out += tmp
    return out


def _inside_domain(p: MixtureArrays, t: np.ndarray) -> np.ndarray:
    """Whether ``M(t_i)`` is finite for row ``i`` (``t`` shape ``(n,)``), as ``log_mgf`` decides it."""
    gamma_ok = (p.a1 <= 0) | ((p.a1 * t) * p.G_theta < 1.0)
    expo_ok = (p.a3 <= 0) | ((p.a3 * t) / p.E_lambda < 1.0)
    return gamma_ok & expo_ok


def max_finite_order(p: MixtureArrays, max_order: int = MAX_ORDER) -> np.ndarray:
    """Per row, the largest integer order ``alpha <= max_order`` whose RDP is finite; 1 if none.

    Order ``alpha`` needs ``M(alpha - 1) < inf``; the MGF domain is an interval ``t < t*``
    with ``t* = min(1 / (a1 G_theta), E_lambda / a3)``. The closed-form estimate is corrected
    with the exact floating-point test of :func:`~noise_search.mgf.log_mgf`.
    """
    with np.errstate(divide="ignore"):
        lim_g = np.where(p.a1 > 0, 1.0 / np.where(p.a1 > 0, p.a1 * p.G_theta, 1.0), np.inf)
        lim_e = np.where(p.a3 > 0, p.E_lambda / np.where(p.a3 > 0, p.a3, 1.0), np.inf)
    t_star = np.minimum(lim_g, lim_e)
    top = float(max_order - 1)
    t = np.clip(np.ceil(np.minimum(t_star, top + 1.0)) - 1.0, 0.0, top)  # largest integer < t*
    for _ in range(3):  # rounding can put the estimate one off either way
        up = (t < top) & _inside_domain(p, t + 1.0)
        t = np.where(up, t + 1.0, t)
        down = (t >= 1.0) & ~_inside_domain(p, t)
        t = np.where(down, t - 1.0, t)
    return (t + 1.0).astype(np.int64)


# --- RDP curves and epsilon -------------------------------------------------------------------


@dataclass(frozen=True)
class RdpCurves:
    """Per-step RDP of a block at one sample rate: ``rdp[i, j]`` at ``orders[j]`` (``+inf`` past row ``i``'s domain)."""

    orders: np.ndarray
    rdp: np.ndarray
    sample_rate: float
    pure_eps0: np.ndarray  # per-release pure-DP epsilon (inf when u is unbounded)

    def epsilon(self, steps: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
        """``(epsilon, order)`` per row after ``steps`` releases at ``delta``, as the RDP accountant.

        A row without any finite order gets ``epsilon = inf``, ``order = nan``; a row whose
        pure-DP composition wins gets ``order = inf``.
        """
        n = self.rdp.shape[0]
        if self.orders.size:
            eps, order = epsilon_from_rdp(steps * self.rdp, self.orders, delta)
        else:
            eps, order = np.full(n, np.inf), np.full(n, np.nan)
        bounded = np.flatnonzero(np.isfinite(self.pure_eps0))
        if bounded.size:
            pure = np.array([pure_dp_composition(float(e0), self.sample_rate, steps) for e0 in self.pure_eps0[bounded]])
            wins = pure < eps[bounded]
            eps[bounded[wins]] = pure[wins]
            order[bounded[wins]] = np.inf
        return eps, order


def pure_dp_eps0(p: MixtureArrays) -> np.ndarray:
    """Per-release pure-DP epsilon ``max u = a4 U_b`` where only a Uniform is present; ``inf`` elsewhere."""
    return np.where((p.a1 == 0.0) & (p.a3 == 0.0), p.a4 * p.U_b, np.inf)


def rdp_curves(p: MixtureArrays, sample_rate: float, *, max_order: int = MAX_ORDER) -> RdpCurves:
    """Per-step RDP of every row at orders ``2..K`` (``K`` = the block's largest finite order).

    Rows are grouped by their own last finite order so that each group's sampled-RDP sum
    runs over its finite orders only.
    """
    q = float(sample_rate)
    kmax = max_finite_order(p, max_order)
    top = int(kmax.max()) if len(p) else 1
    orders = np.arange(2, max(top, 1) + 1, dtype=float)
    rdp = np.full((len(p), orders.size), np.inf)
    if len(p) < _GROUP_MIN_ROWS:
        group = np.where(kmax >= 2, top, 0)
    else:  # a row's orders past its own domain come out +inf, so rounding K up changes nothing
        levels = np.append(_ORDER_LEVELS[: np.searchsorted(_ORDER_LEVELS, top)], top)
        group = np.where(kmax >= 2, levels[np.searchsorted(levels, np.minimum(kmax, top))], 0)
    for k in np.unique(group[group >= 2]):
        rows = np.flatnonzero(group == k)
        sub = p.take(rows)
        ks = np.arange(2, int(k) + 1, dtype=float)
        log_ea = log_expected_a(factored_log_mgf(sub, ks - 1.0), factored_log_mgf(sub, -ks))
        rdp[rows, : ks.size] = subsampled_rdp(log_ea, ks, q)
    return RdpCurves(orders, rdp, q, pure_dp_eps0(p))


# --- objectives ------------------------------------------------------------------------------------


def check_objective(objective: str, gamma: float | None) -> float | None:
    """Validate an objective name and its ``gamma`` (required, ``> 0``, for ``usefulness``)."""
    if objective not in OBJECTIVES:
        raise ParameterError("objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if gamma is not None:
        gamma = check_range("gamma", gamma, gt=0.0)
    if objective == "usefulness" and gamma is None:
        raise ParameterError("gamma", "required (> 0) with the usefulness objective")
    return gamma


def objective_values(p: MixtureArrays, objective: str, gamma: float | None = None) -> np.ndarray:
    """The objective of every row (per coordinate, sensitivity 1; docs/privacy.md section 6).

    ``mean-abs`` = ``E[1/u]``, ``variance`` = ``2 E[1/u**2]`` (``+inf`` where it diverges),
    ``usefulness`` = ``P(|Z| <= gamma) = 1 - M(-gamma)``.
    """
    gamma = check_objective(objective, gamma)
    n = len(p)
    if objective == "usefulness":
        return -np.expm1(factored_log_mgf(p, -float(gamma))[:, 0])
    m = 1.0 if objective == "mean-abs" else 2.0
    nodes = inverse_moment_nodes()
    out = np.empty(n)
    for start in range(0, n, QUADRATURE_CHUNK):
        rows = p.take(slice(start, start + QUADRATURE_CHUNK))
        out[start : start + QUADRATURE_CHUNK] = log_inverse_moment_from_log_mgf(factored_log_mgf(rows, -nodes), m)
    log_moment = np.where(p.zero_concentration() > m, out, np.inf)
    return np.exp(log_moment) if m == 1.0 else 2.0 * np.exp(log_moment)


def to_score(values: np.ndarray, objective: str) -> np.ndarray:
    """Objective values as a score to minimise (usefulness is negated)."""
    return -values if objective in MAXIMISED else values


# --- one block ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockEvaluation:
    """Epsilon, order (per steps value, shape ``(len(steps), n)``) and objective (``(n,)``) of a block.

    ``objective`` is ``nan`` for rows it was not computed for (see :func:`evaluate_block`).
    """

    steps: tuple[int, ...]
    epsilon: np.ndarray
    order: np.ndarray
    objective: np.ndarray


def evaluate_block(
    p: MixtureArrays,
    *,
    sample_rate: float,
    steps: int | Sequence[int],
    delta: float,
    objective: str,
    gamma: float | None = None,
    objective_below: float | None = None,
    max_order: int = MAX_ORDER,
) -> BlockEvaluation:
    """Epsilons for every ``steps`` value from one set of RDP curves, and the objective.

    The objective is computed for rows whose smallest epsilon (over ``steps``) is
    ``<= objective_below`` (all rows with a finite epsilon when ``None``); other rows get ``nan``.
    ``max_order`` caps the integer orders (the accountant uses 256).
    """
    steps_t = (int(steps),) if isinstance(steps, (int, np.integer)) else tuple(int(s) for s in steps)
    curves = rdp_curves(p, sample_rate, max_order=max_order)
    eps = np.empty((len(steps_t), len(p)))
    order = np.empty((len(steps_t), len(p)))
    for i, t in enumerate(steps_t):
        eps[i], order[i] = curves.epsilon(t, delta)
    best = eps.min(axis=0) if len(steps_t) else np.full(len(p), np.inf)
    need = np.isfinite(best) if objective_below is None else best <= objective_below
    values = np.full(len(p), np.nan)
    rows = np.flatnonzero(need)
    if rows.size:
        values[rows] = objective_values(p.take(rows), objective, gamma)
    return BlockEvaluation(steps_t, eps, order, values)
