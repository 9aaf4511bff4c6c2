"""Prepared device check of the training path (issue 20, item 5); ``scripts/gpu_check.sh`` runs it on a GPU.

Four stages, each written to one JSON file as soon as it ends (a run cut short keeps what it measured):

a. ``attention``: a packed bf16 row of three documents against each document run alone (``sdpa``, no
   packing), for every packed attention path available: ``flash_attention_2`` (flash-attn installed,
   CUDA), ``flex_attention`` (CUDA) and ``packed_sdpa``. Compared: the logits (max abs difference
   relative to the reference's largest logit), each document's mean answer loss and the gradients of
   the summed loss (relative to the largest reference gradient). ``guard``: a packed row with
   ``use_cache=True`` on ``sdpa`` / ``eager`` (and ``flex_attention`` on CUDA) is refused by
   :func:`~hf_context_synthesis.training.attention.guard_packed_forward`; with the guard removed, sdpa
   with a cache mixes the documents (``mixed_rel_diff``, the negative control: it must exceed the
   tolerance, so the comparison can fail).
b. ``trainer``: :func:`~hf_context_synthesis.training.trainer.build_trainer` on rows of exactly three
   examples, ``row_order="balanced"``, once per weighting (``loss_weighting="example"``, LongAlign, and
   ``"token"``, the token mean); the first logged loss must equal the loss of the first row computed from
   its documents run alone (sdpa), every loss must be finite and the fp32 master weights must move.
c. ``benchmark``: ``benchmarks/gpu_training.py`` in reduced form (``--layers``, 2 warm-up + 5 timed
   steps) in a subprocess bounded by what is left of ``--budget-s``.
d. Everything, with the versions and the device, in ``--out`` (``passed`` and ``failures`` at the top).

``--cpu-smoke`` runs the same stages on CPU with tiny sizes (``packed_sdpa`` only; the benchmark's
``--cpu-smoke``); ``tests/test_gpu_check.py`` runs it in CI. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("gpu_check")

#: relative tolerances of the bf16 comparisons (differences / the reference's largest value)
LOGITS_RTOL = 2e-2
GRAD_RTOL = 5e-2
LOSS_RTOL = 2e-2

#: attention-check model and documents: (GPU, CPU smoke)
ATTN_MODEL = ({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
               "num_key_value_heads": 4, "vocab_size": 1024},
              {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 512})
ATTN_DOCS = ((700, 1300, 451), (37, 61, 29))
#: trainer-check row length and example length range (3 examples fill a row, 4 never fit)
TRAIN_ROW = ((3072, 900, 1024), (384, 100, 128))


class Report:
    """The JSON report, rewritten after every stage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"passed": None, "failures": [], "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, key: str, value: Any, failures: list[str] | None = None) -> None:
        self.data[key] = value
        self.data["failures"].extend(failures or [])
        self.write()

    def write(self, final: bool = False) -> None:
        self.data["wall_s"] = round(self.elapsed(), 1)
        if final:
            self.data["passed"] = not self.data["failures"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def environment(device: Any) -> dict[str, Any]:
    """Versions and where each package was imported from (the carried wheels live in /tmp/site)."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "device": "cpu" if device.type == "cpu" else
                           torch.cuda.get_device_name(), "packages": {}}
    if device.type == "cuda":
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "huggingface_hub", "flash_attn",
                 "hf_context_synthesis"):
        try:
            mod = importlib.import_module(name)
            env["packages"][name] = {"version": getattr(mod, "__version__", "?"),
                                     "from": str(Path(mod.__file__).resolve().parent)}
        except ImportError:
            env["packages"][name] = None
    return env


def attention_paths(device_type: str) -> dict[str, str | None]:
    """Packed attention path -> ``None`` when it runs here, else why it is skipped."""
    from hf_context_synthesis.training.attention import flash_attn_installed, flex_attention_available

    cuda = device_type == "cuda"
    return {
        "flash_attention_2": None if cuda and flash_attn_installed() else "flash-attn not installed or no CUDA",
        "flex_attention": None if cuda and flex_attention_available() else "CUDA only (no CPU backward)",
        "packed_sdpa": None,
    }


def llama(spec: dict[str, Any], device: Any, dtype: Any, attn: str, seed: int = 0, init: float = 0.05) -> Any:
    """A seeded random Llama from ``spec`` (``init``: the weights' standard deviation)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_context_synthesis.training.attention import register_packed_sdpa

    register_packed_sdpa()
    config = LlamaConfig(**spec, max_position_embeddings=8192, attn_implementation=attn, initializer_range=init,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, use_cache=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def documents(lengths: tuple[int, ...], vocab: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Random documents whose last quarter is the answer (labels there, -100 before)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    docs = []
    for n in lengths:
        ids = rng.integers(4, vocab, n).tolist()
        cut = n - max(2, n // 4)
        docs.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return docs


def packed_batch(docs: list[dict[str, list[int]]], device: Any) -> dict[str, Any]:
    """The trainer's collation of the documents packed into one row."""
    from hf_context_synthesis.training.packing import PackedDataCollator

    row = {"input_ids": sum((d["input_ids"] for d in docs), []), "labels": sum((d["labels"] for d in docs), []),
           "seq_lengths": [len(d["input_ids"]) for d in docs]}
    batch = PackedDataCollator(pad_token_id=0, return_flash_kwargs=True)([row])
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items() if k != "seq_idx"}


def doc_losses(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Summed next-token cross-entropy over the labelled positions of one sequence and their count."""
    import torch.nn.functional as F

    lab = labels[..., 1:].reshape(-1)
    lse = F.cross_entropy(logits[..., :-1, :].reshape(-1, logits.shape[-1]).float(), lab, ignore_index=-100,
                          reduction="sum")
    return lse, (lab != -100).sum()


def forward_docs_alone(model: Any, docs: list[dict[str, list[int]]], device: Any) -> tuple[list[Any], list[float], dict]:
    """Reference: each document alone on sdpa; its logits, mean answer losses and the gradients of their sum."""
    import torch

    model.set_attn_implementation("sdpa")
    model.zero_grad(set_to_none=True)
    logits, losses, total = [], [], 0.0
    for d in docs:
        ids = torch.tensor([d["input_ids"]], device=device)
        out = model(input_ids=ids, use_cache=False).logits
        s, n = doc_losses(out, torch.tensor([d["labels"]], device=device))
        total = total + s / n
        logits.append(out.detach()[0].float())
        losses.append(float((s / n).detach()))
    total.backward()
    grads = {k: p.grad.detach().float().clone() for k, p in model.named_parameters() if p.grad is not None}
    return logits, losses, grads


def forward_packed(model: Any, batch: dict[str, Any], lengths: list[int], use_cache: bool = False,
                   grads: bool = True) -> tuple[list[Any], list[float], dict]:
    """The packed row's per-document logits, mean answer losses and (``grads``) the gradients of their sum."""
    import torch

    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.set_grad_enabled(grads):
        out = model(**inputs, use_cache=use_cache).logits[0]
    bounds = [0] + list(torch.tensor(lengths).cumsum(0).tolist())
    logits, losses, total = [], [], 0.0
    for s, e in zip(bounds[:-1], bounds[1:]):
        ls, n = doc_losses(out[s:e], batch["labels"][0, s:e])
        total = total + ls / n
        logits.append(out[s:e].detach().float())
        losses.append(float((ls / n).detach()))
    got = {}
    if grads:
        total.backward()
        got = {k: p.grad.detach().float().clone() for k, p in model.named_parameters() if p.grad is not None}
    return logits, losses, got


def rel_diff(got: list[Any], ref: list[Any]) -> float:
    """max |got - ref| / max |ref| over the pieces."""
    scale = max(float(r.abs().max()) for r in ref) or 1.0
    return max(float((g - r).abs().max()) for g, r in zip(got, ref)) / scale


def check_attention(device: Any, smoke: bool) -> tuple[dict[str, Any], list[str]]:
    """Stage a and the guard: every packed path against the documents alone; the guard's refusals."""
    import torch

    spec, lengths = ATTN_MODEL[smoke], list(ATTN_DOCS[smoke])
    model = llama(spec, device, torch.bfloat16, "sdpa")
    docs = documents(tuple(lengths), spec["vocab_size"])
    batch = packed_batch(docs, device)
    ref_logits, ref_losses, ref_grads = forward_docs_alone(model, docs, device)
    ref_grad = [ref_grads[k] for k in sorted(ref_grads)]
    result: dict[str, Any] = {"dtype": "bfloat16", "doc_lengths": lengths, "reference": "each document alone on sdpa",
                              "tolerance": {"logits_rel": LOGITS_RTOL, "grad_rel": GRAD_RTOL, "loss_rel": LOSS_RTOL},
                              "reference_losses": ref_losses, "paths": {}}
    failures = []
    for path, skipped in attention_paths(device.type).items():
        if skipped:
            result["paths"][path] = {"skipped": skipped}
            continue
        try:
            model.set_attn_implementation(path)
            logits, losses, grads = forward_packed(model, batch, lengths)
        except Exception as err:  # a path that does not run is a failure, reported with its error
            result["paths"][path] = {"error": f"{type(err).__name__}: {err}"[:500]}
            failures.append(f"attention {path}: {type(err).__name__}")
            continue
        got_grad = [grads[k] for k in sorted(ref_grads)]
        fig = {"logits_rel_diff": rel_diff(logits, ref_logits), "grad_rel_diff": rel_diff(got_grad, ref_grad),
               "loss_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)), "losses": losses}
        fig["passed"] = (fig["logits_rel_diff"] <= LOGITS_RTOL and fig["grad_rel_diff"] <= GRAD_RTOL
                         and fig["loss_rel_diff"] <= LOSS_RTOL)
        result["paths"][path] = fig
        if not fig["passed"]:
            failures.append(f"attention {path}: packed row differs from the documents alone")
    guard, guard_failures = check_guard(model, batch, lengths, ref_logits, device)
    result["guard"] = guard
    return result, failures + guard_failures


def check_guard(model: Any, batch: dict[str, Any], lengths: list[int], ref_logits: list[Any],
                device: Any) -> tuple[dict[str, Any], list[str]]:
    """Packed rows with a cache are refused on the paths that ignore the boundaries; without the guard,
    sdpa with a cache mixes the documents (the negative control)."""
    import torch

    from hf_context_synthesis.training.attention import PackedAttentionError, guard_packed_forward

    plain = {k: batch[k] for k in ("input_ids", "position_ids", "labels")}
    guard_packed_forward(model)
    out: dict[str, Any] = {"refused": {}}
    failures = []
    for impl in ("sdpa", "eager") + (("flex_attention",) if device.type == "cuda" else ()):
        model.set_attn_implementation(impl)
        try:
            with torch.no_grad():
                model(**{k: v for k, v in plain.items() if k != "labels"}, use_cache=True)
            out["refused"][impl] = False
            failures.append(f"guard: packed row with a cache on {impl} was not refused")
        except PackedAttentionError as err:
            out["refused"][impl] = True
            out.setdefault("message", str(err)[:300])
    model.set_attn_implementation("sdpa")
    model._context_synthesis_packed_guard.remove()
    model._context_synthesis_packed_guard = None
    try:
        mixed, _, _ = forward_packed(model, plain, lengths, use_cache=True, grads=False)
        dense, _, _ = forward_packed(model, plain, lengths, use_cache=False, grads=False)
    finally:
        guard_packed_forward(model)
    out["mixed_rel_diff"] = rel_diff(mixed, ref_logits)  # sdpa + cache, no guard: documents attend to each other
    out["sdpa_dense_mask_rel_diff"] = rel_diff(dense, ref_logits)  # sdpa, no cache: a dense block mask, correct
    if out["mixed_rel_diff"] <= LOGITS_RTOL:
        failures.append("guard: the negative control did not mix documents (the comparison cannot fail)")
    if out["sdpa_dense_mask_rel_diff"] > LOGITS_RTOL:
        failures.append("sdpa with the dense packed mask differs from the documents alone")
    return out, failures


def train_rows(model: Any, smoke: bool, device: Any, seed: int = 0) -> tuple[int, Any]:
    """The row length and 9 tokenized examples that pack into rows of exactly 3.

    A random model scores every random token about alike, which would make LongAlign's example mean equal
    the token mean. So every other example gets a short answer the model continues greedily (a low loss)
    and the others a long random one (a high loss): the two weightings then give clearly different losses.
    """
    import datasets
    import numpy as np

    row, low, high = TRAIN_ROW[smoke]
    rng = np.random.default_rng(seed)
    examples = []
    for i, n in enumerate(rng.integers(low, high + 1, 9).tolist()):
        ids = rng.integers(4, model.config.vocab_size, n).tolist()
        cut = n - (max(2, n // 16) if i % 2 == 0 else n // 2)
        if i % 2 == 0:
            ids = greedy_continuation(model, ids[:cut], n - cut, device)
        examples.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return row, datasets.Dataset.from_list(examples)


def greedy_continuation(model: Any, prompt: list[int], new: int, device: Any) -> list[int]:
    """``prompt`` followed by ``new`` tokens the model picks greedily (no cache, sdpa)."""
    import torch

    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        for _ in range(new):
            nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids[0].tolist()


def reference_loss(model: Any, row: dict[str, Any], weighting: str, device: Any) -> float:
    """The loss of a packed row from its documents run alone (sdpa, bf16 autocast on CUDA): the token mean
    over all answer tokens, or LongAlign's mean over the examples of their mean answer loss."""
    import torch

    model.set_attn_implementation("sdpa")
    sums, counts, start = [], [], 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for n in row["seq_lengths"]:
            ids = torch.tensor([row["input_ids"][start:start + n]], device=device)
            labels = torch.tensor([row["labels"][start:start + n]], device=device)
            labels[0, 0] = -100  # the collator's boundary label
            s, c = doc_losses(model(input_ids=ids, use_cache=False).logits, labels)
            sums.append(float(s))
            counts.append(int(c))
            start += n
    if weighting == "example":
        return sum(s / c for s, c in zip(sums, counts) if c) / sum(1 for c in counts if c)
    return sum(sums) / sum(counts)


def check_trainer(device: Any, smoke: bool, weighting: str) -> tuple[dict[str, Any], list[str]]:
    """Stage b for one weighting: three steps of build_trainer's trainer on rows of three examples."""
    import torch

    from hf_context_synthesis.training.packing import PackingConfig
    from hf_context_synthesis.training.trainer import build_trainer, default_sft_config
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    cuda = device.type == "cuda"
    spec = ATTN_MODEL[smoke]
    # sharper random predictions (init 0.15): the greedy answers' loss sits well below the random ones'
    reference_model = llama(spec, device, torch.float32, "sdpa", seed=1, init=0.15)
    row_length, ds = train_rows(reference_model, smoke, device)
    model = llama(spec, device, torch.float32, "sdpa", seed=1, init=0.15)  # the same fp32 master weights
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{weighting}-") as out:
        cfg = default_sft_config(out, max_length=row_length, max_steps=3, logging_steps=1, learning_rate=1e-3,
                                 lr_scheduler_type="constant", warmup_steps=0, save_strategy="no", report_to="none",
                                 disable_tqdm=True, bf16=cuda, use_cpu=not cuda, activation_checkpointing=True)
        packing = PackingConfig(max_length=row_length, loss_weighting=weighting, row_order="balanced", shuffle_seed=0)
        t = time.perf_counter()
        trainer = build_trainer(model, make_tiny_tokenizer(), ds, cfg, packing=packing)
        first = trainer.train_dataset[0]
        expected = reference_loss(reference_model, first, weighting, device)
        other = reference_loss(reference_model, first, "token" if weighting == "example" else "example", device)
        trainer.train()
        seconds = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    moved = float((trainer.model.model.layers[0].mlp.down_proj.weight.detach() - before).abs().max())
    fig = {
        "attention": trainer.model.config._attn_implementation,
        "rows_examples": [len(r) for r in trainer.train_dataset["seq_lengths"]],
        "steps": trainer.state.global_step, "losses": losses, "first_loss_reference": expected,
        "other_weighting_reference": other,
        "first_loss_rel_diff": abs(losses[0] - expected) / abs(expected) if losses else None,
        "master_dtype": str(trainer.model.model.layers[0].mlp.down_proj.weight.dtype).removeprefix("torch."),
        "weights_max_change": moved, "seconds": round(seconds, 2),
    }
    failures = []
    if any(n != 3 for n in fig["rows_examples"]):
        failures.append(f"trainer {weighting}: rows are not of 3 examples: {fig['rows_examples']}")
    if len(losses) != 3 or not all(math.isfinite(x) for x in losses):
        failures.append(f"trainer {weighting}: losses {losses}")
    elif fig["first_loss_rel_diff"] > LOSS_RTOL:
        failures.append(f"trainer {weighting}: first loss {losses[0]} != documents alone {expected}")
    if abs(other - expected) <= 2 * LOSS_RTOL * abs(expected):
        failures.append(f"trainer {weighting}: the weightings' reference losses do not differ ({expected}, {other})")
    if not moved > 0 or fig["master_dtype"] != "float32":
        failures.append(f"trainer {weighting}: fp32 master weights did not move ({fig['master_dtype']}, {moved})")
    fig["passed"] = not failures
    return fig, failures


def check_benchmark(args: argparse.Namespace, budget_left: float) -> tuple[dict[str, Any], list[str]]:
    """Stage c: the benchmark in reduced form, in a subprocess bounded by ``budget_left`` seconds."""
    if budget_left < 30:
        return {"skipped": f"only {budget_left:.0f} s of the budget left"}, ["benchmark: no time left"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-bench-") as tmp:
        path = Path(tmp) / "bench.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_training.py"), "--json", str(path)]
        cmd += ["--cpu-smoke"] if args.cpu_smoke else ["--layers", str(args.bench_layers), "--steps", "5",
                                                       "--warmup", "2"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_left)
            rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired as err:
            rc, tail = "timeout", str(err.stdout or "")[-2000:]
        result = json.loads(path.read_text()) if path.exists() else {}
    result.update(command=" ".join(cmd[1:]), returncode=rc, seconds=round(time.perf_counter() - t, 1))
    if rc != 0:
        result["output_tail"] = tail
        return result, [f"benchmark: exit {rc}"]
    return result, []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (CI)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole check")
    parser.add_argument("--bench-layers", type=int, default=8, help="layers of the benchmark's Llama (22: 1.1B)")
    parser.add_argument("--skip-benchmark", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke")
    if args.cpu_smoke:
        torch.set_num_threads(1)
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    report = Report(args.out)
    report.add("cpu_smoke", bool(args.cpu_smoke))
    report.add("environment", environment(device))
    logger.info("environment: %s", report.data["environment"])
    report.add("attention", *check_attention(device, args.cpu_smoke))
    logger.info("attention: %s", json.dumps(report.data["attention"]["paths"], default=str))
    trainer: dict[str, Any] = {}
    for weighting in ("example", "token"):
        fig, failures = check_trainer(device, args.cpu_smoke, weighting)
        trainer[weighting] = fig
        report.add("trainer", trainer, failures)
        logger.info("trainer %s: %s", weighting, fig)
    if args.skip_benchmark:
        report.add("benchmark", {"skipped": "--skip-benchmark"})
    else:
        report.add("benchmark", *check_benchmark(args, args.budget_s - report.elapsed() - 10))
    report.write(final=True)
    logger.info("gpu check %s in %.0f s: %s", "passed" if report.data["passed"] else "FAILED", report.elapsed(),
                report.data["failures"] or "no failures")
    print(json.dumps({k: report.data[k] for k in ("passed", "failures", "wall_s")}))
    return 0 if report.data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
