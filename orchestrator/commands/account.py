"""``lmo-dp account``: epsilon of a mechanism run for ``--steps`` Poisson-sampled steps."""

from __future__ import annotations

import argparse

from noise_search.accountants import compute_epsilon, get_accountant
from noise_search.events import dp_sgd_event, tuned_event
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import (
    FIELD_FLAGS,
    add_accounting_args,
    add_mechanism_args,
    add_tuning_args,
    check_accountant,
    mechanism_from_args,
    tuning_from_args,
    tuning_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("account", help="epsilon spent by a mechanism over T sampled steps")
    add_mechanism_args(p)
    add_accounting_args(p)
    add_tuning_args(p)
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=FIELD_FLAGS)


def run(args: argparse.Namespace) -> dict:
    mech = mechanism_from_args(args)
    check_accountant(args.accountant, mech.name)
    tuning = tuning_from_args(args)
    spent = compute_epsilon(
        mech, sample_rate=args.sample_rate, steps=args.steps, delta=args.delta, accountant=args.accountant
    )
    out = {
        "mechanism": mech.name,
        "accountant": spent.accountant,
        "epsilon": spent.epsilon,
        "delta": spent.delta,
        "order": spent.order,
        "sample_rate": args.sample_rate,
        "steps": args.steps,
    }
    if tuning is None:
        return out
    run = dp_sgd_event(mech, args.sample_rate, args.steps)
    tuned = get_accountant(args.accountant).compose(tuned_event(run, *tuning)).spent(args.delta)
    return {**out, "epsilon": tuned.epsilon, "order": tuned.order, "epsilon_per_run": spent.epsilon,
            "tuning": tuning_json(tuning)}  # fmt: skip


def render(r: dict) -> str:
    order = ""
    if r["order"] is not None:
        order = f" (RDP order {r['order']:g})" if r["order"] != float("inf") else " (pure-DP composition)"
    text = (
        f"{r['mechanism']}: epsilon = {r['epsilon']:.6g} at delta = {r['delta']:g}{order}\n"
        f"  accountant {r['accountant']}, sample rate {r['sample_rate']:g}, {r['steps']} steps"
    )
    if "tuning" in r:
        text += "\n" + tuning_line(r)
    return text


def tuning_line(r: dict) -> str:
    """How a tuned epsilon reads in human output."""
    t = r["tuning"]
    shape = t["shape"] if isinstance(t["shape"], str) else f"{t['shape']:g}"
    q = t.get("runs_quantile_999")
    runs = f"; 99.9% of draws give at most {q:,} runs" if q is not None else "; its 99.9% quantile is above 1e7 runs"
    return (
        f"  the best of a random number of runs ({t['distribution']}, mean {t['mean']:g}, shape {shape}{runs}): "
        f"epsilon above covers the selected run; one run alone spends {r['epsilon_per_run']:.6g}"
    )
