"""Seeds until decided: more seeds for the cells whose compared pairs are still undecided.

With ``statistics.seeds: {min, max, growth}`` every cell of the grid first trains ``min`` seeds
(the first *look*). At each look the sweep compares, on the **validation** scores of the seeds
it has, every pair of cells at each target -- the same paired t-tests, Holm correction and
Bonferroni split over the planned looks as the report's test-score verdicts
(:mod:`orchestrator.statistics`). A compared pair (``statistics.compare``, default every pair of
private arms) that is decided is settled for good; a cell stops when all its compared pairs are
settled (``decided``) or it reaches ``max`` seeds (``cap``). The others get the next look's
seeds (:meth:`~orchestrator.sweep_config.StatisticsSeeds.looks`: ``min 3, max 12`` gives 3, 5, 8,
12), each seed the cell's whole grid, as ordinary trials (accounted, tracked under the parent run
with their key, resumable).

:func:`replay` is a pure function of the config, the search and the trials recorded so far: it
walks the looks from the first, and returns the trials the first incomplete look still needs. A
resumed sweep calls it on the trials it finds finished (in Tune's state or in MLflow by trial
key) and so takes the same decisions and continues where the interrupted one stopped; a trial
that finished is never trained again. Why the tests and intervals stay valid although the sweep
looks repeatedly is in docs/statistics.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from noise_search.search_result import SearchResult
from orchestrator import statistics
from orchestrator.sweep.outcomes import selection_rows
from orchestrator.sweep.specs import TrialSpec, cell_specs, grid_points
from orchestrator.sweep_config import SweepConfig

#: why a cell has the seeds it has
STOP_REASONS = ("decided", "cap", "not_compared", "fixed", "infeasible")


def plan(cfg: SweepConfig) -> statistics.Plan:
    """What the page's comparisons are corrected for: the planned looks, the arms that could be
    given more seeds, and the orientation of the configured pairs."""
    st = cfg.statistics
    pairs = cfg.compared_pairs()
    if st is None or st.seeds is None:
        return statistics.Plan(pairs=pairs)
    adaptive = frozenset(name for pair in pairs for name in pair)
    return statistics.Plan(looks=len(st.seeds.looks()), adaptive=adaptive, pairs=pairs)


@dataclass
class CellState:
    """One cell's seeds so far and why it stopped (``running`` while it may get more)."""

    mechanism: str
    epsilon: float | None
    seeds: int
    stopped: str = "running"


@dataclass
class Progress:
    """Where a sequential sweep stands after :func:`replay`."""

    pending: list[TrialSpec]  #: the trials the first incomplete look needs (empty: done)
    look: int  #: that look's index (0 = the first), or the number of looks when done
    cells: dict[tuple[str, float | None], CellState]
    history: list[dict[str, Any]] = field(default_factory=list)  #: every look evaluated so far

    def summary(self, cfg: SweepConfig) -> dict[str, Any]:
        """The parent run's ``statistics.json`` ``seeds`` object: the looks, each cell's seeds and
        reason, and what each look decided."""
        st = cfg.statistics
        assert st is not None and st.seeds is not None
        return {
            "min": st.seeds.min,
            "max": st.seeds.max,
            "growth": st.seeds.growth,
            "looks": list(st.seeds.looks()),
            "compare": [list(p) for p in cfg.compared_pairs()],
            "decided_on": "validation",
            "cells": [asdict(c) for c in self.cells.values()],
            "history": self.history,
        }


def replay(cfg: SweepConfig, search: SearchResult, trials: list[dict[str, Any]]) -> Progress:
    """The sequential decisions that ``trials`` (sweep trial entries, any status) imply, look by
    look, and the trials the first look that is not complete still needs."""
    st = cfg.statistics
    if st is None or st.seeds is None:
        raise ValueError("replay needs statistics.seeds")
    looks, sequence, corrections = st.seeds.looks(), cfg.seed_sequence(), plan(cfg)
    points = grid_points(cfg, search)
    cells: dict[tuple[str, float | None], CellState] = {}
    for arm, eps, params in points:
        if arm != "none" and params is None:
            cells[(arm, eps)] = CellState(arm, eps, 0, "infeasible")
        elif arm == "none" or arm not in corrections.adaptive:
            cells[(arm, eps)] = CellState(arm, eps, looks[0], "not_compared")
        else:
            cells[(arm, eps)] = CellState(arm, eps, looks[0])
    pairs = _cell_pairs(cfg, cells)
    done = {t["key"] for t in trials}
    rows = selection_rows(trials)
    settled: set[tuple[float | None, frozenset[str]]] = set()
    history: list[dict[str, Any]] = []
    for index, size in enumerate(looks):
        running = [c for c in cells.values() if c.stopped == "running"]
        for c in running:
            c.seeds = size
        needed = [
            spec
            for arm, eps, params in points
            if cells[(arm, eps)].stopped != "infeasible"
            for spec in cell_specs(cfg, arm, eps, params, sequence[: cells[(arm, eps)].seeds])
        ]
        pending = [s for s in needed if s.key not in done]
        if pending:
            return Progress(pending, index, cells, history)
        if not running:
            break
        decided = _decided_on_validation(rows, cells, sequence, corrections)
        newly = sorted(
            (
                (eps, tuple(sorted(pair)))
                for eps, pair in pairs
                if (eps, pair) in decided and (eps, pair) not in settled
            ),
            key=lambda x: (x[0] or 0.0, x[1]),
        )
        settled.update((eps, frozenset(pair)) for eps, pair in newly)
        for c in running:
            mine = [(eps, pair) for eps, pair in pairs if eps == c.epsilon and c.mechanism in pair]
            if not mine:  # its compared partners cannot run at this target (no noise found)
                c.stopped = "not_compared"
            elif all(p in settled for p in mine):
                c.stopped = "decided"
            elif index == len(looks) - 1:
                c.stopped = "cap"
        history.append(
            {
                "look": index,
                "seeds": size,
                "decided": [[eps, *pair] for eps, pair in newly],
                "cells_going_on": sum(c.stopped == "running" for c in cells.values()),
            }
        )
    return Progress([], len(looks), cells, history)


def _cell_pairs(
    cfg: SweepConfig, cells: dict[tuple[str, float | None], CellState]
) -> list[tuple[float | None, frozenset[str]]]:
    """Every compared pair at every target where both cells can run."""
    out = []
    for eps in cfg.privacy.epsilons:
        for a, b in cfg.compared_pairs():
            if cells[(a, eps)].stopped != "infeasible" and cells[(b, eps)].stopped != "infeasible":
                out.append((eps, frozenset((a, b))))
    return out


def _decided_on_validation(
    rows: list[dict[str, Any]],
    cells: dict[tuple[str, float | None], CellState],
    sequence: tuple[int, ...],
    corrections: statistics.Plan,
) -> set[tuple[float | None, frozenset[str]]]:
    """The pairs the page's comparisons decide on the validation scores of each cell's seeds so far."""
    look_rows = [
        r
        for r in rows
        if (r["mechanism"], r["epsilon_target"]) in cells
        and r["seed"] in sequence[: cells[(r["mechanism"], r["epsilon_target"])].seeds]
    ]
    found, _, higher = statistics.cells_from_rows(look_rows)
    comparisons = statistics.compare(found, corrections, score="val", higher=higher)
    return {(c.epsilon_target, frozenset(c.mechanisms)) for c in comparisons if c.verdict != "within_noise"}


#: ``fit(specs, look) -> trial entries``: runs (or finds finished) the trials of one look
FitFn = Callable[[list[TrialSpec], int], list[dict[str, Any]]]


def run_looks(
    cfg: SweepConfig, search: SearchResult, trials: list[dict[str, Any]], fit: FitFn, *, verbose: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add seeds look by look until every cell stopped: ``(all trial entries, the seeds summary)``.
    ``trials``: the first look's entries (the grid's ``min`` seeds)."""
    trials = list(trials)
    while True:
        progress = replay(cfg, search, trials)
        if not progress.pending:
            return trials, progress.summary(cfg)
        if verbose:
            going = sum(c.stopped == "running" for c in progress.cells.values())
            print(
                f"seeds until decided: look {progress.look + 1} of {len(cfg.statistics.seeds.looks())}: "  # type: ignore[union-attr]
                f"{going} undecided cell(s) get {len(progress.pending)} more trial(s)",
                file=sys.stderr,
                flush=True,
            )
        added = fit(progress.pending, progress.look)
        missing = {s.key for s in progress.pending} - {t["key"] for t in added}
        if missing:
            raise RuntimeError(f"seeds until decided: look {progress.look} did not run {sorted(missing)[:3]}")
        trials += added


def statistics_record(cfg: SweepConfig, seeds: dict[str, Any] | None) -> dict[str, Any]:
    """The parent run's ``statistics.json``: what the report corrects its comparisons for
    (:meth:`~orchestrator.statistics.Plan.to_dict`) and, with seeds until decided, each cell's
    seeds and why it stopped (:meth:`Progress.summary`)."""
    return {"plan": plan(cfg).to_dict(), "seeds": seeds}
