"""Training throughput and peak memory on one GPU: our packing vs the balanced mode vs TRL's bfd vs padding.

A Llama-architecture model of about 1.1B parameters (TinyLlama-1.1B shape: hidden 2048, 22 layers,
32 heads, 4 KV heads, intermediate 5632, vocab 32000) is built **from a config with random weights**;
nothing is downloaded. Example lengths follow the paper's distribution, simulated as
``benchmarks/packing.py`` does (the real seeds' instruction + answer + LongBench prompt tokenized, plus
10 documents of about 2,000 words), capped at ``--max-length`` (32k). Side by side in one run, the same
examples, the same number of optimizer steps' worth of tokens, forward + backward + AdamW, bf16,
activation checkpointing:

* ``ours``: :func:`~hf_context_synthesis.training.packing.pack_bfd` rows of ``max_length`` tokens,
  :class:`~hf_context_synthesis.training.packing.PackedDataCollator` (``position_ids`` + ``cu_seq_lens`` flash
  kwargs), flash-attention varlen (``flash_attention_2`` when installed, else sdpa);
* ``balanced``: examples <= ``max_length`` packed into micro-batches of ``2 * max_length`` tokens (the
  balanced mode's larger row budget; its cross-rank step balance is shown for 8 ranks in
  ``benchmarks/packing.py``), same collator and kernel;
* ``trl_bfd``: TRL's ``pack_dataset(strategy="bfd")`` + ``DataCollatorForLanguageModeling(padding_free=True)``;
* ``padded``: examples in random order, ``--pad-batch-size`` per batch padded to the longest, with an
  attention mask.

Prints real tokens/s, peak GPU memory, and the ratios to ``padded``.

``--cpu-smoke`` runs the same code paths on CPU with a tiny Llama, lengths scaled to 1,024 tokens and
a few steps (sdpa for every method); CI runs it (tests/test_gpu_benchmark.py). Its numbers say
nothing about GPU speed.

Usage::

    python benchmarks/gpu_training.py               # one large GPU, a few minutes
    python benchmarks/gpu_training.py --cpu-smoke   # CPU, seconds
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packing import SEEDS_DIR, build_tokenized, load_seeds, simulate_lengths  # noqa: E402  (benchmarks/packing.py)

LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=65536,
    rope_theta=10000.0,
)
LLAMA_TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=4096,
)


def build_model(args: argparse.Namespace, device: Any, attn: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**(LLAMA_TINY if args.cpu_smoke else LLAMA_1B), attn_implementation=attn)
    torch.manual_seed(args.seed)
    dtype = torch.float32 if args.cpu_smoke else torch.bfloat16
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    if not args.cpu_smoke:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    return model


def pick_attention(args: argparse.Namespace) -> str:
    if args.cpu_smoke:
        return "sdpa"
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "sdpa"


def method_batches(ds: Any, lengths: np.ndarray, args: argparse.Namespace, pad_id: int) -> dict[str, list[dict]]:
    """The batches of every method, on the same tokenized examples."""
    import torch
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hf_context_synthesis.training.packing import PackedDataCollator, pack_tokenized_dataset

    L = args.max_length
    ours = PackedDataCollator(pad_token_id=pad_id, return_flash_kwargs=True)
    out: dict[str, list[dict]] = {}
    out["ours"] = [ours([row]) for row in pack_tokenized_dataset(ds, L, 0)]
    out["balanced"] = [ours([row]) for row in pack_tokenized_dataset(ds, 2 * L, 0)]
    trl_coll = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True, return_position_ids=True)
    trl_rows = pack_dataset(ds, L, strategy="bfd").shuffle(seed=0)
    out["trl_bfd"] = [trl_coll([row]) for row in trl_rows]
    examples = list(ds)
    order = np.random.default_rng(args.seed).permutation(len(examples))
    padded = []
    for s in range(0, len(order), args.pad_batch_size):
        chunk = [examples[i] for i in order[s : s + args.pad_batch_size]]
        width = max(len(x["input_ids"]) for x in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        lab = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, x in enumerate(chunk):
            n = len(x["input_ids"])
            ids[j, :n] = torch.tensor(x["input_ids"])
            lab[j, :n] = torch.tensor(x["labels"])
            mask[j, :n] = 1
        padded.append({"input_ids": ids, "labels": lab, "attention_mask": mask})
    out["padded"] = padded
    for batches in out.values():
        for b in batches:
            b["use_cache"] = False
    return out


def run_method(model: Any, init: dict, batches: list[dict], device: Any, steps: int) -> dict[str, float]:
    import torch

    model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    cuda = device.type == "cuda"

    def step(b: dict) -> int:
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        mask = b.get("attention_mask")
        return int(mask.sum()) if mask is not None else int(b["input_ids"].numel())

    step(batches[0])  # warm-up (kernels, allocator)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    chosen = batches[1 : 1 + steps] if len(batches) > steps else batches
    t = time.perf_counter()
    real = 0
    for b in chosen:
        real += step(b)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del opt
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"steps": len(chosen), "real_tokens": real, "seconds": seconds, "tps": real / seconds, "peak_gib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, lengths scaled to 1k (CI)")
    parser.add_argument("--max-length", type=int, default=32768, help="example cap and packed row length")
    parser.add_argument("--steps", type=int, default=6, help="timed micro-batches per method")
    parser.add_argument("--pad-batch-size", type=int, default=2)
    parser.add_argument("--limit", type=int, default=96, help="seeds (examples) to simulate")
    parser.add_argument("--seeds-dir", type=Path, default=SEEDS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # the simulation's knobs (benchmarks/packing.py defaults: the paper's 10 documents of ~2,000 words)
    args.docs, args.words_mean, args.words_sigma, args.tokens_per_word, args.tokens_per_word_sd = 10, 2000.0, 0.3, 1.3, 0.1
    if args.cpu_smoke:
        args.max_length, args.steps, args.limit = 1024, min(args.steps, 2), min(args.limit, 16)

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not args.cpu_smoke:
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke for the CPU smoke run")
    seeds = load_seeds(args.seeds_dir, args.limit)
    tokenizer = make_tiny_tokenizer([f"{i}\n{a}" for _, i, a in seeds], vocab_size=1024)
    rng = np.random.default_rng(args.seed)
    sim = simulate_lengths(seeds, tokenizer, args, rng)
    lengths = sim["lengths"].astype(np.float64)
    if args.cpu_smoke:  # the paper's shape, scaled from 32k to the smoke length
        lengths = lengths * args.max_length / 32768
    lengths = np.clip(np.rint(lengths), 16, args.max_length).astype(np.int64)
    answer = np.minimum(sim["answer"], lengths // 2)

    attn = pick_attention(args)
    model = build_model(args, device, attn)
    n_params = sum(p.numel() for p in model.parameters())
    ds = build_tokenized(lengths, answer, model.config.vocab_size, rng)
    batches = method_batches(ds, lengths, args, pad_id=0)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    print(f"gpu_training benchmark: {'CPU smoke' if args.cpu_smoke else torch.cuda.get_device_name()}, "
          f"Llama {n_params / 1e9:.2f}B params (random, from config), attention {attn}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"{len(lengths)} examples, lengths min {lengths.min():,} median {int(np.median(lengths)):,} "
          f"max {lengths.max():,} (cap {args.max_length:,}); {args.steps} timed micro-batches per method")
    for name, b in batches.items():  # warm every method's code paths first, so the first one timed pays no extra
        run_method(model, init, b[:2], device, 1)
    results = {}
    for name, b in batches.items():
        results[name] = run_method(model, init, b, device, args.steps)
    base = results["padded"]["tps"]
    print(f"{'method':<10} {'micro-batches':>13} {'real tokens':>12} {'tokens/s':>10} {'peak GiB':>9} {'vs padded':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['steps']:>13} {r['real_tokens']:>12,} {r['tps']:>10,.0f} {r['peak_gib']:>9.2f} "
              f"{r['tps'] / base:>9.2f}x")
    print("ratios: " + ", ".join(f"{n}/padded={r['tps'] / base:.2f}x" for n, r in results.items() if n != "padded")
          + f", ours/trl_bfd={results['ours']['tps'] / results['trl_bfd']['tps']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
