"""The accountant interface: privacy events in, a proven upper bound on epsilon(delta) out.

:class:`Accountant` is stateful like dp-accounting's and Opacus's: compose events
(:mod:`noise_search.events`) as the run makes them, ask for the epsilon at any time, or ask
"what if this event happened next" (:meth:`~Accountant.spent_with`). An accountant says which
mechanisms it can bound by :meth:`~Accountant.supports_class` (from what the mechanism declares:
its event class, or a Renyi-DP curve) and refuses anything else with
:class:`~noise_search.errors.UnsupportedError`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Self

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
from noise_search.mechanisms import Mechanism
from noise_search.tuning import TuningDistribution


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
    from noise_search.accountants import accountant_class

    if accountant_class(accountant).numeric and steps > MAX_NUMERIC_STEPS:
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

    A subclass declares its ``name``, which mechanisms it can bound (:meth:`supports_class`) and
    :meth:`_spent` (the bound of a ``Counter`` of ``(mechanism, sample_rate) -> count``).
    """

    name: ClassVar[str]
    #: whether it bounds repeat-and-select (private tuning) and random-choice events
    tunes: ClassVar[bool] = False
    #: whether its cost grows with the steps (it refuses more than :data:`MAX_NUMERIC_STEPS`)
    numeric: ClassVar[bool] = False
    #: whether the search may calibrate its Gaussian and Laplace baselines under it (``--accountant``)
    baseline: ClassVar[bool] = True
    #: one line for ``--help`` and the docs
    summary: ClassVar[str] = ""

    def __init__(self) -> None:
        self._leaves: Counter[Leaf] = Counter()
        #: (event, count) of the tuning / random-choice events composed so far
        self._selected: list[tuple[DpEvent, int]] = []

    # --- which releases ---------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def supports_class(cls, mechanism: type[Mechanism]) -> bool:
        """Whether releases of mechanisms of class ``mechanism`` can be bounded (sampled or not)."""

    def supports_release(self, mechanism: Mechanism) -> bool:
        """Whether this accountant can bound releases of ``mechanism`` (sampled or not)."""
        return self.supports_class(type(mechanism))

    def supports(self, event_or_mechanism: DpEvent | Mechanism) -> bool:
        """Whether every release in an event (or a mechanism's releases) can be bounded."""
        if isinstance(event_or_mechanism, Mechanism):
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
                from noise_search.accountants import accountants_for

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
        found: Counter[Leaf] = leaves(mechanism.event())  # the release as the accountants read it
        ((release, _),) = found
        found = Counter({(release, q): t})  # == leaves(dp_sgd_event(mechanism, q, t))
        self._check(found)
        return self._spent(found, d)

    @classmethod
    def fresh(cls, like: Accountant) -> Self:
        """An empty accountant with ``like``'s settings."""
        out = copy.copy(like)
        out._leaves = Counter()
        out._selected = []
        return out  # type: ignore[return-value]
