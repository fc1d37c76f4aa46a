"""``lmo-dp demo``: the embedded default sweep, end to end, with nothing configured.

Local Ray, a local SQLite MLflow store (``./mlruns-lmodp``), the frozen MiniLM features of the
movie-review sentences (computed once, then cached), the noise search and a sweep (3 target
epsilons x Gaussian / Laplace / LMO, plus the non-private reference, 3 seeds each and more for
Laplace and LMO while their comparison is undecided) of a DP classifier head on those features,
then the report with intervals and paired verdicts. Each run gets a fresh folder ``lmodp-out/demo/<timestamp>``.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

from orchestrator.cli import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the embedded default sweep end to end (30 trials, then seeds where undecided; "
        "its times: docs/benchmarks.md)",
    )
    p.add_argument("--config", help="a sweep config to run instead of the embedded default")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def default_config_text() -> str:
    return resources.files("orchestrator").joinpath("defaults/sweep-demo.yaml").read_text()


def run(args: argparse.Namespace) -> dict:
    import sys

    from orchestrator.sweep import run_sweep, stdout_to_stderr
    from orchestrator.sweep_config import SweepConfig
    from trainers.yaml_input import load_yaml_text

    if args.config:
        cfg = SweepConfig.from_yaml(args.config)
    else:
        text = default_config_text()
        cfg = SweepConfig.from_dict(load_yaml_text(text, "embedded demo config", "demo"), source="embedded demo config")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg = cfg.model_copy(update={"storage_path": f"{cfg.storage_path.rstrip('/')}/{stamp}"})
    if not args.json:
        eps = ", ".join(f"{e:g}" for e in cfg.privacy.epsilons)
        reference = " and the non-private reference" if cfg.non_private else ""
        st = cfg.statistics
        more = (
            f", {len(cfg.seeds)} seeds each, more (up to {st.seeds.max}) where a comparison is undecided"
            if st is not None and st.seeds is not None
            else ""
        )
        print(
            f"lmo-dp demo: noise search, then {cfg.trial_count()} trials ({', '.join(cfg.privacy.mechanisms)} "
            f"at epsilon {eps}{reference}{more}) on {cfg.data.name}; "
            f"progress below, results in {cfg.storage_path}",
            file=sys.stderr,
            flush=True,
        )
    with stdout_to_stderr():
        return run_sweep(cfg)


def render(r: dict) -> str:
    from orchestrator.commands.sweep import render as sweep_render

    return sweep_render(r) + "\n(open the report in a browser; browse the runs as the lines above say)"
