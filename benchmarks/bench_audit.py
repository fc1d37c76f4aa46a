"""Benchmark of the mechanism-level privacy audit (``lmo-dp audit``).

For each mechanism (Gaussian, Laplace, LMO) and each target epsilon, calibrates the mechanism
to the target with :func:`noise_search.calibration.calibrate` (LMO: the scale of a base
mixture), runs the one-run canary audit at the given size (default M = 1000 canaries,
T = 1000 steps, N = 10,000 dimensions) and prints the accountant's upper bound, the audit's
lower bound, the gap between them and the audit's wall time.

    .venv/bin/python benchmarks/bench_audit.py [--epsilons 1,3,8] [--json]

The LMO base defaults to the paper's parameter file
``reference/paper_params/optimized_epsilon_lmo_eps_1.0.json`` (only its shape matters:
calibration rescales it); ``--lmo-params`` picks another.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from noise_search.calibration import calibrate
from noise_search.mechanisms import LMO
from trainers.audit_simulation import run_audit

ROOT = Path(__file__).resolve().parents[1]
PAPER_BASE = ROOT / "reference" / "paper_params" / "optimized_epsilon_lmo_eps_1.0.json"
TIME_LIMIT_S = 60.0


def lmo_base(path: str | None) -> tuple[LMO, str]:
    if path:
        return LMO.from_json(path), path
    return LMO.from_json(PAPER_BASE), str(PAPER_BASE.relative_to(ROOT))


def parameter(mech) -> str:
    if mech.name == "gaussian":
        return f"sigma={mech.sigma:.4g}"
    if mech.name == "laplace":
        return f"u0={mech.u0:.4g}"
    return f"E[u]={mech.mean_u():.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epsilons", default="1,3,8", help="comma-separated target epsilons")
    p.add_argument("--sample-rate", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--dim", type=int, default=10_000)
    p.add_argument("--canaries", type=int, default=1000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lmo-params", default=None, help="LMO base parameter JSON (default: the paper's file)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    targets = [float(e) for e in args.epsilons.split(",")]
    base, base_source = lmo_base(args.lmo_params)
    settings = {"sample_rate": args.sample_rate, "steps": args.steps, "delta": args.delta}

    rows = []
    for family in ("gaussian", "laplace", "lmo"):
        for target in targets:
            t0 = time.perf_counter()
            cal = calibrate(base if family == "lmo" else family, epsilon=target, **settings)
            cal_s = time.perf_counter() - t0
            rep = run_audit(
                cal.mechanism,
                dim=args.dim,
                canaries=args.canaries,
                confidence=args.confidence,
                seed=args.seed,
                **settings,
            )
            rows.append(
                {
                    "mechanism": family,
                    "target": target,
                    "parameter": parameter(cal.mechanism),
                    "epsilon": rep.epsilon,
                    "epsilon_lower_bound": rep.epsilon_lower_bound,
                    "gap": rep.epsilon - rep.epsilon_lower_bound,
                    "correct": rep.correct,
                    "guesses": rep.guesses,
                    "audit_seconds": rep.seconds,
                    "calibration_seconds": cal_s,
                }
            )
            if not args.json:
                print(f"  done {family} eps={target:g} ({rep.seconds:.1f} s)", file=sys.stderr)

    worst = max(r["audit_seconds"] for r in rows)
    if args.json:
        print(json.dumps({"settings": vars(args), "lmo_base": base_source, "rows": rows, "max_audit_seconds": worst}))
        return 0
    print(
        f"one-run audit: M={args.canaries} canaries, T={args.steps} steps, N={args.dim} dims, "
        f"q={args.sample_rate:g}, delta={args.delta:g}, confidence={args.confidence:g}, seed={args.seed}"
    )
    print(f"LMO base: {base_source}")
    header = f"{'mechanism':<9} {'target':>6} {'parameter':>16} {'eps upper':>9} {'eps lower':>9} {'gap':>7} "
    header += f"{'correct/guesses':>15} {'audit s':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mechanism']:<9} {r['target']:>6g} {r['parameter']:>16} {r['epsilon']:>9.4f} "
            f"{r['epsilon_lower_bound']:>9.4f} {r['gap']:>7.3f} {r['correct']:>7}/{r['guesses']:<7} "
            f"{r['audit_seconds']:>7.1f}"
        )
    verdict = "within" if worst < TIME_LIMIT_S else "OVER"
    print(f"slowest audit: {worst:.1f} s ({verdict} the {TIME_LIMIT_S:g} s target)")
    violations = [r for r in rows if r["epsilon_lower_bound"] > r["epsilon"]]
    print(f"lower bound above upper bound: {len(violations)} of {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
