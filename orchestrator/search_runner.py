"""Run a noise search on Ray (or in this process) and write its outputs.

:func:`run` answers a :class:`~noise_search.search.SearchProblem`:

* ``workers = 0``: everything in this process (:class:`~noise_search.search.LocalExecutor`);
* otherwise the search's tasks (space blocks, per-target calibrations and optimisations) fan
  out as Ray tasks of one CPU each, at most ``workers`` in flight (default: all CPUs of the
  cluster). Without ``address`` a local Ray instance is started (and stopped afterwards); with
  ``address`` an existing cluster is joined (its nodes must have lmo-dp installed). An already
  initialised Ray (e.g. a test's ``ray.init``) is used as it is.

Both paths call the same functions on the same inputs, and blocks are merged in block order,
so the results are identical. A progress bar over blocks goes to stderr on a terminal; it
stays quiet when stderr is not a TTY or ``CI`` is set.

:func:`write_outputs` writes ``FILE`` (the result JSON, schema in
:mod:`noise_search.search_result`), ``FILE``'s stem + ``.frontier.csv`` (every candidate meeting
the largest target, with its epsilon, objective and parameters, Pareto points flagged, plus the
chosen points of every family) and ``.frontier.png`` (objective vs epsilon per family). Files are
written to temporary names and renamed, so a failure leaves nothing half-written.
:func:`track` logs one MLflow run when tracking is configured.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noise_search.errors import LmoDpError, check_int
from noise_search.evaluator import MAXIMISED
from noise_search.search import LocalExecutor, SearchOutcome, SearchProblem, run_search
from orchestrator.cli import jsonable

LMO_FIELDS = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")


class SearchRunError(LmoDpError):
    """Ray could not be started or reached, or a search task failed."""


# --- Ray executor ---------------------------------------------------------------------------------


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


@dataclass
class RayConnection:
    """A Ray session for one search; ``close`` shuts down only what :func:`connect_ray` started."""

    cpus: int
    started: bool
    address: str | None

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def connect_ray(address: str | None = None, workers: int | None = None) -> RayConnection:
    """Use an initialised Ray, join ``address``, or start a local instance with ``workers`` CPUs."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = False
    try:
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="WARNING")
            else:
                # "local": a new instance even if another cluster runs on this machine
                ray.init(
                    address="local",
                    num_cpus=workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="WARNING",
                )
            started = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
    except Exception as exc:  # Ray raises many types (ConnectionError, RuntimeError, ...)
        raise SearchRunError(
            f"Ray: cannot {'reach ' + address if address else 'start a local instance'}: {exc}"
        ) from exc
    if cpus < 1:
        raise SearchRunError("Ray: the cluster has no CPUs to run search tasks on")
    return RayConnection(cpus, started, address)


# --- progress ---------------------------------------------------------------------------------------


def _show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


class _Progress:
    """A rich progress bar over blocks on a terminal; nothing otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self._bar = None
        if _show_progress():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task(label, total=total)
            self._bar.start()

    def advance(self, _index: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- the run ----------------------------------------------------------------------------------------


def run(problem: SearchProblem, *, workers: int | None = None, address: str | None = None) -> SearchOutcome:
    """Answer ``problem``: in this process when ``workers == 0``, else on Ray (see module docstring)."""
    if workers is not None:
        workers = check_int("workers", workers, ge=0)
    t0 = time.perf_counter()
    progress = _Progress(problem.n_blocks, f"search {problem.space.describe()['space']}: blocks")
    try:
        if workers == 0:
            outcome = run_search(problem, LocalExecutor(), on_block_done=progress.advance)
            outcome.extra["workers"] = 0
        else:
            conn = connect_ray(address, workers)
            try:
                window = workers or conn.cpus
                outcome = run_search(problem, RayExecutor(window), on_block_done=progress.advance)
                outcome.extra["workers"] = window
            finally:
                conn.close()
    finally:
        progress.close()
    outcome.seconds = time.perf_counter() - t0
    return outcome


# --- outputs -----------------------------------------------------------------------------------------


def output_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """``{"json": FILE, "csv": <stem>.frontier.csv, "png": <stem>.frontier.png}`` next to ``FILE``."""
    path = Path(out)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return {
        "json": path,
        "csv": path.with_name(f"{stem}.frontier.csv"),
        "png": path.with_name(f"{stem}.frontier.png"),
    }


def pareto_mask(epsilon: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Points not dominated by another with epsilon <= and score < (score is minimised)."""
    order = np.lexsort((score, epsilon))
    best = np.minimum.accumulate(score[order])
    prev = np.concatenate([[np.inf], best[:-1]])
    mask = np.zeros(epsilon.size, dtype=bool)
    mask[order] = score[order] < prev
    return mask


def _frontier_rows(outcome: SearchOutcome) -> list[dict[str, Any]]:
    problem, grid = outcome.problem, outcome.grid
    rows: list[dict[str, Any]] = []
    if grid.index.size:
        params = problem.space.take(grid.index)
        score = problem.score(grid.objective)
        pareto = pareto_mask(grid.epsilon, score)
        cols = {f: getattr(params, f) for f in LMO_FIELDS}
        for j in range(grid.index.size):
            rows.append(
                {
                    "family": "lmo",
                    "source": "grid",
                    "epsilon_target": "",
                    "index": int(grid.index[j]),
                    "epsilon": float(grid.epsilon[j]),
                    "order": float(grid.order[j]),
                    "objective": float(grid.objective[j]),
                    "pareto": int(pareto[j]),
                    **{f: float(cols[f][j]) for f in LMO_FIELDS},
                }
            )
    for r in outcome.rows:
        t = r.epsilon_target
        if r.lmo is not None:
            params = r.lmo.to_dict()
            rows.append(
                {
                    "family": "lmo",
                    "source": f"best:{r.source}",
                    "epsilon_target": t,
                    "epsilon": r.epsilon,
                    "order": r.order,
                    "objective": r.objective,
                    **{f: params[f] for f in LMO_FIELDS},
                }
            )
        for entry, key in ((r.laplace, "u0"), (r.gaussian, "sigma")):
            if entry.value is not None:
                rows.append(
                    {
                        "family": entry.family,
                        "source": f"calibrated:{entry.accountant if entry.family == 'gaussian' else 'rdp'}",
                        "epsilon_target": t,
                        "epsilon": entry.epsilon,
                        "order": entry.order,
                        "objective": entry.objective,
                        key: entry.value,
                    }
                )
    return rows


def _write_csv(outcome: SearchOutcome, path: Path) -> None:
    header = ["family", "source", "epsilon_target", "index", "epsilon", "order", "objective", "pareto",
              *LMO_FIELDS, "u0", "sigma"]  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in _frontier_rows(outcome):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _laplace_curve(problem: SearchProblem, eps_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon and objective of plain Laplace over a range of ``u0`` (RDP, as the accountant)."""
    from noise_search.mechanisms import Laplace
    from noise_search.rdp import DEFAULT_ORDERS, epsilon_from_rdp, laplace_log_expected_a, subsampled_rdp
    from noise_search.search import mechanism_objective

    u0 = np.geomspace(1e-3, 1e2, 80)
    rdp = subsampled_rdp(laplace_log_expected_a(u0, int(DEFAULT_ORDERS.max())), DEFAULT_ORDERS, problem.sample_rate)
    eps, _ = epsilon_from_rdp(problem.steps * rdp, DEFAULT_ORDERS, problem.delta)
    keep = (eps > 0) & (eps <= eps_max)
    obj = np.array([mechanism_objective(Laplace(u), problem.objective, problem.gamma) for u in u0[keep]])
    return eps[keep], obj


def _write_png(outcome: SearchOutcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem, grid = outcome.problem, outcome.grid
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    eps_max = max(problem.targets) * 1.05
    if grid.index.size:
        step = max(1, grid.index.size // 20000)
        ax.scatter(grid.epsilon[::step], grid.objective[::step], s=4, alpha=0.25, color="tab:blue",
                   label=f"LMO candidates ({grid.index.size:,} meet eps <= {max(problem.targets):g})")  # fmt: skip
        pareto = pareto_mask(grid.epsilon, problem.score(grid.objective))
        order = np.argsort(grid.epsilon[pareto])
        ax.step(grid.epsilon[pareto][order], grid.objective[pareto][order], where="post", color="tab:blue",
                label="LMO frontier (grid)")  # fmt: skip
    lap_e, lap_o = _laplace_curve(problem, eps_max)
    if lap_e.size:
        ax.plot(lap_e, lap_o, color="tab:orange", label="Laplace (RDP)")
    best = [(r.epsilon_target, r.objective) for r in outcome.rows if r.feasible]
    if best:
        ax.plot(*zip(*best, strict=True), "o", color="tab:blue", mec="k", label="best LMO per target")
    for fam, color in (("laplace", "tab:orange"), ("gaussian", "tab:green")):
        pts = [(r.epsilon_target, r.baseline(fam).objective) for r in outcome.rows if r.baseline(fam).objective]
        if pts:
            acc = outcome.rows[0].baseline(fam).accountant
            ax.plot(*zip(*pts, strict=True), "s--", color=color, ms=5, label=f"{fam} calibrated ({acc})")
    ax.set_xlabel("epsilon (sound upper bound)")
    ax.set_ylabel(problem.objective + (f" (gamma = {problem.gamma:g})" if problem.gamma else ""))
    if problem.objective not in MAXIMISED:
        ax.set_yscale("log")
    ax.set_title(
        f"{problem.space.describe()['space']} space, q = {problem.sample_rate:.4g}, T = {problem.steps}, "
        f"delta = {problem.delta:g}",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_outputs(outcome: SearchOutcome, out: str | os.PathLike[str], result: dict[str, Any]) -> dict[str, Path]:
    """Write the JSON, CSV and PNG (temporary names first, then renamed together)."""
    paths = output_paths(out)
    directory = paths["json"].parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp: dict[str, Path] = {}
    try:
        for kind, final in paths.items():
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=directory)
            os.close(fd)
            os.chmod(name, 0o644)  # mkstemp creates 0600; results are meant to be shared
            tmp[kind] = Path(name)
        tmp["json"].write_text(json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
        _write_csv(outcome, tmp["csv"])
        _write_png(outcome, tmp["png"])
        for kind, final in paths.items():
            os.replace(tmp[kind], final)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return paths


# --- MLflow -------------------------------------------------------------------------------------------


def _metric_key(prefix: str, target: float) -> str:
    return f"{prefix}.eps_{target:g}"


def track(outcome: SearchOutcome, result: dict[str, Any], files: dict[str, Path] | None) -> str:
    """One MLflow run: inputs as params, per-target results as metrics, files as artifacts."""
    from orchestrator.tracking import Tracker

    problem = outcome.problem
    settings = dict(result["settings"])
    settings["targets"] = ",".join(f"{t:g}" for t in problem.targets)
    settings["space_details"] = json.dumps(settings.get("space_details") or {})
    metrics: dict[str, float | None] = {"evaluated": float(outcome.evaluated), "seconds": outcome.seconds}
    for r in outcome.rows:
        t = r.epsilon_target
        metrics[_metric_key("lmo_feasible", t)] = float(r.feasible)
        metrics[_metric_key("lmo_objective", t)] = r.objective
        metrics[_metric_key("lmo_epsilon", t)] = r.epsilon
        for entry in (r.laplace, r.gaussian):
            metrics[_metric_key(f"{entry.family}_objective", t)] = entry.objective
            metrics[_metric_key(f"{entry.family}_epsilon", t)] = entry.epsilon
        metrics[_metric_key("laplace_u0", t)] = r.laplace.value
        metrics[_metric_key("gaussian_sigma", t)] = r.gaussian.value
    tracker = Tracker()
    with tracker.run("lmo-dp-search", run_name=f"search-{settings['space']}-{problem.strategy}",
                     tags={"lmodp.kind": "search"}) as run_id:  # fmt: skip
        tracker.log_params(run_id, settings)
        tracker.log_metrics(run_id, metrics)
        if files:
            for path in files.values():
                tracker.log_artifact(run_id, path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                for path in write_outputs(outcome, Path(tmp) / "search.json", result).values():
                    tracker.log_artifact(run_id, path)
    return run_id
