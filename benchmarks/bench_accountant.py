"""Time per accountant call, median of repeats, at the paper's SST-2 setting.

    python benchmarks/bench_accountant.py [--repeats 7]

The ``rdp-hidden-u`` rows also run at q = 0.01, T = 1,000, delta = 1e-5 (the target there is at
most 2 s per uncached accounting) on a paper parameter file.

Every timed call uses a slightly different parameter so the RDP-curve cache never hits
(a cached repeat is timed separately). Prints one table; all rows come from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from noise_search.accountants import compute_epsilon
from noise_search.accountants.rdp import _cached_curve, _cached_hidden_curve
from noise_search.calibration import calibrate
from noise_search.hidden_rdp import hidden_log_moments
from noise_search.mechanisms import LMO, Gaussian, Laplace

PAPER_FILE = Path(__file__).resolve().parents[1] / "reference" / "paper_params" / "optimized_epsilon_lmo_eps_1.0.json"

Q, T, DELTA = 2048 / 67349, 197, 1e-10
BASE_LMO = dict(a1=0.1, a3=0.1, a4=0.2, G_k=2.0, G_theta=1.0, E_lambda=5.0, U_a=7.0, U_b=8.0)


def median_seconds(fn: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    r = args.repeats

    # warm imports (opacus/torch, dp_accounting) outside the timings
    compute_epsilon(Gaussian(1.0), sample_rate=Q, steps=T, delta=DELTA)
    compute_epsilon(Laplace(1.0), sample_rate=Q, steps=T, delta=DELTA, accountant="pld")

    def lmo(i: int) -> LMO:
        return LMO(**{**BASE_LMO, "a4": BASE_LMO["a4"] * (1 + 1e-6 * i)})

    rows: list[tuple[str, float]] = [
        (
            "LMO, RDP, subsampled, orders 2..256",
            median_seconds(lambda i: compute_epsilon(lmo(i), sample_rate=Q, steps=T, delta=DELTA), r),
        ),
        (
            "LMO, RDP, cached curve (new T, delta)",
            median_seconds(lambda i: compute_epsilon(lmo(0), sample_rate=Q, steps=T + i + 1, delta=DELTA), r),
        ),
        (
            "Laplace, RDP",
            median_seconds(lambda i: compute_epsilon(Laplace(0.4 + 1e-6 * i), sample_rate=Q, steps=T, delta=DELTA), r),
        ),
        (
            "Laplace, PLD",
            median_seconds(
                lambda i: compute_epsilon(
                    Laplace(0.4 + 1e-6 * i), sample_rate=Q, steps=T, delta=DELTA, accountant="pld"
                ),
                r,
            ),
        ),
        (
            "Gaussian, RDP (354 orders, dp-accounting values)",
            median_seconds(lambda i: compute_epsilon(Gaussian(2.9 + 1e-6 * i), sample_rate=Q, steps=T, delta=DELTA), r),
        ),
        (
            "Gaussian, PRV (1% relative)",
            median_seconds(
                lambda i: compute_epsilon(
                    Gaussian(2.9 + 1e-6 * i), sample_rate=Q, steps=T, delta=DELTA, accountant="prv"
                ),
                r,
            ),
        ),
        (
            "Gaussian, PLD",
            median_seconds(
                lambda i: compute_epsilon(
                    Gaussian(2.9 + 1e-6 * i), sample_rate=Q, steps=T, delta=DELTA, accountant="pld"
                ),
                r,
            ),
        ),
    ]

    paper = LMO.from_json(PAPER_FILE)

    def paper_lmo(i: int) -> LMO:
        return paper.scaled(1 + 1e-6 * i)

    hidden_repeats = max(3, r // 2)
    rows += [
        (
            "LMO, RDP u hidden, q 0.01, T 1000 (paper file)",
            median_seconds(
                lambda i: compute_epsilon(
                    paper_lmo(i), sample_rate=0.01, steps=1000, delta=1e-5, accountant="rdp-hidden-u"
                ),
                hidden_repeats,
            ),
        ),
        (
            "LMO, RDP u hidden, SST-2",
            median_seconds(
                lambda i: compute_epsilon(lmo(100 + i), sample_rate=Q, steps=T, delta=DELTA, accountant="rdp-hidden-u"),
                hidden_repeats,
            ),
        ),
        (
            "LMO, RDP u hidden, cached moments (new q)",
            median_seconds(
                lambda i: compute_epsilon(
                    paper_lmo(0), sample_rate=0.01 + 1e-6 * (i + 1), steps=1000, delta=1e-5, accountant="rdp-hidden-u"
                ),
                r,
            ),
        ),
    ]

    def calib(family, accountant="rdp"):
        def run(i: int) -> None:
            _cached_curve.cache_clear()
            _cached_hidden_curve.cache_clear()
            hidden_log_moments.cache_clear()
            calibrate(family, epsilon=1.0 + 1e-4 * i, delta=DELTA, sample_rate=Q, steps=T, accountant=accountant)

        return run

    def calib_hidden(i: int) -> None:
        hidden_log_moments.cache_clear()
        calibrate(paper, epsilon=3.0, delta=DELTA, sample_rate=Q, steps=T, accountant="rdp-hidden-u", rel_tol=1e-3)

    cal_repeats = max(3, r // 2)
    rows += [
        ("calibrate Laplace u0, RDP", median_seconds(calib("laplace"), cal_repeats)),
        ("calibrate LMO scale, RDP", median_seconds(calib(LMO(**BASE_LMO)), cal_repeats)),
        ("calibrate Gaussian sigma, RDP", median_seconds(calib("gaussian"), cal_repeats)),
        ("calibrate Gaussian sigma, PRV", median_seconds(calib("gaussian", "prv"), cal_repeats)),
        ("calibrate LMO scale, RDP u hidden (paper file, eps 3)", median_seconds(calib_hidden, 1)),
    ]

    width = max(len(name) for name, _ in rows)
    print(
        f"accountant timings: q = 2048/67349, T = {T}, delta = {DELTA:g}, median of {r} "
        f"(calibrations: {cal_repeats}) repeats"
    )
    print(f"{'call'.ljust(width)}  {'ms / call':>10}")
    print(f"{'-' * width}  {'-' * 10}")
    for name, sec in rows:
        print(f"{name.ljust(width)}  {sec * 1e3:10.2f}")


if __name__ == "__main__":
    main()
