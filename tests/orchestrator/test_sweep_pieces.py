"""The sweep's pieces without Ray: trial outcomes in each of their forms, the manifest, the Ray
address check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from noise_search.errors import InputError
from orchestrator.ray_session import RayUnavailableError, check_address
from orchestrator.sweep.outcomes import TrialOutcome, selection_rows, trial_entry
from orchestrator.sweep.specs import TrialSpec
from orchestrator.sweep.storage import MANIFEST, read_manifest, run_dir_exists, write_manifest
from orchestrator.tracking import Tracker

SPEC = TrialSpec("eps=8_laplace_seed=1", "laplace", 8.0, 1, None, None, {"u0": 0.4})


def test_an_outcome_survives_tunes_flat_metrics() -> None:
    out = TrialOutcome(
        "finished", 7.9, {"accuracy": 0.7, "val_accuracy": 0.69}, "run1", 2.5, {"learning_rate": 0.2, "clip": 1.0}
    )
    flat = out.report()
    assert flat["lmodp_status"] == "finished" and flat["epsilon_spent"] == 7.9 and flat["metric/accuracy"] == 0.7
    assert flat["hp/learning_rate"] == 0.2 and "error" not in flat
    assert TrialOutcome.from_report(flat) == out


def test_a_trial_that_failed_for_good_is_an_error_entry() -> None:
    failed = TrialOutcome.from_report({}, RuntimeError("worker died\nbadly"))
    assert failed.status == "error" and failed.error == "worker died badly"
    entry = trial_entry(SPEC, failed, "t1")
    assert entry["status"] == "error" and entry["error"] == "worker died badly" and entry["trial_id"] == "t1"
    assert entry["learning_rate"] is None and entry["epsilon_target"] == 8.0


def test_entries_report_the_resolved_hyperparameters_and_only_finished_trials_are_selected() -> None:
    done = trial_entry(
        SPEC, TrialOutcome("finished", 7.9, {"accuracy": 0.7, "loss": 0.5}, None, 1.0, {"learning_rate": 0.2})
    )
    infeasible = trial_entry(SPEC, TrialOutcome("infeasible"))
    assert done["learning_rate"] == 0.2 and "train_seconds" not in infeasible
    rows = selection_rows([done, infeasible])
    assert rows == [
        {
            "key": SPEC.key,
            "mlflow_run_id": None,
            "mechanism": "laplace",
            "epsilon_target": 8.0,
            "seed": SPEC.seed,
            "learning_rate": 0.2,
            "clip": None,
            "epochs": None,
            "trainable": None,
            "tuning_run": None,
            "epsilon": 7.9,
            "accuracy": 0.7,
        }
    ]


def test_an_outcome_from_a_finished_mlflow_run(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rid = tracker.start_run("t-outcome")
    tracker.log_params(rid, {"training.learning_rate": 0.03, "privacy.clip": None, "training.optimizer": "adam"})
    tracker.log_metrics(rid, {"epsilon_spent": 1.9, "accuracy": 0.75, "loss": 0.4}, step=3)
    tracker.end_run(rid)
    out = TrialOutcome.from_run(tracker.get_run(rid))
    assert out.status == "finished" and out.epsilon == 1.9 and out.mlflow_run_id == rid
    assert out.metrics == {"epsilon_spent": 1.9, "accuracy": 0.75}  # per-step metrics are not results
    assert out.hyperparameters == {"learning_rate": 0.03, "clip": None, "optimizer": "adam"}


def test_specs_round_trip_through_tunes_config() -> None:
    assert TrialSpec.from_dict(json.loads(json.dumps(SPEC.to_dict()))) == SPEC


def test_the_manifest_is_written_whole(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "sweep")
    assert read_manifest(run_dir) is None and not run_dir_exists(run_dir)
    write_manifest(run_dir, {"status": "running", "n": 1})
    write_manifest(run_dir, {"status": "finished", "n": 2})
    assert read_manifest(run_dir) == {"status": "finished", "n": 2} and run_dir_exists(run_dir)
    assert sorted(p.name for p in Path(run_dir).iterdir()) == [MANIFEST]  # no temporary file left


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("http://127.0.0.1:8265", "dashboard URL is for lmo-dp submit"),
        ("localhost", "must be host:port"),
        ("127.0.0.1:70000", "port must be in [1, 65535]"),
    ],
)
def test_a_malformed_ray_address_is_bad_input_naming_the_flag(address: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        check_address(address)
    assert str(err.value).startswith("--address:") and needle in str(err.value)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "127.0.0.2:1", "ray://127.0.0.1:1"])
def test_an_unreachable_ray_address_fails_fast_naming_it(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMODP_CONNECT_TIMEOUT", "3")
    started = time.perf_counter()
    with pytest.raises(RayUnavailableError) as err:
        check_address(address)
    assert str(err.value).startswith("--address:") and f"no Ray cluster answers at {address}" in str(err.value)
    assert time.perf_counter() - started < 5
