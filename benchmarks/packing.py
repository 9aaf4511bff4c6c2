"""Packing: our BFD path (``hf_context_synthesis.training.packing``) vs TRL's ``pack_dataset(strategy="bfd")`` vs padding.

Everything is measured side by side in one run:

1. **Lengths.** One example per shared seed (``/work/shared/seeds/longbench-train-1.6k``, 1,600 seeds):
   the real instruction and answer are rendered into the task's LongBench prompt (empty document
   slots, ``"\\n\\n"`` separators) and tokenized through the chat template of a local byte-level BPE
   tokenizer trained on the seed texts (so instruction, answer, prompt and chat-template overhead
   are real token counts). The paper's 10 documents of about 2,000 words are simulated: each
   document has ``lognormal(mean 2,000 words, sigma 0.3)`` words at ``normal(1.3, 0.1)`` tokens per
   word (a typical English subword ratio). Examples longer than ``max_length`` are **clipped to
   max_length for every method** (ours would drop distractor documents; TRL would cut the tail; for
   a length-only simulation both reduce to clipping, so every method sees identical lengths).

2. **Padding efficiency** at ``max_length`` 32,768 and 65,536, two ways:

   * ``real/batch``: real tokens / tokens in the batch tensors the collators emit. Packed rows are
     collated padding-free (ours: :class:`PackedDataCollator`; TRL: ``padding_free=True``), one row
     per step; plain padding pads each batch to its longest example (batch size 1 and 8, random
     order).
   * ``fill``: real tokens / (rows x max_length), how much of each step's per-row token budget
     (memory is sized for max_length) carries real tokens; a padded example is one row.
     ``bound`` is the best any packing can do: rows >= ceil(total / max_length), and since at most k
     examples longer than max_length / (k + 1) fit in one row, rows >= ceil(their count / k).

3. **Preparation throughput**: ``pack_tokenized_dataset`` (ours) vs TRL's ``pack_dataset(bfd)`` on the
   *same* ``datasets.Dataset`` of random token ids with the simulated lengths (``input_ids`` and
   ``labels``, the two columns TRL's SFTTrainer packs), best of ``--repeats``; also
   ``prepare_packed_dataset`` (our public entry point: length filter + pack + stats). And
   **collator throughput**: :class:`PackedDataCollator` vs TRL's ``DataCollatorForLanguageModeling
   (padding_free=True)``, each on the first ``--collate-rows`` rows of its own packed output, one
   row per batch.

4. **CPU training throughput** of the tiny random Llama (:func:`make_tiny_llama`): examples of 64 to
   1,024 tokens (uniform), packed into rows of 2,048 (``PackedDataCollator``: ``position_ids``, no
   attention mask, ``use_cache=False`` as the Trainer sets it) vs padded batches (attention mask) of
   ``--train-batch-size`` examples and of 1 example. Forward + backward + AdamW step on the same
   examples; tokens/s counts real tokens only.

Usage::

    python benchmarks/packing.py            # full run, a few minutes on 2 CPU cores
    python benchmarks/packing.py --quick    # tiny run (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

SEEDS_DIR = Path(os.environ.get("HFCS_SEEDS_DIR", "/work/shared/seeds/longbench-train-1.6k"))


# --------------------------------------------------------------------------------------------
# simulated lengths


def load_seeds(folder: Path, limit: int | None) -> list[tuple[str, str, str]]:
    """``(task, instruction, answer)`` for every seed, tasks interleaved; ``limit`` takes an equal share per task."""
    per_task: list[list[tuple[str, str, str]]] = []
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no seed files (*.jsonl) in {folder}")
    for path in files:
        rows = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    rows.append((path.stem, str(r["instruction"]), str(r["answer"])))
        per_task.append(rows)
    if limit is not None:
        share = max(1, math.ceil(limit / len(per_task)))
        per_task = [rows[:share] for rows in per_task]
    out = [r for rows in per_task for r in rows]
    return out[:limit] if limit is not None else out


def simulate_lengths(
    seeds: list[tuple[str, str, str]], tokenizer: Any, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Token lengths of the composed examples and the answer tokens of each (see the module docstring)."""
    from hf_context_synthesis.training.packing import IGNORE_INDEX, tokenize_messages
    from hf_context_synthesis.synthesis.task_templates import render_task_prompt, template_for

    base = np.empty(len(seeds), dtype=np.int64)
    answer = np.empty(len(seeds), dtype=np.int64)
    words = 0
    for i, (task, instruction, ans) in enumerate(seeds):
        prompt, _ = render_task_prompt(template_for(task), [""] * args.docs, instruction)
        ids, labels = tokenize_messages(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": ans}], tokenizer
        )
        base[i] = len(ids)
        answer[i] = sum(1 for t in labels if t != IGNORE_INDEX)
        words += len(instruction.split()) + len(ans.split())
    sigma = args.words_sigma
    mu = math.log(args.words_mean) - sigma**2 / 2  # lognormal with mean words_mean
    doc_words = rng.lognormal(mu, sigma, size=(len(seeds), args.docs))
    tpw = np.clip(rng.normal(args.tokens_per_word, args.tokens_per_word_sd, size=doc_words.shape), 1.0, 2.0)
    docs = np.rint(doc_words * tpw).astype(np.int64).sum(axis=1)
    return {"lengths": base + docs, "answer": answer, "base": base, "seed_words": np.array(words)}


def build_tokenized(lengths: np.ndarray, answer: np.ndarray, vocab: int, rng: np.random.Generator):
    """A ``datasets.Dataset`` of random ``input_ids`` with these lengths; ``labels`` = ids on the answer tail, -100 before."""
    import datasets
    import pyarrow as pa

    from hf_context_synthesis.training.packing import IGNORE_INDEX, position_ids_for

    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = rng.integers(0, vocab, int(lengths.sum()), dtype=np.int32)
    prompt = lengths - np.minimum(answer, lengths)
    pos = position_ids_for(lengths, np.int64)
    labels = np.where(pos < np.repeat(prompt, lengths), np.int32(IGNORE_INDEX), ids).astype(np.int32)
    table = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels)),
        }
    )
    return datasets.Dataset(datasets.table.InMemoryTable(table))


# --------------------------------------------------------------------------------------------
# helpers


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def row_lengths(dataset: Any) -> np.ndarray:
    import pyarrow.compute as pc

    col = dataset.with_format("arrow")[:]["input_ids"]
    return pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)


def padded_tokens(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(steps, tokens in the padded batch tensors) for random-order batches padded to their longest example."""
    order = rng.permutation(lengths.size)
    lens = lengths[order]
    steps, total = 0, 0
    for s in range(0, lens.size, batch_size):
        chunk = lens[s : s + batch_size]
        total += int(chunk.max()) * chunk.size
        steps += 1
    return steps, total


def lower_bound_rows(lengths: np.ndarray, capacity: int) -> int:
    """Fewest rows any packing needs: ``ceil(total / capacity)``, and for every k at most k examples longer than
    ``capacity / (k + 1)`` share a row, so rows >= ceil(count(length > capacity / (k + 1)) / k)."""
    bound = math.ceil(int(lengths.sum()) / capacity)
    for k in range(1, 64):
        count = int(((k + 1) * lengths > capacity).sum())
        if count == 0:
            break
        bound = max(bound, math.ceil(count / k))
    return bound


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


# --------------------------------------------------------------------------------------------
# sections


def bench_max_length(
    sim: dict[str, np.ndarray], max_length: int, args: argparse.Namespace, vocab: int
) -> dict[str, Any]:
    """Efficiency, preparation and collator throughput at one ``max_length``."""
    import torch  # noqa: F401  (collators)
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hf_context_synthesis.training.packing import (
        PackedDataCollator,
        PackingConfig,
        get_packing_stats,
        pack_table,
        pack_tokenized_dataset,
        prepare_packed_dataset,
    )

    rng = np.random.default_rng(args.seed + max_length)
    raw = sim["lengths"]
    lengths = np.minimum(raw, max_length)
    clipped = int((raw > max_length).sum())
    real = int(lengths.sum())
    n = lengths.size
    ds = build_tokenized(lengths, sim["answer"], vocab, rng)

    # ---- preparation: identical input for both, best of --repeats
    t_ours, ours = best_of(lambda: pack_tokenized_dataset(ds, max_length), args.repeats)
    t_trl, trl = best_of(lambda: pack_dataset(ds, max_length, strategy="bfd"), args.repeats)
    table = ds.with_format("arrow")[:]
    t_table, _ = best_of(lambda: pack_table(table, max_length, 0, ("input_ids", "labels")), args.repeats)
    del table
    cfg = PackingConfig(max_length=max_length)
    t_prep, prepared = best_of(lambda: prepare_packed_dataset(ds, None, cfg), args.repeats)
    prepared_stats = get_packing_stats(prepared)
    del prepared

    stats = get_packing_stats(ours, max_length=max_length)
    ours_rows = row_lengths(ours)
    trl_rows = row_lengths(trl)
    assert int(ours_rows.sum()) == real and stats.real_tokens == real, "ours lost or duplicated tokens"
    assert int(trl_rows.sum()) == real, "TRL lost or duplicated tokens"
    assert int(ours_rows.max()) <= max_length and int(trl_rows.max()) <= max_length
    assert prepared_stats is not None and prepared_stats.num_rows == stats.num_rows

    # ---- efficiency
    big = int((2 * lengths > max_length).sum())
    bound_rows = lower_bound_rows(lengths, max_length)
    eff: dict[str, dict[str, float]] = {}
    eff["ours"] = {"steps": stats.num_rows, "batch_tokens": int(ours_rows.sum()), "rows": stats.num_rows}
    eff["trl_bfd"] = {"steps": int(trl_rows.size), "batch_tokens": int(trl_rows.sum()), "rows": int(trl_rows.size)}
    for bs in (1, 8):
        steps, tokens = padded_tokens(lengths, bs, rng)
        eff[f"pad_bs{bs}"] = {"steps": steps, "batch_tokens": tokens, "rows": n}
    for e in eff.values():
        e["real_over_batch"] = real / e["batch_tokens"]
        e["fill"] = real / (e["rows"] * max_length)
    assert abs(eff["ours"]["fill"] - stats.efficiency) < 1e-9
    bound_fill = real / (bound_rows * max_length)

    # ---- collators, one packed row per batch, on the first --collate-rows rows of each packed output
    k = min(args.collate_rows, stats.num_rows, int(trl_rows.size))
    ours_feats = list(ours.select(range(k)))
    trl_feats = list(trl.select(range(k)))
    del ours, trl
    ours_coll = PackedDataCollator()
    trl_coll = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)

    def run_collator(coll: Any, feats: list[dict[str, Any]]) -> int:
        tokens = 0
        for f in feats:
            tokens += int(coll([f])["input_ids"].numel())
        return tokens

    tc_ours, ours_tokens = best_of(lambda: run_collator(ours_coll, ours_feats), args.repeats)
    tc_trl, trl_tokens = best_of(lambda: run_collator(trl_coll, trl_feats), args.repeats)
    # batch tensors are exactly the real tokens (padding-free), as the efficiency table assumes
    assert ours_tokens == int(ours_rows[:k].sum()) and trl_tokens == int(trl_rows[:k].sum())
    del ours_feats, trl_feats, ds
    gc.collect()

    return {
        "max_length": max_length,
        "n": n,
        "real": real,
        "clipped": clipped,
        "lengths": lengths,
        "eff": eff,
        "bound_rows": bound_rows,
        "bound_fill": bound_fill,
        "big": big,
        "prep": {
            "ours_s": t_ours,
            "trl_s": t_trl,
            "prepare_s": t_prep,
            "table_s": t_table,
            "table_tps": real / t_table,
            "ours_tps": real / t_ours,
            "trl_tps": real / t_trl,
            "prepare_tps": real / t_prep,
        },
        "collate": {
            "rows": k,
            "ours_tps": ours_tokens / tc_ours,
            "trl_tps": trl_tokens / tc_trl,
        },
    }


def print_max_length(r: dict[str, Any]) -> None:
    L = r["max_length"]
    lens = r["lengths"]
    print(f"\n=== max_length={L:,}: {r['n']} examples, {r['real'] / 1e6:.2f}M real tokens "
          f"({r['clipped']} clipped to max_length for every method) ===")
    print(f"lengths after clipping: min {lens.min():,}  median {int(np.median(lens)):,}  mean {int(lens.mean()):,}  "
          f"max {lens.max():,}; {r['big']} examples > max_length/2")
    print(f"{'method':<10} {'steps':>7} {'batch tokens':>14} {'real/batch':>11} {'fill':>7}")
    for name, e in r["eff"].items():
        print(f"{name:<10} {e['steps']:>7} {e['batch_tokens']:>14,} {e['real_over_batch']:>11.4f} {e['fill']:>7.4f}")
    print(f"{'bound':<10} {r['bound_rows']:>7} {'':>14} {'':>11} {r['bound_fill']:>7.4f}   "
          "(fewest rows any packing can reach)")
    p = r["prep"]
    print(f"preparation ({r['real'] / 1e6:.1f}M tokens, best of repeats): "
          f"ours pack_tokenized_dataset {p['ours_s']:.2f}s = {fmt_rate(p['ours_tps'])} tok/s | "
          f"TRL pack_dataset(bfd) {p['trl_s']:.2f}s = {fmt_rate(p['trl_tps'])} tok/s | "
          f"ours/TRL = {p['ours_tps'] / p['trl_tps']:.2f}x | "
          f"prepare_packed_dataset {p['prepare_s']:.2f}s = {fmt_rate(p['prepare_tps'])} tok/s | "
          f"pack_table alone (arrow, no Dataset wrapper) {p['table_s']:.2f}s = {fmt_rate(p['table_tps'])} tok/s "
          f"= {p['table_tps'] / p['trl_tps']:.2f}x TRL")
    c = r["collate"]
    print(f"collator ({c['rows']} packed rows, 1 row/batch): ours PackedDataCollator {fmt_rate(c['ours_tps'])} tok/s | "
          f"TRL padding_free {fmt_rate(c['trl_tps'])} tok/s | ours/TRL = {c['ours_tps'] / c['trl_tps']:.2f}x")


def bench_training(args: argparse.Namespace) -> dict[str, Any]:
    """Real tokens/s of forward+backward+AdamW on the tiny Llama: packed rows vs padded batches."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_context_synthesis.training.packing import PackedDataCollator, pack_tokenized_dataset
    from hf_context_synthesis.testing.tiny_model import make_tiny_llama

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_llama(tmp, hidden_size=args.train_hidden_size, num_layers=args.train_layers)
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    model.train()
    vocab = model.config.vocab_size
    pad_id = model.config.pad_token_id or 0
    init = {k: v.clone() for k, v in model.state_dict().items()}

    lengths = rng.integers(args.train_min_len, args.train_max_len + 1, size=args.train_examples)
    answer = np.maximum(1, lengths // 4)
    ds = build_tokenized(lengths, answer, vocab, rng)
    packed = pack_tokenized_dataset(ds, args.train_max_length)
    collator = PackedDataCollator(pad_token_id=pad_id)
    packed_batches = [collator([row]) for row in packed]
    real = int(lengths.sum())
    assert sum(int(b["input_ids"].numel()) for b in packed_batches) == real
    for b in packed_batches:
        b["use_cache"] = False  # what the Trainer sets (TrainingArguments.use_cache=False): a cache disables packed masks

    examples = [(np.asarray(r["input_ids"]), np.asarray(r["labels"])) for r in ds]

    def padded_batches(bs: int) -> list[dict[str, Any]]:
        order = np.random.default_rng(args.seed).permutation(len(examples))
        out = []
        for s in range(0, len(order), bs):
            chunk = [examples[i] for i in order[s : s + bs]]
            width = max(len(x) for x, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            lab = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, (x, y) in enumerate(chunk):
                ids[j, : len(x)] = torch.from_numpy(x.astype(np.int64))
                lab[j, : len(y)] = torch.from_numpy(y.astype(np.int64))
                mask[j, : len(x)] = 1
            out.append({"input_ids": ids, "labels": lab, "attention_mask": mask, "use_cache": False})
        return out

    from hf_context_synthesis.training.attention import register_packed_sdpa

    register_packed_sdpa()
    methods = {"packed": packed_batches, "packed_psdpa": packed_batches}
    impls = {"packed_psdpa": "packed_sdpa"}  # each example attends alone (build_trainer's CPU default)
    methods[f"padded_bs{args.train_batch_size}"] = padded_batches(args.train_batch_size)
    if args.train_batch_size != 1:
        methods["padded_bs1"] = padded_batches(1)
    current = {"name": None}

    def train_pass(batches: list[dict[str, Any]], name: str = "") -> None:
        impl = impls.get(name, "sdpa")
        if current["name"] != impl:
            model.set_attn_implementation(impl)
            current["name"] = impl
        model.load_state_dict(init)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for b in batches:
            loss = model(**b).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    for name, batches in methods.items():  # warm-up (allocator, kernels)
        train_pass(batches[:2], name)
    times = {name: float("inf") for name in methods}
    for _ in range(args.train_repeats):  # interleaved, best of
        for name, batches in methods.items():
            gc.collect()
            t = time.perf_counter()
            train_pass(batches, name)
            times[name] = min(times[name], time.perf_counter() - t)
    res = {
        "examples": len(examples),
        "real": real,
        "rows": len(packed_batches),
        "threads": torch.get_num_threads(),
        "methods": {
            name: {
                "steps": len(b),
                "tensor_tokens": sum(int(x["input_ids"].numel()) for x in b),
                "seconds": times[name],
                "tps": real / times[name],
            }
            for name, b in methods.items()
        },
    }
    return res


def print_training(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n=== CPU training, tiny Llama (hidden {args.train_hidden_size}, {args.train_layers} layers, sdpa, "
          f"{r['threads']} threads): {r['examples']} examples of "
          f"{args.train_min_len}-{args.train_max_len} tokens ({r['real']:,} real tokens), rows of "
          f"{args.train_max_length}, best of {args.train_repeats} ===")
    print(f"{'method':<12} {'steps':>6} {'tensor tokens':>14} {'seconds':>8} {'real tok/s':>11}")
    for name, m in r["methods"].items():
        print(f"{name:<12} {m['steps']:>6} {m['tensor_tokens']:>14,} {m['seconds']:>8.2f} {m['tps']:>11,.0f}")


# --------------------------------------------------------------------------------------------


def bench_balance(sim: dict[str, np.ndarray], args: argparse.Namespace, vocab: int) -> list[dict[str, Any]]:
    """Attention-cost balance across ``--ranks`` data-parallel ranks (one row per rank per step).

    Row cost = ``Σlen + Σlen²/attention_length`` (:mod:`hf_context_synthesis.training.balancing`); the balance
    ratio is ``Σ_steps mean_r(cost) / Σ_steps max_r(cost)``, the useful share of compute when the
    slowest rank sets each step. Orders compared: ours today (BFD rows in seeded random order, what the
    Trainer's random sampler also gives), the balanced mode (:func:`arrange_rows`,
    ``row_order="balanced"``) and TRL's ``pack_dataset(bfd)`` rows in random order. Two budgets: rows of
    ``max_length`` with examples <= ``max_length``, and examples <= ``max_length`` in rows of
    ``2 * max_length`` (a micro-batch token budget larger than the example cap).
    """
    from trl.data_utils import pack_dataset

    from hf_context_synthesis.training.balancing import balance_ratio, row_costs
    from hf_context_synthesis.training.packing import _seq_lengths_of, arrange_rows, pack_tokenized_dataset

    rng = np.random.default_rng(args.seed)
    cap = args.balance_max_length
    lengths = np.minimum(sim["lengths"], cap)
    ds = build_tokenized(lengths, np.minimum(sim["answer"], lengths), vocab, rng)
    out = []
    for budget in (cap, 2 * cap):
        ours = pack_tokenized_dataset(ds, budget, args.seed)
        costs = row_costs(_seq_lengths_of(ours), args.attention_length)
        balanced = arrange_rows(ours, args.ranks, row_order="balanced", attention_length=args.attention_length, seed=args.seed)
        trl = pack_dataset(ds, budget, strategy="bfd")
        trl_costs = row_costs(
            [list(x) for x in trl.with_format("arrow")[:]["seq_lengths"].to_pylist()], args.attention_length
        )
        trl_costs = trl_costs[rng.permutation(trl_costs.size)]
        out.append(
            {
                "example_cap": cap,
                "row_budget": budget,
                "rows": len(ours),
                "trl_rows": len(trl),
                "fill": float(lengths.sum()) / (len(ours) * budget),
                "trl_fill": float(lengths.sum()) / (len(trl) * budget),
                "ours": balance_ratio(costs, args.ranks),
                "balanced": balanced.packing_stats.balance_ratio,
                "balanced_padding_rows": balanced.packing_stats.num_padding_rows,
                "trl_bfd": balance_ratio(trl_costs, args.ranks),
            }
        )
    return out


def print_balance(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n=== step balance across {args.ranks} ranks (row cost = sum len + sum len^2 / {args.attention_length}; "
          "ratio = mean/max per-rank cost per step, summed over steps) ===")
    print(f"{'examples <=':>12} {'row budget':>10} {'rows':>6} {'fill':>6} {'ours today':>10} {'balanced':>9} "
          f"{'trl bfd':>8} {'trl fill':>8}")
    for r in results:
        print(f"{r['example_cap']:>12,} {r['row_budget']:>10,} {r['rows']:>6} {r['fill']:>6.3f} {r['ours']:>10.3f} "
              f"{r['balanced']:>9.3f} {r['trl_bfd']:>8.3f} {r['trl_fill']:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: 160 seeds, 1 repeat, short training")
    parser.add_argument("--seeds-dir", type=Path, default=SEEDS_DIR)
    parser.add_argument("--limit", type=int, default=None, help="seeds to use (default all; --quick: 160)")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[32768, 65536])
    parser.add_argument("--docs", type=int, default=10, help="documents per example (the paper: 10)")
    parser.add_argument("--words-mean", type=float, default=2000.0, help="mean words per document")
    parser.add_argument("--words-sigma", type=float, default=0.3, help="lognormal sigma of words per document")
    parser.add_argument("--tokens-per-word", type=float, default=1.3)
    parser.add_argument("--tokens-per-word-sd", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5, help="best of N for preparation/collator timings")
    parser.add_argument("--collate-rows", type=int, default=64)
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--train-min-len", type=int, default=64)
    parser.add_argument("--train-max-len", type=int, default=1024)
    parser.add_argument("--train-max-length", type=int, default=2048)
    parser.add_argument("--train-batch-size", type=int, default=4, help="padded batch size (compared with packed)")
    parser.add_argument("--train-repeats", type=int, default=2)
    parser.add_argument("--train-hidden-size", type=int, default=64, help="tiny Llama width (make_tiny_llama default)")
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-packing", action="store_true", help="only the training section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=8, help="data-parallel ranks for the step-balance section")
    parser.add_argument("--balance-max-length", type=int, default=32768, help="example cap of the balance section")
    parser.add_argument("--attention-length", type=int, default=32768, help="row cost: sum len + sum len^2 / this")
    parser.add_argument("--skip-balance", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit = args.limit or 160
        args.repeats = 1
        args.collate_rows = min(args.collate_rows, 8)
        args.train_examples = min(args.train_examples, 40)
        args.train_repeats = 1

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from importlib.metadata import version

    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    t0 = time.perf_counter()
    seeds = load_seeds(args.seeds_dir, args.limit)
    tokenizer = make_tiny_tokenizer([f"{i}\n{a}" for _, i, a in seeds], vocab_size=8192)
    rng = np.random.default_rng(args.seed)
    sim = simulate_lengths(seeds, tokenizer, args, rng)
    seed_tokens = int(sim["base"].sum())
    print(f"packing benchmark: trl {version('trl')}, datasets {version('datasets')}, "
          f"transformers {version('transformers')}, torch {version('torch')}, {os.cpu_count()} CPUs")
    print(f"{len(seeds)} seeds from {args.seeds_dir}; per example: chat template + task prompt + instruction + "
          f"answer (tokenized, local BPE tokenizer; {len(tokenizer)} vocab; mean {int(sim['base'].mean())} tokens, "
          f"{int(sim['answer'].mean())} answer tokens) + {args.docs} documents of lognormal(mean {args.words_mean:.0f}, "
          f"sigma {args.words_sigma}) words x normal({args.tokens_per_word}, {args.tokens_per_word_sd}) tokens/word")
    print(f"simulated example lengths: min {sim['lengths'].min():,}  median {int(np.median(sim['lengths'])):,}  "
          f"mean {int(sim['lengths'].mean()):,}  max {sim['lengths'].max():,} tokens (seed text part: {seed_tokens:,} "
          f"tokens total)")
    print("examples longer than max_length are clipped to max_length for EVERY method (ours would drop distractors, "
          "TRL would cut the tail), so all methods pack identical lengths")

    results = []
    for L in [] if args.skip_packing else args.max_lengths:
        r = bench_max_length(sim, L, args, len(tokenizer))
        print_max_length(r)
        results.append(r)

    balance = None if args.skip_balance else bench_balance(sim, args, len(tokenizer))
    if balance is not None:
        print_balance(balance, args)

    train = None
    if not args.skip_training:
        train = bench_training(args)
        print_training(train, args)

    print("\n=== summary ===")
    for r in results:
        e = r["eff"]
        tag = f"{r['max_length'] // 1024}k"
        print(f"efficiency@{tag} real/batch ours={e['ours']['real_over_batch']:.3f} "
              f"trl_bfd={e['trl_bfd']['real_over_batch']:.3f} pad_bs1={e['pad_bs1']['real_over_batch']:.3f} "
              f"pad_bs8={e['pad_bs8']['real_over_batch']:.3f}; "
              f"fill ours={e['ours']['fill']:.3f} trl_bfd={e['trl_bfd']['fill']:.3f} "
              f"pad_bs1={e['pad_bs1']['fill']:.3f} pad_bs8={e['pad_bs8']['fill']:.3f} bound={r['bound_fill']:.3f}; "
              f"steps ours={e['ours']['steps']} trl_bfd={e['trl_bfd']['steps']} pad_bs1={e['pad_bs1']['steps']} "
              f"pad_bs8={e['pad_bs8']['steps']}")
    for r in results:
        p, c = r["prep"], r["collate"]
        tag = f"{r['max_length'] // 1024}k"
        print(f"prep@{tag} ratio ours/trl={p['ours_tps'] / p['trl_tps']:.2f}x "
              f"({fmt_rate(p['ours_tps'])} vs {fmt_rate(p['trl_tps'])} tok/s; pack_table alone "
              f"{p['table_tps'] / p['trl_tps']:.2f}x); "
              f"collator ratio ours/trl={c['ours_tps'] / c['trl_tps']:.2f}x "
              f"({fmt_rate(c['ours_tps'])} vs {fmt_rate(c['trl_tps'])} tok/s)")
    if train is not None:
        m = train["methods"]
        pb = f"padded_bs{args.train_batch_size}"
        line = f"train ratio packed/padded(bs{args.train_batch_size})={m['packed']['tps'] / m[pb]['tps']:.2f}x"
        if "padded_bs1" in m and pb != "padded_bs1":
            line += f", packed/padded(bs1)={m['packed']['tps'] / m['padded_bs1']['tps']:.2f}x"
        line += f" ({m['packed']['tps']:,.0f} vs {m[pb]['tps']:,.0f} real tok/s)"
        line += (f"; packed_sdpa (build_trainer's CPU default) packed_psdpa/padded(bs{args.train_batch_size})="
                 f"{m['packed_psdpa']['tps'] / m[pb]['tps']:.2f}x, packed_psdpa/packed(sdpa)="
                 f"{m['packed_psdpa']['tps'] / m['packed']['tps']:.2f}x")
        print(line)
    for b in balance or []:
        print(f"balance@{args.ranks} ranks, examples<={b['example_cap'] // 1024}k in {b['row_budget'] // 1024}k rows: "
              f"ours today={b['ours']:.3f} balanced={b['balanced']:.3f} trl_bfd={b['trl_bfd']:.3f}; "
              f"fill={b['fill']:.3f} (trl {b['trl_fill']:.3f})")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
