"""Search spaces: the paper grid exactly as the issue lists it, and the deterministic wide space."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from noise_search.errors import ParameterError
from noise_search.mechanisms import LMO
from noise_search.mgf import MixtureArrays
from noise_search.spaces import PaperSpace, WideSpace, lmo_from_row, lmo_params, make_space

FIELDS = ("a1", "a3", "a4", "G_k", "G_theta", "E_lambda", "U_a", "U_b")


def _issue_grid() -> list[dict[str, float]]:
    """The grid written out from the issue text, one dict per candidate (reference only)."""
    a = np.linspace(0.1, 1.8, 18)
    gamma = [(1, 2), (2, 2), (3, 2), (5, 1), (9, 0.5), (7.5, 1), (0.5, 1)]  # (G_theta, G_k)
    e_lambda = [0.1, 0.5, 1, 5]
    uniform = [(1, 0), (2, 1)]  # (U_b, U_a)
    return [
        {"a1": a1, "a3": a3, "a4": a4, "G_theta": gt, "G_k": gk, "E_lambda": el, "U_b": ub, "U_a": ua}
        for a1, a3, a4, (gt, gk), el, (ub, ua) in itertools.product(a, a, a, gamma, e_lambda, uniform)
    ]


def _rows(p: MixtureArrays) -> list[dict[str, float]]:
    return [{f: float(getattr(p, f)[i]) for f in FIELDS} for i in range(len(p))]


def test_paper_grid_is_the_issue_grid():
    space = make_space("paper")
    ref = _issue_grid()
    assert space.size == len(ref) == 18**3 * 7 * 4 * 2 == 326_592
    rng = np.random.default_rng(3)
    index = np.concatenate([np.arange(60), rng.choice(space.size, 300, replace=False), [space.size - 1]])
    got = _rows(space.take(index))
    assert got == [ref[i] for i in index]
    # the whole grid, as sets of parameter tuples
    whole = space.block(0, space.size)
    ours = set(zip(*(getattr(whole, f).tolist() for f in FIELDS), strict=True))
    theirs = {tuple(float(r[f]) for f in FIELDS) for r in ref}
    assert ours == theirs


def test_paper_blocks_tile_the_grid_and_every_candidate_is_valid():
    space = PaperSpace()
    parts = [space.block(s, min(s + 50_000, space.size)) for s in range(0, space.size, 50_000)]
    whole = MixtureArrays.concat(parts)
    assert len(whole) == space.size
    assert np.array_equal(whole.a1, space.block(0, space.size).a1)
    assert np.all(whole.zero_concentration() > 2.0)
    assert np.all((whole.a1 > 0) & (whole.a3 > 0) & (whole.a4 > 0))
    rng = np.random.default_rng(0)
    for i in rng.choice(space.size, 20, replace=False):
        mech = lmo_from_row(space.take([i]), 0)
        assert mech.components == ("gamma", "exponential", "uniform")
        assert LMO.from_dict(lmo_params(mech)) == mech


def test_paper_subgrid_and_bad_values():
    sub = PaperSpace(weights=(0.2, 0.5), gamma=((1.0, 2.0),), e_lambda=(1.0,), uniform=((1.0, 0.0), (2.0, 1.0)))
    assert sub.size == 2 * 2 * 2 * 1 * 1 * 2
    assert sub.describe()["space"] == "paper-subgrid"
    assert PaperSpace().describe() == {"space": "paper", "size": 326_592}
    with pytest.raises(ParameterError):
        PaperSpace(weights=())
    with pytest.raises(ParameterError):
        PaperSpace(uniform=((1.0, 1.0),))
    with pytest.raises(ValueError):
        sub.block(0, sub.size + 1)


def test_wide_space_is_deterministic_and_independent_of_blocking():
    a, b = WideSpace(size=10_000, seed=7), WideSpace(size=10_000, seed=7)
    assert _rows(a.block(0, 200)) == _rows(b.block(0, 200))
    assert _rows(WideSpace(size=10_000, seed=8).block(0, 50)) != _rows(a.block(0, 50))
    whole = a.block(0, a.size)
    piece = a.block(4000, 9000)  # crosses chunk boundaries
    for f in FIELDS:
        assert np.array_equal(getattr(piece, f), getattr(whole, f)[4000:9000])
    index = np.array([9999, 3, 4096, 4095, 3])
    taken = a.take(index)
    for f in FIELDS:
        assert np.array_equal(getattr(taken, f), getattr(whole, f)[index])
    # the first candidates do not depend on the space's size
    assert _rows(WideSpace(size=100, seed=7).block(0, 100)) == _rows(a.block(0, 100))


def test_wide_space_candidates_are_valid_in_range_and_reach_degenerate_mixtures():
    space = WideSpace(size=20_000, seed=1)
    p = space.block(0, space.size)
    assert np.all(p.zero_concentration() > 2.0)
    lo, hi = space.WEIGHT
    for w in (p.a1, p.a3, p.a4):
        present = w > 0
        assert np.all((w[present] >= lo) & (w[present] <= hi))
    has_g, has_e, has_u = p.a1 > 0, p.a3 > 0, p.a4 > 0
    assert not np.any(has_e & ~has_g & ~has_u)  # an Exponential alone is never valid
    patterns = set(zip(has_g.tolist(), has_e.tolist(), has_u.tolist(), strict=True))
    assert len(patterns) == 6
    assert np.all(p.G_k[has_g] <= space.G_K[1]) and np.all(p.G_k[has_g] >= space.G_K[0])
    assert np.all(p.U_b > p.U_a) and np.all(p.U_a >= 0)
    # near-degenerate mixtures are in the space
    assert np.any(has_g & (p.G_k > 500))  # concentrated Gamma
    assert np.any(has_u & ~has_g & ~has_e & (p.U_b - p.U_a < 2e-3))  # narrow Uniform alone
    assert np.sum(~has_g & ~has_e) > 1000  # Uniform-only (Laplace-like when narrow)
    ratio = np.where(has_g & has_u, p.a1 / np.where(has_u, p.a4, 1.0), 1.0)
    assert ratio.min() < 1e-3 and ratio.max() > 1e3  # one component negligible next to another
    for i in np.random.default_rng(0).choice(space.size, 50, replace=False):
        mech = lmo_from_row(p, int(i))  # the LMO class accepts every candidate
        assert set(mech.components) == {
            name
            for name, on in zip(("gamma", "exponential", "uniform"), (has_g[i], has_e[i], has_u[i]), strict=True)
            if on
        }


def test_make_space_and_bad_input():
    assert isinstance(make_space("wide", size=10, seed=2), WideSpace)
    with pytest.raises(ParameterError, match="space"):
        make_space("huge")
    with pytest.raises(ParameterError, match="candidates"):
        WideSpace(size=0)
    with pytest.raises(ParameterError, match="seed"):
        WideSpace(seed=-1)
