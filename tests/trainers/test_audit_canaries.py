"""Trial-level privacy audit: gradient canaries in real training, lower bound beside the upper bound.

Unit tests: the canary hook (rows, sampling rate, counts), the whole hook -> clip -> release ->
score chain through the real DP optimizer with the noise switched off, config errors (exit 2).
Real runs (each under 20 s on 2 cores, so not marked slow): MiniLM on 32 real movie-review
sentences, q = 1/2, T = 10 steps, M = 300 canaries, Gaussian sigma = 4 (accountant: epsilon
1.83): the correct run's lower bound stays below the accountant's epsilon and is logged to
MLflow; the same run with noise 10x too small (a deliberately broken test-only sampler) is
caught; a 2-process data-parallel run audits on the noise-adding rank.

Measured (seeds 0-4): correct runs 0.05-0.33, broken runs 3.08-3.45, against epsilon 1.83.
"""

from __future__ import annotations

import json
import math
import re
import socket

import numpy as np
import pytest
import torch
import yaml

import trainers.optimizer as optimizer_module
from noise_search.accountants import compute_epsilon
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import Gaussian, Laplace
from orchestrator.cli import main
from orchestrator.sweep_config import SweepConfig
from trainers.audit_canaries import TrialAudit
from trainers.audit_simulation import draw_canaries
from trainers.config import TrialConfig
from trainers.data import load_dataset
from trainers.engine import train
from trainers.loop_hooks import Contributions
from trainers.noise import sample_noise as real_sample_noise
from trainers.optimizer import CLIP_MARGIN, MechanismDPOptimizer
from trainers.seeds import SEED_AUDIT, derive_seed

#: the real runs (slow tests): q = 16 / 32, T = 10, M = 300
REAL = {
    "name": "audit-test",
    "experiment": "trial-audit-tests",
    "model": {"max_length": 24, "lora": {"rank": 2, "target_modules": ["query"]}},
    "data": {"name": "movie-reviews", "max_train_examples": 32, "max_eval_examples": 16},
    "privacy": {"mechanism": "gaussian", "epsilon": 2.0, "delta": 1e-5, "clip": 1.0, "params": {"sigma": 4.0}},
    "training": {"batch_size": 16, "steps": 10, "learning_rate": 5e-3, "seed": 0, "eval_batch_size": 16},
    "audit": {"canaries": 300, "confidence": 0.95},
}


def real_config(**sections) -> dict:
    out = json.loads(json.dumps(REAL))
    for section, changes in sections.items():
        out[section] = changes if changes is None else {**out.get(section, {}), **changes}
    return out


@pytest.fixture(scope="module")
def movie_reviews():
    return load_dataset("movie-reviews")


# --- the canary hook ---------------------------------------------------------------------------


def make_audit(norm: str, *, m: int, shapes, q: float, clip: float = 0.5, seed: int = 0) -> TrialAudit:
    mech = Gaussian(1.0) if norm == "l2" else Laplace(1.0)
    return TrialAudit(
        mech,
        shapes,
        clip_bound=clip,
        sample_rate=q,
        canaries=m,
        confidence=0.95,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_hook_adds_only_included_canaries_as_worst_case_rows_at_rate_q(norm):
    shapes, m, q, clip, steps = [(3, 4), (5,), (2, 2, 2)], 20, 0.3, 0.5, 1500
    audit = make_audit(norm, m=m, shapes=shapes, q=q, clip=clip)
    dim = 12 + 5 + 8
    # the same seed draws the same canaries as the mechanism-level audit's construction
    ref = draw_canaries(norm, m, dim, torch.Generator().manual_seed(0))
    assert torch.equal(ref.included, audit.canaries.included)
    dirs = torch.stack([ref.embed(torch.eye(m, dtype=torch.float64)[i]) for i in range(m)])  # (M, D) rows d_i
    seen = torch.zeros(m, dtype=torch.int64)
    for t in range(steps):
        out = audit.contributions(t)
        if out is None:
            continue
        assert [tuple(o.shape[1:]) for o in out] == shapes
        rows = torch.cat([o.reshape(len(o), -1) for o in out], dim=1).double()
        # each row is C d_i for one included canary
        match = (rows @ dirs.T) / clip**2
        idx = match.argmax(dim=1)
        torch.testing.assert_close(rows, clip * dirs[idx], rtol=1e-6, atol=1e-7)
        assert bool(ref.included[idx].all()) and len(set(idx.tolist())) == len(idx)
        seen[idx] += 1
    assert torch.equal(seen, audit.counts)
    inc = ref.included
    assert int(seen[~inc].sum()) == 0
    rate = seen[inc].double() / steps
    assert float(rate.mean()) == pytest.approx(q, abs=4 * math.sqrt(q * (1 - q) / (steps * int(inc.sum()))))
    norms = dirs.abs().sum(1) if norm == "l1" else dirs.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(m, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="expected step"):
        audit.contributions(0)


def deliberately_no_noise(mech, shape, clip_bound, generator, **kw):
    """Test-only sampler: no noise at all (so the release is exactly the canary sum)."""
    return torch.zeros(shape, dtype=kw.get("dtype", torch.float32))


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_scores_are_the_canary_counts_when_the_release_has_no_noise(norm, monkeypatch):
    """hook -> the real optimizer's clipping -> release -> observe -> score, end to end:
    with the noise switched off and empty batches, canary i scores exactly count_i C' / (q N)."""
    monkeypatch.setattr(optimizer_module, "sample_noise", deliberately_no_noise)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    params = [p for p in model.parameters()]
    q, clip, ebs, steps = 0.4, 0.7, 3.0, 30
    audit = make_audit(norm, m=24, shapes=[p.shape for p in params], q=q, clip=clip, seed=5)
    opt = MechanismDPOptimizer(
        torch.optim.SGD(params, lr=0.1),
        mechanism=Gaussian(1.0) if norm == "l2" else Laplace(1.0),
        max_grad_norm=clip,
        expected_batch_size=ebs,
        generator=torch.Generator().manual_seed(1),
        extra_contributions=audit.contributions,
    )
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad_sample = torch.zeros((0, *p.shape))
        opt.step()
        audit.observe([p.grad for p in params])
    res = audit.finish(1e-5)
    assert res.steps == steps and res.dim == sum(p.numel() for p in params)
    clipped = clip * (1 - CLIP_MARGIN) / (clip + 1e-6) * clip  # the optimizer's clip of a norm-C row
    np.testing.assert_allclose(res.scores, res.counts * clipped / ebs, rtol=1e-5, atol=1e-6)
    assert res.counts[~res.included].sum() == 0 and res.counts[res.included].min() > 0
    # every included canary scores above every excluded one: each guess that can be right is right
    n_in = int(res.included.sum())
    entry = res.audit.entries[0]  # all 24 guessed: 12 in, 12 out
    assert entry.correct == min(n_in, 12) + min(24 - n_in, 12)
    m = res.metrics()  # the metrics carry the bound and its inputs
    assert m["epsilon_lower_bound"] == res.audit.epsilon_lower_bound > 0
    assert (m["audit_canaries"], m["audit_included"]) == (24, n_in)
    assert (m["audit_correct"], m["audit_guesses"]) == (res.audit.correct, res.audit.guesses)


def test_too_many_canaries_for_the_model_is_refused_naming_the_field():
    with pytest.raises(ParameterError, match=r"^audit\.canaries: .*keep canaries <= \d+"):
        make_audit("l1", m=100_000, shapes=[(20_000_000,)], q=0.5)
    with pytest.raises(InputError, match=r"^audit\.canaries: .*GiB of directions"):
        make_audit("l2", m=3000, shapes=[(100_000,)], q=0.001)


def test_hook_and_observer_must_agree():
    audit = make_audit("l1", m=4, shapes=[(3,)], q=1.0)
    audit.contributions(0)
    with pytest.raises(RuntimeError, match="1 noisy steps added canaries but 0 were observed"):
        audit.finish(1e-5)
    with pytest.raises(ValueError, match="expected 3"):
        audit.observe([torch.zeros(4)])


# --- config ----------------------------------------------------------------------------------


def cli(tmp_path, config: dict, capsys) -> tuple[int, str, str]:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    code = main(["train", "--config", str(path), "--json"])
    out, err = capsys.readouterr()
    return code, out, err


BAD = {
    "one canary": ({"canaries": 1}, None, r"audit\.canaries: input should be greater than or equal to 2, got 1"),
    "canaries not a number": ({"canaries": "many"}, None, r"audit\.canaries: "),
    "canaries missing": ({"confidence": 0.9}, None, r"audit\.canaries: required"),
    "confidence 0": ({"canaries": 10, "confidence": 0.0}, None, r"audit\.confidence: input should be greater than 0"),
    "confidence 1": ({"canaries": 10, "confidence": 1.0}, None, r"audit\.confidence: input should be less than 1"),
    "confidence 1.5": ({"canaries": 10, "confidence": 1.5}, None, r"audit\.confidence: .*got 1\.5"),
    "unknown key": ({"canaries": 10, "guesses": 5}, None, r"audit\.guesses: unknown field"),
    "non-private run": ({"canaries": 10}, {"mechanism": "none", "epsilon": None, "params": None}, r"audit: needs a"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_audit_config_exits_2_with_one_line(case, tmp_path, capsys):
    audit, privacy, pattern = BAD[case]
    cfg = real_config(audit=None, privacy=privacy or {})
    cfg["audit"] = audit
    code, out, err = cli(tmp_path, cfg, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmo-dp train: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_audit_settings_are_typed_and_flattened_into_params():
    cfg = TrialConfig.from_dict(real_config())
    assert cfg.audit is not None and cfg.audit.canaries == 300 and cfg.audit.confidence == 0.95
    assert cfg.flat()["audit.canaries"] == 300 and cfg.flat()["audit.confidence"] == 0.95
    default = TrialConfig.from_dict({**real_config(), "audit": {"canaries": 2}})
    assert default.audit.confidence == 0.95
    assert TrialConfig.from_dict(real_config(audit=None)).audit is None


def test_sweep_audit_reaches_every_trial_config(tmp_path):
    sweep = {
        "privacy": {"epsilons": [2.0], "mechanisms": ["gaussian", "laplace"]},
        "data": {"name": "movie-reviews", "max_train_examples": 32},
        "training": {"batch_size": 16},
        "audit": {"canaries": 50, "confidence": 0.9},
        "storage_path": str(tmp_path),
    }
    cfg = SweepConfig.from_dict(sweep)
    for mech, params in (("gaussian", {"sigma": 2.0}), ("laplace", {"u0": 1.0})):
        trial = cfg.trial_config(mechanism=mech, epsilon=2.0, seed=0, learning_rate=0.01, params=params, name="x")
        assert trial.audit is not None and (trial.audit.canaries, trial.audit.confidence) == (50, 0.9)
    without = SweepConfig.from_dict({**sweep, "audit": None})
    trial = without.trial_config(
        mechanism="gaussian", epsilon=2.0, seed=0, learning_rate=0.01, params={"sigma": 2.0}, name="x"
    )
    assert trial.audit is None


def test_a_second_canary_hook_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"config\.audit installs its own"):
        train(TrialConfig.from_dict(real_config()), hooks=[Contributions(lambda step: None)])


# --- real runs ---------------------------------------------------------------------------------


def deliberately_broken_noise_10x_too_small(mech, shape, clip_bound, generator, **kw):
    """Test-only sampler: the project's noise divided by 10 (the accountant still assumes sigma)."""
    return real_sample_noise(mech, shape, clip_bound, generator, **kw) / 10.0


@pytest.mark.slow  # real training
def test_audited_run_logs_a_lower_bound_below_the_accountant_and_reproduces(
    tmp_path, monkeypatch, capsys, movie_reviews
):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(tmp_path, real_config(), capsys)
    assert code == 0, err
    r = json.loads(out)
    lower, upper = r["metrics"]["epsilon_lower_bound"], r["epsilon"]
    assert upper == compute_epsilon(Gaussian(4.0), sample_rate=0.5, steps=10, delta=1e-5).epsilon <= 2.0
    assert math.isfinite(lower) and 0.0 <= lower <= upper, r["metrics"]
    assert r["metrics"]["audit_canaries"] == 300 and 0 < r["metrics"]["audit_correct"] <= r["metrics"]["audit_guesses"]

    run = MlflowClient(tracking_uri=uri).get_run(r["mlflow_run_id"])
    assert run.data.metrics["epsilon_lower_bound"] == lower
    assert run.data.metrics["epsilon_spent"] == upper
    assert run.data.params["audit.canaries"] == "300" and run.data.params["audit.confidence"] == "0.95"

    # reproducible from the seed: the same config in-process gives the same audit and metrics
    again = train(TrialConfig.from_dict(real_config()), dataset=movie_reviews)
    assert again.metrics == r["metrics"]
    assert again.audit.counts.sum() > 0 and again.audit.steps == 10
    # the canaries draw from their own generator: the same Poisson batches as the run without audit
    plain = train(TrialConfig.from_dict(real_config(audit=None)), dataset=movie_reviews)
    assert [h.batch_size for h in plain.history] == [h.batch_size for h in again.history]
    assert plain.history[0].loss == again.history[0].loss and "epsilon_lower_bound" not in plain.metrics


@pytest.mark.slow  # real training
def test_deliberately_broken_noise_is_caught_and_sgd_scores_are_the_parameter_update(monkeypatch, movie_reviews):
    monkeypatch.setattr(optimizer_module, "sample_noise", deliberately_broken_noise_10x_too_small)
    cfg = TrialConfig.from_dict(real_config(training={"optimizer": "sgd"}))
    result = train(cfg, dataset=movie_reviews, keep_update=True)
    lower, upper = result.metrics["epsilon_lower_bound"], result.epsilon
    assert lower > upper, (lower, upper, result.audit.audit)

    # with plain SGD the parameter update is -lr times the summed privatized gradients, so the
    # score from the update (the wording) ranks the canaries exactly like ours
    cans = draw_canaries("l2", 300, result.audit.dim, torch.Generator().manual_seed(derive_seed(0, SEED_AUDIT)))
    assert np.array_equal(cans.included.numpy(), result.audit.included)
    update = torch.cat([u.reshape(-1) for u in result.parameter_update]).double()
    from_update = -cans.project(update).numpy() / cfg.training.learning_rate
    scale = np.abs(result.audit.scores).max()
    np.testing.assert_allclose(from_update, result.audit.scores, rtol=1e-3, atol=1e-4 * scale)


# --- data parallel: two real processes over gloo --------------------------------------------


def _ddp_train(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = TrialConfig.from_dict(
            real_config(
                data={"max_train_examples": 16, "max_eval_examples": 8},
                training={"batch_size": 8, "steps": 3, "threads": 1},
                audit={"canaries": 40},
            )
        )
        result = train(cfg, keep_update=True)
        torch.save(
            {
                "metrics": result.metrics,
                "audit": None if result.audit is None else (result.audit.steps, result.audit.counts.sum()),
                "update": result.parameter_update,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # gloo data parallel
def test_data_parallel_audit_runs_on_the_noise_adding_rank(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_train, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["audit"][0] == 3 and r0["audit"][1] > 0 and r1["audit"] is None
    assert r0["metrics"]["epsilon_lower_bound"] >= 0.0 and "epsilon_lower_bound" not in r1["metrics"]
    for a, b in zip(r0["update"], r1["update"], strict=True):  # one model: the same update on both ranks
        torch.testing.assert_close(a, b)
