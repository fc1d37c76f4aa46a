"""The sweep report's utility view, read back from a real (SQLite) MLflow store: reference lines,
selection on validation, spread over seeds, markers set apart, the recipe of every trial.

The runs are written with the same tracker calls a sweep makes, with chosen metric values, so
the expected selection is known exactly."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from pathlib import Path

import pytest

from orchestrator.report import EmptyReportError, trial_rows, write_report
from orchestrator.report_plots import dodge, utility_points
from orchestrator.tracking import KIND_TAG, Tracker


def _child(tracker: Tracker, parent: str, mech: str, eps: float | None, seed: int, lr: float, val: float, test: float):
    run = tracker.start_run(
        "t-report", run_name=f"{mech}-{eps}-{seed}-{lr}", tags={KIND_TAG: "trial"}, parent_run_id=parent
    )
    tracker.log_params(
        run,
        {
            "privacy.mechanism": mech,
            "privacy.epsilon": eps,
            "privacy.clip": None if mech == "none" else 0.3,
            "training.seed": seed,
            "training.learning_rate": lr,
            "training.batch_size": 2048,
            "training.epochs": 40.0,
            "training.optimizer": "adam",
            "model.trainable": "head",
            "model.top_layers": None,
            "recipe.name": f"head/{'none' if mech == 'none' else 'gaussian' if mech == 'gaussian' else 'l1'}",
        },
    )
    metrics = {"accuracy": test, "val_accuracy": val}
    if eps is not None:
        metrics["epsilon_spent"] = eps * 0.999
    tracker.log_metrics(run, metrics)
    tracker.end_run(run)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Tracker, str]:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("t-report", run_name="sweep", tags={KIND_TAG: "sweep"})
    tracker.log_metrics(parent, {"baseline.majority_test_accuracy": 0.516, "trials": 10})
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for eps in (1.0, 8.0):
            # lr 0.3 wins on test but loses on validation
            _child(tracker, parent, "gaussian", eps, seed, 0.3, 0.60, 0.80 + shift)
            _child(tracker, parent, "gaussian", eps, seed, 0.1, 0.70, 0.70 + shift + eps / 100)
            _child(tracker, parent, "laplace", eps, seed, 0.2, 0.65, 0.60 + shift + eps / 100)
        _child(tracker, parent, "none", None, seed, 0.03, 0.75, 0.78 + shift)
    tracker.end_run(parent)
    return tracker, parent


def test_rows_carry_the_recipe_and_the_reference(store) -> None:
    tracker, parent = store
    rows = trial_rows(tracker, tracker.client.get_run(parent))
    assert len(rows) == 2 * (2 * 3 + 1)
    ref = [r for r in rows if r["mechanism"] == "none"]
    assert all(r["epsilon_target"] is None and r["clip"] is None for r in ref)
    assert rows[-1]["mechanism"] == "none"  # the reference sorts after every target
    g = next(r for r in rows if r["mechanism"] == "gaussian")
    assert (g["trainable"], g["recipe"], g["batch_size"], g["optimizer"]) == ("head", "head/gaussian", 2048, "adam")
    points = utility_points(rows)
    assert set(points) == {"gaussian", "laplace"}  # the reference is a line, not a point
    eps1 = points["gaussian"][0]
    assert eps1[0] == 1.0 and eps1[1:] == pytest.approx((0.72, 0.71, 0.73, 2))  # lr 0.1, chosen on validation


def test_report_page_shows_selection_references_and_recipes(store, tmp_path: Path) -> None:
    tracker, parent = store
    index, warnings = write_report(tracker, "t-report", tmp_path / "report", parent_run_id=parent)
    page = html.unescape(index.read_text())
    assert warnings == [] and "Warning:" not in page  # a finished sweep without failures
    assert "Selected configuration per target" in page and "non-private" in page
    assert "run by " in page and "lmo-dp " in page and "torch=" in page  # the parent run's provenance
    assert "majority-class baseline scores 0.516" in page
    assert "is not covered by the per-trial epsilon" in page  # the selection is not covered by it
    assert "docs/privacy.md section 7" in page  # and where the way to cover it is explained
    for col in ("trainable", "recipe", "learning_rate", "clip", "batch_size", "epochs", "optimizer"):
        assert f"<th>{col}</th>" in page
    assert (tmp_path / "report" / "utility.png").stat().st_size > 10_000
    # self-contained: every image is inlined, so the page renders in MLflow's artifact viewer and from S3
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 2 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == (tmp_path / "report" / "utility.png").read_bytes()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no reference to another file or site
    with (tmp_path / "report" / "trials.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {r["recipe"] for r in table} == {"head/gaussian", "head/l1", "head/none"}
    # every cell with its interval, every pair with its verdict: on the page and beside it
    assert "Cells: mean and 95% interval" in page and "Comparisons: paired verdicts" in page
    verdicts = json.loads((tmp_path / "report" / "verdicts.json").read_text())
    cells = {(c["mechanism"], c["epsilon_target"]): c for c in verdicts["cells"]}
    g1 = cells[("gaussian", 1.0)]
    assert g1["seeds"] == 2 and g1["test_mean"] == pytest.approx(0.72) and g1["learning_rate"] == 0.1
    lo, hi = g1["test_ci95"]
    assert lo < 0.71 and hi > 0.73 and g1["interval"] == "t over seeds (test-set size unknown)"
    assert cells[("none", None)]["stopped"] == "fixed"
    (pair,) = [c for c in verdicts["comparisons"] if c["epsilon_target"] == 1.0]
    assert pair["mechanisms"] == ["gaussian", "laplace"] and pair["difference"] == pytest.approx(0.1)
    # the shift is the same for both under each seed: no variation, so nothing to decide on
    assert pair["verdict"] == "within_noise" and "do not vary" in pair["note"]
    with (tmp_path / "report" / "cells.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(verdicts["cells"]) == 5


def test_the_sweep_says_where_its_report_is_for_every_store() -> None:
    from orchestrator.commands.sweep import report_lines
    from orchestrator.tracking import run_url

    local = {
        "report": "/w/report/index.html",
        "report_host": "head-1",
        "report_artifact": "runs:/abc/report/index.html",
    }
    assert report_lines({**local, "parent_run_url": None}) == [
        "report: /w/report/index.html (on head-1)",
        "report in MLflow: runs:/abc/report/index.html",
    ]
    url = run_url("http://10.0.0.5:5000/", "7", "abc")
    assert url == "http://10.0.0.5:5000/#/experiments/7/runs/abc" and run_url("sqlite:////m.db", "7", "abc") is None
    assert (
        report_lines({**local, "parent_run_url": url})[1] == f"report in MLflow: {url} (artifacts: report/index.html)"
    )


def test_markers_of_different_mechanisms_are_set_apart() -> None:
    xs = [dodge(2.0, i, 3) for i in range(3)]
    assert xs[1] == 2.0 and xs[0] < 2.0 < xs[2]
    assert math.log(xs[2] / xs[0]) < 0.1  # close enough to read as the same epsilon


def test_a_crashed_sweep_is_reported_with_a_warning_and_an_empty_one_not_at_all(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    crashed = tracker.start_run("t-report", run_name="sweep", tags={KIND_TAG: "sweep"})
    _child(tracker, crashed, "gaussian", 1.0, 0, 0.1, 0.7, 0.7)
    failed = tracker.start_run("t-report", run_name="bad", tags={KIND_TAG: "trial"}, parent_run_id=crashed)
    tracker.log_params(failed, {"privacy.mechanism": "laplace", "privacy.epsilon": 1.0, "trial.key": "eps=1_laplace"})
    tracker.end_run(failed, "FAILED")
    tracker.end_run(crashed, "FAILED")  # no "trials" metric: the sweep never reached its last stage
    index, warnings = write_report(tracker, "t-report", tmp_path / "r1", parent_run_id=crashed)
    assert len(warnings) == 2
    assert "ended FAILED before the sweep finished" in warnings[0] and "eps=1_laplace" in warnings[1]
    page = html.unescape(index.read_text())
    assert all(w in page for w in warnings)

    empty = tracker.start_run("t-report", run_name="sweep", tags={KIND_TAG: "sweep"})
    tracker.end_run(empty, "FAILED")
    with pytest.raises(EmptyReportError, match="has no trial runs"):
        write_report(tracker, "t-report", tmp_path / "r2", parent_run_id=empty)
    assert not (tmp_path / "r2").exists()


def test_experiments_open_as_model_training_in_the_mlflow_ui(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.start_run("t-kind", run_name="x")
    assert tracker.client.get_experiment_by_name("t-kind").tags["mlflow.experimentKind"] == "custom_model_development"
    bare = tracker.client.create_experiment("t-old")  # made before the tag existed
    tracker.start_run("t-old", run_name="y")
    assert tracker.client.get_experiment(bare).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_sweep_summary_states_a_lead_only_where_the_verdict_decides_it() -> None:
    from orchestrator.commands.sweep import selected_summary
    from orchestrator.statistics import Cell, Plan, analyse, compare

    rows = [
        {"mechanism": m, "epsilon_target": 1.0, "learning_rate": 0.1, "clip": 1.0, "seed": s, "accuracy": a,
         "val_accuracy": a, "epsilon": 1.0}
        for m, scores in (("gaussian", [0.76, 0.77, 0.75, 0.76]), ("laplace", [0.60, 0.62, 0.61, 0.60]),
                          ("lmo", [0.61, 0.60, 0.62, 0.59]))
        for s, a in enumerate(scores)
    ]  # fmt: skip
    verdicts = analyse(rows, n_test=1010, majority=0.516, plan=Plan(pairs=(("laplace", "lmo"),)))
    result = {"selected": [{"metric": "accuracy"}], **verdicts, "baselines": {"majority": {"test_accuracy": 0.516}}}
    text = "\n".join(selected_summary(result))
    assert "0.760 [0.731, 0.789]" in text  # each cell as mean [95% interval]
    assert "gaussian ahead of laplace" in text and "gaussian ahead of lmo" in text
    assert "laplace vs lmo: within noise (laplace - lmo = " in text
    assert "lmo ahead" not in text and "laplace ahead" not in text
    # undecided pairs are never worded as a lead, whatever their sign
    (c,) = compare([Cell(1.0, "a", {0: 0.7, 1: 0.6}, {}), Cell(1.0, "b", {0: 0.5, 1: 0.55}, {})])
    assert c.verdict == "within_noise"
    assert "ahead" not in "\n".join(selected_summary({**result, "comparisons": [c.to_dict()]}))
