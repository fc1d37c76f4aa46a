"""``lmo-dp report --experiment NAME --out DIR [--run-id ID] [--json]``.

``--json`` adds the sweep's ``cells`` (mean test score and 95% interval per target and
mechanism), ``comparisons`` (paired verdicts) and ``statistics`` (how they were computed), the
same objects as ``lmo-dp sweep --json`` (docs/statistics.md); they are also in the output folder
as ``verdicts.json``, ``cells.csv`` and ``comparisons.csv``. ``privacy`` lists per target and
mechanism what the cell guarantees (delta, accountant, q, T, clip, noise, epsilon spent;
:mod:`orchestrator.report_privacy`), also as ``privacy.json`` and ``privacy.csv``.

A sweep that did not finish, or has failed trials, is reported with a warning on stderr and on
the page (``warnings`` in ``--json``); one that did not finish and has no trial runs exits 1. A
sweep whose driver is gone but whose runs still show RUNNING (it could not close them: the
tracking store was full or did not answer) has them closed FAILED first, with a warning line
(:func:`orchestrator.sweep.resume.close_abandoned_runs`). ``runs_url`` (and ``ui_command`` for a
local store) say where to browse the sweep's runs table (:mod:`orchestrator.mlflow_view`).
"""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots and an HTML page of a sweep, read from MLflow")
    p.add_argument("--experiment", required=True, help="MLflow experiment of the sweep")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--run-id", help="the sweep's parent run (default: the newest sweep run)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from noise_search.names import check_name
    from orchestrator.checks import check_output_dir
    from orchestrator.mlflow_view import runs_url, ui_command
    from orchestrator.report import find_parent_run, write_report
    from orchestrator.report_privacy import read_privacy
    from orchestrator.report_statistics import read_verdicts
    from orchestrator.sweep.resume import close_abandoned_runs
    from orchestrator.tracking import Tracker

    check_name("--experiment", args.experiment)  # the rule every experiment name follows
    check_output_dir(args.out, "--out")
    tracker = Tracker(create=False)
    parent = find_parent_run(tracker, args.experiment, args.run_id)
    closed = close_abandoned_runs(tracker, args.experiment, parent)
    if closed:
        print(
            f"lmo-dp report: warning: the sweep's driver is gone but {closed} of its runs still showed RUNNING "
            f"(parent run {parent.info.run_id}); they are closed now (FAILED): rerun lmo-dp sweep with --resume "
            "to finish it",
            file=sys.stderr,
        )
        parent = tracker.get_run(parent.info.run_id)
    index, warnings = write_report(tracker, args.experiment, args.out, parent_run_id=parent.info.run_id)
    for warning in warnings:
        print(f"lmo-dp report: warning: {warning}", file=sys.stderr)
    if not args.no_log:
        tracker.log_artifacts(parent.info.run_id, index.parent, "report")
    verdicts = read_verdicts(index.parent)
    return {
        "experiment": args.experiment,
        "parent_run_id": parent.info.run_id,
        "report": str(index),
        "warnings": warnings,
        "cells": verdicts["cells"],
        "comparisons": verdicts["comparisons"],
        "statistics": verdicts["statistics"],
        "privacy": read_privacy(index.parent),
        "runs_url": runs_url(tracker.uri, parent.info.experiment_id),
        "ui_command": ui_command(tracker.uri),
    }


def render(r: dict) -> str:
    from orchestrator.commands.sweep import comparison_lines
    from orchestrator.mlflow_view import browse_lines

    lines = [*comparison_lines(r), f"report: {r['report']}"]
    return "\n".join([*lines, *browse_lines(r["runs_url"], r.get("ui_command"))])
