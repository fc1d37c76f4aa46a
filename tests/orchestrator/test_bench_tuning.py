"""``benchmarks/bench_tuning.py --quick``: a grid sweep and a tuned sweep end to end (real
MiniLM features, real Ray, a real MLflow store), then what a user sees of the tuned one: the
parent run's tuning params, metrics and ``tuning.json``, the trial runs, the selection and the
report. The benchmark's ``main`` runs as is; only its sweep launcher (a ``lmo-dp sweep``
subprocess per sweep, exercised by ``test_bench_utility.py``) is replaced by the same sweep run
in this process, so both sweeps share one Ray instance."""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_tuning_benchmark_and_what_the_tuned_sweep_records(tmp_path: Path, monkeypatch, capsys) -> None:
    import ray

    from orchestrator.sweep import run_sweep
    from orchestrator.sweep_config import SweepConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_tuning

    work = tmp_path / "work"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")

    def in_process(where: Path, cfg: dict[str, Any]) -> dict[str, Any]:
        assert where == work
        started = time.perf_counter()
        out = run_sweep(SweepConfig.from_dict(cfg))
        return {**out, "wall_seconds": time.perf_counter() - started}

    monkeypatch.setattr(bench_tuning, "sweep", in_process)
    page = tmp_path / "utility.md"
    page.write_text("# Utility\n\n<!-- bench_tuning:begin -->\nold\n<!-- bench_tuning:end -->\n\ntail\n")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        bench_tuning.main(["--quick", "--json", "--work", str(work), "--write", str(page)])
    finally:
        ray.shutdown()
    out = json.loads(capsys.readouterr().out)
    (row,) = out["rows"]
    assert (row["epsilon"], row["mechanism"]) == (8.0, "gaussian")
    assert 0.0 <= row["grid_accuracy"] <= 1.0 and 0.0 <= row["tuned_accuracy"] <= 1.0
    assert row["tuned_epsilon_per_run"] < row["tuned_epsilon"] <= 8.0
    # tuned runs are noisier than grid runs at the same target: the selection is paid for
    assert float(row["tuned_noise"].split()[1]) > float(row["grid_noise"].split()[1])
    text = page.read_text()
    assert "old" not in text and text.endswith("tail\n") and "| 8 | gaussian |" in text

    import mlflow

    from noise_search.mechanisms import Gaussian

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    parent = client.get_run(out["tuned_parent"])
    assert parent.info.status == "FINISHED"
    p, m = parent.data.params, parent.data.metrics
    assert (p["tuning.mean"], p["tuning.shape"], p["tuning.distribution"], p["tuning.noise"]) == (
        "2.0", "1.0", "geometric", "selected"
    )  # fmt: skip
    k = int(m["tuning.eps_8.gaussian.runs"])
    assert k == row["tuned_runs"] >= 1
    assert m["tuning.eps_8.gaussian.epsilon_tuned"] == pytest.approx(row["tuned_epsilon"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(int(c.data.params["tuning.run"]) for c in children) == list(range(k))
    for c in children:
        assert c.data.metrics["epsilon_spent"] <= row["tuned_epsilon_per_run"] * (1 + 1e-9)

    def rank(c):  # the selection's order: validation score, then the smaller learning rate, clip, run
        p = c.data.params
        tie = float(p["training.learning_rate"]) * 1e6 + float(p["privacy.clip"]) + int(p["tuning.run"]) * 1e-9
        return (c.data.metrics["val_accuracy"], -tie)

    best = max(children, key=rank)
    assert best.data.metrics["accuracy"] == pytest.approx(row["tuned_accuracy"])
    assert parent.data.tags["lmodp.tuning.selected.eps_8.gaussian"] == best.info.run_id
    local = client.download_artifacts(parent.info.run_id, "tuning.json", str(tmp_path / "dl"))
    cells = json.loads(Path(local).read_text())["cells"]
    assert cells[0]["runs"] == k and cells[0]["accountant"] == "rdp" and cells[0]["params"]["sigma"] > 0
    tuned_page = html.unescape(Path(out["tuned_report"]).read_text())
    assert "Private hyperparameter selection" in tuned_page and "<th>epsilon_tuned</th>" in tuned_page
    assert best.info.run_id in tuned_page
    grid_page = html.unescape(Path(out["grid_report"]).read_text())
    assert "is not covered by the per-trial epsilon" in grid_page and "epsilon_tuned" not in grid_page
    # the grid sweep ran Gaussian only: no LMO note, no LMO or Laplace curve
    notes = grid_page.split("<ul>", 1)[1].split("</ul>", 1)[0]
    assert "dominated" not in grid_page and notes == "", notes
    grid_plots = json.loads((Path(out["grid_report"]).parent / "plots.json").read_text())
    assert [(s["family"], s["kind"]) for s in grid_plots["noise"]["series"]] == [("gaussian", "search")]
    assert {s["kind"] for s in grid_plots["privacy"]["series"]} == {"spent"}
    # the tuned sweep's plots show the tuned noise and epsilon beside the per-run ones
    tuned_dir = Path(out["tuned_report"]).parent
    plots = json.loads((tuned_dir / "plots.json").read_text())
    privacy = {s["kind"]: s["points"] for s in plots["privacy"]["series"]}
    assert privacy["tuned"] == [[8.0, pytest.approx(cells[0]["epsilon_tuned"])]]
    assert privacy["per_run"] == [[8.0, pytest.approx(cells[0]["epsilon_per_run"])]]
    assert len(privacy["spent"]) == k
    assert all(p[1] <= cells[0]["epsilon_per_run"] * (1 + 1e-9) for p in privacy["spent"])
    noise = {s["kind"]: s["points"] for s in plots["noise"]["series"]}
    assert noise["tuned"] == [[8.0, pytest.approx(Gaussian(cells[0]["params"]["sigma"]).mean_abs())]]
    assert noise["tuned"][0][1] > noise["search"][0][1]  # noisier than one run at the target: the selection is paid
    assert plots["privacy"]["scale"] == "linear" and plots["privacy"]["targets"] == [8.0]
    (cell,) = json.loads((tuned_dir / "privacy.json").read_text())
    assert cell["epsilon_tuned"] == pytest.approx(cells[0]["epsilon_tuned"])
    assert cell["noise"]["sigma"] == pytest.approx(cells[0]["params"]["sigma"])
    assert "epsilon tuned" in tuned_page and "the number the target bounds" in tuned_page
