"""A trained trial as a folder on disk, and that folder loaded back as a text classifier.

:func:`save_trained` writes what a trial trained -- and only that -- with what is needed to
predict from it:

* ``head``: ``head.safetensors``, the classifier (and the public centre it subtracts) that reads
  pooled features of the frozen encoder;
* ``lora`` (whole model): ``adapter/``, the LoRA adapter in PEFT's own ``save_pretrained``
  format (with the classification layer PEFT keeps beside it);
* ``full`` (whole model): ``weights/``, every weight (``save_pretrained``);
* ``top_layers: k``: the top ``k`` layers and the head, as ``top.safetensors`` (``full``) or as a
  PEFT ``adapter/`` plus ``head.safetensors`` (``lora``);
* always ``tokenizer/`` and ``lmodp-model.json`` (:data:`MANIFEST`): the format version, the
  task, the trainable set, the label names, the feature settings, the evaluation batch size and
  the base model the weights sit on (``model.path`` of the config; ``null`` = the packaged
  default model, found on the loading machine -- nothing is ever downloaded).

:func:`load_saved` rebuilds the model from that folder and the base model on disk;
:meth:`SavedClassifier.predict_proba` scores texts exactly as the trial's evaluation did (same
tokenisation, same length-sorted batches of ``eval_batch_size``), so a saved model reproduces
the trial's test accuracy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

from noise_search.errors import InputError

MANIFEST = "lmodp-model.json"
FORMAT = "lmo-dp-model"
FORMAT_VERSION = 1


def _peft_model(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_trained(result: Any, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the model a :class:`~trainers.results.TrainResult` trained into ``folder`` (created;
    must be empty or missing). Returns the manifest written to ``folder/lmodp-model.json``."""
    from safetensors.torch import save_file

    from trainers.heads import TopLayers
    from trainers.models import load_tokenizer

    trained = result.trained
    if trained is None:
        raise ValueError("the result holds no trained model (a data-parallel rank other than 0?)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg, info = result.config, trained.info
    model = trained.model
    m = cfg.model
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "task": m.task,
        "trainable": m.trainable,
        "top_layers": m.top_layers,
        "base_model": {"path": m.path, "resolved": info.get("path"), "model_type": info.get("model_type")},
        "dtype": m.dtype,
        "max_length": m.max_length,
        "eval_batch_size": cfg.training.eval_batch_size,
        "labels": result.dataset.get("label_names"),
        "lora": info.get("lora"),
        "features": info.get("features"),
        "first_trained_layer": info.get("first_trained_layer"),
    }
    load_tokenizer(Path(info["path"])).save_pretrained(out / "tokenizer")
    if m.trainable == "head":
        manifest["kind"] = "head"
        manifest["head"] = {"hidden_size": model.classifier.in_features, "has_center": model.center is not None}
        save_file(_plain_state(model), str(out / "head.safetensors"))
    elif m.top_layers:
        top = model.base_model.model if _peft_model(model) else model
        assert isinstance(top, TopLayers)
        manifest["kind"] = "top"
        manifest["head"] = {
            "hidden_size": top.head.classifier.in_features,
            "has_center": top.head.center is not None,
        }
        if _peft_model(model):
            model.save_pretrained(out / "adapter")
            save_file(_plain_state(top.head), str(out / "head.safetensors"))
        else:
            save_file(_plain_state(top), str(out / "top.safetensors"))
    else:
        manifest["kind"] = "whole"
        if _peft_model(model):
            model.save_pretrained(out / "adapter")
        else:
            model.save_pretrained(out / "weights")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a saved model folder (:class:`InputError` when it is not one)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--model: {folder} is not an lmo-dp model folder ({MANIFEST}: {exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise InputError(
            f"--model: {folder} holds format {manifest.get('format')} version {manifest.get('version')}; "
            f"this lmo-dp reads {FORMAT} version {FORMAT_VERSION}"
        )
    return manifest


def base_model_folder(manifest: dict[str, Any]) -> Path:
    """The base model the saved weights sit on: the recorded ``model.path``, else the packaged
    default model of the task on this machine (never a download)."""
    from trainers.model_folders import check_model_folder
    from trainers.models import default_model_path

    path = manifest["base_model"].get("path")
    if path is None:
        return default_model_path(manifest["task"])
    try:
        return check_model_folder(path)
    except InputError as exc:
        raise InputError(f"--model: the base model of this model is not usable here: {exc}") from None


@dataclass
class SavedClassifier:
    """A saved classifier, rebuilt: call :meth:`predict_proba`."""

    manifest: dict[str, Any]
    model: nn.Module
    featurize: Any  #: texts -> :class:`~trainers.inputs.ModelInputs` (labels all 0)

    @property
    def labels(self) -> list[str]:
        labels = self.manifest.get("labels")
        n = self.num_labels
        return [str(v) for v in labels] if labels else [str(i) for i in range(n)]

    @property
    def num_labels(self) -> int:
        labels = self.manifest.get("labels")
        return len(labels) if labels else 2

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, classes)`` float64 class probabilities (softmax of the logits), rows in input order."""
        if len(texts) == 0:
            return np.zeros((0, self.num_labels))
        inputs = self.featurize(list(texts))
        self.model.eval()
        n = len(inputs)
        order = torch.arange(n) if inputs.lengths is None else torch.argsort(inputs.lengths, stable=True)
        out = torch.zeros((n, self.num_labels), dtype=torch.float64)
        for idx in torch.split(order, int(self.manifest["eval_batch_size"])):
            logits = inputs.logits(self.model, inputs.batch(idx, torch.device("cpu")))
            out[idx] = torch.softmax(logits.double(), dim=-1)
        return out.numpy()

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """``(label, probability of that label)`` per text: the most probable class."""
        probs = self.predict_proba(texts)
        names = self.labels
        return [(names[int(row.argmax())], float(row.max())) for row in probs]


def load_saved(folder: str | os.PathLike[str]) -> SavedClassifier:
    """Rebuild the classifier saved in ``folder`` (CPU, eval mode). A causal LM is refused: it
    has no labels to predict."""
    from trainers.heads import FeatureHead, TopLayers, encoder_layers

    root = Path(folder)
    manifest = read_manifest(root)
    if manifest["task"] != "classification":
        raise InputError(f"--model: a {manifest['task']} model has no labels; lmo-dp predict serves classifiers")
    base = base_model_folder(manifest)
    num_labels = len(manifest["labels"]) if manifest.get("labels") else 2
    max_length, dtype = int(manifest["max_length"]), manifest["dtype"]
    kind = manifest["kind"]
    if kind == "whole":
        return SavedClassifier(manifest, _whole(root, base, manifest, num_labels), _token_featurizer(root, max_length))
    from trainers.frozen import FrozenEncoder
    from trainers.inputs import FeatureInputs, HiddenInputs

    features = manifest["features"]
    encoder = FrozenEncoder(base, dtype=dtype)
    head_info = manifest["head"]

    def new_head() -> FeatureHead:
        center = torch.zeros(head_info["hidden_size"]) if head_info["has_center"] else None
        return FeatureHead(
            head_info["hidden_size"], num_labels, normalize=features["normalize"], center=center, init_std=0.02
        )

    if kind == "head":
        head = new_head()
        _load_state(head, root / "head.safetensors")

        def pooled(texts: list[str]) -> Any:
            feats = encoder.pooled(texts, max_length=max_length, layer=features["layer"], pooling=features["pooling"])
            return FeatureInputs(feats, [0] * len(texts))

        return SavedClassifier(manifest, head, pooled)
    first = int(manifest["first_trained_layer"]) - 1  # the hidden state entering the top layers
    layers = list(encoder_layers(encoder.model))[first : features["layer"]]
    top = TopLayers(layers, encoder.model.config, features["pooling"], new_head())
    model: nn.Module = top
    if (root / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(top, root / "adapter")
        _load_state(top.head, root / "head.safetensors")
    else:
        _load_state(top, root / "top.safetensors")

    def hidden(texts: list[str]) -> Any:
        flat, lengths = encoder.hidden(texts, max_length=max_length, layer=first)
        return HiddenInputs(flat, lengths, [0] * len(texts))

    return SavedClassifier(manifest, model, hidden)


def _load_state(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)), strict=True)


def _whole(root: Path, base: Path, manifest: dict[str, Any], num_labels: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from trainers.models import DTYPES

    dtype = DTYPES[manifest["dtype"]]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new classifier's "newly initialised" report: the adapter replaces it
    try:
        if (root / "weights").is_dir():
            return AutoModelForSequenceClassification.from_pretrained(root / "weights", dtype=dtype)
        from peft import PeftModel

        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels, dtype=dtype)
        if model.config.pad_token_id is None:
            from trainers.models import load_tokenizer

            model.config.pad_token_id = load_tokenizer(root / "tokenizer").pad_token_id
        return PeftModel.from_pretrained(model, root / "adapter")
    finally:
        hf_logging.set_verbosity(verbosity)


def _token_featurizer(root: Path, max_length: int) -> Any:
    from trainers.inputs import TokenInputs
    from trainers.models import load_tokenizer

    tokenizer = load_tokenizer(root / "tokenizer")

    def tokens(texts: list[str]) -> Any:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return TokenInputs(enc["input_ids"].long(), enc["attention_mask"].long(), torch.zeros(len(texts)).long())

    return tokens
