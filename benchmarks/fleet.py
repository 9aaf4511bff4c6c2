"""Throughput of :class:`FleetBackend` over several endpoints, one of them slow, and of adaptive concurrency.

Four :class:`~hf_context_synthesis.testing.fake_tgi.FakeTGIServer` instances (capacity 16 each, same
latency, one of them ``--slow-factor`` times slower) run in a **separate process**, so they do not
compete with the client's event loop for the GIL. The fleet's ceiling is ``sum(capacity_i / latency_i)``
requests/s. In one run we measure:

* ``FleetBackend.stream`` (least outstanding requests, late binding): achieved / ceiling (target >= 0.85);
* the full generation phase (``ContextSynthesizer`` -> ``FleetBackend``: prompt rendering, validation,
  the SQLite cache): achieved / ceiling;
* a naive round-robin over the same endpoints (request i goes to endpoint i mod 4, each with its own
  semaphore), achieved / ceiling;
* against one fast server alone: a fixed ``max_concurrency`` equal to its capacity (the best fixed
  setting, which a user would have to know) beside ``adaptive_concurrency`` started far below and
  far above, as achieved / (capacity / latency) with the limit it settled on.

Usage::

    python benchmarks/fleet.py [--requests 3000] [--latency 0.5] [--slow-factor 5] [--rr-requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import tempfile
import time
from typing import Any

from hf_context_synthesis.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from hf_context_synthesis.backends.fleet import FleetBackend
from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig

CAPACITY = 16

PROMPT = (
    "You are given an instruction and its answer. Write the background document (about 2,000 words) "
    "that a reader would need in order to produce this answer to this instruction. Begin with 'Context: '.\n\n"
    "Instruction: {instruction}\n\nAnswer: {answer}\n"
)


def _serve(conn: Any, specs: list[dict[str, Any]]) -> None:
    """Child process: run the servers until the parent sends anything on ``conn``."""
    import contextlib

    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(FakeTGIServer(**spec)) for spec in specs]
        conn.send([s.url for s in servers])
        conn.recv()
        conn.send([s.stats().completed for s in servers])


def pair(i: int) -> tuple[str, str]:
    return (
        f"Summarise the history of harbour district number {i} and explain why its treaty mattered.",
        f"District {i} grew around the railway after the council signed the treaty, which secured its market.",
    )


def make_requests(n: int, offset: int = 0) -> list[GenerationRequest]:
    out = []
    for i in range(offset, offset + n):
        instruction, answer = pair(i)
        out.append(
            GenerationRequest(
                key=f"req-{i}",
                messages=({"role": "user", "content": PROMPT.format(instruction=instruction, answer=answer)},),
                max_new_tokens=4096,
                temperature=0.7,
                seed=i,
            )
        )
    return out


def make_seeds(n: int, offset: int) -> list[Any]:
    from hf_context_synthesis.synthesis.seeds import SeedExample

    return [SeedExample(task="bench", instruction=pair(i)[0], answer=pair(i)[1], seed_id=f"bench/{i}")
            for i in range(offset, offset + n)]


def tgi(url: str, **kw: Any) -> TGIBackend:
    kw.setdefault("max_concurrency", CAPACITY)
    return TGIBackend(TGIBackendConfig(endpoint=url, token=False, timeout=120.0, **kw))


class RoundRobin(GenerationBackend):
    """Naive baseline: request i goes to member i mod n, whatever that member's load."""

    kind = "round-robin"

    def __init__(self, members: list[TGIBackend]) -> None:
        self.members = members
        self._next = itertools.cycle(members)

    async def model_id(self) -> str:
        return await self.members[0].model_id()

    @property
    def max_concurrency(self) -> int:
        return sum(m.max_concurrency for m in self.members)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await next(self._next).generate(request)

    async def aclose(self) -> None:
        for m in self.members:
            await m.aclose()


async def timed_stream(backend: GenerationBackend, requests: list[GenerationRequest]) -> tuple[float, int, float]:
    """(elapsed s, ok results, client CPU s)."""
    ok = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async for res in backend.stream(requests):
        ok += res.ok
    return time.perf_counter() - t0, ok, time.process_time() - cpu0


async def timed_synthesis(backend: GenerationBackend, n: int, offset: int) -> tuple[float, int, int]:
    """Full generation phase: (elapsed s, contexts accepted, requests made)."""
    from hf_context_synthesis.synthesis.cache import GenerationCache
    from hf_context_synthesis.synthesis.config import SynthesisConfig
    from hf_context_synthesis.synthesis.generation import ContextSynthesizer

    with tempfile.TemporaryDirectory() as cache_dir:
        config = SynthesisConfig(progress=False, generation_cache_dir=cache_dir)
        with GenerationCache(os.path.join(cache_dir, "generations.sqlite")) as cache:
            synthesizer = ContextSynthesizer(config, backend=backend, cache=cache)
            t0 = time.perf_counter()
            result = await synthesizer.arun(make_seeds(n, offset))
            elapsed = time.perf_counter() - t0
    return elapsed, result.report.synthesized, result.report.generated


async def bench(args: argparse.Namespace, urls: list[str], latencies: list[float]) -> dict[str, Any]:
    ceiling = sum(CAPACITY / lat for lat in latencies)
    r: dict[str, Any] = {"ceiling": ceiling}
    fleet = FleetBackend([tgi(u) for u in urls])
    await timed_stream(fleet, make_requests(4 * CAPACITY, offset=10_000_000))  # warm-up: connections, imports
    before = [e.successes for e in fleet.endpoint_stats()]
    elapsed, ok, cpu = await timed_stream(fleet, make_requests(args.requests))
    r["fleet"] = dict(elapsed=elapsed, ok=ok, cpu=cpu, rps=args.requests / elapsed, ratio=args.requests / elapsed / ceiling,
                      per_endpoint=[e.successes - b for e, b in zip(fleet.endpoint_stats(), before)])
    if args.requests_synthesis:
        elapsed, contexts, made = await timed_synthesis(fleet, args.requests_synthesis, offset=30_000_000)
        r["synthesis"] = dict(elapsed=elapsed, contexts=contexts, requests=made, rps=made / elapsed,
                              ratio=made / elapsed / ceiling)
    await fleet.aclose()

    if args.rr_requests:
        rr = RoundRobin([tgi(u) for u in urls])
        await timed_stream(rr, make_requests(4 * CAPACITY, offset=11_000_000))
        elapsed, ok, _ = await timed_stream(rr, make_requests(args.rr_requests, offset=40_000_000))
        r["round_robin"] = dict(elapsed=elapsed, ok=ok, rps=args.rr_requests / elapsed,
                                ratio=args.rr_requests / elapsed / ceiling)
        await rr.aclose()

    single_ceiling = CAPACITY / latencies[0]
    r["single_ceiling"] = single_ceiling
    runs = [("fixed", dict(max_concurrency=CAPACITY))]
    for start in args.adaptive_starts:
        runs.append((f"adaptive from {start}", dict(adaptive_concurrency=True, initial_concurrency=start,
                                                    max_concurrency=args.adaptive_max)))
    r["single"] = []
    for offset, (label, kw) in enumerate(runs):
        backend = tgi(urls[0], **kw)
        elapsed, ok, _ = await timed_stream(backend, make_requests(args.single_requests, offset=50_000_000 + offset * 1_000_000))
        limiter = backend.limiter
        r["single"].append(dict(label=label, elapsed=elapsed, ok=ok, rps=args.single_requests / elapsed,
                                ratio=args.single_requests / elapsed / single_ceiling,
                                limit=backend.concurrency_limit,
                                peak=limiter.stats().peak_limit if limiter else CAPACITY))
        await backend.aclose()
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="N through FleetBackend.stream")
    parser.add_argument("--requests-synthesis", type=int, default=3000, help="N seeds through ContextSynthesizer (0: skip)")
    parser.add_argument("--rr-requests", type=int, default=400, help="N through naive round-robin (0: skip)")
    parser.add_argument("--single-requests", type=int, default=1000, help="N per single-server run")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request on a normal server")
    parser.add_argument("--slow-factor", type=float, default=5.0, help="the slow server's latency multiplier")
    parser.add_argument("--words", type=int, default=1000, help="words per response")
    parser.add_argument("--adaptive-starts", type=int, nargs="*", default=[2, 128], help="adaptive initial limits")
    parser.add_argument("--adaptive-max", type=int, default=256, help="adaptive upper bound")
    parser.add_argument("--min-ratio", type=float, default=0.85, help="exit 1 if the fleet ratio is below")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    latencies = [args.latency] * 3 + [args.latency * args.slow_factor]
    specs = [dict(latency=lat, capacity=CAPACITY, response_words=args.words, max_concurrent_requests=4096, seed=i)
             for i, lat in enumerate(latencies)]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(child, specs), daemon=True)
    process.start()
    try:
        urls = parent.recv()
        r = asyncio.run(bench(args, urls, latencies))
        parent.send("stop")
        parent.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()

    print(f"4 servers, capacity {CAPACITY} each, latencies {latencies} s: ceiling sum(capacity/latency) = "
          f"{r['ceiling']:.1f} req/s")
    f = r["fleet"]
    print(f"FleetBackend.stream: {args.requests} requests in {f['elapsed']:.2f}s = {f['rps']:.1f} req/s, {f['ok']} ok, "
          f"client CPU {f['cpu']:.1f}s; per endpoint {f['per_endpoint']} (last = slow)")
    print(f"  ratio achieved / ceiling = {f['ratio']:.3f}  (target >= {args.min_ratio})")
    ok = f["ratio"] >= args.min_ratio and f["ok"] == args.requests
    if "synthesis" in r:
        s = r["synthesis"]
        print(f"ContextSynthesizer -> FleetBackend: {args.requests_synthesis} seeds, {s['requests']} requests in "
              f"{s['elapsed']:.2f}s = {s['rps']:.1f} req/s, {s['contexts']} contexts accepted")
        print(f"  ratio achieved / ceiling = {s['ratio']:.3f}")
    if "round_robin" in r:
        rr = r["round_robin"]
        print(f"naive round-robin: {args.rr_requests} requests in {rr['elapsed']:.2f}s = {rr['rps']:.1f} req/s, "
              f"{rr['ok']} ok; ratio achieved / ceiling = {rr['ratio']:.3f}")
        print(f"  least-outstanding fleet / round-robin = {f['rps'] / rr['rps']:.2f}x")
    print(f"one server (capacity {CAPACITY}, latency {latencies[0]}s, ceiling {r['single_ceiling']:.1f} req/s), "
          f"{args.single_requests} requests each:")
    for run in r["single"]:
        print(f"  {run['label']:>20}: {run['rps']:.1f} req/s, ratio {run['ratio']:.3f}, {run['ok']} ok, "
              f"final limit {run['limit']} (peak {run['peak']})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
