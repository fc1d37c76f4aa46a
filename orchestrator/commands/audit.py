"""``lmo-dp audit``: an empirical epsilon lower bound beside the accountant's upper bound.

Simulates the Poisson-sampled DP-SGD release with ``--canaries`` worst-case canaries and the
project's own torch noise sampler (:mod:`trainers.audit_simulation`), then bounds epsilon from below with
the one-run method of Steinke, Nasr and Jagielski (2023) (:mod:`noise_search.audit_bound`).
A lower bound above the upper bound means the mechanism or its accounting is broken.
"""

from __future__ import annotations

import argparse

from noise_search.audit_bound import check_audit_inputs
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import (
    FIELD_FLAGS,
    add_accounting_args,
    add_mechanism_args,
    check_accountant,
    mechanism_from_args,
)

#: Extra field -> flag names for this command's one-line errors.
AUDIT_FLAGS: dict[str, str] = {
    **FIELD_FLAGS,
    "canaries": "--canaries",
    "dim": "--dim",
    "confidence": "--confidence",
    "clip_bound": "--clip",
    "seed": "--seed",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="empirical epsilon lower bound (one-run canary audit) beside the accountant's upper bound",
        description=(
            "Simulate T Poisson-sampled noisy sums with M canaries (each included with probability 1/2) "
            "and report the one-run epsilon lower bound of Steinke, Nasr & Jagielski (2023) beside the "
            "accountant's epsilon for the same settings."
        ),
    )
    add_mechanism_args(p)
    add_accounting_args(p)
    p.add_argument("--dim", type=int, required=True, help="noise dimension N >= 1 (coordinates per step)")
    p.add_argument("--canaries", type=int, required=True, help="number of canaries M >= 2")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound, in (0, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation (>= 0)")
    p.add_argument("--clip", type=float, default=1.0, dest="clip", help="clipping bound C > 0 (mechanism's norm)")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=AUDIT_FLAGS)


def run(args: argparse.Namespace) -> dict:
    mech = mechanism_from_args(args)
    check_audit_inputs(  # all input errors before torch is imported and any work starts
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=args.delta,
        dim=args.dim,
        canaries=args.canaries,
        confidence=args.confidence,
        clip_bound=args.clip,
        norm=mech.norm,
        seed=args.seed,
    )
    check_accountant(args.accountant, mech.name)
    from trainers.audit_simulation import run_audit  # imports torch

    report = run_audit(
        mech,
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=args.delta,
        dim=args.dim,
        canaries=args.canaries,
        confidence=args.confidence,
        seed=args.seed,
        clip_bound=args.clip,
        accountant=args.accountant,
    )
    d = report.to_dict()
    keys = ("mechanism", "epsilon_lower_bound", "epsilon", "delta", "confidence", "canaries", "correct", "guesses")
    return {**{k: d[k] for k in keys}, "seconds": d["seconds"]}


def render(r: dict) -> str:
    lower, upper = r["epsilon_lower_bound"], r["epsilon"]
    verdict = (
        "VIOLATION: the lower bound exceeds the accountant's epsilon"
        if lower > upper
        else "consistent: lower bound <= accountant's epsilon"
    )
    return (
        f"{r['mechanism']}: epsilon lower bound {lower:.4g} (one-run audit, confidence {r['confidence']:g}), "
        f"accountant upper bound {upper:.4g}, at delta = {r['delta']:g}\n"
        f"  {r['correct']} of {r['guesses']} guesses correct, {r['canaries']} canaries, {r['seconds']:.1f} s\n"
        f"  {verdict}"
    )
