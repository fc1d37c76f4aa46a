"""Docs that are tested: every shell block of README.md and docs/*.md runs here, or says why not.

Each ```bash (or ```sh / ```shell / ```console) block needs a marker on the line right above its
opening fence; an unmarked block, or an untagged ``` block that starts with a shell command, fails
:func:`test_every_shell_block_is_marked`:

    <!-- doc-test: run [session=NAME] [background] [wait=URL] [keep] [root] [timeout=S] [expect=N] [slow]
                       [output="TEXT"]... [absent="TEXT"]... [mode=PATH:OCTAL]... [repeat=N] [novenv] -->
    <!-- doc-test: skip REASON free text -->

``run``: the block is executed literally with ``bash -euo pipefail`` in a fresh copy of the
repository's tracked files (``.venv`` and ``data/cache`` linked to this checkout's), with the venv's
``bin`` first on PATH, a private HOME, no ``MLFLOW_*``/``RAY_*``/``LMODP_*`` variables, offline hub
and ``CI=1``. Blocks of one doc with the same ``session`` (default: ``default``) run in document
order in one copy, as consecutive pastes into one shell: exported variables and the current
directory carry over. ``background``: the block starts a server and keeps running for the rest of
its session; ``wait=http://HOST:PORT/PATH`` or ``wait=tcp:HOST:PORT`` waits until it answers.
``root``: the block starts in the repository root, not where the previous block left off (for
prose such as "in the repository root:"). ``timeout=S`` (default 300) bounds a block,
``expect=N`` is its expected exit code (default 0), ``slow`` puts the whole session under
``@pytest.mark.slow`` (Ray, servers, training, sweeps).
``output="TEXT"`` / ``absent="TEXT"``: the block's output must (not) contain TEXT; ``mode=PATH:OCTAL``:
a file the block leaves has that mode (``~/`` is the session's HOME); ``repeat=N``: the block runs N
times, each must pass; ``novenv``: the block starts without the venv on PATH (a new terminal), and
what it exports carries over. A session that leaves files in the repository copy that git would not
ignore fails (outputs go under ``lmodp-out/``).
A session whose blocks start processes (``cmd &``) must also stop them: whatever is still running
after its last block fails the test, unless a block is marked ``keep`` (it starts a server meant to
keep running, like a team's MLflow server) or ``background``. Everything a session started is
stopped at its end (process groups, and every process carrying the session's private HOME in its
environment, which Ray daemons and job drivers inherit), even when the test fails; ``ray stop`` is
never used (it would stop every Ray on the machine).

``skip``: REASON is one of ``aws`` (needs AWS), ``suite`` (the test suite or CI itself: make test,
make demo) or ``long`` (longer than the doc tests' budget: a benchmark, a full-size training; the
text names the tests that cover it, in a quick mode or on a slice).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_blocks import (
    SKIP_REASONS,
    VENV_BIN,
    Block,
    MarkerError,
    Session,
    block_env,
    describe_failure,
    doc_files,
    not_ignored,
    parse_doc,
    run_session,
    sessions,
)


def _session_params() -> list:
    try:
        found = sessions()
    except MarkerError:  # reported by test_every_shell_block_is_marked
        return []
    params = []
    for (doc, name), blocks in found.items():
        marks = [pytest.mark.slow] if any(b.slow for b in blocks) else []
        timeout = sum(b.timeout_s for b in blocks) + 120
        params.append(pytest.param(blocks, id=f"{doc}:{name}", marks=[*marks, pytest.mark.timeout(timeout)]))
    return params


def test_every_shell_block_is_marked() -> None:
    counts = {}
    for path in doc_files():
        blocks = parse_doc(path)  # raises MarkerError naming the file and line
        counts[path.name] = blocks
    assert sum(len(b) for b in counts.values()) > 0
    for blocks in counts.values():
        for block in blocks:
            assert block.code.strip(), f"{block.where}: empty block"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```bash\nlmo-dp --help\n```\n", "without a '<!-- doc-test"),
        ("```\nlmo-dp --help\n```\n", "give it a language"),
        ("<!-- doc-test: runn -->\n```bash\nls\n```\n", "unknown doc-test marker"),
        ("<!-- doc-test: run sesion=a -->\n```bash\nls\n```\n", "unknown doc-test option"),
        ("<!-- doc-test: skip because -->\n```bash\nls\n```\n", "skip needs a reason"),
        ("<!-- doc-test: skip long takes an hour -->\n```bash\nls\n```\n", "must name the test"),
        ("<!-- doc-test: run wait=tcp:127.0.0.1:1 -->\n```bash\nls\n```\n", "only goes with background"),
        ("<!-- doc-test: run -->\n\n```bash\nls\n```\n", "without a '<!-- doc-test"),
        ('<!-- doc-test: run output="unclosed -->\n```bash\nls\n```\n', "does not parse"),
        ("<!-- doc-test: run mode=x:9 -->\n```bash\nls\n```\n", "unknown doc-test option"),
        ("<!-- doc-test: run repeat=0 -->\n```bash\nls\n```\n", "unknown doc-test option"),
    ],
)
def test_marker_errors(tmp_path: Path, text: str, error: str) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(text)
    with pytest.raises(MarkerError, match=error):
        parse_doc(doc, tmp_path)


def test_markers_parse(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "```yaml\na: 1\n```\n"
        "<!-- doc-test: run session=s background wait=http://127.0.0.1:9/x timeout=7 slow -->\n"
        "  ```bash\n  mlflow ui\n  ```\n"
        "<!-- doc-test: skip aws needs EC2 -->\n```sh\nray up cluster.yaml\n```\n"
        "<!-- doc-test: run expect=2 -->\n```console\nlmo-dp sweep\n```\n"
        "<!-- doc-test: run session=s keep root -->\n```bash\nnohup mlflow server &\n```\n"
        '<!-- doc-test: run novenv repeat=2 output="nothing was rerun" output=ok absent=Traceback '
        "mode=~/.ray/auth_token:600 -->\n```bash\nlmo-dp sweep\n```\n"
    )
    first, second, third, fourth, fifth = parse_doc(doc, tmp_path)
    assert (fifth.novenv, fifth.repeat, fifth.output, fifth.absent, fifth.modes) == (
        True, 2, ["nothing was rerun", "ok"], ["Traceback"], [("~/.ray/auth_token", 0o600)]
    )  # fmt: skip
    assert (first.novenv, first.repeat, first.output, first.modes) == (False, 1, [], [])
    assert (first.session, first.background, first.wait, first.timeout_s, first.slow, first.line) == (
        "s", True, "http://127.0.0.1:9/x", 7.0, True, 5
    )  # fmt: skip
    assert first.code == "mlflow ui\n"
    assert (second.action, second.reason) == ("skip", "aws needs EC2")
    assert (third.action, third.expect, third.session) == ("run", 2, "default")
    assert (fourth.keep, fourth.root, fourth.background, first.keep, first.root) == (True, True, False, False, False)
    assert set(SKIP_REASONS) == {"aws", "suite", "long"}


def test_runner_carries_state_and_reports_failures() -> None:
    """The runner itself: exports and cwd carry over, a failing block is reported with its place."""
    blocks = [
        Block(doc="t.md", line=1, lang="bash", code="export GREETING=hi\nmkdir -p sub && cd sub\n"),
        Block(doc="t.md", line=5, lang="bash", code='test "$GREETING" = hi\ntest "$(basename $PWD)" = sub\n'),
        Block(doc="t.md", line=9, lang="bash", code="test -f ../pyproject.toml && test -d ../data/cache\n"),
        Block(doc="t.md", line=11, lang="bash", code="test -f pyproject.toml\n", root=True),
        Block(doc="t.md", line=12, lang="bash", code="echo about to fail\nfalse\necho not reached\n"),
    ]
    results = run_session(blocks).results
    assert [r.returncode for r in results] == [0, 0, 0, 0, 1], [describe_failure(r) for r in results]
    message = describe_failure(results[-1])
    assert message.startswith("t.md:12: exit code 1, expected 0") and "about to fail" in message
    assert "not reached" not in results[-1].output


@pytest.mark.parametrize("blocks", _session_params())
def test_doc_session(blocks: list[Block]) -> None:
    run = run_session(blocks)
    for result in run.results:
        if not result.ok:
            pytest.fail(describe_failure(result), pytrace=False)
    assert len(run.results) == len(blocks)
    if run.leftovers:
        left = "\n".join(run.leftovers)
        pytest.fail(f"{blocks[-1].where}: still running after the last block:\n{left}", pytrace=False)
    if run.strays:
        pytest.fail(
            f"{blocks[0].doc} ({blocks[0].session}): the blocks left files in the repository that git does not "
            f"ignore (write outputs under lmodp-out/): {', '.join(run.strays)}",
            pytrace=False,
        )


def test_runner_checks_output_modes_repeats_and_files_left_in_the_repository(tmp_path: Path) -> None:
    """A new terminal has no venv (``novenv``); ``output=``/``absent=``/``mode=`` are checked after
    each of ``repeat`` runs; files git would not ignore are found (README's search.json once)."""
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir(), state.mkdir()
    session = Session(workdir=tmp_path, state=state, env=block_env(home), home=home)
    novenv = Block(doc="t.md", line=1, lang="bash", code='test -z "${VIRTUAL_ENV:-}"\n', novenv=True)
    assert session.run(novenv).ok and str(VENV_BIN) in session.env["PATH"]
    token = Block(doc="t.md", line=2, lang="bash", code="(umask 077; echo t >> ~/token)\necho done\n",
                  output=["done"], absent=["Traceback"], modes=[("~/token", 0o600)], repeat=2)  # fmt: skip
    assert session.run(token).ok and (home / "token").read_text() == "t\nt\n"
    loose = Block(doc="t.md", line=3, lang="bash", code="chmod 644 ~/token\necho partly\n",
                  output=["partly", "missing"], modes=[("~/token", 0o600)])  # fmt: skip
    result = session.run(loose)
    assert not result.ok and result.problems == ["output lacks 'missing'", "~/token: mode 644, expected 600"]
    assert describe_failure(result).startswith("t.md:3: output lacks 'missing'; ~/token: mode 644")
    assert not_ignored({"search.json", "lmodp-out/x/report.html", "mlruns-lmodp/mlflow.db"}) == ["search.json"]


def test_runner_catches_what_a_doc_leaves_running() -> None:
    blocks = [Block(doc="t.md", line=1, lang="bash", code="sleep 600 > /dev/null 2>&1 &\n")]
    run = run_session(blocks, leftover_grace_s=1)
    assert [r.returncode for r in run.results] == [0]
    assert run.leftovers and "sleep 600" in run.leftovers[0]
