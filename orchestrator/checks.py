"""Checks on what a command will write and reach, made before any work starts.

* :func:`check_output_file` / :func:`check_output_dir` -- a result path is usable: not the wrong
  kind of thing, and its nearest existing folder accepts new files (probed with a temporary file that is removed at
  once). Nothing else is created.
* :func:`connect_timeout` -- how long a service (Ray, an MLflow server) may take to answer,
  ``$LMODP_CONNECT_TIMEOUT`` seconds (default 15).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from noise_search.errors import InputError, ParameterError

DEFAULT_CONNECT_TIMEOUT = 15.0


def connect_timeout() -> float:
    """Seconds to wait for a service to answer (``$LMODP_CONNECT_TIMEOUT``, default 15)."""
    text = os.environ.get("LMODP_CONNECT_TIMEOUT")
    if not text:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise InputError(f"LMODP_CONNECT_TIMEOUT: must be seconds in (0, 3600], got {text!r}")
    return value


def _writable_ancestor(path: Path, field: str) -> None:
    probe = path.parent
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ParameterError(field, f"cannot create {path}: {probe} is not a folder")
    _probe_write(probe, path, field)


def _probe_write(folder: Path, path: Path, field: str) -> None:
    # os.access says yes to root everywhere, even on /proc; a throwaway file is the honest test.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ParameterError(field, f"cannot write {path}: {folder} refuses new files ({reason})") from None


def _user_path(path: str | os.PathLike[str], field: str) -> Path:
    if not os.fspath(path).strip():
        raise ParameterError(field, "must be a path, got an empty name")
    if "\x00" in os.fspath(path):
        raise ParameterError(field, f"must not contain a NUL character, got {os.fspath(path)!r}")
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~name of no user
        raise ParameterError(field, f"cannot use {path}: no home folder for {Path(path).parts[0]}") from None


@contextmanager
def _looking_at(path: Path, field: str) -> Iterator[None]:
    """An OS error on merely looking at ``path`` (a name too long, a loop of links) is bad input."""
    try:
        yield
    except OSError as exc:
        raise ParameterError(field, f"cannot use {path}: {exc.strerror or exc}") from None


def check_output_file(path: str | os.PathLike[str], field: str) -> Path:
    """``path`` can be written as a file (it may exist as a file; its folders may be missing)."""
    p = _user_path(path, field)
    with _looking_at(p, field):
        if p.is_dir():
            raise ParameterError(field, f"{p} is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise ParameterError(field, f"{p} is not writable")
        _writable_ancestor(p, field)
    return p


def check_output_dir(path: str | os.PathLike[str], field: str) -> Path:
    """``path`` can be used as an output folder (it may exist as a folder, or be created)."""
    p = _user_path(path, field)
    with _looking_at(p, field):
        if p.exists() and not p.is_dir():
            raise ParameterError(field, f"{p} exists and is not a folder")
        if p.is_dir():
            _probe_write(p, p, field)
        else:
            _writable_ancestor(p, field)
    return p
