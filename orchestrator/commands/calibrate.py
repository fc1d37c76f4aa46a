"""``lmo-dp calibrate``: the least noise that meets a target epsilon."""

from __future__ import annotations

import argparse

from noise_search.calibration import at_least_noise_limit, calibrate
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import (
    FIELD_FLAGS,
    add_accounting_args,
    add_tuning_args,
    check_accountant,
    tuning_from_args,
    tuning_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="noise multiplier (gaussian) or inverse scale (laplace) for a target epsilon")
    p.add_argument(
        "--mechanism", required=True, choices=["gaussian", "laplace"], help="noise family whose parameter is calibrated"
    )
    p.add_argument("--epsilon", type=float, required=True, help="target epsilon > 0")
    add_accounting_args(p)
    add_tuning_args(p)
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=FIELD_FLAGS)


def run(args: argparse.Namespace) -> dict:
    check_accountant(args.accountant, args.mechanism)
    tuning = tuning_from_args(args)
    cal = calibrate(
        args.mechanism,
        epsilon=args.epsilon,
        delta=args.delta,
        sample_rate=args.sample_rate,
        steps=args.steps,
        accountant=args.accountant,
        tuning=tuning,
    )
    param = {"sigma": cal.mechanism.sigma} if args.mechanism == "gaussian" else {"u": cal.mechanism.u0}
    out = {
        "mechanism": args.mechanism,
        **param,
        "epsilon": cal.spent.epsilon,
        "target_epsilon": cal.target_epsilon,
        "delta": cal.spent.delta,
        "order": cal.spent.order,
        "accountant": cal.spent.accountant,
        "sample_rate": args.sample_rate,
        "steps": args.steps,
        "at_limit": at_least_noise_limit(cal.mechanism),
    }
    if tuning is not None:
        from noise_search.accountants import compute_epsilon

        one = compute_epsilon(cal.mechanism, sample_rate=args.sample_rate, steps=args.steps, delta=args.delta)
        out["epsilon_per_run"] = one.epsilon
        out["tuning"] = tuning_json(tuning)
    return out


def render(r: dict) -> str:
    name, value = ("sigma", r["sigma"]) if "sigma" in r else ("u0", r["u"])
    text = (
        f"{r['mechanism']}: {name} = {value:.6g} gives epsilon = {r['epsilon']:.6g} "
        f"(target {r['target_epsilon']:g}) at delta = {r['delta']:g}\n"
        f"  accountant {r['accountant']}, sample rate {r['sample_rate']:g}, {r['steps']} steps"
    )
    if "tuning" in r:
        from orchestrator.commands.account import tuning_line

        text += "\n" + tuning_line(r)
    if r.get("at_limit"):
        bound = "upper" if name == "u0" else "lower"
        text += (
            f"\n  {name} is at its {bound} limit {value:g} (the least noise calibrate searches); "
            "its epsilon is below the target"
        )
    return text
