"""Wall and CPU time of the commands whose duration README.md and the example configs state.

    python benchmarks/bench_docs_times.py                 # every command below, one after another
    python benchmarks/bench_docs_times.py --only smoke,tiny,tiny-resume

Each command runs as a user runs it from the README: ``lmo-dp ...`` in a process of its own, in a
fresh empty folder (its own ``./mlruns-lmodp`` and ``lmodp-out/``; ``tiny-resume`` reuses the
folder of ``tiny``), with the project's data and feature cache (``data/cache``), no
``MLFLOW_TRACKING_URI``, no ``RAY_ADDRESS`` and no terminal. Printed per command:

* wall time;
* CPU time: user + system seconds of the command and of every process it started (the local Ray
  instance and its workers included). Two measurements, each a lower bound, the larger printed:
  ``wait4``'s usage of the command and every descendant it waited for (Ray's workers are not all
  waited for), and the sum over the process tree sampled every second (it misses at most the last
  second of each process);
* the 1-minute load average of the machine while it ran (mean of samples every 5 s; it includes
  the command's own load, about CPU / wall, so the rest is what other work on the machine added);
* whether the feature cache was built during the run (new files under ``data/cache/features``),
  and the exit code.

On a shared machine the wall time grows with the other load while the CPU time barely moves: quote
both, and the load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LMO_DP = Path(sys.executable).parent / "lmo-dp"

#: name -> the lmo-dp arguments (config paths relative to the repository root), in run order
COMMANDS: dict[str, tuple[str, ...]] = {
    "smoke": ("sweep", "--config", "examples/sweep-smoke.yaml"),
    "tiny": ("sweep", "--config", "examples/sweep-tiny.yaml"),
    "tiny-resume": ("sweep", "--config", "examples/sweep-tiny.yaml", "--resume"),
    "laplace-vs-lmo": ("sweep", "--config", "examples/sweep-laplace-vs-lmo.yaml"),
    "demo": ("demo",),
    "trial-mr": ("train", "--config", "examples/trial-minilm-mr.yaml"),
    "trial-smollm2": ("train", "--config", "examples/trial-smollm2-lm.yaml"),
    "tuning": ("sweep", "--config", "examples/sweep-tuning.yaml"),
    "trial-top": ("train", "--config", "examples/trial-minilm-top.yaml"),
}
#: commands that run in the folder of an earlier one
SAME_FOLDER = {"tiny-resume": "tiny"}


@dataclass
class Timing:
    name: str
    argv: tuple[str, ...]
    wall_s: float
    cpu_s: float
    tree_cpu_s: float
    load: float
    cache_built: bool
    returncode: int

    @property
    def cpu(self) -> float:
        """The larger of the two lower bounds on the CPU seconds."""
        return max(self.cpu_s, self.tree_cpu_s)


def feature_files() -> set[str]:
    base = ROOT / "data" / "cache" / "features"
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()} if base.is_dir() else set()


class TreeSampler(threading.Thread):
    """Every ``every_s`` seconds: the CPU seconds of each process in ``pid``'s tree (last seen
    value per process) and the 1-minute load average (every fifth sample)."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.cpu: dict[tuple[int, float], float] = {}
        self.loads: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        tick = 0
        while not self.done.is_set():
            try:
                root = psutil.Process(self.pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        self.cpu[(p.pid, p.create_time())] = t.user + t.system
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            if tick % 5 == 0:
                self.loads.append(os.getloadavg()[0])
            tick += 1
            self.done.wait(self.every_s)


def run_one(name: str, folder: Path) -> Timing:
    argv = COMMANDS[name]
    args = [str(ROOT / a) if a.startswith("examples/") else a for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "LMODP_", "PYTEST_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", CI="1")
    before = feature_files()
    log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
    started = time.perf_counter()
    proc = subprocess.Popen([str(LMO_DP), *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    log.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timing(
        name=name,
        argv=argv,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        tree_cpu_s=sum(sampler.cpu.values()),
        load=sum(sampler.loads) / max(len(sampler.loads), 1),
        cache_built=bool(feature_files() - before),
        returncode=proc.returncode,
    )


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def table(rows: list[Timing]) -> str:
    out = [
        "| command | wall | CPU (user + sys) | CPU / wall | load (1 min) | feature cache | exit |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for t in rows:
        out.append(
            f"| `lmo-dp {' '.join(t.argv)}` | {minutes(t.wall_s)} | {minutes(t.cpu)} "
            f"| {t.cpu / t.wall_s:.2f} | {t.load:.2f} | {'built in the run' if t.cache_built else 'cached'} "
            f"| {t.returncode} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(COMMANDS)}")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (their logs)")
    args = ap.parse_args(argv)
    names = list(COMMANDS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMMANDS]
    if unknown:
        ap.error(f"--only: unknown command(s) {unknown}; known: {list(COMMANDS)}")
    base = Path(tempfile.mkdtemp(prefix="lmodp-bench-docs-"))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load before: "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min); folders under {base}",
        flush=True,
    )
    rows = []
    try:
        for name in names:
            folder = base / SAME_FOLDER.get(name, name)
            folder.mkdir(exist_ok=True)
            t = run_one(name, folder)
            rows.append(t)
            print(
                f"{name}: wall {minutes(t.wall_s)}, CPU {minutes(t.cpu)} (wait4 {minutes(t.cpu_s)}, tree "
                f"{minutes(t.tree_cpu_s)}), "
                f"load {t.load:.2f}, exit {t.returncode}",
                flush=True,
            )
    finally:
        print(table(rows))
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if all(t.returncode == 0 for t in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
