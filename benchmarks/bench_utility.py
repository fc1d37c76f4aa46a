"""Utility benchmark: test accuracy per epsilon and mechanism on the full movie-review set.

    python benchmarks/bench_utility.py [--tiers head,top] [--quick] [--write docs/utility.md] [--json]

Everything runs through ``lmo-dp sweep --json`` (a subprocess per tier, local Ray, a SQLite
MLflow store in a temporary folder), so this is also the product's showcase. Per tier:
the full train split (8,491 sentences; ``--quick``: 400) trains, the validation split (1,067)
picks each (epsilon, mechanism)'s learning rate / clip, the test split (1,010) reports the mean
and 95% interval over seeds, and every pair of mechanisms at a target gets a paired verdict
(docs/statistics.md). Each tier also trains the non-private reference on the same trainable set
and reports the majority-class baseline.

* ``head`` -- a classifier on frozen all-MiniLM-L6-v2 features (last layer, mean-pooled,
  normalised, centred on public NYT editorial sentences); epsilon in {0.5, 1, 2, 4, 8} x
  {gaussian, laplace, lmo}, seeds until decided: 3, then 5, 8 and 12 for the cells of undecided
  pairs.
* ``top`` -- LoRA on the top encoder layer over the cached frozen layers below, plus the head;
  epsilon 8 x {gaussian, laplace, lmo} x 3 seeds (a private trial trains about 4 minutes on one
  core: 12 trials take about 25 minutes).

The LMO row uses the noise search's best parameters in the ``wide`` space (the paper's grid
has no feasible point at the smaller targets). The feature cache is built first (timed apart);
the sweep's time is with the cache in place. ``--write FILE`` replaces the part of FILE between
the ``bench_utility`` markers with the tables. ``--quick`` (a tiny slice, one target, one seed)
is what the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench_utility:begin -->", "<!-- bench_utility:end -->"
MECHANISMS = ("gaussian", "laplace", "lmo")

#: learning-rate grids per mechanism and tier (every value is tried for every target and seed)
TIERS: dict[str, dict[str, Any]] = {
    "head": {
        "title": "Head only: a classifier on cached frozen features",
        "model": {"trainable": "head"},
        "epsilons": [0.5, 1.0, 2.0, 4.0, 8.0],
        "statistics": {"seeds": {"min": 3, "max": 12}},
        "grid": {
            "gaussian": {"learning_rate": [0.03, 0.1]},
            "laplace": {"learning_rate": [0.1, 0.2]},
            "lmo": {"learning_rate": [0.1, 0.2]},
            "none": {"learning_rate": [0.01, 0.03, 0.1]},
        },
    },
    "top": {
        "title": "Fine-tuning: LoRA on the top encoder layer over the cached frozen layers",
        "model": {"trainable": "lora", "top_layers": 1, "lora": {"rank": 2, "target_modules": ["value"]}},
        "epsilons": [8.0],
        "seeds": [0, 1, 2],
        "statistics": {},
        "grid": {},
    },
}

QUICK = {"max_train_examples": 400, "max_eval_examples": 200}


def sweep_config(tier: str, storage: Path, *, quick: bool) -> dict[str, Any]:
    spec = TIERS[tier]
    cfg: dict[str, Any] = {
        "experiment": f"bench-utility-{tier}",
        "model": dict(spec["model"]),
        "data": {"name": "movie-reviews"},
        "privacy": {"epsilons": spec["epsilons"], "delta": 1e-5, "mechanisms": list(MECHANISMS)},
        "search": {"objective": "mean-abs", "space": "wide", "strategy": "grid"},
        "grid": spec["grid"],
        "non_private": True,
        **({"seeds": spec["seeds"]} if "seeds" in spec else {}),
        "statistics": spec["statistics"],
        "resources": {"cpus_per_trial": 1},
        "max_concurrent_trials": 2,
        "max_retries": 1,
        "storage_path": str(storage),
    }
    if quick:
        cfg["data"].update(QUICK)
        cfg["privacy"]["epsilons"] = [8.0]
        cfg["statistics"] = {}
        cfg["seeds"] = [0]
        cfg["grid"] = {}
        if tier == "top":
            cfg["training"] = {"epochs": 1.0}
    return cfg


def lmo_dp(work: Path, command: str, config: Path, tracking: str | None = None) -> dict[str, Any]:
    """``lmo-dp COMMAND --config CONFIG --json`` in a subprocess; its JSON result."""
    env = {**os.environ, "CI": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", command, "--config", str(config), "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"bench_utility: lmo-dp {command} {config.name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return json.loads(proc.stdout)


def warm_cache(cfg: dict[str, Any]) -> float:
    """Build the tier's feature cache (seconds); the sweep then only reads it."""
    from orchestrator.sweep import plan_sweep
    from orchestrator.sweep_config import SweepConfig

    started = time.perf_counter()
    plan_sweep(SweepConfig.from_dict(cfg))
    return time.perf_counter() - started


def run_tier(tier: str, work: Path, *, quick: bool) -> dict[str, Any]:
    cfg = sweep_config(tier, work / f"tune-{tier}", quick=quick)
    path = work / f"{tier}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cache_seconds = warm_cache(cfg)
    started = time.perf_counter()
    result = lmo_dp(work, "sweep", path, tracking=f"sqlite:///{work / 'mlflow.db'}")
    failed = [t["key"] for t in result["trials"] if t["status"] not in ("finished",)]
    return {
        "tier": tier,
        "title": TIERS[tier]["title"],
        "config": cfg,
        "cache_seconds": cache_seconds,
        "sweep_seconds": time.perf_counter() - started,
        "trials": len(result["trials"]),
        "failed": failed,
        "selected": result["selected"],
        "cells": result["cells"],
        "comparisons": result["comparisons"],
        "statistics": result["statistics"],
        "majority": (result.get("baselines") or {}).get("majority") or {},
        "plan": result.get("plan"),
        "search_space": cfg["search"]["space"],
    }


def _cell(cell: dict[str, Any] | None) -> str:
    """``mean [lo, hi]`` of a cell (its 95% interval), ``*`` when the interval lies below the
    majority class."""
    if cell is None:
        return "—"
    ci = cell["test_ci95"]
    text = f"{cell['test_mean']:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
    return text + ("\\*" if cell["below_baseline"] else "")


def _lookup(res: dict[str, Any], mechanism: str, eps: float | None) -> dict[str, Any] | None:
    """The selected configuration of (mechanism, eps)."""
    for s in res["selected"]:
        if s["mechanism"] == mechanism and s["epsilon_target"] == eps:
            return s
    return None


def _cell_of(res: dict[str, Any], mechanism: str, eps: float | None) -> dict[str, Any] | None:
    """The cell (mean, 95% interval, seeds) of (mechanism, eps)."""
    for c in res.get("cells", []):
        if c["mechanism"] == mechanism and c["epsilon_target"] == eps:
            return c
    return None


def tier_tables(res: dict[str, Any]) -> str:
    """Markdown: accuracy per epsilon x mechanism, references, and the chosen hyperparameters."""
    epsilons = sorted({s["epsilon_target"] for s in res["selected"] if s["epsilon_target"] is not None})
    ref = _lookup(res, "none", None)
    majority = res["majority"].get("test_accuracy")
    ref_cell = _cell_of(res, "none", None)
    lines = [
        f"### {res['title']} (`{res['tier']}`)",
        "",
        "Test accuracy of the configuration chosen on the validation split: mean and 95% interval over seeds "
        "(seed-to-seed and test-set noise; with one seed the test set's Wilson interval; \\* the interval lies "
        "below the majority class):",
        "",
        "| epsilon | " + " | ".join(MECHANISMS) + " |",
        "|---:|" + "---:|" * len(MECHANISMS),
    ]
    for eps in epsilons:
        lines.append(f"| {eps:g} | " + " | ".join(_cell(_cell_of(res, m, eps)) for m in MECHANISMS) + " |")
    lines.append(f"| non-private | {_cell(ref_cell)} | | |")
    if majority is not None:
        lines.append(f"| majority class | {majority:.3f} | | |")
    lines += ["", "Seeds per cell (why it stopped: decided, cap, or a fixed number):", ""]
    lines += ["| epsilon | " + " | ".join(MECHANISMS) + " |", "|---:|" + "---|" * len(MECHANISMS)]
    for eps in [*epsilons, None]:
        cells = []
        for m in MECHANISMS if eps is not None else ("none",):
            c = _cell_of(res, m, eps)
            cells.append("—" if c is None else f"{c['seeds']} ({c['stopped']})")
        lines.append(f"| {'non-private' if eps is None else f'{eps:g}'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Gap of the means to the non-private mean (points; negative = below it; a description, not a test):",
        "",
    ]
    if ref is not None:
        lines += ["| epsilon | " + " | ".join(MECHANISMS) + " |", "|---:|" + "---:|" * len(MECHANISMS)]
        for eps in epsilons:
            cells = []
            for m in MECHANISMS:
                sel = _lookup(res, m, eps)
                cells.append("—" if sel is None else f"{100 * (sel['test_mean'] - ref['test_mean']):+.1f}")
            lines.append(f"| {eps:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Chosen learning rate / clip per point (configurations compared):",
        "",
        "| epsilon | " + " | ".join(MECHANISMS) + " |",
        "|---:|" + "---|" * len(MECHANISMS),
    ]
    for eps in [*epsilons, None]:
        cells = []
        for m in MECHANISMS if eps is not None else ("none",):
            sel = _lookup(res, m, eps)
            cells.append(
                "—" if sel is None else f"{sel['learning_rate']:g} / {_fmt_clip(sel['clip'])} ({sel['configurations']})"
            )
        label = f"{eps:g}" if eps is not None else "non-private"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    plan = res.get("plan") or {}
    lines += [
        "",
        f"Plan of the private trials: N = {plan.get('n_train')}, expected batch {plan.get('batch_size')} "
        f"(q = {plan.get('sample_rate', 0):.4f}), T = {plan.get('steps')} steps; LMO parameters from the "
        f"`{res['search_space']}` search space. {res['trials']} trials; feature cache built in "
        f"{res['cache_seconds']:.0f} s, sweep {res['sweep_seconds'] / 60:.1f} min with the cache in place.",
    ]
    if res["failed"]:
        lines.append(f"Trials that did not finish: {', '.join(res['failed'])}.")
    return "\n".join(lines)


def _fmt_clip(clip: float | None) -> str:
    return "—" if clip is None else f"{clip:g}"


def target_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's utility targets, each with the measured value and whether it holds."""
    rows: list[dict[str, Any]] = []

    def add(what: str, measured: float | None, goal: float, higher: bool = True) -> None:
        ok = measured is not None and (measured >= goal if higher else measured <= goal)
        rows.append({"target": what, "measured": measured, "goal": goal, "met": ok})

    head, top, example = results.get("head"), results.get("top"), results.get("example")
    if head is not None:
        ref = _lookup(head, "none", None)
        add("head: non-private >= 0.76", None if ref is None else ref["test_mean"], 0.76)
        for s in head["selected"]:
            if s["mechanism"] == "gaussian" and ref is not None:
                gap = 100 * (ref["test_mean"] - s["test_mean"])
                limit = 3.0 if s["epsilon_target"] < 1 else 2.0
                add(f"head: gaussian within {limit:g} points at epsilon {s['epsilon_target']:g}", gap, limit, False)
    if top is not None:
        ref = _lookup(top, "none", None)
        add("top layers: non-private >= 0.78", None if ref is None else ref["test_mean"], 0.78)
        g8 = _lookup(top, "gaussian", 8.0)
        if g8 is not None and ref is not None:
            add(
                "top layers: gaussian within 3 points at epsilon 8",
                100 * (ref["test_mean"] - g8["test_mean"]),
                3.0,
                False,
            )
    if example is not None:
        add("example: test accuracy >= 0.65 for every seed", min(r["accuracy"] for r in example["runs"]), 0.65)
    for res in (head, top):
        if res is None:
            continue
        majority = res["majority"].get("test_accuracy")
        for m in ("laplace", "lmo"):
            sel = _lookup(res, m, 8.0)
            if sel is not None and majority is not None:
                add(f"{res['tier']}: {m} >= majority + 15 points at epsilon 8", sel["test_mean"], majority + 0.15)
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    for r in rows:
        unit = "" if "points" not in r["target"] or "majority" in r["target"] else " points"
        val = "—" if r["measured"] is None else f"{r['measured']:.3f}{unit}"
        lines.append(f"| {r['target']} | {val} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines)


def decided_comparisons(results: dict[str, dict[str, Any]]) -> str:
    """Every paired comparison of every tier, decided ones first, ``within_noise`` as such."""
    rows = []
    for key, res in results.items():
        if key not in TIERS:
            continue
        for c in res.get("comparisons", []):
            rows.append((res["tier"], c))
    if not rows:
        return "No comparisons (one mechanism per target)."
    rows.sort(key=lambda tc: (tc[1]["verdict"] == "within_noise", list(TIERS).index(tc[0]), tc[1]["epsilon_target"]))
    st = next(iter(r for k, r in results.items() if k in TIERS))["statistics"]
    lines = [
        "Paired over the seeds both cells have (test accuracy, a - b in points), Holm over each tier's "
        f"comparisons ({st['method']}, {st['correction']}); pairs whose seeds were added sequentially are charged "
        "their planned looks. Each interval is at the level its correction step used, so a verdict names a "
        "winner only when it excludes 0 (docs/statistics.md).",
        "",
        "| tier | epsilon | a | b | seeds | a - b | interval | p (adjusted) | verdict |",
        "|---|---:|---|---|---:|---:|---|---:|---|",
    ]
    for tier, c in rows:
        a, b = c["mechanisms"]
        ci = c["ci95"]
        span = "—" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
        diff = "—" if c["difference"] is None else f"{100 * c['difference']:+.1f}"
        p = "—" if c["p_value"] is None else f"{c['p_value']:.2g}"
        verdict = {"a_better": f"**{a} better**", "b_better": f"**{b} better**"}.get(c["verdict"], "within noise")
        lines.append(
            f"| {tier} | {c['epsilon_target']:g} | {a} | {b} | {c['seeds']} | {diff} | {span} | {p} | {verdict} |"
        )
    return "\n".join(lines)


def recipes_table() -> str:
    """The recipe defaults (trainers/recipes.py), as the trials used them."""
    from trainers.recipes import recipe_table

    lines = [
        "### Recipes",
        "",
        "| trainable | family | learning rate | clip | batch size | epochs | optimizer | physical batch |",
        "|---|---|---:|---:|---|---:|---|---:|",
    ]
    for r in recipe_table():
        clip = "—" if r["clip"] is None else f"{r['clip']:g}"
        physical = "all" if r["physical_batch_size"] is None else str(r["physical_batch_size"])
        lines.append(
            f"| {r['trainable']} | {r['family']} | {r['learning_rate']:g} | {clip} | {r['batch_size']} | "
            f"{r['epochs']:g} | {r['optimizer']} | {physical} |"
        )
    return "\n".join(lines)


EXAMPLE = ROOT / "examples" / "trial-minilm-mr.yaml"


def run_example(work: Path, seeds: list[int]) -> dict[str, Any]:
    """``lmo-dp train`` on ``examples/trial-minilm-mr.yaml`` with each seed: test accuracy and epsilon."""
    base = yaml.safe_load(EXAMPLE.read_text())
    rows = []
    for seed in seeds:
        cfg = {**base, "training": {**base.get("training", {}), "seed": seed}}
        path = work / f"example-seed{seed}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        r = lmo_dp(work, "train", path)
        rows.append(
            {"seed": seed, "accuracy": r["metrics"]["accuracy"], "epsilon": r["epsilon"], "seconds": r["seconds"]}
        )
    return {"mechanism": base["privacy"]["mechanism"], "epsilon_target": base["privacy"]["epsilon"], "runs": rows}


def example_table(ex: dict[str, Any]) -> str:
    accs = [r["accuracy"] for r in ex["runs"]]
    lines = [
        "### The example trial (`examples/trial-minilm-mr.yaml`)",
        "",
        f"{ex['mechanism']} noise, target epsilon {ex['epsilon_target']:g}, head recipe, one run per seed:",
        "",
        "| seed | test accuracy | epsilon spent | seconds |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['seed']} | {r['accuracy']:.3f} | {r['epsilon']:.4f} | {r['seconds']:.1f} |" for r in ex["runs"]]
    lines += ["", f"Range over seeds: {min(accs):.3f} to {max(accs):.3f}."]
    return "\n".join(lines)


def render(results: dict[str, dict[str, Any]]) -> str:
    parts = [tier_tables(r) for k, r in results.items() if k in TIERS]
    if "example" in results:
        parts.append(example_table(results["example"]))
    parts.append(recipes_table())
    parts.append("### Targets\n\n" + targets_table(target_rows(results)))
    parts.append("### Decided comparisons\n\n" + decided_comparisons(results))
    return "\n\n".join(parts)


def write_page(path: Path, body: str, stamp: str, *, tool: str = "bench_utility") -> None:
    """Replace the part of ``path`` between ``<!-- TOOL:begin -->`` and ``<!-- TOOL:end -->``."""
    begin, end = f"<!-- {tool}:begin -->", f"<!-- {tool}:end -->"
    text = path.read_text() if path.exists() else f"# Utility\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        raise SystemExit(f"{tool}: {path} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n<!-- generated by benchmarks/{tool}.py on {stamp} -->\n\n{body}\n\n{end}{tail}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="head,top", help="comma-separated: head, top (or none)")
    parser.add_argument("--examples", action="store_true", help="also run examples/trial-minilm-mr.yaml with seeds 0-4")
    parser.add_argument("--quick", action="store_true", help="a tiny slice (400 sentences, epsilon 8, one seed)")
    parser.add_argument("--write", metavar="FILE", help="replace the marked section of FILE (docs/utility.md)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--results",
        nargs="+",
        metavar="JSON",
        help="render earlier --json outputs (e.g. one per tier, run separately) instead of running",
    )
    args = parser.parse_args(argv)
    if args.results:
        results: dict[str, Any] = {}
        total = 0.0
        for path in args.results:
            saved = json.loads(Path(path).read_text())
            results.update(saved["results"])
            total += saved["seconds"]
        return _finish(args, results, total)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip() and t.strip() != "none"]
    unknown = [t for t in tiers if t not in TIERS]
    if unknown or not (tiers or args.examples):
        parser.error(f"--tiers: must list head and/or top (or none with --examples), got {args.tiers!r}")
    work = Path(tempfile.mkdtemp(prefix="lmodp-bench-utility-"))
    started = time.perf_counter()
    results = {}
    try:
        for tier in tiers:
            results[tier] = run_tier(tier, work, quick=args.quick)
            print(
                f"[{tier}] {results[tier]['trials']} trials in {results[tier]['sweep_seconds']:.0f} s", file=sys.stderr
            )
        if args.examples:
            results["example"] = run_example(work, [0, 1, 2, 3, 4])
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return _finish(args, results, time.perf_counter() - started)


def _finish(args: argparse.Namespace, results: dict[str, Any], total: float) -> dict[str, Any]:
    body = render(results)
    if args.write:
        stamp = time.strftime("%Y-%m-%d")
        write_page(Path(args.write), body + f"\n\nBenchmark time: {total / 60:.1f} min on this machine.", stamp)
    out = {"results": results, "targets": target_rows(results), "seconds": total}
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        print(body)
        print(f"\nWhole benchmark: {total / 60:.1f} min{' (quick)' if args.quick else ''}")
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
