"""The sections of a sweep config (:mod:`orchestrator.sweep_config`): privacy, search,
resources, grids, tuning, early stopping, statistics, variants and audit.

Mechanism names are those of the registry (:mod:`noise_search.mechanisms.registry`: the
built-ins and installed plug-ins); every error names its field (``section.key``) and allowed
range (CLI exit 2).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from noise_search.accountants import accountants_for
from noise_search.errors import ParameterError
from noise_search.mechanisms import LMO, builtin_names, mechanism_class, mechanism_names
from noise_search.mechanisms.registry import broken_plugins
from noise_search.search.problem import BASELINE_ACCOUNTANTS, LMO_ACCOUNTANTS
from trainers.settings import Section


class SweepPrivacy(Section):
    epsilons: tuple[float, ...] = Field(description="target epsilons (> 0), one trial group per value")
    delta: float = Field(1e-5, gt=0, lt=1, description="target delta in (0, 1)")
    mechanisms: tuple[str, ...] = Field(
        default_factory=builtin_names,
        description="mechanisms to compare: gaussian, laplace, lmo (the default) or installed plug-ins",
    )
    clip: float | None = Field(
        None,
        gt=0,
        description="clipping bound C > 0 (in each mechanism's norm: L2 gaussian, L1 laplace/lmo); null = the recipe's",
    )
    accountant: str = Field(
        "rdp", description="accountant of every mechanism but lmo: rdp, prv (gaussian) or pld (gaussian, laplace)"
    )
    lmo_accountant: str = Field(
        "rdp",
        description="accountant for lmo: rdp, or rdp-hidden-u (u hidden; the search rescales each target's LMO "
        "to spend the target under it, about 5 s per candidate, three per target)",
    )
    allow_large_delta: bool = Field(False, description="accept delta >= 1/N (N training examples)")

    @field_validator("epsilons")
    @classmethod
    def _epsilons(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ParameterError("privacy.epsilons", "must list at least one target epsilon > 0")
        for e in v:
            if not e > 0:
                raise ParameterError("privacy.epsilons", f"every target must be > 0, got {e!r}")
        if len(set(v)) != len(v):
            raise ParameterError("privacy.epsilons", f"targets must be distinct, got {list(v)}")
        return tuple(float(e) for e in v)

    @field_validator("mechanisms")
    @classmethod
    def _mechanisms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = mechanism_names()
        if not v:
            raise ParameterError("privacy.mechanisms", f"must list at least one of {', '.join(names)}")
        for name in v:
            if name not in names:
                if name in broken_plugins():
                    mechanism_class(name, "privacy.mechanisms")  # says why the plug-in could not be loaded
                raise ParameterError("privacy.mechanisms", f"must list mechanisms of {', '.join(names)}, got {name!r}")
        if len(set(v)) != len(v):
            raise ParameterError("privacy.mechanisms", f"mechanisms must be distinct, got {list(v)}")
        return v

    @field_validator("accountant")
    @classmethod
    def _baseline_accountant(cls, v: str) -> str:
        if v not in BASELINE_ACCOUNTANTS:
            raise ParameterError("privacy.accountant", f"must be one of {', '.join(BASELINE_ACCOUNTANTS)}, got {v!r}")
        return v

    @field_validator("lmo_accountant")
    @classmethod
    def _lmo_accountant(cls, v: str) -> str:
        if v not in LMO_ACCOUNTANTS:
            raise ParameterError("privacy.lmo_accountant", f"must be one of {', '.join(LMO_ACCOUNTANTS)}, got {v!r}")
        return v

    def accountant_for(self, mechanism: str) -> str:
        """The accountant of a mechanism's trials: ``lmo_accountant`` for LMO, else ``accountant``."""
        return self.lmo_accountant if mechanism_class(mechanism) is LMO else self.accountant

    @model_validator(mode="after")
    def _accountant(self) -> SweepPrivacy:
        for name in self.mechanisms:
            accountant, able = self.accountant_for(name), accountants_for(name)
            if accountant not in able:
                field = "privacy.lmo_accountant" if mechanism_class(name) is LMO else "privacy.accountant"
                raise ParameterError(
                    field, f"{accountant} cannot account the {name} mechanism; use {' or '.join(able)} with {name}"
                )
        return self


class SweepSearch(Section):
    objective: Literal["mean-abs", "variance", "usefulness"] = "mean-abs"
    gamma: float | None = Field(None, gt=0, description="usefulness threshold gamma > 0 (objective usefulness)")
    space: Literal["paper", "wide"] = "paper"
    strategy: Literal["grid", "optimize"] = "grid"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _gamma(self) -> SweepSearch:
        if self.objective == "usefulness" and self.gamma is None:
            raise ParameterError("search.gamma", "required (> 0) for objective usefulness")
        return self


class Resources(Section):
    cpus_per_trial: int = Field(1, ge=1, le=1024, description="CPUs per trial (per worker when workers > 1)")
    gpus_per_trial: float = Field(0.0, ge=0, le=64, description="GPUs per trial (per worker when workers > 1)")
    workers: int = Field(1, ge=1, le=1024, description="Ray Train data-parallel workers per trial (>= 1)")
    memory_gb: float | None = Field(None, gt=0, description="memory reserved per trial (per worker), in GiB")


def grid_values(field: str, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if v is None:
        return None
    if not v or any(not (0 < x <= 10) for x in v) or len(set(v)) != len(v):
        raise ParameterError(field, f"must be a non-empty list of distinct values in (0, 10], got {list(v)}")
    return tuple(float(x) for x in v)


class MechanismGrid(Section):
    """Hyperparameter values tried for one mechanism (null = the sweep's value or the recipe's)."""

    learning_rate: tuple[float, ...] | None = Field(None, description="learning rates, each in (0, 10]")
    clip: tuple[float, ...] | None = Field(None, description="clipping bounds, each in (0, 10]")


class TuningRange(Section):
    """A continuous range a tuning run draws from: uniform, or log-uniform with ``log: true``."""

    low: float = Field(gt=0, le=10, description="lower end, in (0, 10]")
    high: float = Field(gt=0, le=10, description="upper end, in [low, 10]")
    log: bool = Field(False, description="draw log-uniformly")


class TuningSpace(Section):
    """What each tuning run draws at random: a list (uniform over its values) or a range. Unset:
    the sweep's value or the recipe's, for every run."""

    learning_rate: tuple[float, ...] | TuningRange | None = Field(None, description="learning rates, in (0, 10]")
    clip: tuple[float, ...] | TuningRange | None = Field(None, description="clipping bounds, in (0, 10]")
    epochs: tuple[int, ...] | None = Field(None, description="epochs, distinct integers in [1, 1000]")
    trainable: tuple[Literal["head", "lora", "full"], ...] | None = Field(
        None, description="trainable sets (model.trainable), distinct; each takes its own recipe"
    )


class SweepTuning(Section):
    """Private hyperparameter selection (docs/privacy.md section 7): per (target, mechanism), draw
    the number of runs ``K`` (mean ``mean``; ``shape`` a number > -1 for a truncated negative
    binomial, 0 logarithmic, 1 geometric, or ``poisson``), draw each run's hyperparameters from
    ``space``, return the best run by validation score. ``max_runs`` caps the law: the 99.9%
    quantile of ``K`` (exact, from the law) must not exceed it."""

    mean: float = Field(description="mean number of runs per (target, mechanism): in (1, 1e6]; [1, 1e6] for poisson")
    shape: float | Literal["poisson"] = Field(1.0, description="a number > -1, or poisson")
    max_runs: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="most runs per (target, mechanism) the law may need: the 99.9% quantile of K must not "
        "exceed it (K is stated before the sweep starts); in [1, 1e6], raise it for a larger or heavier law",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the draws (K and the hyperparameters)")
    noise: Literal["selected", "per_run"] = Field(
        "selected",
        description="selected: each run's noise is set so the selected run meets the target; "
        "per_run: each run meets the target and the report states the larger tuned epsilon",
    )
    space: TuningSpace = Field(default_factory=TuningSpace)
    overrides: dict[str, TuningSpace] = Field(
        default_factory=dict, description="per-mechanism spaces (fields given here replace space's)"
    )

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        if v == "poisson":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            hint = " (write poisson for the Poisson law)" if v == math.inf else ""
            raise ParameterError("tuning.shape", f"must be a number > -1 or poisson{hint}, got {v!r}")
        return v

    @property
    def shape_value(self) -> float:
        return float("inf") if self.shape == "poisson" else float(self.shape)

    def space_for(self, mechanism: str) -> TuningSpace:
        """The space of ``mechanism``'s runs: ``space`` with its override's fields."""
        over = self.overrides.get(mechanism)  # type: ignore[call-overload]
        if over is None:
            return self.space
        return self.space.model_copy(update={k: getattr(over, k) for k in over.model_fields_set})


def check_tuning_space(prefix: str, space: TuningSpace) -> None:
    for name in ("learning_rate", "clip"):
        v = getattr(space, name)
        if isinstance(v, TuningRange):
            if v.high < v.low:
                raise ParameterError(f"{prefix}.{name}.high", f"must be >= low ({v.low:g}), got {v.high:g}")
        else:
            grid_values(f"{prefix}.{name}", v)
    if space.epochs is not None and (
        not space.epochs or any(not 1 <= e <= 1000 for e in space.epochs) or len(set(space.epochs)) != len(space.epochs)
    ):
        raise ParameterError(f"{prefix}.epochs", f"must be distinct integers in [1, 1000], got {list(space.epochs)}")
    if space.trainable is not None and (not space.trainable or len(set(space.trainable)) != len(space.trainable)):
        got = list(space.trainable)
        raise ParameterError(f"{prefix}.trainable", f"must be distinct values of head, lora, full, got {got}")


def check_runs_cap(tuning: SweepTuning) -> None:
    """The 99.9% quantile of K (exact, from the law) must not exceed ``tuning.max_runs``."""
    from noise_search.tuning import TuningDistribution

    dist = TuningDistribution.from_mean(tuning.mean, tuning.shape_value)
    if dist.quantile(limit=tuning.max_runs) is not None:
        return
    field = "tuning.shape" if tuning.shape != "poisson" and tuning.shape < 0 else "tuning.mean"
    raise ParameterError(
        field,
        f"the number of runs K per (target, mechanism) ({dist.name}, mean {tuning.mean:g}) has its 99.9% quantile "
        f"above tuning.max_runs = {tuning.max_runs:,} (P[K > {tuning.max_runs:,}] = {dist.tail(tuning.max_runs):.3g}); "
        "lower tuning.mean, use a shape further from -1, or raise tuning.max_runs (up to 1e6)",
    )


#: rungs are listed up to this many epochs; a trial is only asked at rungs inside its own plan
MAX_RUNG_EPOCHS = 10_000


class SweepEarlyStopping(Section):
    """Early stopping of a grid's trials by ASHA (asynchronous successive halving, Ray Tune's
    ``ASHAScheduler``): after ``grace_epochs``, ``grace_epochs x reduction_factor``, ... epochs a
    trial scores the validation split, and one below the top ``1/reduction_factor`` of the
    scores recorded at that rung so far stops there. Noise stays calibrated for the full plan,
    and a stopped trial is charged the full plan's epsilon (docs/privacy.md section 8)."""

    grace_epochs: int = Field(1, ge=1, le=1000, description="epochs before the first rung, in [1, 1000]")
    reduction_factor: int = Field(
        3, ge=2, le=100, description="keep the top 1/reduction_factor at each rung, in [2, 100]"
    )

    def rung_epochs(self, max_epochs: int = MAX_RUNG_EPOCHS) -> tuple[int, ...]:
        """``grace, grace x factor, grace x factor^2, ...`` below ``max_epochs``."""
        out, e = [], self.grace_epochs
        while e < max_epochs:
            out.append(e)
            e *= self.reduction_factor
        return tuple(out)


class StatisticsSeeds(Section):
    """Seeds until decided (docs/statistics.md): every cell starts with ``min`` seeds; after each look
    the cells of still-undecided compared pairs get more, up to ``max``."""

    min: int = Field(3, ge=2, le=1000, description="seeds of every cell at the first look, in [2, 1000]")
    max: int = Field(ge=2, le=1000, description="most seeds a cell may get, in [min, 1000]")
    growth: float = Field(
        1.5, gt=1, le=4, description="each look has about growth x the seeds of the one before, in (1, 4]"
    )

    def looks(self) -> tuple[int, ...]:
        """The seeds of each planned look: ``min``, then about ``growth`` times more each time, ``max``
        last (``min 3, max 12``: 3, 5, 8, 12)."""
        out = [self.min]
        while out[-1] < self.max:
            out.append(min(self.max, max(out[-1] + 1, math.ceil(out[-1] * self.growth - 1e-9))))
        return tuple(out)


class SweepStatistics(Section):
    """How the sweep's comparisons are decided: optional seeds until decided, and the pairs that
    drive it (default: every pair of private mechanisms and variants)."""

    seeds: StatisticsSeeds | None = Field(
        None, description="seeds until decided: {min, max, growth}; null = the seeds list"
    )
    compare: tuple[tuple[str, str], ...] | None = Field(
        None, description="pairs [a, b] of privacy.mechanisms or variants whose comparisons get seeds added"
    )


class SweepVariant(Section):
    """A named arm that trains one of ``privacy.mechanisms`` (the same searched noise) with its own
    grid (``grid.<variant>``): two settings of one mechanism, compared like two mechanisms."""

    mechanism: str = Field(description="the mechanism this variant trains: one of privacy.mechanisms")


#: a variant's name: lower-case letters, digits, - and _ (it is part of MLflow metric names)
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class SweepAudit(Section):
    canaries: int = Field(ge=2, description="gradient canaries per trial (>= 2)")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence of the lower bound, in (0, 1)")
