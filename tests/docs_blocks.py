"""The shell blocks of README.md and docs/*.md, and a runner that executes them like a user would.

Every ```bash / ```sh / ```shell / ```console block must have a marker on the line right above its
fence (see tests/test_docs.py for the syntax). :func:`doc_blocks` parses the Markdown files and the
markers; :func:`run_session` runs the ``run`` blocks of one doc session, in order, in a fresh copy
of the repository, as consecutive pastes into one shell: exported variables and the current
directory carry over from one block to the next.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
#: first words that make an untagged ``` block a shell block all the same
SHELL_WORDS = {"lmo-dp", "ray", "mlflow", "make", "python", "python3", "pip", "export", "cd", ".venv/bin/python"}
#: why a block may be skipped: the reason's first word, and what it means
SKIP_REASONS = {
    "aws": "needs AWS (credentials, EC2, S3)",
    "suite": "is the test suite itself or CI (make test, make demo); CI runs it",
    "long": "longer than the doc tests' budget (a benchmark, a full-size training); the reason names the "
    "tests that cover it (a quick mode, a slice)",
}
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
DEFAULT_TIMEOUT_S = 300.0


class MarkerError(ValueError):
    """A shell block without a marker, or a marker that does not parse."""


@dataclass
class Block:
    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    action: str = "run"  # run | skip
    session: str = "default"
    background: bool = False
    slow: bool = False
    keep: bool = False
    root: bool = False
    wait: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    expect: int = 0
    reason: str = ""
    novenv: bool = False
    repeat: int = 1
    #: texts the block's output must contain / must not contain
    output: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    #: (path, mode): files the block leaves with that permission mode (``~`` is the session's HOME)
    modes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_marker(body: str, block: Block) -> None:
    """Fill ``block``'s action and options from a marker body (``run ...`` or ``skip REASON ...``)."""
    words = body.split()
    if not words:
        raise MarkerError(f"{block.where}: empty doc-test marker")
    if words[0] == "skip":
        if len(words) < 2 or words[1].rstrip(":") not in SKIP_REASONS:
            raise MarkerError(f"{block.where}: skip needs a reason, one of {sorted(SKIP_REASONS)}: {body!r}")
        if words[1].rstrip(":") == "long" and "tests/" not in body:
            raise MarkerError(f"{block.where}: 'skip long' must name the test that covers it (tests/...): {body!r}")
        block.action, block.reason = "skip", " ".join(words[1:])
        return
    if words[0] != "run":
        raise MarkerError(f"{block.where}: unknown doc-test marker {body!r} (run ... | skip REASON ...)")
    try:
        words = shlex.split(body)  # output="two words"
    except ValueError as exc:
        raise MarkerError(f"{block.where}: doc-test marker does not parse ({exc}): {body!r}") from None
    for word in words[1:]:
        key, _, value = word.partition("=")
        if word == "background":
            block.background = True
        elif word == "slow":
            block.slow = True
        elif word == "keep":
            block.keep = True
        elif word == "root":
            block.root = True
        elif key == "session" and re.fullmatch(r"[\w-]+", value):
            block.session = value
        elif key == "wait" and re.fullmatch(r"(https?://\S+|tcp:[\w.-]+:\d+)", value):
            block.wait = value
        elif key == "timeout" and value.isdigit() and int(value) > 0:
            block.timeout_s = float(value)
        elif key == "expect" and value.isdigit():
            block.expect = int(value)
        elif word == "novenv":
            block.novenv = True
        elif key == "repeat" and value.isdigit() and int(value) >= 1:
            block.repeat = int(value)
        elif key in ("output", "absent") and value:
            getattr(block, key).append(value)
        elif key == "mode" and re.fullmatch(r"\S+:[0-7]{3,4}", value):
            path, _, mode = value.rpartition(":")
            block.modes.append((path, int(mode, 8)))
        else:
            raise MarkerError(f"{block.where}: unknown doc-test option {word!r} in {body!r}")
    if block.wait and not block.background:
        raise MarkerError(f"{block.where}: wait= only goes with background")


def parse_doc(path: Path, root: Path = ROOT) -> list[Block]:
    """The shell blocks of one Markdown file with their markers; :class:`MarkerError` for a shell
    block without a marker (also an untagged fence whose first command is a shell command)."""
    lines = path.read_text().splitlines()
    doc = str(path.relative_to(root))
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, m.group("indent"), m.group("lang")
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        code = "\n".join(body) + "\n"
        first = next((ln.split()[0] for ln in body if ln.strip() and not ln.lstrip().startswith("#")), "")
        is_shell = lang in SHELL_LANGS or (lang == "" and first in SHELL_WORDS)
        if not is_shell:
            continue
        block = Block(doc=doc, line=start + 1, lang=lang or "(none)", code=code)
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        if marker is None:
            raise MarkerError(
                f"{block.where}: shell block without a '<!-- doc-test: ... -->' marker on the line above its fence"
                + ("" if lang else " (give it a language: ```bash)")
            )
        parse_marker(marker.group("body"), block)
        blocks.append(block)
    return blocks


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def sessions(root: Path = ROOT) -> dict[tuple[str, str], list[Block]]:
    """Blocks to run, grouped by (doc, session) in document order."""
    out: dict[tuple[str, str], list[Block]] = {}
    for path in doc_files(root):
        for block in parse_doc(path, root):
            if block.action == "run":
                out.setdefault((block.doc, block.session), []).append(block)
    return out


# --- running --------------------------------------------------------------------------------------
def copy_repository(dest: Path, root: Path = ROOT) -> None:
    """The git-tracked and untracked-but-not-ignored files of ``root`` into ``dest``, plus links to
    the virtual environment and the data cache (git-ignored, filled by ``make setup``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        src = root / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / ".venv").symlink_to(root / ".venv")
    (dest / "data").mkdir(exist_ok=True)
    (dest / "data" / "cache").symlink_to(root / "data" / "cache")


def block_env(home: Path) -> dict[str, str]:
    """A user's shell with the project's venv activated: no tracking or Ray settings of the test run,
    offline hub, a private HOME (so ``~/.ray`` is never touched), no terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "LMODP_", "PYTEST_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        VIRTUAL_ENV=str(ROOT / ".venv"),
        HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        CI="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def without_venv(env: dict[str, str]) -> dict[str, str]:
    """``env`` as a new terminal has it: the project's virtual environment not activated."""
    out = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}
    out["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(VENV_BIN))
    return out


@dataclass
class Result:
    block: Block
    returncode: int | None
    output: str
    seconds: float
    #: what the block's output or files did not meet (``output=``, ``absent=``, ``mode=``)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == (None if self.block.background else self.block.expect) and not self.problems


@dataclass
class Session:
    """One doc session's working copy, shell state and background processes."""

    workdir: Path
    state: Path
    env: dict[str, str]
    home: Path
    background: list[tuple[Block, subprocess.Popen, Path]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def script(self, block: Block, save_state: bool) -> str:
        """The block wrapped so that it starts in the state the previous block left (exports, cwd)
        and saves its own on exit."""
        env_file, cwd_file = self.state / "env.sh", self.state / "cwd"
        prelude = [
            f"[ -f {shlex.quote(str(env_file))} ] && . {shlex.quote(str(env_file))}",
            f'[ -f {shlex.quote(str(cwd_file))} ] && cd "$(cat {shlex.quote(str(cwd_file))})"',
        ]
        if block.root:  # the prose says "in the repository root"
            prelude.append(f"cd {shlex.quote(str(self.workdir))}")
        if save_state:
            save = (
                f"export -p | grep -v -E '^declare -x (OLDPWD|PWD|SHLVL|_)=' > {shlex.quote(str(env_file))}.tmp; "
                f"mv {shlex.quote(str(env_file))}.tmp {shlex.quote(str(env_file))}; pwd > {shlex.quote(str(cwd_file))}"
            )
            prelude.insert(0, f"trap {shlex.quote(save)} EXIT")
        return "\n".join([*prelude, "set -euo pipefail", block.code])

    def run(self, block: Block) -> Result:
        """Run ``block`` (``repeat`` times, stopping at a failure) and check its output and files."""
        for _ in range(block.repeat):
            result = self._run_once(block)
            result.problems = self.check(block, result)
            if not result.ok:
                break
        return result

    def check(self, block: Block, result: Result) -> list[str]:
        """What ``block`` promised and its run did not keep: texts in its output, modes of files."""
        log = (self.state / f"block-{block.line}.log").read_text(errors="replace")
        problems = [f"output lacks {text!r}" for text in block.output if text not in log]
        problems += [f"output has {text!r}" for text in block.absent if text in log]
        for path, mode in block.modes:
            where = self.home / path[2:] if path.startswith("~/") else self.workdir / path
            try:
                found = stat.S_IMODE(where.stat().st_mode)
            except OSError:
                problems.append(f"{path}: no such file")
                continue
            if found != mode:
                problems.append(f"{path}: mode {found:o}, expected {mode:o}")
        return problems

    def _run_once(self, block: Block) -> Result:
        started = time.monotonic()
        log = self.state / f"block-{block.line}.log"
        argv = ["bash", "-c", self.script(block, save_state=not block.background)]
        env = without_venv(self.env) if block.novenv else self.env
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.groups.append(proc.pid)
        if block.background:
            self.background.append((block, proc, log))
            ok = wait_ready(block.wait, proc, block.timeout_s) if block.wait else proc.poll() is None
            code = None if ok else (proc.poll() if proc.poll() is not None else -1)
            return Result(block, code, tail(log), time.monotonic() - started)
        try:
            code = proc.wait(timeout=block.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            code = -9
        return Result(block, code, tail(log), time.monotonic() - started)

    def close(self) -> None:
        """SIGTERM every process group a block started (background servers, ``cmd &`` in a block),
        wait for them, then SIGKILL what is left, including processes whose command line names the
        working copy (Ray processes and job drivers start sessions of their own)."""
        for pgid in reversed(self.groups):
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(group_alive(g) for g in self.groups):
            time.sleep(0.5)
        for pgid in self.groups:
            signal_group(pgid, signal.SIGKILL)
        for _ in range(3):
            leftover = [*processes_naming(str(self.workdir)), *self.own_processes()]
            if not leftover:
                break
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def own_processes(self) -> list[int]:
        """Pids of processes started from this session's blocks, however detached (Ray daemons, job
        drivers): they carry the session's private HOME in their environment."""
        return processes_with_env(f"HOME={self.home}".encode())

    def leftovers(self, grace_s: float = 20.0) -> list[str]:
        """Command lines of processes the blocks left running, after ``grace_s`` to wind down."""
        deadline = time.monotonic() + grace_s
        while (pids := self.own_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return [cmdline(pid) for pid in pids]


def tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(text[-lines:])


def signal_group(pgid: int, sig: int) -> None:
    if pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(pgid: int) -> None:
    signal_group(pgid, signal.SIGTERM)
    time.sleep(2)
    signal_group(pgid, signal.SIGKILL)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def processes_with_env(entry: bytes) -> list[int]:
    """Pids (not ours) whose environment holds ``entry`` (``NAME=value``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if entry in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def processes_naming(needle: str) -> list[int]:
    """Pids (not ours) whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


def wait_ready(target: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll ``http://...`` (any HTTP answer below 500) or ``tcp:HOST:PORT`` until it answers, while
    ``proc`` lives."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if target.startswith("tcp:"):
                _, host, port = target.split(":")
                with socket.create_connection((host, int(port)), timeout=2):
                    return True
            with urllib.request.urlopen(target, timeout=5) as r:
                return r.status < 500
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@dataclass
class SessionRun:
    results: list[Result]
    #: command lines of processes still running after the last block of a session without
    #: background blocks: a doc that starts something must also show how to stop it
    leftovers: list[str]
    #: files the blocks wrote into the repository that git would not ignore (a user's checkout
    #: would show them as untracked): docs write their outputs under ignored folders
    strays: list[str] = field(default_factory=list)


def repository_files(workdir: Path) -> set[str]:
    """Files under ``workdir``, relative to it; the linked virtual environment and data cache are
    not walked."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(workdir):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        found.update(str((Path(dirpath) / f).relative_to(workdir)) for f in filenames)
    return found


def not_ignored(paths: set[str], root: Path = ROOT) -> list[str]:
    """Those of ``paths`` (relative to the repository root) that the repository's ignore rules keep."""
    if not paths:
        return []
    listed = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin", "-z"],
        cwd=root, input="\0".join(sorted(paths)).encode(), capture_output=True,
    ).stdout.decode()  # fmt: skip
    ignored = set(filter(None, listed.split("\0")))
    return sorted(paths - ignored)


def run_session(blocks: list[Block], leftover_grace_s: float = 20.0) -> SessionRun:
    """Run ``blocks`` (one doc session) in a fresh copy of the repository; stops at the first block
    whose exit code is not the expected one. Everything the blocks started is stopped afterwards."""
    base = Path(tempfile.mkdtemp(prefix="lmodp-doc-", dir="/tmp"))  # short: Ray's socket paths
    workdir, state, home = base / "w", base / "state", base / "home"
    for d in (workdir, state, home):
        d.mkdir()
    copy_repository(workdir)
    before = repository_files(workdir)
    session = Session(workdir=workdir, state=state, env=block_env(home), home=home)
    results: list[Result] = []
    leftovers: list[str] = []
    strays: list[str] = []
    try:
        for block in blocks:
            result = session.run(block)
            results.append(result)
            if not result.ok:
                break
        else:
            if not any(b.background or b.keep for b in blocks):
                leftovers = session.leftovers(leftover_grace_s)
        strays = not_ignored(repository_files(workdir) - before)
    finally:
        session.close()
        shutil.rmtree(base, ignore_errors=True)
    return SessionRun(results, leftovers, strays)


def describe_failure(result: Result) -> str:
    block = result.block
    if block.background:
        what = f"background block did not come up ({block.wait or 'exited'}) within {block.timeout_s:g} s"
    elif result.returncode == -9:
        what = f"timed out after {block.timeout_s:g} s"
    elif result.returncode != block.expect:
        what = f"exit code {result.returncode}, expected {block.expect}"
    else:
        what = "; ".join(result.problems)
    indented = "".join(f"    {ln}\n" for ln in block.code.splitlines())
    return f"{block.where}: {what} ({result.seconds:.0f} s)\n  block:\n{indented}  output tail:\n{result.output}"
