"""`lmo-dp search`: the JSON contract, output files, Ray == single process, MLflow, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import run_cli, run_console

from noise_search.accountants import compute_epsilon
from noise_search.search import SearchProblem
from noise_search.search_result import SearchResult
from noise_search.spaces import PaperSpace
from orchestrator import search_runner
from orchestrator.search_outputs import output_paths, pareto_mask
from orchestrator.serialize import jsonable

Q, T = 2048 / 67349, 197
BASE = ["search", "--delta", "1e-10", "--sample-rate", str(Q), "--steps", str(T)]


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance with 2 CPUs for this module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--epsilons", ""], "--epsilons"),
        (["--epsilons", ","], "--epsilons"),
        (["--epsilons", "1,0"], "--epsilons"),
        (["--epsilons", "-0.5"], "--epsilons"),
        (["--epsilons", "1,abc"], "--epsilons"),
        (["--epsilons", "1", "--delta", "0"], "--delta"),
        (["--epsilons", "1", "--delta", "1"], "--delta"),
        (["--epsilons", "1", "--sample-rate", "0"], "--sample-rate"),
        (["--epsilons", "1", "--sample-rate", "1.01"], "--sample-rate"),
        (["--epsilons", "1", "--steps", "0"], "--steps"),
        (["--epsilons", "1", "--objective", "usefulness", "--gamma", "0"], "--gamma"),
        (["--epsilons", "1", "--objective", "usefulness"], "--gamma"),
        (["--epsilons", "1", "--gamma", "-2"], "--gamma"),
        (["--epsilons", "1", "--space", "moon"], "--space"),
        (["--epsilons", "1", "--strategy", "guess"], "--strategy"),
        (["--epsilons", "1", "--objective", "median"], "--objective"),
        (["--epsilons", "1", "--workers", "-1"], "--workers"),
        (["--epsilons", "1", "--seed", "-1"], "--seed"),
        (["--epsilons", "1", "--candidates", "10"], "--candidates"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, args, flag):
    # later flags win in argparse, so the bad value overrides the valid default in BASE
    out = tmp_path / "result.json"
    r = run_cli(capsys, *BASE, *args, "--out", out, "--json")
    assert r.code == 2
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmo-dp") and "error:" in lines[0]
    assert flag in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_paper_grid_json_and_output_files(capsys, tmp_path):
    """One real paper-grid search (326,592 candidates), in this process."""
    out = tmp_path / "sst2" / "search.json"
    r = run_cli(capsys, *BASE, "--epsilons", "3,0.3", "--workers", "0", "--out", out, "--json")
    assert r.code == 0, r.err
    assert r.out.count("\n") == 1
    data = r.json()
    assert {"results", "evaluated", "seconds", "settings"} <= set(data)
    assert data["evaluated"] == 326_592 and data["settings"]["space"] == "paper"
    assert [row["epsilon_target"] for row in data["results"]] == [0.3, 3.0]
    low, high = data["results"]
    assert low["feasible"] is False and low["params"] is None and "infeasible" in low["note"]
    assert high["feasible"] is True and high["epsilon"] <= 3.0
    for row in data["results"]:
        assert {"epsilon_target", "epsilon", "order", "params", "objective", "laplace", "gaussian"} <= set(row)

    # the result file is the same object, and loads for trainers
    saved = json.loads(out.read_text())
    assert saved["results"] == data["results"]
    loaded = SearchResult.load(out)
    for fam in ("lmo", "laplace", "gaussian"):
        assert compute_epsilon(loaded.mechanism(fam, 3.0), sample_rate=Q, steps=T, delta=1e-10).epsilon <= 3.0

    paths = output_paths(out)
    assert Path(data["files"]["csv"]) == paths["csv"] and paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    grid_rows = [x for x in rows if x["source"] == "grid"]
    assert grid_rows and all(float(x["epsilon"]) <= 3.0 for x in grid_rows)
    assert any(x["pareto"] == "1" for x in grid_rows)
    best = min(grid_rows, key=lambda x: float(x["objective"]))
    assert float(best["objective"]) == pytest.approx(high["objective"], rel=1e-12)
    assert {x["family"] for x in rows} == {"lmo", "laplace", "gaussian"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_pareto_mask():
    eps = [1.0, 2.0, 2.0, 3.0, 0.5]
    score = [5.0, 4.0, 6.0, 4.5, 7.0]
    import numpy as np

    assert pareto_mask(np.array(eps), np.array(score)).tolist() == [True, True, False, False, True]


@pytest.mark.slow  # starts Ray
def test_ray_and_single_process_give_identical_results(local_ray):
    sub = PaperSpace(weights=(0.1, 0.3, 0.9), gamma=((0.5, 1.0), (3.0, 2.0)), e_lambda=(1.0, 5.0))
    problem = SearchProblem(
        targets=(0.3, 1.5, 3.0),
        delta=1e-6,
        sample_rate=0.05,
        steps=100,
        space=sub,
        block_size=40,
        strategy="optimize",
        optimizer_generations=10,
    )
    on_ray = search_runner.run(problem, workers=2)
    local = search_runner.run(problem, workers=0)
    assert problem.n_blocks > 4 and on_ray.extra["workers"] == 2
    assert jsonable([r.to_dict() for r in on_ray.rows]) == jsonable([r.to_dict() for r in local.rows])
    assert on_ray.evaluated == local.evaluated
    for name in ("index", "epsilon", "order", "objective"):
        assert getattr(on_ray.grid, name).tolist() == getattr(local.grid, name).tolist()


@pytest.mark.slow  # starts Ray
def test_cli_on_ray_equals_cli_in_process(capsys, local_ray):
    args = [*BASE, "--epsilons", "0.5,2", "--space", "wide", "--candidates", "3000", "--seed", "5", "--json"]
    on_ray = run_cli(capsys, *args, "--workers", "2")
    local = run_cli(capsys, *args, "--workers", "0")
    assert on_ray.code == local.code == 0, on_ray.err + local.err
    a, b = on_ray.json(), local.json()
    assert a["results"] == b["results"] and a["evaluated"] == b["evaluated"] == 3000
    assert a["settings"] == b["settings"] and a["settings"]["space_details"]["seed"] == 5
    assert a["workers"] == 2 and b["workers"] == 0


@pytest.mark.slow
def test_address_joins_an_existing_multi_node_cluster(capsys, ray_cluster):
    """`--address`: the search's tasks run on a real two-node cluster (head + worker on loopback)."""
    args = [*BASE, "--epsilons", "1,3", "--space", "wide", "--candidates", "1500", "--json"]
    joined = run_console(*args, "--address", ray_cluster.address, "--workers", "2", env=ray_cluster.client_env())
    assert joined.code == 0, joined.err[-2000:]
    local = run_cli(capsys, *args, "--workers", "0")
    assert joined.json()["results"] == local.json()["results"]
    assert joined.json()["workers"] == 2


def test_mlflow_run_when_tracking_is_configured(capsys, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    args = [*BASE, "--epsilons", "2", "--space", "wide", "--candidates", "400", "--workers", "0", "--json"]
    r = run_cli(capsys, *args)
    assert r.code == 0, r.err
    data = r.json()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(data["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["space"] == "wide" and run.data.params["targets"] == "2"
    assert run.data.metrics["lmo_objective.eps_2"] == pytest.approx(data["results"][0]["objective"])
    assert run.data.metrics["gaussian_sigma.eps_2"] == pytest.approx(data["results"][0]["gaussian"]["sigma"])
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"search.json", "search.frontier.csv", "search.frontier.png"}


def test_human_output(capsys):
    r = run_cli(capsys, *BASE, "--epsilons", "2", "--space", "wide", "--candidates", "300", "--workers", "0")
    assert r.code == 0, r.err
    assert "noise search: wide space (300 candidates)" in r.out
    assert "Laplace u0" in r.out and "Gauss sigma" in r.out
