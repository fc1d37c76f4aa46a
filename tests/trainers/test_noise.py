"""The torch noise sampler (what training draws) against the accountant's law, and its
reproducibility from an explicit generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.noise import lmo_from_uniforms, numpy_stream, sample_noise, sample_u, standard_gamma

KS_ALPHA = 1e-4  # a correct sampler fails a single KS test with this probability


def lmo(**kw) -> LMO:
    base = dict(a1=0.3, a3=0.5, a4=0.2, G_k=2.0, G_theta=1.5, E_lambda=2.0, U_a=0.0, U_b=1.0)
    base.update(kw)
    return LMO(**base)


def cdf_from_mgf(mech: LMO):
    """For E ~ Exp(1) independent of u: P(E/u <= z) = 1 - M(-z), the accountant's law of u."""
    return lambda z: -np.expm1(mech.log_mgf(-np.asarray(z, float)))


SAMPLER_CASES = [
    lmo(),
    lmo(E_lambda=5.0, a3=0.8, a1=0.1, G_k=0.5, G_theta=3.0),
    lmo(a1=0.0, U_a=0.5, U_b=3.0, variant="shared"),
]


@pytest.mark.parametrize("mech", SAMPLER_CASES)
def test_u_follows_the_accountants_law(mech, rng):
    g = torch.Generator().manual_seed(3)
    u = sample_u(mech, 40_000, g).numpy()
    w = rng.exponential(1.0, u.size) / u
    assert stats.kstest(w, cdf_from_mgf(mech)).pvalue > KS_ALPHA


def test_gamma_sampler_matches_the_gamma_law():
    g = torch.Generator().manual_seed(0)
    for k in (0.3, 1.0, 2.5, 9.0):
        x = standard_gamma(30_000, k, g, dtype=torch.float64, device="cpu").numpy()
        assert stats.kstest(x, stats.gamma(k).cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("variant", ["per_coordinate", "shared"])
def test_noise_follows_the_accountants_law(variant):
    mech = lmo(variant=variant)
    c = 2.5
    if variant == "shared":  # coordinates of one draw share u: test the marginal over draws
        z = np.asarray(
            [sample_noise(mech, 3, c, torch.Generator().manual_seed(i), dtype=torch.float64)[0] for i in range(4000)]
        )
    else:
        z = sample_noise(mech, 40_000, c, torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
    assert stats.kstest(z / c, mech.noise_cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("mech", [Gaussian(0.7), Laplace(1.7)])
def test_plain_samplers_scale_with_clip_bound(mech):
    c = 3.0
    z = sample_noise(mech, 40_000, c, torch.Generator().manual_seed(5), dtype=torch.float64).numpy() / c
    law = stats.norm(scale=mech.sigma).cdf if isinstance(mech, Gaussian) else stats.laplace(scale=1 / mech.u0).cdf
    assert stats.kstest(z, law).pvalue > KS_ALPHA


def test_sampler_is_reproducible_and_uses_only_the_generator():
    mech = lmo()
    torch.manual_seed(0)
    a = sample_noise(mech, (50, 3), 1.0, torch.Generator().manual_seed(42))
    torch.manual_seed(123)  # global state must not matter
    b = sample_noise(mech, (50, 3), 1.0, torch.Generator().manual_seed(42))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (50, 3)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("mech", SAMPLER_CASES[:2])
def test_uniform_construction_follows_the_accountants_law(mech):
    """The path devices other than the CPU take (u, then a Laplace), run here on the CPU."""
    c = 1.5
    z = lmo_from_uniforms(mech, 40_000, c, torch.Generator().manual_seed(4)).numpy() / c
    assert stats.kstest(z, mech.noise_cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_cpu_lmo_draws_in_every_dtype_and_advance_the_generator(dtype):
    g = torch.Generator().manual_seed(8)
    a = sample_noise(lmo(), (300, 7), 2.0, g, dtype=dtype)
    b = sample_noise(lmo(), (300, 7), 2.0, g, dtype=dtype)
    assert a.dtype == dtype and a.shape == (300, 7) and torch.isfinite(a).all()
    assert not torch.equal(a, b)
    ref = sample_noise(lmo(), (300, 7), 2.0, torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(a, ref.to(dtype), rtol=0, atol=0)  # one rounding from float64


def test_numpy_stream_is_a_function_of_the_generator_state():
    a = numpy_stream(torch.Generator().manual_seed(1)).bit_generator.random_raw(4)
    b = numpy_stream(torch.Generator().manual_seed(1)).bit_generator.random_raw(4)
    c = numpy_stream(torch.Generator().manual_seed(2)).bit_generator.random_raw(4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
