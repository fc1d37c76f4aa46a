"""Recipes: unset training settings get the documented defaults of the trainable set and
mechanism; set ones are kept; what was applied is recorded; trainable-set validation."""

from __future__ import annotations

import math

import pytest

from noise_search.errors import InputError
from trainers.config import TrialConfig
from trainers.recipes import KINDS, RECIPES, apply_recipe, family, recipe_for, recipe_table


def trial(model: dict | None = None, privacy: dict | None = None, training: dict | None = None, **rest) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "model": model or {"trainable": "head"},
            "privacy": privacy or {"mechanism": "laplace", "epsilon": 2.0},
            "training": training or {},
            **rest,
        }
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["gaussian", "laplace", "lmo", "none"])
def test_every_unset_field_comes_from_the_recipe(kind: str, mechanism: str) -> None:
    model = {
        "head": {"trainable": "head"},
        "top": {"trainable": "lora", "top_layers": 1},
        "lora": {"trainable": "lora"},
        "full": {"trainable": "full"},
    }[kind]
    privacy = {"mechanism": mechanism} if mechanism == "none" else {"mechanism": mechanism, "epsilon": 2.0}
    if mechanism == "lmo":
        privacy["params"] = {
            "a1": 1.0,
            "a3": 0.0,
            "a4": 0.0,
            "G_k": 4.0,
            "G_theta": 1.0,
            "E_lambda": 1.0,
            "U_a": 0,
            "U_b": 1,
        }
    cfg = trial(model, privacy).resolve(8491)
    r = recipe_for(kind, mechanism)
    t = cfg.training
    assert (t.learning_rate, t.epochs, t.optimizer) == (r.learning_rate, r.epochs, r.optimizer)
    assert t.batch_size == min(r.batch_cap, math.ceil(r.batch_fraction * 8491))
    assert t.physical_batch_size == r.physical_batch_size
    assert cfg.privacy.clip == (None if mechanism == "none" else r.clip)
    assert cfg.recipe is not None and cfg.recipe.name == f"{kind}/{family(mechanism)}"
    assert cfg.recipe.applied["training.learning_rate"] == r.learning_rate
    assert ("privacy.clip" in cfg.recipe.applied) == (mechanism != "none")


def test_set_fields_are_kept_and_not_listed_as_applied() -> None:
    cfg = trial(training={"learning_rate": 0.5, "batch_size": 100, "optimizer": "sgd"}, privacy=None).resolve(1000)
    assert (cfg.training.learning_rate, cfg.training.batch_size, cfg.training.optimizer) == (0.5, 100, "sgd")
    assert set(cfg.recipe.applied) == {"training.epochs", "privacy.clip"}
    steps = trial(training={"steps": 7}).resolve(1000)
    assert steps.training.epochs is None and "training.epochs" not in steps.recipe.applied


def test_resolving_twice_changes_nothing() -> None:
    once = trial().resolve(500)
    twice = once.resolve(500)
    assert twice is once and twice.recipe == once.recipe
    assert TrialConfig.from_dict(once.to_dict()).resolve(500).training == once.training


def test_batch_size_follows_small_datasets() -> None:
    head = recipe_for("head", "gaussian")
    assert head.batch_size(8491) == 2048 and head.batch_size(300) == 75 and head.batch_size(1) == 1


def test_l1_mechanisms_share_a_recipe_and_private_families_share_a_plan() -> None:
    for kind in KINDS:
        assert recipe_for(kind, "laplace") is recipe_for(kind, "lmo")
        g, l1 = RECIPES[(kind, "gaussian")], RECIPES[(kind, "l1")]
        assert (g.batch_cap, g.batch_fraction, g.epochs) == (l1.batch_cap, l1.batch_fraction, l1.epochs)
    assert recipe_for("head", "laplace").learning_rate != recipe_for("head", "gaussian").learning_rate
    assert len(recipe_table()) == len(RECIPES)


def test_apply_recipe_rejects_unknown_sets() -> None:
    with pytest.raises(InputError, match=r"model\.trainable"):
        apply_recipe("attention", "gaussian", trial(), 10)
    with pytest.raises(InputError, match=r"privacy\.mechanism"):
        family("exponential")


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        ({"trainable": "head", "lora": {"rank": 4}}, {}, "model.lora: only with model.trainable lora"),
        ({"trainable": "head", "task": "causal-lm"}, {}, "model.trainable: head and top_layers"),
        ({"trainable": "head", "top_layers": 1}, {}, "model.top_layers: not with trainable head"),
        ({"trainable": "lora", "features": {"layer": -2}}, {}, "model.features: only used with"),
        ({"trainable": "head", "features": {"center": "imdb"}}, {"name": "imdb"}, "model.features.center: the centre"),
        ({"trainable": "head", "features": {"center": "wikipedia"}}, {}, "model.features.center: must be one of"),
        ({"trainable": "head", "features": {"pooling": "max"}}, {}, "model.features.pooling"),
        ({"trainable": "lora", "top_layers": 0}, {}, "model.top_layers"),
        ({"trainable": "lora", "lora": None}, {}, "model.lora: trainable lora needs"),
    ],
)
def test_bad_trainable_settings_name_the_field(model: dict, data: dict, needle: str) -> None:
    with pytest.raises(InputError) as err:
        TrialConfig.from_dict({"model": model, "data": data, "privacy": {"mechanism": "none"}})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_lora_null_still_means_full_fine_tuning() -> None:
    cfg = TrialConfig.from_dict({"model": {"lora": None}, "privacy": {"mechanism": "none"}})
    assert cfg.model.trainable == "full" and cfg.model.trainable_kind == "full"
    head = trial()
    assert head.model.lora is None and head.model.cached_prefix  # no LoRA section recorded for a head
