"""Brute-force numerical Renyi divergences for the soundness tests.

Independent of the accountant's algebra: densities are integrated on a quadrature rule and
``log int p^alpha q^(1-alpha)`` is formed directly, in log space.

The rule is piecewise Gauss-Legendre, split at the densities' kinks (0 and the shift) and
mapped to the two infinite tails by ``z = edge +- t / (1 - t)``; in 2-D it is the tensor
product of two such rules, which suits integrands whose kinks lie on axis-parallel lines.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp

from noise_search.mechanisms import LMO
from noise_search.mgf import MixtureArrays, dlog_mgf, log_mgf


def line_rule(breaks: list[float], n: int = 200, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log-weights for ``int_{-inf}^{inf} f(z) dz`` with kinks at ``breaks``;
    ``scale`` is the tails' length scale (the noise scale)."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = 0.5 * (x + 1.0)  # (0, 1)
    wt = 0.5 * w
    edges = sorted(set(breaks))
    nodes, logw = [], []
    # left tail: z = edges[0] - t / (1 - t)
    nodes.append(edges[0] - scale * t / (1.0 - t))
    logw.append(np.log(wt * scale) - 2.0 * np.log1p(-t))
    for a, b in itertools.pairwise(edges):
        nodes.append(a + (b - a) * t)
        logw.append(np.log(wt * (b - a)))
    nodes.append(edges[-1] + scale * t / (1.0 - t))
    logw.append(np.log(wt * scale) - 2.0 * np.log1p(-t))
    return np.concatenate(nodes), np.concatenate(logw)


def lmo_log_pdf(p: MixtureArrays, z: np.ndarray) -> np.ndarray:
    """Log density of LMO noise (C = 1) at ``z``: ``log(M'(-|z|) / 2)``."""
    t = -np.abs(np.asarray(z, float)).ravel()
    out = np.log(0.5) + log_mgf(p, t)[0] + np.log(dlog_mgf(p, t)[0])
    return out.reshape(np.shape(z))


def laplace_log_pdf(u: float, z: np.ndarray) -> np.ndarray:
    return np.log(0.5 * u) - u * np.abs(z)


def log_moment(log_p: np.ndarray, log_q: np.ndarray, alpha: float, logw: np.ndarray) -> float:
    """``log int p^alpha q^(1-alpha)`` given log densities at the rule's nodes."""
    return float(logsumexp(alpha * log_p + (1.0 - alpha) * log_q + logw))


def log_mix(log_p: np.ndarray, log_q: np.ndarray, q: float) -> np.ndarray:
    """Log density of ``(1-q) Q + q P``."""
    if q == 1.0:
        return log_p
    return np.logaddexp(np.log1p(-q) + log_q, np.log(q) + log_p)


def forward_and_reverse(log_p: np.ndarray, log_q: np.ndarray, q: float, alpha: float, logw: np.ndarray):
    """``(alpha-1) D_alpha(mix || Q)`` and ``(alpha-1) D_alpha(Q || mix)`` with ``mix = (1-q)Q + qP``."""
    lm = log_mix(log_p, log_q, q)
    return log_moment(lm, log_q, alpha, logw), log_moment(log_q, lm, alpha, logw)


def empirical_lmo_log_pdf_2d(u: np.ndarray, z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """2-D noise density when ONE inverse scale (drawn from the atoms ``u``) is shared."""
    l1 = np.abs(z1)[:, None, None] + np.abs(z2)[None, :, None]  # (n1, n2, 1)
    logs = 2.0 * np.log(0.5 * u)[None, None, :] - u[None, None, :] * l1
    return logsumexp(logs, axis=2) - np.log(u.size)


def random_lmo(rng: np.random.Generator) -> LMO:
    """A random valid LMO mixture covering all component combinations."""
    while True:
        present = rng.random(3) < 0.75
        if not present.any():
            continue
        w = rng.uniform(0.05, 1.2, 3) * present
        u_a = float(rng.choice([0.0, rng.uniform(0.1, 2.0)]))
        try:
            return LMO(
                a1=float(w[0]),
                a3=float(w[1]),
                a4=float(w[2]),
                G_k=float(rng.choice([0.5, 1.0, 2.0, 3.0])),
                G_theta=float(rng.uniform(0.1, 2.0)),
                E_lambda=float(rng.uniform(0.5, 6.0)),
                U_a=u_a,
                U_b=u_a + float(rng.uniform(0.2, 2.0)),
            )
        except ValueError:
            continue  # too much mass near 0: draw again
