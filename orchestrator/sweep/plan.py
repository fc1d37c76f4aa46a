"""What every private trial of a sweep shares, fixed before any trial starts.

:func:`plan_sweep` loads the data once (after its limits): the training-set size and the
recipe (or the config's batch size and epochs) give the Poisson rate ``q`` and the steps ``T``
shared by every private trial (so one noise search serves the whole grid); it measures the
majority-class baseline; for a head or top-layers sweep it computes the frozen activations
into the feature cache once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from noise_search.errors import ParameterError
from orchestrator.sweep_config import SweepConfig
from trainers.progress import show_progress


@dataclass(frozen=True)
class SharedPlan:
    """What every private trial of the sweep shares, and the data's reference numbers."""

    n_train: int
    batch_size: int
    sample_rate: float
    steps: int
    dataset: dict[str, Any]
    #: the majority-class baseline: ``{"label", "val_accuracy", "test_accuracy"}`` (classification)
    majority: dict[str, Any] | None = None
    #: the private trials' training settings after the recipe (``section.key -> value``)
    training: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _private_training(cfg: SweepConfig, n_train: int) -> dict[str, Any]:
    """The resolved batch size, epochs and steps of the private trials (one plan for all)."""
    from trainers.recipes import recipe_for

    t = cfg.training
    seen: dict[str, dict[str, Any]] = {}
    for mech in cfg.privacy.mechanisms:
        recipe = recipe_for(cfg.model.trainable_kind, mech)
        seen[mech] = {
            "batch_size": t.batch_size if t.batch_size is not None else recipe.batch_size(n_train),
            "epochs": t.epochs if t.epochs is not None or t.steps is not None else recipe.epochs,
            "steps": t.steps,
        }
    first = next(iter(seen.values()))
    for mech, value in seen.items():
        if value != first:
            raise ParameterError(
                "training.batch_size",
                f"the recipes give {mech} a different plan ({value}) than the other mechanisms ({first}); "
                "set training.batch_size and training.epochs so every private trial shares one plan",
            )
    return first


def majority_baseline(ds: Any) -> dict[str, Any] | None:
    """The majority-class baseline: the accuracy of the best constant prediction on each split
    (its most frequent label's share; an upper bound on any constant classifier, so a model must
    beat it to have learned anything). None for unlabelled data."""
    if ds.train.labels is None:
        return None
    out: dict[str, Any] = {}
    for name, split in (("train", ds.train), ("val", ds.validation), ("test", ds.test)):
        if split.labels:
            counts: dict[int, int] = {}
            for y in split.labels:
                counts[y] = counts.get(y, 0) + 1
            out[f"{name}_accuracy"] = max(counts.values()) / len(split.labels)
    return out


def plan_sweep(cfg: SweepConfig, *, warm_cache: bool = True) -> SharedPlan:
    """Load the data once (after its limits) to fix ``q`` and ``T`` for every private trial.

    With ``warm_cache`` and a head or top-layers model, the frozen activations of every split
    are computed into the feature cache here, once, before any trial starts.
    """
    from trainers.budget import check_delta, make_step_plan
    from trainers.engine import load_settings_dataset

    ds = load_settings_dataset(cfg.data, cfg.model.task)
    if len(ds.train) < 1:
        raise ParameterError("data.max_train_examples", "the training split is empty")
    check_delta(cfg.privacy.delta, len(ds.train), allow=cfg.privacy.allow_large_delta)
    training = _private_training(cfg, len(ds.train))
    plan = make_step_plan(len(ds.train), training["batch_size"], epochs=training["epochs"], steps=training["steps"])
    if warm_cache and cfg.model.cached_prefix:
        _warm_feature_cache(cfg, ds)
    return SharedPlan(
        plan.n_train, plan.batch_size, plan.sample_rate, plan.steps, ds.info(), majority_baseline(ds), training
    )


def _warm_feature_cache(cfg: SweepConfig, ds: Any) -> None:
    """Compute the frozen activations on the driver's CPU before the trials start (CPU sweeps;
    GPU trials compute them on their own node, one builder per entry)."""
    import torch

    from trainers.trainable import build_trainable

    if cfg.training.device not in ("cpu", "auto") or (cfg.training.device == "auto" and torch.cuda.is_available()):
        return
    trial = cfg.trial_config(mechanism="none", epsilon=None, seed=0, learning_rate=None, params=None, name="cache")
    started = time.perf_counter()
    with torch.random.fork_rng():
        built = build_trainable(trial.resolve(len(ds.train)), ds, torch.device("cpu"))
    if built.cache.get("builds") and show_progress():
        print(
            f"feature cache: computed {built.cache['builds']} entries in {time.perf_counter() - started:.0f} s "
            f"under {built.cache.get('root')} (reused from now on)",
            file=sys.stderr,
            flush=True,
        )
