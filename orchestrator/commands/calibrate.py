"""``lmo-dp calibrate``: the least noise that meets a target epsilon.

Any registered mechanism with one scalar noise parameter (its
:attr:`~noise_search.mechanisms.Mechanism.noise_parameter`: Gaussian ``sigma``, Laplace ``u0``,
a plug-in's own). ``--json`` holds the parameter under its name and, for Laplace, also under
its older name ``u`` (deprecated).
"""

from __future__ import annotations

import argparse

from noise_search.calibration import at_least_noise_limit, calibrate
from noise_search.mechanisms import mechanism_class, mechanism_names
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import (
    FIELD_FLAGS,
    MechanismChoices,
    add_accounting_args,
    add_tuning_args,
    check_accountant,
    tuning_from_args,
    tuning_json,
)


def calibrated_names() -> tuple[str, ...]:
    """The registered mechanisms with one scalar noise parameter."""
    return tuple(n for n in mechanism_names() if mechanism_class(n).noise_parameter is not None)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="the noise parameter (sigma, u0, ...) of a mechanism for a target epsilon")
    p.add_argument(
        "--mechanism",
        required=True,
        choices=MechanismChoices(calibrated_names),
        metavar="{" + ",".join(calibrated_names()) + "}",
        help="mechanism whose noise parameter is calibrated: "
        + "; ".join(f"{n}: {mechanism_class(n).noise_parameter.name}" for n in calibrated_names()),  # type: ignore[union-attr]
    )
    p.add_argument("--epsilon", type=float, required=True, help="target epsilon > 0")
    add_accounting_args(p)
    add_tuning_args(p)
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=FIELD_FLAGS)


def run(args: argparse.Namespace) -> dict:
    cls = mechanism_class(args.mechanism, "--mechanism")
    check_accountant(args.accountant, cls)
    tuning = tuning_from_args(args)
    cal = calibrate(
        cls,
        epsilon=args.epsilon,
        delta=args.delta,
        sample_rate=args.sample_rate,
        steps=args.steps,
        accountant=args.accountant,
        tuning=tuning,
    )
    name = cls.noise_parameter.name  # type: ignore[union-attr]
    value = cal.mechanism.noise_value()
    param = {key: value for key in (name, *cls.parameter(name).aliases)}  # deprecated aliases beside it
    out = {
        "mechanism": cls.name,
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
    name = mechanism_class(r["mechanism"]).noise_parameter.name  # type: ignore[union-attr]
    value = r[name]
    text = (
        f"{r['mechanism']}: {name} = {value:.6g} gives epsilon = {r['epsilon']:.6g} "
        f"(target {r['target_epsilon']:g}) at delta = {r['delta']:g}\n"
        f"  accountant {r['accountant']}, sample rate {r['sample_rate']:g}, {r['steps']} steps"
    )
    if "tuning" in r:
        from orchestrator.commands.account import tuning_line

        text += "\n" + tuning_line(r)
    if r.get("at_limit"):
        bound = "upper" if mechanism_class(r["mechanism"]).noise_parameter.increasing else "lower"  # type: ignore[union-attr]
        text += (
            f"\n  {name} is at its {bound} limit {value:g} (the least noise calibrate searches); "
            "its epsilon is below the target"
        )
    return text
