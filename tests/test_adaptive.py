"""Adaptive concurrency: the AIMD limiter alone, and TGIBackend(adaptive_concurrency=True) against servers of
known capacity (queueing latency beyond it, or 429 beyond it), through huggingface_hub's client."""

from __future__ import annotations

import asyncio

import pytest

from hf_context_synthesis import make_backend
from hf_context_synthesis.backends.adaptive import AdaptiveLimiter
from hf_context_synthesis.backends.base import GenerationRequest
from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig
from hf_context_synthesis.synthesis.config import SynthesisConfig
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"r{i}", messages=({"role": "user", "content": f"Question: {i}"},),
                              max_new_tokens=40, seed=i) for i in range(n)]


async def drive(backend: TGIBackend, n: int) -> tuple[int, list[int]]:
    """Stream n requests; return (ok count, the limit after each result)."""
    ok, limits = 0, []
    async for res in backend.stream(requests(n)):
        ok += res.ok
        limits.append(backend.concurrency_limit)
    await backend.aclose()
    return ok, limits


def adaptive(url: str, initial: int, max_concurrency: int = 256) -> TGIBackend:
    return TGIBackend(TGIBackendConfig(endpoint=url, token=False, adaptive_concurrency=True,
                                       initial_concurrency=initial, max_concurrency=max_concurrency,
                                       backoff_base=0.01, backoff_max=0.05, max_retries=20, timeout=10.0))


@pytest.mark.parametrize("initial", [1, 128])
def test_converges_near_capacity_of_a_queueing_server(initial):
    capacity = 8
    with FakeTGIServer(latency=0.1, capacity=capacity) as srv:
        backend = adaptive(srv.url, initial)
        assert backend.limiter.limit == initial and backend.concurrency_limit == 1  # baseline first
        ok, limits = asyncio.run(drive(backend, 600))
        assert ok == 600
        final = limits[-1]
        settled = limits[-150:]
        assert capacity / 2 <= final <= 2 * capacity, limits[::25]
        assert capacity / 2 <= sum(settled) / len(settled) <= 2 * capacity, limits[::25]
        stats = backend.limiter.stats()
        assert (stats.increases if initial == 1 else stats.decreases) > 0
        assert stats.min_latency is not None and stats.overloads == 0


def test_decreases_on_429_and_settles_below_the_servers_limit():
    # no queueing (capacity 64), but more than 8 requests in flight are answered 429
    with FakeTGIServer(latency=0.05, capacity=64, max_concurrent_requests=8) as srv:
        backend = adaptive(srv.url, initial=2)
        ok, limits = asyncio.run(drive(backend, 400))
        assert ok == 400
        stats = backend.limiter.stats()
        assert stats.overloads > 0 and stats.decreases > 0
        assert srv.stats().faults.get("overloaded", 0) == stats.overloads
        assert 4 <= limits[-1] <= 16, limits[::20]
        # most of the run is spent within the server's limit: 429s are rare
        assert stats.overloads < 0.1 * 400


def test_fixed_concurrency_unchanged_without_the_flag():
    backend = TGIBackend(TGIBackendConfig(endpoint="http://127.0.0.1:9", max_concurrency=5))
    assert backend.limiter is None and backend.concurrency_limit == 5
    config = SynthesisConfig(endpoint="http://127.0.0.1:9", max_concurrency=7, adaptive_concurrency=True)
    built = make_backend(config).members[0]  # one endpoint: a fleet of one (circuit breaker included)
    assert built.limiter is not None and built.max_concurrency == 7 and 1 <= built.concurrency_limit <= 7


def test_overload_halves_once_per_round_trip_and_limits_hold():
    async def run():
        lim = AdaptiveLimiter(16, min_limit=2, max_limit=32, baseline_samples=0)
        held = []
        for _ in range(16):
            cm = lim.slot()
            held.append((cm, await cm.__aenter__()))
        assert lim.in_flight == 16
        # a 17th waits
        waiting = lim.slot()
        waiter = asyncio.ensure_future(waiting.__aenter__())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        # all 16 requests (sent before any decrease) report overload: one halving, not sixteen
        for cm, slot in held:
            slot.overloaded()
            await cm.__aexit__(None, None, None)
        assert lim.limit == 8 and lim.stats().decreases == 1
        await asyncio.sleep(0.01)
        assert waiter.done() and lim.in_flight == 1
        # a request sent after the decrease may decrease again, down to min_limit at most
        for _ in range(5):
            async with lim.slot() as slot:
                slot.overloaded()
        assert lim.limit == 2
        waiter.cancel()

    asyncio.run(run())


def test_cancelled_waiter_does_not_leak_a_slot():
    async def run():
        lim = AdaptiveLimiter(1, max_limit=1, slow_start=False)
        async with lim.slot():
            task = asyncio.ensure_future(lim._acquire())
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert lim.in_flight == 0
        async with lim.slot():
            assert lim.in_flight == 1

    asyncio.run(run())


def test_unused_capacity_does_not_inflate_the_limit():
    async def run():
        lim = AdaptiveLimiter(8, max_limit=1024)
        for _ in range(200):  # one request at a time: never half the limit in flight
            async with lim.slot() as slot:
                slot.succeeded(latency=0.01)
        return lim.limit

    assert asyncio.run(run()) == 8


@pytest.mark.parametrize("kwargs", [{"min_limit": 0}, {"max_limit": 0}, {"tolerance": 1.0}, {"backoff_ratio": 1.0}])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, **kwargs)
