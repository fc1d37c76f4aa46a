"""What every noise mechanism declares: :class:`Mechanism`, its :class:`Parameter` s and how it is bounded.

A mechanism adds noise to a sum of per-example contributions clipped to bound ``C`` in its
norm (:attr:`Mechanism.norm`, ``l1`` or ``l2``); its parameters are for ``C = 1`` (the noise
scales with ``C``). A subclass is a frozen dataclass whose fields are its parameters, and
declares as class attributes:

* :attr:`~Mechanism.name` -- the name users type (``--mechanism``, ``privacy.mechanism``) and
  every output shows; lower-case letters, digits and ``-``;
* :attr:`~Mechanism.norm` -- the clipping norm;
* :attr:`~Mechanism.parameters` -- each parameter's name, unit and range (:class:`Parameter`),
  which is how files, flags (``--param KEY=VALUE``) and configs are read;
* :attr:`~Mechanism.noise_parameter` -- the one scalar parameter calibration moves, where there
  is one (:class:`NoiseParameter`: which way epsilon moves with it, and its search range);
* how accountants bound it: :meth:`~Mechanism.event` is its release as a privacy event
  (:mod:`noise_search.events`). A release that is a dp-accounting Gaussian or Laplace event is
  bounded by every accountant that reads those (``pld``, ``prv``); a :class:`MechanismDpEvent`
  is bounded from the mechanism's own Renyi-DP curve (:meth:`~Mechanism.rdp_curve`), which the
  ``rdp`` accountants read;
* its noise law: :meth:`~Mechanism.sample` (numpy, for ``C``) and the per-coordinate objectives
  :meth:`~Mechanism.mean_abs`, :meth:`~Mechanism.variance`, :meth:`~Mechanism.usefulness`.

Training noise is drawn in torch by :func:`trainers.noise.sample_noise`, a
``functools.singledispatch`` over mechanism classes; a mechanism without a torch sampler of its
own is drawn by its numpy :meth:`~Mechanism.sample` from the training generator's stream, and
:attr:`~Mechanism.torch_sampler` may name a module that registers a faster one (this package
never imports torch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import attr
import dp_accounting
import numpy as np

from noise_search.errors import InputError, ParameterError, check_range
from noise_search.rdp import DEFAULT_ORDERS

Norm = Literal["l1", "l2"]


@dataclass(frozen=True)
class Parameter:
    """One parameter of a mechanism: its name, unit and range.

    ``kind`` is ``number`` (a float; ``gt``/``ge``/``lt``/``le`` its bounds), ``names`` (a list of
    words, written ``a,b`` on the command line) or ``choice`` (one of ``choices``). ``aliases``
    are older names of the same parameter: read from files and written beside the name in JSON
    outputs (deprecated). ``required``: whether a dict of parameters must hold it.
    """

    name: str
    unit: str
    description: str
    kind: Literal["number", "names", "choice"] = "number"
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    required: bool = True

    @property
    def range_text(self) -> str:
        """The allowed values in words: ``(0, 1000]``, ``one of a, b``, ``a list of x, y``."""
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "names":
            return f"a list of {', '.join(self.choices)}" if self.choices else "a list of names"
        lo = f"({self.gt:g}" if self.gt is not None else (f"[{self.ge:g}" if self.ge is not None else "(-inf")
        hi = f"{self.lt:g})" if self.lt is not None else (f"{self.le:g}]" if self.le is not None else "inf)")
        return f"{lo}, {hi}"

    def check(self, value: object) -> float:
        """A number checked against the bounds (:class:`ParameterError` naming the parameter)."""
        return check_range(self.name, value, gt=self.gt, ge=self.ge, lt=self.lt, le=self.le)

    def parse(self, text: str) -> object:
        """A value typed on the command line (``--param NAME=TEXT``) in this parameter's kind."""
        if self.kind == "number":
            try:
                return float(text)
            except ValueError:
                raise ParameterError(self.name, f"must be a number in {self.range_text}, got {text!r}") from None
        if self.kind == "names":
            return [part.strip() for part in text.split(",") if part.strip()]
        return text


@dataclass(frozen=True)
class NoiseParameter:
    """The scalar parameter calibration moves: ``name``, whether epsilon grows with it
    (``increasing``: an inverse scale) or falls (a noise multiplier), and the range searched
    (``lower``, ``upper``; the end of least noise is where a calibration that is not binding stops)."""

    name: str
    increasing: bool
    lower: float
    upper: float

    @property
    def least_noise(self) -> float:
        """The end of the range with the least noise."""
        return self.upper if self.increasing else self.lower


@attr.define(frozen=True)
class MechanismDpEvent(dp_accounting.DpEvent):
    """One release of ``mechanism`` on a query of sensitivity 1 in its norm, bounded from the
    mechanism's own Renyi-DP curve (:meth:`Mechanism.rdp_curve`)."""

    mechanism: Mechanism


class Mechanism:
    """Base class of noise mechanisms (module docstring). Subclasses are frozen dataclasses."""

    name: ClassVar[str]
    norm: ClassVar[Norm]
    #: one line for ``--help`` and the docs: the noise law and its parameters
    summary: ClassVar[str] = ""
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    noise_parameter: ClassVar[NoiseParameter | None] = None
    #: the class of :meth:`event`'s result: what decides which accountants can bound it
    event_class: ClassVar[type[dp_accounting.DpEvent]] = MechanismDpEvent
    #: keys a parameter file may hold besides the parameters, read and ignored
    file_notes: ClassVar[tuple[str, ...]] = ()
    #: orders :meth:`rdp_curve` is evaluated on by default; ``fractional_orders``: whether
    #: non-integer orders are valid for it
    rdp_orders: ClassVar[np.ndarray] = DEFAULT_ORDERS
    fractional_orders: ClassVar[bool] = False
    #: a typical setting of the parameters (the docs' examples and the accountant contract test)
    example_params: ClassVar[Mapping[str, Any]] = {}
    #: colour of the mechanism in the report's plots (None: the next colour of the plot's cycle)
    color: ClassVar[str | None] = None
    #: a module importing which registers a torch sampler for this class with
    #: ``trainers.noise.sample_noise`` (None: the numpy sampler drives training noise)
    torch_sampler: ClassVar[str | None] = None

    # --- parameters -------------------------------------------------------------------------
    @classmethod
    def parameter(cls, name: str) -> Parameter:
        """The declared parameter ``name`` (or one of its aliases)."""
        for p in cls.parameters:
            if name == p.name or name in p.aliases:
                return p
        raise ParameterError(name, f"not a parameter of the {cls.name} mechanism (it has {cls.parameter_list()})")

    @classmethod
    def parameter_list(cls) -> str:
        return ", ".join(p.name for p in cls.parameters) or "none"

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key a dict of this mechanism's parameters may hold (each name, then its aliases)."""
        return tuple(key for p in cls.parameters for key in (p.name, *p.aliases))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, source: str = "params") -> Self:
        """The mechanism of a dict of parameters (no ``mechanism`` key; an alias stands for its
        parameter). A required parameter that is missing is a :class:`ParameterError` naming it;
        unknown keys are ignored (callers that must refuse them use :meth:`unknown_keys`)."""
        if not isinstance(params, Mapping):
            raise InputError(f"{source}: expected an object with the {cls.name} mechanism's parameters")
        kwargs: dict[str, Any] = {}
        for p in cls.parameters:
            for key in (p.name, *p.aliases):
                if key in params:
                    kwargs[p.name] = params[key]
                    break
            else:
                if p.required:
                    raise ParameterError(p.name, f"missing from {source}")
        return cls(**kwargs)

    @classmethod
    def example(cls) -> Self:
        """The mechanism at :attr:`example_params`."""
        return cls.from_params(cls.example_params, source=f"{cls.name}.example_params")

    @classmethod
    def unknown_keys(cls, params: Mapping[str, Any]) -> list[str]:
        """Keys of ``params`` that are neither parameters nor file notes, sorted."""
        allowed = {*cls.keys(), *cls.file_notes}
        return sorted(str(k) for k in params if k not in allowed)

    def params(self) -> dict[str, Any]:
        """The parameters as a plain dict (what files, configs and MLflow params hold)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """``{"mechanism": name, **parameters}``."""
        return {"mechanism": self.name, **self.params()}

    def noise_family(self) -> tuple[Callable[[float], Mechanism], NoiseParameter, float]:
        """The one-parameter family of mechanisms calibration moves through this one, its
        parameter, and this mechanism's value on it (default: :attr:`noise_parameter`)."""
        p = type(self).noise_parameter
        if p is None:
            raise InputError(f"mechanism: the {self.name} mechanism has no scalar noise parameter to calibrate")
        return (lambda value: dataclasses.replace(self, **{p.name: value})), p, float(getattr(self, p.name))  # type: ignore[type-var]

    def noise_value(self) -> float | None:
        """The value of :attr:`noise_parameter` (None when there is none)."""
        p = type(self).noise_parameter
        return None if p is None else float(getattr(self, p.name))

    # --- privacy ------------------------------------------------------------------------------
    def event(self) -> dp_accounting.DpEvent:
        """One unsampled release at sensitivity 1 (default: a :class:`MechanismDpEvent`)."""
        return MechanismDpEvent(self)

    def rdp_curve(self, sample_rate: float, orders: np.ndarray) -> np.ndarray:
        """Per-release Renyi DP of the Poisson-sampled mechanism at ``orders`` (``+inf`` where
        unbounded). Subclasses that can be bounded by the ``rdp`` accountants implement it."""
        raise NotImplementedError(f"the {self.name} mechanism has no Renyi-DP curve")

    @classmethod
    def has_rdp_curve(cls) -> bool:
        """Whether the class implements :meth:`rdp_curve`."""
        return cls.rdp_curve is not Mechanism.rdp_curve

    def pure_dp_epsilon(self) -> float:
        """Per-release pure-DP epsilon without sampling, or ``inf`` when it is not pure DP."""
        return math.inf

    # --- noise ----------------------------------------------------------------------------------
    @property
    def independent_coordinates(self) -> bool:
        """Whether the coordinates of one draw are independent (a draw can then be split in
        chunks anywhere); a mechanism sharing a random scale across a draw says False."""
        return True

    def sample(self, shape: int | tuple[int, ...], clip_bound: float, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``shape`` for clipping bound ``clip_bound``, from ``rng``."""
        raise NotImplementedError

    def mean_abs(self) -> float:
        """``E|Z|`` of one coordinate for ``C = 1``."""
        raise NotImplementedError

    def variance(self) -> float:
        """``Var Z`` of one coordinate for ``C = 1``."""
        raise NotImplementedError

    def usefulness(self, gamma: float) -> float:
        """``P(|Z| <= gamma)`` of one coordinate for ``C = 1``."""
        raise NotImplementedError


def shape_tuple(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def check_clip(clip_bound: float) -> float:
    return check_range("clip_bound", clip_bound, gt=0.0)


def check_gamma(gamma: float) -> float:
    return check_range("gamma", gamma, gt=0.0)
