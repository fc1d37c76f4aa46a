"""Provenance tags: who ran a run, where, with which code, libraries and config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.provenance import LIBRARIES, config_sha256, provenance_tags
from orchestrator.report import provenance_line
from orchestrator.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]


def test_tags_name_the_user_host_code_and_library_versions() -> None:
    tags = provenance_tags()
    assert tags["mlflow.user"] and tags["lmodp.host"] and tags["lmodp.version"] != "absent"
    assert [part.split("=")[0] for part in tags["lmodp.versions"].split()] == list(LIBRARIES)
    if (ROOT / ".git").exists():  # a checkout (CI runs on a fresh clone): the commit it is at
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["lmodp.git_dirty"] in ("true", "false")
    else:
        assert tags["lmodp.git_commit"] == "unknown"


def test_the_config_hash_ignores_key_order_and_sees_every_value() -> None:
    a = {"privacy": {"epsilon": 2.0, "delta": 1e-5}, "training": {"seed": 0}}
    b = {"training": {"seed": 0}, "privacy": {"delta": 1e-5, "epsilon": 2.0}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256({**a, "training": {"seed": 1}})


def test_every_run_carries_them_and_mlflow_records_the_user(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracker.client.get_run(tracker.start_run("prov", tags={"lmodp.host": "given-by-caller"}))
    expected = provenance_tags()
    assert run.info.user_id == expected["mlflow.user"]
    assert run.data.tags["lmodp.host"] == "given-by-caller"  # a caller's tag wins
    assert run.data.tags["lmodp.versions"] == expected["lmodp.versions"]
    line = provenance_line(run.data.tags)
    assert line.startswith(f"run by {expected['mlflow.user']} on given-by-caller; lmo-dp ")
