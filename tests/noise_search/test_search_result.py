"""Typed search rows: built once, the file form round-trips, and what is missing says so."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from noise_search.errors import InputError
from noise_search.mechanisms import LMO, Gaussian, Laplace
from noise_search.search_result import BaselineEntry, SearchResult, SearchRow

LMO_MECH = LMO(a1=1.0, a3=0.0, a4=0.5, G_k=4.0, G_theta=1.0, E_lambda=1.0, U_a=0.5, U_b=1.5)


def row(lmo: LMO | None, **kw) -> SearchRow:
    return SearchRow(
        epsilon_target=2.0,
        lmo=lmo,
        epsilon=None if lmo is None else 1.99,
        order=None if lmo is None else 12.0,
        objective=None if lmo is None else 3.2,
        source=None if lmo is None else "grid",
        laplace=BaselineEntry("laplace", Laplace(0.3), 1.99, 11.0, 3.1),
        gaussian=BaselineEntry("gaussian", Gaussian(2.5), 1.98, 14.0, 2.0, "rdp"),
        **kw,
    )


def test_the_file_form_round_trips_and_keeps_its_names() -> None:
    for r in (row(LMO_MECH, dominated_by=("laplace",), note="dominated"), row(None, note="infeasible: ...")):
        d = json.loads(json.dumps(r.to_dict()))
        assert SearchRow.from_dict(d, "file") == r
        lap = {"u0": 0.3, "u": 0.3, "epsilon": 1.99, "order": 11.0, "objective": 3.1, "accountant": "rdp"}
        assert d["laplace"] == lap  # the file's key is u0, and u beside it for older tools (deprecated)
        assert d["gaussian"]["accountant"] == "rdp" and d["feasible"] is (r.lmo is not None)
    assert row(LMO_MECH).to_dict()["mean_u"] == pytest.approx(LMO_MECH.mean_u())


def test_a_result_gives_each_familys_mechanism_or_says_there_is_none() -> None:
    failed = BaselineEntry("gaussian", None, accountant="pld", error="no sigma in range")
    res = SearchResult({}, (replace(row(None), gaussian=failed),))
    assert res.mechanism("laplace", 2.0) == Laplace(0.3) and res.mechanism("lmo", 2.0) is None
    with pytest.raises(InputError, match="found no LMO parameters meeting target 2"):
        res.require("lmo", 2.0)
    with pytest.raises(InputError, match="found no calibrated gaussian noise"):
        res.require("gaussian", 2.0)
    with pytest.raises(InputError, match="has no result for target 3"):
        res.row(3.0)
    assert failed.to_dict() == {"sigma": None, "accountant": "pld", "error": "no sigma in range"}


def test_older_files_with_fewer_keys_still_load() -> None:
    d = {"epsilon_target": 1.0, "params": None, "laplace": {"u": 0.2}, "gaussian": {"sigma": 4.0}, "extra": 1}
    r = SearchRow.from_dict(d, "old file")
    assert not r.feasible and r.laplace.mechanism == Laplace(0.2) and r.gaussian.accountant == "rdp"
    assert r.to_dict()["extra"] == 1
    with pytest.raises(InputError, match="epsilon_target"):
        SearchResult.from_dict({"results": [{"laplace": {}}]}, source="bad")
