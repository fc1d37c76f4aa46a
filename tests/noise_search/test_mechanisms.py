"""Mechanism objects: validation, parameter files, samplers against the accountant's law, objectives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from noise_search.accountants import compute_epsilon
from noise_search.errors import InputError, ParameterError
from noise_search.mechanisms import LMO, Gaussian, Laplace, mechanism_from_dict

PAPER_PARAMS = Path(__file__).resolve().parents[2] / "reference" / "paper_params"
KS_ALPHA = 1e-4  # a correct sampler fails a single KS test with this probability


def lmo(**kw) -> LMO:
    base = dict(a1=0.3, a3=0.5, a4=0.2, G_k=2.0, G_theta=1.5, E_lambda=2.0, U_a=0.0, U_b=1.0)
    base.update(kw)
    return LMO(**base)


def cdf_from_mgf(mech: LMO):
    """Law the accountant assumes, through its MGF: for E ~ Exp(1) independent of u,
    P(E/u > z) = E[exp(-z u)] = M(-z), so P(E/u <= z) = 1 - M(-z). The Laplace transform
    determines the law of u, so this tests u's distribution completely."""
    return lambda z: -np.expm1(mech.log_mgf(-np.asarray(z, float)))


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"a1": -0.1}, "a1"),
        ({"G_k": 0.0}, "G_k"),
        ({"G_theta": -1.0}, "G_theta"),
        ({"E_lambda": 0.0}, "E_lambda"),
        ({"U_a": -0.5}, "U_a"),
        ({"U_a": 2.0, "U_b": 2.0}, "U_b"),
        ({"a1": float("nan")}, "a1"),
        ({"a1": "0.3"}, "a1"),
        ({"variant": "diagonal"}, "variant"),
        ({"components": ["Gamma", "Cauchy"]}, "components"),
        ({"a1": 0.0, "a3": 0.0, "a4": 0.0}, "a1"),
    ],
)
def test_lmo_rejects_out_of_range_fields_by_name(kwargs, field):
    with pytest.raises(ParameterError) as exc:
        lmo(**kwargs)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}:")


def test_lmo_rejects_infinite_noise_variance():
    # Exponential alone: u has positive density at 0 and E[1/u] = inf
    with pytest.raises(ParameterError, match="E\\[1/u\\^2\\]"):
        lmo(a1=0.0, a4=0.0)
    # Exponential + Uniform(0, b): E[1/u^2] = inf (concentration 2)
    with pytest.raises(ParameterError):
        lmo(a1=0.0)
    # ... but a Uniform bounded away from 0 makes any mix fine
    assert lmo(a1=0.0, U_a=0.5).variance() < np.inf


@pytest.mark.parametrize("bad", [{"sigma": 0.0}, {"sigma": -1.0}, {"sigma": float("inf")}])
def test_gaussian_validation(bad):
    with pytest.raises(ParameterError, match=r"^sigma:"):
        Gaussian(**bad)


def test_laplace_validation():
    with pytest.raises(ParameterError, match=r"^u0:"):
        Laplace(0.0)


def test_components_and_zero_weights_make_a_component_absent():
    a = lmo(components=["Gamma", "Uniform"])
    b = lmo(a3=0.0)
    assert a.components == ("gamma", "uniform")
    t = np.linspace(-5, 0.5, 7)
    np.testing.assert_array_equal(a.log_mgf(t), b.log_mgf(t))


# --- parameter files ------------------------------------------------------------------------


def test_paper_files_load_as_they_are():
    files = sorted(PAPER_PARAMS.glob("*.json"))
    assert len(files) == 5
    for f in files:
        mech = LMO.from_json(f)
        raw = json.loads(f.read_text())
        assert mech.E_lambda == raw["E_lambda"] and mech.G_theta == raw["G_theta"]
        assert mech.components == ("gamma", "exponential", "uniform")


def test_unknown_keys_are_ignored_and_missing_keys_named(tmp_path):
    ok = {
        "a1": 0.1,
        "a3": 0.1,
        "a4": 0.1,
        "G_k": 1,
        "G_theta": 0.5,
        "E_lambda": 5,
        "U_a": 0,
        "U_b": 1,
        "delta": 1e-5,
        "comment": "x",
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(ok))
    assert LMO.from_json(path).a1 == 0.1
    missing = dict(ok)
    del missing["G_theta"]
    with pytest.raises(ParameterError, match=r"^G_theta:"):
        LMO.from_dict(missing)
    # a component left out may omit its parameters
    no_gamma = {k: v for k, v in ok.items() if k not in ("G_k", "G_theta")}
    no_gamma["distributions"] = ["Exponential", "Uniform"]
    no_gamma["U_a"] = 0.5
    assert LMO.from_dict(no_gamma).components == ("exponential", "uniform")


def test_malformed_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        LMO.from_json(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        LMO.from_json(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        LMO.from_json(arr)


def test_round_trip_through_dict():
    for mech in (Gaussian(1.3), Laplace(0.4), lmo(variant="shared", components=["gamma", "uniform"])):
        assert mechanism_from_dict(mech.to_dict()) == mech
    with pytest.raises(ParameterError, match=r"^mechanism:"):
        mechanism_from_dict({"mechanism": "cauchy"})


# --- samplers against the accountant's distribution ---------------------------------------------

SAMPLER_CASES = [
    lmo(),
    lmo(E_lambda=5.0, a3=0.8, a1=0.1, G_k=0.5, G_theta=3.0),
    lmo(a1=0.0, U_a=0.5, U_b=3.0, variant="shared"),
]


@pytest.mark.parametrize("mech", SAMPLER_CASES)
def test_numpy_u_follows_the_accountants_law(mech, rng):
    u = mech.sample_u(40_000, rng)
    w = rng.exponential(1.0, u.size) / u
    assert stats.kstest(w, cdf_from_mgf(mech)).pvalue > KS_ALPHA


def test_ks_test_catches_the_reference_codes_scale_for_rate_mistake(rng):
    """numpy's exponential takes a scale; passing E_lambda (a rate) there is the reference bug."""
    mech = lmo(E_lambda=5.0, a3=0.8)
    p = mech.arrays
    n = 40_000
    wrong_u = (
        p.a1[0] * rng.gamma(mech.G_k, mech.G_theta, n)
        + p.a3[0] * rng.exponential(mech.E_lambda, n)  # deliberately wrong: scale = E_lambda
        + p.a4[0] * rng.uniform(mech.U_a, mech.U_b, n)
    )
    w = rng.exponential(1.0, n) / wrong_u
    assert stats.kstest(w, cdf_from_mgf(mech)).pvalue < 1e-12


@pytest.mark.parametrize("variant", ["per_coordinate", "shared"])
def test_numpy_noise_follows_the_accountants_law(variant, rng):
    mech = lmo(variant=variant)
    c = 2.5
    if variant == "shared":  # coordinates of one draw share u: test the marginal over draws
        z = np.asarray([mech.sample(3, c, rng)[0] for _ in range(4000)])
    else:
        z = mech.sample(40_000, c, rng)
    assert stats.kstest(z / c, mech.noise_cdf).pvalue > KS_ALPHA


@pytest.mark.parametrize("mech", [Gaussian(0.7), Laplace(1.7)])
def test_plain_numpy_samplers_scale_with_clip_bound(mech, rng):
    z = mech.sample(40_000, 3.0, rng) / 3.0
    law = stats.norm(scale=mech.sigma).cdf if isinstance(mech, Gaussian) else stats.laplace(scale=1 / mech.u0).cdf
    assert stats.kstest(z, law).pvalue > KS_ALPHA


def test_shared_variant_couples_coordinates_and_per_coordinate_does_not(rng):
    shared, indep = lmo(variant="shared"), lmo()
    a = np.abs(np.stack([shared.sample(2, 1.0, rng) for _ in range(20_000)]))
    b = np.abs(np.stack([indep.sample(2, 1.0, rng) for _ in range(20_000)]))
    rho_shared = stats.spearmanr(a[:, 0], a[:, 1]).statistic
    rho_indep = stats.spearmanr(b[:, 0], b[:, 1]).statistic
    assert rho_shared > 0.1
    assert abs(rho_indep) < 0.03


def test_noise_pdf_integrates_to_cdf():
    mech = lmo()
    z = np.linspace(-3, 4, 7001)
    cdf = mech.noise_cdf(z[0]) + np.concatenate(
        [[0], np.cumsum(np.diff(z) * 0.5 * (mech.noise_pdf(z)[1:] + mech.noise_pdf(z)[:-1]))]
    )
    np.testing.assert_allclose(cdf, mech.noise_cdf(z), atol=2e-6)


# --- objectives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mech",
    [Gaussian(0.8), Laplace(1.3), lmo(U_a=0.5, U_b=2.0), lmo(a1=1.0, G_k=3.0, a3=0.2, U_a=0.2, U_b=0.4)],
)
def test_objectives_agree_with_monte_carlo(mech, rng):
    n = 1_000_000
    z = mech.sample(n, 1.0, rng)
    gamma = 0.9
    abs_z = np.abs(z)
    assert mech.mean_abs() == pytest.approx(abs_z.mean(), abs=6 * abs_z.std() / math.sqrt(n))
    sq = z**2
    assert mech.variance() == pytest.approx(sq.mean(), abs=6 * sq.std() / math.sqrt(n))
    hit = abs_z <= gamma
    assert mech.usefulness(gamma) == pytest.approx(hit.mean(), abs=6 * hit.std() / math.sqrt(n))


def test_laplace_at_mean_u_is_never_worse_than_its_lmo(rng):
    """docs/privacy.md section 6: Jensen on the convex A_k(u), 1/u, 1/u^2 and exp(-gamma u)."""
    from divergence import random_lmo

    for _ in range(30):
        mech = random_lmo(rng)
        lap = Laplace(mech.mean_u())
        assert lap.mean_abs() <= mech.mean_abs() * (1 + 1e-9)
        assert lap.variance() <= mech.variance() * (1 + 1e-9)
        for gamma in (0.1, 1.0, 5.0):
            assert lap.usefulness(gamma) >= mech.usefulness(gamma) - 1e-12
        for q, steps in ((1.0, 1), (0.03, 197)):
            e_lmo = compute_epsilon(mech, sample_rate=q, steps=steps, delta=1e-10).epsilon
            e_lap = compute_epsilon(lap, sample_rate=q, steps=steps, delta=1e-10).epsilon
            assert e_lap <= e_lmo * (1 + 1e-12)
