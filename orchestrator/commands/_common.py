"""Argument groups shared by several sub-commands."""

from __future__ import annotations

import argparse

from noise_search.accountants import ACCOUNTANTS, accountants_for
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import LMO, PARAMETER_KEYS, Gaussian, Laplace, Mechanism
from noise_search.user_files import load_json_file

#: Library field name -> CLI flag, so one-line errors name what the user typed.
FIELD_FLAGS: dict[str, str] = {
    "sample_rate": "--sample-rate",
    "steps": "--steps",
    "delta": "--delta",
    "sigma": "--sigma",
    "u0": "--u",
    "epsilon": "--epsilon",
    "gamma": "--gamma",
    "accountant": "--accountant",
}


def add_mechanism_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mechanism",
        required=True,
        choices=["gaussian", "laplace", "lmo"],
        help="noise family: gaussian (L2 clipping), laplace or lmo (L1 clipping)",
    )
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
    return lmo_from_file(args.params)


#: Keys an LMO parameter file may hold besides the parameters, read and ignored: ``mechanism``
#: (``lmo``) and the metadata the LMO-DP paper's own files carry about the setting they were
#: tuned for (``--delta`` and the other flags are what is accounted).
LMO_FILE_NOTES: tuple[str, ...] = (
    "mechanism", "Gamma", "Usefulness", "dataset", "delta", "eps", "order", "overall_privacy",
)  # fmt: skip


def lmo_from_file(path: str) -> LMO:
    """The LMO of a ``--params`` file; every error names ``--params`` (and the key at fault)."""
    data = load_json_file(path, "--params")
    if not isinstance(data, dict):
        raise InputError(f"--params: {path} must hold a JSON object with LMO parameters")
    allowed = (*PARAMETER_KEYS["lmo"], *LMO_FILE_NOTES)
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise InputError(f"--params: {path}: {unknown[0]}: unknown key (allowed: {', '.join(allowed)})")
    if data.get("mechanism", "lmo") != "lmo":
        raise InputError(f"--params: {path}: mechanism: must be lmo here, got {data['mechanism']!r}")
    try:
        return LMO.from_dict(data, source=path)
    except InputError as exc:
        raise InputError(f"--params: {path}: {exc}") from None


def add_accounting_args(parser: argparse.ArgumentParser, *, accountant: bool = True) -> None:
    parser.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q in (0, 1]")
    parser.add_argument("--steps", type=int, required=True, help="number of noisy steps T >= 1")
    parser.add_argument("--delta", type=float, required=True, help="target delta in (0, 1)")
    if accountant:
        parser.add_argument(
            "--accountant",
            choices=list(ACCOUNTANTS),
            default="rdp",
            help="rdp: every mechanism (Renyi DP; lmo by the joint-convexity bound, as if u were known); prv: gaussian "
            "(Opacus PRV); pld: gaussian and laplace (dp-accounting); rdp-hidden-u: lmo with u hidden (the Renyi "
            "moments of the noise a trial draws, much tighter for wide mixtures; gaussian and laplace as rdp)",
        )


def add_tuning_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tuning-mean",
        type=float,
        default=None,
        help="private hyperparameter tuning: mean number of runs (>= 1; > 1 unless Poisson); "
        "epsilon is then that of the best run returned (docs/privacy.md section 7)",
    )
    parser.add_argument(
        "--tuning-shape",
        type=float,
        default=None,
        help="shape of the number of runs: a number > -1 (truncated negative binomial; 0 logarithmic, "
        "1 geometric) or inf (Poisson)",
    )


def tuning_from_args(args: argparse.Namespace) -> tuple[float, float] | None:
    """``(mean, shape)`` of ``--tuning-mean`` / ``--tuning-shape`` (both or neither), checked
    against ``--accountant`` before any work; None without tuning."""
    from noise_search.tuning import check_tuning

    mean, shape = args.tuning_mean, args.tuning_shape
    if mean is None and shape is None:
        return None
    if mean is None:
        raise InputError("--tuning-mean: required with --tuning-shape (mean number of runs, >= 1)")
    if shape is None:
        raise InputError("--tuning-shape: required with --tuning-mean (a number > -1, or inf for Poisson)")
    tuning = check_tuning(mean, shape, mean_field="--tuning-mean", shape_field="--tuning-shape")
    if args.accountant != "rdp":
        raise ParameterError(
            "accountant", f"'{args.accountant}' does not support hyperparameter tuning (--tuning-mean); use rdp"
        )
    return tuning


def tuning_json(tuning: tuple[float, float]) -> dict:
    """The ``tuning`` object of the JSON outputs: mean, shape (``inf`` as the string), law, and the
    99.9% quantile of the number of runs K (exact; null above 1e7)."""
    from noise_search.tuning import TuningDistribution

    dist = TuningDistribution.from_mean(*tuning)
    return {
        "mean": tuning[0],
        "shape": "inf" if tuning[1] == float("inf") else tuning[1],
        "distribution": dist.name,
        "runs_quantile_999": dist.quantile(),
    }


def check_accountant(accountant: str, family: str) -> None:
    """``--accountant`` can bound releases of ``family`` (checked before any work)."""
    able = accountants_for(family)
    if accountant not in able:
        raise ParameterError(
            "accountant", f"'{accountant}' cannot account the {family} mechanism (use {' or '.join(able)})"
        )


def mechanism_params(mech: Mechanism) -> dict:
    """The mechanism's parameters as a plain dict (without the ``mechanism`` key)."""
    d = mech.to_dict()
    d.pop("mechanism", None)
    return d
