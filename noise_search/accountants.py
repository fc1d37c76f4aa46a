"""Privacy accountants: privacy events in, a proven upper bound on epsilon(delta) out.

One small interface (:class:`Accountant`, stateful like dp-accounting's and Opacus's): compose
events (:mod:`noise_search.events`) as the run makes them, ask for the epsilon at any time.
Three implementations:

* ``rdp`` (:class:`RdpAccountant`) -- Renyi DP. Laplace and LMO use the bound of
  :mod:`noise_search.rdp` on integer orders 2..256; Gaussian uses dp-accounting's RDP of the
  (Poisson-sampled) Gaussian mechanism on :data:`~noise_search.rdp.GAUSSIAN_ORDERS`. The RDP of
  every composed release is summed per order and converted to (epsilon, delta) by the improved
  conversion, with the minimising order reported. A run mixing Gaussian with Laplace/LMO
  releases uses the integer orders only. For runs of pure-DP releases only (Laplace; LMO with
  bounded ``u``) the smaller of the RDP conversion and pure-DP composition is reported.
* ``prv`` (:class:`PrvAccountant`) -- Opacus's PRV accountant for Gaussian, with an epsilon
  error that is *relative* (Opacus's default 0.01 is absolute), returning the upper end of its
  error interval (Opacus is imported, with torch, only when this accountant is used).
* ``pld`` (:class:`PldAccountant`) -- dp-accounting's privacy-loss-distribution accountant
  for Gaussian and Laplace (tight; pessimistic discretisation).
* ``rdp-hidden-u`` (:class:`HiddenURdpAccountant`) -- the RDP accountant with per-coordinate
  LMO's moments taken with ``u`` hidden (:mod:`noise_search.hidden_rdp`), wherever they are
  smaller than the revealed-``u`` ones; Gaussian, Laplace and shared-``u`` LMO as ``rdp``.

Private hyperparameter tuning (dp-accounting's ``RepeatAndSelectDpEvent``, and
:class:`~noise_search.events.RandomChoiceDpEvent` for runs that differ in a privacy-relevant
setting) is bounded by the RDP accountant only (Papernot and Steinke 2022,
:mod:`noise_search.tuning`); PRV and PLD refuse it.

Every accountant refuses, with :class:`~noise_search.errors.UnsupportedError`, an event it
cannot bound; :func:`accountants_for` lists those that can. :func:`compute_epsilon` is the
one-call form for ``T`` Poisson-sampled steps of one mechanism.
"""

from __future__ import annotations

import copy
import math
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Self

import numpy as np

from noise_search.errors import ParameterError, UnsupportedError, check_int, check_range
from noise_search.events import (
    ComposedDpEvent,
    DpEvent,
    Leaf,
    NoOpDpEvent,
    RandomChoiceDpEvent,
    RepeatAndSelectDpEvent,
    SelfComposedDpEvent,
    has_selection,
    leaves,
)
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism
from noise_search.mgf import log_mgf
from noise_search.rdp import (
    DEFAULT_ORDERS,
    GAUSSIAN_ORDERS,
    epsilon_from_rdp,
    laplace_log_expected_a,
    log_expected_a,
    subsampled_rdp,
)
from noise_search.tuning import TuningDistribution, repeat_and_select_rdp

ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld", "rdp-hidden-u")


@dataclass(frozen=True)
class PrivacySpent:
    """An (epsilon, delta) guarantee. ``order`` is the RDP order that gave it (RDP only;
    ``inf`` when pure-DP composition gave it)."""

    epsilon: float
    delta: float
    accountant: str
    order: float | None = None


#: Smallest Poisson sample rate accepted: below it the libraries' numerics break down (and no
#: dataset is that large).
MIN_SAMPLE_RATE = 1e-12


#: Most steps the ``prv`` and ``pld`` accountants are asked to compose: their cost grows with ``T``
#: (PLD with a grid refined as ``1/sqrt(T)``; measured on 2 cores: 1e6 Gaussian steps take 5 s
#: under pld and 12 s under prv, 1e6 Laplace steps 62 s under pld; 1e9 steps run out of memory).
#: ``rdp`` has no limit: its cost does not depend on ``T``.
MAX_NUMERIC_STEPS = 1_000_000


def check_steps_supported(accountant: str, steps: int, field: str = "steps") -> None:
    """Refuse (:class:`ParameterError` naming ``field``) more than :data:`MAX_NUMERIC_STEPS`
    steps for the ``prv`` and ``pld`` accountants, before any of their work starts."""
    if accountant in ("prv", "pld") and steps > MAX_NUMERIC_STEPS:
        raise ParameterError(
            field,
            f"the {accountant} accountant supports at most {MAX_NUMERIC_STEPS:,} steps (its cost grows with the "
            f"steps), got {steps:,}; use the rdp accountant for longer runs",
        )


def check_accounting_inputs(sample_rate: float, steps: int, delta: float) -> tuple[float, int, float]:
    """Validate ``sample_rate`` in [1e-12, 1], ``steps >= 1``, ``delta`` in (0, 1)."""
    q = check_range("sample_rate", sample_rate, ge=MIN_SAMPLE_RATE, le=1.0)
    t = check_int("steps", steps, ge=1)
    d = check_range("delta", delta, gt=0.0, lt=1.0)
    return q, t, d


class Accountant(ABC):
    """Composes privacy events; :meth:`get_epsilon` bounds the whole composition.

    ``compose(event, count)`` adds ``count`` occurrences of ``event``; :meth:`spent` returns
    the bound with its order; :meth:`spent_with` answers "what if ``event`` happened next"
    without composing it (a training loop stops *before* a step that would exceed its budget).
    """

    name: ClassVar[str]
    #: the mechanism families (``Mechanism.name``) whose releases this accountant can bound
    families: ClassVar[tuple[str, ...]]
    #: whether it bounds repeat-and-select (private tuning) and random-choice events
    tunes: ClassVar[bool] = False

    def __init__(self) -> None:
        self._leaves: Counter[Leaf] = Counter()
        #: (event, count) of the tuning / random-choice events composed so far
        self._selected: list[tuple[DpEvent, int]] = []

    # --- which releases ---------------------------------------------------------------------
    def supports_release(self, mechanism: Mechanism) -> bool:
        """Whether this accountant can bound releases of ``mechanism`` (sampled or not)."""
        return mechanism.name in self.families

    def supports(self, event_or_mechanism: DpEvent | Mechanism) -> bool:
        """Whether every release in an event (or a mechanism's releases) can be bounded."""
        if isinstance(event_or_mechanism, (Gaussian, Laplace, LMO)):
            return self.supports_release(event_or_mechanism)
        try:
            self._collect(event_or_mechanism, 1)
        except UnsupportedError:
            return False
        return True

    def _check(self, found: Counter[Leaf]) -> None:
        check_steps_supported(self.name, sum(found.values()))
        for mech, _ in found:
            if not self.supports_release(mech):
                able = ", ".join(accountants_for(mech))
                raise UnsupportedError(
                    f"accountant: '{self.name}' does not support the {mech.name} mechanism (use one of: {able})"
                )

    # --- composition ---------------------------------------------------------------------------
    def compose(self, event: DpEvent, count: int = 1) -> Self:
        """Add ``count`` occurrences of ``event`` (validated before anything is added)."""
        count = check_int("count", count, ge=1)
        found, selected = self._collect(event, count)
        for leaf, n in found.items():
            self._leaves[leaf] += n
        self._selected.extend(selected)
        return self

    def _collect(self, event: DpEvent, count: int) -> tuple[Counter[Leaf], list[tuple[DpEvent, int]]]:
        """(plain releases, tuning / random-choice events) of ``count`` times ``event``; raises
        :class:`UnsupportedError` for anything this accountant cannot bound."""
        if not has_selection(event):
            found = leaves(event)
            self._check(found)
            return Counter({leaf: n * count for leaf, n in found.items()}), []
        if isinstance(event, NoOpDpEvent):
            return Counter(), []
        if isinstance(event, ComposedDpEvent):
            total: Counter[Leaf] = Counter()
            selected: list[tuple[DpEvent, int]] = []
            for e in event.events:
                f, sel = self._collect(e, count)
                total.update(f)
                selected.extend(sel)
            return total, selected
        if isinstance(event, SelfComposedDpEvent):
            return self._collect(event.event, count * int(event.count))
        if not isinstance(event, (RepeatAndSelectDpEvent, RandomChoiceDpEvent)):
            raise UnsupportedError(f"accountant: cannot account the event {event!r}")
        if not self.tunes:
            raise UnsupportedError(
                f"accountant: '{self.name}' does not support hyperparameter tuning (repeat-and-select); use rdp"
            )
        self._check_selection(event)
        return Counter(), [(event, count)]

    def _check_selection(self, event: DpEvent) -> None:
        if isinstance(event, RepeatAndSelectDpEvent):
            TuningDistribution.from_mean(event.mean, event.shape)  # validates mean and shape
            self._check_selection(event.event)
        elif isinstance(event, RandomChoiceDpEvent):
            if not event.events:
                raise UnsupportedError("accountant: a random choice needs at least one event")
            for e in event.events:
                self._check_selection(e)
        else:
            self._collect(event, 1)

    @property
    def releases(self) -> int:
        """Number of releases composed so far."""
        return sum(self._leaves.values())

    def spent(self, delta: float) -> PrivacySpent:
        """The bound for everything composed so far (0 before any release)."""
        d = check_range("delta", delta, gt=0.0, lt=1.0)
        if not self._leaves and not self._selected:
            return PrivacySpent(0.0, d, self.name, None)
        if self._selected:
            return self._spent_selected(self._leaves, self._selected, d)
        return self._spent(self._leaves, d)

    def get_epsilon(self, delta: float) -> float:
        return self.spent(delta).epsilon

    def spent_with(self, event: DpEvent, delta: float) -> PrivacySpent:
        """The bound if ``event`` were composed next (nothing is composed)."""
        trial = copy.copy(self)
        trial._leaves = Counter(self._leaves)
        trial._selected = list(self._selected)
        return trial.compose(event).spent(delta)

    @abstractmethod
    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent: ...

    def _spent_selected(self, found: Counter[Leaf], selected: list[tuple[DpEvent, int]], delta: float) -> PrivacySpent:
        raise UnsupportedError(  # only reached by accountants with ``tunes`` set
            f"accountant: '{self.name}' does not support hyperparameter tuning (repeat-and-select); use rdp"
        )

    def _library_limits(self, exc: Exception, found: Counter[Leaf]) -> UnsupportedError:
        """A library's numeric failure on extreme parameters, as a one-line refusal."""
        what = ", ".join(sorted({repr(m) for m, _ in found}))
        return UnsupportedError(
            f"accountant: '{self.name}' cannot evaluate {what} (numeric limits of the library: "
            f"{type(exc).__name__}: {exc}); use the rdp accountant"
        )

    # --- the one-call form ---------------------------------------------------------------------
    def epsilon(self, mechanism: Mechanism, *, sample_rate: float, steps: int, delta: float) -> PrivacySpent:
        """Epsilon after ``steps`` Poisson-sampled releases of ``mechanism`` (this accountant's
        composed events are not touched)."""
        q, t, d = check_accounting_inputs(sample_rate, steps, delta)
        found: Counter[Leaf] = Counter({(mechanism, q): t})  # == leaves(dp_sgd_event(mechanism, q, t))
        self._check(found)
        return self._spent(found, d)

    @classmethod
    def fresh(cls, like: Accountant) -> Self:
        """An empty accountant with ``like``'s settings."""
        out = copy.copy(like)
        out._leaves = Counter()
        out._selected = []
        return out  # type: ignore[return-value]


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
    from scipy.special import gammaln, logsumexp

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
    import logging

    import dp_accounting

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


@lru_cache(maxsize=256)
def _cached_curve(mechanism: Mechanism, q: float, orders: tuple[float, ...]) -> np.ndarray:
    arr = np.asarray(orders, float)
    curve = (
        gaussian_rdp_curve(mechanism.sigma, q, arr)
        if isinstance(mechanism, Gaussian)
        else lmo_rdp_curve(mechanism, q, arr)
    )
    curve.setflags(write=False)
    return curve


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
    if eps0 < 30.0:
        return steps * math.log1p(sample_rate * math.expm1(eps0))
    # log(1 + q (e^e - 1)) = e + log(q + (1 - q) e^-e), without overflowing e^e
    return steps * (eps0 + math.log(sample_rate + (1.0 - sample_rate) * math.exp(-eps0)))


class RdpAccountant(Accountant):
    """Renyi-DP accountant; ``orders`` overrides the default orders for every release."""

    name = "rdp"
    families = ("gaussian", "laplace", "lmo")
    tunes = True

    def __init__(self, orders: np.ndarray | None = None) -> None:
        super().__init__()
        self.orders = None if orders is None else np.asarray(orders, float)

    def orders_for(self, mechanism: Mechanism) -> np.ndarray:
        """The orders a run of ``mechanism`` alone is accounted on."""
        if self.orders is not None:
            return self.orders
        return GAUSSIAN_ORDERS if isinstance(mechanism, Gaussian) else DEFAULT_ORDERS

    def curve(self, mechanism: Mechanism, sample_rate: float, orders: np.ndarray | None = None) -> np.ndarray:
        """Per-release RDP at ``orders`` (default :meth:`orders_for`); cached."""
        o = self.orders_for(mechanism) if orders is None else orders
        return _cached_curve(mechanism, float(sample_rate), tuple(np.asarray(o, float)))

    def _orders(self, found: Counter[Leaf]) -> np.ndarray:
        mechs = [m for m, _ in found]
        if all(isinstance(m, Gaussian) for m in mechs):
            return self.orders_for(mechs[0])
        base = self.orders if self.orders is not None else DEFAULT_ORDERS
        return base[(base >= 2) & (base == np.round(base))]  # Laplace / LMO need integer orders

    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent:
        orders = self._orders(found)
        total = sum(count * self.curve(m, q, orders) for (m, q), count in found.items())
        eps, order = epsilon_from_rdp(np.asarray(total, float)[None, :], orders, delta)
        res_eps, res_order = float(eps[0]), None if np.isnan(order[0]) else float(order[0])
        pure = sum(pure_dp_composition(pure_dp_epsilon(m), q, count) for (m, q), count in found.items())
        if pure < res_eps:
            return PrivacySpent(pure, delta, self.name, math.inf)
        return PrivacySpent(res_eps, delta, self.name, res_order)

    # --- tuning ------------------------------------------------------------------------------
    def _spent_selected(self, found: Counter[Leaf], selected: list[tuple[DpEvent, int]], delta: float) -> PrivacySpent:
        mechs = [m for m, _ in found]
        for event, _ in selected:
            mechs.extend(m for m, _ in _all_leaves(event))
        orders = self._orders(Counter({(m, 1.0): 1 for m in mechs}))
        orders = orders[orders > 1.0]
        total = sum((count * self.curve(m, q, orders) for (m, q), count in found.items()), np.zeros(len(orders)))
        for event, count in selected:
            total = total + count * self.event_curve(event, orders)
        eps, order = epsilon_from_rdp(np.asarray(total, float)[None, :], orders, delta)
        return PrivacySpent(float(eps[0]), delta, self.name, None if np.isnan(order[0]) else float(order[0]))

    def event_curve(self, event: DpEvent, orders: np.ndarray) -> np.ndarray:
        """RDP of ``event`` at ``orders`` (all > 1): repeat-and-select by Papernot and Steinke's
        bound, a random choice by the pointwise maximum, plain releases by composition (capped by
        their pure-DP composition where that is smaller: ``D_alpha <= D_inf``)."""
        if isinstance(event, RepeatAndSelectDpEvent):
            dist = TuningDistribution.from_mean(event.mean, event.shape)
            return repeat_and_select_rdp(self.event_curve(event.event, orders), orders, dist)
        if isinstance(event, RandomChoiceDpEvent):
            return np.max([self.event_curve(e, orders) for e in event.events], axis=0)
        if has_selection(event):
            found, selected = self._collect(event, 1)
            out = sum((c * self.curve(m, q, orders) for (m, q), c in found.items()), np.zeros(len(orders)))
            return out + sum((c * self.event_curve(e, orders) for e, c in selected), np.zeros(len(orders)))
        found = leaves(event)
        curve = sum((c * self.curve(m, q, orders) for (m, q), c in found.items()), np.zeros(len(orders)))
        pure = sum(pure_dp_composition(pure_dp_epsilon(m), q, c) for (m, q), c in found.items())
        return np.minimum(curve, pure)


def _all_leaves(event: DpEvent) -> Counter[Leaf]:
    """Every plain release inside ``event``, tuning and random-choice events included."""
    if isinstance(event, RepeatAndSelectDpEvent):
        return _all_leaves(event.event)
    if isinstance(event, RandomChoiceDpEvent | ComposedDpEvent):
        out: Counter[Leaf] = Counter()
        for e in event.events:
            out.update(_all_leaves(e))
        return out
    if isinstance(event, SelfComposedDpEvent) and has_selection(event):
        return _all_leaves(event.event)
    return leaves(event)


class HiddenURdpAccountant(RdpAccountant):
    """:class:`RdpAccountant` with per-coordinate LMO's Renyi moments bounded with ``u`` hidden.

    For each order the smaller of two proven bounds on the d-dimensional moment is used: the
    revealed-``u`` ``E_u[A_j(u)]`` and the hidden-``u`` ``B_j`` (docs/privacy.md, "RDP with u
    hidden"). ``max_evals`` (shifts evaluated per mixture, >= 13) trades time for tightness; every
    setting gives a proven bound. The first evaluation for a mixture takes under a second at the
    default (then cached).
    """

    name = "rdp-hidden-u"

    def __init__(self, orders: np.ndarray | None = None, max_evals: int = 160) -> None:
        super().__init__(orders)
        self.max_evals = check_int("max_evals", max_evals, ge=13)

    def curve(self, mechanism: Mechanism, sample_rate: float, orders: np.ndarray | None = None) -> np.ndarray:
        o = self.orders_for(mechanism) if orders is None else orders
        if isinstance(mechanism, LMO) and mechanism.variant == "per_coordinate":
            return _cached_hidden_curve(mechanism, float(sample_rate), tuple(np.asarray(o, float)), self.max_evals)
        return super().curve(mechanism, sample_rate, o)


@lru_cache(maxsize=256)
def _cached_hidden_curve(mechanism: LMO, q: float, orders: tuple[float, ...], max_evals: int = 160) -> np.ndarray:
    from noise_search.hidden_rdp import hidden_log_moments

    arr = np.asarray(orders, float)
    top = int(arr.max())
    k = np.arange(2, top + 1, dtype=float)
    revealed = log_expected_a(log_mgf(mechanism.arrays, k - 1), log_mgf(mechanism.arrays, -k))[0]
    log_ea = np.minimum(revealed, hidden_log_moments(mechanism, max(top, 2), max_evals)[: top + 1])
    curve = subsampled_rdp(log_ea[None, :], arr, q)[0]
    curve.setflags(write=False)
    return curve


# --- PRV -------------------------------------------------------------------------------------


class PrvAccountant(Accountant):
    """Opacus PRV accountant for Gaussian with a relative epsilon error.

    The reported epsilon is the PRV's *upper* bound ``eps_estimate + eps_error`` at
    ``delta - delta_error`` (Gopi et al. 2021), with ``eps_error = rel_error * eps_rdp``, and
    never more than the RDP bound of the same composition.
    """

    name = "prv"
    families = ("gaussian",)

    def __init__(self, rel_error: float = 0.01) -> None:
        super().__init__()
        self.rel_error = check_range("rel_error", rel_error, gt=0.0, lt=1.0)

    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent:
        check_steps_supported(self.name, sum(found.values()))
        from opacus.accountants import PRVAccountant

        eps_rdp = RdpAccountant()._spent(found, delta).epsilon
        acc = PRVAccountant()
        acc.history = [(m.sigma, q, count) for (m, q), count in found.items()]
        eps_error = max(self.rel_error * eps_rdp, 1e-6)
        with warnings.catch_warnings():  # Opacus warns about its own internal RDP orders
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                eps = float(acc.get_epsilon(delta=delta, eps_error=eps_error, delta_error=delta / 1000))
            except (OverflowError, FloatingPointError, ValueError, ZeroDivisionError) as exc:
                raise self._library_limits(exc, found) from exc
        # PRV can only tighten RDP; never report more than the proven RDP value.
        return PrivacySpent(min(max(eps, 0.0), eps_rdp), delta, self.name, None)


# --- PLD -------------------------------------------------------------------------------------


class PldAccountant(Accountant):
    """dp-accounting PLD accountant for Gaussian and Laplace (add/remove neighbours).

    ``value_discretization_interval`` is relative to the RDP epsilon of the same composition,
    so small epsilons are resolved as finely as large ones.
    """

    name = "pld"
    families = ("gaussian", "laplace")

    def __init__(self, rel_discretization: float = 1e-3) -> None:
        super().__init__()
        self.rel_discretization = check_range("rel_discretization", rel_discretization, gt=0.0, lt=1.0)

    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent:
        check_steps_supported(self.name, sum(found.values()))
        import dp_accounting

        from noise_search.events import mechanism_event

        eps_rdp = RdpAccountant()._spent(found, delta).epsilon
        steps = sum(found.values())
        interval = min(1e-4, self.rel_discretization * max(eps_rdp, 1e-3) / math.sqrt(steps))
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
        try:
            for (mech, q), count in found.items():
                event = mechanism_event(mech)
                acc.compose(dp_accounting.PoissonSampledDpEvent(q, event) if q < 1.0 else event, count)
            eps = float(acc.get_epsilon(delta))
        except (OverflowError, FloatingPointError, ValueError, ZeroDivisionError) as exc:
            raise self._library_limits(exc, found) from exc
        return PrivacySpent(max(eps, 0.0), delta, self.name, None)


# --- lookup ----------------------------------------------------------------------------------

_CLASSES: dict[str, type[Accountant]] = {
    "rdp": RdpAccountant,
    "prv": PrvAccountant,
    "pld": PldAccountant,
    "rdp-hidden-u": HiddenURdpAccountant,
}


def get_accountant(name: str) -> Accountant:
    """A new ``rdp``, ``prv``, ``pld`` or ``rdp-hidden-u`` accountant with default settings."""
    try:
        return _CLASSES[name]()
    except KeyError:
        raise UnsupportedError(f"accountant: must be one of {', '.join(ACCOUNTANTS)}, got {name!r}") from None


def accountants_for(mechanism: Mechanism | str) -> list[str]:
    """Names of the accountants that can bound the releases of ``mechanism`` (or of a family,
    ``gaussian``, ``laplace`` or ``lmo``)."""
    family = mechanism if isinstance(mechanism, str) else mechanism.name
    return [name for name in ACCOUNTANTS if family in _CLASSES[name].families]


def compute_epsilon(
    mechanism: Mechanism, *, sample_rate: float, steps: int, delta: float, accountant: str | Accountant = "rdp"
) -> PrivacySpent:
    """Epsilon of ``steps`` Poisson-sampled releases of ``mechanism`` at rate ``sample_rate``."""
    acc = get_accountant(accountant) if isinstance(accountant, str) else accountant
    return acc.epsilon(mechanism, sample_rate=sample_rate, steps=steps, delta=delta)
