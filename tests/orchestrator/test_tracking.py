"""The MLflow query helper against a real (SQLite) tracking store: escaped values, every page."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tracking import TRIAL_TAG, Tracker, tag_filter


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_values_with_quotes_and_backslashes_are_found_exactly(tracker: Tracker) -> None:
    odd = ["it's", "back\\slash", "a' or '1'='1", "plain"]
    ids = {v: tracker.start_run("t-find", tags={TRIAL_TAG: v, "kind": "x"}) for v in odd}
    for value, run_id in ids.items():
        found = tracker.find_runs("t-find", {TRIAL_TAG: value, "kind": "x"})
        assert [r.info.run_id for r in found] == [run_id], value
    assert tracker.find_runs("t-find", {TRIAL_TAG: "it"}) == []
    assert tracker.find_runs("no-such-experiment", {TRIAL_TAG: "plain"}) == []


def test_every_page_is_read_newest_first(tracker: Tracker) -> None:
    ids = [tracker.start_run("t-pages", tags={"kind": "trial"}) for _ in range(5)]
    found = tracker.find_runs("t-pages", {"kind": "trial"}, page_size=2)
    assert sorted(r.info.run_id for r in found) == sorted(ids) and len(found) == 5
    assert len(tracker.find_runs("t-pages", {"kind": "trial"}, page_size=2, max_results=3)) == 3


def test_discarded_attempts_are_closed_and_deleted(tracker: Tracker) -> None:
    rid = tracker.start_run("t-discard", tags={"kind": "trial"})
    tracker.discard_run(rid)
    assert tracker.find_runs("t-discard", {"kind": "trial"}) == []
    gone = tracker.find_runs("t-discard", {"kind": "trial"}, include_deleted=True)
    assert [r.info.status for r in gone] == ["KILLED"]


def test_filter_text_and_refused_tag_names() -> None:
    assert tag_filter({}) == ""
    assert tag_filter({"a": "x'y", "b": 'q"'}) == "tags.`a` = \"x'y\" and tags.`b` = 'q\"'"
    with pytest.raises(ValueError, match="both quote"):
        tag_filter({"a": "'\""})
    with pytest.raises(ValueError, match="backquote"):
        tag_filter({"a`b": "x"})
