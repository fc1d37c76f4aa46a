"""The exact ziggurat sampler of per-coordinate LMO noise against the accountant's law.

The law is fixed by the MGF of ``u`` alone: ``P(|Z| > y) = M(-y)``. Every test here compares
draws or tables with that, computed by :mod:`noise_search.mgf` (the accountant's code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from noise_search import lmo_sampler, ziggurat
from noise_search.errors import ParameterError
from noise_search.lmo_sampler import abs_density, abs_tail, tail_draws, tilted_u, ziggurat_for
from noise_search.mechanisms import LMO
from noise_search.mgf import dlog_mgf, log_mgf

KS_ALPHA = 1e-4  # a correct sampler fails one test with this probability
PAPER = Path(__file__).resolve().parents[2] / "reference" / "paper_params"


def lmo(**kw) -> LMO:
    base = dict(a1=1.0, a3=0.5, a4=0.5, G_k=4.0, G_theta=0.5, E_lambda=2.0, U_a=0.5, U_b=1.5)
    base.update(kw)
    return LMO(**base)


MECHS = {
    "all three": lmo(),
    "heavy gamma tail": lmo(a3=0.0, a4=0.0, G_k=2.2, G_theta=1.0),
    "uniform away from 0": lmo(a1=0.0, a3=0.0, a4=1.0, U_a=0.5, U_b=3.0),
    "uniform from 0, gamma k < 1": lmo(a1=0.3, a3=0.5, a4=0.2, G_k=0.5, G_theta=3.0, U_a=0.0, U_b=1.0),
    "near point mass": lmo(a1=0.0, a3=0.0, a4=2.0, U_a=0.9, U_b=1.1),
    "paper fig6 eps1": LMO.from_json(PAPER / "fig6_lmo_eps1.json"),
    "paper usefulness eps0.7": LMO.from_json(PAPER / "optimized_usefulness_lmo_eps0.7.json"),
}


def conditional_cdf(mech: LMO, r: float):
    """``P(|Z| <= y | |Z| > r) = 1 - M(-y) / M(-r)`` for ``y >= r``."""
    log_tail_r = float(mech.log_mgf(-r))
    return lambda y: -np.expm1(mech.log_mgf(-np.maximum(np.asarray(y, float), r)) - log_tail_r)


@pytest.mark.parametrize("name", list(MECHS))
def test_density_and_tail_are_the_accountants_mgf(name):
    p = MECHS[name].arrays
    y = np.concatenate([[0.0], np.geomspace(1e-9, 1e3, 4000)])
    log_m = log_mgf(p, -y)[0]
    keep = log_m > -600  # where M(-y) is a normal float
    np.testing.assert_allclose(abs_tail(p, y)[keep], np.exp(log_m[keep]), rtol=1e-12)
    np.testing.assert_allclose(abs_density(p, y)[keep], np.exp(log_m[keep]) * dlog_mgf(p, -y)[0][keep], rtol=1e-12)


@pytest.mark.parametrize("name", list(MECHS))
def test_tables_cover_the_density_with_equal_areas(name):
    p = MECHS[name].arrays
    t = ziggurat_for(p).tables
    f = lambda y: abs_density(p, np.asarray(y, float))  # noqa: E731
    assert t.x.shape == t.fast.shape == (ziggurat.LAYERS,) and t.y.shape == (ziggurat.LAYERS + 1,)
    np.testing.assert_allclose(t.layer_areas(), t.area, rtol=1e-12)
    assert t.x[0] * f(t.r) == pytest.approx(t.area, rel=1e-12)  # base strip + tail = v
    assert t.area == pytest.approx(t.r * f(t.r) + abs_tail(p, np.array([t.r]))[0], rel=1e-12)
    assert np.all(np.diff(t.x[1:]) < 0) and np.all(np.diff(t.y) > 0)
    # each layer's width reaches the curve at its floor, and the fast width is under its ceiling
    assert np.all(f(t.x[1:]) <= t.y[1:-1])
    assert np.all(f(t.fast[:-1]) >= t.y[1:-1]) and np.all(t.fast <= t.x)
    assert t.y[-1] >= f(0.0) and t.y[-1] - f(0.0) < 1e-6 * f(0.0)
    assert t.fast_fraction > 0.98 and 0.99 < t.acceptance <= 1.0


@pytest.mark.parametrize("name", list(MECHS))
def test_draws_follow_the_accountants_law(name):
    mech = MECHS[name]
    z = mech.sample(200_000, 1.0, np.random.default_rng(7))
    assert stats.kstest(z, mech.noise_cdf).pvalue > KS_ALPHA
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize("name", ["all three", "heavy gamma tail", "uniform away from 0"])
def test_every_layer_gets_its_exact_mass(name):
    """A chi-square over the layers' own boundaries: a wrong wedge, tail or layer shows here."""
    mech = MECHS[name]
    t = ziggurat_for(mech.arrays).tables
    z = np.abs(mech.sample(2_000_000, 1.0, np.random.default_rng(11)))
    edges = np.concatenate([[0.0], t.x[:0:-1], [np.inf]])  # 0 < x[N-1] < ... < x[1] = r < inf
    counts = np.histogram(z, edges)[0]
    cdf = -np.expm1(mech.log_mgf(-edges[1:-1]))
    mass = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    assert stats.chisquare(counts, mass * z.size).pvalue > KS_ALPHA


TAIL_CASES = ["all three", "heavy gamma tail", "uniform away from 0", "uniform from 0, gamma k < 1"]


@pytest.mark.parametrize("name", TAIL_CASES)
def test_tail_draws_follow_the_conditional_law(name):
    mech = MECHS[name]
    r = ziggurat_for(mech.arrays).tables.r
    draws = tail_draws(mech.arrays, r, 50_000, np.random.default_rng(3))
    assert np.all(draws > r)
    assert stats.kstest(draws, conditional_cdf(mech, r)).pvalue > KS_ALPHA


def test_the_tail_check_catches_an_untilted_u():
    """The conditional-law test fails a tail that forgets to tilt u (``u`` drawn untilted)."""
    mech = MECHS["all three"]
    r = ziggurat_for(mech.arrays).tables.r
    rng = np.random.default_rng(3)
    wrong = r + rng.standard_exponential(50_000) / tilted_u(mech.arrays, 0.0, 50_000, rng)
    assert stats.kstest(wrong, conditional_cdf(mech, r)).pvalue < 1e-10


def test_tilted_u_matches_the_tilted_law():
    """E[g(u') ] = E[g(u) e^{-r u}] / M(-r); for g = e^{-s u}: M(-r - s) / M(-r)."""
    mech = MECHS["all three"]
    r = 3.0
    u = tilted_u(mech.arrays, r, 400_000, np.random.default_rng(5))
    for s in (0.5, 2.0):
        expected = np.exp(mech.log_mgf(-(r + s)) - mech.log_mgf(-r))
        assert np.mean(np.exp(-s * u)) == pytest.approx(expected, rel=5e-3)


def test_running_out_of_spares_falls_back_to_fresh_draws(monkeypatch):
    mech = MECHS["all three"]
    zig = ziggurat_for(mech.arrays)
    calls = []
    original = ziggurat.Ziggurat.sample

    def counting(self, n, rng, scale=1.0, out=None):
        calls.append(n)
        return original(self, n, rng, scale, out)

    monkeypatch.setattr(ziggurat.Ziggurat, "spare_attempts", lambda self, n: 0)
    monkeypatch.setattr(ziggurat.Ziggurat, "sample", counting)
    z = zig.sample(200_000, np.random.default_rng(9))
    assert len(calls) > 1  # the discarded positions were drawn again
    assert stats.kstest(z, mech.noise_cdf).pvalue > KS_ALPHA


def test_scale_out_and_reproducibility():
    p = MECHS["all three"].arrays
    a = lmo_sampler.sample_per_coordinate(p, 50_000, np.random.default_rng(1), 2.5)
    b = lmo_sampler.sample_per_coordinate(p, 50_000, np.random.default_rng(1), 1.0)
    np.testing.assert_allclose(a, 2.5 * b, rtol=1e-15)
    out = np.empty(50_000, np.float32)
    lmo_sampler.sample_per_coordinate(p, 50_000, np.random.default_rng(1), 2.5, out=out)
    np.testing.assert_array_equal(out, a.astype(np.float32))
    assert not np.array_equal(a, lmo_sampler.sample_per_coordinate(p, 50_000, np.random.default_rng(2), 2.5))
    # chunk boundaries and the spare region: sizes around one pass
    for n in (1, 15_999, 16_000, 16_001, 40_000):
        assert lmo_sampler.sample_per_coordinate(p, n, np.random.default_rng(n)).shape == (n,)


def test_bad_arguments_are_refused():
    p = MECHS["all three"].arrays
    with pytest.raises(ParameterError, match="scale"):
        lmo_sampler.sample_per_coordinate(p, 10, np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="out"):
        lmo_sampler.sample_per_coordinate(p, 10, np.random.default_rng(0), out=np.empty(9))
    with pytest.raises(ValueError, match="out"):
        lmo_sampler.sample_per_coordinate(p, 10, np.random.default_rng(0), out=np.empty(10, np.int64))
    with pytest.raises(ValueError, match="one mixture"):
        ziggurat_for(p.concat([p, p]))


def test_a_density_that_is_not_decreasing_is_refused():
    with pytest.raises(ValueError, match="decreasing"):
        ziggurat.build_tables(lambda y: np.exp(-y) * (1.0 + 0.5 * np.sin(40.0 * y)), lambda y: np.exp(-y))
    with pytest.raises(ValueError, match="does not fall"):
        ziggurat.build_tables(lambda y: 1.0 / (1.0 + y), lambda y: np.ones_like(y))
