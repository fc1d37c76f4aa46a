"""``lmo-dp sweep --config FILE.yaml [--experiment NAME] [--address HOST:PORT] [--resume] [--json]``.

Exit codes: 0 every trial finished (or was infeasible), 3 the sweep ran to the end but some
trials failed for good (their entries have status ``error`` or ``refused``; the report and
``--json`` still come), 1 the sweep itself failed, 2 bad input.
"""

from __future__ import annotations

import argparse

from orchestrator.cli import add_json_flag
from orchestrator.mlflow_view import browse_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="noise search + a Ray Tune grid of DP trials, tracked in MLflow")
    p.add_argument("--config", required=True, help="sweep config YAML (see examples/sweep-tiny.yaml)")
    p.add_argument(
        "--experiment",
        metavar="NAME",
        help="the sweep's name (its MLflow experiment and its folder under storage_path) instead of the "
        "config's experiment, e.g. a fresh name per run of a check",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="a Ray cluster to run on: its GCS address HOST:PORT (the head's `ray start --port`, e.g. "
        "10.0.0.5:6379; not the dashboard URL http://HOST:8265, which is lmo-dp submit's --address) "
        "(default: RAY_ADDRESS, or a local Ray instance)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted or failed sweep from its storage path (trials that MLflow holds as "
        "finished are not rerun)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from orchestrator.sweep import run_sweep, stdout_to_stderr
    from orchestrator.sweep.pipeline import EXIT_TRIALS_FAILED
    from orchestrator.sweep_config import SweepConfig

    cfg = SweepConfig.from_yaml(args.config)
    if args.experiment is not None:
        from noise_search.names import check_name

        cfg = cfg.model_copy(update={"experiment": check_name("--experiment", args.experiment)})
    if args.json:
        with stdout_to_stderr():
            result = run_sweep(cfg, address=args.address, resume=args.resume)
    else:
        result = run_sweep(cfg, address=args.address, resume=args.resume)
    if result["trials_failed"]:
        args.exit_code = EXIT_TRIALS_FAILED
    return result


def render(r: dict) -> str:
    trials, reused = r["trials"], r.get("trials_reused", 0)
    header = f"sweep {r['experiment']}: {len(trials)} trials (MLflow parent run {r['parent_run_id']})"
    if r.get("resumed") and r.get("trials_run", 0) == 0:
        lines = [
            f"sweep {r['experiment']}: already finished, nothing was rerun: all {reused} trials were read back "
            f"from their finished MLflow runs (parent run {r['parent_run_id']}); the report was rebuilt"
        ]
    else:
        lines = [header]
        if reused:
            lines.append(f"  ({reused} trials read back from their finished MLflow runs, not rerun: marked 'earlier')")
        if r.get("tuning"):
            lines.append(
                "  (each line's epsilon is what that run spent on its own; the target bounds the run each cell "
                "returns, the selection included: see the tuning lines below)"
            )
        for t in trials:
            metric = next((f"{k} {v:.4g}" for k, v in t["metrics"].items() if k in ("accuracy", "perplexity")), "")
            eps = trial_epsilon(t, tuned=bool(r.get("tuning")))
            status = f"{t['status']}{' (earlier)' if t.get('reused') else ''}"
            lines.append(f"  {t['key']:<36} {status:<19} {eps:<24} {metric}")
    if r.get("trials_failed"):
        lines.append(f"{r['trials_failed']} trial(s) failed (see their lmodp.error tags); exit code 3")
    lines += selected_summary(r)
    lines += model_lines(r)
    lines += report_lines(r)
    lines += browse_lines(r["runs_url"], r.get("ui_command"))
    return "\n".join(lines)


def trial_epsilon(t: dict, *, tuned: bool) -> str:
    """A trial line's epsilon: against its target, or, in a tuned sweep (where the target bounds
    the selection, not each run), as that run's own spend."""
    if t["epsilon"] is None:
        return ""
    spent = upper_bound_text(t["epsilon"])
    return f"epsilon {spent} this run" if tuned else f"epsilon {spent} <= {t['epsilon_target']:g}"


def model_lines(r: dict) -> list[str]:
    """The logged model kept per cell (``training.save_model``), for ``lmo-dp predict --model``."""
    models = r.get("models") or []
    if not models:
        return []
    lines = ["models (lmo-dp predict --model URI --text TEXT):"]
    for m in models:
        cell = "non-private" if m["epsilon_target"] is None else f"epsilon {m['epsilon_target']:g} {m['mechanism']}"
        lines.append(f"  {cell:<24} {m['model_uri'] or 'none (the selected trial logged no model)'}")
    return lines


def report_lines(r: dict) -> list[str]:
    """Where the report is: the file on the machine that ran the sweep (with a cluster, the head,
    in a job's working folder that Ray removes later) and, always, the parent MLflow run."""
    local = f"report: {r['report']}"
    if r.get("report_host"):
        local += f" (on {r['report_host']})"
    where = r.get("parent_run_url") or r.get("report_artifact")
    if not r.get("report_artifact"):
        return [local]
    shown = f"{where} (artifacts: report/index.html)" if r.get("parent_run_url") else where
    return [local, f"report in MLflow: {shown}"]


def selected_summary(r: dict) -> list[str]:
    """Test metric per target and mechanism for the configuration chosen on validation, with its
    95% interval, then the paired comparisons: a lead is stated only where the verdict decides it."""
    selected = r.get("selected") or []
    if not selected:
        return []
    metric = selected[0]["metric"]
    if r.get("tuning"):
        return tuned_summary(r, selected, metric)
    cells = r.get("cells") or []
    mechs = sorted({c["mechanism"] for c in cells if c["epsilon_target"] is not None})
    majority = ((r.get("baselines") or {}).get("majority") or {}).get("test_accuracy")
    lines = [f"test {metric} (mean and 95% interval over seeds; configuration chosen on validation):"]
    lines.append("  " + f"{'epsilon':>9}" + "".join(f"{m:>25}" for m in mechs))

    def cell(c: dict | None) -> str:
        if c is None:
            return "-"
        ci = c["test_ci95"]
        text = f"{c['test_mean']:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
        return text + ("*" if c["below_baseline"] else "")

    for eps in sorted({c["epsilon_target"] for c in cells if c["epsilon_target"] is not None}):
        row = {c["mechanism"]: c for c in cells if c["epsilon_target"] == eps}
        lines.append("  " + f"{eps:>9g}" + "".join(f"{cell(row.get(m)):>25}" for m in mechs))
    ref = next((c for c in cells if c["epsilon_target"] is None), None)
    if ref is not None:
        lines.append(f"  non-private: {cell(ref)}")
    if majority is not None and metric == "accuracy":
        flagged = any(c["below_baseline"] for c in cells)
        lines.append(f"  majority class: {majority:.3f}" + ("  (* the interval lies below it)" if flagged else ""))
    lines += comparison_lines(r)
    lines.append(
        "  (picking the best configuration on private validation data is not covered by the per-trial epsilon; "
        "a tuning section accounts for it: docs/privacy.md section 7)"
    )
    return lines


def comparison_lines(r: dict) -> list[str]:
    """The paired verdicts, decided ones first; how many seeds each cell got and why."""
    from orchestrator.statistics import verdict_text

    comparisons = r.get("comparisons") or []
    st = r.get("statistics") or {}
    lines = []
    if comparisons:
        looks = f", {st['looks']} planned looks" if st.get("looks", 1) > 1 else ""
        lines.append(
            f"comparisons (paired over shared seeds, Holm over {len(comparisons)}{looks}; "
            "a lead is stated only where decided):"
        )
        unit, suffix = (100.0, " points") if st.get("metric") == "accuracy" else (1.0, "")
        ordered = sorted(comparisons, key=lambda c: c["verdict"] == "within_noise")
        for c in ordered:
            lines.append(f"  epsilon {c['epsilon_target']:g}: {verdict_text(c, unit, suffix)}")
    seeds = st.get("seeds")
    if seeds:
        got = ", ".join(
            f"{c['mechanism']}@{c['epsilon_target']:g} {c['seeds']} ({c['stopped']})"
            for c in r.get("cells") or []
            if c["epsilon_target"] is not None
        )
        lines.append(f"seeds until decided (looks at {', '.join(str(n) for n in seeds['looks'])} seeds): {got}")
    return lines


def upper_bound_text(x: float) -> str:
    from orchestrator.report import upper_bound_text as text

    return text(x)


def tuned_summary(r: dict, selected: list[dict], metric: str) -> list[str]:
    """Per target and mechanism: the returned run's test metric, K and the tuned epsilon."""
    t = r["tuning"]
    lines = [
        f"private hyperparameter selection ({t['distribution']}, mean {t['mean']:g}; noise: {t['noise']}): "
        f"test {metric} of the run chosen on validation, K runs drawn, epsilon of the returned run (the one "
        "the target bounds):"
    ]
    chosen = {(s["mechanism"], s["epsilon_target"]): s for s in selected}
    for c in t["cells"]:
        s = chosen.get((c["mechanism"], c["epsilon"]))
        where = f"epsilon {c['epsilon']:g} {c['mechanism']}" if c["epsilon"] is not None else "non-private"
        score = "no finished run" if s is None else f"{metric} {s['test_mean']:.3f}"
        eps = "" if c.get("epsilon_tuned") is None else (
            f", epsilon {upper_bound_text(c['epsilon_tuned'])} for the returned run, selection included "
            f"(any one run alone: at most {upper_bound_text(c['epsilon_per_run'])}; {c['accountant']})"
        )  # fmt: skip
        note = f" ({c['note']})" if c.get("note") else ""
        lines.append(f"  {where:<24} {score}, K = {c['runs']}{eps}{note}")
    majority = ((r.get("baselines") or {}).get("majority") or {}).get("test_accuracy")
    if majority is not None and metric == "accuracy":
        lines.append(f"  majority class: {majority:.3f}")
    return lines
