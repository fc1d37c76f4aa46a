"""Who ran what, where, with which code: the tags every lmo-dp MLflow run carries.

:func:`provenance_tags` is computed once per process (the code and host do not change while it
runs) and added by :meth:`orchestrator.tracking.Tracker.start_run` to every run it creates:

* ``mlflow.user`` -- the operating-system user (MLflow also fills the run's ``user_id`` from it);
* ``lmodp.host`` -- the host name of the process that created the run (the driver for a sweep's
  parent run, the Ray worker's node for a trial);
* ``mlflow.source.git.commit`` and ``lmodp.git_dirty`` (``true``/``false``) when lmo-dp runs from
  a git checkout, else ``lmodp.git_commit = unknown`` (an installed package or a job's uploaded
  working folder, which has no ``.git``);
* ``lmodp.version`` and ``lmodp.versions`` (``name=version`` of the libraries that decide the
  numbers: torch, opacus, dp-accounting, ray, mlflow, transformers, peft, numpy, scipy).

The trial's config hash (``lmodp.config_sha256``) and the data's SHA-256 (param ``data.sha256``)
are added where the config and data are known (:func:`config_sha256`).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions are recorded, in this order
LIBRARIES: tuple[str, ...] = (
    "torch",
    "opacus",
    "dp-accounting",
    "ray",
    "mlflow",
    "transformers",
    "peft",
    "numpy",
    "scipy",
)
CONFIG_HASH_TAG = "lmodp.config_sha256"
_SOURCE = Path(__file__).resolve().parents[1]  # the folder holding the lmo-dp packages


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def _git(*args: str) -> str | None:
    """``git <args>`` in lmo-dp's own folder (None when it is not a checkout or git fails)."""
    if not (_SOURCE / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=_SOURCE, capture_output=True, text=True, timeout=10, check=True
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "unknown"


@functools.cache
def provenance_tags() -> dict[str, str]:
    """The tags of this process's runs (module docstring); cached for the process."""
    tags = {
        "mlflow.user": _user(),
        "lmodp.host": socket.gethostname(),
        "lmodp.version": _version("lmo-dp"),
        "lmodp.versions": " ".join(f"{name}={_version(name)}" for name in LIBRARIES),
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        tags["mlflow.source.git.commit"] = commit
        tags["lmodp.git_dirty"] = "unknown" if status is None else str(bool(status)).lower()
    else:
        tags["lmodp.git_commit"] = "unknown"
    return tags


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a config's canonical JSON (sorted keys): equal configs, equal hashes."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
