"""Laplace noise in ``d`` dimensions under an L1 shift: the whole shift on one coordinate is the worst case.

docs/privacy.md ("Laplace in d dimensions") proves that the product of one-dimensional Laplace
pairs ``(Lap(0, 1), Lap(s_i, 1))`` is dominated, at every epsilon and in both directions, by the
single pair ``(Lap(0, 1), Lap(sum s_i, 1))``. That is what makes a one-dimensional Laplace
privacy-loss distribution (``--accountant pld``) a bound for DP-SGD with L1 clipping.

All shifts are in units of the noise scale (a clipping bound ``C`` and inverse scale ``u0`` give
``s = C u0``). The hockey-stick divergence is ``delta(eps) = E_P[(1 - e^(eps - L))_+]`` with ``P``
the unshifted noise and ``L = log p/q`` its privacy loss; ``eps`` may be any real number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import integrate


def laplace_delta(shift: float, eps: np.ndarray | float) -> np.ndarray:
    """Hockey-stick ``delta(eps)`` of ``(Lap(0, 1), Lap(shift, 1))``, ``shift >= 0``, closed form.

    ``1 - e^(-(shift - eps)/2)`` for ``|eps| <= shift``, ``1 - e^eps`` below, 0 above. The reverse
    pair (``Lap(shift, 1)`` vs ``Lap(0, 1)``) has the same curve (reflect ``x -> shift - x``).
    """
    s = float(shift)
    e = np.asarray(eps, float)
    inside = -np.expm1(-(s - np.clip(e, -s, s)) / 2.0)
    return np.where(e > s, 0.0, np.where(e < -s, -np.expm1(np.minimum(e, 0.0)), inside))


def clipped_moment(shift: float, a: float) -> float:
    """``E[exp(2 min(Y, a))]`` for ``Y = clip(X, 0, shift)``, ``X ~ Lap(0, 1)``, ``a >= 0``, by quadrature.

    The proof's identity says it equals ``exp(min(a, shift))``; this computes it from the law of
    ``Y`` (atom 1/2 at 0, density ``e^(-y)/2`` on ``(0, shift)``, atom ``e^(-shift)/2`` at ``shift``)
    so that a test can check the identity.
    """
    s = float(shift)
    inner, _ = integrate.quad(lambda y: math.exp(2.0 * min(y, a) - y) / 2.0, 0.0, s, points=[min(a, s)], epsabs=1e-13)
    return 0.5 + inner + math.exp(2.0 * min(s, a) - s) / 2.0


def product_delta(shifts: Sequence[float], eps: float) -> float:
    """Hockey-stick ``delta(eps)`` of the product of pairs ``(Lap(0, 1), Lap(s_i, 1))``, by quadrature.

    Conditions on the last coordinate's loss ``L_d = s_d - 2 Y_d`` and recurses:
    ``delta(eps) = E[delta_rest(eps - L_d)]``, down to :func:`laplace_delta` for one coordinate.
    Cost grows as ~50^(d-1) integrand calls; meant for d <= 3. Accurate to about 1e-10.
    """
    if len(shifts) == 0:
        return float(-np.expm1(min(eps, 0.0)))  # the identical pair: delta(eps) = (1 - e^eps)_+
    *rest, s = (float(x) for x in shifts)
    if not rest:
        return float(laplace_delta(s, eps))

    def inner(y: float) -> float:
        return product_delta(rest, eps - (s - 2.0 * y))

    total = sum(rest)
    # the inner curve has kinks where eps - L_d crosses +-total
    kinks = [y for y in ((s - eps + total) / 2.0, (s - eps - total) / 2.0) if 0.0 < y < s]
    cont, _ = integrate.quad(lambda y: inner(y) * math.exp(-y) / 2.0, 0.0, s, points=kinks or None, epsabs=1e-12)
    return 0.5 * inner(0.0) + cont + 0.5 * math.exp(-s) * inner(s)
