"""Argument groups shared by several sub-commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

from noise_search.accountants import ACCOUNTANT_CLASSES, ACCOUNTANTS, accountants_for
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import Gaussian, Laplace, Mechanism, mechanism_class, mechanism_names
from noise_search.mechanisms.registry import broken_plugins
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


class MechanismChoices:
    """``--mechanism``'s choices: every registered mechanism (``--help`` and "invalid choice" list
    them), and a plug-in that failed to load is let through so that its own error -- naming its
    entry point -- is what the user reads (:func:`mechanism_from_args`)."""

    def __init__(self, names: Callable[[], tuple[str, ...]] = mechanism_names) -> None:
        self._names = names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names() or name in broken_plugins()


#: The built-in mechanisms' own parameter flags (the CLI contract): flag -> (mechanism, parameter).
#: ``--params FILE`` and ``--param KEY=VALUE`` serve every mechanism.
#: ``--u`` is the Laplace flag's older name (deprecated; first here, so refusals name it as before).
PARAMETER_FLAGS: dict[str, tuple[str, str]] = {
    "--sigma": (Gaussian.name, "sigma"),
    "--u": (Laplace.name, "u0"),
    "--u0": (Laplace.name, "u0"),
}


def add_mechanism_args(parser: argparse.ArgumentParser, choices: MechanismChoices | None = None) -> None:
    parser.add_argument(
        "--mechanism",
        required=True,
        choices=choices or MechanismChoices(),
        metavar="{" + ",".join(mechanism_names()) + "}",
        help="noise mechanism: " + "; ".join(f"{n}: {mechanism_class(n).summary}" for n in mechanism_names()),
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sigma", type=float, help="Gaussian noise multiplier (std / clipping bound)")
    group.add_argument("--u0", type=float, dest="u0", help="Laplace inverse scale u0 (scale = C / u0)")
    group.add_argument("--u", type=float, dest="u", help="the older name of --u0 (deprecated)")
    group.add_argument(
        "--params", help="the parameters as a JSON object file (LMO: a1, a3, a4, G_k, G_theta, E_lambda, U_a, U_b)"
    )
    group.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="one parameter of the mechanism, repeated for each (e.g. --param sigma=1.1); any registered mechanism",
    )


def mechanism_from_args(args: argparse.Namespace) -> Mechanism:
    """The mechanism named by ``--mechanism`` with its parameters: its own flag (``--sigma``,
    ``--u``), ``--params FILE`` or ``--param KEY=VALUE``; every error names the flag at fault."""
    cls = mechanism_class(args.mechanism, "--mechanism")
    if args.params is not None:
        return mechanism_from_file(cls, args.params)
    if args.param:
        return _from_pairs(cls, args.param)
    own = {flag: name for flag, (mechanism, name) in PARAMETER_FLAGS.items() if mechanism == cls.name}
    for flag, name in own.items():
        value = getattr(args, flag[2:])
        if value is not None:
            try:
                return cls.from_params({name: value}, source=flag)
            except ParameterError as exc:  # named as typed (--u0, or the deprecated --u)
                raise ParameterError(flag, exc.detail) from None
    needed = next(iter(own), "--params" if len(cls.parameters) > 1 else "--param")
    raise InputError(f"{needed}: required with --mechanism {cls.name}")


def _from_pairs(cls: type[Mechanism], pairs: list[str]) -> Mechanism:
    """The mechanism of ``--param KEY=VALUE`` pairs (each key a parameter, once)."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param: expected KEY=VALUE, got {pair!r}")
        try:
            parameter = cls.parameter(key)
        except ParameterError:
            raise InputError(
                f"--param: {key}: not a parameter of the {cls.name} mechanism (it has {cls.parameter_list()})"
            ) from None
        if parameter.name in params:
            raise InputError(f"--param: {parameter.name} is given twice")
        params[parameter.name] = parameter.parse(text.strip())
    try:
        return cls.from_params(params, source="--param")
    except InputError as exc:
        raise InputError(f"--param: {exc}") from None


def mechanism_from_file(cls: type[Mechanism], path: str) -> Mechanism:
    """The mechanism of a ``--params`` file (a JSON object of its parameters; it may also say
    ``mechanism`` and, for LMO, the LMO-DP paper's metadata keys); every error names ``--params``
    (and the key at fault)."""
    data = load_json_file(path, "--params")
    if not isinstance(data, dict):
        raise InputError(f"--params: {path} must hold a JSON object with {cls.name} parameters")
    allowed = (*cls.keys(), "mechanism", *cls.file_notes)
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise InputError(f"--params: {path}: {unknown[0]}: unknown key (allowed: {', '.join(allowed)})")
    if data.get("mechanism", cls.name) != cls.name:
        raise InputError(f"--params: {path}: mechanism: must be {cls.name} here, got {data['mechanism']!r}")
    try:
        return cls.from_params(data, source=path)
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
            help="; ".join(f"{a.name}: {a.summary}" for a in ACCOUNTANT_CLASSES),
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


def check_accountant(accountant: str, family: str | type[Mechanism]) -> None:
    """``--accountant`` can bound releases of ``family`` (a mechanism's name or class; checked
    before any work)."""
    able = accountants_for(family)
    family = family if isinstance(family, str) else family.name
    if accountant not in able:
        raise ParameterError(
            "accountant", f"'{accountant}' cannot account the {family} mechanism (use {' or '.join(able)})"
        )
