"""Facts the docs state that the code decides (fast): trial counts, measured times, the MLflow host
placeholder, what a tighter accountant could change. Each test reads the Markdown and the configs;
the doc tests (tests/test_docs.py) run the shell blocks themselves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from noise_search.search.rows import TIGHTER_ACCOUNTANT
from orchestrator.sweep_config import SweepConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_SWEEPS = sorted((ROOT / "examples").glob("sweep-*.yaml"))
#: a duration as docs/benchmarks.md prints it
DURATION = r"(?:\d+ min )?\d+ s"


def text(path: Path) -> str:
    return path.read_text()


def flat(markdown: str) -> str:
    """Markdown as one line of words: no code ticks, no link targets, single spaces."""
    markdown = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    return " ".join(markdown.replace("`", "").split())


@pytest.mark.parametrize("config", EXAMPLE_SWEEPS, ids=lambda p: p.name)
def test_trial_counts_stated_for_a_sweep_are_the_trials_it_runs(config: Path) -> None:
    """Wherever a doc line or the config's own comment names the config and a number of trials."""
    count = SweepConfig.from_yaml(config).trial_count()
    pattern = re.compile(rf"{re.escape(config.name)}[^\n]{{0,120}}?\b(\d+) (?:head )?(?:trials|runs)\b")
    stated = [(p.name, int(m.group(1))) for p in [*DOCS, config] for m in pattern.finditer(text(p))]
    header = "\n".join(line for line in text(config).splitlines() if line.startswith("#"))
    stated += [(config.name, int(m.group(1))) for m in re.finditer(r"\b(\d+) trials\b", header)]
    assert all(n == count for _, n in stated), (count, stated)


def test_the_readme_states_the_trial_counts_of_the_demo_and_the_tiny_sweep() -> None:
    from orchestrator.commands.demo import default_config_text
    from trainers.yaml_input import load_yaml_text

    readme = text(ROOT / "README.md")
    demo = SweepConfig.from_dict(load_yaml_text(default_config_text(), "demo", "demo"), source="demo")
    assert f"a Ray Tune sweep of {demo.trial_count()} trials" in readme
    assert f"({demo.trial_count()} trials;" in readme  # the make demo line
    tiny = SweepConfig.from_yaml(ROOT / "examples" / "sweep-tiny.yaml").trial_count()
    assert re.search(rf"sweep-tiny\.yaml +# {tiny} trials", readme)
    assert f"the non-private reference: {tiny} trials" in readme


def benchmark_times() -> dict[str, tuple[str, str]]:
    """``lmo-dp ARGS -> (wall, CPU)`` from the first table of ``benchmarks/bench_docs_times.py`` in
    docs/benchmarks.md (the one the docs quote)."""
    section = text(ROOT / "docs" / "benchmarks.md").split("bench_docs_times.py`\n", 1)[1]
    first = section.split("| command |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(rf"^\| `(lmo-dp [^`]+)` \| ({DURATION}) \| ({DURATION}) \|", first, re.M)
    return {command: (wall, cpu) for command, wall, cpu in rows}


def test_times_the_docs_state_are_the_measured_ones() -> None:
    """Every ``lmo-dp ARGS ... W wall, C CPU`` on one line of README.md or an example config is a row
    of the benchmark's table; and every command the README times is in that table."""
    measured = benchmark_times()
    assert "lmo-dp demo" in measured and "lmo-dp sweep --config examples/sweep-tiny.yaml" in measured
    stated = re.compile(rf"(lmo-dp (?:demo|sweep|train)[^#`\n(]*?)\s*[`#(][^\n]*?({DURATION}) wall, ({DURATION}) CPU")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "examples").glob("*.yaml"))]:
        for m in stated.finditer(text(path)):
            command = " ".join(m.group(1).replace(" --json", "").split())
            found.append(command)
            assert measured.get(command) == (m.group(2), m.group(3)), (path.name, command, measured.get(command))
    assert {"lmo-dp demo", "lmo-dp sweep --config examples/sweep-tiny.yaml"} <= set(found), found
    for old in ("~2 min", "~1 min", "~3 min", "~15 min", "a few minutes", "About a minute on 2"):
        assert old not in text(ROOT / "README.md"), old


def test_the_readme_and_the_search_say_the_same_about_tighter_accountants() -> None:
    assert TIGHTER_ACCOUNTANT in flat(text(ROOT / "README.md"))
    contradicting = (
        "only a tighter accountant for the mixture could",
        "only a tighter accountant could",
        "no tighter accountant could change",
    )
    sources = [*DOCS, *(ROOT / "noise_search").rglob("*.py"), *(ROOT / "orchestrator").rglob("*.py")]
    for path in sources:
        words = flat(text(path)).lower()
        assert not [c for c in contradicting if c in words], path


def test_the_docs_mlflow_host_is_the_placeholder_check_cluster_refuses() -> None:
    """cluster.yaml ships MLFLOW_HOST, check-cluster refuses it, the docs tell to replace it by the
    host the server's --allowed-hosts lists, and the file passes once that is done."""
    from noise_search.errors import InputError
    from orchestrator.cluster import PLACEHOLDERS, check_edited, node_environment

    shipped = yaml.safe_load(text(ROOT / "cluster.yaml"))
    assert node_environment(shipped)["MLFLOW_TRACKING_URI"] == "http://MLFLOW_HOST:5000"
    with pytest.raises(InputError, match="MLFLOW_HOST"):
        check_edited(shipped)
    tracking, cluster = text(ROOT / "docs" / "tracking.md"), text(ROOT / "docs" / "cluster.md")
    for doc in (tracking, cluster, text(ROOT / "README.md")):
        assert "lmodp.internal" not in doc  # a real-looking name check-cluster would refuse
    for hosts in re.findall(r"--allowed-hosts '([^']+)'", tracking):
        assert {h.rsplit(":", 1)[0] for h in hosts.split(",")} <= {
            "localhost",
            "127.0.0.1",
            "MLFLOW_HOST",
            "PRIVATE_IP",
        }
    assert "replace the placeholder `MLFLOW_HOST`" in cluster and "`MLFLOW_HOST`" in tracking
    edited = text(ROOT / "cluster.yaml").replace("MLFLOW_HOST", "mlflow.yourteam.internal")
    edited = edited.replace(PLACEHOLDERS["LMODP_STORAGE_PATH"], "s3://team-bucket/")
    check_edited(yaml.safe_load(edited))  # no placeholder left: accepted


def test_the_examples_write_nothing_into_the_repository_root() -> None:
    """README's outputs go under the git-ignored lmodp-out/ (the doc tests also fail on files a
    session leaves that git does not ignore)."""
    readme = text(ROOT / "README.md")
    for out in re.findall(r"--out (\S+)", readme):
        assert out.startswith(("lmodp-out/", "DIR")), out
    assert "lmodp-out/" in text(ROOT / ".gitignore").splitlines()
