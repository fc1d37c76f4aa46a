"""A content-addressed, on-disk store of frozen activations (features, hidden states).

When everything below the first trainable module is frozen, its output for a given example
never changes, so it is computed once and reused across steps, epochs and trials. An entry is
keyed by the SHA-256 of everything that determines it -- the model folder's file contents, the
exact texts, ``max_length``, the layer and pooling, the dtype and this module's format
version -- so any change to an input gives a new key (the old entry is simply not used).

Layout: ``<root>/<key[:2]>/<key>/`` holding one ``.npy`` file per array and ``meta.json``
(the key material, array shapes, dtypes and each file's SHA-256). ``meta.json`` is written last,
inside a private temporary folder that is then renamed into place: a reader sees a whole entry
or none.

Every hit is checked against the stored checksums (about 0.2 s per 100 MB): an entry whose files
changed on disk -- rows reordered at the same size, a bit flipped, a file cut short or missing --
is rebuilt, with one warning line naming it, instead of training on wrong features.
Builders of the same key on one machine take an exclusive ``flock`` so only one computes it;
the others wait and read its result. Where locks do not hold (some network file systems), two
builders may both compute it and the first rename wins; the other discards its copy.

The root is ``model.features.cache_dir`` when given, else ``$LMODP_FEATURE_CACHE``, else
``<data cache>/features`` (:func:`trainers.cache.cache_dir`). Entries are never modified; delete
the folder to reclaim space.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noise_search.errors import LmoDpError
from trainers import cache

log = logging.getLogger(__name__)
#: 2: every array file's SHA-256 in ``meta.json`` (entries of format 1 are not used)
FORMAT_VERSION = 2
ENV_VAR = "LMODP_FEATURE_CACHE"
META = "meta.json"


class FeatureCacheError(LmoDpError):
    """The feature cache could not be written or holds a damaged entry."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The store's root folder (not created)."""
    if cache_dir:
        return Path(cache_dir).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return cache.cache_dir() / "features"


def digest_texts(texts: Sequence[str]) -> str:
    """SHA-256 over the texts in order (count included, so splits of one list differ)."""
    h = hashlib.sha256(f"{len(texts)}\n".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


_FOLDER_MEMO: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def digest_folder(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over every file of a model folder (relative names and contents).

    Memoised per process by (path, every file's size and mtime), so a trial pays for reading
    the weights once.
    """
    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    stamp = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo_key = (str(root), stamp)
    if memo_key in _FOLDER_MEMO:
        return _FOLDER_MEMO[memo_key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        h.update(b"\0")
    out = h.hexdigest()
    _FOLDER_MEMO[memo_key] = out
    return out


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(material: dict[str, Any]) -> str:
    """The entry key: SHA-256 of the canonical JSON of ``material`` plus the format version."""
    blob = json.dumps({"format": FORMAT_VERSION, **material}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One stored entry."""

    key: str
    path: Path
    meta: dict[str, Any]
    #: whether this call computed it (False: read from the store)
    built: bool = False

    def damage(self) -> str | None:
        """Why the entry's files are not what was stored (None: every file matches its SHA-256)."""
        for name, spec in self.meta.get("arrays", {}).items():
            path = self.path / f"{name}.npy"
            try:
                digest = file_sha256(path)
            except OSError as exc:
                return f"{path.name} cannot be read ({exc.strerror or exc})"
            if digest != spec.get("sha256"):
                return f"{path.name} does not match its stored checksum"
        return None

    def array(self, name: str) -> np.ndarray:
        """Array ``name`` read into memory (float32/int arrays as stored)."""
        try:
            return np.load(self.path / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FeatureCacheError(
                f"feature cache: entry {self.path} is damaged ({exc}); delete that folder and run again"
            ) from exc


class FeatureStore:
    """The store under one root folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CacheEntry | None:
        """The complete entry for ``key``, or None."""
        path = self.entry_dir(key)
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FeatureCacheError(
                f"feature cache: entry {path} is damaged ({exc}); delete that folder and run again"
            ) from exc
        return CacheEntry(key, path, meta)

    def _usable(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """(the entry for ``key`` when it is whole and matches its checksums, why not when it
        exists but is damaged)."""
        try:
            entry = self.lookup(key)
        except FeatureCacheError as exc:
            return None, str(exc.__cause__ or exc)
        if entry is None:
            return None, None
        damage = entry.damage()
        return (entry, None) if damage is None else (None, damage)

    def get_or_build(self, material: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]) -> CacheEntry:
        """The entry for ``material``; on a miss ``build()`` computes its arrays and they are stored.
        A damaged entry (:meth:`CacheEntry.damage`) is rebuilt, with one warning line naming it."""
        key = cache_key(material)
        found, _ = self._usable(key)
        if found is not None:
            return found
        final = self.entry_dir(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FeatureCacheError(f"feature cache: cannot create {final.parent}: {exc.strerror or exc}") from exc
        with self._lock(key):
            found, damage = self._usable(key)  # another process built (or rebuilt) it while we waited
            if found is not None:
                return found
            if damage is not None:
                log.warning("feature cache: entry %s is damaged (%s); rebuilding it", final, damage)
                self._discard(final)
            arrays = build()
            self._write(final, key, material, arrays)
        entry = self.lookup(key)
        if entry is None:  # pragma: no cover - the rename above either landed or another writer's did
            raise FeatureCacheError(f"feature cache: entry {final} vanished after it was written")
        return CacheEntry(entry.key, entry.path, entry.meta, built=True)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / f"{key}.lock").open("a") as f:
            # without lock support (some network file systems) the atomic rename still protects
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _discard(self, final: Path) -> None:
        """Move a damaged entry out of the way (a rename: readers see it whole or gone), then delete it."""
        aside = final.parent / f".damaged-{final.name[:12]}-{os.getpid()}-{time.time_ns()}"
        try:
            final.rename(aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FeatureCacheError(f"feature cache: cannot replace the damaged entry {final}: {exc}") from exc
        shutil.rmtree(aside, ignore_errors=True)

    def _write(self, final: Path, key: str, material: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        try:
            shapes = {}
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                with (tmp / f"{name}.npy").open("wb") as f:
                    np.save(f, arr, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                shapes[name] = {
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                    "sha256": file_sha256(tmp / f"{name}.npy"),
                }
            meta = {"key": key, "material": material, "arrays": shapes, "created": time.time()}
            with (tmp / META).open("w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            tmp.chmod(0o755)
            try:
                tmp.rename(final)
            except OSError:
                if self.lookup(key) is None:  # not a lost race: a real failure
                    raise
        except OSError as exc:
            raise FeatureCacheError(f"feature cache: cannot write {final}: {exc.strerror or exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
