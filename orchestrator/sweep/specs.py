"""A sweep's grid as typed trial specs.

:class:`TrialSpec` is one grid point: mechanism, target epsilon (None for the non-private
reference), seed, learning rate and clip (None: the recipe's), and the noise parameters found
by the search. :func:`trial_specs` expands a config and a search result into the runnable specs
and the grid points the search found no noise for. A spec's :attr:`~TrialSpec.key` identifies
the trial across attempts and resumes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from noise_search.search_result import SearchResult, SearchRow

if TYPE_CHECKING:
    from orchestrator.sweep.tuning import TunedCell
    from orchestrator.sweep_config import SweepConfig


@dataclass(frozen=True)
class TrialSpec:
    """One grid point of a sweep."""

    key: str
    mechanism: str  #: the arm: a mechanism, a variant of one, or none (the non-private reference)
    epsilon: float | None  #: target epsilon; None for the reference
    seed: int
    learning_rate: float | None  #: None: the sweep's value or the recipe's
    clip: float | None  #: None: the sweep's value or the recipe's
    params: dict[str, Any] | None  #: noise parameters (None: the reference, or an infeasible point)
    epochs: int | None = None  #: None: the sweep's value or the recipe's
    tuning_run: int | None = None  #: index of the run in its cell of a tuned sweep
    trainable: str | None = None  #: None: the sweep's model.trainable

    def to_dict(self) -> dict[str, Any]:
        """The plain form Tune carries in a trial's config (and saves with its state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        return cls(
            key=data["key"],
            mechanism=data["mechanism"],
            epsilon=data["epsilon"],
            seed=data["seed"],
            learning_rate=data["learning_rate"],
            clip=data.get("clip"),
            params=data.get("params"),
            epochs=data.get("epochs"),
            tuning_run=data.get("tuning_run"),
            trainable=data.get("trainable"),
        )


def trial_key(
    mechanism: str,
    epsilon: float | None,
    seed: int,
    learning_rate: float | None,
    n_lrs: int,
    clip: float | None = None,
    n_clips: int = 1,
) -> str:
    """``eps=E_mechanism_seed=S`` (``mechanism_seed=S`` for the reference), plus ``_lr=`` / ``_clip=``
    when the mechanism's grid has several values."""
    key = f"eps={epsilon:g}_{mechanism}_seed={seed}" if epsilon is not None else f"{mechanism}_seed={seed}"
    key += f"_lr={learning_rate:g}" if n_lrs > 1 and learning_rate is not None else ""
    return key + (f"_clip={clip:g}" if n_clips > 1 and clip is not None else "")


def noise_params(mechanism: str, row: SearchRow) -> dict[str, Any] | None:
    """A trial's noise parameters from the search row (None: the search found none)."""
    found = row.mechanisms().get(mechanism)
    return None if found is None else found.params()


def trial_specs(
    cfg: SweepConfig, search: SearchResult, tuning: list[TunedCell] | None = None
) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """(runnable trial specs, infeasible grid points) for the sweep's grid, or with a tuning
    section for its drawn runs (``tuning``: the calibrated cells)."""
    if cfg.tuning is not None:
        if tuning is None:
            raise ValueError("a tuned sweep needs its calibrated cells")
        return tuned_specs(tuning)
    specs, infeasible = [], []
    for mech, eps, params in grid_points(cfg, search):
        for spec in cell_specs(cfg, mech, eps, params, cfg.seeds):
            (specs if params is not None or mech == "none" else infeasible).append(spec)
    return specs, infeasible


def calibrated_params(cfg: SweepConfig, search: SearchResult, mechanism: str, epsilon: float) -> dict[str, Any] | None:
    """The noise of a mechanism the search does not cover (a plug-in): its scalar noise parameter
    calibrated to ``epsilon`` under the sweep's accountant for it, at the search's sampling rate,
    steps and delta (None: no value in the parameter's range meets the target)."""
    from noise_search.calibration import calibrate
    from noise_search.errors import CalibrationError

    s = search.settings
    try:
        found = calibrate(
            mechanism, epsilon=epsilon, delta=float(s["delta"]), sample_rate=float(s["sample_rate"]),
            steps=int(s["steps"]), accountant=cfg.privacy.accountant_for(mechanism),
        )  # fmt: skip
    except CalibrationError:
        return None
    return found.mechanism.params()


def grid_points(cfg: SweepConfig, search: SearchResult) -> list[tuple[str, float | None, dict[str, Any] | None]]:
    """``(arm, target, noise parameters)`` of every cell of the grid: each private arm (mechanism or
    variant, with its mechanism's searched noise, or for a plug-in its calibrated noise) at each
    target, then the reference."""

    def noise(mechanism: str, eps: float) -> dict[str, Any] | None:
        if search.covers(mechanism):
            return noise_params(mechanism, search.row(eps))
        return calibrated_params(cfg, search, mechanism, eps)

    points: list[tuple[str, float | None, dict[str, Any] | None]] = [
        (arm, eps, noise(cfg.base_mechanism(arm), eps)) for eps in cfg.privacy.epsilons for arm in cfg.arms()
    ]
    if cfg.non_private:
        points.append(("none", None, None))
    return points


def cell_specs(
    cfg: SweepConfig, mech: str, eps: float | None, params: dict[str, Any] | None, seeds: Iterable[int]
) -> list[TrialSpec]:
    """The trials of one cell for ``seeds``: every (learning rate, clip) of its grid per seed."""
    lrs, clips = cfg.learning_rate_grid(mech), cfg.clip_grid(mech)
    return [
        TrialSpec(trial_key(mech, eps, seed, lr, len(lrs), clip, len(clips)), mech, eps, seed, lr, clip, params)
        for seed in seeds
        for lr in lrs
        for clip in clips
    ]


def tuned_specs(cells: list[TunedCell]) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """The runs of a tuned sweep's cells (:mod:`orchestrator.sweep.tuning`) as trial specs."""
    specs, infeasible = [], []
    for cell in cells:
        mech, eps = cell.mechanism, cell.epsilon
        for run in cell.runs:
            prefix = f"eps={eps:g}_{mech}" if eps is not None else mech
            spec = TrialSpec(
                f"{prefix}_run={run.index}", mech, eps, run.seed, run.learning_rate, run.clip, cell.params,
                run.epochs, run.index, run.trainable,
            )  # fmt: skip
            (specs if cell.params is not None or mech == "none" else infeasible).append(spec)
    return specs, infeasible
