"""Private hyperparameter selection in a sweep (docs/privacy.md section 7).

With a ``tuning`` section, each (target epsilon, mechanism) -- a *cell* -- is one run of
Papernot and Steinke's procedure:

1. :func:`draw_cells` draws the number of runs ``K`` from the configured law and, for each run,
   its hyperparameters (learning rate, clip, epochs, trainable set, seed) from the configured space, with a
   generator seeded by ``tuning.seed`` and the cell's index alone: nothing depends on the data,
   and a resumed sweep draws the same runs;
2. :func:`calibrate_cells` sets the cell's noise (one level shared by all its runs): under
   ``noise: selected`` (the default) so that the best of ``K`` runs meets the target, bounding
   every configuration the space allows (each trainable set and number of epochs gives its own
   ``(q, T)``) by the pointwise largest RDP curve; under
   ``noise: per_run`` so that each run meets the target, and the larger tuned epsilon is stated;
3. the sweep trains the runs, and :mod:`orchestrator.selection` returns the best by validation
   score with its test score.

The non-private reference draws its runs the same way (no noise, no epsilon).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.sweep_sections import TuningRange, TuningSpace

if TYPE_CHECKING:
    from noise_search.search_result import SearchResult
    from orchestrator.sweep.plan import SharedPlan
    from orchestrator.sweep_config import SweepConfig


@dataclass(frozen=True)
class TuningRun:
    """The hyperparameters one tuning run drew (None: the sweep's value or the recipe's)."""

    index: int
    seed: int
    learning_rate: float | None
    clip: float | None
    epochs: int | None
    trainable: str | None = None


@dataclass(frozen=True)
class TunedCell:
    """One (target, mechanism) of a tuned sweep: its runs and its noise."""

    mechanism: str  #: gaussian, laplace, lmo or none
    epsilon: float | None  #: the target; None for the non-private reference
    runs: tuple[TuningRun, ...]
    params: dict[str, Any] | None = None  #: the noise of every run (None: reference or infeasible)
    epsilon_per_run: float | None = None  #: the largest epsilon one run of the space can spend
    epsilon_tuned: float | None = None  #: epsilon of the selected run (tuning included)
    accountant: str | None = None
    note: str | None = None  #: why the cell has no noise, if it has none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TunedCell:
        return cls(**{**d, "runs": tuple(TuningRun(**r) for r in d["runs"])})


def _draw(rng: np.random.Generator, values: tuple[float, ...] | TuningRange | None) -> float | None:
    if values is None:
        return None
    if isinstance(values, TuningRange):
        if values.log:
            return float(math.exp(rng.uniform(math.log(values.low), math.log(values.high))))
        return float(rng.uniform(values.low, values.high))
    return float(values[int(rng.integers(len(values)))])


def cell_keys(cfg: SweepConfig) -> list[tuple[str, float | None]]:
    """The cells of a tuned sweep in order: every (target, private mechanism), then the reference."""
    keys: list[tuple[str, float | None]] = [(m, e) for e in cfg.privacy.epsilons for m in cfg.privacy.mechanisms]
    return keys + ([("none", None)] if cfg.non_private else [])


def draw_runs(cfg: SweepConfig, index: int, mechanism: str) -> tuple[TuningRun, ...]:
    """The runs of cell ``index``: ``K`` from the tuning law, then each run's hyperparameters."""
    from noise_search.tuning import TuningDistribution

    tuning = cfg.tuning
    assert tuning is not None
    dist = TuningDistribution.from_mean(tuning.mean, tuning.shape_value)
    rng = np.random.default_rng([tuning.seed, index])
    k = dist.sample(rng)
    space = tuning.space_for(mechanism)
    runs = []
    for j in range(k):
        seed = int(rng.integers(2**31 - 1))
        lr = _draw(rng, space.learning_rate)
        clip = _draw(rng, space.clip) if mechanism != "none" else None
        epochs = int(space.epochs[int(rng.integers(len(space.epochs)))]) if space.epochs else None
        trainable = str(space.trainable[int(rng.integers(len(space.trainable)))]) if space.trainable else None
        runs.append(TuningRun(j, seed, lr, clip, epochs, trainable))
    return tuple(runs)


def runs_statement(cfg: SweepConfig, cells: list[TunedCell]) -> str:
    """The line a tuned sweep prints before it starts: the law of K, its mean and 99.9% quantile
    (exact), the cap, and the runs drawn."""
    from noise_search.tuning import TuningDistribution

    tuning = cfg.tuning
    assert tuning is not None
    dist = TuningDistribution.from_mean(tuning.mean, tuning.shape_value)
    q = dist.quantile(limit=tuning.max_runs)
    drawn = [len(c.runs) for c in cells]
    total, cells_text = sum(drawn), f"{len(drawn)} cell{'s' if len(drawn) != 1 else ''}"
    return (
        f"tuning: K runs per (target, mechanism), {dist.name} with mean {dist.mean:.4g}, 99.9% quantile "
        f"{q if q is not None else 'above ' + str(tuning.max_runs)} (tuning.max_runs {tuning.max_runs:,}); "
        f"drawn: {total:,} run{'s' if total != 1 else ''} in {cells_text}, at most {max(drawn, default=0):,} in one"
    )


def draw_cells(cfg: SweepConfig) -> list[TunedCell]:
    """Every cell with its drawn runs (no noise yet)."""
    return [TunedCell(m, e, draw_runs(cfg, i, m)) for i, (m, e) in enumerate(cell_keys(cfg))]


def run_plans(cfg: SweepConfig, n_train: int, mechanism: str, space: TuningSpace) -> list[tuple[float, int]]:
    """Every ``(q, T)`` a run of ``mechanism`` can have: over the trainable sets and epochs the
    space allows, each with its recipe's batch size and epochs where the sweep sets none (as the
    trial itself resolves them)."""
    from trainers.budget import make_step_plan
    from trainers.recipes import recipe_for

    t = cfg.training
    out = set()
    for trainable in space.trainable or (None,):
        recipe = recipe_for(cfg.model_settings(trainable).trainable_kind, mechanism)
        batch = t.batch_size if t.batch_size is not None else recipe.batch_size(n_train)
        for e in space.epochs or (None,):
            epochs = e if e is not None else (t.epochs if t.epochs is not None else recipe.epochs)
            plan = make_step_plan(n_train, batch, epochs=epochs, steps=t.steps)
            out.add((plan.sample_rate, plan.steps))
    return sorted(out)


def calibrate_cells(
    cfg: SweepConfig, plan: SharedPlan, search: SearchResult, cells: list[TunedCell]
) -> list[TunedCell]:
    """Each private cell with its noise, per-run and tuned epsilon (``plan``: the sweep's
    :class:`~orchestrator.sweep.plan.SharedPlan`; ``search``: its noise search result, whose
    parameters seed the calibration and give LMO's shape)."""
    from orchestrator.sweep.specs import noise_params

    out = []
    for cell in cells:
        if cell.mechanism == "none":
            out.append(cell)
            continue
        start = noise_params(cell.mechanism, search.row(cell.epsilon))
        if start is None:
            note = "the noise search found no parameters for this target"
            out.append(replace(cell, accountant="rdp", note=note))
            continue
        out.append(_calibrate_cell(cfg, plan, cell, start))
    return out


def _calibrate_cell(cfg: SweepConfig, plan: SharedPlan, cell: TunedCell, start: dict[str, Any]) -> TunedCell:
    from noise_search.accountants import RdpAccountant
    from noise_search.calibration import calibrate_parameter
    from noise_search.errors import CalibrationError
    from noise_search.events import RandomChoiceDpEvent, dp_sgd_event, tuned_event
    from noise_search.mechanisms import mechanism_class

    tuning = cfg.tuning
    assert tuning is not None and cell.epsilon is not None
    mean, shape, delta = tuning.mean, tuning.shape_value, cfg.privacy.delta
    plans = run_plans(cfg, plan.n_train, cell.mechanism, tuning.space_for(cell.mechanism))
    make, noise, x0 = mechanism_class(cell.mechanism).from_params(start).noise_family()
    increasing, lo, hi = noise.increasing, noise.lower, noise.upper

    def one_run(x: float) -> Any:
        events = tuple(dp_sgd_event(make(x), q, t) for q, t in plans)
        return events[0] if len(events) == 1 else RandomChoiceDpEvent(events)

    def event_of(x: float) -> Any:
        return tuned_event(one_run(x), mean, shape) if tuning.noise == "selected" else one_run(x)

    try:
        x, _ = calibrate_parameter(
            event_of, epsilon=cell.epsilon, delta=delta, increasing=increasing, accountant="rdp",
            start=x0, lower=lo, upper=hi,
        )  # fmt: skip
    except CalibrationError as exc:
        return replace(cell, accountant="rdp", note=f"no noise meets the target: {exc}")
    mech = make(x)
    params = mech.to_dict()
    params.pop("mechanism", None)
    per_run = RdpAccountant().compose(one_run(x)).get_epsilon(delta)
    tuned = RdpAccountant().compose(tuned_event(one_run(x), mean, shape)).get_epsilon(delta)
    return replace(cell, params=params, epsilon_per_run=per_run, epsilon_tuned=tuned, accountant="rdp")


def tuning_summary(cfg: SweepConfig, cells: list[TunedCell]) -> dict[str, Any]:
    """The ``tuning`` object of the sweep's JSON and of the parent run's ``tuning.json``."""
    from noise_search.tuning import TuningDistribution

    tuning = cfg.tuning
    assert tuning is not None
    dist = TuningDistribution.from_mean(tuning.mean, tuning.shape_value)
    return {
        "mean": tuning.mean,
        "shape": tuning.shape if isinstance(tuning.shape, str) else float(tuning.shape),
        "distribution": dist.name,
        "runs_expected": dist.mean,
        "runs_quantile_999": dist.quantile(limit=tuning.max_runs),
        "max_runs": tuning.max_runs,
        "noise": tuning.noise,
        "seed": tuning.seed,
        "cells": [{k: v for k, v in c.to_dict().items() if k != "runs"} | {"runs": len(c.runs)} for c in cells],
    }
