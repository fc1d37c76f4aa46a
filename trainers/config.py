"""The trial config: a YAML file validated once into frozen, typed settings.

Example (every key but ``privacy.mechanism`` has a default)::

    name: minilm-mr-lmo
    model:   {task: classification, path: null, max_length: 64, trainable: head,
              features: {layer: -1, pooling: mean, normalize: true, center: nyt-editorials}}
    data:    {name: movie-reviews}
    privacy: {mechanism: lmo, epsilon: 3.0, delta: 1.0e-5,
              search_result: search.json}          # or params: {...}
    training: {seed: 0}                            # the rest from the recipe
    audit:   {canaries: 500, confidence: 0.95}       # optional: see trainers.audit_canaries

Sections and ranges are in the field docs below. What is trained (``model.trainable``):

* ``head`` -- only a new classifier on frozen, pooled encoder features
  (``model.features``); the features are computed once and cached on disk
  (:mod:`trainers.feature_cache`);
* ``lora`` -- LoRA adapters (``model.lora``) plus the model's classifier head;
* ``full`` -- every parameter.

With ``model.top_layers: k`` (``lora`` or ``full``) only the top ``k`` encoder layers below
the pooled layer are adapted and the activations of the frozen layers beneath are cached.
``model.lora: null`` without ``trainable`` means full fine-tuning (as before).
``privacy.mechanism: none`` trains without privacy (a baseline; no epsilon).

``training.learning_rate``, ``batch_size``, ``epochs``, ``optimizer``,
``physical_batch_size`` and ``privacy.clip`` left unset (null) take the documented recipe for
the trainable set and mechanism (:mod:`trainers.recipes`); :meth:`TrialConfig.resolve` fills
them in and records which came from the recipe.
Where the noise comes from, for a private run:

* ``privacy.params`` -- the mechanism's parameters (``sigma``; ``u0``; the LMO keys
  ``a1, a3, a4, G_k, G_theta, E_lambda, U_a, U_b`` [+ ``components``, ``variant``]);
* ``privacy.search_result`` -- a file written by ``lmo-dp search --out`` (its row for
  ``privacy.epsilon``, see :mod:`noise_search.search_result`);
* neither (Gaussian or Laplace only) -- calibrated to ``privacy.epsilon`` for this run's plan.

With ``privacy.calibrate: true`` given LMO parameters are rescaled (``u`` times a factor) to
meet the target exactly. Every error names its field (``section.key``) and allowed range, and
is an :class:`~noise_search.errors.InputError` (CLI exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from noise_search.errors import InputError, ParameterError, short_repr
from noise_search.names import check_name
from trainers.recipes import RecipeUse, apply_recipe
from trainers.settings import (
    CENTER_CORPORA,
    AuditSettings,
    DataSettings,
    FeatureSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    Section,
    TrainingSettings,
)
from trainers.yaml_input import load_yaml_file

__all__ = [
    "CENTER_CORPORA",
    "AuditSettings",
    "ConfigFile",
    "DataSettings",
    "FeatureSettings",
    "LoraSettings",
    "ModelSettings",
    "PrivacySettings",
    "RecipeUse",
    "TrainingSettings",
    "TrialConfig",
    "check_sections",
    "load_yaml_file",
    "validation_to_input_error",
]


class ConfigFile(Section):
    """A whole config file: ``from_dict`` / ``from_yaml`` with one-line, field-naming errors."""

    #: what the top level must hold, for the error on a non-mapping
    _expected: ClassVar[str] = "a mapping of sections"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config") -> Self:
        if not isinstance(data, dict):
            raise InputError(f"{source}: must be {cls._expected}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise validation_to_input_error(exc) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        data = load_yaml_file(path, "--config")
        if not isinstance(data, dict):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            raise InputError(f"--config: {path} must hold {cls._expected}, got {got}")
        return cls.from_dict(data, source=str(path))


class TrialConfig(ConfigFile):
    """One training trial."""

    _expected: ClassVar[str] = "a mapping of sections (model, data, privacy, training)"

    name: str | None = Field(None, description="MLflow run name (null: the config file's name); see check_name")
    experiment: str = Field("lmo-dp-train", description="MLflow experiment name (noise_search.names.check_name)")
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    privacy: PrivacySettings
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    audit: AuditSettings | None = Field(None, description="gradient-canary audit (private runs only); null = none")

    #: set by :meth:`resolve`: the recipe used and the fields it filled in (not serialised)
    _recipe: RecipeUse | None = PrivateAttr(None)

    @field_validator("name", "experiment")
    @classmethod
    def _names(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v is None else check_name(str(info.field_name), v)

    @model_validator(mode="after")
    def _cross(self) -> TrialConfig:
        if self.audit is not None and self.privacy.mechanism == "none":
            raise ParameterError("audit", "needs a private run (privacy.mechanism gaussian, laplace or lmo), got none")
        check_sections(self.model, self.data, self.training)
        return self

    @property
    def recipe(self) -> RecipeUse | None:
        """The recipe :meth:`resolve` applied (None before resolution)."""
        return self._recipe

    def resolve(self, n_train: int) -> TrialConfig:
        """This config with every unset recipe field filled in for ``n_train`` training examples.

        Fields already set are kept. The result's :attr:`recipe` names the recipe and the values
        it supplied; resolving a resolved config changes nothing.
        """
        training, clip, use = apply_recipe(self.model.trainable_kind, self.privacy.mechanism, self, n_train)
        if not use.applied and self._recipe is not None:
            return self
        out = self.model_copy(update={"training": training, "privacy": self.privacy.model_copy(update={"clip": clip})})
        out._recipe = use
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """``section.key -> value`` (nested sections joined with dots) for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


def check_sections(model: ModelSettings, data: DataSettings, training: TrainingSettings) -> None:
    """Checks across the model, data and training sections shared by trial and sweep configs."""
    n = data.max_train_examples
    if n is not None and training.batch_size is not None and training.batch_size > n:
        raise ParameterError(
            "training.batch_size", f"must be <= data.max_train_examples ({n}), got {training.batch_size}"
        )
    if data.name == "nyt-editorials" and model.task != "causal-lm":
        raise ParameterError("data.name", "'nyt-editorials' is unlabelled: use it with model.task causal-lm")
    if model.cached_prefix and model.features.center is not None and model.features.center == data.name:
        raise ParameterError(
            "model.features.center",
            f"the centre must come from public data other than the training set, got {data.name!r} for both "
            "(choose another corpus or null)",
        )


def validation_to_input_error(exc: ValidationError) -> InputError:
    """The first pydantic error as a one-line InputError that names the field."""
    err = exc.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, InputError):
        return inner
    loc = ".".join(str(x) for x in err.get("loc", ()) if x != "[key]") or "config"  # a bad key: its own path
    msg = str(err.get("msg", "invalid value"))
    if err.get("type") == "extra_forbidden":
        return ParameterError(loc, "unknown field")
    if err.get("type") == "missing":
        return ParameterError(loc, "required")
    got = err.get("input")
    return ParameterError(loc, f"{msg[0].lower()}{msg[1:]}, got {short_repr(got)}")
