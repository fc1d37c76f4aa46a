"""Noise mechanisms as validated, immutable parameter objects (docs/privacy.md section 2).

Each mechanism adds noise to a sum of per-example contributions clipped to bound ``C`` in
its norm (:attr:`norm`: L2 for Gaussian, L1 for Laplace and LMO):

* :class:`Gaussian` -- ``N(0, (sigma C)^2)`` per coordinate.
* :class:`Laplace` -- ``Laplace(0, C/u0)`` per coordinate.
* :class:`LMO` -- ``Laplace(0, C/u)`` with a random inverse scale
  ``u = a1 Gamma(G_k, scale=G_theta) + a3 Exponential(rate=E_lambda) + a4 Uniform(U_a, U_b)``.

Utility objectives (section 6) are per coordinate for ``C = 1``: ``mean_abs = E|Z|``,
``variance = Var Z`` and ``usefulness(gamma) = P(|Z| <= gamma)``. They are computed by
closed forms or quadrature, never by sampling.

Samplers take an explicit generator: :meth:`sample` a ``numpy.random.Generator``. Training
noise is drawn in torch by :mod:`trainers.noise` (this package never imports torch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import erf

from noise_search.errors import InputError, ParameterError, check_range
from noise_search.lmo_sampler import sample_per_coordinate
from noise_search.mgf import MixtureArrays, dlog_mgf, log_inverse_moment, log_mgf
from noise_search.user_files import load_json_file

COMPONENTS: tuple[str, ...] = ("gamma", "exponential", "uniform")
#: Largest Gaussian noise multiplier accepted (beyond it every epsilon is the conversion's floor,
#: and the libraries' numerics overflow near 1e300).
MAX_SIGMA = 1e6
#: Smallest Gaussian noise multiplier accepted: at 1e-3 one step already spends an epsilon in the
#: millions, and far below it the Renyi moments overflow (calibration searches down to it too).
MIN_SIGMA = 1e-3
#: Largest Laplace inverse scale accepted: a per-release epsilon of 1000 is no privacy at all.
MAX_U0 = 1e3
VARIANTS: tuple[str, ...] = ("per_coordinate", "shared")
_COMPONENT_ALIASES = {"gamma": "gamma", "exponential": "exponential", "exp": "exponential", "uniform": "uniform"}


def _shape_tuple(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _check_clip(clip_bound: float) -> float:
    return check_range("clip_bound", clip_bound, gt=0.0)


def _check_gamma(gamma: float) -> float:
    return check_range("gamma", gamma, gt=0.0)


@dataclass(frozen=True)
class Gaussian:
    """Gaussian noise with noise multiplier ``sigma`` in [1e-3, 1e6] (std ``sigma * C``), L2 clipping."""

    sigma: float
    name: ClassVar[str] = "gaussian"
    norm: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_range("sigma", self.sigma, ge=MIN_SIGMA, le=MAX_SIGMA))

    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` for clipping bound ``clip_bound``."""
        return rng.normal(0.0, self.sigma * _check_clip(clip_bound), _shape_tuple(shape))

    def mean_abs(self) -> float:
        return self.sigma * math.sqrt(2.0 / math.pi)

    def variance(self) -> float:
        return self.sigma**2

    def usefulness(self, gamma: float) -> float:
        return float(erf(_check_gamma(gamma) / (self.sigma * math.sqrt(2.0))))

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": self.name, "sigma": self.sigma}


@dataclass(frozen=True)
class Laplace:
    """Laplace noise with inverse scale ``u0`` in (0, 1000] (scale ``C/u0``), L1 clipping."""

    u0: float
    name: ClassVar[str] = "laplace"
    norm: ClassVar[str] = "l1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "u0", check_range("u0", self.u0, gt=0.0, le=MAX_U0))

    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        return rng.laplace(0.0, _check_clip(clip_bound) / self.u0, _shape_tuple(shape))

    def log_mgf(self, t: np.ndarray | float) -> np.ndarray:
        """``log E[exp(t u)] = t u0`` (``u`` is the point mass ``u0``)."""
        return self.u0 * np.asarray(t, float)

    def mean_abs(self) -> float:
        return 1.0 / self.u0

    def variance(self) -> float:
        return 2.0 / self.u0**2

    def usefulness(self, gamma: float) -> float:
        return float(-math.expm1(-_check_gamma(gamma) * self.u0))

    def noise_cdf(self, z: np.ndarray | float) -> np.ndarray:
        """CDF of one noise coordinate for ``C = 1``."""
        z = np.asarray(z, float)
        return np.where(z < 0, 0.5 * np.exp(self.u0 * np.minimum(z, 0)), 1 - 0.5 * np.exp(-self.u0 * np.maximum(z, 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"mechanism": self.name, "u0": self.u0}


@dataclass(frozen=True)
class LMO:
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
    norm: ClassVar[str] = "l1"
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

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["components"] = list(self.components)
        return {"mechanism": self.name, **d}

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
        size = _shape_tuple(size)
        u = np.zeros(size)
        if p.a1[0] > 0:
            u += p.a1[0] * rng.gamma(shape=self.G_k, scale=self.G_theta, size=size)
        if p.a3[0] > 0:
            u += p.a3[0] * rng.exponential(scale=1.0 / self.E_lambda, size=size)
        if p.a4[0] > 0:
            u += p.a4[0] * rng.uniform(self.U_a, self.U_b, size=size)
        return u

    # --- noise --------------------------------------------------------------------------
    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` for clipping bound ``clip_bound``.

        Per coordinate: the exact ziggurat of :mod:`noise_search.lmo_sampler` (no ``u`` drawn
        outside the tail); shared: one ``u``, then Laplace draws scaled by ``C / u``.
        """
        shape = _shape_tuple(shape)
        c = _check_clip(clip_bound)
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
        return float(-np.expm1(self.log_mgf(-_check_gamma(gamma))))


Mechanism = Gaussian | Laplace | LMO
MECHANISMS: dict[str, type] = {"gaussian": Gaussian, "laplace": Laplace, "lmo": LMO}
#: The keys :func:`mechanism_from_dict` reads per family (LMO: also the paper files' ``distributions``).
PARAMETER_KEYS: dict[str, tuple[str, ...]] = {
    "gaussian": ("sigma",),
    "laplace": ("u0",),
    "lmo": ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b", "components", "distributions", "variant"),
}


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


def mechanism_from_dict(data: dict[str, Any], *, source: str = "mechanism") -> Mechanism:
    """Build any mechanism from ``{"mechanism": name, ...parameters}``."""
    name = str(data.get("mechanism", "")).lower()
    if name == "gaussian":
        if "sigma" not in data:
            raise ParameterError("sigma", f"missing from {source}")
        return Gaussian(data["sigma"])
    if name == "laplace":
        if "u0" not in data:
            raise ParameterError("u0", f"missing from {source}")
        return Laplace(data["u0"])
    if name == "lmo":
        return LMO.from_dict(data, source=source)
    raise ParameterError("mechanism", f"must be one of gaussian, laplace, lmo, got {name or None!r}")
