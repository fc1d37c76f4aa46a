"""Run a noise search on Ray (or in this process).

:func:`run` answers a :class:`~noise_search.search.SearchProblem`:

* ``workers = 0``: everything in this process (:class:`~noise_search.search.LocalExecutor`);
* otherwise the search's tasks (space blocks, per-target calibrations and optimisations) fan
  out as Ray tasks of one CPU each (:class:`RayExecutor`), at most ``workers`` in flight
  (default: all CPUs of the cluster), on the session :mod:`orchestrator.ray_session` opens.

Both paths call the same functions on the same inputs, and blocks are merged in block order,
so the results are identical. A progress bar over blocks goes to stderr on a terminal
(:mod:`trainers.progress`). Writing the outputs is :mod:`orchestrator.search_outputs`, the
MLflow run :mod:`orchestrator.search_tracking`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from noise_search.errors import check_int
from noise_search.search import LocalExecutor, SearchOutcome, SearchProblem, run_search
from orchestrator.ray_session import RayUnavailableError, check_address, connect
from trainers.progress import progress_bar


@dataclass(eq=False)
class _RayHandle:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    ref: Any = None
    done: bool = False
    value: Any = None


@dataclass
class RayExecutor:
    """Ray tasks of one CPU each, started in submission order, at most ``window`` in flight."""

    window: int
    _queue: deque = field(default_factory=deque)
    _running: dict = field(default_factory=dict)
    _remote: dict = field(default_factory=dict)

    def submit(self, fn: Callable[..., Any], *args: Any) -> _RayHandle:
        handle = _RayHandle(fn, args)
        self._queue.append(handle)
        self._pump()
        return handle

    def _pump(self) -> None:
        import ray

        while self._queue and len(self._running) < self.window:
            h = self._queue.popleft()
            if h.fn not in self._remote:
                self._remote[h.fn] = ray.remote(num_cpus=1)(h.fn)
            h.ref = self._remote[h.fn].remote(*h.args)
            self._running[h.ref] = h

    def gather(self, handles: Sequence[_RayHandle], on_done: Callable[[int], None] | None = None) -> list[Any]:
        import ray

        position = {id(h): i for i, h in enumerate(handles)}
        pending = {id(h) for h in handles if not h.done}
        for h in handles:
            if h.done and on_done is not None:
                on_done(position[id(h)])
        while pending:
            self._pump()
            ready, _ = ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                h = self._running.pop(ref)
                h.value, h.done = ray.get(ref), True
                if id(h) in pending:
                    pending.discard(id(h))
                    if on_done is not None:
                        on_done(position[id(h)])
        return [h.value for h in handles]


def run(problem: SearchProblem, *, workers: int | None = None, address: str | None = None) -> SearchOutcome:
    """Answer ``problem``: in this process when ``workers == 0``, else on Ray (see module docstring)."""
    if workers is not None:
        workers = check_int("workers", workers, ge=0)
    if address and workers != 0:
        check_address(address)
    t0 = time.perf_counter()
    bar = progress_bar(problem.n_blocks, f"search {problem.space.describe()['space']}: blocks")
    try:
        if workers == 0:
            outcome = run_search(problem, LocalExecutor(), on_block_done=lambda _i: bar.update(1))
            outcome.extra["workers"] = 0
        else:
            session = connect(address, num_cpus=workers)
            try:
                if session.cpus < 1:
                    raise RayUnavailableError("Ray: the cluster has no CPUs to run search tasks on")
                window = workers or session.cpus
                outcome = run_search(problem, RayExecutor(window), on_block_done=lambda _i: bar.update(1))
                outcome.extra["workers"] = window
            finally:
                session.close()
    finally:
        bar.close()
    outcome.seconds = time.perf_counter() - t0
    return outcome
