"""Saved models end to end: ``training.save_model`` in configs (fast), ``lmo-dp predict``'s
argument errors (fast), and a real tiny sweep on local Ray whose kept models -- one per cell --
load in a fresh process, reproduce their trial's test accuracy and serve ``lmo-dp predict`` (slow).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import run_cli

from noise_search.errors import ParameterError
from trainers.config import TrialConfig

# --- fast: the config field and predict's argument errors --------------------------------------------


def test_save_model_defaults_to_best_and_refuses_other_values():
    base = {"model": {"trainable": "head"}, "data": {"name": "movie-reviews"}, "privacy": {"mechanism": "none"}}
    assert TrialConfig.from_dict(base).training.save_model == "best"
    for value in ("none", "all"):
        cfg = TrialConfig.from_dict({**base, "training": {"save_model": value}})
        assert cfg.training.save_model == value
    for bad in ("maybe", "NONE", 1, None):
        with pytest.raises(ParameterError, match=r"training\.save_model: input should be 'none', 'best' or 'all'"):
            TrialConfig.from_dict({**base, "training": {"save_model": bad}})
    with pytest.raises(ParameterError, match=r"training\.save_model: must be a value of its type"):
        TrialConfig.from_dict({**base, "training": {"save_model": False}})  # YAML's no / off


def test_save_model_is_neither_a_param_nor_part_of_a_trials_identity():
    from orchestrator.trial_tracking import NOT_PARAMS
    from trainers.checkpoint import NOT_IDENTITY

    assert "training.save_model" in NOT_PARAMS and "training.save_model" in NOT_IDENTITY


def test_a_bad_save_model_in_a_config_file_exits_2_with_one_line(capsys, tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text("model: {trainable: head}\ndata: {name: movie-reviews}\nprivacy: {mechanism: none}\n"
                    "training: {save_model: best-only}\n")  # fmt: skip
    r = run_cli(capsys, "train", "--config", path)
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "training.save_model" in r.err and "'none', 'best' or 'all'" in r.err


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A folder that passes predict's cheap check (an MLmodel file): enough for argument errors."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "{tmp}/nope", "--text", "x"], "--model: {tmp}/nope is not a model folder"),
        (["--model", "{tmp}", "--text", "x"], "is not an MLflow model folder (no MLmodel file)"),
        (["--model", "s3://bucket/m", "--text", "x"], "use runs:/<run_id>/model, models:/<model_id>"),
        (["--model", "runs:/", "--text", "x"], "names no run or model"),
        (["--model", "{model}"], "one of the arguments --text --input is required"),
        (["--model", "{model}", "--text", "x", "--input", "f.csv"], "not allowed with argument"),
        (["--model", "{model}", "--input", "{tmp}/missing.csv"], "--input: {tmp}/missing.csv does not exist"),
        (["--model", "{model}", "--input", "{tmp}"], "is not a regular file"),
        (["--model", "{model}", "--input", "{csv}", "--text-column", "body"], "--text-column: 'body' is not a column"),
        (["--model", "{model}", "--input", "{empty}"], "has a header but no rows"),
        (["--model", "{model}", "--input", "{ragged}"], "line 3: 1 fields, the header has 2"),
        (["--model", "{model}", "--text", "x", "--output", "{tmp}/o.csv"], "--output: only with --input"),
        (["--model", "{model}", "--input", "{csv}", "--output", "{tmp}/no/o.csv"], "does not exist"),
    ],
)
def test_predict_argument_errors_exit_2_with_one_line_before_loading(capsys, tmp_path, model_folder, args, needle):
    files = {"csv": "id,text\n1,fine\n", "empty": "id,text\n", "ragged": "id,text\n1,ok\n2\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
    subs = {"tmp": str(tmp_path), "model": str(model_folder), **{k: str(tmp_path / f"{k}.csv") for k in files}}
    r = run_cli(capsys, "predict", *[a.format(**subs) for a in args])
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and needle.format(**subs) in r.err, r.err


# --- slow: a real sweep, its models in a fresh process, lmo-dp predict ----------------------------------

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import mlflow, mlflow.pyfunc
    from trainers.data import load_dataset

    mlflow.set_tracking_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model(sys.argv[2])
    meta = model.metadata.metadata["lmodp"]
    test = load_dataset("movie-reviews").limit(60, 40).test
    table = model.predict(list(test.texts))
    labels = meta["labels"]
    correct = sum(labels.index(label) == y for label, y in zip(table["label"], test.labels))
    print(json.dumps({"accuracy": correct / len(test), "privacy": meta["privacy"], "trial_key": meta["trial_key"]}))
    """
)


def sweep_config(tmp_path: Path) -> dict:
    return {
        "experiment": "t-saved-models",
        "model": {
            "task": "classification",
            "trainable": "head",
            "max_length": 32,
            "features": {"center": None, "cache_dir": str(tmp_path / "features")},
        },
        "data": {"name": "movie-reviews", "max_train_examples": 60, "max_eval_examples": 40},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian"]},
        "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
        "grid": {"gaussian": {"learning_rate": [0.05, 0.3]}},
        "non_private": True,
        "training": {"epochs": 2, "batch_size": 20, "eval_batch_size": 64},
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 2,
        "max_retries": 0,
        "storage_path": str(tmp_path / "store"),
    }


@pytest.mark.slow
def test_a_sweep_keeps_one_model_per_cell_that_reproduces_its_test_accuracy_and_serves_predict(
    tmp_path, monkeypatch, capsys
):
    from orchestrator.model_logging import CELL_TAG, SELECTED_TAG, SELECTION_TAG, chosen_trial
    from orchestrator.selection import select_groups
    from orchestrator.sweep import run_sweep
    from orchestrator.sweep.outcomes import selection_rows
    from orchestrator.sweep_config import SweepConfig
    from orchestrator.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run_sweep(SweepConfig.from_dict(sweep_config(tmp_path)))
    trials = result["trials"]
    assert [t["status"] for t in trials] == ["finished"] * 3, trials

    # exactly one model per cell: the chosen configuration's best validation seed
    models = result["models"]
    assert [(m["epsilon_target"], m["mechanism"]) for m in models] == [(8.0, "gaussian"), (None, "none")]
    expected = {
        (sel.epsilon_target, sel.mechanism): chosen_trial(sel, group)["mlflow_run_id"]
        for sel, group in select_groups(selection_rows(trials))
    }
    assert {(m["epsilon_target"], m["mechanism"]): m["mlflow_run_id"] for m in models} == expected
    tracker = Tracker(uri)
    exp = tracker.client.get_experiment_by_name("t-saved-models")
    logged = tracker.client.search_logged_models([exp.experiment_id])
    assert sorted(m.source_run_id for m in logged) == sorted(expected.values())
    assert {m.model_id for m in logged} == {m["model_id"] for m in models}
    for m in logged:
        assert m.name == "model" and str(m.status).endswith("READY")
        assert m.tags[SELECTED_TAG] == "true" and m.tags[CELL_TAG] in ("eps_8.gaussian", "non-private")
    private = next(m for m in models if m["mechanism"] == "gaussian")
    assert "among 2" in private["selection"] and "then its only seed" in private["selection"]
    assert "not cover" in private["selection"]
    assert next(m for m in logged if m.tags[CELL_TAG] == "eps_8.gaussian").tags[SELECTION_TAG] == private["selection"]

    # a fresh process loads the kept model and reproduces its trial's logged test accuracy
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    run_id = private["mlflow_run_id"]
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, uri, private["model_uri"]],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    loaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    run = tracker.get_run(run_id)
    assert loaded["accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
    assert loaded["trial_key"] == run.data.tags["lmodp.trial_key"]
    privacy = loaded["privacy"]
    assert privacy["epsilon_spent"] == pytest.approx(run.data.metrics["epsilon_spent"], rel=1e-12)
    assert privacy["epsilon_spent"] <= privacy["epsilon_target"] == 8.0
    assert privacy["delta"] == 1e-5 and privacy["accountant"] == "rdp" and privacy["noise"]["sigma"] > 0
    assert privacy["sample_rate"] == pytest.approx(float(run.data.params["plan.sample_rate"]))
    assert privacy["steps"] == int(float(run.data.metrics["steps_taken"]))

    # lmo-dp predict (in this process: the CLI's own code path; the fresh process is above): two real
    # sentences, then a CSV, printed and written to a file
    sentences = ["A warm, funny and beautifully acted film.", "A dull, lifeless mess of a movie."]
    predict = run_cli(
        capsys, "predict", "--model", private["model_uri"], "--text", sentences[0], "--text", sentences[1], "--json"
    )
    assert predict.code == 0, predict.err[-3000:]
    out = predict.json()
    assert [p["text"] for p in out["predictions"]] == sentences
    for p in out["predictions"]:
        assert p["label"] in ("negative", "positive")
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["probability"] == max(p["probabilities"].values())
    assert out["selection"]["selected"] is True and out["selection"]["cell"] == "eps_8.gaussian"
    assert out["privacy"]["epsilon_spent"] == privacy["epsilon_spent"]

    table = tmp_path / "reviews.csv"
    table.write_text('id,text\n7,"Gripping, tender, unforgettable."\n8,"Tedious and far too long."\n')
    written = tmp_path / "labelled.csv"
    model_id_uri = f"models:/{private['model_id']}"
    predict_csv = run_cli(capsys, "predict", "--model", model_id_uri, "--input", table, "--output", written)
    assert predict_csv.code == 0, predict_csv.err[-3000:]
    assert f"2 rows labelled: {written}" in predict_csv.out
    with written.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["7", "8"]
    assert all(r["label"] in ("negative", "positive") and 0.5 <= float(r["probability"]) <= 1 for r in rows)
    printed = run_cli(capsys, "predict", "--model", model_id_uri, "--input", table)
    assert printed.code == 0 and printed.out.splitlines()[0] == "id,text,label,probability"
    assert list(csv.DictReader(printed.out.splitlines())) == rows
