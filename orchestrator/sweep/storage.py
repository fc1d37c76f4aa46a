"""Where a sweep keeps its state: the run folder (a local path or a URI Tune understands) and
the manifest ``lmodp-sweep.json`` next to Tune's own files.

Every state file lmo-dp writes there goes through :func:`write_state_file`, which is atomic: a
reader sees the old or the new file, never a torn one, also when the disk fills or the writer is
killed half-way. On a local (or shared) file system that is write to a temporary name, ``fsync``,
rename, ``fsync`` the folder; on object storage (``s3://``) one ``PUT``, which lands whole or not
at all.

Tune's own saved state is never needed to resume a sweep: what is finished is read back from
MLflow by trial key (:mod:`orchestrator.sweep.resume`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from noise_search.errors import InputError

MANIFEST = "lmodp-sweep.json"
#: the sweep lock's file in the run folder (:mod:`orchestrator.sweep.lock`); not sweep state
LOCK_FILE = ".lmodp-sweep.lock"


def _fs_and_path(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def read_manifest(run_dir: str) -> dict[str, Any] | None:
    """The sweep's manifest (None: there is none). A manifest that is not JSON is refused (exit 2)."""
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    target = f"{path.rstrip('/')}/{MANIFEST}"
    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(target) as f:
        data = f.read()
    try:
        manifest = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"--resume: the sweep's manifest {run_dir}/{MANIFEST} cannot be read ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"--resume: {run_dir}/{MANIFEST} is not an lmo-dp sweep manifest")
    return manifest


def write_manifest(run_dir: str, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (:func:`write_state_file`)."""
    write_state_file(run_dir, MANIFEST, json.dumps(manifest, indent=2).encode())


def write_state_file(run_dir: str, name: str, data: bytes) -> None:
    """``run_dir/name`` = ``data``, atomically: readers see the old file or the new one, whole.

    Local paths: a temporary file in the same folder, written and ``fsync``-ed, then renamed over
    the old one and the folder ``fsync``-ed; a failure (a full disk) removes the temporary file
    and leaves the old one as it was. URIs (``s3://``): a single ``PUT`` of the whole object.
    """
    if "://" in run_dir:
        fs, path = _fs_and_path(run_dir)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path.rstrip('/')}/{name}") as f:
            f.write(data)
        return
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # mode as for any new file (umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems cannot open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_dir_exists(run_dir: str) -> bool:
    """Whether ``run_dir`` holds anything of a sweep (the sweep lock's own file does not count)."""
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(info.base_name != LOCK_FILE for info in entries) or fs.get_file_info(path).type == pafs.FileType.File
