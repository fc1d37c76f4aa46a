"""What a grid sweep with early stopping returns, and the epsilon that covers it (docs/privacy.md section 8).

ASHA decides whether a trial goes on by comparing its validation score with the other trials'
scores at the same rung, so the trials of a (target epsilon, mechanism) *cell* are not
independent runs and Papernot and Steinke's tuning bound (section 7) does not apply. What does
hold: every trial draws its own noise calibrated for its full plan, and a trial stopped at a
rung releases a prefix of what it would have released running to the end. The returned best
trial of a cell, the stopping decisions included, is therefore post-processing of all the
cell's trials run to completion, and its epsilon is at most that of their composition.
:func:`selection_cells` computes that bound (RDP accountant) for every private cell; it covers
each trial of the grid that can run, stopped or not.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from orchestrator.sweep.specs import TrialSpec
from orchestrator.sweep_config import SweepConfig


def selection_cells(cfg: SweepConfig, specs: list[TrialSpec], sample_rate: float, steps: int) -> list[dict[str, Any]]:
    """Per private (target, mechanism) cell: ``runs`` (its trials), ``epsilon_per_run`` (one
    trial's full plan) and ``epsilon_selection`` (all ``runs`` composed), at ``privacy.delta``;
    ``(sample_rate, steps)``: the private trials' plan."""
    from noise_search.accountants import RdpAccountant
    from noise_search.events import dp_sgd_event
    from noise_search.mechanisms import mechanism_from_dict

    delta = cfg.privacy.delta
    runs = Counter((s.mechanism, s.epsilon) for s in specs if s.mechanism != "none" and s.params is not None)
    params = {(s.mechanism, s.epsilon): s.params for s in specs if s.mechanism != "none" and s.params is not None}
    cells = []
    for (mechanism, epsilon), m in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mech = mechanism_from_dict({"mechanism": mechanism, **params[(mechanism, epsilon)]})
        event = dp_sgd_event(mech, sample_rate, steps)
        cells.append(
            {
                "mechanism": mechanism,
                "epsilon": epsilon,
                "runs": m,
                "epsilon_per_run": RdpAccountant().compose(event).get_epsilon(delta),
                "epsilon_selection": RdpAccountant().compose(event, m).get_epsilon(delta),
                "accountant": "rdp",
            }
        )
    return cells


def early_stopping_summary(
    cfg: SweepConfig, cells: list[dict[str, Any]], trials: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``early_stopping`` object of the sweep's JSON and of the parent run's ``early_stopping.json``."""
    es = cfg.early_stopping
    assert es is not None
    stopped = Counter((t["mechanism"], t["epsilon_target"]) for t in trials if t["status"] == "stopped")
    return {
        "scheduler": "asha",
        "grace_epochs": es.grace_epochs,
        "reduction_factor": es.reduction_factor,
        "metric": "validation score",
        "stopped": sum(stopped.values()),
        "cells": [c | {"stopped": stopped.get((c["mechanism"], c["epsilon"]), 0)} for c in cells],
    }
