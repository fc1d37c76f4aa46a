"""``laplace-b``: Laplace noise under L1 clipping, parameterised by its scale ``b``.

``b`` is in units of the clipping bound ``C`` (the noise is ``Laplace(0, b C)`` per coordinate),
so ``b = 1/u0`` of lmo-dp's built-in ``laplace``. Accounting, sampling and objectives are the
built-in Laplace's at ``u0 = 1/b``: ``lmo-dp account --mechanism laplace-b --param b=2`` prints
what ``--mechanism laplace --u0 0.5`` prints, under every accountant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import dp_accounting
import numpy as np

from noise_search.errors import check_range
from noise_search.mechanisms import MAX_U0, InverseScaleLaplaceDpEvent, Laplace, Mechanism, NoiseParameter, Parameter

#: Smallest scale accepted: the built-in Laplace's largest inverse scale.
MIN_B = 1.0 / MAX_U0


@dataclass(frozen=True)
class LaplaceB(Mechanism):
    """Laplace noise of scale ``b`` (units of the clipping bound), ``b`` in [0.001, 1e6]."""

    b: float
    name: ClassVar[str] = "laplace-b"
    norm: ClassVar[str] = "l1"
    summary: ClassVar[str] = "Laplace(0, b C) per coordinate, L1 clipping (plug-in; b = 1/u0)"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        Parameter("b", "clipping bound", "Laplace scale in units of the clipping bound", ge=MIN_B, le=1e6),
    )
    # epsilon falls as b grows; calibration searches b in [MIN_B, 1e6]
    noise_parameter: ClassVar[NoiseParameter | None] = NoiseParameter("b", False, MIN_B, 1e6)
    event_class: ClassVar[type[dp_accounting.DpEvent]] = InverseScaleLaplaceDpEvent
    example_params: ClassVar[Mapping[str, Any]] = {"b": 2.0}
    # lmo-dp imports this module the first time it draws training noise in torch
    torch_sampler: ClassVar[str | None] = "lmo_dp_laplace_b.torch_sampler"

    def __post_init__(self) -> None:
        object.__setattr__(self, "b", check_range("b", self.b, ge=MIN_B, le=1e6))

    def as_laplace(self) -> Laplace:
        """The built-in Laplace this mechanism is."""
        return Laplace(1.0 / self.b)

    # privacy: the built-in Laplace's release and Renyi curve
    def event(self) -> dp_accounting.DpEvent:
        return self.as_laplace().event()

    def rdp_curve(self, sample_rate: float, orders: np.ndarray) -> np.ndarray:
        return self.as_laplace().rdp_curve(sample_rate, orders)

    def pure_dp_epsilon(self) -> float:
        return self.as_laplace().pure_dp_epsilon()

    # noise law and objectives
    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        return self.as_laplace().sample(shape, clip_bound, rng)

    def mean_abs(self) -> float:
        return self.b

    def variance(self) -> float:
        return 2.0 * self.b**2

    def usefulness(self, gamma: float) -> float:
        return self.as_laplace().usefulness(gamma)
