"""A user's input files, read so that they cannot hang, flood or silently mislead a run.

* :func:`open_regular_file` -- opens without blocking and refuses anything but a regular file
  (a FIFO, a socket, a device or a folder is named as such): reading a FIFO would wait for a
  writer for ever, a device like ``/dev/zero`` would never end.
* :func:`read_input_file` -- a config or parameter file's text: a regular file of at most
  ``max_bytes`` (default :data:`MAX_CONFIG_BYTES`, 1 MiB), UTF-8.
* :func:`load_json_file` / :func:`loads_json` -- JSON in which no object gives a key twice
  (Python's ``json`` keeps the last value without a word; a parameter given twice is refused).

Every error is an :class:`~noise_search.errors.InputError` that starts with the field (flag or
YAML key) the path came from.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from noise_search.errors import InputError, ParameterError, one_line

#: Largest config or parameter file read (bytes): real ones are a few kB.
MAX_CONFIG_BYTES = 1 << 20


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def byte_size(n: int) -> str:
    """``n`` bytes for people: ``1 MiB``, ``512 kiB``, ``300 bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("kiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def open_regular_file(path: str | os.PathLike[str], field: str) -> BinaryIO:
    """``path`` opened for binary reading, or :class:`InputError` ``"<field>: ..."`` when it
    cannot be read or is not a regular file (checked on the open file: no race, no blocking)."""
    text = os.fspath(path)
    if "\x00" in text:
        raise ParameterError(field, f"must not contain a NUL character, got {text!r}")
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{field}: cannot read {text}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{field}: {text} is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input_file(path: str | Path, field: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a user's file, or :class:`InputError` ``"<field>: ..."``: unreadable, not a
    regular file, larger than ``max_bytes``, or not UTF-8."""
    with open_regular_file(path, field) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(f"{field}: {path} is larger than {byte_size(max_bytes)}, the most a config file may hold")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{field}: {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc


class DuplicateKeyError(ValueError):
    """A JSON object (or YAML mapping) that gives the same key twice."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key {key!r} is given twice")


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json``'s ``object_pairs_hook``: the object as a dict, or :class:`DuplicateKeyError`."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_json(text: str) -> Any:
    """``json.loads`` refusing duplicate keys (:class:`DuplicateKeyError`, a ``ValueError``)."""
    return json.loads(text, object_pairs_hook=reject_duplicate_keys)


def load_json_file(path: str | Path, field: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A user's JSON file parsed, or :class:`InputError` naming ``field``: unreadable, invalid,
    or an object that gives a key twice."""
    text = read_input_file(path, field, max_bytes=max_bytes)
    try:
        return loads_json(text)
    except DuplicateKeyError as exc:
        raise InputError(f"{field}: {path}: {exc} in one object; keep one") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{field}: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise InputError(f"{field}: {path} is not usable JSON ({one_line(exc)})") from None
    except RecursionError:
        raise InputError(f"{field}: {path} is not usable JSON (nested too deeply)") from None
