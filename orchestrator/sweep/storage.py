"""Where a sweep keeps its state: the run folder (a local path or a URI Tune understands) and
the manifest ``lmodp-sweep.json`` next to Tune's own state, written atomically (temporary name,
then moved), so ``--resume`` works for ``s3://`` storage too. :func:`check_tune_state` tells
before a resume whether Tune's own saved state can be read at all."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from noise_search.errors import InputError

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


#: Tune's experiment state files (one per save; the newest wins on restore)
TUNE_STATE_PATTERN = "experiment_state-*.json"


def check_tune_state(run_dir: str) -> None:
    """Refuse (``--resume``, exit 2) a sweep whose newest Tune state file is missing, truncated
    or not Tune's: Tune would log the error and silently start the grid over."""
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(run_dir)
    names = [
        info.base_name
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if info.type == pafs.FileType.File
    ]
    states = sorted(fnmatch.filter(names, TUNE_STATE_PATTERN))
    hint = f"; move {run_dir} away (its finished trials stay in MLflow) to start the sweep anew"
    if not states:
        raise InputError(f"--resume: no saved Tune state ({TUNE_STATE_PATTERN}) in {run_dir}{hint}")
    newest = f"{path.rstrip('/')}/{states[-1]}"
    try:
        with fs.open_input_stream(newest) as f:
            state = json.loads(f.read().decode())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"--resume: the saved Tune state {newest} cannot be read ({exc}){hint}") from None
    if not isinstance(state, dict) or not {"runner_data", "trial_data"} <= state.keys():
        raise InputError(f"--resume: {newest} is not a Tune experiment state{hint}")
