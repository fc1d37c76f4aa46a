"""Exact, fast draws of per-coordinate LMO noise: a ziggurat on the law of ``|Z|``.

One coordinate of per-coordinate LMO noise (``C = 1``) is ``Z = L / u`` with ``L`` standard
Laplace and ``u`` the mixture of :mod:`noise_search.mgf`. Its magnitude ``|Z| = E / u``
(``E`` standard exponential) has, in terms of the MGF ``M`` of ``u``:

* tail ``P(|Z| > y) = E[exp(-u y)] = M(-y)``;
* density ``f(y) = E[u exp(-u y)] = M(-y) * (d/dt log M)(-y)``, decreasing and convex.

:mod:`noise_search.ziggurat` samples that law directly from one 64-bit word per draw, without
drawing ``u`` at all, except in the tail beyond ``r`` (about 0.3% of draws). There the exact
conditional law is used: given ``|Z| > r``, ``u`` follows its own law tilted by
``exp(-r u)`` and ``|Z| - r`` is ``Exp(1) / u`` (memorylessness of ``E``). Tilting a sum of
independent components tilts each one: a Gamma or Exponential part ``c X`` keeps its shape
with scale divided by ``1 + r c``, a Uniform part becomes an exponential truncated to its
interval (inverted in closed form).

Tables are built once per mixture (about 0.1 s) and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from noise_search.errors import check_range
from noise_search.mgf import MixtureArrays
from noise_search.ziggurat import Ziggurat, build_tables

# Below this value of s (b - a) the Uniform part uses its Taylor series (next terms < 1e-19).
_SERIES_BELOW = 1e-3

_KEY_FIELDS = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")


def _log_mgf_and_slope(p: MixtureArrays, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log M(-y)`` and ``(log M)'(-y)`` for ``y >= 0`` (one row; only the present components).

    The same closed forms as :func:`noise_search.mgf.log_mgf` and ``dlog_mgf``, specialised to
    ``t = -y <= 0`` (always inside the domain) with a few array operations: the wedge tests
    evaluate this on every call of the sampler.
    """
    shape = np.shape(y)
    y = np.asarray(y, float).reshape(-1)
    log_m = np.zeros(y.shape)
    slope = np.zeros(y.shape)
    a1, a3, a4 = float(p.a1[0]), float(p.a3[0]), float(p.a4[0])
    for weight, c, k in ((a1, a1 * float(p.G_theta[0]), float(p.G_k[0])), (a3, a3 / float(p.E_lambda[0]), 1.0)):
        if weight > 0:  # a Gamma(k) (Exponential: k = 1) part c X: M(-y) = (1 + c y)^-k
            d = c * y
            d += 1.0
            log_m -= k * np.log(d)
            slope += (k * c) / d
    if a4 > 0:  # a Uniform part a4 W, W ~ Uniform(lo, lo + w): with s = a4 y and x = s w,
        # E[exp(-s W)] = exp(-s lo) (1 - e^-x) / x and its tilted mean lo + w (1/x - 1/(e^x - 1))
        lo, w = float(p.U_a[0]), float(p.U_b[0] - p.U_a[0])
        x = (a4 * w) * y
        xs = np.maximum(x, _SERIES_BELOW)
        e = -np.expm1(-xs)  # 1 - e^-x, in (0, 1]: no overflow for any x
        log_part = np.log(e / xs)
        h = 1.0 / xs - 1.0 / e + 1.0  # 1/(e^x - 1) = 1/(1 - e^-x) - 1
        small = np.flatnonzero(x < _SERIES_BELOW)
        if small.size:
            xt = x[small]
            x2 = xt * xt
            log_part[small] = xt * (xt / 24.0 - 0.5) - x2 * x2 / 2880.0
            h[small] = 0.5 - xt / 12.0 + x2 * xt / 720.0
        log_m += log_part
        log_m -= (a4 * lo) * y
        slope += (a4 * w) * h
        slope += a4 * lo
    return log_m.reshape(shape), slope.reshape(shape)


def abs_density(p: MixtureArrays, y: np.ndarray) -> np.ndarray:
    """Density of ``|Z|`` at ``y >= 0`` for the one-row mixture ``p``: ``M(-y) (log M)'(-y)``."""
    log_m, slope = _log_mgf_and_slope(p, y)
    return np.exp(log_m) * slope


def abs_tail(p: MixtureArrays, y: np.ndarray) -> np.ndarray:
    """``P(|Z| > y) = M(-y)`` for the one-row mixture ``p``."""
    return np.exp(_log_mgf_and_slope(p, y)[0])


def tilted_u(p: MixtureArrays, r: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of ``u`` under the law tilted by ``exp(-r u)`` (``r >= 0``)."""
    u = np.zeros(n)
    a1, a3, a4 = float(p.a1[0]), float(p.a3[0]), float(p.a4[0])
    if a1 > 0:
        c = a1 * float(p.G_theta[0])
        u += c / (1.0 + r * c) * rng.standard_gamma(float(p.G_k[0]), n)
    if a3 > 0:
        c = a3 / float(p.E_lambda[0])
        u += c / (1.0 + r * c) * rng.standard_exponential(n)
    if a4 > 0:
        lo, width = float(p.U_a[0]), float(p.U_b[0] - p.U_a[0])
        s = r * a4  # the Uniform part a4 W, W ~ Uniform(lo, lo + width), tilted by exp(-s W)
        v = rng.random(n)
        w = lo + (v * width if s * width < 1e-300 else -np.log1p(v * np.expm1(-s * width)) / s)
        u += a4 * w
    return u


def tail_draws(p: MixtureArrays, r: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` exact draws of ``|Z|`` conditioned on ``|Z| > r``."""
    return r + rng.standard_exponential(n) / tilted_u(p, r, n, rng)


@lru_cache(maxsize=64)
def _cached(key: tuple[float, ...]) -> Ziggurat:
    p = MixtureArrays.stack(**dict(zip(_KEY_FIELDS, key, strict=True)))
    tables = build_tables(lambda y: abs_density(p, y), lambda y: abs_tail(p, y))
    return Ziggurat(tables, lambda y: abs_density(p, y), lambda r, n, rng: tail_draws(p, r, n, rng))


def ziggurat_for(p: MixtureArrays) -> Ziggurat:
    """The (cached) ziggurat of per-coordinate LMO noise for the one-row mixture ``p``."""
    if len(p) != 1:
        raise ValueError(f"ziggurat_for: expected one mixture, got {len(p)}")
    return _cached(tuple(float(getattr(p, f)[0]) for f in _KEY_FIELDS))


def sample_per_coordinate(
    p: MixtureArrays, n: int, rng: np.random.Generator, scale: float = 1.0, out: np.ndarray | None = None
) -> np.ndarray:
    """``n`` independent draws of per-coordinate LMO noise for clipping bound ``scale``.

    Into ``out`` (1-D, float32 or float64, length ``n``) if given, else a new float64 array.
    """
    check_range("scale", scale, gt=0.0)
    return ziggurat_for(p).sample(n, rng, scale, out)
