"""Privacy accountants: a mechanism, a Poisson sample rate and a step count -> epsilon(delta).

One small interface (:class:`Accountant`), three implementations:

* ``rdp`` (:class:`RdpAccountant`) -- Renyi DP. Laplace and LMO use the bound of
  :mod:`noise_search.rdp` on integer orders 2..256; Gaussian uses Opacus's RDP analysis
  on :data:`~noise_search.rdp.GAUSSIAN_ORDERS` (Opacus's own default stops at order 63,
  which breaks small epsilons). Every mechanism is converted to (epsilon, delta) by the
  same improved conversion, with the minimising order reported.
* ``prv`` (:class:`PrvAccountant`) -- Opacus's PRV accountant for Gaussian, with an
  epsilon error that is *relative* (Opacus's default 0.01 is absolute), returning the
  upper end of its error interval.
* ``pld`` (:class:`PldAccountant`) -- dp-accounting's privacy-loss-distribution accountant
  for Gaussian and Laplace (tight; pessimistic discretisation).

:class:`PrivacyLedger` is the stateful face used by training loops (``step`` /
``get_epsilon``).

Opacus and dp-accounting are imported lazily, so importing this module stays light.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from noise_search.errors import UnsupportedError, check_int, check_range
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism
from noise_search.mgf import log_mgf
from noise_search.rdp import (
    DEFAULT_ORDERS,
    GAUSSIAN_ORDERS,
    epsilon_at_order,
    laplace_log_expected_a,
    log_expected_a,
    subsampled_rdp,
)

ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld")


@dataclass(frozen=True)
class PrivacySpent:
    """An (epsilon, delta) guarantee. ``order`` is the RDP order that gave it (RDP only)."""

    epsilon: float
    delta: float
    accountant: str
    order: float | None = None


def check_accounting_inputs(sample_rate: float, steps: int, delta: float) -> tuple[float, int, float]:
    """Validate ``sample_rate`` in (0, 1], ``steps >= 1``, ``delta`` in (0, 1)."""
    q = check_range("sample_rate", sample_rate, gt=0.0, le=1.0)
    t = check_int("steps", steps, ge=1)
    d = check_range("delta", delta, gt=0.0, lt=1.0)
    return q, t, d


class Accountant(ABC):
    """Maps (mechanism, sample rate, steps, delta) to a proven upper bound on epsilon."""

    name: ClassVar[str]

    @abstractmethod
    def supports(self, mechanism: Mechanism) -> bool:
        """Whether this accountant can bound ``mechanism``."""

    @abstractmethod
    def _epsilon(self, mechanism: Mechanism, q: float, steps: int, delta: float) -> PrivacySpent: ...

    def epsilon(self, mechanism: Mechanism, *, sample_rate: float, steps: int, delta: float) -> PrivacySpent:
        """Epsilon after ``steps`` Poisson-sampled releases at rate ``sample_rate``."""
        q, t, d = check_accounting_inputs(sample_rate, steps, delta)
        if not self.supports(mechanism):
            raise UnsupportedError(
                f"accountant: '{self.name}' does not support the {mechanism.name} mechanism "
                f"(use one of: {', '.join(a for a in ACCOUNTANTS if get_accountant(a).supports(mechanism))})"
            )
        return self._epsilon(mechanism, q, t, d)


# --- RDP -------------------------------------------------------------------------------------


def lmo_rdp_curve(mech: LMO | Laplace, sample_rate: float, orders: np.ndarray = DEFAULT_ORDERS) -> np.ndarray:
    """Per-step RDP of Laplace or LMO noise at integer ``orders`` (``+inf`` where unbounded)."""
    top = int(np.max(orders))
    if isinstance(mech, Laplace):
        log_ea = laplace_log_expected_a(mech.u0, top)
    else:
        k = np.arange(2, top + 1, dtype=float)
        log_ea = log_expected_a(log_mgf(mech.arrays, k - 1), log_mgf(mech.arrays, -k))
    return subsampled_rdp(log_ea, np.asarray(orders, float), sample_rate)[0]


def gaussian_rdp_curve(sigma: float, sample_rate: float, orders: np.ndarray = GAUSSIAN_ORDERS) -> np.ndarray:
    """Per-step RDP of the Poisson-sampled Gaussian mechanism, from Opacus's analysis."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=1, orders=list(orders)), float)


class RdpAccountant(Accountant):
    """Renyi-DP accountant; ``orders`` overrides the default orders for every mechanism."""

    name = "rdp"

    def __init__(self, orders: np.ndarray | None = None) -> None:
        self.orders = None if orders is None else np.asarray(orders, float)

    def supports(self, mechanism: Mechanism) -> bool:
        return isinstance(mechanism, (Gaussian, Laplace, LMO))

    def orders_for(self, mechanism: Mechanism) -> np.ndarray:
        if self.orders is not None:
            return self.orders
        return GAUSSIAN_ORDERS if isinstance(mechanism, Gaussian) else DEFAULT_ORDERS

    def curve(self, mechanism: Mechanism, sample_rate: float) -> np.ndarray:
        """Per-step RDP at :meth:`orders_for` (cached per mechanism, rate and orders)."""
        return _cached_curve(mechanism, float(sample_rate), tuple(self.orders_for(mechanism)))

    def _epsilon(self, mechanism: Mechanism, q: float, steps: int, delta: float) -> PrivacySpent:
        res = epsilon_at_order(self.curve(mechanism, q), self.orders_for(mechanism), steps, delta)
        return PrivacySpent(res.epsilon, delta, self.name, res.order)


@lru_cache(maxsize=256)
def _cached_curve(mechanism: Mechanism, q: float, orders: tuple[float, ...]) -> np.ndarray:
    arr = np.asarray(orders, float)
    if isinstance(mechanism, Gaussian):
        curve = gaussian_rdp_curve(mechanism.sigma, q, arr)
    else:
        curve = lmo_rdp_curve(mechanism, q, arr)
    curve.setflags(write=False)
    return curve


# --- PRV -------------------------------------------------------------------------------------


class PrvAccountant(Accountant):
    """Opacus PRV accountant for Gaussian with a relative epsilon error.

    The reported epsilon is the PRV's *upper* bound ``eps_estimate + eps_error`` at
    ``delta - delta_error`` (Gopi et al. 2021), with ``eps_error = rel_error * eps_rdp``.
    """

    name = "prv"

    def __init__(self, rel_error: float = 0.01) -> None:
        self.rel_error = check_range("rel_error", rel_error, gt=0.0, lt=1.0)

    def supports(self, mechanism: Mechanism) -> bool:
        return isinstance(mechanism, Gaussian)

    def _epsilon(self, mechanism: Mechanism, q: float, steps: int, delta: float) -> PrivacySpent:
        from opacus.accountants import PRVAccountant

        eps_rdp = RdpAccountant()._epsilon(mechanism, q, steps, delta).epsilon
        acc = PRVAccountant()
        acc.history = [(mechanism.sigma, q, steps)]
        eps_error = max(self.rel_error * eps_rdp, 1e-6)
        eps = float(acc.get_epsilon(delta=delta, eps_error=eps_error, delta_error=delta / 1000))
        # PRV can only tighten RDP; never report more than the proven RDP value.
        return PrivacySpent(min(max(eps, 0.0), eps_rdp), delta, self.name, None)


# --- PLD -------------------------------------------------------------------------------------


class PldAccountant(Accountant):
    """dp-accounting PLD accountant for Gaussian and Laplace (add/remove neighbours).

    ``value_discretization_interval`` is relative to the RDP epsilon of the same run, so
    small epsilons are resolved as finely as large ones.
    """

    name = "pld"

    def __init__(self, rel_discretization: float = 1e-3) -> None:
        self.rel_discretization = check_range("rel_discretization", rel_discretization, gt=0.0, lt=1.0)

    def supports(self, mechanism: Mechanism) -> bool:
        return isinstance(mechanism, (Gaussian, Laplace))

    def _epsilon(self, mechanism: Mechanism, q: float, steps: int, delta: float) -> PrivacySpent:
        import dp_accounting

        if isinstance(mechanism, Gaussian):
            event = dp_accounting.GaussianDpEvent(mechanism.sigma)
        else:
            event = dp_accounting.LaplaceDpEvent(1.0 / mechanism.u0)
        if q < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        eps_rdp = RdpAccountant()._epsilon(mechanism, q, steps, delta).epsilon
        interval = min(1e-4, self.rel_discretization * max(eps_rdp, 1e-3) / math.sqrt(steps))
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
        acc.compose(event, steps)
        return PrivacySpent(max(float(acc.get_epsilon(delta)), 0.0), delta, self.name, None)


def get_accountant(name: str) -> Accountant:
    """``rdp``, ``prv`` or ``pld`` with default settings."""
    try:
        return {"rdp": RdpAccountant, "prv": PrvAccountant, "pld": PldAccountant}[name]()
    except KeyError:
        raise UnsupportedError(f"accountant: must be one of {', '.join(ACCOUNTANTS)}, got {name!r}") from None


def compute_epsilon(
    mechanism: Mechanism, *, sample_rate: float, steps: int, delta: float, accountant: str | Accountant = "rdp"
) -> PrivacySpent:
    """Convenience: ``get_accountant(accountant).epsilon(...)``."""
    acc = get_accountant(accountant) if isinstance(accountant, str) else accountant
    return acc.epsilon(mechanism, sample_rate=sample_rate, steps=steps, delta=delta)


class PrivacyLedger:
    """Running privacy spend of one training run (Opacus-style ``step`` / ``get_epsilon``).

    The mechanism and sample rate are fixed for the run; ``epsilon_after(n)`` answers
    "what would the spend be after ``n`` steps" so a loop can stop *before* a step that
    would exceed its budget.
    """

    def __init__(
        self, mechanism: Mechanism, *, sample_rate: float, delta: float, accountant: str | Accountant = "rdp"
    ) -> None:
        self.mechanism = mechanism
        self.sample_rate, _, self.delta = check_accounting_inputs(sample_rate, 1, delta)
        self.accountant = get_accountant(accountant) if isinstance(accountant, str) else accountant
        self.steps = 0

    def step(self, n: int = 1) -> None:
        self.steps += check_int("n", n, ge=1)

    def epsilon_after(self, steps: int) -> PrivacySpent:
        if steps == 0:
            return PrivacySpent(0.0, self.delta, self.accountant.name, None)
        return self.accountant.epsilon(self.mechanism, sample_rate=self.sample_rate, steps=steps, delta=self.delta)

    def get_epsilon(self) -> float:
        return self.epsilon_after(self.steps).epsilon
