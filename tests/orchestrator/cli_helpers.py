"""Run the ``lmo-dp`` CLI in-process or as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


def run_cli(capsys, *args: str) -> CliResult:
    """In-process: fast, same code path as the console script."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def lmo_dp_executable() -> list[str]:
    exe = Path(sys.executable).with_name("lmo-dp")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lmo-dp")
    return [found] if found else [sys.executable, "-m", "orchestrator.cli"]


def run_console(
    *args: str, cwd: str | os.PathLike[str] | None = None, env: dict | None = None, timeout: float = 600
) -> CliResult:
    """As a user runs it: the installed ``lmo-dp`` console script in a subprocess."""
    proc = subprocess.run(
        [*lmo_dp_executable(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
