"""The Renyi-DP accountants: ``rdp`` and ``rdp-hidden-u``.

``rdp`` (:class:`RdpAccountant`) bounds every mechanism with a Renyi-DP curve
(:meth:`~noise_search.mechanisms.Mechanism.rdp_curve`): Laplace and LMO on integer orders 2..256
(:mod:`noise_search.rdp`), Gaussian on :data:`~noise_search.rdp.GAUSSIAN_ORDERS` (dp-accounting's
RDP of the Poisson-sampled Gaussian), a plug-in on its own curve. The RDP of every composed
release is summed per order and converted to (epsilon, delta) by the improved conversion, with
the minimising order reported. A run mixing mechanisms whose curves take fractional orders with
others uses the integer orders only. For runs of pure-DP releases only (Laplace; LMO with
bounded ``u``) the smaller of the RDP conversion and pure-DP composition is reported. It also
bounds private hyperparameter tuning (repeat-and-select, Papernot and Steinke 2022,
:mod:`noise_search.tuning`) and random choices between runs.

``rdp-hidden-u`` (:class:`HiddenURdpAccountant`) takes per-coordinate LMO's moments with ``u``
hidden (:mod:`noise_search.hidden_rdp`) wherever they are smaller than the revealed-``u`` ones;
every other mechanism as ``rdp``.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import ClassVar

import numpy as np

from noise_search.accountants.base import Accountant, PrivacySpent
from noise_search.errors import check_int
from noise_search.events import (
    ComposedDpEvent,
    DpEvent,
    Leaf,
    RandomChoiceDpEvent,
    RepeatAndSelectDpEvent,
    SelfComposedDpEvent,
    has_selection,
    leaves,
)
from noise_search.mechanisms import LMO, Laplace, Mechanism
from noise_search.mgf import log_mgf
from noise_search.rdp import DEFAULT_ORDERS, epsilon_from_rdp, log_expected_a, subsampled_rdp
from noise_search.tuning import TuningDistribution, repeat_and_select_rdp


def lmo_rdp_curve(mech: LMO | Laplace, sample_rate: float, orders: np.ndarray = DEFAULT_ORDERS) -> np.ndarray:
    """Per-step RDP of Laplace or LMO noise at integer ``orders`` (``+inf`` where unbounded)."""
    return mech.rdp_curve(sample_rate, orders)


@lru_cache(maxsize=256)
def _cached_curve(mechanism: Mechanism, q: float, orders: tuple[float, ...]) -> np.ndarray:
    curve = np.asarray(mechanism.rdp_curve(q, np.asarray(orders, float)), float)
    curve.setflags(write=False)
    return curve


def pure_dp_epsilon(mech: Mechanism) -> float:
    """Per-release pure-DP epsilon (``D_inf``) without sampling, or ``inf`` if not pure DP
    (:meth:`~noise_search.mechanisms.Mechanism.pure_dp_epsilon`)."""
    return mech.pure_dp_epsilon()


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
    tunes = True
    summary: ClassVar[str] = (
        "every mechanism (Renyi DP; lmo by the joint-convexity bound, as if u were known); private tuning too"
    )

    def __init__(self, orders: np.ndarray | None = None) -> None:
        super().__init__()
        self.orders = None if orders is None else np.asarray(orders, float)

    @classmethod
    def supports_class(cls, mechanism: type[Mechanism]) -> bool:
        return mechanism.has_rdp_curve()

    def orders_for(self, mechanism: Mechanism) -> np.ndarray:
        """The orders a run of ``mechanism`` alone is accounted on."""
        if self.orders is not None:
            return self.orders
        return mechanism.rdp_orders

    def curve(self, mechanism: Mechanism, sample_rate: float, orders: np.ndarray | None = None) -> np.ndarray:
        """Per-release RDP at ``orders`` (default :meth:`orders_for`); cached."""
        o = self.orders_for(mechanism) if orders is None else orders
        return _cached_curve(mechanism, float(sample_rate), tuple(np.asarray(o, float)))

    def _orders(self, found: Counter[Leaf]) -> np.ndarray:
        mechs = [m for m, _ in found]
        first = mechs[0]
        if all(m.fractional_orders and m.rdp_orders is first.rdp_orders for m in mechs):
            return self.orders_for(first)
        base = self.orders if self.orders is not None else DEFAULT_ORDERS
        return base[(base >= 2) & (base == np.round(base))]  # curves of integer orders only

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
    baseline = False  # the same as rdp for every mechanism but LMO: the search's LMO accountant
    summary: ClassVar[str] = (
        "lmo with u hidden (the Renyi moments of the noise a trial draws, much tighter for wide mixtures; "
        "gaussian and laplace as rdp)"
    )

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
