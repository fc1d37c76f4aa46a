"""A sweep with ``audit:``: every trial trains with gradient canaries, logs ``epsilon_lower_bound``
to its MLflow run, and ``lmo-dp report`` shows it beside the accountant's epsilon.

Real local Ray, real MLflow (SQLite), real MiniLM on 32 real movie-review sentences, 6 steps.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path

import pytest
from cli_helpers import run_cli

from noise_search.mechanisms import mechanism_from_dict
from orchestrator.report import COLUMNS, _fmt
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import PARENT_TAG, Tracker


def audited_sweep(tmp_path: Path) -> dict:
    return {
        "experiment": "t-sweep-audit",
        "model": {"task": "classification", "max_length": 24, "lora": {"rank": 2, "target_modules": ["query"]}},
        "data": {"name": "movie-reviews", "max_train_examples": 32, "max_eval_examples": 16},
        "privacy": {"epsilons": [8.0], "delta": 1e-5, "mechanisms": ["gaussian", "laplace"], "clip": 1.0},
        "search": {"objective": "mean-abs", "space": "paper", "strategy": "grid"},
        "training": {"steps": 6, "batch_size": 16, "learning_rate": 0.01, "eval_batch_size": 16},
        "seeds": [0],
        "resources": {"cpus_per_trial": 1, "workers": 1},
        "max_concurrent_trials": 2,
        "max_retries": 0,
        "storage_path": str(tmp_path / "store"),
        "audit": {"canaries": 100, "confidence": 0.95},
    }


def test_report_places_the_lower_bound_beside_the_upper_bound():
    assert COLUMNS.index("epsilon_lower_bound") == COLUMNS.index("epsilon") + 1


@pytest.mark.slow
def test_audited_sweep_logs_and_reports_a_lower_bound_for_every_trial(tmp_path, monkeypatch, capsys):
    from orchestrator.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run_sweep(SweepConfig.from_dict(audited_sweep(tmp_path)))
    trials = result["trials"]
    assert [t["status"] for t in trials] == ["finished", "finished"], trials

    # the MLflow child runs carry the lower bound and its inputs next to the spent epsilon
    tracker = Tracker()
    exp = tracker.client.get_experiment_by_name("t-sweep-audit")
    runs = tracker.client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result['parent_run_id']}'"
    )
    by_key = {r.data.params["trial.key"]: r for r in runs}
    assert set(by_key) == {t["key"] for t in trials}
    for t in trials:
        m = by_key[t["key"]].data.metrics
        lower, upper = m["epsilon_lower_bound"], m["epsilon_spent"]
        assert math.isfinite(lower) and 0.0 <= lower <= upper <= 8.0, m
        assert m["audit_canaries"] == 100 and m["audit_guesses"] >= m["audit_correct"]
        assert by_key[t["key"]].data.params["audit.canaries"] == "100"
        assert t["metrics"]["epsilon_lower_bound"] == lower  # and the sweep's Tune results

    # lmo-dp report: the table and the CSV show both bounds for every trial, privacy.png plots them
    out = tmp_path / "report"
    r = run_cli(capsys, "report", "--experiment", "t-sweep-audit", "--out", out, "--no-log", "--json")
    assert r.code == 0, r.err
    with (out / "trials.csv").open() as f:
        rows = {row["key"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(by_key)
    for key, run in by_key.items():
        assert float(rows[key]["epsilon_lower_bound"]) == pytest.approx(run.data.metrics["epsilon_lower_bound"])
        assert float(rows[key]["epsilon"]) == pytest.approx(run.data.metrics["epsilon_spent"])
    page = (out / "index.html").read_text()
    trials_table = page[page.index("<h2>Trials</h2>") :]
    header = trials_table[trials_table.index("<thead>") : trials_table.index("</thead>")]
    assert "<th>epsilon</th><th>epsilon_lower_bound</th>" in header
    for key, run in by_key.items():
        line = next(line for line in page.splitlines() if f"<td>{key}</td>" in line)
        lower, upper = run.data.metrics["epsilon_lower_bound"], run.data.metrics["epsilon_spent"]
        # the bound is printed rounded up, the audit's lower bound rounded down
        assert f"<td>{_fmt(upper, 'epsilon')}</td><td>{_fmt(lower, 'epsilon_lower_bound')}</td>" in line
    assert (out / "privacy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the privacy table: per cell what the runs logged, on the page, in privacy.csv and in --json
    cells = {c["mechanism"]: c for c in r.json()["privacy"]}
    assert set(cells) == {"gaussian", "laplace"}
    text = html.unescape(page)
    table = text[text.index('<table id="privacy">') :].split("</table>", 1)[0]
    for mech, cell in cells.items():
        run = next(run for run in by_key.values() if run.data.params["privacy.mechanism"] == mech)
        p, m = run.data.params, run.data.metrics
        assert (cell["delta"], cell["accountant"]) == (1e-5, "rdp")
        assert (cell["sample_rate"], cell["steps"]) == (float(p["plan.sample_rate"]), int(p["plan.steps"]))
        assert (cell["clip"], cell["clip_norm"]) == (1.0, "L2" if mech == "gaussian" else "L1")
        key = "sigma" if mech == "gaussian" else "u0"
        assert cell["noise"][key] == float(p[f"noise.{key}"])
        mechanism = mechanism_from_dict({"mechanism": mech, key: float(p[f"noise.{key}"])})
        assert cell["mean_abs"] == pytest.approx(mechanism.mean_abs())
        assert (cell["epsilon_spent"], cell["epsilon_lower_bound"]) == (m["epsilon_spent"], m["epsilon_lower_bound"])
        line = next(tr for tr in table.split("<tr>") if tr.startswith(f"<td>8</td><td>{mech}</td>"))
        for shown in ("1e-05", "rdp", f"{cell['sample_rate']:.4g}", str(cell["steps"])):
            assert f"<td>{shown}</td>" in line, (shown, line)
        assert f'<td class="wrap">{key} {cell["noise"][key]:.4g}</td>' in line, line
        upper, lower = _fmt(m["epsilon_spent"], "epsilon"), _fmt(m["epsilon_lower_bound"], "epsilon_lower_bound")
        assert f"<td>{upper}</td><td>{lower}</td>" in line, line  # rounded up, rounded down
    with (out / "privacy.csv").open() as f:
        assert {row["mechanism"]: row["delta"] for row in csv.DictReader(f)} == {
            "gaussian": "1e-05",
            "laplace": "1e-05",
        }
