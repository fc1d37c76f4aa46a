"""Renyi moments of per-coordinate LMO with u hidden (docs/privacy.md, "RDP with u hidden").

Each claim of the proof is checked on its own: the binned bounds bracket an independent
quadrature; the bound on the sup over shifts is above every shift's moment, on and off the
grid, and above every even split of the shift over many coordinates (where the one-coordinate
value alone would be wrong); the add direction never exceeds the remove direction for symmetric
pairs (the two-point function of the lemma, and brute force on the subsampled pair); the
accountant lies between the proven lower bound and the revealed-u RDP bound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

from noise_search.accountants import accountants_for, compute_epsilon
from noise_search.hidden_rdp import (
    Bins,
    hidden_log_moments,
    log_moment_parts,
    log_moment_sup,
    log_moments,
    slope_bound,
    small_shift_bound,
)
from noise_search.hidden_u import log_density, max_loss
from noise_search.lower_bound import epsilon_lower_bound
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.mgf import log_mgf
from noise_search.rdp import log_expected_a
from tests.noise_search.divergence import forward_and_reverse, line_rule

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "reference" / "paper_params"
GAMMA = LMO(a1=1.0, a3=0.0, a4=0.0, G_k=3.0, G_theta=2.0, E_lambda=1.0, U_a=0.5, U_b=1.5)
MIXED = LMO(a1=0.4, a3=0.6, a4=0.3, G_k=2.0, G_theta=0.5, E_lambda=1.5, U_a=0.2, U_b=1.2)
SST2 = {"sample_rate": 2048 / 67349, "steps": 197, "delta": 1e-10}


def paper(name: str) -> LMO:
    return LMO.from_dict(json.loads((PARAMS / name).read_text()))


def quad_log_moment(mech: LMO, s: float, j: int) -> float:
    """``log int f(x)^(1-j) f(x-s)^j dx`` by adaptive quadrature, split at 0 and s (independent of the bins)."""

    def integrand(x: float) -> float:
        return math.exp((1 - j) * log_density(mech, x)[0] + j * log_density(mech, x - s)[0])

    pieces = [(-np.inf, 0.0), (0.0, s), (s, np.inf)]
    total = sum(integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-11, limit=400)[0] for a, b in pieces)
    return math.log(total)


def revealed_log_moments(mech: LMO, s: float, top: int) -> np.ndarray:
    """``log E_u[A_j(s u)]`` (the revealed-u moment) for ``j = 0..top``."""
    p = mech.scaled(s).arrays
    k = np.arange(2, top + 1, dtype=float)
    return log_expected_a(log_mgf(p, k - 1), log_mgf(p, -k))[0]


@pytest.mark.parametrize("mech", [GAMMA, MIXED, paper("fig6_lmo_eps1.json")], ids=["gamma", "mixed", "fig6-eps1"])
@pytest.mark.parametrize("s", [0.3, 1.0])
def test_binned_bounds_bracket_quadrature(mech: LMO, s: float) -> None:
    upper, lower = log_moments(mech, s, 12)
    for j in (2, 5, 12):
        exact = quad_log_moment(mech, s, j)
        assert lower[j] <= exact + 1e-9 <= upper[j] + 2e-9
        assert upper[j] - lower[j] < 0.01 * j  # the bins are fine where the mass is
    below, above = log_moment_parts(mech, s, 12)
    assert np.allclose(np.logaddexp(below, above), upper, rtol=0, atol=1e-12)


def test_a_narrow_uniform_is_laplace_and_hidden_is_at_most_revealed() -> None:
    """u uniform on [0.999, 1.001]: the moments are Laplace's (u0 = 1) to about 1e-6."""
    mech = LMO(a1=0.0, a3=0.0, a4=1.0, G_k=1.0, G_theta=1.0, E_lambda=1.0, U_a=0.999, U_b=1.001)
    upper, lower = log_moments(mech, 1.0, 40)
    revealed = revealed_log_moments(mech, 1.0, 40)
    assert np.all(lower[2:] <= revealed[2:] + 1e-9)  # joint convexity: hidden <= revealed
    assert np.all(upper[2:] - revealed[2:] < 2e-3 * np.arange(2, 41))


def test_hidden_moments_are_far_below_revealed_for_a_wide_mixture() -> None:
    mech = paper("optimized_epsilon_lmo_eps_1.0.json")
    upper, _ = log_moments(mech, 1.0, 8)
    revealed = revealed_log_moments(mech, 1.0, 8)
    assert upper[2] < revealed[2]
    assert np.all(np.isinf(revealed[3:]))  # M(j - 1) is outside its domain: revealed is useless
    assert np.all(np.isfinite(upper))


@pytest.mark.parametrize(
    "mech", [GAMMA, MIXED, paper("optimized_epsilon_lmo_eps_1.0.json")], ids=["gamma", "mixed", "opt-eps"]
)
def test_sup_bound_is_above_every_shift_and_every_split(mech: LMO) -> None:
    top = 64
    res = log_moment_sup(mech, top, max_evals=64)
    assert np.all(res.bound >= res.attained) and res.bound[0] == res.bound[1] == 0.0
    # shifts off the grid, down to tiny ones (the small-shift bound's range)
    for s in (1e-4, 0.0123, 0.271, 0.6077, 0.9991, 1.0):
        _, lower = log_moments(mech, s, top)
        assert np.all(lower[2:] / s <= res.bound[2:] + 1e-9), s
    # L1 shift 1 spread evenly over m coordinates: the moments multiply
    one = log_moments(mech, 1.0, top)[0]
    spread_exceeds_one = False
    for m in (2, 3, 5, 10, 40):
        _, lower = log_moments(mech, 1.0 / m, top)
        assert np.all(m * lower[2:] <= res.bound[2:] + 1e-9), m
        spread_exceeds_one |= bool(np.any(m * lower[2:] > one[2:] + 1e-6))
    if mech is GAMMA:  # a wide mixture: one coordinate is not the worst case at high orders
        assert spread_exceeds_one


def test_refining_tightens_and_the_bound_stays_valid() -> None:
    coarse = log_moment_sup(MIXED, 32, max_evals=13)
    fine = log_moment_sup(MIXED, 32, max_evals=120)
    assert np.all(fine.bound <= coarse.bound + 1e-12)
    assert np.all(fine.bound[2:] <= fine.attained[2:] * 1.05 + 1e-6)


def test_small_shift_bound_covers_tiny_shifts() -> None:
    big_l = slope_bound(MIXED)
    s0 = 0.01 / big_l
    small = small_shift_bound(MIXED, s0, 20)
    for s in (s0, s0 / 3, s0 / 100):
        _, lower = log_moments(MIXED, s, 20)
        assert np.all(lower[2:] / s <= small[2:] + 1e-12)
    # phi(t) <= L t: L bounds the slope of the largest loss
    t = np.array([1e-6, 1e-3, 0.1, 1.0])
    assert np.all(max_loss(MIXED, t) <= big_l * t)
    assert max_loss(MIXED, 1e-7)[0] / 1e-7 == pytest.approx(big_l, rel=1e-5)


def reverse_gap(rho: np.ndarray, q: float, alpha: float) -> np.ndarray:
    """``k(rho)`` of the lemma: forward minus reverse moment of the symmetric two-point pair, times ``1 + rho``."""
    y = 1 - q + q * rho
    yi = 1 - q + q / rho
    return y**alpha - y ** (1 - alpha) + rho * (yi**alpha - yi ** (1 - alpha))


@pytest.mark.parametrize("q", [1e-4, 0.01, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0, 7.0, 16.0, 64.0])
def test_add_direction_never_exceeds_remove_direction_for_two_point_pairs(q: float, alpha: float) -> None:
    rho = np.geomspace(1e-3, 1e3, 4001)
    k = reverse_gap(rho, q, alpha)
    scale = (1 - q + q * rho) ** alpha + rho * (1 - q + q / rho) ** alpha
    assert np.all(k >= -1e-12 * scale)
    assert np.allclose(reverse_gap(1 / rho, q, alpha), k / rho, rtol=1e-9, atol=1e-12 * scale.max())
    at_one = rho**alpha + rho ** (1 - alpha)  # q = 1: the two directions are equal (symmetry)
    assert np.all(np.abs(reverse_gap(rho, 1.0, alpha)) <= 1e-12 * at_one)


@pytest.mark.parametrize("q", [0.01, 0.3, 0.9])
@pytest.mark.parametrize("alpha", [2, 5, 12])
def test_add_direction_of_the_subsampled_hidden_u_pair_is_below_remove(q: float, alpha: int) -> None:
    mech = MIXED
    z, logw = line_rule([0.0, 1.0], n=200, scale=1.0 / mech.mean_u())
    log_q = log_density(mech, z)
    log_p = log_density(mech, z - 1.0)
    fwd, rev = forward_and_reverse(log_p, log_q, q, alpha, logw)
    assert rev <= fwd + 1e-9


def test_accountant_lies_between_the_lower_bound_and_revealed_rdp() -> None:
    mech = paper("fig6_lmo_eps0.2.json")
    hidden = compute_epsilon(mech, accountant="rdp-hidden-u", **SST2)
    revealed = compute_epsilon(mech, accountant="rdp", **SST2)
    floor = epsilon_lower_bound(mech, **SST2)
    assert floor <= hidden.epsilon < 0.5 * revealed.epsilon
    assert hidden.accountant == "rdp-hidden-u" and hidden.order is not None


def test_accountant_equals_rdp_where_u_cannot_hide() -> None:
    shared = LMO(a1=0.4, a3=0.6, a4=0.3, G_k=2.0, G_theta=0.5, E_lambda=1.5, U_a=0.2, U_b=1.2, variant="shared")
    for mech in (Gaussian(1.1), Laplace(2.0), shared):
        a = compute_epsilon(mech, accountant="rdp-hidden-u", sample_rate=0.01, steps=100, delta=1e-5)
        b = compute_epsilon(mech, accountant="rdp", sample_rate=0.01, steps=100, delta=1e-5)
        assert a.epsilon == b.epsilon
    assert "rdp-hidden-u" in accountants_for("lmo") and "pld" not in accountants_for("lmo")


def test_moments_are_cached_and_read_only() -> None:
    a = hidden_log_moments(GAMMA, 16)
    assert hidden_log_moments(GAMMA, 16) is a and not a.flags.writeable


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"mid_width": 0.0}, "mid_width"),
        ({"growth": 1.0}, "growth"),
        ({"reach": 0.5}, "reach"),
        ({"max_mid": 0}, "max_mid"),
    ],
)
def test_bad_bins_name_their_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Bins(**kwargs)


def test_bad_shift_and_order_name_their_field() -> None:
    with pytest.raises(ValueError, match="shift"):
        log_moments(GAMMA, 1.5, 4)
    with pytest.raises(ValueError, match="max_order"):
        log_moment_sup(GAMMA, 1)
