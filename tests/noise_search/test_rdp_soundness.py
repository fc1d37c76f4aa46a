"""Soundness of the Laplace/LMO RDP bound against brute-force numerical divergences.

docs/privacy.md section 4 asks the implementation to establish:
1. the reverse direction D(Q || (1-q)Q + qP) is not larger than the bounded one, for the
   1-D Laplace pair over a grid of u, q, alpha;
2. the 1-D pair is the worst case in d dimensions (checked in 2-D for split shifts), for both
   sampling variants;
3. q = 1, T = 1 reproduces the unsampled formula exactly;
and the bound must never be below a true divergence, for random parameter draws.

Numerical integration is accurate to ~1e-12 here (test_quadrature_reproduces_laplace_closed_form);
comparisons allow 1e-9 relative slack on exp((alpha-1) D), nothing more.
"""

from __future__ import annotations

import numpy as np
import pytest
from divergence import (
    empirical_lmo_log_pdf_2d,
    forward_and_reverse,
    laplace_log_pdf,
    line_rule,
    lmo_log_pdf,
    log_mix,
    log_moment,
    random_lmo,
)

from noise_search.accountants import lmo_rdp_curve
from noise_search.mechanisms import LMO, Laplace
from noise_search.mgf import MixtureArrays, log_mgf
from noise_search.rdp import laplace_log_expected_a, log_expected_a, subsampled_rdp, unsampled_rdp

SLACK = 1e-9  # relative, on exp((alpha-1) D): numerical integration error only
ALPHAS = [2, 3, 5, 8, 16]
SAMPLE_RATES = [0.01, 0.1, 0.5, 0.9, 1.0]


def bound_log_moment(log_ea: np.ndarray, alpha: int, q: float) -> float:
    """(alpha-1) * per-step RDP bound at ``alpha`` from a ``log E[A_j]`` row."""
    return float(subsampled_rdp(log_ea[None, :], np.array([float(alpha)]), q)[0, 0] * (alpha - 1))


def lmo_log_ea(p: MixtureArrays, top: int) -> np.ndarray:
    k = np.arange(2, top + 1, dtype=float)
    return log_expected_a(log_mgf(p, k - 1), log_mgf(p, -k))[0]


def assert_below(true_log: float, bound_log: float) -> None:
    assert true_log <= bound_log + np.log1p(SLACK), (true_log, bound_log)


def test_quadrature_reproduces_laplace_closed_form():
    z, logw = line_rule([0.0, 1.0])
    for u in (0.1, 1.0, 5.0):
        for a in (2, 5, 16):
            num = log_moment(laplace_log_pdf(u, z - 1.0), laplace_log_pdf(u, z), a, logw)
            assert num == pytest.approx(laplace_log_expected_a(u, a)[0, a], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("u", [0.05, 0.3, 1.0, 3.0, 8.0])
def test_laplace_pair_both_directions_below_bound(u):
    """Fixed u: forward direction equals the bound; the reverse is never larger."""
    z, logw = line_rule([0.0, 1.0], scale=1.0 / u)
    lp, lq = laplace_log_pdf(u, z - 1.0), laplace_log_pdf(u, z)
    log_ea = laplace_log_expected_a(u, max(ALPHAS))[0]
    for q in SAMPLE_RATES:
        for a in ALPHAS:
            fwd, rev = forward_and_reverse(lp, lq, q, a, logw)
            bound = bound_log_moment(log_ea, a, q)
            # the binomial expansion is an identity for the fixed-u pair
            assert fwd == pytest.approx(bound, rel=1e-9, abs=1e-12)
            assert_below(rev, bound)


def test_lmo_random_draws_1d_both_directions_below_bound():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(12):
        mech = random_lmo(rng)
        p = mech.arrays
        z, logw = line_rule([0.0, 1.0], scale=1.0 / mech.mean_u())
        lp, lq = lmo_log_pdf(p, z - 1.0), lmo_log_pdf(p, z)
        log_ea = lmo_log_ea(p, max(ALPHAS))
        for q in SAMPLE_RATES:
            for a in ALPHAS:
                bound = bound_log_moment(log_ea, a, q)
                if not np.isfinite(bound):
                    continue
                fwd, rev = forward_and_reverse(lp, lq, q, a, logw)
                assert_below(fwd, bound)
                assert_below(rev, bound)
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("split", [0.5, 0.25, 0.9])
def test_lmo_per_coordinate_2d_split_shift_below_1d_bound(split):
    """Independent u per coordinate: a shift (s, 1-s) of L1 norm 1 is bounded by the 1-D pair."""
    rng = np.random.default_rng(11)
    s1, s2 = split, 1.0 - split
    r1, w1 = line_rule([0.0, s1], 120)
    r2, w2 = line_rule([0.0, s2], 120)
    logw = w1[:, None] + w2[None, :]
    for _ in range(3):
        mech = random_lmo(rng)
        p = mech.arrays
        lq = lmo_log_pdf(p, r1)[:, None] + lmo_log_pdf(p, r2)[None, :]
        lp = lmo_log_pdf(p, r1 - s1)[:, None] + lmo_log_pdf(p, r2 - s2)[None, :]
        log_ea = lmo_log_ea(p, 8)
        for q in (0.05, 0.5, 1.0):
            for a in (2, 3, 5, 8):
                bound = bound_log_moment(log_ea, a, q)
                if not np.isfinite(bound):
                    continue
                fwd, rev = forward_and_reverse(lp.ravel(), lq.ravel(), q, a, logw.ravel())
                assert_below(fwd, bound)
                assert_below(rev, bound)


@pytest.mark.parametrize("split", [0.5, 0.2])
def test_lmo_shared_u_2d_split_shift_below_1d_bound(split):
    """One u shared by both coordinates: checked on an empirical (atomic) u distribution, for
    which the densities and the bound (with the atoms' MGF) are both exact."""
    rng = np.random.default_rng(5)
    mech = LMO(a1=0.4, a3=0.3, a4=0.5, G_k=2.0, G_theta=0.8, E_lambda=2.0, U_a=0.0, U_b=1.5, variant="shared")
    atoms = mech.sample_u(150, rng)
    s1, s2 = split, 1.0 - split
    r1, w1 = line_rule([0.0, s1], 100)
    r2, w2 = line_rule([0.0, s2], 100)
    logw = (w1[:, None] + w2[None, :]).ravel()
    lq = empirical_lmo_log_pdf_2d(atoms, r1, r2).ravel()
    lp = empirical_lmo_log_pdf_2d(atoms, r1 - s1, r2 - s2).ravel()
    k = np.arange(2, 9, dtype=float)
    emp_log_mgf = lambda t: np.log(np.mean(np.exp(np.outer(t, atoms)), axis=1))[None, :]  # noqa: E731
    log_ea = log_expected_a(emp_log_mgf(k - 1), emp_log_mgf(-k))[0]
    for q in (0.05, 0.5, 1.0):
        for a in (2, 3, 5, 8):
            bound = bound_log_moment(log_ea, a, q)
            fwd, rev = forward_and_reverse(lp, lq, q, a, logw)
            assert_below(fwd, bound)
            assert_below(rev, bound)


def test_splitting_the_shift_lowers_each_term():
    """Superadditivity of s -> log E_u[A_k(s u)], the heart of the dimension argument."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = random_lmo(rng).arrays
        for k in (2, 3, 5, 8):
            for s in (0.1, 0.3, 0.5):

                def f(shift: float, k=k, p=p) -> float:
                    scaled = MixtureArrays.stack(
                        a1=p.a1 * shift,
                        a3=p.a3 * shift,
                        a4=p.a4 * shift,
                        G_k=p.G_k,
                        G_theta=p.G_theta,
                        E_lambda=p.E_lambda,
                        U_a=p.U_a,
                        U_b=p.U_b,
                    )
                    return lmo_log_ea(scaled, k)[k]

                whole = f(1.0)
                if np.isfinite(whole):
                    assert f(s) + f(1.0 - s) <= whole * (1 + 1e-12) + 1e-15


def test_q1_t1_reproduces_the_unsampled_formula_exactly():
    mech = LMO.from_dict({"a1": 0.1, "a3": 0.1, "a4": 0.2, "G_theta": 1, "G_k": 2, "E_lambda": 5, "U_b": 8, "U_a": 7})
    orders = np.arange(2, 40, dtype=float)
    curve = lmo_rdp_curve(mech, 1.0, orders)
    k = orders
    m_pos = np.exp(mech.log_mgf(k - 1))
    m_neg = np.exp(mech.log_mgf(-k))
    direct = np.log(k / (2 * k - 1) * m_pos + (k - 1) / (2 * k - 1) * m_neg) / (k - 1)
    finite = np.isfinite(direct)
    assert np.array_equal(np.isfinite(curve), finite)
    np.testing.assert_allclose(curve[finite], direct[finite], rtol=1e-13)
    log_ea = lmo_log_ea(mech.arrays, 39)
    np.testing.assert_array_equal(subsampled_rdp(log_ea[None], orders, 1.0), unsampled_rdp(log_ea[None], orders))


def test_point_mass_mixture_equals_laplace():
    """LMO whose u is (numerically) a point mass gives the Laplace RDP curve."""
    u0, width = 0.7, 1e-7
    mech = LMO(a1=0, a3=0, a4=1.0, G_k=1, G_theta=1, E_lambda=1, U_a=u0 - width / 2, U_b=u0 + width / 2)
    orders = np.arange(2, 257, dtype=float)
    for q in (1.0, 0.03):
        np.testing.assert_allclose(lmo_rdp_curve(mech, q, orders), lmo_rdp_curve(Laplace(u0), q, orders), rtol=1e-9)
    # the atomic representation of a point mass is exactly Laplace
    exact = log_expected_a(u0 * np.arange(1, 256.0)[None, :], -u0 * np.arange(2, 257.0)[None, :])
    np.testing.assert_array_equal(exact, laplace_log_expected_a(u0, 256))


def test_subsampling_never_hurts_and_rdp_grows_with_order():
    rng = np.random.default_rng(2)
    orders = np.arange(2, 60, dtype=float)
    for _ in range(10):
        mech = random_lmo(rng)
        full = lmo_rdp_curve(mech, 1.0, orders)
        for q in (0.5, 0.1, 0.01):
            sub = lmo_rdp_curve(mech, q, orders)
            fin = np.isfinite(full)
            assert np.all(sub[fin] <= full[fin] * (1 + 1e-12))
            assert np.array_equal(np.isfinite(sub), fin)
            assert np.all(np.diff(sub[fin]) >= -1e-12)


def test_mix_helper_is_a_density():
    z, logw = line_rule([0.0, 1.0])
    lp, lq = laplace_log_pdf(1.3, z - 1.0), laplace_log_pdf(1.3, z)
    assert np.exp(log_moment(log_mix(lp, lq, 0.3), lq, 1.0, logw)) == pytest.approx(1.0, rel=1e-12)
