"""Where a sweep keeps its state: the run folder (a local path or a URI Tune understands) and
the manifest ``lmodp-sweep.json`` next to Tune's own state, written atomically (temporary name,
then moved), so ``--resume`` works for ``s3://`` storage too."""

from __future__ import annotations

import json
from typing import Any

MANIFEST = "lmodp-sweep.json"


def _fs_and_path(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def read_manifest(run_dir: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    target = f"{path.rstrip('/')}/{MANIFEST}"
    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


def write_manifest(run_dir: str, manifest: dict[str, Any]) -> None:
    fs, path = _fs_and_path(run_dir)
    fs.create_dir(path, recursive=True)
    tmp, final = f"{path.rstrip('/')}/.{MANIFEST}.tmp", f"{path.rstrip('/')}/{MANIFEST}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(manifest, indent=2).encode())
    fs.move(tmp, final)


def run_dir_exists(run_dir: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
