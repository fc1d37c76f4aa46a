"""The noise density of per-coordinate LMO with ``u`` hidden, and the largest privacy loss of a shift.

With an independent ``u`` per coordinate and ``u`` not revealed, one coordinate's noise has the
scale-mixture density ``f(x) = E_u[(u/2) exp(-u |x|)] = M'(-|x|) / 2`` (``M`` the MGF of ``u``),
in units of the clipping bound. ``log f`` is convex in ``|x|`` (a mixture of exponentials), so
the largest privacy loss of a shift by ``t`` on one coordinate is ``phi(t) = log f(0) - log f(t)``
(attained at ``x = t``), and ``phi`` is concave. docs/privacy.md ("Tight accounting with u
hidden") draws the consequence: splitting an L1 shift over coordinates raises the largest loss,
so no one-coordinate privacy-loss distribution bounds the d-dimensional mechanism.
"""

from __future__ import annotations

import numpy as np

from noise_search.mechanisms import LMO
from noise_search.mgf import dlog_mgf, log_mgf


def log_density(mech: LMO, x: np.ndarray | float) -> np.ndarray:
    """``log f(x)`` of one coordinate's noise (``u`` hidden), in units of the clipping bound."""
    s = -np.abs(np.atleast_1d(np.asarray(x, float)))
    p = mech.arrays
    return np.log(0.5) + log_mgf(p, s)[0] + np.log(dlog_mgf(p, s)[0])


def max_loss(mech: LMO, shifts: np.ndarray | float) -> np.ndarray:
    """``phi(t) = log f(0) - log f(t)``: the largest privacy loss of a shift ``t >= 0`` on one coordinate
    (both directions: the pair is symmetric)."""
    t = np.atleast_1d(np.asarray(shifts, float))
    return log_density(mech, 0.0)[0] - log_density(mech, t)


def max_loss_split(mech: LMO, shift: float, parts: int) -> float:
    """The largest privacy loss of a shift ``shift`` spread evenly over ``parts`` coordinates:
    ``parts x phi(shift / parts)`` (each coordinate's loss peaks on its own)."""
    return float(parts * max_loss(mech, shift / parts)[0])
