"""What a trial trains and what it feeds it, for each ``model.trainable`` set.

:func:`build_trainable` returns the model (trainable parameters marked), the inputs of the
three splits and what the run records about them:

* ``lora`` / ``full`` -- the whole Hugging Face model (:func:`trainers.models.load_model`) on
  token ids;
* ``head`` -- a :class:`~trainers.heads.FeatureHead` on the pooled features of a frozen
  encoder layer. The features come from the feature cache (:mod:`trainers.feature_cache`),
  so on a cache hit the encoder is not even loaded;
* ``lora`` / ``full`` with ``top_layers: k`` -- :class:`~trainers.heads.TopLayers` on the
  cached hidden states entering layer ``L - k + 1`` (``L`` the pooled layer).

Centring (``model.features.center``) subtracts the mean normalised feature of a public
reference corpus at the pooled layer; that mean is cached too. New weights are drawn from
torch's global generator: the caller seeds it (``torch.random.fork_rng``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.batches import encode
from trainers.config import TrialConfig
from trainers.data import Split, TextDataset, load_dataset
from trainers.feature_cache import FeatureStore, cache_root, digest_folder, digest_texts
from trainers.frozen import EncoderShape, FrozenEncoder, encoder_shape, resolve_layer
from trainers.heads import FeatureHead, TopLayers, add_lora, encoder_layers
from trainers.inputs import FeatureInputs, HiddenInputs, ModelInputs, TokenInputs
from trainers.model_folders import check_max_length
from trainers.models import default_lora_targets, default_model_path, load_model
from trainers.settings import ModelSettings

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass
class Trainable:
    """A model ready to train and its inputs per split."""

    model: nn.Module
    inputs: dict[str, ModelInputs]
    info: dict[str, Any]
    #: feature-cache use: ``{"hits": n, "builds": n, "root": path}`` (empty without a cache)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def describe(self) -> dict[str, Any]:
        n_train = sum(p.numel() for p in self.parameters)
        return {
            **self.info,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trainable_parameters": n_train,
        }


def build_trainable(cfg: TrialConfig, ds: TextDataset, device: torch.device) -> Trainable:
    """The model and inputs of ``cfg``'s trainable set for dataset ``ds``."""
    m = cfg.model
    folder = Path(m.path) if m.path is not None else default_model_path(m.task)
    check_max_length(folder, m.max_length)  # before any weights load (a default converted just now)
    if not m.cached_prefix:
        return _whole_model(cfg, ds, device)
    frozen = _FrozenSource(folder, m, device, threads=cfg.training.threads)
    if m.trainable == "head":
        return _head(m, ds, frozen)
    return _top(m, ds, frozen)


def _whole_model(cfg: TrialConfig, ds: TextDataset, device: torch.device) -> Trainable:
    m = cfg.model
    loaded = load_model(
        m.task,
        m.path,
        num_labels=ds.num_labels,
        lora=None if m.trainable != "lora" or m.lora is None else m.lora.as_kwargs(),
        dtype=m.dtype,
        device=device,
    )
    inputs: dict[str, ModelInputs] = {}
    for name in SPLITS:
        split: Split = getattr(ds, name)
        if len(split) == 0 and name != "train":
            continue
        enc = encode(split, loaded.tokenizer, max_length=m.max_length, task=m.task).tensors
        inputs[name] = TokenInputs(enc[0], enc[1], enc[2] if len(enc) > 2 else None)
    info = {
        "path": str(loaded.path),
        "model_type": loaded.model_type,
        "task": loaded.task,
        "trainable": m.trainable,
        "lora": loaded.lora,
    }
    return Trainable(loaded.model, inputs, info)


class _FrozenSource:
    """Pooled features and hidden states of one frozen model, from the cache or computed."""

    def __init__(self, folder: Path, m: ModelSettings, device: torch.device, threads: int | None) -> None:
        self.folder, self.settings, self.device = folder, m, device
        self.shape: EncoderShape = encoder_shape(folder)
        self.layer = resolve_layer(m.features.layer, self.shape.num_layers)
        self.store = FeatureStore(cache_root(m.features.cache_dir)) if m.features.cache else None
        self.hits = self.builds = 0
        self._encoder: FrozenEncoder | None = None
        self._model_digest: str | None = None

    @property
    def encoder(self) -> FrozenEncoder:
        if self._encoder is None:
            self._encoder = FrozenEncoder(self.folder, dtype=self.settings.dtype, device=self.device)
        return self._encoder

    def _material(self, kind: str, texts: tuple[str, ...], **extra: Any) -> dict[str, Any]:
        if self._model_digest is None:
            self._model_digest = digest_folder(self.folder)
        return {
            "kind": kind,
            "model": self._model_digest,
            "dtype": self.settings.dtype,
            "max_length": self.settings.max_length,
            "texts": digest_texts(texts),
            **extra,
        }

    def _get(self, material: dict[str, Any], build) -> dict[str, np.ndarray]:
        if self.store is None:
            return build()
        entry = self.store.get_or_build(material, build)
        if entry.built:
            self.builds += 1
        else:
            self.hits += 1
        return {name: entry.array(name) for name in entry.meta["arrays"]}

    def pooled(self, texts: tuple[str, ...], layer: int | None = None) -> np.ndarray:
        layer = self.layer if layer is None else layer
        pooling, max_length = self.settings.features.pooling, self.settings.max_length
        material = self._material("pooled", texts, layer=layer, pooling=pooling)
        arrays = self._get(
            material,
            lambda: {"features": self.encoder.pooled(texts, max_length=max_length, layer=layer, pooling=pooling)},
        )
        return arrays["features"]

    def hidden(self, texts: tuple[str, ...], layer: int) -> tuple[np.ndarray, np.ndarray]:
        material = self._material("hidden", texts, layer=layer)

        def build() -> dict[str, np.ndarray]:
            flat, lengths = self.encoder.hidden(texts, max_length=self.settings.max_length, layer=layer)
            return {"hidden": flat, "lengths": lengths}

        arrays = self._get(material, build)
        return arrays["hidden"], arrays["lengths"]

    def center(self) -> torch.Tensor | None:
        """The public reference corpus's mean (normalised) pooled feature at the pooled layer."""
        name = self.settings.features.center
        if name is None:
            return None
        ref = load_dataset(name, task="causal-lm")
        texts = ref.train.texts + ref.validation.texts + ref.test.texts
        feats = torch.as_tensor(self.pooled(texts))
        if self.settings.features.normalize:
            feats = nn.functional.normalize(feats, dim=-1)
        return feats.mean(dim=0)

    def report(self) -> dict[str, Any]:
        if self.store is None:
            return {"enabled": False}
        return {"enabled": True, "root": str(self.store.root), "hits": self.hits, "builds": self.builds}

    def info(self, trainable: str, **extra: Any) -> dict[str, Any]:
        f = self.settings.features
        return {
            "path": str(self.folder),
            "model_type": self.shape.model_type,
            "task": self.settings.task,
            "trainable": trainable,
            "features": {
                "layer": self.layer,
                "pooling": f.pooling,
                "normalize": f.normalize,
                "center": f.center,
            },
            **extra,
        }


def _labels(split: Split) -> tuple[int, ...]:
    if split.labels is None:
        raise ValueError("a classification split needs labels")
    return split.labels


def _head(m: ModelSettings, ds: TextDataset, frozen: _FrozenSource) -> Trainable:
    inputs: dict[str, ModelInputs] = {}
    for name in SPLITS:
        split: Split = getattr(ds, name)
        if len(split):
            inputs[name] = FeatureInputs(frozen.pooled(split.texts), _labels(split))
    head = FeatureHead(
        frozen.shape.hidden_size,
        ds.num_labels or 2,
        normalize=m.features.normalize,
        center=frozen.center(),
        init_std=frozen.shape.initializer_range,
    )
    return Trainable(head, inputs, frozen.info("head", lora=None), cache=frozen.report())


def _top(m: ModelSettings, ds: TextDataset, frozen: _FrozenSource) -> Trainable:
    k = int(m.top_layers)  # type: ignore[arg-type]
    if k > frozen.layer:
        from noise_search.errors import ParameterError

        raise ParameterError(
            "model.top_layers", f"must be <= the pooled layer's index ({frozen.layer}) for this model, got {k}"
        )
    first = frozen.layer - k  # hidden state entering the first trainable layer
    inputs: dict[str, ModelInputs] = {}
    for name in SPLITS:
        split: Split = getattr(ds, name)
        if len(split):
            flat, lengths = frozen.hidden(split.texts, first)
            inputs[name] = HiddenInputs(flat, lengths, _labels(split))
    center = frozen.center()
    encoder = frozen.encoder.model
    layers = list(encoder_layers(encoder))[first : frozen.layer]
    head = FeatureHead(
        frozen.shape.hidden_size,
        ds.num_labels or 2,
        normalize=m.features.normalize,
        center=center,
        init_std=frozen.shape.initializer_range,
    )
    top = TopLayers(layers, encoder.config, m.features.pooling, head).to(frozen.device)
    lora_info = None
    if m.trainable == "lora" and m.lora is not None:
        targets = list(m.lora.target_modules) if m.lora.target_modules else default_lora_targets(top)
        model: nn.Module = add_lora(top, rank=m.lora.rank, alpha=m.lora.alpha, dropout=m.lora.dropout, targets=targets)
        lora_info = {"rank": m.lora.rank, "alpha": m.lora.alpha, "dropout": m.lora.dropout, "target_modules": targets}
    else:
        for p in top.parameters():
            p.requires_grad_(True)
        model = top
    model.train()
    return Trainable(
        model,
        inputs,
        frozen.info(m.trainable, lora=lora_info, top_layers=k, first_trained_layer=first + 1),
        cache=frozen.report(),
    )
