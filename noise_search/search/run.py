"""The whole search: :func:`run_search` answers a :class:`~noise_search.search.problem.SearchProblem`.

Three stages (four under a tighter accountant), each a list of independent tasks given to an
executor (in-process, or Ray tasks in the orchestrator; both run the same functions on the same
inputs, so the results are identical): the grid in blocks (:mod:`~noise_search.search.grid`), the baselines per target
(:mod:`~noise_search.search.baselines`) and, for strategy ``optimize``, differential evolution
per target (:mod:`~noise_search.search.optimize`). Every reported LMO is re-checked by the RDP
accountant and only kept if it meets its target; an optimised point is only kept if it is at
least as good as the grid's. With ``lmo_accountant`` ``rdp-hidden-u`` each pick is then rescaled
to spend its target under that accountant (the RDP pick stays in the row as ``lmo_rdp``). Under
an accountant tighter than RDP that supports Laplace, each pick also gets its outlook
(:mod:`~noise_search.search.outlook`): could any accountant make it win?
A target no candidate meets is reported as infeasible, not raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from noise_search.accountants import get_accountant
from noise_search.mechanisms import LMO, Laplace
from noise_search.search.baselines import calibrate_baselines
from noise_search.search.executors import Executor, LocalExecutor
from noise_search.search.grid import (
    GridOutcome,
    LmoPick,
    accept_lmo,
    grid_pick,
    grid_picks,
    reduce_blocks,
    search_block,
    try_rescale_hidden_u,
)
from noise_search.search.optimize import optimize_target, optimizer_starts
from noise_search.search.outlook import tight_outlook
from noise_search.search.problem import SearchProblem
from noise_search.search.rows import at_least_as_good, build_row
from noise_search.search_result import SearchResult, SearchRow


def _rerank_pool(problem: SearchProblem, grid: GridOutcome, target: float, pick: LmoPick) -> list[LmoPick]:
    """The target's pick and the next best RDP candidates of the grid, ``problem.rerank`` in all."""
    others = [c for c in grid_picks(problem, grid, target, problem.rerank) if c.mechanism != pick.mechanism]
    return [pick, *others][: problem.rerank]


def _best_rescaled(problem: SearchProblem, results: list[tuple[LmoPick, str | None]]) -> tuple[LmoPick, str | None]:
    """The best rescaled candidate (first on ties); the pick itself, with why, if none could be rescaled."""
    done = [p for p, error in results if error is None]
    if not done:
        return results[0][0], results[0][1]
    best = done[0]
    for cand in done[1:]:
        if not at_least_as_good(problem, best.objective, cand.objective):
            best = cand
    return best, None


@dataclass
class SearchOutcome:
    """A finished search: its rows and the grid data behind the frontier outputs."""

    problem: SearchProblem
    rows: list[SearchRow]
    evaluated: int
    seconds: float
    grid: GridOutcome
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result file / ``--json`` object (schema: :mod:`noise_search.search_result`)."""
        return {
            "settings": self.problem.settings(),
            "results": [r.to_dict() for r in self.rows],
            "evaluated": self.evaluated,
            "seconds": self.seconds,
            **self.extra,
        }

    def result(self) -> SearchResult:
        return SearchResult(self.problem.settings(), tuple(self.rows), "search")


def run_search(
    problem: SearchProblem,
    executor: Executor | None = None,
    *,
    on_block_done: Callable[[int], None] | None = None,
) -> SearchOutcome:
    """Answer ``problem``; ``executor`` decides where tasks run (default: this process)."""
    ex = executor or LocalExecutor()
    t0 = time.perf_counter()
    base_handles = [ex.submit(calibrate_baselines, problem, t) for t in problem.targets]
    block_handles = [ex.submit(search_block, problem, b) for b in range(problem.n_blocks)]
    grid = reduce_blocks(ex.gather(block_handles, on_done=on_block_done))
    picks = [grid_pick(problem, grid, t) for t in problem.targets]
    evaluated = grid.evaluated
    if problem.strategy == "optimize":
        opt_handles = [
            ex.submit(optimize_target, problem, t, optimizer_starts(problem, grid, t), i)
            for i, t in enumerate(problem.targets)
        ]
        for i, (t, opt) in enumerate(zip(problem.targets, ex.gather(opt_handles), strict=True)):
            evaluated += opt.evaluations
            if opt.params is None:
                continue
            cand = accept_lmo(problem, LMO.from_dict(opt.params), t, "optimize", None)
            current = picks[i]
            if cand is not None and (current is None or at_least_as_good(problem, cand.objective, current.objective)):
                picks[i] = cand
    rdp_picks: list = [None] * len(picks)
    rescale_errors: list = [None] * len(picks)
    if problem.lmo_accountant == "rdp-hidden-u":
        found = [i for i, pick in enumerate(picks) if pick is not None]
        pools = {i: _rerank_pool(problem, grid, problem.targets[i], picks[i]) for i in found}
        jobs = [(i, c) for i in found for c in pools[i]]
        handles = [ex.submit(try_rescale_hidden_u, problem, c, problem.targets[i]) for i, c in jobs]
        results: dict[int, list] = {i: [] for i in found}
        for (i, _), out in zip(jobs, ex.gather(handles), strict=True):
            results[i].append(out)
        for i in found:
            rdp_picks[i] = picks[i]
            picks[i], rescale_errors[i] = _best_rescaled(problem, results[i])
    outlooks: list = [None] * len(picks)
    if problem.accountant != "rdp" and get_accountant(problem.accountant).supports_class(Laplace):
        found = [i for i, pick in enumerate(picks) if pick is not None]
        handles = [ex.submit(tight_outlook, problem, picks[i].mechanism, picks[i].objective) for i in found]
        for i, outlook in zip(found, ex.gather(handles), strict=True):
            outlooks[i] = outlook
    baselines = ex.gather(base_handles)
    rows = [
        build_row(problem, t, pick, base, grid, outlook, rdp_pick=rdp, rescale_error=err)
        for t, pick, base, outlook, rdp, err in zip(
            problem.targets, picks, baselines, outlooks, rdp_picks, rescale_errors, strict=True
        )
    ]
    return SearchOutcome(problem, rows, evaluated, time.perf_counter() - t0, grid)
