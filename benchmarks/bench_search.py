"""Benchmark of the noise search (issue 3, item 8), one run, side by side on one machine.

Work per candidate, identical in (a), (b) and (c): the paper grid's LMO parameter set ->
epsilon and its order (RDP of the unsampled mechanism, q = 1, T = 1, integer orders 2..128,
improved conversion at delta = 1e-10), and the objective ``mean-abs = E[1/u]`` for every
candidate whose epsilon is finite (13% of the grid; the others have ``M(1) = inf``).

(a) reference style: a Python loop over candidates and, inside it, over the 127 orders, computing
    at every order the three MGF factors at ``k - 1`` and at ``-k`` as the public reference code
    does, but in log space and with each factor ``inf`` outside its domain (so an order outside
    the domain gives no bound, instead of the reference's wrong finite value); then
    ``LMO(...).mean_abs()`` per candidate with a finite epsilon. It is timed on a random subset
    of the grid and extrapolated (printed). (a') is the same loop with early exits at the domain
    edge (shown for context: a smarter scalar loop than the reference's, ~10x faster than (a)).
(b) :func:`noise_search.evaluator.evaluate_block` over the whole grid in blocks of 8192, one process.
(c) the same blocks as Ray tasks on 2 workers (warm: worker processes started beforehand;
    Ray's start-up is printed separately).

Then the wall time of a full paper-grid search (:func:`orchestrator.search_runner.run`: grid,
per-target Laplace and Gaussian calibration, accountant re-checks) at the SST-2 setting
q = 2048/67349, T = 197, delta = 1e-10 for targets 0.3, 0.5, 1, 2, 3: in one process, on Ray
started from scratch (what ``lmo-dp search`` costs), and on an already running Ray.

Targets: (b)/(a) >= 50x; SST-2 search <= 15 s.

    .venv/bin/python benchmarks/bench_search.py [--subset 3000] [--workers 2] [--repeats 3] [--json]

Every time is the best of ``--repeats`` runs (the search's accountant caches are cleared before
each repeat); CPU seconds of this process are shown too, as they are less sensitive to other
load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from noise_search.evaluator import evaluate_block
from noise_search.mechanisms import LMO
from noise_search.spaces import PaperSpace

DELTA = 1e-10
ORDERS = range(2, 129)
SST2 = {"sample_rate": 2048 / 67349, "steps": 197, "delta": 1e-10}
SST2_TARGETS = (0.3, 0.5, 1.0, 2.0, 3.0)
BLOCK = 8192


# --- (a) reference style ----------------------------------------------------------------------


def _log_gamma_factor(s: float, gk: float, gt: float) -> float:
    """``log (1 - G_theta s)^(-G_k)``; ``inf`` outside the domain ``G_theta s < 1``."""
    x = gt * s
    return math.inf if x >= 1.0 else -gk * math.log1p(-x)


def _log_exponential_factor(s: float, el: float) -> float:
    """``log E_lambda / (E_lambda - s)``; ``inf`` outside the domain ``s < E_lambda``."""
    x = s / el
    return math.inf if x >= 1.0 else -math.log1p(-x)


def _log_uniform_factor(s: float, ua: float, ub: float) -> float:
    """``log (e^(s U_b) - e^(s U_a)) / (s (U_b - U_a))``, in log space (1 at ``s = 0``)."""
    if s == 0.0:
        return 0.0
    hi, lo = s * ub, s * ua
    top = max(hi, lo)
    return top + math.log(abs(math.exp(hi - top) - math.exp(lo - top))) - math.log(abs(s) * (ub - ua))


def _scalar_log_mgf(
    t: float, a1: float, a3: float, a4: float, gk: float, gt: float, el: float, ua: float, ub: float
) -> float:
    """``log M(t)`` of one candidate as the reference computes it -- the three factors, every time --
    but each factor is ``inf`` outside its domain instead of a wrong finite number."""
    return _log_gamma_factor(a1 * t, gk, gt) + _log_exponential_factor(a3 * t, el) + _log_uniform_factor(a4 * t, ua, ub)


def reference_style(row: tuple[float, ...]) -> tuple[float, float, float]:
    """(epsilon, order, mean-abs) of one candidate, the reference code's way: every order, every factor."""
    a1, a3, a4, gk, gt, el, ua, ub = row
    best, best_order = math.inf, math.nan
    for k in ORDERS:
        lp = _scalar_log_mgf(k - 1.0, *row)  # log M(k - 1)
        ln = _scalar_log_mgf(-float(k), *row)  # log M(-k)
        if math.isinf(lp):
            rdp = math.inf  # outside the domain: no bound at this order (never a wrong finite number)
        else:
            x, y = math.log(k / (2 * k - 1)) + lp, math.log((k - 1) / (2 * k - 1)) + ln
            m = max(x, y)
            rdp = (m + math.log(math.exp(x - m) + math.exp(y - m))) / (k - 1)  # q = 1, T = 1
        eps = rdp + math.log((k - 1) / k) - (math.log(DELTA) + math.log(k)) / (k - 1)
        if eps < best:
            best, best_order = eps, float(k)
    objective = math.nan
    if math.isfinite(best):
        objective = LMO(a1=a1, a3=a3, a4=a4, G_k=gk, G_theta=gt, E_lambda=el, U_a=ua, U_b=ub).mean_abs()
    return max(best, 0.0), best_order, objective


def early_exit_style(row: tuple[float, ...]) -> tuple[float, float, float]:
    """(a'): the same scalar math, but a factor outside its domain ends the MGF at once and
    ``M(-k)`` is skipped when ``M(k - 1)`` is infinite -- a faster loop than the reference's."""
    a1, a3, a4, gk, gt, el, ua, ub = row
    best, best_order = math.inf, math.nan
    for k in ORDERS:
        lp = _log_gamma_factor(a1 * (k - 1.0), gk, gt)
        if not math.isinf(lp):
            lp += _log_exponential_factor(a3 * (k - 1.0), el)
        if math.isinf(lp):
            continue
        lp += _log_uniform_factor(a4 * (k - 1.0), ua, ub)
        ln = _scalar_log_mgf(-float(k), *row)
        x, y = math.log(k / (2 * k - 1)) + lp, math.log((k - 1) / (2 * k - 1)) + ln
        m = max(x, y)
        rdp = (m + math.log(math.exp(x - m) + math.exp(y - m))) / (k - 1)
        eps = rdp + math.log((k - 1) / k) - (math.log(DELTA) + math.log(k)) / (k - 1)
        if eps < best:
            best, best_order = eps, float(k)
    objective = math.nan
    if math.isfinite(best):
        objective = LMO(a1=a1, a3=a3, a4=a4, G_k=gk, G_theta=gt, E_lambda=el, U_a=ua, U_b=ub).mean_abs()
    return max(best, 0.0), best_order, objective


@dataclass
class Timing:
    """Best wall time and CPU time of this process over repeats (a shared machine is noisy)."""

    wall: float = math.inf
    cpu: float = math.inf

    def add(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = min(self.wall, wall), min(self.cpu, cpu)


def _timed(fn, repeats: int, before=None):
    timing, out = Timing(), None
    for _ in range(repeats):
        if before is not None:
            before()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        timing.add(time.perf_counter() - w0, time.process_time() - c0)
    return out, timing


def run_reference(space: PaperSpace, index: np.ndarray, repeats: int, fn=reference_style) -> tuple[np.ndarray, Timing]:
    p = space.take(index)
    rows = list(zip(p.a1, p.a3, p.a4, p.G_k, p.G_theta, p.E_lambda, p.U_a, p.U_b, strict=True))
    rows = [tuple(float(v) for v in r) for r in rows]
    return _timed(lambda: np.array([fn(r) for r in rows]), repeats)


# --- (b), (c) vectorised ------------------------------------------------------------------------


def evaluate_range(space: PaperSpace, start: int, stop: int) -> np.ndarray:
    """(epsilon, order, mean-abs) rows for candidates ``start .. stop - 1`` (one Ray task in (c))."""
    ev = evaluate_block(
        space.block(start, stop), sample_rate=1.0, steps=1, delta=DELTA, objective="mean-abs", max_order=max(ORDERS)
    )
    return np.stack([ev.epsilon[0], ev.order[0], ev.objective], axis=1)


def run_vectorised(space: PaperSpace, repeats: int) -> tuple[np.ndarray, Timing]:
    def once() -> np.ndarray:
        blocks = range(0, space.size, BLOCK)
        return np.concatenate([evaluate_range(space, s, min(s + BLOCK, space.size)) for s in blocks])

    return _timed(once, repeats)


def run_on_ray(space: PaperSpace, workers: int, repeats: int) -> tuple[np.ndarray, Timing]:
    from orchestrator.search_runner import RayExecutor

    ex = RayExecutor(workers)
    ex.gather([ex.submit(evaluate_range, space, 0, 8) for _ in range(workers)])  # warm the workers

    def once() -> np.ndarray:
        blocks = range(0, space.size, BLOCK)
        return np.concatenate(
            ex.gather([ex.submit(evaluate_range, space, s, min(s + BLOCK, space.size)) for s in blocks])
        )

    return _timed(once, repeats)


# --- the SST-2 search -------------------------------------------------------------------------------


def _clear_caches() -> None:
    """Forget accountant curves cached in this process, so a repeat does the full work again."""
    from noise_search.accountants import rdp

    rdp._cached_curve.cache_clear()


def sst2_search(workers: int, repeats: int) -> tuple[dict, Timing]:
    """Best wall time of the full search (workers > 0: a fresh local Ray each time, unless one runs)."""
    from noise_search.search import SearchProblem
    from orchestrator import search_runner

    problem = SearchProblem(targets=SST2_TARGETS, **SST2)
    return _timed(lambda: search_runner.run(problem, workers=workers).to_dict(), repeats, before=_clear_caches)


def _agree(ref: np.ndarray, vec: np.ndarray) -> float:
    """Largest relative difference between (a) and (b) on the subset (epsilon and objective)."""
    worst = 0.0
    for col in (0, 2):
        a, b = ref[:, col], vec[:, col]
        same_inf = np.array_equal(np.isfinite(a), np.isfinite(b))
        if not same_inf:
            return math.inf
        fin = np.isfinite(a)
        if fin.any():
            worst = max(worst, float(np.max(np.abs(a[fin] - b[fin]) / np.maximum(np.abs(a[fin]), 1e-300))))
    if not np.array_equal(ref[:, 1], vec[:, 1], equal_nan=True):
        return math.inf
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=3000, help="candidates timed for (a) (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for (c) (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    reps = max(1, args.repeats)

    space = PaperSpace()
    n = space.size
    subset = np.sort(np.random.default_rng(args.seed).choice(n, min(args.subset, n), replace=False))

    ref, t_a = run_reference(space, subset, reps)
    ref2, t_a2 = run_reference(space, subset, reps, early_exit_style)
    vec, t_b = run_vectorised(space, reps)
    agreement = max(_agree(ref, vec[subset]), _agree(ref2, vec[subset]))
    rate_a2 = subset.size / t_a2.wall
    rate_a, rate_b = subset.size / t_a.wall, n / t_b.wall

    result, s_local = sst2_search(0, reps)
    _, s_cold = sst2_search(args.workers, max(1, reps - 1))  # each run starts and stops its own Ray

    from orchestrator.ray_session import connect

    t0 = time.perf_counter()
    conn = connect(None, num_cpus=args.workers)
    t_ray_start = time.perf_counter() - t0
    try:
        _, s_warm = sst2_search(args.workers, 1)  # first search on this Ray: its workers have empty caches
        ray_out, t_c = run_on_ray(space, args.workers, reps)
    finally:
        conn.close()
    same_c = np.array_equal(ray_out, vec, equal_nan=True)
    rate_c = n / t_c.wall

    numbers = {
        "grid_size": n,
        "repeats": reps,
        "a_subset": int(subset.size),
        "a_seconds_subset": t_a.wall,
        "a_cpu_seconds_subset": t_a.cpu,
        "a_candidates_per_s": rate_a,
        "a_full_grid_s_extrapolated": n / rate_a,
        "b_seconds": t_b.wall,
        "b_cpu_seconds": t_b.cpu,
        "b_candidates_per_s": rate_b,
        "c_seconds": t_c.wall,
        "c_candidates_per_s": rate_c,
        "c_workers": args.workers,
        "ray_start_s": t_ray_start,
        "ratio_b_over_a": rate_b / rate_a,
        "ratio_b_over_a_cpu": (n / t_b.cpu) / (subset.size / t_a.cpu),
        "ratio_c_over_a": rate_c / rate_a,
        "a2_candidates_per_s": rate_a2,
        "ratio_b_over_a2": rate_b / rate_a2,
        "a_vs_b_max_rel_diff": agreement,
        "c_identical_to_b": bool(same_c),
        "sst2_search_s_single_process": s_local.wall,
        "sst2_search_s_ray_cold": s_cold.wall,
        "sst2_search_s_ray_warm": s_warm.wall,
        "sst2_feasible_targets": [r["epsilon_target"] for r in result["results"] if r["feasible"]],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(numbers))
        return 0
    ratio = numbers["ratio_b_over_a"]
    ok_b, ok_s = ratio >= 50, s_cold.wall <= 15
    label_c = f"(c) vectorised on Ray, {args.workers} workers (warm)"
    label_a2 = "(a') same loop, early exits at the domain edge"
    full_a = n / rate_a
    lines = [
        f"noise-search benchmark: paper grid ({n:,} candidates), q = 1, T = 1, delta = 1e-10, orders 2..128,",
        f"epsilon + order for every candidate, mean-abs for those with finite epsilon; {os.cpu_count()} CPUs,",
        f"best of {reps} runs each, load average {numbers['load_average']:.1f} at the end",
        "",
        f"{'path':<46}{'seconds':>9}{'cpu s':>9}{'cand/s':>12}{'vs (a)':>9}",
        f"{'(a) per-candidate Python loop (extrapolated)':<46}{full_a:>9.1f}{full_a * t_a.cpu / t_a.wall:>9.1f}"
        f"{rate_a:>12,.0f}{1.0:>8.1f}x",
        f"{'    timed on ' + format(subset.size, ',') + ' random candidates':<46}{t_a.wall:>9.2f}{t_a.cpu:>9.2f}",
        f"{label_a2:<46}{n / rate_a2:>9.1f}"
        f"{n / rate_a2 * t_a2.cpu / t_a2.wall:>9.1f}{rate_a2:>12,.0f}{rate_a2 / rate_a:>8.1f}x",
        f"{'(b) vectorised evaluator, 1 process':<46}{t_b.wall:>9.2f}{t_b.cpu:>9.2f}{rate_b:>12,.0f}{ratio:>8.1f}x",
        f"{label_c:<46}{t_c.wall:>9.2f}{'':>9}{rate_c:>12,.0f}{rate_c / rate_a:>8.1f}x",
        f"{'    Ray start-up (not in (c))':<46}{t_ray_start:>9.2f}",
        "",
        f"(b)/(a) by CPU time: {numbers['ratio_b_over_a_cpu']:.1f}x; (b)/(a'): {rate_b / rate_a2:.1f}x. "
        f"(a), (a') vs (b) on the subset: max relative difference {agreement:.2e}; (c) == (b): {same_c}",
        "",
        "full paper-grid search, SST-2 (q = 2048/67349, T = 197, delta = 1e-10), targets 0.3, 0.5, 1, 2, 3:",
        f"{'  one process (--workers 0)':<46}{s_local.wall:>9.2f}{s_local.cpu:>9.2f}",
        f"{f'  Ray, {args.workers} workers, started from scratch':<46}{s_cold.wall:>9.2f}",
        f"{f'  Ray, {args.workers} workers, already running':<46}{s_warm.wall:>9.2f}",
        f"  feasible LMO targets: {numbers['sst2_feasible_targets']}",
        "",
        f"targets: (b)/(a) >= 50x: {'met' if ok_b else 'NOT met'} ({ratio:.0f}x); "
        f"SST-2 search <= 15 s (Ray from scratch): {'met' if ok_s else 'NOT met'} ({s_cold.wall:.1f} s)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
