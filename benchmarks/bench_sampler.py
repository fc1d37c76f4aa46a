"""Noise sampling on CPU: lmo-dp's samplers against a Gaussian draw, and the floor the uniforms set.

    python benchmarks/bench_sampler.py [--dim 74498] [--repeats 200] [--threads 2] [--json]

One call of each row draws ``--dim`` coordinates (default: the trainable count of the MiniLM
LoRA step in ``bench_train.py``); rows are interleaved, each timed ``--repeats`` times, and the
median is reported in nanoseconds per coordinate and as a multiple of the Gaussian row.

* ``gaussian``, ``laplace``, ``lmo``: :func:`trainers.noise.sample_noise` (float32 out), the
  mechanisms of ``bench_train.py`` (LMO: Gamma(k = 4), Exponential, Uniform; per coordinate).
* ``lmo uniforms, torch``: only the float64 uniforms one LMO draw consumes, from torch's
  Mersenne-Twister generator (what the sampler uses).
* ``lmo uniforms, numpy SFC64``: the same number of float64 uniforms from numpy's fastest bit
  generator, in one thread and split over ``--threads`` threads (one stream and one fill call
  each; numpy releases the GIL inside the fill).

* ``numpy SFC64 Gamma(4) alone`` and ``Exp(1), ziggurat``: the other route, numpy's own
  Gamma draw (Marsaglia-Tsang on ziggurat normals) and its ziggurat exponential, one each per
  coordinate. An exact draw of the benchmark mixture needs a Gamma(4), an Exp and a Laplace
  (an Exp and a sign) besides its Uniform.

An exact LMO draw needs all of those uniforms plus its logarithms and arithmetic, so the
``uniforms`` rows are a lower bound on the uniform construction; the ``Gamma(4) alone`` row is one
on the ziggurat route.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.noise import sample_noise, uniform_rows

GAUSSIAN = Gaussian(1.0)
LAPLACE = Laplace(1.0)
LMO_MECH = LMO(a1=1.0, a3=0.5, a4=0.5, G_k=4.0, G_theta=0.5, E_lambda=2.0, U_a=0.5, U_b=1.5)
TARGET = 2.5  # the LMO sampler's target, x a Gaussian draw


def draws(dim: int, threads: int, seed: int) -> dict[str, Callable[[], object]]:
    rows = uniform_rows(LMO_MECH)
    gen = {k: torch.Generator().manual_seed(seed) for k in ("gaussian", "laplace", "lmo", "uniforms")}
    sfc = [np.random.Generator(np.random.SFC64(seed + i)) for i in range(max(threads, 1))]
    one = np.empty((rows, dim))
    single = np.empty(dim)
    parts = [np.empty((rows, len(idx))) for idx in np.array_split(np.arange(dim), max(threads, 1))]
    pool = ThreadPoolExecutor(max(threads, 1))

    def split_fill() -> None:
        list(pool.map(lambda k: sfc[k].random(out=parts[k]), range(len(parts))))

    return {
        "gaussian": lambda: sample_noise(GAUSSIAN, (dim,), 1.0, gen["gaussian"]),
        "laplace": lambda: sample_noise(LAPLACE, (dim,), 1.0, gen["laplace"]),
        "lmo": lambda: sample_noise(LMO_MECH, (dim,), 1.0, gen["lmo"]),
        f"lmo uniforms ({rows}/coord), torch": lambda: torch.rand(
            (rows, dim), generator=gen["uniforms"], dtype=torch.float64
        ),
        f"lmo uniforms ({rows}/coord), numpy SFC64, 1 thread": lambda: sfc[0].random(out=one),
        f"lmo uniforms ({rows}/coord), numpy SFC64, {threads} threads": split_fill,
        "Gamma(4) alone, numpy SFC64": lambda: sfc[0].standard_gamma(4.0, out=single),
        "Exp(1) alone, numpy SFC64 ziggurat": lambda: sfc[0].standard_exponential(out=single),
    }


def measure(dim: int, repeats: int, threads: int, seed: int) -> dict[str, float]:
    """Median seconds per call of each row, interleaved (rotating order)."""
    fns = draws(dim, threads, seed)
    for fn in fns.values():  # warm-up
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def render(seconds: dict[str, float], dim: int, threads: int) -> str:
    base = seconds["gaussian"]
    lines = [
        f"noise sampling, {dim:,} coordinates per call, torch threads {torch.get_num_threads()}, median of repeats",
        f"{'draw':<44} {'ns/coord':>9} {'x gaussian':>11}",
    ]
    for name, s in seconds.items():
        lines.append(f"{name:<44} {s / dim * 1e9:>9.2f} {s / base:>10.2f}x")
    floor = min(v for k, v in seconds.items() if "uniforms" in k and "SFC64" in k) / base
    gamma = seconds["Gamma(4) alone, numpy SFC64"] / base
    lines.append(
        f"target for lmo: <= {TARGET}x; its uniforms alone, from numpy's fastest generator (best of 1 and "
        f"{threads} threads), cost {floor:.2f}x before any logarithm or arithmetic; numpy's Gamma(4) alone {gamma:.2f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=74_498, help="coordinates per draw (>= 1)")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per row (>= 1)")
    p.add_argument("--threads", type=int, default=2, help="threads for the split numpy fill and torch (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the medians as JSON instead of the table")
    args = p.parse_args(argv)
    for field, value in (("dim", args.dim), ("repeats", args.repeats), ("threads", args.threads)):
        if value < 1:
            p.exit(2, f"error: {field}: must be an integer >= 1, got {value}\n")
    torch.set_num_threads(args.threads)
    seconds = measure(args.dim, args.repeats, args.threads, args.seed)
    if args.json:
        print(json.dumps({"dim": args.dim, "threads": args.threads, "seconds": seconds}))
    else:
        print(render(seconds, args.dim, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
