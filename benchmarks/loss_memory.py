"""Peak CPU memory of the training loss: full logits vs TRL's fused head vs our answer-only head.

A packed row of ``T`` tokens with ``--examples`` examples of ``--answer`` answer tokens each (the rest is
context, label ``-100``), a head of ``V x H``; each method computes the LongAlign loss and its backward
in a fresh subprocess, and the child's peak RSS above its RSS after the inputs were built is reported:

* ``full``: the model's logits ``[T, V]`` then :func:`~hf_context_synthesis.packing.longalign_loss`;
* ``trl_fused``: TRL's chunked kernel over every position (what TRL's fused head does off Triton, i.e. on CPU);
* ``answer``: :func:`~hf_context_synthesis.training.answer_token_log_probs`, answer positions only.

    python benchmarks/loss_memory.py [--tokens 2048,8192] [--vocab 32768,131072] [--hidden 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time
import torch
method, T, V, H, examples, answer = sys.argv[1], *map(int, sys.argv[2:7])
torch.manual_seed(0)
torch.set_num_threads(2)
hidden = torch.randn(1, T, H, requires_grad=True)
head = torch.nn.Linear(H, V, bias=False)
labels = torch.full((1, T), -100, dtype=torch.long)
weights = torch.zeros(1, T)
span = T // examples
for k in range(examples):
    end = (k + 1) * span
    labels[0, end - answer:end] = torch.randint(0, V, (answer,))
    weights[0, end - answer:end] = 1.0 / answer
import hf_context_synthesis.training.trainer as tr
from hf_context_synthesis.training.packing import longalign_loss
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss()
t = time.perf_counter()
if method == "full":
    loss = longalign_loss(head(hidden), labels, weights)
elif method in ("answer", "trl_fused"):
    shifted = labels[:, 1:]
    if method == "answer":
        lp = tr.answer_token_log_probs(hidden[:, :-1], head, shifted)[0]
    else:
        from trl.kernels import ChunkedLogProbFunction
        mask = shifted != -100
        h = hidden[:, :-1].reshape(-1, H)
        out = ChunkedLogProbFunction.apply(h, head.weight, None, shifted.clamp(min=0).reshape(-1), 1.0,
                                           tr._trl_chunk_size(), None, 1.0, tr.ANSWER_HEAD_OUTPUTS)
        lp = out[0].view(mask.shape).masked_fill(~mask, 0)
    loss = -(lp * weights[:, 1:]).sum() / weights.sum()
loss.backward()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_mib": max(0, peak - base) / 2**20, "seconds": seconds, "loss": float(loss)}))
"""

METHODS = ("full", "trl_fused", "answer")


def run_one(method: str, tokens: int, vocab: int, hidden: int, examples: int, answer: int) -> dict:
    """One measurement in a fresh interpreter (its peak RSS is its own)."""
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(tokens), str(vocab), str(hidden), str(examples),
                          str(answer)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Print peak memory and time per method, with ratios to full logits."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="2048,8192")
    p.add_argument("--vocab", default="32768,131072")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--examples", type=int, default=2, help="examples per packed row")
    p.add_argument("--answer", type=int, default=32, help="answer tokens per example")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    results = []
    print(f"{'tokens':>7} {'vocab':>7} | " + " | ".join(f"{m:>9} MiB  s" for m in METHODS)
          + " | trl/full answer/full (memory)")
    for t in (int(x) for x in a.tokens.split(",")):
        for v in (int(x) for x in a.vocab.split(",")):
            row = {m: run_one(m, t, v, a.hidden, a.examples, a.answer) for m in METHODS}
            losses = {m: r["loss"] for m, r in row.items()}
            assert max(losses.values()) - min(losses.values()) < 1e-3 * max(1.0, abs(losses["full"])), losses
            full = max(row["full"]["peak_mib"], 1e-9)
            print(f"{t:>7} {v:>7} | " + " | ".join(f"{row[m]['peak_mib']:>9.0f} {row[m]['seconds']:>5.2f}"
                                                  for m in METHODS)
                  + f" | {row['trl_fused']['peak_mib'] / full:>7.3f}x {row['answer']['peak_mib'] / full:>9.4f}x")
            results.append({"tokens": t, "vocab": v, "hidden": a.hidden, **row})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
