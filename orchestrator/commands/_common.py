"""Argument groups shared by several sub-commands."""

from __future__ import annotations

import argparse

from noise_search.accountants import ACCOUNTANTS
from noise_search.errors import InputError
from noise_search.mechanisms import LMO, Gaussian, Laplace, Mechanism

#: Library field name -> CLI flag, so one-line errors name what the user typed.
FIELD_FLAGS: dict[str, str] = {
    "sample_rate": "--sample-rate",
    "steps": "--steps",
    "delta": "--delta",
    "sigma": "--sigma",
    "u0": "--u",
    "epsilon": "--epsilon",
    "gamma": "--gamma",
}


def add_mechanism_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mechanism", required=True, choices=["gaussian", "laplace", "lmo"])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sigma", type=float, help="Gaussian noise multiplier (std / clipping bound)")
    group.add_argument("--u", type=float, dest="u", help="Laplace inverse scale u0 (scale = C / u0)")
    group.add_argument("--params", help="LMO parameter JSON (a1, a3, a4, G_k, G_theta, E_lambda, U_a, U_b)")


def mechanism_from_args(args: argparse.Namespace) -> Mechanism:
    """The mechanism named by ``--mechanism`` with its one parameter flag."""
    needed = {"gaussian": "--sigma", "laplace": "--u", "lmo": "--params"}[args.mechanism]
    value = {"--sigma": args.sigma, "--u": args.u, "--params": args.params}[needed]
    if value is None:
        raise InputError(f"{needed}: required with --mechanism {args.mechanism}")
    if args.mechanism == "gaussian":
        return Gaussian(args.sigma)
    if args.mechanism == "laplace":
        return Laplace(args.u)
    return LMO.from_json(args.params)


def add_accounting_args(parser: argparse.ArgumentParser, *, accountant: bool = True) -> None:
    parser.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q in (0, 1]")
    parser.add_argument("--steps", type=int, required=True, help="number of noisy steps T >= 1")
    parser.add_argument("--delta", type=float, required=True, help="target delta in (0, 1)")
    if accountant:
        parser.add_argument("--accountant", choices=list(ACCOUNTANTS), default="rdp")


def mechanism_params(mech: Mechanism) -> dict:
    """The mechanism's parameters as a plain dict (without the ``mechanism`` key)."""
    d = mech.to_dict()
    d.pop("mechanism", None)
    return d
