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
import warnings
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


@lru_cache(maxsize=1)
def _opacus_rdp_analysis():
    """Opacus's RDP analysis module, ``opacus/accountants/analysis/rdp.py``.

    That file needs only math, numpy and scipy, but importing it through the package runs
    ``opacus/__init__``, which imports torch (3-9 s per process; it dominated a noise search's
    Gaussian calibration in every fresh Ray worker). Unless opacus is already imported, the file
    is loaded on its own under a private name: same code, same numbers.
    """
    import importlib
    import importlib.util
    import sys

    name = "opacus.accountants.analysis.rdp"
    if name in sys.modules or "opacus" in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec("opacus")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(name)
    path = f"{next(iter(spec.submodule_search_locations))}/accountants/analysis/rdp.py"
    file_spec = importlib.util.spec_from_file_location("_lmodp_opacus_rdp_analysis", path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def gaussian_rdp_curve(sigma: float, sample_rate: float, orders: np.ndarray = GAUSSIAN_ORDERS) -> np.ndarray:
    """Per-step RDP of the Poisson-sampled Gaussian mechanism, from Opacus's analysis."""
    compute_rdp = _opacus_rdp_analysis().compute_rdp
    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=1, orders=list(orders)), float)


def pure_dp_epsilon(mech: Mechanism) -> float:
    """Per-release pure-DP epsilon (``D_inf``) without sampling, or ``inf`` if not pure DP.

    Laplace: ``u0``. LMO: the largest possible ``u`` when it is bounded (only a Uniform
    component present), since a mixture of ``eps(u)``-DP releases is ``max eps(u)``-DP.
    """
    if isinstance(mech, Laplace):
        return mech.u0
    if isinstance(mech, LMO):
        p = mech.arrays
        if p.a1[0] == 0.0 and p.a3[0] == 0.0:
            return float(p.a4[0] * p.U_b[0])
    return math.inf


def pure_dp_composition(eps0: float, sample_rate: float, steps: int) -> float:
    """``T`` Poisson-sampled ``eps0``-DP releases: ``T * log(1 + q (e^eps0 - 1))`` (delta = 0).

    Amplification by Poisson sampling under add/remove neighbours (Li, Qardaji & Su 2012)
    followed by basic composition.
    """
    if not math.isfinite(eps0):
        return math.inf
    return steps * math.log1p(sample_rate * math.expm1(eps0))


class RdpAccountant(Accountant):
    """Renyi-DP accountant; ``orders`` overrides the default orders for every mechanism.

    For mechanisms that are also pure DP (Laplace; LMO with bounded ``u``) the reported
    epsilon is the smaller of the RDP conversion and pure-DP composition (both proven
    bounds); the latter is reported with ``order = inf``. It only wins for a handful of
    unsampled releases, where RDP's conversion overhead dominates.
    """

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
        pure = pure_dp_composition(pure_dp_epsilon(mechanism), q, steps)
        if pure < res.epsilon:
            return PrivacySpent(pure, delta, self.name, math.inf)
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
        with warnings.catch_warnings():  # Opacus warns about its own internal RDP orders
            warnings.simplefilter("ignore", UserWarning)
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
