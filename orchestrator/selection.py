"""Picking each (target epsilon, mechanism)'s configuration on the validation split.

A sweep trains every configuration of a mechanism's grid (learning rate x clip) for every
target and seed. For each (target, mechanism) -- and for the non-private reference -- the
configuration with the best *mean validation* score over its seeds is kept, and its *test*
score is reported as mean, minimum and maximum over the same seeds. The test split plays no
part in the choice.

Privacy: each trial's epsilon covers that trial. Choosing the best of several trials by a score
computed on private data is a further release that the per-trial epsilon does not cover; the
report says so next to the selected numbers. A sweep with a ``tuning`` section draws its runs
at random (:mod:`orchestrator.sweep.tuning`); each run is then its own configuration, the best
run by validation score is returned, and :func:`with_tuning` adds the cell's tuned epsilon,
which does cover the choice.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Selected:
    """The chosen configuration of one (target, mechanism) and its scores over seeds."""

    mechanism: str
    epsilon_target: float | None  #: None for the non-private reference
    learning_rate: float | None
    clip: float | None
    metric: str
    val_mean: float | None
    test_mean: float
    test_min: float
    test_max: float
    seeds: int
    configurations: int  #: configurations compared
    epsilon_max: float | None  #: largest epsilon spent by the chosen trials
    epochs: float | None = None
    trainable: str | None = None
    tuning_run: int | None = None  #: tuned sweeps: the selected run's index in its cell
    key: str | None = None  #: tuned sweeps: the selected run's trial key
    mlflow_run_id: str | None = None  #: tuned sweeps: the selected run's MLflow run
    runs: int | None = None  #: tuned sweeps: K, the number of runs drawn
    epsilon_per_run: float | None = None  #: tuned sweeps: the largest epsilon one run can spend
    epsilon_tuned: float | None = None  #: tuned sweeps: epsilon of the selected run, tuning included
    tuning_accountant: str | None = None
    #: early-stopping sweeps: epsilon of the returned trial, the choice and the stopping included
    #: (every trial of the cell composed); ``runs`` is then the cell's trials
    epsilon_selection: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def headline_metric(rows: Iterable[Mapping[str, Any]]) -> tuple[str, bool]:
    """(metric name, higher is better): accuracy when any trial has it, else perplexity."""
    if any(r.get("accuracy") is not None for r in rows):
        return "accuracy", True
    return "perplexity", False


def select(rows: list[Mapping[str, Any]]) -> list[Selected]:
    """One :class:`Selected` per (mechanism, target) from trial rows.

    A row needs ``mechanism``, ``epsilon_target``, ``learning_rate``, ``clip`` and the metric
    and ``val_<metric>`` (rows without the test metric are skipped, e.g. failed trials).
    """
    return [sel for sel, _ in select_groups(rows)]


def select_groups(rows: list[Mapping[str, Any]]) -> list[tuple[Selected, list[Mapping[str, Any]]]]:
    """:func:`select`, each choice with the rows of its chosen configuration (one per seed)."""
    metric, higher = headline_metric(rows)
    sign = 1.0 if higher else -1.0
    configs: dict[tuple[str, float | None], dict[tuple[Any, Any], list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        if r.get(metric) is None or not r.get("mechanism"):
            continue
        config = (r.get("learning_rate"), r.get("clip"), r.get("tuning_run"))
        configs[(r["mechanism"], r.get("epsilon_target"))][config].append(r)
    out: list[tuple[Selected, list[Mapping[str, Any]]]] = []
    for (mech, eps), by_config in configs.items():

        def score(group: list[Mapping[str, Any]]) -> float:
            vals = [g[f"val_{metric}"] for g in group if g.get(f"val_{metric}") is not None]
            return sign * statistics.fmean(vals) if vals else float("-inf")

        (lr, clip, run), group = max(by_config.items(), key=lambda kv: (score(kv[1]), -_key(kv[0])))
        tests = [float(g[metric]) for g in group]
        vals = [float(g[f"val_{metric}"]) for g in group if g.get(f"val_{metric}") is not None]
        spent = [float(g["epsilon"]) for g in group if g.get("epsilon") is not None]
        chosen = Selected(
            mechanism=mech,
            epsilon_target=eps,
            learning_rate=lr,
            clip=clip,
            metric=metric,
            val_mean=statistics.fmean(vals) if vals else None,
            test_mean=statistics.fmean(tests),
            test_min=min(tests),
            test_max=max(tests),
            seeds=len(group),
            configurations=len(by_config),
            epsilon_max=max(spent) if spent else None,
            epochs=group[0].get("epochs"),
            trainable=group[0].get("trainable"),
            tuning_run=run,
            key=group[0].get("key") if run is not None else None,
            mlflow_run_id=group[0].get("mlflow_run_id") if run is not None else None,
        )
        out.append((chosen, group))
    out.sort(key=lambda sg: (sg[0].epsilon_target is None, sg[0].epsilon_target or 0.0, sg[0].mechanism))
    return out


def _key(config: tuple[Any, Any, Any]) -> float:
    """Tie-break between equally scored configurations: the smaller learning rate, then clip,
    then the earlier tuning run."""
    lr, clip, run = config
    return (lr or 0.0) * 1e6 + (clip or 0.0) + (run or 0) * 1e-9


def with_selection_bound(selected: list[Selected], cells: list[Mapping[str, Any]]) -> list[Selected]:
    """``selected`` with each early-stopping cell's trial count, per-trial and selection epsilon."""
    from dataclasses import replace

    by_cell = {(c["mechanism"], c["epsilon"]): c for c in cells}
    out = []
    for s in selected:
        c = by_cell.get((s.mechanism, s.epsilon_target))
        if c is None:
            out.append(s)
            continue
        out.append(
            replace(s, runs=c["runs"], epsilon_per_run=c["epsilon_per_run"], epsilon_selection=c["epsilon_selection"])
        )
    return out


def with_tuning(selected: list[Selected], cells: list[Mapping[str, Any]]) -> list[Selected]:
    """``selected`` with each tuned cell's K, per-run and tuned epsilon and accountant (a cell
    without a finished run has no selected row; the sweep's ``tuning.cells`` still lists it)."""
    from dataclasses import replace

    by_cell = {(c["mechanism"], c["epsilon"]): c for c in cells}
    out = []
    for s in selected:
        c = by_cell.pop((s.mechanism, s.epsilon_target), None)
        if c is None:
            out.append(s)
            continue
        out.append(
            replace(
                s, runs=c["runs"], epsilon_per_run=c.get("epsilon_per_run"), epsilon_tuned=c.get("epsilon_tuned"),
                tuning_accountant=c.get("accountant"),
            )
        )  # fmt: skip
    return out
