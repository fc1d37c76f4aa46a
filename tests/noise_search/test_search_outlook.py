"""Stage 4 of a search under a tighter accountant (noise_search/search/outlook.py): the best LMO
credited with its epsilon lower bound against a Laplace proven there; the row's JSON and note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noise_search.accountants import compute_epsilon
from noise_search.lower_bound import epsilon_lower_bound
from noise_search.mechanisms import LMO, Laplace
from noise_search.search.outlook import tight_outlook
from noise_search.search.problem import SearchProblem
from noise_search.search.rows import outlook_note
from noise_search.search_result import SearchRow, TightOutlook

ROOT = Path(__file__).resolve().parents[2]
KW = {"sample_rate": 0.05, "steps": 20, "delta": 1e-6}
LMO_FIG6 = LMO.from_dict(json.loads((ROOT / "reference/paper_params/fig6_lmo_eps1.json").read_text()))


def _problem(objective: str = "mean-abs", gamma: float | None = None) -> SearchProblem:
    return SearchProblem(targets=(2.0,), accountant="pld", objective=objective, gamma=gamma, **KW)


@pytest.mark.parametrize(("objective", "gamma"), [("mean-abs", None), ("usefulness", 1.0)])
def test_a_paper_mixture_cannot_win_even_at_its_lower_bound(objective: str, gamma: float | None) -> None:
    problem = _problem(objective, gamma)
    spread = LMO_FIG6  # u nearly constant: close to Laplace, the hardest kind to rule out
    value = spread.mean_abs() if objective == "mean-abs" else spread.usefulness(gamma)
    out = tight_outlook(problem, spread, value)
    bound = epsilon_lower_bound(spread, **KW)
    assert out.epsilon_lower_bound == bound <= compute_epsilon(spread, **KW).epsilon
    lap = out.laplace
    assert lap.accountant == "pld" and isinstance(lap.mechanism, Laplace)
    assert compute_epsilon(lap.mechanism, **KW, accountant="pld").epsilon <= bound
    assert out.could_win is False and out.error is None
    note = outlook_note(problem, value, out)
    assert note.startswith(" No accountant could make this LMO win") and "a lower bound, not a guarantee" in note


def test_an_lmo_better_than_the_laplace_at_its_bound_might_win_and_the_row_round_trips() -> None:
    problem = _problem()
    out = tight_outlook(problem, LMO_FIG6, 0.1)  # pretend an objective no Laplace there can reach
    assert out.could_win is True
    assert "might make this LMO win" in outlook_note(problem, 0.1, out)
    row = SearchRow(
        epsilon_target=2.0, lmo=LMO_FIG6, epsilon=1.9, order=8.0, objective=0.1, source="grid",
        laplace=out.laplace, gaussian=out.laplace.__class__("gaussian", None), outlook=out,
    )  # fmt: skip
    data = row.to_dict()
    assert data["tight_outlook"]["lmo_could_win"] is True
    assert data["tight_outlook"]["lmo_epsilon_lower_bound"] == out.epsilon_lower_bound
    again = SearchRow.from_dict(json.loads(json.dumps(data)), "row")
    assert again.outlook == out and "tight_outlook" not in again.extra


def test_an_unusable_outlook_is_reported_not_raised() -> None:
    out = TightOutlook.from_dict({"lmo_epsilon_lower_bound": None, "lmo_could_win": None, "error": "boom"}, "row")
    assert out.could_win is None and out.laplace.mechanism is None
    assert "unknown here (boom)" in outlook_note(_problem(), 1.0, out)
