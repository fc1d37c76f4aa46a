"""Sweep throughput: the same 4 short trials with 1 and with 2 concurrent trials.

    python benchmarks/bench_sweep.py [--examples 200] [--keep]
    python benchmarks/bench_sweep.py --grid 200      # a grid of 200 head-only trials instead
    python benchmarks/bench_sweep.py --grid 1000 --cluster [--interrupt-at 0.5]

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

``--cluster``: the same grid (with two clipping bounds instead of two of the learning rates) on a
loopback two-node Ray cluster (head 127.0.0.2 + worker 127.0.0.3, one CPU each, token
authentication), tracked by a real ``mlflow server`` (SQLite backend, one worker) whose artifacts
live in a local S3 server (SeaweedFS); the driver is ``lmo-dp sweep --address`` in its own
process. Adds the MLflow server's CPU time per logged trial run (server process and its workers).
``--interrupt-at F`` stops the driver with Ctrl-C once a fraction F of the trials has finished,
then runs ``lmo-dp sweep --resume`` and counts the trials trained twice (the resumed sweep's
trials/min then covers only its own part). Needs the test helpers in ``tests/orchestrator``
(``servers.py``) and the ``weed`` binary that ``make setup`` installs.
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


def cluster_grid(storage: Path, trials: int) -> dict:
    """About ``trials`` head-only trials: 4 epsilons x 3 mechanisms x 2 learning rates x 2 clips x seeds."""
    seeds = max(1, round(trials / 48))
    grid = {"learning_rate": [0.1, 0.2], "clip": [0.3, 1.0]}
    return {
        "experiment": "bench-cluster",
        "model": {"task": "classification", "trainable": "head", "max_length": 48},
        "data": {"name": "movie-reviews", "max_train_examples": 500, "max_eval_examples": 100},
        "privacy": {"epsilons": [1.0, 2.0, 4.0, 8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace", "lmo"]},
        "search": {"space": "wide"},
        "training": {"epochs": 2},
        "grid": {m: grid for m in ("gaussian", "laplace", "lmo")},
        "seeds": list(range(seeds)),
        "resources": {"cpus_per_trial": 1},
        "max_concurrent_trials": 2,
        "max_retries": 0,
        "storage_path": str(storage),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live children."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _finished_trials(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], "tags.`lmodp.kind` = 'trial' and attributes.status = 'FINISHED'", max_results=50000
    )


def run_cluster(trials: int, keep: bool, interrupt_at: float | None) -> None:
    import json
    import resource
    import signal
    import subprocess
    import sys
    import time

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "orchestrator"))
    import servers

    from trainers.cache import cache_dir

    work = Path(tempfile.mkdtemp(prefix="lmodp-bench-cluster-"))
    stack = []
    try:
        s3 = servers.start_s3_server(work / "s3")
        stack.append(s3)
        mlflow = servers.start_mlflow_server(work / "mlflow", s3)
        stack.append(mlflow)
        node_env = {"LMODP_CACHE_DIR": str(cache_dir()), "CI": "1"}
        cluster = servers.start_ray_cluster(workers=1, num_cpus=1, extra_env=node_env)
        stack.append(cluster)
        cfg = cluster_grid(work / "tune", trials)
        cfg_path = work / "sweep.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = cluster.client_env(MLFLOW_TRACKING_URI=mlflow.uri, **node_env)
        argv = [sys.executable, "-m", "orchestrator.cli", "sweep", "--config", str(cfg_path),
                "--address", cluster.address, "--json"]  # fmt: skip
        cpu0 = _cpu_seconds(mlflow.proc.pid)
        started = time.perf_counter()
        interrupted_after, first_exit, resumed_at = None, None, None
        if interrupt_at is not None:
            first = subprocess.Popen(argv, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            goal = interrupt_at * trials
            while len(_finished_trials(mlflow.uri, cfg["experiment"])) < goal and first.poll() is None:
                time.sleep(2)
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=600)
            interrupted_after = len(_finished_trials(mlflow.uri, cfg["experiment"]))
            first_exit = (first.returncode, err.strip().splitlines()[-1] if err.strip() else "")
            argv.append("--resume")
        resumed_at = time.time()
        done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=6 * 3600)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"sweep failed (exit {done.returncode}): {done.stderr[-3000:]}")
        res = json.loads(done.stdout)
        server_cpu = _cpu_seconds(mlflow.proc.pid) - cpu0
        runs = _finished_trials(mlflow.uri, cfg["experiment"])
        keys = [r.data.tags["lmodp.trial_key"] for r in runs]
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        for item in reversed(stack):
            item.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    n = len(res["trials"])
    done_trials = [t for t in res["trials"] if t["status"] == "finished"]
    # trials a resumed sweep found finished report no train time: the trial phase covers the others
    trained = [t["train_seconds"] for t in done_trials if t.get("train_seconds") is not None]
    nodes = {r.data.tags.get("lmodp.node_ip") for r in runs}
    train = statistics.fmean(trained)
    overhead = res["trials_seconds"] * 2 / len(trained) - train
    outside = res["seconds"] - res["trials_seconds"]
    print(f"sweep cluster benchmark: {n} head-only trials ({len(done_trials)} finished), 2 concurrent, "
          f"loopback Ray nodes {', '.join(sorted(nodes))}, MLflow server + S3, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'trials':>6} {'wall s':>7} {'trial phase s':>14} {'trials/min':>10} {'train s/trial':>14} "
          f"{'overhead s/trial':>17} {'outside trials s':>17} {'driver peak MiB':>16} "
          f"{'server CPU s/run':>17}")  # fmt: skip
    rate = len(trained) / res["trials_seconds"] * 60
    print(f"{n:>6} {wall:>7.0f} {res['trials_seconds']:>14.1f} {rate:>10.1f} {train:>14.2f} "
          f"{overhead:>17.2f} {outside:>17.1f} {peak_mib:>16.0f} {server_cpu / max(1, len(runs)):>17.3f}")  # fmt: skip
    print(f"finished trial runs in MLflow: {len(runs)}, distinct trial keys: {len(set(keys))}, "
          f"trained twice: {len(keys) - len(set(keys))}")  # fmt: skip
    if interrupted_after is not None and first_exit is not None and resumed_at is not None:
        after = [r for r in runs if r.info.start_time / 1000 >= resumed_at]
        print(f"Ctrl-C after {interrupted_after} finished trials: exit {first_exit[0]} ({first_exit[1]}); "
              f"lmo-dp sweep --resume: {res['seconds']:.0f} s, trained the other {len(after)} trials and returned "
              f"all {n} (the table's rates mix both drivers' trials)")  # fmt: skip


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
    parser.add_argument("--cluster", action="store_true", help="with --grid: loopback cluster, MLflow server, S3")
    parser.add_argument("--interrupt-at", type=float, metavar="F", help="with --cluster: Ctrl-C at F, then --resume")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.cluster:
        run_cluster(args.grid or 1000, args.keep, args.interrupt_at)
        return
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
