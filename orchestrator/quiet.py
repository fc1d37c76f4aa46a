"""What libraries may print: stdout is for results, stderr for lmo-dp's own lines.

Without a terminal (:func:`~trainers.progress.show_progress` false: CI, pipes, log files) stderr
carries no progress bars -- Hugging Face's "Loading weights", MLflow's "Downloading artifacts"
-- and, always, no MLflow "View run" links and no matplotlib cache-folder warning
(:func:`quiet_libraries`).

During a sweep (:func:`quiet_sweep_driver`) lmo-dp prints one line per finished, retried or
failed trial itself, so Ray Tune's per-failure tracebacks, its storage-sync errors, Ray's
"worker died" notices and the retry warnings of MLflow's HTTP client are not shown. ``--debug``
(or ``LMODP_DEBUG=1``) shows all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers.progress import quiet_progress_bars, show_progress

#: libraries whose log lines a sweep's driver does not show without ``--debug``
SWEEP_LOGGERS = ("ray.tune", "ray.train", "ray.air", "mlflow", "urllib3", "sqlalchemy", "alembic", "botocore")


_debug = False


def debugging() -> bool:
    """Whether ``--debug`` (the command line last given to :func:`quiet_libraries`) or
    ``LMODP_DEBUG`` asked for tracebacks and library logs."""
    return _debug or os.environ.get("LMODP_DEBUG", "") not in ("", "0")


def quiet_libraries(*, debug: bool = False) -> None:
    """For every command, before the libraries are imported (see the module docstring)."""
    global _debug
    _debug = debug
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not show_progress():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        quiet_progress_bars()
    _matplotlib_cache()


def _matplotlib_cache() -> None:
    """Matplotlib warns (and rebuilds its font cache on every run) when its config folder
    (``MPLCONFIGDIR``, else ``~/.config/matplotlib``) cannot be written; give it a lasting one under
    the temporary folder instead, and keep its remaining warnings off stderr."""
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    wanted = os.environ.get("MPLCONFIGDIR") or str(
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib"
    )
    if _writable_folder(Path(wanted)):
        return
    fallback = Path(tempfile.gettempdir()) / f"lmodp-matplotlib-{os.getuid()}"
    if _writable_folder(fallback):
        os.environ["MPLCONFIGDIR"] = str(fallback)


def _writable_folder(path: Path) -> bool:
    """Whether ``path`` is (or can be made) a folder this process can create files in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def quiet_sweep_driver() -> None:
    """A sweep's driver prints its own line per trial; see the module docstring."""
    if debugging():
        return
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    import mlflow  # noqa: F401 -- it sets its loggers' levels when first imported; ours come after

    for name in SWEEP_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _filter_ray_notices()


_WORKER_DIED = "A worker died or was killed while executing"


def _filter_ray_notices() -> None:
    """Ray's driver prints the raylet's notices (a worker that died, ...) on stdout. A dead trial
    worker gets lmo-dp's own retry line; other notices go to stderr, one line each."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # pragma: no cover - ray is a dependency
        return
    original = ray_worker.print_to_stdstream
    if getattr(original, "_lmodp", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        for line in data.get("lines", []):
            if _WORKER_DIED in line:
                continue
            text = " ".join(str(line).split())
            print(f"ray: {text[:300]}", file=sys.stderr, flush=True)
        return None

    print_to_stdstream._lmodp = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream


def quiet_sweep_libraries() -> None:
    """Tune's console tables and MLflow's download bars would clutter the driver's output."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Route everything written to stdout -- fd 1, and ``sys.stdout`` when it is not fd 1 (Ray
    and Tune print to both) -- to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
