"""docs/paper-audit.md is produced by scripts/reaccount_paper_params.py and must match a fresh run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "reaccount_paper_params", ROOT / "scripts" / "reaccount_paper_params.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def audit():
    return load_script()


@pytest.fixture(scope="module")
def rows(audit) -> list[dict]:
    return [audit.audit_file(p) for p in sorted((ROOT / "reference" / "paper_params").glob("*.json"))]


def test_audit_page_is_up_to_date(audit, rows):
    assert audit.render(rows) == (ROOT / "docs" / "paper-audit.md").read_text()


def test_check_flag_reports_a_stale_page(audit, tmp_path: Path):
    empty = tmp_path / "params"
    empty.mkdir()
    assert audit.main(["--params", str(empty), "--check"]) == 2  # nothing to audit
    (empty / "fig6_lmo_eps1.json").write_text((ROOT / "reference" / "paper_params" / "fig6_lmo_eps1.json").read_text())
    stale = tmp_path / "audit.md"
    stale.write_text("old\n")
    assert audit.main(["--params", str(empty), "--out", str(stale), "--check"]) == 1


def test_reference_style_evaluation_reproduces_the_claims_only_by_leaving_the_domain(rows):
    for row in rows:
        # the unsound evaluation lands at (or just below) the claimed epsilon ...
        assert row["reference_style"] <= row["claimed"] * 1.01
        assert row["reference_outside_domain"]
        # ... while every sound value is far above it
        assert row["sound_single"] > 2 * row["claimed"] * 0.99
        assert math.isfinite(row["sound_sst2"]) and row["sound_sst2"] > row["claimed"]


def test_no_accountant_could_make_a_paper_mixture_beat_laplace_on_noise(rows):
    for row in rows:
        assert 0.0 < row["lower_bound_sst2"] <= row["sound_sst2"]
        assert row["laplace_at_lower_bound_abs"] < row["mean_abs"]


def test_hidden_u_epsilon_lies_between_the_lower_bound_and_rdp_and_laplace_still_wins(rows):
    for row in rows:
        assert row["lower_bound_sst2"] <= row["hidden_sst2"] <= row["sound_sst2"]
        assert row["laplace_at_hidden_abs"] < row["mean_abs"]
    # the wide mixtures gain most: their revealed-u bound rests on order 2
    assert max(r["sound_sst2"] / r["hidden_sst2"] for r in rows) > 3.0
