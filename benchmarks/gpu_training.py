"""Training throughput and peak memory on one GPU: our trainer vs TRL ``SFTTrainer`` bfd vs padded batches.

A Llama-architecture model of about 1.1B parameters (TinyLlama-1.1B shape: hidden 2048, 22 layers,
32 heads, 4 KV heads, intermediate 5632, vocab 32000) is built **from a config with random weights**;
nothing is downloaded. Every method trains a fresh copy of the same initial weights (fp32 master weights,
bf16 autocast on CUDA, activation checkpointing, AdamW at lr 2e-5) through a real ``Trainer``:

* ``ours``: :class:`~hf_context_synthesis.training.trainer.ContextSynthesisSFTTrainer` from
  :func:`~hf_context_synthesis.training.trainer.build_trainer`: BFD packing, ``row_order="balanced"``,
  LongAlign weighting (``loss_weighting="example"``, the answer-only LM head), the packed attention path
  :func:`~hf_context_synthesis.training.attention.choose_packed_attention` picks (flash_attention_2 when
  flash-attn is installed, else flex_attention on CUDA; packed_sdpa on CPU);
* ``trl_bfd``: TRL ``SFTTrainer`` with ``SFTConfig(packing=True, packing_strategy="bfd")`` (padding-free
  rows, TRL's loss) on the same attention path as ``ours`` (``--trl-attention`` picks another);
* ``padded``: TRL ``SFTTrainer`` with ``packing=False, padding_free=False``: ``row_length // example_cap``
  examples per batch padded to the longest, an attention mask, ``sdpa`` (the same token budget per
  micro-batch as a packed row).

Two scenarios, side by side in one run: ``32k`` (rows of 32,768 tokens; the paper's examples are 20k-32k
tokens, so each row holds one example) and ``64k`` (rows of 65,536 tokens of examples capped at 32,768:
rows of several examples). Example lengths follow the paper's shape without reading any data: 10
documents of ``lognormal(mean 2,000 words, sigma 0.3)`` words at ``normal(1.3, 0.1)`` tokens per word,
plus ``uniform(300, 1500)`` tokens of instruction, LongBench prompt and chat template, and an answer of
``lognormal(mean 64)`` tokens, clipped to the example cap; token ids are random.

Each method runs ``--warmup`` steps, then ``--steps`` timed optimizer steps (one micro-batch each). A
step's time runs from the Trainer's ``on_step_begin`` to its ``on_step_end`` (forward, backward, optimizer
step; CUDA synchronized at both ends) and its tokens are the real (non-padding) tokens the model was
given. Reported: tokens/s per step (min / median / max), the overall tokens/s, peak GPU memory over the
timed steps, and the ratios of the medians.

``--cpu-smoke`` runs the same code paths on CPU with a tiny Llama, lengths scaled from 32k to 1,024
tokens, one warm-up and two timed steps; CI runs it (tests/test_gpu_benchmark.py). Its numbers say
nothing about GPU speed. ``--json PATH`` writes every figure (``scripts/gpu_check.py`` reads it).

Usage::

    python benchmarks/gpu_training.py               # one large GPU, a few minutes
    python benchmarks/gpu_training.py --cpu-smoke   # CPU, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.gpu_training")

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

#: scenario name -> (row length, example cap) at full scale
SCENARIOS = {"32k": (32768, 32768), "64k": (65536, 32768)}
METHODS = ("ours", "trl_bfd", "padded")
#: how the CPU smoke run scales the lengths (32k -> 1k)
SMOKE_SCALE = 1024 / 32768


def simulate_examples(n: int, cap: int, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, answer_tokens)`` of ``n`` examples of the paper's shape (module docstring), scaled by
    ``scale`` and clipped to ``cap``."""
    sigma = 0.3
    doc_words = rng.lognormal(math.log(2000.0) - sigma**2 / 2, sigma, size=(n, 10))
    per_word = np.clip(rng.normal(1.3, 0.1, size=doc_words.shape), 1.0, 2.0)
    base = rng.uniform(300, 1500, size=n)
    lengths = (doc_words * per_word).sum(axis=1) + base
    answer = np.clip(rng.lognormal(math.log(64.0) - 0.32, 0.8, size=n), 4, 512)
    lengths = np.clip(np.rint(lengths * scale), 16, cap).astype(np.int64)
    answer = np.clip(np.rint(answer * max(scale, 0.25)), 2, lengths // 2).astype(np.int64)
    return lengths, answer


def tokenized_dataset(lengths: np.ndarray, answer: np.ndarray, vocab: int, rng: np.random.Generator) -> Any:
    """A ``datasets.Dataset`` of random ``input_ids`` (ids >= 4: no special token) with these lengths and
    ``labels`` on the last ``answer`` tokens (-100 before)."""
    import datasets
    import pyarrow as pa

    from hf_context_synthesis.training.packing import IGNORE_INDEX, position_ids_for

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = rng.integers(4, vocab, int(lengths.sum()), dtype=np.int32)
    prompt = lengths - answer
    labels = np.where(position_ids_for(lengths, np.int64) < np.repeat(prompt, lengths), np.int32(IGNORE_INDEX), ids)
    table = pa.table({
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
        "labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels.astype(np.int32))),
    })
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def build_model(spec: dict[str, Any], device: Any, attn: str, seed: int) -> Any:
    """A Llama from ``spec`` with seeded random fp32 weights (the master weights) on ``device``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**spec, attn_implementation=attn, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model


def make_step_timer(model: Any, warmup: int, cuda: bool) -> Any:
    """A ``TrainerCallback`` timing each optimizer step after ``warmup`` ones; it counts the real tokens the
    model is given (a forward pre-hook: attention-mask sum, else all tokens) and the peak GPU memory."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.tokens: list[int] = []
            self.peak_gib: float | None = None
            self._pending: list[Any] = []
            self._t0 = 0.0
            model.register_forward_pre_hook(self._count, with_kwargs=True)

        def _count(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            if not torch.is_grad_enabled():
                return
            mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._pending.append(mask.sum() if mask is not None else ids.numel())

        def _sync(self) -> None:
            if cuda:
                torch.cuda.synchronize()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._sync()
            self._pending = []
            self._t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._sync()
            dt = time.perf_counter() - self._t0
            if state.global_step <= warmup:
                if cuda and state.global_step == warmup:
                    torch.cuda.reset_peak_memory_stats()
                return
            self.seconds.append(dt)
            self.tokens.append(int(sum(int(x) for x in self._pending)))
            if cuda:
                self.peak_gib = torch.cuda.max_memory_allocated() / 2**30

    return StepTimer()


def common_config(out: str, args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """``SFTConfig`` fields every method shares."""
    steps = args.warmup + args.steps
    return dict(output_dir=out, max_steps=steps, learning_rate=2e-5, lr_scheduler_type="constant", warmup_steps=0,
                bf16=cuda, use_cpu=not cuda, activation_checkpointing=True, gradient_checkpointing=None,
                logging_steps=steps, save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed,
                dataloader_num_workers=0)


def make_trainer(method: str, model: Any, tokenizer: Any, ds: Any, row: int, cap: int, out: str,
                 args: argparse.Namespace, cuda: bool) -> Any:
    """The trainer of ``method`` on the tokenized examples ``ds``."""
    import trl

    from hf_context_synthesis.training.packing import PackingConfig
    from hf_context_synthesis.training.trainer import build_trainer, default_sft_config

    common = common_config(out, args, cuda)
    if method == "ours":
        cfg = default_sft_config(out, max_length=row, **{k: v for k, v in common.items() if k != "output_dir"})
        packing = PackingConfig(max_length=row, max_example_length=cap, loss_weighting="example",
                                row_order="balanced", shuffle_seed=args.seed)
        return build_trainer(model, tokenizer, ds, cfg, packing=packing)
    if method == "trl_bfd":
        cfg = trl.SFTConfig(packing=True, packing_strategy="bfd", max_length=row, per_device_train_batch_size=1,
                            **common)
    elif method == "padded":
        cfg = trl.SFTConfig(packing=False, padding_free=False, max_length=cap,
                            per_device_train_batch_size=max(1, row // cap), **common)
    else:
        raise ValueError(f"unknown method {method!r}")
    return trl.SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer)


def summarize(timer: Any) -> dict[str, Any]:
    """Per-step tokens/s (min / median / max), overall tokens/s and peak memory of a timed run."""
    rates = [t / s for t, s in zip(timer.tokens, timer.seconds) if s > 0]
    if not rates:
        raise RuntimeError("no timed step ran: too few batches for --warmup + --steps")
    return {
        "timed_steps": len(rates),
        "tokens": int(sum(timer.tokens)),
        "seconds": round(sum(timer.seconds), 4),
        "tokens_per_s_min": round(min(rates), 1),
        "tokens_per_s_median": round(statistics.median(rates), 1),
        "tokens_per_s_max": round(max(rates), 1),
        "tokens_per_s": round(sum(timer.tokens) / sum(timer.seconds), 1),
        "peak_gpu_gib": None if timer.peak_gib is None else round(timer.peak_gib, 3),
    }


def run_method(method: str, scenario: dict[str, Any], tokenizer: Any, args: argparse.Namespace, device: Any) -> dict:
    """Build a fresh model, train ``method`` for warm-up + timed steps, return its figures."""
    import torch

    cuda = device.type == "cuda"
    # ours starts on sdpa and build_trainer switches it; trl_bfd gets ours' packed path unless told otherwise
    attn = args.trl_attention if method == "trl_bfd" else "sdpa"
    if attn == "same":
        attn = scenario["attention"]
    model = build_model(args.model_spec, device, attn, args.seed)
    timer = make_step_timer(model, args.warmup, cuda)
    with tempfile.TemporaryDirectory(prefix=f"gpu-bench-{method}-") as out:
        t = time.perf_counter()
        trainer = make_trainer(method, model, tokenizer, scenario["dataset"], scenario["row_length"],
                               scenario["example_cap"], out, args, cuda)
        setup = time.perf_counter() - t
        trainer.add_callback(timer)
        trainer.train()
        figures = summarize(timer)
        figures.update(attention=trainer.model.config._attn_implementation, setup_s=round(setup, 2),
                       train_loss=trainer.state.log_history[-1].get("train_loss"))
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return figures


def ratios(methods: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Median tokens/s and peak-memory ratios between the methods."""
    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = methods.get(a, {}).get(key), methods.get(b, {}).get(key)
        return round(x / y, 3) if x is not None and y else None

    out = {f"{a}/{b}": ratio(a, b, "tokens_per_s_median")
           for a, b in (("ours", "trl_bfd"), ("ours", "padded"), ("trl_bfd", "padded"))}
    out.update({f"memory {a}/{b}": ratio(a, b, "peak_gpu_gib") for a, b in (("ours", "trl_bfd"), ("ours", "padded"))})
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, lengths scaled to 1k (CI)")
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per method (>= 5 on a GPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernels, compilation, allocator)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the 1.1B model's 22 (quicker)")
    parser.add_argument("--trl-attention", default="same",
                        help="attention of trl_bfd: 'same' as ours (default), or e.g. sdpa / flash_attention_2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")
    args.model_spec = dict(LLAMA_TINY if args.cpu_smoke else LLAMA_1B)
    if args.layers:
        args.model_spec["num_hidden_layers"] = args.layers
    return args


def build_scenarios(args: argparse.Namespace, device_type: str, vocab: int) -> dict[str, dict[str, Any]]:
    """Every scenario's lengths, tokenized dataset and packed attention path."""
    scale = SMOKE_SCALE if args.cpu_smoke else 1.0
    from hf_context_synthesis.training.attention import packed_attention_for

    attention = packed_attention_for(device_type)  # what build_trainer switches packed rows to
    out = {}
    for i, name in enumerate(args.scenarios):
        row, cap = (int(x * scale) for x in SCENARIOS[name])
        per_batch = max(1, row // cap)
        n = (args.warmup + args.steps + 2) * per_batch * 2  # enough rows / batches for every method
        rng = np.random.default_rng(args.seed + i)
        lengths, answer = simulate_examples(n, cap, scale, rng)
        out[name] = {"row_length": row, "example_cap": cap, "examples": n, "attention": attention,
                     "length_min": int(lengths.min()), "length_median": int(np.median(lengths)),
                     "length_max": int(lengths.max()), "dataset": tokenized_dataset(lengths, answer, vocab, rng)}
    return out


def print_report(report: dict[str, Any]) -> None:
    """The side-by-side table and ratios."""
    print(f"gpu_training benchmark: {report['device']}, Llama {report['params_b'] * 1000:,.1f}M params (random, from config), "
          f"torch {report['torch']}, transformers {report['transformers']}, trl {report['trl']}")
    for name, sc in report["scenarios"].items():
        print(f"\n[{name}] rows of {sc['row_length']:,} tokens, examples <= {sc['example_cap']:,} "
              f"(lengths {sc['length_min']:,}-{sc['length_max']:,}, median {sc['length_median']:,}), "
              f"{report['warmup']} warm-up + {report['steps']} timed steps per method")
        print(f"{'method':<8} {'attention':<18} {'steps':>5} {'tok/s min':>10} {'median':>10} {'max':>10} "
              f"{'peak GiB':>9}")
        for m, r in sc["methods"].items():
            peak = "n/a" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
            print(f"{m:<8} {r['attention']:<18} {r['timed_steps']:>5} {r['tokens_per_s_min']:>10,.0f} "
                  f"{r['tokens_per_s_median']:>10,.0f} {r['tokens_per_s_max']:>10,.0f} {peak:>9}")
        print("ratios: " + ", ".join(f"{k}={'n/a' if v is None else f'{v:.2f}x'}" for k, v in sc["ratios"].items()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every scenario and method; return the report (what ``--json`` writes)."""
    import torch
    import transformers
    import trl

    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not args.cpu_smoke:
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke for the CPU smoke run")
    if args.cpu_smoke:
        torch.set_num_threads(1)  # a tiny model: one thread is as fast, and shared CI cores are not oversubscribed
    tokenizer = make_tiny_tokenizer()
    scenarios = build_scenarios(args, device.type, args.model_spec["vocab_size"])
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(args.model_spec, "meta", "sdpa", args.seed).parameters())
    report: dict[str, Any] = {
        "device": "CPU smoke" if args.cpu_smoke else torch.cuda.get_device_name(),
        "cpu_smoke": bool(args.cpu_smoke), "params_b": params / 1e9, "model": args.model_spec, "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": trl.__version__, "warmup": args.warmup, "steps": args.steps,
        "scenarios": {},
    }
    for name, sc in scenarios.items():
        methods = {m: run_method(m, sc, tokenizer, args, device) for m in args.methods}
        report["scenarios"][name] = {k: v for k, v in sc.items() if k != "dataset"} | {
            "methods": methods, "ratios": ratios(methods)}
        write_json(report, args.json)  # after every scenario: a run stopped by a time limit keeps what it measured
    return report


def write_json(report: dict[str, Any], path: Path | None) -> None:
    """Write the report to ``path`` (nothing when ``None``)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    report = run(args)
    print_report(report)
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
