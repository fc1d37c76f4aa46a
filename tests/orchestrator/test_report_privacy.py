"""The report's privacy table and plot data, from small hand-built trial rows (fast).

The rows carry what :func:`orchestrator.report.trial_rows` reads from MLflow: params as the
strings MLflow returns (``noise.components`` a printed list), merged by
:func:`orchestrator.report_privacy.privacy_fields`. Expected moments come from the mechanism
classes themselves."""

from __future__ import annotations

import html
import math

import pytest

from noise_search.mechanisms import LMO, Gaussian, Laplace
from orchestrator.report import families_run, search_notes
from orchestrator.report_plots import noise_plot_data, privacy_plot_data
from orchestrator.report_privacy import (
    lower_bound_text,
    privacy_cells,
    privacy_fields,
    privacy_html,
    upper_bound_text,
)

LMO_PARAMS = {"a1": 0.4, "a3": 0.3, "a4": 0.2, "G_k": 3.0, "G_theta": 1.5, "E_lambda": 2.0, "U_a": 0.1, "U_b": 1.0}


def _params(mech: str, noise: dict[str, object], *, q: float = 0.016, steps: int = 250) -> dict[str, str]:
    """A trial run's params as MLflow returns them (strings)."""
    out = {
        "privacy.mechanism": mech, "privacy.epsilon": "8.0", "privacy.delta": "1e-05", "privacy.accountant": "rdp",
        "plan.sample_rate": str(q), "plan.steps": str(steps), "noise.source": "search", "noise.mechanism": mech,
    }  # fmt: skip
    return out | {f"noise.{k}": str(v) for k, v in noise.items()}


def _row(mech: str, params: dict[str, str], eps: float | None, *, epochs: float | None = 4.0, **extra) -> dict:
    return {
        "mechanism": mech, "epsilon_target": 8.0, "epsilon": eps, "epsilon_lower_bound": None, "clip": 1.0,
        "epochs": epochs, "status": "finished", **privacy_fields(params), **extra,
    }  # fmt: skip


def rows() -> list[dict]:
    lmo = LMO(**LMO_PARAMS)
    lmo_noise = {k: v for k, v in lmo.to_dict().items() if k != "mechanism"}
    return [
        _row("gaussian", _params("gaussian", {"sigma": 0.9}), 7.91, epsilon_lower_bound=0.5678),
        _row("gaussian", _params("gaussian", {"sigma": 0.9}, steps=125), 5.123456, epochs=2.0, epsilon_lower_bound=0.0),
        _row("laplace", _params("laplace", {"u0": 0.05}), 7.99),
        _row("lmo", _params("lmo", lmo_noise), 7.5),
        {"mechanism": "none", "epsilon_target": None, "epsilon": None, "clip": None, "noise": None},
    ]


def test_a_runs_params_give_its_privacy_settings() -> None:
    lmo = LMO(**LMO_PARAMS)
    params = _params("lmo", {k: v for k, v in lmo.to_dict().items() if k != "mechanism"})
    fields = privacy_fields(params)
    assert (fields["delta"], fields["accountant"], fields["sample_rate"], fields["planned_steps"]) == (
        1e-5, "rdp", 0.016, 250
    )  # fmt: skip
    noise = fields["noise"]
    assert "source" not in noise and noise["components"] == ["gamma", "exponential", "uniform"]
    assert LMO.from_dict(noise) == lmo  # the logged strings rebuild the very mechanism
    assert privacy_fields({"privacy.mechanism": "none", "noise.source": "none"})["noise"] is None


def test_each_cell_states_delta_q_t_the_accountant_and_the_noise() -> None:
    cells = {c["mechanism"]: c for c in privacy_cells(rows())}
    assert set(cells) == {"gaussian", "laplace", "lmo"}  # the non-private reference guarantees nothing
    g, lap, lmo = cells["gaussian"], cells["laplace"], cells["lmo"]
    for c in cells.values():
        settings = (c["epsilon_target"], c["delta"], c["accountant"], c["sample_rate"], c["clip"])
        assert settings == (8.0, 1e-5, "rdp", 0.016, 1.0)
    # values that differ between a cell's trials are listed, each once
    assert (g["trials"], g["steps"], g["epochs"]) == (2, [125, 250], [2.0, 4.0])
    assert (g["noise"], g["clip_norm"], lap["clip_norm"], lmo["clip_norm"]) == ({"mechanism": "gaussian", "sigma": 0.9},
                                                                                "L2", "L1", "L1")  # fmt: skip
    assert g["mean_abs"] == pytest.approx(Gaussian(0.9).mean_abs()) and g["mean_u"] is None
    assert lap["mean_abs"] == pytest.approx(Laplace(0.05).mean_abs())
    mech = LMO(**LMO_PARAMS)
    assert lmo["mean_u"] == pytest.approx(mech.mean_u()) and lmo["mean_abs"] == pytest.approx(mech.mean_abs())
    assert lmo["mean_abs"] > 1 / lmo["mean_u"]  # E[1/u] > 1/E[u] (Jensen): the moments are not copied
    # the largest spend of the cell, the smallest audit lower bound
    assert (g["epsilon_spent"], g["epsilon_lower_bound"], lap["epsilon_lower_bound"]) == (7.91, 0.0, None)


def test_printed_bounds_stay_bounds_and_delta_is_on_the_page() -> None:
    cells = privacy_cells(rows())
    cells[0]["epsilon_spent"] = 5.123456
    cells[0]["epsilon_lower_bound"] = 0.5678999
    page = html.unescape(privacy_html(cells))
    assert upper_bound_text(5.123456) == "5.124" and lower_bound_text(0.5678999) == "0.5678"
    assert "<td>5.124</td>" in page and "<td>0.5678</td>" in page
    for header in ("delta", "accountant", "<th>q</th>", "<th>T</th>", "epochs", "clip_norm", "E[u]", "E|Z| (C = 1)"):
        assert header in page, header
    assert "<td>1e-05</td>" in page and "<td>rdp</td>" in page and "<td>125; 250</td>" in page
    assert "sigma 0.9" in page and "u0 0.05" in page and "a1 0.4" in page and "(gamma+exponential+uniform" in page
    assert f"<td>{LMO(**LMO_PARAMS).mean_u():.4g}</td>" in page
    assert "tuned" not in page and "selection" not in page  # no tuning, no early stopping: not a word of them
    assert "lists each distinct value" in page


def test_a_tuned_cell_adds_its_per_run_and_tuned_bounds() -> None:
    tuning = {"cells": [{"mechanism": "gaussian", "epsilon": 8.0, "epsilon_per_run": 7.95, "epsilon_tuned": 8.0,
                         "params": {"sigma": 1.7}, "runs": 2}]}  # fmt: skip
    g = next(c for c in privacy_cells(rows(), tuning) if c["mechanism"] == "gaussian")
    assert (g["epsilon_per_run"], g["epsilon_tuned"]) == (7.95, 8.0)
    data = privacy_plot_data(rows(), tuning)
    kinds = {(s["mechanism"], s["kind"]): s["points"] for s in data["series"]}
    assert kinds[("gaussian", "tuned")] == [[8.0, 8.0]] and kinds[("gaussian", "per_run")] == [[8.0, 7.95]]
    assert ("laplace", "tuned") not in kinds and kinds[("gaussian", "audit")] == [[8.0, 0.5678], [8.0, 0.0]]
    # one target: a linear axis from 0 (every tick a different number, a lower bound of 0 drawn)
    assert data["targets"] == [8.0] and data["scale"] == "linear"
    search = {
        "settings": {"objective": "mean-abs"},
        "results": [{"epsilon_target": 8.0, "objective": 3.0, "note": "dominated", "laplace": {"objective": 2.0},
                     "gaussian": {"objective": 0.6}}],
    }  # fmt: skip
    noise = noise_plot_data(search, {"gaussian"}, tuning)
    assert [(s["family"], s["kind"]) for s in noise["series"]] == [("gaussian", "search"), ("gaussian", "tuned")]
    assert noise["series"][1]["points"] == [[8.0, pytest.approx(Gaussian(1.7).mean_abs())]]
    assert {s["family"] for s in noise_plot_data(search, {"gaussian", "lmo"})["series"]} == {"gaussian", "lmo"}
    # the search's notes (on its LMO pick) only where the sweep ran LMO: none for a Gaussian-only sweep
    assert families_run(rows()[:2]) == {"gaussian"} and search_notes(search, families_run(rows()[:2])) == []
    assert search_notes(search, families_run(rows())) == ["epsilon 8: dominated"]


def test_wide_epsilon_ranges_get_a_log_axis() -> None:
    spread = [dict(r, epsilon_target=e, epsilon=e * 0.99) for r, e in zip(rows()[:3], (0.1, 1.0, 16.0), strict=True)]
    assert privacy_plot_data(spread)["scale"] == "log"
    assert math.isclose(privacy_plot_data(spread)["targets"][-1], 16.0)


def test_a_tuned_sweeps_trial_lines_say_what_their_epsilon_is() -> None:
    from orchestrator.commands.sweep import trial_epsilon, tuned_summary

    trial = {"epsilon": 0.30551, "epsilon_target": 1.0}
    assert trial_epsilon(trial, tuned=False) == "epsilon 0.3056 <= 1"
    assert trial_epsilon(trial, tuned=True) == "epsilon 0.3056 this run"
    r = {"tuning": {"distribution": "geometric", "mean": 4.0, "noise": "selected", "cells": [
        {"mechanism": "gaussian", "epsilon": 1.0, "runs": 3, "epsilon_tuned": 0.99991, "epsilon_per_run": 0.51051,
         "accountant": "rdp"}]}}  # fmt: skip
    (line,) = tuned_summary(r, [], "accuracy")[1:]
    assert "epsilon 1 for the returned run, selection included (any one run alone: at most 0.5106; rdp)" in line
