#!/usr/bin/env bash
# GPU check: step time of non-private vs Gaussian-DP (L2) vs LMO-DP (L1) training with LoRA r=8
# in bf16 on random-initialised RoBERTa-large-sized (355M, sequence classification) and
# Llama-3.2-1B-sized (1.2B, causal LM) models, plus LMO vs Gaussian noise sampling; prints one
# table. Budget: under 8 minutes on one recent GPU (hard stop at 7m40s).
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine, from the project root or anywhere
#   bash benchmarks/gpu_check.sh --tiny     # smoke test on CPU with tiny configs (seconds)
#
# Needs the project's Python environment (.venv, or $PYTHON). Nothing is downloaded: the
# models are built from configs with random weights.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${1:-}" == "--tiny" ]]; then
  MODELS=(tiny-roberta tiny-llama)
  ARGS=(--device cpu --dtype bfloat16 --steps 1 --rounds 1 --warmup 1 --noise-repeats 3)
  LIMIT=300
else
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch (use --tiny for a CPU smoke test)" >&2
    exit 2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  MODELS=(roberta-large llama-1b)
  ARGS=(--device cuda --dtype bfloat16 --steps 10 --rounds 4 --warmup 3 --noise-repeats 50)
  LIMIT=460
fi

"$PY" -c 'import torch, transformers, opacus, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, opacus {opacus.__version__}, peft {peft.__version__}")'
timeout --signal=INT "$LIMIT" "$PY" benchmarks/bench_train.py --models "${MODELS[@]}" --batch 16 --seq 64 --rank 8 "${ARGS[@]}"
