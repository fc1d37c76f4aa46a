"""Mechanism-level audit: the simulator, and detectors that must fire on deliberately broken noise."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import trainers.noise as torch_noise
from noise_search.calibration import calibrate
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.audit_simulation import draw_canaries, run_audit, simulate_release
from trainers.noise import sample_noise

# Small settings where the detectors still fire with a wide margin (about 1 s per audit).
Q, T, DELTA = 0.1, 100, 1e-5
SMALL = {"sample_rate": Q, "steps": T, "delta": DELTA, "dim": 1000, "canaries": 1000}
SEEDS = (0, 1)


# --- deliberately broken samplers (test-only wrappers around the real one) -------------------------
def deliberately_broken_gaussian_10x_less_noise(mech, shape, clip_bound, generator, **kw):
    """Bug (a): the sampler uses sigma / 10 while the accountant is told sigma."""
    return sample_noise(Gaussian(mech.sigma / 10), shape, clip_bound, generator, **kw)


def deliberately_broken_laplace_ignores_clip(mech, shape, clip_bound, generator, **kw):
    """Bug (b): Laplace noise with scale 1/u0 instead of C/u0 (not multiplied by the clipping bound)."""
    return sample_noise(mech, shape, 1.0, generator, **kw)


def deliberately_broken_lmo_exponential_scale(mech, shape, clip_bound, generator, **kw):
    """Bug (c): E_lambda passed to the Exponential draw as a scale (mean E_lambda) while the
    accountant treats it as a rate (mean 1/E_lambda): the real sampler fed the rate 1/E_lambda."""
    return sample_noise(dataclasses.replace(mech, E_lambda=1.0 / mech.E_lambda), shape, clip_bound, generator, **kw)


# An Exponential-dominated LMO with E_lambda far from 1, where the scale/rate mix-up matters (the
# Uniform with U_a > 0 keeps E[1/u^2] finite).
LMO_BASE = LMO(a1=0.0, a3=1.0, a4=0.1, G_k=1.0, G_theta=1.0, E_lambda=50.0, U_a=0.5, U_b=1.0,
               components=("exponential", "uniform"))  # fmt: skip


@pytest.fixture(scope="module")
def lmo_eps2() -> LMO:
    return calibrate(LMO_BASE, epsilon=2.0, delta=DELTA, sample_rate=Q, steps=T).mechanism


def _cases(lmo: LMO):
    # (mechanism with its claimed parameters, clipping bound, broken sampler)
    return {
        "gaussian": (Gaussian(2.5), 1.0, deliberately_broken_gaussian_10x_less_noise),
        "laplace": (Laplace(0.5), 10.0, deliberately_broken_laplace_ignores_clip),
        "lmo": (lmo, 1.0, deliberately_broken_lmo_exponential_scale),
    }


@pytest.mark.parametrize("name", ["gaussian", "laplace", "lmo"])
@pytest.mark.parametrize("seed", SEEDS)
def test_detector_fires_on_broken_noise(name: str, seed: int, lmo_eps2: LMO) -> None:
    mech, clip, broken = _cases(lmo_eps2)[name]
    rep = run_audit(mech, seed=seed, clip_bound=clip, noise_fn=broken, **SMALL)
    assert 1.5 < rep.epsilon < 2.5  # the claim being audited
    assert rep.epsilon_lower_bound > rep.epsilon + 1.0, rep


@pytest.mark.parametrize("name", ["gaussian", "laplace", "lmo"])
@pytest.mark.parametrize("seed", SEEDS)
def test_correct_noise_stays_below_the_accountant(name: str, seed: int, lmo_eps2: LMO) -> None:
    mech, clip, _ = _cases(lmo_eps2)[name]
    rep = run_audit(mech, seed=seed, clip_bound=clip, **SMALL)
    assert 0.0 <= rep.epsilon_lower_bound < rep.epsilon


def test_shared_lmo_variant_stays_below_the_accountant(lmo_eps2: LMO) -> None:
    mech = dataclasses.replace(lmo_eps2, variant="shared")
    rep = run_audit(mech, seed=0, **SMALL)
    assert rep.epsilon_lower_bound < rep.epsilon


def test_default_noise_is_the_projects_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    # breaking sample_noise itself (not passing noise_fn) must make the audit fire: the
    # simulator draws through trainers.noise.sample_noise, the code training uses
    monkeypatch.setattr(torch_noise, "sample_noise", deliberately_broken_gaussian_10x_less_noise)
    rep = run_audit(Gaussian(2.5), seed=0, **SMALL)
    assert rep.epsilon_lower_bound > rep.epsilon


def test_scale_rate_mixup_is_invisible_at_rate_one() -> None:
    # where E_lambda = 1 the bug draws the very same noise: only parameters like LMO_BASE expose it
    mech = dataclasses.replace(LMO_BASE, E_lambda=1.0)
    a = sample_noise(mech, (64, 32), 1.0, torch.Generator().manual_seed(5), dtype=torch.float64)
    b = deliberately_broken_lmo_exponential_scale(mech, (64, 32), 1.0, torch.Generator().manual_seed(5),
                                                  dtype=torch.float64)  # fmt: skip
    assert torch.equal(a, b)


def test_reproducible_from_the_seed() -> None:
    a = run_audit(Laplace(0.5), seed=3, **SMALL)
    b = run_audit(Laplace(0.5), seed=3, **SMALL)
    c = run_audit(Laplace(0.5), seed=4, **SMALL)
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da == db
    assert c.audit.entries != a.audit.entries


def test_release_without_noise_is_the_canary_sum() -> None:
    def no_noise(mech, shape, clip_bound, generator, **kw):
        return torch.zeros(shape, dtype=kw.get("dtype"))

    for mech, clip in ((Gaussian(1.0), 2.0), (Laplace(1.0), 3.0)):
        g = torch.Generator().manual_seed(1)
        cans = draw_canaries(mech.norm, 300, 400, g)
        release, counts = simulate_release(
            mech, cans, sample_rate=0.2, steps=50, clip_bound=clip, generator=g, noise_fn=no_noise
        )
        scores = cans.project(release)
        # orthonormal (Gaussian) or distinct one-hot (Laplace) directions: each score is C * count
        torch.testing.assert_close(scores, clip * counts, atol=1e-5, rtol=1e-5)
        assert torch.all(counts[~cans.included] == 0)
        mean = counts[cans.included].mean().item()
        assert abs(mean - 0.2 * 50) < 4 * math.sqrt(50 * 0.2 * 0.8 / cans.included.sum().item())


def test_noise_projection_has_the_mechanisms_spread() -> None:
    # no canary ever sampled: scores are pure projected noise, std sigma * C * sqrt(T) for Gaussian
    # along random unit directions, sqrt(2 T) * C / u0 for Laplace along one-hots
    for mech, clip, std in ((Gaussian(0.7), 2.0, 0.7 * 2.0 * math.sqrt(40)), (Laplace(2.0), 3.0, math.sqrt(80) * 1.5)):
        g = torch.Generator().manual_seed(2)
        cans = draw_canaries(mech.norm, 1500, 2000, g)
        release, _ = simulate_release(mech, cans, sample_rate=1e-12, steps=40, clip_bound=clip, generator=g)
        scores = cans.project(release).numpy()
        assert np.std(scores) == pytest.approx(std, rel=0.08)
        assert abs(np.mean(scores)) < 4 * std / math.sqrt(1500)


def test_directions_are_worst_case_unit_vectors() -> None:
    g = torch.Generator().manual_seed(0)
    l2 = draw_canaries("l2", 50, 200, g)
    norms = torch.linalg.vector_norm(l2.directions.double(), dim=1)
    torch.testing.assert_close(norms, torch.ones(50, dtype=torch.float64), atol=1e-6, rtol=0)
    gram = l2.directions.double() @ l2.directions.double().T
    torch.testing.assert_close(gram, torch.eye(50, dtype=torch.float64), atol=1e-5, rtol=0)
    l1 = draw_canaries("l1", 50, 200, g)
    assert len(set(l1.coords.tolist())) == 50 and set(l1.signs.tolist()) <= {-1.0, 1.0}
    dense_many = draw_canaries("l2", 30, 10, g)  # more canaries than dimensions: independent directions
    torch.testing.assert_close(
        torch.linalg.vector_norm(dense_many.directions.double(), dim=1), torch.ones(30, dtype=torch.float64),
        atol=1e-6, rtol=0,
    )  # fmt: skip
    many = draw_canaries("l1", 25, 10, g)  # coordinates reused at most ceil(25/10) times
    assert max(np.bincount(many.coords.numpy())) <= 3


def test_shared_variant_draws_one_call_per_step(lmo_eps2: LMO) -> None:
    calls = []

    def counting(mech, shape, clip_bound, generator, **kw):
        calls.append(tuple(shape))
        return sample_noise(mech, shape, clip_bound, generator, **kw)

    g = torch.Generator().manual_seed(0)
    cans = draw_canaries("l1", 10, 30, g)
    shared = dataclasses.replace(lmo_eps2, variant="shared")
    simulate_release(shared, cans, sample_rate=0.5, steps=7, clip_bound=1.0, generator=g, noise_fn=counting)
    assert calls == [(30,)] * 7
    calls.clear()
    simulate_release(lmo_eps2, cans, sample_rate=0.5, steps=7, clip_bound=1.0, generator=g, noise_fn=counting)
    assert calls == [(7, 30)]


def test_bad_inputs() -> None:
    with pytest.raises(ParameterError, match=r"^canaries"):
        run_audit(Gaussian(1.0), **{**SMALL, "canaries": 1})
    with pytest.raises(ParameterError, match=r"^dim"):
        run_audit(Gaussian(1.0), **{**SMALL, "dim": 0})
    with pytest.raises(ParameterError, match=r"^confidence"):
        run_audit(Gaussian(1.0), confidence=0.0, **SMALL)
    with pytest.raises(ParameterError, match=r"^clip_bound"):
        run_audit(Gaussian(1.0), clip_bound=-1.0, **SMALL)
    with pytest.raises(ParameterError, match=r"^sample_rate"):
        run_audit(Gaussian(1.0), **{**SMALL, "sample_rate": 0.0})

    def wrong_shape(mech, shape, clip_bound, generator, **kw):
        return torch.zeros(3, dtype=torch.float64)

    with pytest.raises(InputError, match="noise_fn"):
        run_audit(Laplace(1.0), noise_fn=wrong_shape, **SMALL)


@pytest.mark.slow
def test_full_size_audit_within_a_minute() -> None:
    # issue 6, deliverable 4: M = 1000, T = 1000, N = 10,000 in under a minute; LMO has the costliest
    # sampler (Gamma + Exponential + Uniform + Laplace per coordinate: 10^7 draws of each)
    base = LMO.from_dict({"a1": 1.5, "a3": 0.3, "a4": 0.2, "G_k": 1.0, "G_theta": 0.5, "E_lambda": 1.0, "U_a": 1.0,
                          "U_b": 2.0})  # fmt: skip
    rep = run_audit(base.scaled(0.1), sample_rate=0.1, steps=1000, delta=1e-5, dim=10_000, canaries=1000, seed=0)
    assert rep.seconds < 60.0
    assert rep.epsilon_lower_bound < rep.epsilon
