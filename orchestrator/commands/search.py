"""``lmo-dp search``: the best LMO, Laplace and Gaussian noise for each target epsilon.

    lmo-dp search --epsilons E1,E2,.. --delta D --sample-rate Q --steps T
                  [--objective {mean-abs,variance,usefulness}] [--gamma G]
                  [--space {paper,wide}] [--strategy {grid,optimize}] [--workers N]
                  [--address ADDR] [--seed S] [--out FILE] [--json]
                  [--candidates N] [--accountant {rdp,prv,pld}] [--lmo-accountant {rdp,rdp-hidden-u}]
                  [--rerank K]

``--json`` prints ``{"results": [...], "evaluated", "seconds", "settings", "workers"}`` (plus
``"files"`` with ``--out``; ``"mlflow_run_id"``, ``"runs_url"`` and ``"ui_command"`` when MLflow is
configured); ``--out FILE`` writes the same object to ``FILE`` plus ``<stem>.frontier.csv`` and ``<stem>.frontier.png``.
``evaluated`` counts grid candidates plus the optimiser's evaluations; ``seconds`` is the
wall time including Ray's start-up. ``--workers 0`` runs in this process without Ray.
``--candidates`` sizes the wide space; ``--accountant`` calibrates the baselines it supports
again under it (PRV: Gaussian; PLD: Gaussian and Laplace), keeping the RDP ones in
``gaussian_rdp`` / ``laplace_rdp``. The grid ranks LMO candidates by their RDP bound;
``--lmo-accountant rdp-hidden-u`` then rescales the ``--rerank`` best RDP candidates of each
target (default 3) to spend the target under the hidden-u accountant and reports the best of
them, keeping the RDP pick in ``lmo_rdp``.
"""

from __future__ import annotations

import argparse
from typing import Any

from noise_search.errors import ParameterError
from noise_search.evaluator import OBJECTIVES
from noise_search.mechanisms import Gaussian, Laplace
from noise_search.search import STRATEGIES, SearchProblem
from noise_search.search.problem import BASELINE_ACCOUNTANTS, LMO_ACCOUNTANTS
from noise_search.spaces import SPACES, WIDE_DEFAULT_SIZE
from orchestrator.cli import add_json_flag
from orchestrator.commands._common import FIELD_FLAGS

SEARCH_FLAGS: dict[str, str] = {
    **FIELD_FLAGS,
    "targets": "--epsilons",
    "workers": "--workers",
    "seed": "--seed",
    "candidates": "--candidates",
    "space": "--space",
    "strategy": "--strategy",
    "objective": "--objective",
    "accountant": "--accountant",
    "lmo_accountant": "--lmo-accountant",
    "rerank": "--rerank",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="offline noise search: best LMO / Laplace / Gaussian per target epsilon")
    p.add_argument("--epsilons", required=True, help="comma-separated target epsilons > 0, e.g. 0.3,0.5,1,2,3")
    p.add_argument("--delta", type=float, required=True, help="target delta in (0, 1)")
    p.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q in (0, 1]")
    p.add_argument("--steps", type=int, required=True, help="number of noisy steps T >= 1")
    p.add_argument(
        "--objective", choices=list(OBJECTIVES), default="mean-abs", help="what to minimise (usefulness: maximise)"
    )
    p.add_argument(
        "--gamma", type=float, default=None, help="usefulness threshold gamma > 0 (with --objective usefulness)"
    )
    p.add_argument("--space", choices=list(SPACES), default="paper", help="paper: the paper's 326,592-point grid")
    p.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default="grid",
        help="grid: the space's best; optimize: then refine it with differential evolution",
    )
    p.add_argument("--candidates", type=int, default=None,
                   help=f"number of candidates drawn from the wide space (default {WIDE_DEFAULT_SIZE})")  # fmt: skip
    p.add_argument("--lmo-accountant", choices=list(LMO_ACCOUNTANTS), default="rdp",
                   help="rdp-hidden-u: rescale each target's LMO to spend the target with u hidden "
                        "(docs/privacy.md, 'RDP with u hidden'); the RDP pick is kept as lmo_rdp")  # fmt: skip
    p.add_argument("--rerank", type=int, default=3,
                   help="with --lmo-accountant rdp-hidden-u: how many of the best RDP candidates per target "
                        "to rescale (1..50; about 5 s each); the best after rescaling is reported")  # fmt: skip
    p.add_argument("--accountant", choices=list(BASELINE_ACCOUNTANTS), default="rdp",
                   help="accountant for the baselines: prv (Gaussian), pld (Gaussian and Laplace); "
                        "RDP is always reported too (the LMO's: --lmo-accountant)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="Ray tasks in flight (default: all CPUs of the cluster; 0: this process, no Ray)")  # fmt: skip
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="an existing Ray cluster's GCS address HOST:PORT (not the dashboard URL that lmo-dp "
                        "submit takes) (default: start a local one)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the wide space and the optimiser (>= 0)")
    p.add_argument("--out", default=None, help="write the result JSON here (+ .frontier.csv / .frontier.png)")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render, field_flags=SEARCH_FLAGS)


def parse_epsilons(text: str) -> list[float]:
    """``"0.3,0.5,1"`` -> ``[0.3, 0.5, 1.0]``; bad or empty input names ``targets`` (``--epsilons``)."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ParameterError("targets", f"must be a comma-separated list of epsilons > 0, got {text!r}")
    values = []
    for s in items:
        try:
            values.append(float(s))
        except ValueError:
            raise ParameterError("targets", f"must be a comma-separated list of epsilons > 0, got {s!r}") from None
    return values


def problem_from_args(args: argparse.Namespace) -> SearchProblem:
    if args.candidates is not None and args.space != "wide":
        raise ParameterError("candidates", "only applies to --space wide")
    if args.workers is not None and args.workers < 0:
        raise ParameterError("workers", f"must be an integer >= 0, got {args.workers}")
    return SearchProblem(
        targets=tuple(parse_epsilons(args.epsilons)),
        delta=args.delta,
        sample_rate=args.sample_rate,
        steps=args.steps,
        objective=args.objective,
        gamma=args.gamma,
        space=args.space,
        strategy=args.strategy,
        seed=args.seed,
        accountant=args.accountant,
        lmo_accountant=args.lmo_accountant,
        rerank=args.rerank,
        candidates=args.candidates,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator import search_runner
    from orchestrator.checks import check_output_file
    from orchestrator.search_outputs import write_outputs
    from orchestrator.search_tracking import track
    from orchestrator.tracking import check_tracking, tracking_configured, tracking_uri

    problem = problem_from_args(args)  # all validation happens here, before anything runs or is written
    if args.out is not None:
        check_output_file(args.out, "--out")
    if tracking_configured():
        check_tracking(tracking_uri())  # before the search, not after minutes of it
    outcome = search_runner.run(problem, workers=args.workers, address=args.address)
    result = outcome.to_dict()
    files = write_outputs(outcome, args.out, result) if args.out else None
    if tracking_configured():
        result.update(track(outcome, result, files))
    if files:
        result["files"] = {k: str(v) for k, v in files.items()}
    return result


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _accountant(r: dict[str, Any], family: str) -> str:
    names = {(row.get(family) or {}).get("accountant", "rdp") for row in r["results"]}
    return "/".join(sorted(names)) or "rdp"


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"noise search: {s['space']} space ({s['space_size']:,} candidates), strategy {s['strategy']}, "
        f"objective {s['objective']}" + (f" (gamma {s['gamma']:g})" if s.get("gamma") else ""),
        f"  q = {s['sample_rate']:g}, T = {s['steps']}, delta = {s['delta']:g}; "
        f"{r['evaluated']:,} evaluations in {r['seconds']:.1f} s",
        f"  accountants: LMO {s.get('lmo_accountant', 'rdp')}; Laplace {_accountant(r, Laplace.name)}; "
        f"Gaussian {_accountant(r, Gaussian.name)}",
        "",
        f"  {'target':>7}  {'LMO eps':>8}  {'LMO obj':>9}  {'Laplace u0':>10}  {'Lap obj':>9}  "
        f"{'Gauss sigma':>11}  {'Gauss obj':>9}",
    ]
    for row in r["results"]:
        lap, gau = row.get(Laplace.name) or {}, row.get(Gaussian.name) or {}
        lines.append(
            f"  {row['epsilon_target']:>7g}  {_fmt(row['epsilon']):>8}  {_fmt(row['objective']):>9}  "
            f"{_fmt(lap.get('u')):>10}  {_fmt(lap.get('objective')):>9}  {_fmt(gau.get('sigma')):>11}  "
            f"{_fmt(gau.get('objective')):>9}"
        )
    notes = [f"  eps {row['epsilon_target']:g}: {row['note']}" for row in r["results"] if row.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    if r.get("files"):
        lines += ["", "wrote: " + ", ".join(r["files"].values())]
    if r.get("mlflow_run_id"):
        from orchestrator.mlflow_view import browse_lines

        lines.append(f"MLflow run: {r['mlflow_run_id']}")
        lines += browse_lines(r["runs_url"], r.get("ui_command"))
    return "\n".join(lines)
