"""``benchmarks/bench_sampler.py``: every row is timed and the table reads as documented; bad sizes exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_sampler  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # main() sets them for the benchmark's process
    yield
    torch.set_num_threads(threads)


def test_the_benchmark_times_every_row_against_the_gaussian(capsys) -> None:
    assert bench_sampler.main(["--dim", "2048", "--repeats", "3", "--threads", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    seconds = out["seconds"]
    assert {"gaussian", "laplace", "lmo"} <= set(seconds) and len(seconds) == 5
    assert all(v > 0 for v in seconds.values())
    table = bench_sampler.render(seconds, 2048)
    assert "x gaussian" in table and "target for lmo: <= 2.5x; measured" in table
    assert table.count("\n") == len(seconds) + 2


@pytest.mark.parametrize("flag", ["--dim", "--repeats", "--threads"])
def test_sizes_below_one_exit_2_naming_the_field(flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_sampler.main([flag, "0"])
    assert exc.value.code == 2 and f"{flag[2:]}: must be an integer >= 1" in capsys.readouterr().err
