"""The epsilon lower bound (noise_search/lower_bound.py): exact bin masses, below the truth at
T = 1 (quadrature of the continuous pair, both directions), close to the tight Laplace value, and
tighter as the bins get finer. (tests/noise_search/test_reaccount_paper_params.py checks it stays
below the proven RDP bound of every paper file.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noise_search.accountants import compute_epsilon
from noise_search.errors import ParameterError
from noise_search.lower_bound import Binning, binned_pair, epsilon_lower_bound, log_bin_mass, lower_bound_pld
from noise_search.mechanisms import LMO, Laplace

ROOT = Path(__file__).resolve().parents[2]
GAMMA = LMO.from_dict(
    {"a1": 1.0, "a3": 0.0, "a4": 0.0, "G_k": 3.0, "G_theta": 2.0, "E_lambda": 1.0, "U_a": 0.5, "U_b": 1.5}
)
SST2 = {"sample_rate": 2048 / 67349, "steps": 197, "delta": 1e-10}


def paper(name: str) -> LMO:
    return LMO.from_dict(json.loads((ROOT / "reference" / "paper_params" / name).read_text()))


@pytest.mark.parametrize(
    "mech", [Laplace(0.7), GAMMA, paper("fig6_lmo_eps1.json")], ids=["laplace", "gamma", "fig6-eps1"]
)
def test_bin_masses_are_the_noise_law(mech) -> None:
    edges = Binning(width=0.01, core=5.0).edges()
    masses = np.exp(log_bin_mass(mech, edges[:-1], edges[1:]))
    assert masses.sum() == pytest.approx(1.0, abs=1e-12)
    inner = np.isfinite(edges[:-1]) & np.isfinite(edges[1:])
    cdf = mech.noise_cdf(edges[1:][inner]) - mech.noise_cdf(edges[:-1][inner])
    assert np.allclose(masses[inner], cdf, rtol=1e-6, atol=1e-15)
    # the far tail keeps its relative accuracy where 1 - cdf would round to 0
    far = log_bin_mass(mech, np.array([200.0]), np.array([np.inf]))[0]
    expected = float(mech.log_mgf(-200.0)) if isinstance(mech, LMO) else -mech.u0 * 200.0
    assert np.isfinite(far) and far == pytest.approx(np.log(0.5) + expected, rel=1e-9)
    lower, upper = binned_pair(mech, 0.3, Binning(width=0.01, core=5.0))
    assert np.exp(lower).sum() == pytest.approx(1.0, abs=1e-12) and np.exp(upper).sum() == pytest.approx(1.0, abs=1e-12)


def _density(mech, x: np.ndarray) -> np.ndarray:
    return mech.noise_pdf(x) if isinstance(mech, LMO) else 0.5 * mech.u0 * np.exp(-mech.u0 * np.abs(x))


def _quadrature_delta(mech, q: float, eps: float) -> float:
    """Hockey-stick delta of one release of the continuous pair, both directions (the larger)."""
    reach = 40.0 / min(mech.mean_u() if isinstance(mech, LMO) else mech.u0, 1.0)  # the tails matter
    x = np.linspace(-reach, reach + 1.0, 1_210_001)
    f = _density(mech, x)
    upper = q * _density(mech, x + 1.0) + (1 - q) * f
    remove = np.trapezoid(np.clip(upper - np.exp(eps) * f, 0, None), x)
    add = np.trapezoid(np.clip(f - np.exp(eps) * upper, 0, None), x)
    return float(max(remove, add))


@pytest.mark.parametrize(
    ("mech", "q"),
    [(Laplace(1.3), 1.0), (GAMMA, 0.2), (paper("fig6_lmo_eps0.2.json"), 1.0)],
    ids=["laplace", "gamma-subsampled", "fig6-eps0.2"],
)
def test_one_release_delta_is_below_the_continuous_pair_and_close(mech, q: float) -> None:
    pld = lower_bound_pld(mech, sample_rate=q, steps=1)
    checked = 0
    for eps in (0.0, 0.02, 0.3, 1.0):
        exact = _quadrature_delta(mech, q, eps)
        got = float(pld.get_delta_for_epsilon(eps))
        assert got <= exact * (1 + 1e-6)
        if exact > 1e-6:
            assert got >= exact * 0.999
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("u0", [0.5, 2.0])
def test_laplace_sits_just_below_its_tight_pld_epsilon(u0: float) -> None:
    lb = epsilon_lower_bound(Laplace(u0), **SST2)
    tight = compute_epsilon(Laplace(u0), **SST2, accountant="pld").epsilon
    assert tight * 0.995 <= lb <= tight


def test_finer_bins_give_a_bound_at_least_as_high() -> None:
    mech, kw = paper("optimized_epsilon_lmo_eps_1.0.json"), {"sample_rate": 0.05, "steps": 20, "delta": 1e-6}
    coarse = epsilon_lower_bound(mech, **kw, binning=Binning(width=0.02, core=6.0))
    fine = epsilon_lower_bound(mech, **kw, binning=Binning(width=0.01, core=6.0))  # nested edges
    assert fine >= coarse - 2e-4 * kw["steps"]  # each step's loss may floor differently
    assert fine > coarse


def test_larger_inverse_scale_spends_more() -> None:
    base = paper("fig6_lmo_eps1.json")
    eps = [epsilon_lower_bound(base.scaled(c), sample_rate=0.05, steps=20, delta=1e-6) for c in (0.5, 1.0, 2.0)]
    assert eps[0] < eps[1] < eps[2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"sample_rate": 0.0}, "sample_rate"), ({"steps": 0}, "steps"), ({"delta": 1.0}, "delta")],
)
def test_bad_inputs_name_the_field(kwargs: dict, field: str) -> None:
    args = {"sample_rate": 0.1, "steps": 2, "delta": 1e-5, **kwargs}
    with pytest.raises(ParameterError, match=field):
        epsilon_lower_bound(Laplace(1.0), **args)
    with pytest.raises(ParameterError, match="width"):
        Binning(width=0.0)
