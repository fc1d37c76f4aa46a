"""The sections of a trial config (``model``, ``data``, ``privacy``, ``training``, ``audit``):
frozen, typed, validated once where a file enters (:mod:`trainers.config`). Every error names
its field (``section.key``) and allowed range."""

from __future__ import annotations

import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from noise_search.accountants import ACCOUNTANTS, accountants_for
from noise_search.errors import ParameterError
from noise_search.mechanisms import Mechanism, mechanism_class, mechanism_names
from noise_search.mechanisms.registry import broken_plugins

#: ``privacy.mechanism`` of the non-private reference (no noise, no epsilon)
NON_PRIVATE = "none"


def _allows_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return any(_allows_bool(a) for a in typing.get_args(annotation))


@cache
def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | Y | None``), or the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for a in typing.get_args(annotation) for m in _members(a))
    return (annotation,)


@cache
def _kinds(annotation: Any) -> frozenset[str]:
    """Which plain YAML values a field takes: ``text``, ``number``, ``bool`` (others: models, maps)."""
    out: set[str] = set()
    for m in _members(annotation):
        if m is str or (typing.get_origin(m) is Literal and any(isinstance(a, str) for a in typing.get_args(m))):
            out.add("text")
        elif m is bool:
            out.add("bool")
        elif m in (int, float):
            out.add("number")
    return frozenset(out)


@cache
def _item_kinds(annotation: Any) -> frozenset[str]:
    """:func:`_kinds` of the items of a list field (``tuple[float, ...]``); empty for other fields."""
    out: set[str] = set()
    for m in _members(annotation):
        if typing.get_origin(m) in (tuple, list):
            out |= set().union(*(_kinds(a) for a in typing.get_args(m) if a is not Ellipsis))
    return frozenset(out)


def _range_text(field: FieldInfo) -> str:
    """A field's bounds as words: `` > 0``, `` in [4, 8192]``, or nothing."""
    lo = hi = ""
    for c in field.metadata:
        for attr, side in (("gt", "("), ("ge", "["), ("lt", ")"), ("le", "]")):
            bound = getattr(c, attr, None)
            if bound is not None and attr in ("gt", "ge"):
                lo = f"{side}{bound:g}"
            elif bound is not None:
                hi = f"{bound:g}{side}"
    if lo and hi:
        return f" in {lo}, {hi}"
    if lo:
        return f" {'>' if lo[0] == '(' else '>='} {lo[1:]}"
    if hi:
        return f" {'<' if hi[-1] == ')' else '<='} {hi[:-1]}"
    return ""


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen after validation, and every
    value must be of its field's own kind -- a number field takes a finite number (not true/false,
    not .inf or .nan, not text such as ``"8"`` or YAML 1.1's ``1:30``), a boolean field only
    true or false (not ``yes``, ``on`` or 1), and no text holds a NUL character."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        if not info.field_name:
            return value
        field = cls.model_fields[info.field_name]
        kinds, item_kinds = _kinds(field.annotation), _item_kinds(field.annotation)
        items = value if isinstance(value, (list, tuple)) else (value,)  # a list's items too: [1.0, true]
        if any(isinstance(v, bool) for v in items) and not _allows_bool(field.annotation):
            raise PydanticCustomError("not_bool", "must be a value of its type, not true or false")
        if isinstance(value, str):
            if "\x00" in value:
                raise PydanticCustomError("nul", "must not contain a NUL character")
            if "text" not in kinds and "number" in kinds:
                what = "an integer" if float not in _members(field.annotation) else "a number"
                raise PydanticCustomError("not_text", f"must be {what}{_range_text(field)}, not text")
            if "text" not in kinds and "bool" in kinds:
                raise PydanticCustomError("not_text", "must be true or false, not text")
        listed_text = isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value)
        if listed_text and "text" not in item_kinds and "number" in item_kinds:
            raise PydanticCustomError("not_text", "must list numbers, not text")
        if kinds == {"bool"} and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise PydanticCustomError("not_bool", "must be true or false")
        return value


class LoraSettings(Section):
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


#: built-in unlabelled corpora a feature centre may come from (public reference data)
CENTER_CORPORA: tuple[str, ...] = ("nyt-editorials", "movie-reviews", "imdb")


class FeatureSettings(Section):
    """How frozen encoder outputs become the features a head (or the top layers) reads.

    The pooled vector of layer ``layer`` is L2-normalised per example (``normalize``), then the
    mean normalised feature of a *public* reference corpus (``center``) is subtracted and the
    result normalised again. Per-example normalisation uses no data statistics; the centre comes
    from the reference corpus only, never from the training data.
    """

    layer: int = Field(-1, ge=-64, le=64, description="pooled layer: -1 = last, -2 = the one below, 0 = embeddings")
    pooling: Literal["mean", "cls", "last"] = Field(
        "mean", description="mean over real tokens | first token | last real token (decoder models)"
    )
    normalize: bool = Field(True, description="L2-normalise every pooled vector (per example)")
    center: str | None = Field(
        "nyt-editorials",
        description="public corpus whose mean feature is subtracted (nyt-editorials | movie-reviews | imdb); "
        "null = none. Never the training data",
    )
    cache: bool = Field(True, description="store the frozen activations on disk and reuse them (else in memory)")
    cache_dir: str | None = Field(
        None, description="feature cache folder; null = $LMODP_FEATURE_CACHE, else <data cache>/features"
    )

    @field_validator("center")
    @classmethod
    def _center(cls, v: str | None) -> str | None:
        if v is not None and v not in CENTER_CORPORA:
            raise ParameterError(
                "model.features.center", f"must be one of {', '.join(CENTER_CORPORA)} or null, got {v!r}"
            )
        return v


class ModelSettings(Section):
    task: Literal["classification", "causal-lm"] = "classification"
    path: str | None = Field(None, description="Hugging Face model folder; null = the task's packaged default")
    trainable: Literal["head", "lora", "full"] = Field(
        "lora", description="head: classifier on cached frozen features | lora: LoRA adapters | full: every weight"
    )
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="null = full fine-tuning")
    top_layers: int | None = Field(
        None, ge=1, le=1024, description="lora/full: adapt only the top k layers (>= 1); the frozen rest is cached"
    )
    features: FeatureSettings = Field(default_factory=FeatureSettings, description="head and top_layers only")
    max_length: int = Field(64, ge=4, le=8192, description="tokens per example (truncated), in [4, 8192]")
    dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="before")
    @classmethod
    def _legacy_full(cls, data: Any) -> Any:
        """``lora: null`` without ``trainable`` keeps its old meaning: full fine-tuning."""
        if isinstance(data, dict) and "lora" in data and data["lora"] is None and "trainable" not in data:
            return {**data, "trainable": "full"}
        return data

    @model_validator(mode="after")
    def _trainable(self) -> ModelSettings:
        # a section equal to its default counts as not given (configs round-trip through dicts)
        if self.trainable != "lora" and self.lora is not None and self.lora != LoraSettings():
            raise ParameterError("model.lora", f"only with model.trainable lora (got trainable {self.trainable})")
        if self.trainable != "lora" and self.lora is not None:
            self.__dict__["lora"] = None  # the default section is meaningless here: record none
        if self.trainable == "lora" and self.lora is None:
            raise ParameterError("model.lora", "trainable lora needs a lora section (or trainable full)")
        if (self.trainable == "head" or self.top_layers is not None) and self.task != "classification":
            field = "model.trainable" if self.trainable == "head" else "model.top_layers"
            raise ParameterError(field, "head and top_layers train a classifier: use them with task classification")
        if self.trainable == "head" and self.top_layers is not None:
            raise ParameterError("model.top_layers", "not with trainable head (the head has no encoder layers)")
        if self.features != FeatureSettings() and self.trainable != "head" and self.top_layers is None:
            raise ParameterError("model.features", "only used with trainable head or with top_layers")
        return self

    @property
    def cached_prefix(self) -> bool:
        """Whether everything below the first trainable module is frozen (activations cached)."""
        return self.trainable == "head" or self.top_layers is not None

    @property
    def trainable_kind(self) -> str:
        """``head``, ``top`` (lora/full on the top layers), ``lora`` or ``full``: the recipe's key."""
        return "top" if self.top_layers is not None else self.trainable

    @field_validator("path")
    @classmethod
    def _folder_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from trainers.model_folders import check_model_folder

        return str(check_model_folder(v))

    @model_validator(mode="after")
    def _fits_positions(self) -> ModelSettings:
        """``max_length`` within the model's position embeddings, read from its ``config.json``
        (the default model's when it is on disk), before any weights are loaded."""
        from trainers.model_folders import check_max_length, default_folder_on_disk

        folder = Path(self.path) if self.path is not None else default_folder_on_disk(self.task)
        if folder is not None:
            check_max_length(folder, self.max_length)
        return self


class DataSettings(Section):
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


def _one_of(names: tuple[str, ...]) -> str:
    """``input should be 'a', 'b' or 'c'`` (pydantic's wording for a choice)."""
    quoted = [f"'{n}'" for n in names]
    return "input should be " + (", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0])


class PrivacySettings(Section):
    """The privacy target and where the noise comes from. ``mechanism`` is a registered
    mechanism's name (:mod:`noise_search.mechanisms.registry`: the built-ins and installed
    plug-ins) or ``none``. ``params`` is kept as given (it is what a config file and the run's
    MLflow params show) and parsed once, on validation, into the typed mechanism
    :meth:`explicit_mechanism` returns."""

    mechanism: str = Field(description="gaussian | laplace | lmo | a plug-in's name | none (no noise)")
    epsilon: float | None = Field(None, gt=0, description="target epsilon > 0 (required unless mechanism is none)")
    delta: float = Field(1e-5, gt=0, lt=1, description="target delta in (0, 1)")
    clip: float | None = Field(
        None, gt=0, description="clipping bound C > 0, in the mechanism's norm (L2 / L1); null = the recipe's"
    )
    accountant: str = Field("rdp", description="rdp | prv | pld | rdp-hidden-u (those that can bound the mechanism)")
    params: dict[str, Any] | None = Field(
        None, description="mechanism parameters (sigma | u0 | LMO keys | a plug-in's)"
    )
    search_result: str | None = Field(None, description="a noise-search result file (lmo-dp search --out)")
    calibrate: bool = Field(False, description="LMO: rescale the given parameters to meet the target")
    on_budget: Literal["refuse", "stop"] = Field(
        "refuse",
        description="refuse: a plan whose epsilon exceeds the target does not start; "
        "stop: it starts and stops before the first step that would exceed the target",
    )
    allow_large_delta: bool = Field(
        False, description="accept delta >= 1/N (N training examples); refused otherwise, as such a delta is no bound"
    )

    _noise: Mechanism | None = PrivateAttr(None)

    @field_validator("mechanism")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v != NON_PRIVATE and v not in mechanism_names():
            if v in broken_plugins():
                mechanism_class(v, "privacy.mechanism")  # says why the plug-in could not be loaded
            raise ParameterError("privacy.mechanism", f"{_one_of((*mechanism_names(), NON_PRIVATE))}, got {v!r}")
        return v

    @field_validator("accountant")
    @classmethod
    def _accountant_known(cls, v: str) -> str:
        if v not in ACCOUNTANTS:
            raise ParameterError("privacy.accountant", f"{_one_of(ACCOUNTANTS)}, got {v!r}")
        return v

    @property
    def mechanism_class(self) -> type[Mechanism] | None:
        """The class of ``mechanism`` (None for ``none``)."""
        return None if self.mechanism == NON_PRIVATE else mechanism_class(self.mechanism)

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySettings:
        if self.mechanism == NON_PRIVATE:
            for key in ("params", "search_result", "calibrate"):
                if getattr(self, key) not in (None, False):
                    raise ParameterError(f"privacy.{key}", "not with mechanism none (a non-private run adds no noise)")
            return self
        if self.epsilon is None:
            raise ParameterError("privacy.epsilon", f"required for mechanism {self.mechanism} (a target > 0)")
        if self.params is not None and self.search_result is not None:
            raise ParameterError("privacy.params", "give either params or search_result, not both")
        cls = mechanism_class(self.mechanism)
        if cls.noise_parameter is None and self.params is None and self.search_result is None:
            raise ParameterError(
                "privacy.params",
                f"{self.mechanism} needs params or a search_result file (it has no one noise parameter to calibrate)",
            )
        if self.calibrate and cls.noise_parameter is not None:
            rescaled = [n for n in mechanism_names() if mechanism_class(n).noise_parameter is None]
            scalar = [n for n in mechanism_names() if mechanism_class(n).noise_parameter is not None]
            raise ParameterError(
                "privacy.calibrate",
                f"only for {', '.join(rescaled)} ({', '.join(scalar)} calibrate when params are omitted)",
            )
        if self.search_result is not None and not Path(self.search_result).is_file():
            what = "is not a regular file" if Path(self.search_result).exists() else "does not exist"
            raise ParameterError("privacy.search_result", f"file {self.search_result} {what}")
        if self.params is not None:
            self._noise = self._parse_params()
        able = accountants_for(self.mechanism)
        if self.accountant not in able:
            raise ParameterError(
                "privacy.accountant",
                f"'{self.accountant}' cannot account the {self.mechanism} mechanism (use {' or '.join(able)})",
            )
        return self

    def _parse_params(self) -> Mechanism:
        cls = mechanism_class(self.mechanism)
        allowed = cls.keys()
        unknown = sorted(set(self.params or {}) - set(allowed))
        if unknown:
            raise ParameterError(
                f"privacy.params.{unknown[0]}", f"unknown {self.mechanism} parameter (allowed: {', '.join(allowed)})"
            )
        try:
            return cls.from_params(self.params or {}, source="privacy.params")
        except ParameterError as exc:
            raise ParameterError(f"privacy.params.{exc.field}", str(exc)[len(exc.field) + 2 :]) from exc

    def explicit_mechanism(self) -> Mechanism | None:
        """The mechanism given by ``params``, validated once when the settings were built (or None)."""
        return self._noise


class TrainingSettings(Section):
    """Training settings; null learning_rate, batch_size, epochs, optimizer and
    physical_batch_size take the recipe's values (:mod:`trainers.recipes`)."""

    epochs: float | None = Field(
        None, gt=0, le=1e6, description="passes over the training data (> 0); steps = ceil(epochs / q)"
    )
    steps: int | None = Field(None, ge=1, description="number of steps T >= 1 (overrides epochs)")
    batch_size: int | None = Field(None, ge=1, description="expected (Poisson) batch size qN >= 1, at most N")
    physical_batch_size: int | None = Field(
        None, ge=1, description="most examples per forward/backward pass; a larger Poisson batch is split"
    )
    learning_rate: float | None = Field(None, gt=0, le=10, description="learning rate in (0, 10]")
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0, description="seeds model init, dropout, sampling and noise")
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    eval_batch_size: int = Field(128, ge=1)
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch intra-op threads, in [1, 1024] (null = torch default)"
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        description="steps between trial checkpoints (>= 1). lmo-dp train: with --checkpoint-dir only; "
        "null = only on SIGTERM and when training ends. Sweeps: checkpoints go to Tune, which restores a "
        "trial whose worker died from the latest; null = no checkpoints. Not part of the trial's identity",
    )
    save_model: Literal["none", "best", "all"] = Field(
        "best",
        description="which trained models become MLflow logged models: best (sweeps: the selected trial of "
        "every (target, mechanism) cell; lmo-dp train: the trial's model), all (every finished trial), none. "
        "Not part of the trial's identity",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("cpu", "cuda", "auto") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ParameterError("training.device", f"must be cpu, cuda, cuda:N or auto, got {v!r}")


class AuditSettings(Section):
    """The trial-level privacy audit (:mod:`trainers.audit_canaries`): gradient canaries in training."""

    canaries: int = Field(ge=2, le=1_000_000, description="number of gradient canaries M, in [2, 1e6]")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence of the epsilon lower bound, in (0, 1)")
