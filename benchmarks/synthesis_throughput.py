"""Throughput of :class:`TGIBackend` against a TGI-protocol server of known capacity.

A :class:`~hf_context_synthesis.testing.fake_tgi.FakeTGIServer` runs in a **separate process** (so it
does not compete with the client's event loop for the GIL) with ``capacity`` B concurrent slots and a
fixed per-request ``latency``; its maximum throughput is therefore ``B / latency`` requests/s. We send
N synthesis-shaped requests (a prompt asking for a ~2,000-word context for an instruction/answer
pair; ~2,000-word responses) through ``TGIBackend.stream`` and report, in the same run:

* achieved requests/s and its ratio to the server's ceiling ``B / latency`` (target: >= 0.9 at B=64);
* the same through the full generation phase (``ContextSynthesizer``: the paper's synthesis prompt
  rendered per seed, ``TGIBackend.stream``, ``Context:`` parsing/validation, the SQLite generation
  cache) — ``--path synthesis`` or ``both`` (default);
* a sequential loop (one request at a time, on a smaller N) in requests/s, and the speed-up of the
  concurrent run over it.

Usage::

    python benchmarks/synthesis_throughput.py [--requests 2000] [--capacity 64] [--latency 0.5] [--path both]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from typing import Any

from hf_context_synthesis.backends.base import GenerationRequest
from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig

SYNTHESIS_PROMPT = (
    "You are given an instruction and its answer. Write the background document (about 2,000 words) "
    "that a reader would need in order to produce this answer to this instruction. The document must "
    "contain the information the answer relies on, written as a self-contained article. Begin with "
    "'Context: '.\n\n"
    "Instruction: {instruction}\n\n"
    "Answer: {answer}\n"
)


def _serve(conn: Any, server_kwargs: dict[str, Any]) -> None:
    """Child process: run a FakeTGIServer until the parent sends anything on ``conn``."""
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    with FakeTGIServer(**server_kwargs) as server:
        conn.send(server.url)
        conn.recv()
        conn.send(server.stats())


def make_requests(n: int, offset: int = 0, max_new_tokens: int = 4096) -> list[GenerationRequest]:
    requests = []
    for i in range(offset, offset + n):
        instruction = f"Summarise the history of the harbour district number {i} and explain why its treaty mattered."
        answer = (
            f"The harbour district {i} grew around the railway after the council signed the treaty; the treaty "
            "secured the market and the bridge, which made the district the province's main port."
        )
        prompt = SYNTHESIS_PROMPT.format(instruction=instruction, answer=answer)
        requests.append(
            GenerationRequest(
                key=f"req-{i}",
                messages=({"role": "user", "content": prompt},),
                max_new_tokens=max_new_tokens,
                temperature=0.7,
                seed=i,
            )
        )
    return requests


async def run_concurrent(backend: TGIBackend, requests: list[GenerationRequest]) -> tuple[float, int, int, float]:
    """Return (elapsed s, ok count, output words, client CPU s)."""
    ok = words = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async for result in backend.stream(requests):
        if result.ok:
            ok += 1
            words += len(result.text.split())  # type: ignore[union-attr]
    return time.perf_counter() - t0, ok, words, time.process_time() - cpu0


async def run_sequential(backend: TGIBackend, requests: list[GenerationRequest]) -> tuple[float, int]:
    ok = 0
    t0 = time.perf_counter()
    for request in requests:
        result = await backend.generate(request)
        ok += result.ok
    return time.perf_counter() - t0, ok


def make_seeds(n: int, offset: int = 0) -> list[Any]:
    from hf_context_synthesis.synthesis.seeds import SeedExample

    seeds = []
    for request in make_requests(n, offset):
        content = request.messages[0]["content"]
        instruction = content.split("Instruction: ", 1)[1].split("\n", 1)[0]
        answer = content.split("Answer: ", 1)[1].split("\n", 1)[0]
        seeds.append(SeedExample(task="bench", instruction=instruction, answer=answer, seed_id=f"bench/{request.key}"))
    return seeds


async def run_synthesis(backend: TGIBackend, seeds: list[Any], cache_dir: str) -> tuple[float, int, int, float]:
    """Full generation phase; return (elapsed s, contexts accepted, requests made, client CPU s)."""
    from hf_context_synthesis.synthesis.cache import GenerationCache
    from hf_context_synthesis.synthesis.config import SynthesisConfig
    from hf_context_synthesis.synthesis.generation import ContextSynthesizer

    config = SynthesisConfig(progress=False, generation_cache_dir=cache_dir, max_concurrency=backend.max_concurrency)
    with GenerationCache(os.path.join(cache_dir, "generations.sqlite")) as cache:
        synthesizer = ContextSynthesizer(config, backend=backend, cache=cache)
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = await synthesizer.arun(seeds)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return elapsed, result.report.synthesized, result.report.generated, cpu


async def bench(args: argparse.Namespace, url: str) -> dict[str, float]:
    config = TGIBackendConfig(
        endpoint=url, max_concurrency=args.concurrency or args.capacity, timeout=60.0, token=False
    )
    r: dict[str, float] = {"ceiling": args.capacity / args.latency}
    async with TGIBackend(config) as backend:
        # Warm-up: open the connections and import whatever is lazily imported.
        await run_concurrent(backend, make_requests(min(args.capacity, 64), offset=10_000_000))
        if args.path in ("backend", "both"):
            elapsed, ok, words, cpu = await run_concurrent(backend, make_requests(args.requests))
            r.update(elapsed=elapsed, ok=ok, words=words, cpu=cpu, rps=args.requests / elapsed)
            r["ratio"] = r["rps"] / r["ceiling"]
        if args.path in ("synthesis", "both"):
            with tempfile.TemporaryDirectory() as cache_dir:
                seeds = make_seeds(args.requests, offset=30_000_000)
                elapsed, contexts, requests, cpu = await run_synthesis(backend, seeds, cache_dir)
            r.update(s_elapsed=elapsed, s_contexts=contexts, s_requests=requests, s_cpu=cpu)
            r["s_rps"] = requests / elapsed
            r["s_ratio"] = r["s_rps"] / r["ceiling"]
        seq_elapsed, seq_ok = await run_sequential(backend, make_requests(args.sequential_requests, offset=20_000_000))
    r.update(seq_elapsed=seq_elapsed, seq_ok=seq_ok, seq_rps=args.sequential_requests / seq_elapsed)
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="N for the concurrent run")
    parser.add_argument("--capacity", type=int, default=64, help="server batch size B")
    parser.add_argument("--latency", type=float, default=0.5, help="server seconds per request")
    parser.add_argument("--words", type=int, default=2000, help="words per response")
    parser.add_argument("--concurrency", type=int, default=0, help="client max_concurrency (default: B)")
    parser.add_argument("--sequential-requests", type=int, default=8, help="N for the sequential baseline")
    parser.add_argument("--path", choices=("backend", "synthesis", "both"), default="both", help="what to measure")
    parser.add_argument("--min-ratio", type=float, default=0.9, help="exit 1 if a ratio to B/latency is below")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server_kwargs = {
        "latency": args.latency,
        "capacity": args.capacity,
        "response_words": args.words,
        "max_concurrent_requests": 4096,
    }
    process = ctx.Process(target=_serve, args=(child, server_kwargs), daemon=True)
    process.start()
    try:
        url = parent.recv()
        r = asyncio.run(bench(args, url))
        parent.send("stop")
        stats = parent.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()

    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(
        f"server: capacity B={args.capacity}, latency={args.latency}s -> ceiling {r['ceiling']:.1f} req/s "
        f"(separate process; max active {stats.max_active}, max in flight {stats.max_in_flight})"
    )
    concurrency = args.concurrency or args.capacity
    ok = True
    if "rps" in r:
        print(
            f"backend path (TGIBackend.stream, max_concurrency={concurrency}): {args.requests} requests in "
            f"{r['elapsed']:.2f}s = {r['rps']:.1f} req/s, {r['ok']:.0f} ok, "
            f"{r['words'] / max(1, r['ok']):.0f} words/response, client CPU {r['cpu']:.1f}s"
        )
        print(f"  ratio achieved / (B/latency) = {r['ratio']:.3f}  (target >= {args.min_ratio})")
        print(f"  concurrent / sequential = {r['rps'] / r['seq_rps']:.1f}x")
        ok = ok and r["ratio"] >= args.min_ratio and r["ok"] == args.requests
    if "s_rps" in r:
        print(
            f"synthesis path (ContextSynthesizer.arun -> TGIBackend, cache + validation): {args.requests} seeds, "
            f"{r['s_requests']:.0f} requests in {r['s_elapsed']:.2f}s = {r['s_rps']:.1f} req/s, "
            f"{r['s_contexts']:.0f} contexts accepted, client CPU {r['s_cpu']:.1f}s"
        )
        print(f"  ratio achieved / (B/latency) = {r['s_ratio']:.3f}  (target >= {args.min_ratio})")
        print(f"  concurrent / sequential = {r['s_rps'] / r['seq_rps']:.1f}x")
        ok = ok and r["s_ratio"] >= args.min_ratio and r["s_contexts"] == args.requests
    print(
        f"sequential baseline (TGIBackend.generate, one request at a time, N={args.sequential_requests}): "
        f"{r['seq_rps']:.2f} req/s ({r['seq_ok']:.0f} ok; ideal 1/latency = {1 / args.latency:.2f})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
