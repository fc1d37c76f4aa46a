"""``benchmarks/bench_utility.py --quick``: the head tier end to end through ``lmo-dp sweep`` on a
slice of the real data (real MiniLM, real Ray, real MLflow), and its tables parse; both tiers'
sweep configs validate, and a saved top-tier result renders (the suite's time budget leaves out
the top tier's run: top-layer training is covered in ``tests/trainers``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CELL = re.compile(r"^(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\](?:\\\*)?$")  # \* below the majority class


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first markdown table after ``heading``, separator row dropped."""
    rows: list[list[str]] = []
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


@pytest.mark.slow
def test_quick_benchmark_runs_and_its_tables_parse(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    page = tmp_path / "utility.md"
    page.write_text(
        "# Utility\n\nhand-written intro\n\n<!-- bench_utility:begin -->\nold\n<!-- bench_utility:end -->\n\ntail\n"
    )
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_utility.py", "--quick", "--tiers", "head", "--write", str(page)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for tier in ("head",):
        heading = f"(`{tier}`)"
        assert heading in out
        rows = _table(out, heading)
        assert rows[0] == ["epsilon", "gaussian", "laplace", "lmo"]
        eight = next(r for r in rows if r[0] == "8")
        for cell in eight[1:]:
            m = CELL.match(cell)
            assert m, cell
            mean, lo, hi = (float(x) for x in m.groups())
            assert 0.0 <= lo < mean < hi <= 1.0  # one seed: the test set's Wilson interval
        reference = next(r for r in rows if r[0] == "non-private")
        assert CELL.match(reference[1]), reference
        majority = next(r for r in rows if r[0] == "majority class")
        assert 0.5 <= float(majority[1]) < 1.0
    verdicts = _table(out, "### Decided comparisons")
    assert verdicts[0] == ["tier", "epsilon", "a", "b", "seeds", "a - b", "interval", "p (adjusted)", "verdict"]
    # one seed per cell: nothing can be decided, and every pair at the target is listed
    assert len(verdicts) == 1 + 3 and all(r[-1] == "within noise" and r[4] == "1" for r in verdicts[1:])
    targets = _table(out, "### Targets")
    assert targets[0] == ["target", "measured", "met"] and len(targets) > 3
    assert all(r[2] in ("yes", "**no**") for r in targets[1:])
    text = page.read_text()
    assert text.startswith("# Utility\n\nhand-written intro") and text.endswith("\n\ntail\n")
    assert "old" not in text and "(`head`)" in text and "### Recipes" in text


def test_both_tiers_quick_sweep_configs_validate(tmp_path: Path) -> None:
    import importlib.util

    from orchestrator.sweep_config import SweepConfig

    spec = importlib.util.spec_from_file_location("bench_utility", ROOT / "benchmarks" / "bench_utility.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    for tier in ("head", "top"):
        for quick in (True, False):
            cfg = SweepConfig.from_dict(bench.sweep_config(tier, tmp_path / tier, quick=quick))
            assert cfg.model.trainable == bench.TIERS[tier]["model"]["trainable"] and cfg.non_private
            assert cfg.statistics is not None
            if quick:
                assert cfg.privacy.epsilons == (8.0,) and cfg.seeds == (0,) and cfg.statistics.seeds is None
            else:
                assert len(cfg.seeds) >= 3  # every cell gets at least 3 seeds; the head tier adds more
                assert (cfg.statistics.seeds is not None) == (tier == "head")


def test_the_published_recipe_table_matches_the_code() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_utility", ROOT / "benchmarks" / "bench_utility.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert bench.recipes_table() in (ROOT / "docs" / "utility.md").read_text()
