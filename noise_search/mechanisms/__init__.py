"""Noise mechanisms as validated, immutable parameter objects (docs/privacy.md section 2).

Each mechanism adds noise to a sum of per-example contributions clipped to bound ``C`` in
its norm (:attr:`~Mechanism.norm`: L2 for Gaussian, L1 for Laplace and LMO):

* :class:`Gaussian` (:mod:`.gaussian`) -- ``N(0, (sigma C)^2)`` per coordinate.
* :class:`Laplace` (:mod:`.laplace`) -- ``Laplace(0, C/u0)`` per coordinate.
* :class:`LMO` (:mod:`.lmo`) -- ``Laplace(0, C/u)`` with a random inverse scale
  ``u = a1 Gamma(G_k, scale=G_theta) + a3 Exponential(rate=E_lambda) + a4 Uniform(U_a, U_b)``.

What a mechanism declares (name, norm, parameters, calibration, privacy event or Renyi-DP curve,
noise law) is :class:`~noise_search.mechanisms.base.Mechanism`; the registry of built-ins and
plug-ins (entry-point group ``lmo_dp.mechanisms``) is :mod:`.registry`.

Utility objectives (section 6) are per coordinate for ``C = 1``: ``mean_abs = E|Z|``,
``variance = Var Z`` and ``usefulness(gamma) = P(|Z| <= gamma)``. They are computed by
closed forms or quadrature, never by sampling. Samplers take an explicit generator:
:meth:`~Mechanism.sample` a ``numpy.random.Generator``. Training noise is drawn in torch by
:mod:`trainers.noise` (this package never imports torch).
"""

from noise_search.mechanisms.base import Mechanism, MechanismDpEvent, NoiseParameter, Parameter
from noise_search.mechanisms.gaussian import MAX_SIGMA, MIN_SIGMA, Gaussian, gaussian_rdp_curve
from noise_search.mechanisms.laplace import MAX_U0, InverseScaleLaplaceDpEvent, Laplace
from noise_search.mechanisms.lmo import COMPONENTS, LMO, VARIANTS, LmoDpEvent
from noise_search.mechanisms.registry import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    builtin_names,
    mechanism_class,
    mechanism_from_dict,
    mechanism_names,
    mechanisms,
    register,
)

__all__ = [
    "BUILTINS",
    "COMPONENTS",
    "ENTRY_POINT_GROUP",
    "LMO",
    "MAX_SIGMA",
    "MAX_U0",
    "MIN_SIGMA",
    "VARIANTS",
    "Gaussian",
    "InverseScaleLaplaceDpEvent",
    "Laplace",
    "LmoDpEvent",
    "Mechanism",
    "MechanismDpEvent",
    "NoiseParameter",
    "Parameter",
    "builtin_names",
    "gaussian_rdp_curve",
    "mechanism_class",
    "mechanism_from_dict",
    "mechanism_names",
    "mechanisms",
    "register",
]
