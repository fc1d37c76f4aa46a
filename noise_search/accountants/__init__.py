"""Privacy accountants: privacy events in, a proven upper bound on epsilon(delta) out.

One small interface (:class:`~noise_search.accountants.base.Accountant`, stateful like
dp-accounting's and Opacus's) and four implementations, looked up by name:

* ``rdp`` -- Renyi DP for every mechanism with a Renyi-DP curve, and private tuning
  (:mod:`noise_search.accountants.rdp`);
* ``prv`` -- Opacus's PRV accountant for Gaussian releases (:mod:`noise_search.accountants.numeric`);
* ``pld`` -- dp-accounting's privacy-loss distributions for Gaussian and Laplace releases;
* ``rdp-hidden-u`` -- ``rdp`` with per-coordinate LMO's moments taken with ``u`` hidden.

Which mechanisms an accountant can bound follows from what each mechanism declares (its event
class, or a Renyi-DP curve: :mod:`noise_search.mechanisms.base`), so a new mechanism needs no
change here. Every accountant refuses, with :class:`~noise_search.errors.UnsupportedError`, an
event it cannot bound; :func:`accountants_for` lists those that can. :func:`compute_epsilon` is
the one-call form for ``T`` Poisson-sampled steps of one mechanism.

A new accountant: subclass :class:`Accountant` (``name``, :meth:`~Accountant.supports_class`,
``_spent``) and add it to :data:`ACCOUNTANT_CLASSES`.
"""

from __future__ import annotations

from noise_search.accountants.base import (
    MAX_NUMERIC_STEPS,
    MIN_SAMPLE_RATE,
    Accountant,
    PrivacySpent,
    check_accounting_inputs,
    check_steps_supported,
)
from noise_search.accountants.numeric import PldAccountant, PrvAccountant
from noise_search.accountants.rdp import (
    HiddenURdpAccountant,
    RdpAccountant,
    lmo_rdp_curve,
    pure_dp_composition,
    pure_dp_epsilon,
)
from noise_search.errors import UnsupportedError
from noise_search.mechanisms import Mechanism, gaussian_rdp_curve, mechanism_class
from noise_search.mechanisms.gaussian import _dp_accounting_gaussian_curve  # noqa: F401 - the tests' old path

#: Every accountant, in the order outputs and ``--help`` list them.
ACCOUNTANT_CLASSES: tuple[type[Accountant], ...] = (RdpAccountant, PrvAccountant, PldAccountant, HiddenURdpAccountant)
ACCOUNTANTS: tuple[str, ...] = tuple(cls.name for cls in ACCOUNTANT_CLASSES)
_CLASSES: dict[str, type[Accountant]] = {cls.name: cls for cls in ACCOUNTANT_CLASSES}

__all__ = [
    "ACCOUNTANTS",
    "ACCOUNTANT_CLASSES",
    "MAX_NUMERIC_STEPS",
    "MIN_SAMPLE_RATE",
    "Accountant",
    "HiddenURdpAccountant",
    "PldAccountant",
    "PrivacySpent",
    "PrvAccountant",
    "RdpAccountant",
    "accountant_class",
    "accountants_for",
    "check_accounting_inputs",
    "check_steps_supported",
    "compute_epsilon",
    "gaussian_rdp_curve",
    "get_accountant",
    "lmo_rdp_curve",
    "pure_dp_composition",
    "pure_dp_epsilon",
]


def accountant_class(name: str) -> type[Accountant]:
    """The accountant class named ``name`` (:class:`UnsupportedError` for an unknown one)."""
    try:
        return _CLASSES[name]
    except (KeyError, TypeError):
        raise UnsupportedError(f"accountant: must be one of {', '.join(ACCOUNTANTS)}, got {name!r}") from None


def get_accountant(name: str) -> Accountant:
    """A new accountant of the given name (``rdp``, ``prv``, ``pld``, ``rdp-hidden-u``) with default settings."""
    return accountant_class(name)()


def accountants_for(mechanism: Mechanism | type[Mechanism] | str) -> list[str]:
    """Names of the accountants that can bound the releases of ``mechanism`` (an instance, a
    class, or a registered mechanism's name)."""
    if isinstance(mechanism, str):
        cls = mechanism_class(mechanism)
    else:
        cls = mechanism if isinstance(mechanism, type) else type(mechanism)
    return [a.name for a in ACCOUNTANT_CLASSES if a.supports_class(cls)]


def compute_epsilon(
    mechanism: Mechanism, *, sample_rate: float, steps: int, delta: float, accountant: str | Accountant = "rdp"
) -> PrivacySpent:
    """Epsilon of ``steps`` Poisson-sampled releases of ``mechanism`` at rate ``sample_rate``."""
    acc = get_accountant(accountant) if isinstance(accountant, str) else accountant
    return acc.epsilon(mechanism, sample_rate=sample_rate, steps=steps, delta=delta)
