"""Early stopping in sweeps (ASHA): the section's checks (fast), the selection's epsilon (fast),
and 200 real head-only trials on a loopback two-node Ray cluster with an MLflow server and S3
artifacts, where ASHA stops some trials (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli
from test_sweep import sweep_dict, write_config

from noise_search.accountants import RdpAccountant
from noise_search.events import dp_sgd_event
from noise_search.mechanisms import Gaussian, Laplace
from orchestrator.sweep.early_stopping import selection_cells
from orchestrator.sweep.specs import TrialSpec
from orchestrator.sweep_config import SweepConfig
from orchestrator.tracking import PARENT_TAG, Tracker
from trainers.cache import cache_dir

ROOT = Path(__file__).resolve().parents[2]


# --- fast: the section ---------------------------------------------------------------------------


def test_rungs_are_grace_times_powers_of_the_factor(tmp_path) -> None:
    cfg = SweepConfig.from_dict(sweep_dict(tmp_path, early_stopping={"grace_epochs": 2, "reduction_factor": 4}))
    assert cfg.early_stopping is not None
    assert cfg.early_stopping.rung_epochs(100) == (2, 8, 32)
    assert SweepConfig.from_dict(sweep_dict(tmp_path, early_stopping={})).early_stopping.rung_epochs(10) == (1, 3, 9)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"early_stopping": {"reduction_factor": 1}}, "early_stopping.reduction_factor"),
        ({"early_stopping": {"grace_epochs": 0}}, "early_stopping.grace_epochs"),
        ({"early_stopping": {"metric": "loss"}}, "early_stopping.metric"),
        ({"early_stopping": {}, "resources": {"workers": 2}}, "early_stopping: single-process trials only"),
        ({"early_stopping": {}, "training": {"epochs": None, "steps": 10}}, "early_stopping: rungs are counted"),
        ({"early_stopping": {}, "tuning": {"mean": 3}}, "early_stopping: not with a tuning section"),
    ],
    ids=["factor-1", "grace-0", "unknown-key", "data-parallel", "steps", "tuning"],
)
def test_bad_early_stopping_exits_2_naming_the_field(capsys, tmp_path, monkeypatch, overrides, needle) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_cli(capsys, "sweep", "--config", write_config(tmp_path, **overrides), "--json")
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.err
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlruns-lmodp").exists()


def test_the_selection_epsilon_composes_every_trial_of_the_cell(tmp_path) -> None:
    cfg = SweepConfig.from_dict(sweep_dict(tmp_path, early_stopping={}))
    gauss, lap = {"sigma": 3.0}, {"u0": 0.05}
    specs = [TrialSpec(f"g{i}", "gaussian", 8.0, i, 0.1, None, gauss) for i in range(6)]
    specs += [TrialSpec(f"l{i}", "laplace", 8.0, i, 0.1, None, lap) for i in range(2)]
    specs += [TrialSpec("n", "none", None, 0, 0.1, None, None), TrialSpec("x", "lmo", 8.0, 0, 0.1, None, None)]
    cells = {(c["mechanism"], c["epsilon"]): c for c in selection_cells(cfg, specs, 0.05, 200)}
    assert set(cells) == {("gaussian", 8.0), ("laplace", 8.0)}  # the reference and infeasible points spend nothing
    for (mech, m), make in ((("gaussian", 6), Gaussian(3.0)), (("laplace", 2), Laplace(0.05))):
        cell, event = cells[(mech, 8.0)], dp_sgd_event(make, 0.05, 200)
        one = RdpAccountant().compose(event).get_epsilon(1e-5)
        assert cell["runs"] == m and cell["epsilon_per_run"] == pytest.approx(one, rel=1e-12)
        # m trials composed: the same as m independent copies of the whole training, and more than one
        composed = RdpAccountant()
        for _ in range(m):
            composed.compose(event)
        assert cell["epsilon_selection"] == pytest.approx(composed.get_epsilon(1e-5), rel=1e-9)
        assert cell["epsilon_selection"] > cell["epsilon_per_run"]


# --- slow: 200 trials with early stopping on a loopback two-node cluster ------------------------------
MECHANISMS = ("gaussian", "laplace", "lmo")


def grid_of_200(tmp_path: Path) -> Path:
    """200 short head-only trials: 4 targets x 3 mechanisms x 4 learning rates (one too small to
    learn: ASHA stops those) x 4 seeds, and the reference's 2 learning rates x 4 seeds."""
    cfg = yaml.safe_load((ROOT / "examples" / "sweep-tiny.yaml").read_text())
    cfg.pop("statistics")  # a fixed grid of seeds: seeds until decided is not for early stopping
    cfg.update(experiment="t-asha-200", non_private=True, seeds=[0, 1, 2, 3], max_concurrent_trials=2)
    # the example's slice (1,000 / 300 sentences): its cached features serve the other sweep tests too
    cfg["privacy"].update(epsilons=[1.0, 2.0, 4.0, 8.0], mechanisms=list(MECHANISMS))
    # one rung, after epoch 1; no models: a stopped trial logs none anyway, and models are
    # tests/orchestrator/test_saved_models.py's subject, not this test's
    cfg["training"] = {"epochs": 2, "save_model": "none"}
    cfg["grid"] = {
        "gaussian": {"learning_rate": [0.03, 0.1, 0.3, 1e-5]},
        "laplace": {"learning_rate": [0.1, 0.2, 0.4, 1e-5]},
        "lmo": {"learning_rate": [0.1, 0.2, 0.4, 1e-5]},
        "none": {"learning_rate": [0.03, 0.1]},
    }
    cfg["early_stopping"] = {"grace_epochs": 1, "reduction_factor": 3}
    cfg["storage_path"] = str(tmp_path / "tune")  # both loopback nodes share this disk
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_200_trials_with_asha_on_a_two_node_cluster_each_once_and_the_selection_bounded(
    ray_cluster, mlflow_server, tmp_path
) -> None:
    """The sweep pipeline at 200 trials: driver on this machine, trials on both loopback nodes,
    an MLflow server with S3 artifacts, ASHA per (target, mechanism) cell."""
    config = grid_of_200(tmp_path)
    env = ray_cluster.client_env(MLFLOW_TRACKING_URI=mlflow_server.uri, LMODP_CACHE_DIR=str(cache_dir()), CI="1")
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", "--config", str(config), "--address", ray_cluster.address,
         "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, f"stdout={r.stdout[-2000:]}\nstderr={r.stderr[-4000:]}"
    result = json.loads(r.stdout)
    trials = result["trials"]
    assert len(trials) == SweepConfig.from_yaml(config).trial_count() == 200
    assert {t["status"] for t in trials} <= {"finished", "stopped"}, {t["status"] for t in trials}
    for t in trials:
        assert t["mechanism"] == "none" or t["epsilon"] <= t["epsilon_target"]
    # ASHA ranks trials within each (target, mechanism): every cell keeps a trial that ran to the end
    cells = {(t["mechanism"], t["epsilon_target"]) for t in trials}
    finished_cells = {(t["mechanism"], t["epsilon_target"]) for t in trials if t["status"] == "finished"}
    assert len(cells) == 13 and finished_cells == cells
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped and result["early_stopping"]["stopped"] == len(stopped)
    assert {(s["mechanism"], s["epsilon_target"]) for s in result["selected"]} == cells

    tracker = Tracker(mlflow_server.uri)
    exp = tracker.client.get_experiment_by_name("t-asha-200")
    runs = tracker.client.search_runs([exp.experiment_id], max_results=1000)
    children = [x for x in runs if x.data.tags.get(PARENT_TAG) == result["parent_run_id"]]
    assert len(children) == 200 and {x.info.status for x in runs} == {"FINISHED"}
    assert len({c.data.tags["lmodp.trial_key"] for c in children}) == 200  # each trial once
    assert {c.data.tags["lmodp.node_ip"] for c in children} == {ray_cluster.head_ip, *ray_cluster.worker_ips}
    by_key = {c.data.tags["lmodp.trial_key"]: c for c in children}
    for t in stopped:
        run = by_key[t["key"]]
        # noise for the full plan, fewer steps, the full plan charged; scored on validation only
        assert run.data.tags["lmodp.status"] == "stopped"
        if t["mechanism"] != "none":
            charged = run.data.metrics["epsilon_spent"]
            assert charged == pytest.approx(t["epsilon"])
            assert charged == pytest.approx(run.data.metrics["epsilon_planned"])
        assert "rung.val_accuracy" in run.data.metrics and "accuracy" not in run.data.metrics
        assert run.data.metrics["steps_taken"] < int(run.data.params["plan.steps"])

    # the returned configuration of a cell: its 16 trials composed, each at its full plan
    noisy = next(c for c in children if c.data.tags["lmodp.mechanism"] == "gaussian")
    target = float(noisy.data.tags["lmodp.epsilon_target"])
    noise = json.loads(
        Path(tracker.client.download_artifacts(noisy.info.run_id, "noise.json", str(tmp_path / "down"))).read_text()
    )
    chosen = next(s for s in result["selected"] if (s["mechanism"], s["epsilon_target"]) == ("gaussian", target))
    event = dp_sgd_event(Gaussian(noise["sigma"]), result["plan"]["sample_rate"], result["plan"]["steps"])
    assert chosen["runs"] == 16
    assert chosen["epsilon_selection"] == pytest.approx(RdpAccountant().compose(event, 16).get_epsilon(1e-5), rel=1e-9)
    assert chosen["epsilon_selection"] > chosen["epsilon_per_run"]
    page = Path(result["report"]).read_text()
    assert "Early stopping (ASHA" in page and "epsilon_selection" in page
    parent = tracker.client.get_run(result["parent_run_id"])
    assert parent.data.params["early_stopping.scheduler"] == "asha"
    assert parent.data.metrics["early_stopping.stopped"] == len(stopped)
