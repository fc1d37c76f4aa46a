"""Progress bars appear on a terminal and stay out of CI logs and redirected output: checked with
a real pseudo-terminal as the child process's stderr."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

CODE = (
    "from trainers.progress import progress_bar, show_progress\n"
    "print(show_progress())\n"
    "bar = progress_bar(3, 'feature-bar')\n"
    "[bar.update(1) for _ in range(3)]\n"
    "bar.close()\n"
)


AUDIT = (
    "import sys\n"
    "from orchestrator.cli import main\n"
    "sys.exit(main(['audit', '--mechanism', 'laplace', '--u', '2', '--sample-rate', '0.1', '--steps', '300',\n"
    "               '--delta', '1e-5', '--dim', '1000', '--canaries', '100']))\n"
)


def _run(ci: bool, tty: bool, code: str = CODE) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "1"
    if not tty:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        return proc.stdout.strip(), proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave, text=True, env=env, timeout=120
        )
        chunks = []
        while select.select([master], [], [], 0.2)[0]:  # drain before the slave side closes
            chunks.append(os.read(master, 65536))
        return proc.stdout.strip(), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(slave)
        os.close(master)


def test_a_terminal_gets_a_bar():
    out, err = _run(ci=False, tty=True)
    assert out == "True" and "feature-bar" in err


def test_ci_and_pipes_stay_quiet():
    for ci, tty in ((True, True), (False, False)):
        out, err = _run(ci=ci, tty=tty)
        assert out == "False" and "feature-bar" not in err, (ci, tty, err)


def test_the_audit_shows_its_steps_on_a_terminal_only():
    _, err = _run(ci=False, tty=True, code=AUDIT)
    assert "audit laplace: steps" in err
    out, err = _run(ci=False, tty=False, code=AUDIT)
    assert "epsilon" in out and err == ""  # nothing on stderr without a terminal
