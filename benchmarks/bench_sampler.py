"""Noise sampling on CPU: lmo-dp's samplers against a Gaussian draw, side by side.

    python benchmarks/bench_sampler.py [--dim 74498] [--repeats 200] [--threads 2] [--json]

One call of each row draws ``--dim`` coordinates (default: the trainable count of the MiniLM
LoRA step in ``bench_train.py``); rows are interleaved, each timed ``--repeats`` times, and the
median is reported in nanoseconds per coordinate and as a multiple of the Gaussian row.

* ``gaussian``, ``laplace``, ``lmo``: :func:`trainers.noise.sample_noise` (float32 out), the
  mechanisms of ``bench_train.py`` (LMO: Gamma(k = 4), Exponential, Uniform; per coordinate).
  On the CPU, LMO is the exact ziggurat of :mod:`noise_search.lmo_sampler`.
* ``lmo, uniform construction``: :func:`trainers.noise.lmo_from_uniforms` (float32 out), the
  exact construction from torch's float64 uniforms (``u``, then a Laplace): the path
  ``sample_noise`` takes off the CPU, and the CPU sampler before the ziggurat.
* ``64-bit words alone, numpy SFC64``: the one random word per coordinate the ziggurat
  consumes, drawn alone: the generator's share of the ``lmo`` row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.noise import lmo_from_uniforms, sample_noise, uniform_rows

GAUSSIAN = Gaussian(1.0)
LAPLACE = Laplace(1.0)
LMO_MECH = LMO(a1=1.0, a3=0.5, a4=0.5, G_k=4.0, G_theta=0.5, E_lambda=2.0, U_a=0.5, U_b=1.5)
TARGET = 2.5  # the LMO sampler's target, x a Gaussian draw


def draws(dim: int, seed: int) -> dict[str, Callable[[], object]]:
    gen = {k: torch.Generator().manual_seed(seed) for k in ("gaussian", "laplace", "lmo", "construction")}
    sfc = np.random.Generator(np.random.SFC64(seed))
    return {
        "gaussian": lambda: sample_noise(GAUSSIAN, (dim,), 1.0, gen["gaussian"]),
        "laplace": lambda: sample_noise(LAPLACE, (dim,), 1.0, gen["laplace"]),
        "lmo": lambda: sample_noise(LMO_MECH, (dim,), 1.0, gen["lmo"]),
        f"lmo, uniform construction ({uniform_rows(LMO_MECH)} uniforms)": lambda: lmo_from_uniforms(
            LMO_MECH, (dim,), 1.0, gen["construction"]
        ).float(),
        "64-bit words alone, numpy SFC64": lambda: sfc.bit_generator.random_raw(dim),
    }


def measure(dim: int, repeats: int, seed: int) -> dict[str, float]:
    """Median seconds per call of each row, interleaved (rotating order)."""
    fns = draws(dim, seed)
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


def render(seconds: dict[str, float], dim: int) -> str:
    base = seconds["gaussian"]
    lines = [
        f"noise sampling, {dim:,} coordinates per call, torch threads {torch.get_num_threads()}, median of repeats",
        f"{'draw':<44} {'ns/coord':>9} {'x gaussian':>11}",
    ]
    for name, s in seconds.items():
        lines.append(f"{name:<44} {s / dim * 1e9:>9.2f} {s / base:>10.2f}x")
    ratio = seconds["lmo"] / base
    lines.append(f"target for lmo: <= {TARGET}x; measured {ratio:.2f}x ({'met' if ratio <= TARGET else 'NOT met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=74_498, help="coordinates per draw (>= 1)")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per row (>= 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the medians as JSON instead of the table")
    args = p.parse_args(argv)
    for field, value in (("dim", args.dim), ("repeats", args.repeats), ("threads", args.threads)):
        if value < 1:
            p.exit(2, f"error: {field}: must be an integer >= 1, got {value}\n")
    torch.set_num_threads(args.threads)
    seconds = measure(args.dim, args.repeats, args.seed)
    if args.json:
        print(json.dumps({"dim": args.dim, "threads": args.threads, "seconds": seconds}))
    else:
        print(render(seconds, args.dim))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
