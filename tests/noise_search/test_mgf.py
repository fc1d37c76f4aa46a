"""The LMO moment generating function: closed forms, domain, quadrature of inverse moments."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate as si
from divergence import random_lmo
from scipy.special import gamma as gamma_fn

from noise_search.mechanisms import LMO
from noise_search.mgf import MixtureArrays, dlog_mgf, log_inverse_moment, log_mgf


def mixture(**kw) -> MixtureArrays:
    base = dict(a1=0.3, a3=0.5, a4=0.2, G_k=2.0, G_theta=1.5, E_lambda=2.0, U_a=0.0, U_b=1.0)
    base.update(kw)
    return MixtureArrays.stack(**base)


def naive_closed_form(p: MixtureArrays, t: float) -> float:
    """The closed forms as the reference code evaluates them: no domain check."""
    with np.errstate(all="ignore"):
        g = (1 - p.a1[0] * t * p.G_theta[0]) ** (-p.G_k[0])
        e = p.E_lambda[0] / (p.E_lambda[0] - p.a3[0] * t)
        s = p.a4[0] * t
        un = (np.exp(s * p.U_b[0]) - np.exp(s * p.U_a[0])) / (s * (p.U_b[0] - p.U_a[0]))
    return float(g * e * un)


def test_matches_monte_carlo(rng):
    p = mixture()
    n = 2_000_000
    u = 0.3 * rng.gamma(2.0, 1.5, n) + 0.5 * rng.exponential(1 / 2.0, n) + 0.2 * rng.uniform(0, 1, n)
    for t in (-5.0, -1.0, -0.1, 0.3, 1.0):
        mc = np.exp(t * u)
        se = mc.std() / np.sqrt(n)
        assert np.exp(log_mgf(p, t)[0, 0]) == pytest.approx(mc.mean(), abs=6 * se)


def test_closed_forms_inside_domain_agree_with_naive_evaluation():
    p = mixture()
    for t in (-7.0, -2.0, -0.01, 0.5, 1.5, 2.2):
        assert np.exp(log_mgf(p, t)[0, 0]) == pytest.approx(naive_closed_form(p, t), rel=1e-10)
    # near 0 the naive uniform factor cancels catastrophically; ours follows M(t) = 1 + t E[u] + O(t^2)
    for t in (-1e-9, 0.0, 1e-9):
        assert log_mgf(p, t)[0, 0] == pytest.approx(t * p.mean()[0], rel=1e-6, abs=1e-300)


def test_gamma_with_even_shape_outside_domain_is_infinite_not_finite():
    """(1 - x)^(-2) with 1 - x < 0 is a finite positive number: the reference code's trap."""
    p = mixture(a1=0.5, G_k=2.0, G_theta=1.0, a3=0.0, a4=0.0)
    t = 5.0  # a1 * G_theta * t = 2.5 > 1
    assert np.isfinite(naive_closed_form(MixtureArrays.stack(**{**vars(p), "a3": 1e-300, "a4": 1e-300}), t))
    assert log_mgf(p, t)[0, 0] == np.inf
    # right at the boundary it is also infinite
    assert log_mgf(p, 2.0)[0, 0] == np.inf


def test_both_gamma_and_exponential_outside_domain_is_infinite():
    """Two negative 'MGFs' multiply to a positive finite number; the true MGF is +inf."""
    p = mixture(a1=0.5, G_k=1.0, G_theta=1.0, a3=1.0, E_lambda=1.0, a4=0.1)
    t = 4.0  # a1*G_theta*t = 2 > 1 and a3*t = 4 > E_lambda
    naive = naive_closed_form(p, t)
    assert np.isfinite(naive) and naive > 0
    assert log_mgf(p, t)[0, 0] == np.inf


def test_domain_boundary_per_component():
    p = mixture(a1=0.25, G_theta=2.0, a3=0.5, E_lambda=3.0)
    # Gamma needs t < 1/(a1 G_theta) = 2, Exponential t < E_lambda/a3 = 6
    assert np.isfinite(log_mgf(p, 1.999)[0, 0])
    assert log_mgf(p, 2.0)[0, 0] == np.inf
    only_exp = mixture(a1=0.0, a3=0.5, E_lambda=3.0)
    assert np.isfinite(log_mgf(only_exp, 5.999)[0, 0])
    assert log_mgf(only_exp, 6.0)[0, 0] == np.inf
    # negative arguments are always inside the domain
    assert np.all(np.isfinite(log_mgf(p, -np.logspace(-3, 200, 50))))


def test_absent_components_contribute_nothing():
    p = mixture(a3=0.0)
    q = mixture(a3=0.0, E_lambda=1e-9)  # E_lambda of an absent component is irrelevant
    t = np.linspace(-3, 1.5, 11)
    np.testing.assert_array_equal(log_mgf(p, t), log_mgf(q, t))


def test_large_arguments_stay_finite_and_accurate():
    """log space: no overflow at t = -1e6, and the uniform factor avoids cancellation."""
    p = mixture(a1=0.0, a3=0.0, a4=1.0, U_a=0.0, U_b=1.0)
    t = -1e6
    # M_U(t) = (1 - exp(t)) / (-t) exactly, here 1e-6
    assert log_mgf(p, t)[0, 0] == pytest.approx(np.log(1e-6), rel=1e-13)
    assert log_mgf(mixture(), 300.0)[0, 0] == np.inf


def test_derivative_matches_finite_differences():
    p = mixture()
    t = np.array([-30.0, -3.0, -0.5, -1e-5, 0.0, 1e-5, 0.7, 2.0])
    h = 1e-6
    fd = (log_mgf(p, t + h) - log_mgf(p, t - h)) / (2 * h)
    np.testing.assert_allclose(dlog_mgf(p, t), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("m", [1.0, 2.0])
def test_inverse_moments_match_adaptive_quadrature(m):
    rng = np.random.default_rng(4)
    for _ in range(25):
        p = random_lmo(rng).arrays
        if p.zero_concentration()[0] <= m + 0.1:
            continue

        def integrand(t: float, p=p) -> float:
            return t ** (m - 1) * np.exp(log_mgf(p, -t)[0, 0])

        ref = si.quad(integrand, 0, np.inf, limit=500, epsabs=0, epsrel=1e-12)[0] / gamma_fn(m)
        assert np.exp(log_inverse_moment(p, m)[0]) == pytest.approx(ref, rel=1e-8)


def test_inverse_moments_match_monte_carlo(rng):
    mech = LMO(a1=0.3, a3=0.5, a4=0.4, G_k=2.0, G_theta=1.5, E_lambda=2.0, U_a=0.5, U_b=1.0)
    u = mech.sample_u(2_000_000, rng)
    for m in (1.0, 2.0):
        x = u**-m
        assert np.exp(log_inverse_moment(mech.arrays, m)[0]) == pytest.approx(x.mean(), abs=6 * x.std() / 1414.2)


def test_inverse_moment_diverges_exactly_when_mass_near_zero_is_too_high():
    # Exponential alone: density > 0 at 0, E[1/u] = inf
    p = mixture(a1=0.0, a4=0.0)
    assert p.zero_concentration()[0] == 1.0
    assert log_inverse_moment(p, 1.0)[0] == np.inf
    # Gamma(k=1.5): E[1/u] finite, E[1/u^2] infinite
    g = mixture(a3=0.0, a4=0.0, G_k=1.5)
    assert np.isfinite(log_inverse_moment(g, 1.0)[0])
    assert log_inverse_moment(g, 2.0)[0] == np.inf
    # Gamma alone has closed forms: E[X^-1] = 1/(theta (k-1)), with u = a1 X
    g = mixture(a1=0.5, a3=0.0, a4=0.0, G_k=3.5, G_theta=0.7)
    assert np.exp(log_inverse_moment(g, 1.0)[0]) == pytest.approx(1 / (0.5 * 0.7 * 2.5), rel=1e-10)
    assert np.exp(log_inverse_moment(g, 2.0)[0]) == pytest.approx(1 / (0.35**2 * 2.5 * 1.5), rel=1e-10)


def test_vectorised_rows_equal_single_rows():
    rng = np.random.default_rng(9)
    mechs = [random_lmo(rng) for _ in range(17)]
    block = MixtureArrays.concat([m.arrays for m in mechs])
    t = np.array([-4.0, -1.0, 0.5, 3.0])
    lm = log_mgf(block, t)
    li = log_inverse_moment(block, 1.0, block=5)
    for i, m in enumerate(mechs):
        np.testing.assert_array_equal(lm[i], log_mgf(m.arrays, t)[0])
        assert li[i] == log_inverse_moment(m.arrays, 1.0)[0]
