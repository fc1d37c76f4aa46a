"""The numeric accountants of other libraries: ``prv`` (Opacus) and ``pld`` (dp-accounting).

Both read dp-accounting events: a mechanism whose release is a ``GaussianDpEvent`` (``prv`` and
``pld``) or a ``LaplaceDpEvent`` (``pld``) can be bounded by them, whatever its name.

* ``prv`` (:class:`PrvAccountant`) -- Opacus's PRV accountant for Gaussian releases, with an
  epsilon error that is *relative* (Opacus's default 0.01 is absolute), returning the upper end
  of its error interval (Opacus is imported, with torch, only when this accountant is used).
* ``pld`` (:class:`PldAccountant`) -- dp-accounting's privacy-loss-distribution accountant for
  Gaussian and Laplace releases (tight; pessimistic discretisation).

Neither bounds private hyperparameter tuning; both refuse more than
:data:`~noise_search.accountants.base.MAX_NUMERIC_STEPS` steps.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import ClassVar

import dp_accounting

from noise_search.accountants.base import Accountant, PrivacySpent, check_steps_supported
from noise_search.accountants.rdp import RdpAccountant
from noise_search.errors import check_range
from noise_search.events import Leaf, mechanism_event
from noise_search.mechanisms import Mechanism


class PrvAccountant(Accountant):
    """Opacus PRV accountant for Gaussian releases with a relative epsilon error.

    The reported epsilon is the PRV's *upper* bound ``eps_estimate + eps_error`` at
    ``delta - delta_error`` (Gopi et al. 2021), with ``eps_error = rel_error * eps_rdp``, and
    never more than the RDP bound of the same composition.
    """

    name = "prv"
    numeric = True
    summary: ClassVar[str] = "gaussian (Opacus PRV)"

    def __init__(self, rel_error: float = 0.01) -> None:
        super().__init__()
        self.rel_error = check_range("rel_error", rel_error, gt=0.0, lt=1.0)

    @classmethod
    def supports_class(cls, mechanism: type[Mechanism]) -> bool:
        return issubclass(mechanism.event_class, dp_accounting.GaussianDpEvent)

    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent:
        check_steps_supported(self.name, sum(found.values()))
        from opacus.accountants import PRVAccountant

        eps_rdp = RdpAccountant()._spent(found, delta).epsilon
        acc = PRVAccountant()
        acc.history = [(mechanism_event(m).noise_multiplier, q, count) for (m, q), count in found.items()]
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


class PldAccountant(Accountant):
    """dp-accounting PLD accountant for Gaussian and Laplace releases (add/remove neighbours).

    ``value_discretization_interval`` is relative to the RDP epsilon of the same composition,
    so small epsilons are resolved as finely as large ones.
    """

    name = "pld"
    numeric = True
    summary: ClassVar[str] = "gaussian and laplace (dp-accounting)"

    def __init__(self, rel_discretization: float = 1e-3) -> None:
        super().__init__()
        self.rel_discretization = check_range("rel_discretization", rel_discretization, gt=0.0, lt=1.0)

    @classmethod
    def supports_class(cls, mechanism: type[Mechanism]) -> bool:
        return issubclass(mechanism.event_class, (dp_accounting.GaussianDpEvent, dp_accounting.LaplaceDpEvent))

    def _spent(self, found: Counter[Leaf], delta: float) -> PrivacySpent:
        check_steps_supported(self.name, sum(found.values()))
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
