"""Renyi DP of Laplace noise with a random inverse scale, and RDP -> (epsilon, delta).

Implements docs/privacy.md sections 4 and 5. Everything is vectorised over a block of
candidates: RDP curves are arrays of shape ``(n_candidates, n_orders)``.

Why the bound holds (the proofs the tests check numerically):

* For a fixed inverse scale ``u`` the 1-D pair ``P = Lap(C, C/u)``, ``Q = Lap(0, C/u)``
  has ``E_Q[(P/Q)^k] = A_k(u)`` with
  ``A_k(u) = k/(2k-1) exp((k-1)u) + (k-1)/(2k-1) exp(-ku)``.
* ``(P, Q) -> E_Q[(P/Q)^k]`` is jointly convex, so for the mixture over ``u`` the value is at
  most ``E_u[A_k(u)] = k/(2k-1) M(k-1) + (k-1)/(2k-1) M(-k)``.
* Poisson sampling at rate ``q``: for integer ``alpha`` the binomial expansion
  ``E_Q[((1-q) + q P/Q)^alpha] = sum_j C(alpha, j) (1-q)^(alpha-j) q^j E_Q[(P/Q)^j]`` is an
  identity, so each term is bounded by ``E_u[A_j(u)]``. The reverse direction
  ``D_alpha(Q || (1-q)Q + qP)`` is not larger for the Laplace pair (checked numerically in
  ``tests/noise_search/test_rdp_soundness.py``) and joint convexity carries it to mixtures.
* d dimensions with L1 sensitivity ``C``: splitting the shift over coordinates lowers every
  term. Independent ``u`` per coordinate: ``s -> log E_u[A_k(s u)]`` is convex and 0 at 0,
  hence superadditive over the coordinates' shares. One shared ``u``: for each fixed ``u``,
  ``v -> log A_k(v u)`` is convex and 0 at 0, so the product over coordinates is at most
  ``A_k(u)``; joint convexity then averages over ``u`` (docs/privacy.md section 4).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp

#: Integer orders used for Laplace and LMO (section 5).
DEFAULT_ORDERS: np.ndarray = np.arange(2, 257, dtype=float)

#: Orders used for Gaussian: Opacus's fractional orders 1.1..10.9 plus integers to 256.
GAUSSIAN_ORDERS: np.ndarray = np.unique(
    np.concatenate([1.0 + np.arange(1, 100) / 10.0, np.arange(2, 257, dtype=float)])
)

# Upper bound on the elements of the (candidates x orders x terms) array built by
# `subsampled_rdp`; keeps a block's temporary below ~32 MB.
_MAX_TEMP_ELEMENTS = 1 << 22


def log_expected_a(log_mgf_pos: np.ndarray, log_mgf_neg: np.ndarray) -> np.ndarray:
    """``log E_u[A_k(u)]`` for ``k = 0..K``; shape ``(n, K + 1)``.

    ``log_mgf_pos[:, k-2] = log M(k-1)`` and ``log_mgf_neg[:, k-2] = log M(-k)`` for
    ``k = 2..K`` (shape ``(n, K - 1)``). ``E[A_0] = E[A_1] = 1``. An infinite ``M(k-1)``
    (outside the MGF domain) gives ``+inf``.
    """
    n, width = log_mgf_pos.shape
    k = np.arange(2, width + 2, dtype=float)
    log_w_pos = np.log(k / (2 * k - 1))
    log_w_neg = np.log((k - 1) / (2 * k - 1))
    terms = np.logaddexp(log_mgf_pos + log_w_pos, log_mgf_neg + log_w_neg)
    return np.concatenate([np.zeros((n, 2)), terms], axis=1)


def laplace_log_expected_a(u0: np.ndarray | float, max_order: int) -> np.ndarray:
    """:func:`log_expected_a` for the point mass ``u = u0`` (plain Laplace); ``u0`` shape ``(n,)``."""
    u0 = np.atleast_1d(np.asarray(u0, float))
    k = np.arange(2, max_order + 1, dtype=float)
    return log_expected_a(u0[:, None] * (k - 1)[None, :], -u0[:, None] * k[None, :])


def _check_integer_orders(orders: np.ndarray) -> np.ndarray:
    orders = np.asarray(orders, float)
    if orders.ndim != 1 or orders.size == 0:
        raise ValueError("orders must be a non-empty 1-D array")
    if np.any(orders < 2) or np.any(orders != np.round(orders)):
        raise ValueError("Laplace/LMO RDP needs integer orders >= 2")
    return orders


def unsampled_rdp(log_ea: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Per-step RDP without sampling: ``log E[A_alpha] / (alpha - 1)``; shape ``(n, len(orders))``."""
    orders = _check_integer_orders(orders)
    return log_ea[:, orders.astype(int)] / (orders - 1.0)


def subsampled_rdp(log_ea: np.ndarray, orders: np.ndarray, sample_rate: float) -> np.ndarray:
    """Per-step RDP under Poisson sampling at rate ``q``; shape ``(n, len(orders))``.

    ``(alpha - 1) eps(alpha) = log sum_j C(alpha, j) (1-q)^(alpha-j) q^j E[A_j]``. ``q = 1``
    reproduces :func:`unsampled_rdp` exactly. ``log_ea`` must have at least
    ``max(orders) + 1`` columns.
    """
    orders = _check_integer_orders(orders)
    q = float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError("sample_rate must be in (0, 1]")
    if q == 1.0:
        return unsampled_rdp(log_ea, orders)
    n = log_ea.shape[0]
    top = int(orders.max())
    if log_ea.shape[1] < top + 1:
        raise ValueError("log_ea has fewer columns than the largest order needs")
    a = orders[:, None]
    j = np.arange(top + 1, dtype=float)[None, :]
    with np.errstate(invalid="ignore"):
        log_binom = gammaln(a + 1) - gammaln(j + 1) - gammaln(a - j + 1)
    weights = log_binom + (a - j) * np.log1p(-q) + j * np.log(q)
    in_sum = (j <= a)[None, :, :]  # (1, orders, terms)
    log_ea = log_ea[:, : top + 1]

    out = np.empty((n, orders.size))
    rows = max(1, _MAX_TEMP_ELEMENTS // weights.size)
    for start in range(0, n, rows):
        block = log_ea[start : start + rows]
        with np.errstate(invalid="ignore"):
            terms = np.where(in_sum, block[:, None, :] + weights[None, :, :], -np.inf)
        out[start : start + rows] = logsumexp(terms, axis=2)
    return out / (orders - 1.0)


def epsilon_from_rdp(rdp_total: np.ndarray, orders: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Improved RDP -> (epsilon, delta) conversion (Balle et al. 2020, Thm 21), per row.

    ``eps = min_alpha [rdp(alpha) + log((alpha-1)/alpha) - (log(delta) + log(alpha))/(alpha-1)]``.
    Orders where ``rdp`` is infinite are skipped. Returns ``(epsilon, order)`` arrays of
    shape ``(n,)``; a row with no finite order gets ``epsilon = inf`` and ``order = nan``.
    ``epsilon`` is floored at 0 (an (eps', delta) guarantee with eps' < 0 implies (0, delta)).
    """
    rdp_total = np.atleast_2d(np.asarray(rdp_total, float))
    orders = np.asarray(orders, float)
    shift = np.log((orders - 1.0) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1.0)
    eps = np.where(np.isfinite(rdp_total), rdp_total + shift[None, :], np.inf)
    best = np.argmin(eps, axis=1)
    rows = np.arange(eps.shape[0])
    eps_best = eps[rows, best]
    order_best = np.where(np.isfinite(eps_best), orders[best], np.nan)
    return np.maximum(eps_best, 0.0), order_best
