"""Privacy events: what a run releases, as plain data.

lmo-dp describes releases with dp-accounting's event classes (``GaussianDpEvent``,
``LaplaceDpEvent``, ``PoissonSampledDpEvent``, ``SelfComposedDpEvent``, ``ComposedDpEvent``)
plus its own: :class:`MechanismDpEvent` (a release bounded from the mechanism's own Renyi-DP
curve) and its subclass :class:`LmoDpEvent` (Laplace noise whose inverse scale ``u`` is random).
A mechanism's release is :meth:`~noise_search.mechanisms.Mechanism.event`.
Every event is for sensitivity 1 in the mechanism's own norm; the noise is scaled by the
clipping bound ``C``, so the bound holds for any ``C``. Accountants
(:mod:`noise_search.accountants`) interpret events; nothing here computes an epsilon.

One DP-SGD step of a mechanism at Poisson rate ``q`` is
``PoissonSampledDpEvent(q, mechanism_event(m))``; ``T`` such steps are
``SelfComposedDpEvent(step, T)`` (:func:`dp_sgd_event`). A run can compose mixed steps (a
changed sample rate, other mechanisms) with ``ComposedDpEvent``.

:func:Private hyperparameter tuning (docs/privacy.md section 7) is dp-accounting's
``RepeatAndSelectDpEvent(event, mean, shape)``: a random number of runs, only the best
released. When the runs may differ in a privacy-relevant setting (e.g. the number of epochs),
``event`` is a :class:`RandomChoiceDpEvent` over the possible runs.

:func:`leaves` flattens any supported event into ``{(mechanism, q): count}``, the form the
accountants compute with.
"""

from __future__ import annotations

from collections import Counter

import attr
import dp_accounting
from dp_accounting import (
    ComposedDpEvent,
    DpEvent,
    GaussianDpEvent,
    LaplaceDpEvent,
    NoOpDpEvent,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
)
from dp_accounting.dp_event import RepeatAndSelectDpEvent

from noise_search.errors import UnsupportedError, check_int, check_range
from noise_search.mechanisms import (
    Gaussian,
    InverseScaleLaplaceDpEvent,
    Laplace,
    LmoDpEvent,
    Mechanism,
    MechanismDpEvent,
)

__all__ = [
    "ComposedDpEvent",
    "DpEvent",
    "GaussianDpEvent",
    "InverseScaleLaplaceDpEvent",
    "LaplaceDpEvent",
    "LmoDpEvent",
    "MechanismDpEvent",
    "PoissonSampledDpEvent",
    "RandomChoiceDpEvent",
    "RepeatAndSelectDpEvent",
    "SelfComposedDpEvent",
    "dp_sgd_event",
    "has_selection",
    "leaves",
    "mechanism_event",
    "tuned_event",
]


@attr.define(frozen=True)
class RandomChoiceDpEvent(dp_accounting.DpEvent):
    """One of ``events``, picked at random independently of the data (the pick may be revealed).

    Its Renyi divergence at every order is at most the largest of the events' (the pick is
    data-independent), which is how the RDP accountant bounds it.
    """

    events: tuple[DpEvent, ...]


def tuned_event(run: DpEvent, mean: float, shape: float) -> DpEvent:
    """The best of a random number of ``run`` releases: ``K`` truncated negative binomial with
    ``shape`` in (-1, inf), or Poisson (``shape = inf``), with mean ``mean``."""
    from noise_search.tuning import check_tuning

    m, eta = check_tuning(mean, shape)
    return RepeatAndSelectDpEvent(run, m, eta)


def has_selection(event: DpEvent) -> bool:
    """Whether ``event`` contains a repeat-and-select (tuning) or random-choice event."""
    if isinstance(event, (RepeatAndSelectDpEvent, RandomChoiceDpEvent)):
        return True
    if isinstance(event, SelfComposedDpEvent | PoissonSampledDpEvent):
        return has_selection(event.event)
    if isinstance(event, ComposedDpEvent):
        return any(has_selection(e) for e in event.events)
    return False


def mechanism_event(mechanism: Mechanism) -> DpEvent:
    """The event of one unsampled release of ``mechanism`` (sensitivity 1): its own :meth:`~Mechanism.event`."""
    if not isinstance(mechanism, Mechanism):
        raise UnsupportedError(f"mechanism: no privacy event for {mechanism!r}")
    return mechanism.event()


def dp_sgd_event(mechanism: Mechanism, sample_rate: float, steps: int) -> DpEvent:
    """``steps`` Poisson-sampled releases of ``mechanism`` at rate ``sample_rate`` in (0, 1]."""
    q = check_range("sample_rate", sample_rate, gt=0.0, le=1.0)
    t = check_int("steps", steps, ge=1)
    step = mechanism_event(mechanism)
    if q < 1.0:
        step = PoissonSampledDpEvent(q, step)
    return step if t == 1 else SelfComposedDpEvent(step, t)


Leaf = tuple[Mechanism, float]


def leaves(event: DpEvent) -> Counter[Leaf]:
    """``{(mechanism, sample rate): count}`` of ``event``; raises :class:`UnsupportedError` for
    events lmo-dp cannot account (e.g. Poisson sampling of a composition)."""
    out: Counter[Leaf] = Counter()
    _walk(event, 1, out)
    return out


def _walk(event: DpEvent, count: int, out: Counter[Leaf]) -> None:
    if isinstance(event, NoOpDpEvent):
        return
    if isinstance(event, SelfComposedDpEvent):
        _walk(event.event, count * int(event.count), out)
    elif isinstance(event, ComposedDpEvent):
        for e in event.events:
            _walk(e, count, out)
    elif isinstance(event, PoissonSampledDpEvent):
        inner = _release(event.event)
        out[(inner, float(event.sampling_probability))] += count
    else:
        out[(_release(event), 1.0)] += count


def _release(event: DpEvent) -> Mechanism:
    """The mechanism of a single-release event (dp-accounting's Gaussian and Laplace events read as
    the built-in mechanisms they describe)."""
    if isinstance(event, MechanismDpEvent):
        return event.mechanism
    if isinstance(event, GaussianDpEvent):
        return Gaussian(event.noise_multiplier)
    if isinstance(event, LaplaceDpEvent):
        u0 = getattr(event, "u0", None)
        return Laplace(u0 if u0 is not None else 1.0 / event.noise_multiplier)
    raise UnsupportedError(f"accountant: cannot account the event {event!r}")
