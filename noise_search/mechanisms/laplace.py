"""The Laplace mechanism: ``Laplace(0, C/u0)`` per coordinate under L1 clipping.

Its release is dp-accounting's Laplace event (scale ``1/u0``, keeping ``u0`` itself:
:class:`InverseScaleLaplaceDpEvent`), which the ``pld`` accountant reads -- sound in ``d``
dimensions because the d-dimensional Laplace pair is dominated by one coordinate
(:mod:`noise_search.laplace_dominance`); the ``rdp`` accountants use its Renyi moments
(:mod:`noise_search.rdp`) and its pure-DP epsilon ``u0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import attr
import dp_accounting
import numpy as np

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
from noise_search.rdp import laplace_log_expected_a, subsampled_rdp

#: Largest Laplace inverse scale accepted: a per-release epsilon of 1000 is no privacy at all.
MAX_U0 = 1e3


@attr.define(frozen=True)
class InverseScaleLaplaceDpEvent(dp_accounting.LaplaceDpEvent):
    """dp-accounting's Laplace event (``noise_multiplier`` = the scale ``1/u0``) that also keeps
    the inverse scale ``u0`` itself, so accounting the event accounts exactly the mechanism
    sampled (``1/(1/u0)`` can differ from ``u0`` in the last bit)."""

    u0: float | None = None


@dataclass(frozen=True)
class Laplace(Mechanism):
    """Laplace noise with inverse scale ``u0`` in (0, 1000] (scale ``C/u0``), L1 clipping."""

    u0: float
    name: ClassVar[str] = "laplace"
    norm: ClassVar[Norm] = "l1"
    summary: ClassVar[str] = "Laplace(0, C/u0) per coordinate, L1 clipping"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        # "u": the search-result file's and calibrate --json's older name (deprecated, still read)
        Parameter("u0", "inverse scale (clipping bound / scale)", "Laplace inverse scale", gt=0.0, le=MAX_U0,
                  aliases=("u",)),
    )  # fmt: skip
    noise_parameter: ClassVar[NoiseParameter | None] = NoiseParameter("u0", True, 1e-6, MAX_U0)
    event_class: ClassVar[type[dp_accounting.DpEvent]] = InverseScaleLaplaceDpEvent
    example_params: ClassVar[Mapping[str, Any]] = {"u0": 0.5}
    color: ClassVar[str | None] = "tab:orange"

    def __post_init__(self) -> None:
        object.__setattr__(self, "u0", check_range("u0", self.u0, gt=0.0, le=MAX_U0))

    def event(self) -> dp_accounting.DpEvent:
        return InverseScaleLaplaceDpEvent(1.0 / self.u0, u0=self.u0)  # dp-accounting takes the scale

    def rdp_curve(self, sample_rate: float, orders: np.ndarray) -> np.ndarray:
        log_ea = laplace_log_expected_a(self.u0, int(np.max(orders)))
        return subsampled_rdp(log_ea, np.asarray(orders, float), sample_rate)[0]

    def pure_dp_epsilon(self) -> float:
        return self.u0

    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        return rng.laplace(0.0, check_clip(clip_bound) / self.u0, shape_tuple(shape))

    def log_mgf(self, t: np.ndarray | float) -> np.ndarray:
        """``log E[exp(t u)] = t u0`` (``u`` is the point mass ``u0``)."""
        return self.u0 * np.asarray(t, float)

    def mean_abs(self) -> float:
        return 1.0 / self.u0

    def variance(self) -> float:
        return 2.0 / self.u0**2

    def usefulness(self, gamma: float) -> float:
        return float(-math.expm1(-check_gamma(gamma) * self.u0))

    def noise_cdf(self, z: np.ndarray | float) -> np.ndarray:
        """CDF of one noise coordinate for ``C = 1``."""
        z = np.asarray(z, float)
        return np.where(z < 0, 0.5 * np.exp(self.u0 * np.minimum(z, 0)), 1 - 0.5 * np.exp(-self.u0 * np.maximum(z, 0)))
