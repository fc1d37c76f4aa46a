"""The Gaussian mechanism: ``N(0, (sigma C)^2)`` per coordinate under L2 clipping.

Its release is dp-accounting's ``GaussianDpEvent(sigma)``, which every accountant reads; its
Renyi-DP curve (:func:`gaussian_rdp_curve`) is dp-accounting's for the Poisson-sampled Gaussian.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import dp_accounting
import numpy as np
from scipy.special import erf, gammaln, logsumexp

from noise_search.errors import check_range
from noise_search.mechanisms.base import (
    Mechanism,
    NoiseParameter,
    Norm,
    Parameter,
    check_clip,
    check_gamma,
    shape_tuple,
)
from noise_search.rdp import GAUSSIAN_ORDERS

#: Largest Gaussian noise multiplier accepted (beyond it every epsilon is the conversion's floor,
#: and the libraries' numerics overflow near 1e300).
MAX_SIGMA = 1e6
#: Smallest Gaussian noise multiplier accepted: at 1e-3 one step already spends an epsilon in the
#: millions, and far below it the Renyi moments overflow (calibration searches down to it too).
MIN_SIGMA = 1e-3


@dataclass(frozen=True)
class Gaussian(Mechanism):
    """Gaussian noise with noise multiplier ``sigma`` in [1e-3, 1e6] (std ``sigma * C``), L2 clipping."""

    sigma: float
    name: ClassVar[str] = "gaussian"
    norm: ClassVar[Norm] = "l2"
    summary: ClassVar[str] = "N(0, (sigma C)^2) per coordinate, L2 clipping"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        Parameter("sigma", "noise multiplier (std / clipping bound)", "Gaussian noise multiplier",
                  ge=MIN_SIGMA, le=MAX_SIGMA),
    )  # fmt: skip
    noise_parameter: ClassVar[NoiseParameter | None] = NoiseParameter("sigma", False, MIN_SIGMA, 1e5)
    event_class: ClassVar[type[dp_accounting.DpEvent]] = dp_accounting.GaussianDpEvent
    rdp_orders: ClassVar[np.ndarray] = GAUSSIAN_ORDERS
    fractional_orders: ClassVar[bool] = True
    example_params: ClassVar[Mapping[str, Any]] = {"sigma": 1.1}
    color: ClassVar[str | None] = "tab:blue"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_range("sigma", self.sigma, ge=MIN_SIGMA, le=MAX_SIGMA))

    def event(self) -> dp_accounting.DpEvent:
        return dp_accounting.GaussianDpEvent(self.sigma)

    def rdp_curve(self, sample_rate: float, orders: np.ndarray) -> np.ndarray:
        return gaussian_rdp_curve(self.sigma, sample_rate, orders)

    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` for clipping bound ``clip_bound``."""
        return rng.normal(0.0, self.sigma * check_clip(clip_bound), shape_tuple(shape))

    def mean_abs(self) -> float:
        return self.sigma * math.sqrt(2.0 / math.pi)

    def variance(self) -> float:
        return self.sigma**2

    def usefulness(self, gamma: float) -> float:
        return float(erf(check_gamma(gamma) / (self.sigma * math.sqrt(2.0))))


def gaussian_rdp_curve(sigma: float, sample_rate: float, orders: np.ndarray = GAUSSIAN_ORDERS) -> np.ndarray:
    """Per-step RDP of the Poisson-sampled Gaussian mechanism, dp-accounting's values.

    Integer orders use the exact binomial expansion ``log A_alpha = log sum_i C(alpha, i)
    q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2))`` -- dp-accounting's formula, evaluated here
    for all integer orders at once (the same terms; dp-accounting sums them one by one in Python,
    which dominated calibration time); fractional orders come from dp-accounting itself.
    dp-accounting leaves an order at ``+inf`` where its fractional-order series does not
    converge (it logs a warning, silenced here); such orders are skipped by the conversion.
    """
    orders = np.asarray(orders, float)
    out = np.empty(len(orders))
    integer = (orders == np.round(orders)) & (orders >= 2) & np.isfinite(orders)
    if 0.0 < sample_rate < 1.0 and sigma > 0 and integer.any():
        out[integer] = _gaussian_rdp_integer_orders(sigma, sample_rate, orders[integer])
        rest = ~integer
    else:
        rest = np.ones(len(orders), bool)
    if rest.any():
        out[rest] = _dp_accounting_gaussian_curve(sigma, sample_rate, orders[rest])
    return out


def _gaussian_rdp_integer_orders(sigma: float, q: float, orders: np.ndarray) -> np.ndarray:
    """``log A_alpha / (alpha - 1)`` for integer ``alpha >= 2`` and ``0 < q < 1`` (vectorised)."""
    a = orders.astype(np.int64)
    top = int(a.max())
    i = np.arange(top + 1, dtype=float)
    alpha = a.astype(float)[:, None]
    valid = i[None, :] <= alpha
    with np.errstate(invalid="ignore"):
        log_comb = gammaln(alpha + 1) - gammaln(i + 1)[None, :] - gammaln(np.maximum(alpha - i[None, :], 0) + 1)
        terms = log_comb + i * math.log(q) + (alpha - i) * math.log1p(-q) + (i * i - i) / (2.0 * sigma**2)
    terms = np.where(valid, terms, -np.inf)
    return logsumexp(terms, axis=1) / (a - 1)


def _dp_accounting_gaussian_curve(sigma: float, sample_rate: float, orders: np.ndarray) -> np.ndarray:
    acc = dp_accounting.rdp.RdpAccountant(list(np.asarray(orders, float)))
    event = dp_accounting.GaussianDpEvent(sigma)
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        acc.compose(dp_accounting.PoissonSampledDpEvent(sample_rate, event) if sample_rate < 1.0 else event)
    finally:
        absl.setLevel(level)
    return np.asarray(acc.rdp, float)
