"""Recipes: the training settings a trial gets when its config leaves them unset.

DP-SGD wants large expected batches, many steps and few trainable coordinates, and the two
clipping norms want different step sizes, so one set of defaults cannot serve every trial. A
recipe is chosen by the *trainable set* (``head``; ``top`` = LoRA or full on the top layers;
``lora``; ``full``) and the *noise family*, which is the mechanism's clipping norm
(:attr:`noise_search.mechanisms.Mechanism.norm`):

* ``gaussian`` -- L2 clipping (Gaussian noise, and any mechanism with L2 clipping);
* ``l1`` -- L1 clipping (Laplace, LMO, and any mechanism with L1 clipping). A clipped example's
  L1 norm is at most ``C``, so its L2 norm is at most ``C`` and typically about ``C / sqrt(d)``
  over ``d`` coordinates, while the noise is about ``C / u`` on every coordinate: with the
  learning rate that suits Gaussian noise an L1 run moves much less per unit of noise. L1
  recipes have their own learning rate;
* ``none`` -- the non-private reference on the same trainable set (its own batch size and
  epochs: without noise, small batches and few epochs are best).

The batch size is ``min(batch_cap, ceil(batch_fraction * N))`` for ``N`` training examples,
so small datasets keep a sampling rate ``q <= batch_fraction``. Private recipes of one trainable
set share batch size and epochs (so one noise search serves every mechanism of a sweep).
The ``head`` and ``top`` values were chosen by grids on the movie-review validation split with
all-MiniLM-L6-v2 and are measured by ``benchmarks/bench_utility.py`` (``docs/utility.md``). The
whole-model ``lora`` and ``full`` recipes follow published DP fine-tuning practice (large
expected batches, Adam; learning rate 5e-4 and clip 0.1 for full fine-tuning, Li et al. 2022)
with the L1 learning rate three times the Gaussian one as in the measured sets; they were not
tuned here (whole-model runs on the full data do not fit a 2-core benchmark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import Gaussian, mechanism_class, mechanism_names
from trainers.settings import PrivacySettings, TrainingSettings

KINDS: tuple[str, ...] = ("head", "top", "lora", "full")
#: the recipe families: L2 clipping (named after its mechanism, Gaussian noise), L1 clipping, no noise
L2, L1, NONE = Gaussian.name, "l1", "none"
FAMILIES: tuple[str, ...] = (L2, L1, NONE)
#: the family of each clipping norm
FAMILY_OF_NORM: dict[str, str] = {"l2": L2, "l1": L1}


@dataclass(frozen=True)
class RecipeUse:
    """Which recipe a resolved trial used and the values it supplied (``section.key -> value``)."""

    name: str
    applied: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "applied": dict(self.applied)}


class Configured(Protocol):
    """What a recipe reads of a trial config: its training settings and privacy section."""

    @property
    def training(self) -> TrainingSettings: ...

    @property
    def privacy(self) -> PrivacySettings: ...


@dataclass(frozen=True)
class Recipe:
    """Defaults for one (trainable set, noise family)."""

    kind: str
    family: str
    learning_rate: float
    clip: float | None  #: None for the non-private family (nothing is clipped)
    batch_cap: int
    batch_fraction: float
    epochs: float
    optimizer: str = "adam"
    physical_batch_size: int | None = None  #: None: the whole Poisson batch in one pass

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.family}"

    def batch_size(self, n_train: int) -> int:
        """Expected batch size for ``n_train`` examples: ``min(cap, ceil(fraction N))``, >= 1."""
        return max(1, min(self.batch_cap, math.ceil(self.batch_fraction * n_train)))


#: kind, family, learning rate, clip, batch cap, batch fraction, epochs, physical batch size
_TABLE: tuple[tuple[str, str, float, float | None, int, float, float, int | None], ...] = (
    ("head", L2, 0.1, 0.3, 2048, 0.25, 40.0, None),
    ("head", L1, 0.2, 1.0, 2048, 0.25, 40.0, None),
    ("head", NONE, 0.03, None, 512, 0.1, 20.0, None),
    ("top", L2, 0.01, 1.0, 2048, 0.25, 10.0, 256),
    ("top", L1, 0.03, 1.0, 2048, 0.25, 10.0, 256),
    ("top", NONE, 0.003, None, 64, 0.05, 2.0, 256),
    ("lora", L2, 0.005, 1.0, 1024, 0.25, 3.0, 64),
    ("lora", L1, 0.015, 1.0, 1024, 0.25, 3.0, 64),
    ("lora", NONE, 0.001, None, 32, 0.05, 2.0, 64),
    ("full", L2, 5e-4, 0.1, 1024, 0.25, 3.0, 32),
    ("full", L1, 1.5e-3, 0.1, 1024, 0.25, 3.0, 32),
    ("full", NONE, 5e-5, None, 32, 0.05, 2.0, 32),
)

RECIPES: dict[tuple[str, str], Recipe] = {
    (kind, fam): Recipe(kind, fam, lr, clip, cap, fraction, epochs, physical_batch_size=physical)
    for kind, fam, lr, clip, cap, fraction, epochs, physical in _TABLE
}


def family(mechanism: str) -> str:
    """The recipe family of a registered mechanism's name, or of ``none``: its clipping norm's
    (:data:`FAMILY_OF_NORM`: ``gaussian`` for L2, ``l1`` for L1), or ``none``."""
    if mechanism == NONE:
        return NONE
    try:
        return FAMILY_OF_NORM[mechanism_class(mechanism).norm]
    except InputError:
        raise ParameterError(
            "privacy.mechanism", f"must be one of {', '.join(mechanism_names())} or none, got {mechanism!r}"
        ) from None


def recipe_for(kind: str, mechanism: str) -> Recipe:
    """The recipe of trainable set ``kind`` (:data:`KINDS`) and ``mechanism``."""
    if kind not in KINDS:
        raise ParameterError("model.trainable", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    return RECIPES[(kind, family(mechanism))]


def apply_recipe(
    kind: str, mechanism: str, config: Configured, n_train: int
) -> tuple[TrainingSettings, float | None, RecipeUse]:
    """(training settings, clip, what was applied) with the recipe filling every unset field."""
    recipe = recipe_for(kind, mechanism)
    t = config.training
    updates: dict[str, Any] = {}
    if t.learning_rate is None:
        updates["learning_rate"] = recipe.learning_rate
    if t.batch_size is None:
        updates["batch_size"] = recipe.batch_size(n_train)
    if t.epochs is None and t.steps is None:
        updates["epochs"] = recipe.epochs
    if t.optimizer is None:
        updates["optimizer"] = recipe.optimizer
    if t.physical_batch_size is None and recipe.physical_batch_size is not None:
        updates["physical_batch_size"] = recipe.physical_batch_size
    applied = {f"training.{k}": v for k, v in updates.items()}
    clip = config.privacy.clip
    if clip is None and recipe.clip is not None and mechanism != NONE:
        clip = recipe.clip
        applied["privacy.clip"] = clip
    return t.model_copy(update=updates), clip, RecipeUse(recipe.name, applied)


def recipe_table() -> list[dict[str, Any]]:
    """Every recipe as a row (docs and ``lmo-dp`` help)."""
    return [
        {
            "trainable": r.kind,
            "family": r.family,
            "learning_rate": r.learning_rate,
            "clip": r.clip,
            "batch_size": f"min({r.batch_cap}, ceil({r.batch_fraction:g} N))",
            "epochs": r.epochs,
            "optimizer": r.optimizer,
            "physical_batch_size": r.physical_batch_size,
        }
        for r in RECIPES.values()
    ]
