"""LMO noise: Laplace with a random inverse scale ``u`` (a Gamma/Exponential/Uniform mixture), L1 clipping.

Per coordinate ``Laplace(0, C/u)`` with
``u = a1 Gamma(G_k, scale=G_theta) + a3 Exponential(rate=E_lambda) + a4 Uniform(U_a, U_b)``:
an independent ``u`` per coordinate (``per_coordinate``) or one per draw (``shared``). Its
release is an :class:`LmoDpEvent`, bounded by the ``rdp`` accountants from the Renyi moments of
:mod:`noise_search.rdp` (joint convexity; ``rdp-hidden-u`` also with ``u`` hidden,
:mod:`noise_search.hidden_rdp`) and, when ``u`` is bounded, by pure-DP composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import attr
import dp_accounting
import numpy as np

from noise_search.errors import InputError, ParameterError, check_range
from noise_search.lmo_sampler import sample_per_coordinate
from noise_search.mechanisms.base import (
    Mechanism,
    MechanismDpEvent,
    NoiseParameter,
    Norm,
    Parameter,
    check_clip,
    check_gamma,
    shape_tuple,
)
from noise_search.mgf import MixtureArrays, dlog_mgf, log_inverse_moment, log_mgf
from noise_search.rdp import log_expected_a, subsampled_rdp
from noise_search.user_files import load_json_file

COMPONENTS: tuple[str, ...] = ("gamma", "exponential", "uniform")
VARIANTS: tuple[str, ...] = ("per_coordinate", "shared")
_COMPONENT_ALIASES = {"gamma": "gamma", "exponential": "exponential", "exp": "exponential", "uniform": "uniform"}
#: What calibration moves for an LMO: a factor on ``u`` (all weights scaled), epsilon growing with it.
SCALE = NoiseParameter("scale", True, 1e-8, 1e8)


@attr.define(frozen=True)
class LmoDpEvent(MechanismDpEvent):
    """One release of LMO noise (:class:`LMO`) on a query of L1 sensitivity 1: per coordinate
    ``Laplace(0, 1/u)`` with ``u`` drawn from the mixture."""

    @property
    def lmo(self) -> LMO:
        return self.mechanism  # type: ignore[return-value]


def _weight(name: str) -> Parameter:
    return Parameter(name, "weight", f"weight {name} of a component of u", ge=0.0)


@dataclass(frozen=True)
class LMO(Mechanism):
    """LMO noise: Laplace with a random inverse scale ``u`` (a Gamma/Exponential/Uniform mix).

    Fields follow the paper's parameter files: ``a1, a3, a4 >= 0`` weights,
    ``G_k, G_theta > 0`` Gamma shape and scale, ``E_lambda > 0`` Exponential **rate**,
    ``0 <= U_a < U_b`` Uniform bounds. ``components`` lists the components present
    (a component with weight 0 is absent too). ``variant`` is ``per_coordinate`` (an
    independent ``u`` per noise coordinate) or ``shared`` (one ``u`` per draw).

    ``u`` must not put so much mass near 0 that ``E[u**-2]`` diverges: the sum of
    ``G_k`` (Gamma), 1 (Exponential) and 1 (Uniform starting at 0) over the present
    components must exceed 2, unless a present Uniform has ``U_a > 0``.
    """

    a1: float
    a3: float
    a4: float
    G_k: float
    G_theta: float
    E_lambda: float
    U_a: float
    U_b: float
    components: tuple[str, ...] = COMPONENTS
    variant: Literal["per_coordinate", "shared"] = "per_coordinate"
    name: ClassVar[str] = "lmo"
    norm: ClassVar[Norm] = "l1"
    summary: ClassVar[str] = "Laplace(0, C/u) with u a Gamma/Exponential/Uniform mixture, L1 clipping"
    parameters: ClassVar[tuple[Parameter, ...]] = (
        _weight("a1"),
        _weight("a3"),
        _weight("a4"),
        Parameter("G_k", "shape", "Gamma shape", gt=0.0),
        Parameter("G_theta", "scale of u", "Gamma scale", gt=0.0),
        Parameter("E_lambda", "rate (1 / u)", "Exponential rate", gt=0.0),
        Parameter("U_a", "u", "Uniform lower bound", ge=0.0),
        Parameter("U_b", "u", "Uniform upper bound (> U_a)", gt=0.0),
        Parameter("components", "", "the components present", kind="names", choices=COMPONENTS,
                  aliases=("distributions",), required=False),
        Parameter("variant", "", "an independent u per coordinate, or one per draw", kind="choice",
                  choices=VARIANTS, required=False),
    )  # fmt: skip
    event_class: ClassVar[type[dp_accounting.DpEvent]] = LmoDpEvent
    #: metadata of the LMO-DP paper's own parameter files (the setting they were tuned for)
    file_notes: ClassVar[tuple[str, ...]] = ("Gamma", "Usefulness", "dataset", "delta", "eps", "order",
                                             "overall_privacy")  # fmt: skip
    example_params: ClassVar[dict[str, Any]] = {
        "a1": 0.5, "a3": 0.3, "a4": 0.4, "G_k": 2.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.0, "U_b": 1.0,
    }  # fmt: skip
    color: ClassVar[str | None] = "tab:green"
    _arrays: MixtureArrays = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in ("a1", "a3", "a4"):
            object.__setattr__(self, f, check_range(f, getattr(self, f), ge=0.0))
        for f in ("G_k", "G_theta", "E_lambda"):
            object.__setattr__(self, f, check_range(f, getattr(self, f), gt=0.0))
        object.__setattr__(self, "U_a", check_range("U_a", self.U_a, ge=0.0))
        object.__setattr__(self, "U_b", check_range("U_b", self.U_b, gt=self.U_a))
        object.__setattr__(self, "components", _normalise_components(self.components))
        if self.variant not in VARIANTS:
            raise ParameterError("variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        arrays = MixtureArrays.stack(
            a1=self.a1 if "gamma" in self.components else 0.0,
            a3=self.a3 if "exponential" in self.components else 0.0,
            a4=self.a4 if "uniform" in self.components else 0.0,
            G_k=self.G_k,
            G_theta=self.G_theta,
            E_lambda=self.E_lambda,
            U_a=self.U_a,
            U_b=self.U_b,
        )
        if arrays.a1[0] == arrays.a3[0] == arrays.a4[0] == 0.0:
            raise ParameterError("a1", "a1, a3 and a4 are all 0 (or absent): u would be 0, no noise")
        with np.errstate(over="ignore"):
            mean_u = float(arrays.mean()[0])
        if not math.isfinite(mean_u):
            big = max(_scale_fields(self.components), key=lambda f: getattr(self, f))
            raise ParameterError(big, f"too large: the mean of u overflows, got {getattr(self, big)!r}")
        if not math.isfinite(_second_moment(arrays, mean_u)):  # the accountants' numerics need E[u^2]
            big = max(_scale_fields(self.components), key=lambda f: getattr(self, f))
            raise ParameterError(big, f"too large: u's second moment E[u^2] overflows, got {getattr(self, big)!r}")
        s = float(arrays.zero_concentration()[0])
        if s <= 2.0:
            raise ParameterError(
                "G_k",
                "u has too much mass near 0: E[1/u^2] (the noise variance) is infinite. "
                "Need G_k (Gamma) + 1 (Exponential) + 1 (Uniform with U_a = 0), over present "
                f"components, > 2, or a Uniform with U_a > 0; got {s:g}",
            )
        object.__setattr__(self, "_arrays", arrays)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "params") -> LMO:
        """Build from a paper-style dict (``a1, a3, a4, G_k, G_theta, E_lambda, U_a, U_b``,
        optional ``distributions`` / ``components`` and ``variant``). Unknown keys are ignored."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object with LMO parameters")
        comps = data.get("components", data.get("distributions", COMPONENTS))
        comps = _normalise_components(comps)
        needed = {"a1", "a3", "a4"}
        needed |= {"G_k", "G_theta"} if "gamma" in comps else set()
        needed |= {"E_lambda"} if "exponential" in comps else set()
        needed |= {"U_a", "U_b"} if "uniform" in comps else set()
        missing = sorted(k for k in needed if k not in data)
        if missing:
            raise ParameterError(missing[0], f"missing from {source} (needs {', '.join(sorted(needed))})")
        defaults = {"G_k": 1.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.0, "U_b": 1.0}
        kwargs = {k: data.get(k, defaults.get(k)) for k in ("a1", "a3", "a4", *defaults)}
        return cls(**kwargs, components=comps, variant=data.get("variant", "per_coordinate"))

    @classmethod
    def from_json(cls, path: str | Path) -> LMO:
        """Load a parameter file (the paper's files load as they are)."""
        return cls.from_dict(load_json_file(path, "params"), source=str(path))

    @classmethod
    def from_params(cls, params: Any, *, source: str = "params") -> LMO:
        return cls.from_dict(params, source=source)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "components": list(self.components)}

    def noise_family(self) -> tuple[Any, NoiseParameter, float]:
        """``u`` scaled by a factor (:meth:`scaled`), from 1 (this mixture)."""
        return self.scaled, SCALE, 1.0

    @property
    def independent_coordinates(self) -> bool:
        """A shared-``u`` draw uses one ``u`` for all its coordinates."""
        return self.variant != "shared"

    def scaled(self, factor: float) -> LMO:
        """The same mixture with ``u`` multiplied by ``factor > 0`` (all weights scaled)."""
        factor = check_range("factor", factor, gt=0.0)
        return replace(self, a1=self.a1 * factor, a3=self.a3 * factor, a4=self.a4 * factor)

    # --- distribution of u ----------------------------------------------------------------
    @property
    def arrays(self) -> MixtureArrays:
        """The parameters as a one-row :class:`MixtureArrays` (absent weights set to 0)."""
        return self._arrays

    def mean_u(self) -> float:
        return float(self._arrays.mean()[0])

    def log_mgf(self, t: np.ndarray | float) -> np.ndarray:
        """``log E[exp(t u)]``, ``+inf`` outside the domain (section 3); same shape as ``t``."""
        t_arr = np.asarray(t, float)
        return log_mgf(self._arrays, t_arr.ravel())[0].reshape(t_arr.shape)

    def sample_u(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draws of the inverse scale ``u`` (``E_lambda`` is a rate: numpy gets ``1/E_lambda``)."""
        p = self._arrays
        size = shape_tuple(size)
        u = np.zeros(size)
        if p.a1[0] > 0:
            u += p.a1[0] * rng.gamma(shape=self.G_k, scale=self.G_theta, size=size)
        if p.a3[0] > 0:
            u += p.a3[0] * rng.exponential(scale=1.0 / self.E_lambda, size=size)
        if p.a4[0] > 0:
            u += p.a4[0] * rng.uniform(self.U_a, self.U_b, size=size)
        return u

    # --- privacy ------------------------------------------------------------------------
    def event(self) -> dp_accounting.DpEvent:
        return LmoDpEvent(self)

    def rdp_curve(self, sample_rate: float, orders: np.ndarray) -> np.ndarray:
        """Per-step RDP at integer ``orders`` (``+inf`` where unbounded): the revealed-``u`` bound."""
        k = np.arange(2, int(np.max(orders)) + 1, dtype=float)
        log_ea = log_expected_a(log_mgf(self._arrays, k - 1), log_mgf(self._arrays, -k))
        return subsampled_rdp(log_ea, np.asarray(orders, float), sample_rate)[0]

    def pure_dp_epsilon(self) -> float:
        """The largest possible ``u`` when it is bounded (only a Uniform component present): a
        mixture of ``eps(u)``-DP releases is ``max eps(u)``-DP; else ``inf``."""
        p = self._arrays
        if p.a1[0] == 0.0 and p.a3[0] == 0.0:
            return float(p.a4[0] * p.U_b[0])
        return math.inf

    # --- noise --------------------------------------------------------------------------
    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` for clipping bound ``clip_bound``.

        Per coordinate: the exact ziggurat of :mod:`noise_search.lmo_sampler` (no ``u`` drawn
        outside the tail); shared: one ``u``, then Laplace draws scaled by ``C / u``.
        """
        shape = shape_tuple(shape)
        c = check_clip(clip_bound)
        if self.variant == "per_coordinate":
            return sample_per_coordinate(self._arrays, math.prod(shape), rng, c).reshape(shape)
        return rng.laplace(0.0, 1.0, shape) * (c / self.sample_u((), rng))

    def noise_cdf(self, z: np.ndarray | float) -> np.ndarray:
        """CDF of one noise coordinate for ``C = 1``: ``1 - M(-z)/2`` for ``z >= 0``."""
        z = np.asarray(z, float)
        tail = 0.5 * np.exp(self.log_mgf(-np.abs(z)))
        return np.where(z < 0, tail, 1.0 - tail)

    def noise_pdf(self, z: np.ndarray | float) -> np.ndarray:
        """Density of one noise coordinate for ``C = 1``: ``M'(-|z|)/2``."""
        z = np.asarray(z, float)
        t = -np.abs(z).ravel()
        dens = 0.5 * np.exp(log_mgf(self._arrays, t)[0]) * dlog_mgf(self._arrays, t)[0]
        return dens.reshape(z.shape)

    # --- objectives -----------------------------------------------------------------------
    def mean_abs(self) -> float:
        """``E|Z| = E[1/u]`` (quadrature)."""
        return float(np.exp(log_inverse_moment(self._arrays, 1.0)[0]))

    def variance(self) -> float:
        """``Var Z = 2 E[1/u^2]`` (quadrature)."""
        return float(2.0 * np.exp(log_inverse_moment(self._arrays, 2.0)[0]))

    def usefulness(self, gamma: float) -> float:
        """``P(|Z| <= gamma) = 1 - M(-gamma)``."""
        return float(-np.expm1(self.log_mgf(-check_gamma(gamma))))


def _second_moment(p: MixtureArrays, mean_u: float) -> float:
    """``E[u^2] = Var u + E[u]^2`` of a one-row mixture (components of weight 0 left out); inf on overflow."""
    try:
        var = 0.0
        if p.a1[0] > 0:
            var += float(p.a1[0]) ** 2 * float(p.G_k[0]) * float(p.G_theta[0]) ** 2
        if p.a3[0] > 0:
            var += (float(p.a3[0]) / float(p.E_lambda[0])) ** 2
        if p.a4[0] > 0:
            var += (float(p.a4[0]) * (float(p.U_b[0]) - float(p.U_a[0]))) ** 2 / 12.0
        return var + mean_u * mean_u
    except OverflowError:
        return math.inf


def _scale_fields(components: tuple[str, ...]) -> list[str]:
    """The parameters of the present components that scale ``u`` up (an overflow names one)."""
    per = {"gamma": ("a1", "G_k", "G_theta"), "exponential": ("a3",), "uniform": ("a4", "U_a", "U_b")}
    return [f for c in components for f in per[c]]


def _normalise_components(comps: Any) -> tuple[str, ...]:
    if isinstance(comps, str) or not hasattr(comps, "__iter__"):
        raise ParameterError("components", f"must be a list of names from {', '.join(COMPONENTS)}")
    out = []
    for c in comps:
        key = _COMPONENT_ALIASES.get(str(c).strip().lower())
        if key is None:
            raise ParameterError("components", f"unknown component {c!r}; allowed: Gamma, Exponential, Uniform")
        if key not in out:
            out.append(key)
    if not out:
        raise ParameterError("components", "at least one of Gamma, Exponential, Uniform is needed")
    return tuple(k for k in COMPONENTS if k in out)
