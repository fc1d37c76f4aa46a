"""``lmo-dp account``: epsilon of a mechanism run for ``--steps`` Poisson-sampled steps."""

from __future__ import annotations

import argparse

from noise_search.accountants import compute_epsilon
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import (
    FIELD_FLAGS,
    add_accounting_args,
    add_mechanism_args,
    check_accountant,
    mechanism_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("account", help="epsilon spent by a mechanism over T sampled steps")
    add_mechanism_args(p)
    add_accounting_args(p)
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=FIELD_FLAGS)


def run(args: argparse.Namespace) -> dict:
    mech = mechanism_from_args(args)
    check_accountant(args.accountant, mech.name)
    spent = compute_epsilon(
        mech, sample_rate=args.sample_rate, steps=args.steps, delta=args.delta, accountant=args.accountant
    )
    return {
        "mechanism": mech.name,
        "accountant": spent.accountant,
        "epsilon": spent.epsilon,
        "delta": spent.delta,
        "order": spent.order,
        "sample_rate": args.sample_rate,
        "steps": args.steps,
    }


def render(r: dict) -> str:
    order = ""
    if r["order"] is not None:
        order = f" (RDP order {r['order']:g})" if r["order"] != float("inf") else " (pure-DP composition)"
    return (
        f"{r['mechanism']}: epsilon = {r['epsilon']:.6g} at delta = {r['delta']:g}{order}\n"
        f"  accountant {r['accountant']}, sample rate {r['sample_rate']:g}, {r['steps']} steps"
    )
