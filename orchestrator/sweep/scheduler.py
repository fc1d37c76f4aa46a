"""Early stopping per cell: one ASHA scheduler for each (target epsilon, mechanism) of a sweep.

Ray Tune's ``ASHAScheduler`` ranks every trial it sees against every other. A sweep compares
mechanisms at equal epsilon, and a Laplace trial at epsilon 1 should not be stopped because
Gaussian trials at epsilon 8 score higher, so :class:`CellASHA` keeps one ASHA per cell and hands
each trial's events to its cell's. Trials start in the order Tune gives them (FIFO).
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class CellASHA(FIFOScheduler):
    """ASHA within each (target epsilon, mechanism) cell; ``asha``: ``ASHAScheduler``'s arguments
    (``metric`` and ``mode`` included)."""

    def __init__(self, **asha: Any) -> None:
        super().__init__()
        self._asha = asha
        self._metric, self._mode = asha["metric"], asha["mode"]
        self._cells: dict[tuple[str, float | None], ASHAScheduler] = {}

    def _cell(self, trial: Any) -> ASHAScheduler:
        spec = trial.config["spec"]
        key = (spec["mechanism"], spec["epsilon"])
        if key not in self._cells:
            self._cells[key] = ASHAScheduler(**self._asha)
        return self._cells[key]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode are fixed at construction

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._cell(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._cell(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._cell(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        cell = self._cell(trial)
        if trial.trial_id in cell._trial_info:
            cell.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{k}: {s.debug_string()}" for k, s in self._cells.items()) or "CellASHA: no trial yet"
