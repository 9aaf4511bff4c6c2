"""FleetBackend against real loopback TGI-protocol servers, through huggingface_hub's client.

Routing by least outstanding requests, circuit breaking with recovery, re-routing, the error when no
endpoint is healthy (and resuming from the generation cache after it), make_backend with a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from hf_context_synthesis import make_backend
from hf_context_synthesis.backends.base import GenerationRequest, run_requests
from hf_context_synthesis.backends.fleet import CircuitState, FleetBackend, NoHealthyEndpointError
from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig
from hf_context_synthesis.synthesis.cache import GenerationCache
from hf_context_synthesis.synthesis.config import SynthesisConfig
from hf_context_synthesis.synthesis.seeds import SeedExample
from hf_context_synthesis.synthesis.generation import ContextSynthesizer
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def tgi(url: str, concurrency: int = 4, **kw) -> TGIBackend:
    return TGIBackend(
        TGIBackendConfig(endpoint=url, max_concurrency=concurrency, token=False, timeout=10.0,
                         backoff_base=0.02, backoff_max=0.2, **kw)
    )


def requests(n: int, tag: str = "") -> list[GenerationRequest]:
    return [
        GenerationRequest(key=f"{tag}{i}", messages=({"role": "user", "content": f"Question: item {tag}{i}"},),
                          max_new_tokens=40, seed=i)
        for i in range(n)
    ]


def servers(*specs: dict) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.servers = [stack.enter_context(FakeTGIServer(**spec)) for spec in specs]  # type: ignore[attr-defined]
    return stack


def test_least_outstanding_gives_a_slow_endpoint_fewer_requests():
    with servers({"latency": 0.04, "capacity": 4}, {"latency": 0.04, "capacity": 4},
                 {"latency": 0.2, "capacity": 4}) as stack:
        fast1, fast2, slow = stack.servers
        fleet = FleetBackend([tgi(s.url) for s in stack.servers])
        assert fleet.max_concurrency == 12
        reqs = requests(240)
        results = run_requests(fleet, reqs)
        assert [r.key for r in results] == [r.key for r in reqs] and all(r.ok for r in results)
        stats = [s.stats() for s in stack.servers]
        # every request served exactly once, nothing retried
        assert sum(s.completed for s in stats) == 240 == sum(s.generation_requests for s in stats)
        for r in reqs:
            assert sum(s.prompt_count(r.messages[0]["content"]) for s in stats) == 1
        # 5x slower endpoint: about a fifth of a fast one's share (an even split would be 80 each)
        assert stats[2].completed < 0.4 * min(stats[0].completed, stats[1].completed), [s.completed for s in stats]
        assert stats[2].completed > 0
        # per-endpoint stats agree with the servers and the results name their endpoint
        by_endpoint = {e.endpoint: e for e in fleet.endpoint_stats()}
        for server, st in zip(stack.servers, stats):
            assert by_endpoint[server.url].successes == st.completed
            assert by_endpoint[server.url].state == "closed" and by_endpoint[server.url].failures == 0
        assert {r.extra["endpoint"] for r in results} == {s.url for s in stack.servers}


def test_outage_opens_the_circuit_then_probes_it_back_in():
    with servers({"latency": 0.04, "capacity": 4}, {"latency": 0.04, "capacity": 4}) as stack:
        good, flaky = stack.servers
        fleet = FleetBackend([tgi(good.url), tgi(flaky.url)], failure_threshold=2, cooldown=0.2, max_cooldown=0.4)
        reqs = requests(500)
        marks: dict[str, int] = {}

        async def run():
            results = []
            outage_started = False
            async for res in fleet.stream(reqs):
                results.append(res)
                if not outage_started and flaky.stats().completed >= 30:
                    outage_started = True
                    await asyncio.to_thread(flaky.outage, 1.2)
                    marks["at_outage"] = flaky.stats().completed
            await fleet.aclose()
            return results

        results = asyncio.run(run())
        keys = [r.key for r in results]
        assert sorted(keys) == sorted(r.key for r in reqs) and len(set(keys)) == 500
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        st = {e.endpoint: e for e in fleet.endpoint_stats()}[flaky.url]
        path = [(a, b) for _, a, b, _ in st.transitions]
        assert path[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")], st.transitions
        assert st.opened >= 1 and st.probe_failures >= 1 and st.failures >= 2
        assert st.rerouted >= 1  # the requests in flight when it went down were moved, not failed
        assert st.state == "closed"
        # it served requests again after coming back
        assert flaky.stats().completed > marks["at_outage"]
        assert good.stats().completed + flaky.stats().completed >= 500


def seeds(n: int) -> list[SeedExample]:
    return [SeedExample(task="t", instruction=f"Question number {i}?", answer=f"Answer {i}.", seed_id=f"t/{i}")
            for i in range(n)]


def accept_all(text, seed):
    return text, None


def test_no_healthy_endpoint_raises_then_rerun_resumes_from_cache(tmp_path):
    config = SynthesisConfig(progress=False, generation_cache_dir=str(tmp_path), max_concurrency=2)
    items = seeds(80)
    with servers({"latency": 0.05, "capacity": 2}, {"latency": 0.05, "capacity": 2}) as stack:
        a, b = stack.servers
        secret_urls = [s.url.replace("http://", "http://user:s3cret@") for s in (a, b)]

        def fleet():
            return FleetBackend([tgi(u, concurrency=2) for u in secret_urls], failure_threshold=2, cooldown=0.1,
                                max_cooldown=0.2, no_healthy_timeout=0.8)

        def pull_the_plug():
            while a.stats().completed + b.stats().completed < 20:
                time.sleep(0.01)
            a.outage(60)
            b.outage(60)

        killer = threading.Thread(target=pull_the_plug)
        killer.start()
        # (the file default_cache_path(config) names: ContextSynthesizer replaces an *empty* cache object by it)
        with GenerationCache(tmp_path / "generations.sqlite") as cache:
            with pytest.raises(NoHealthyEndpointError) as info:
                ContextSynthesizer(config, backend=fleet(), cache=cache, validator=accept_all).run(items)
            killer.join()
            message = str(info.value)
            assert a.url in message and b.url in message and "s3cret" not in message
            assert "cache" in message and "rerun" in message
            finished = len(cache)
            assert 20 <= finished < 80
            # both come back: the rerun requests only what is not cached, each once
            a.end_outage()
            b.end_outage()
            a.reset_stats()
            b.reset_stats()
            result = ContextSynthesizer(config, backend=fleet(), cache=cache, validator=accept_all).run(items)
        assert result.report.synthesized == 80 and result.report.cached == finished
        per_prompt = {}
        for s in (a, b):
            for k, n in s.stats().per_prompt.items():
                per_prompt[k] = per_prompt.get(k, 0) + n
        assert len(per_prompt) == 80 - finished and set(per_prompt.values()) == {1}


def test_make_backend_builds_a_fleet_and_synthesis_uses_every_endpoint(small_seed_dir, tmp_path):
    from hf_context_synthesis.synthesis.pipeline import synthesize_rows

    with servers({"latency": 0.01, "capacity": 4}, {"latency": 0.01, "capacity": 4}) as stack:
        a, b = stack.servers
        config = SynthesisConfig(seed=str(small_seed_dir), endpoint=[a.url, b.url], max_concurrency=3, progress=False,
                                 num_distractors=4, generation_cache_dir=str(tmp_path / "gens"))
        backend = make_backend(config)
        assert isinstance(backend, FleetBackend) and backend.max_concurrency == 6
        assert backend.endpoints == [a.url, b.url]
        rows, report = synthesize_rows(config, backend=backend, datasets_cache_dir=str(tmp_path / "ds"))
        rows = list(rows)
        assert len(rows) == report.examples == report.synthesized > 0
        assert a.stats().completed > 0 and b.stats().completed > 0
        assert a.stats().completed + b.stats().completed == report.generated
        assert {r["generator"] for r in rows} == {"fake-org/fake-tgi-model"}
        run_coro_close(backend)


def run_coro_close(backend):
    from hf_context_synthesis.backends.base import run_coro

    run_coro(backend.aclose())


def test_endpoints_serving_different_models_are_refused():
    with servers({"model_id": "org/a"}, {"model_id": "org/b"}) as stack:
        fleet = FleetBackend([tgi(s.url) for s in stack.servers])
        with pytest.raises(ValueError, match="different models"):
            asyncio.run(fleet.model_id())
    with pytest.raises(ValueError, match="more than once"):
        FleetBackend([tgi("http://127.0.0.1:9"), tgi("http://127.0.0.1:9/")])


def test_fatal_errors_are_not_rerouted_and_do_not_open_the_circuit():
    with servers({"faults": {"http_422": 3}}, {}) as stack:
        bad, other = stack.servers
        fleet = FleetBackend([tgi(bad.url, concurrency=1), tgi(other.url, concurrency=1)], failure_threshold=1)
        results = run_requests(fleet, requests(12))
        failed = [r for r in results if not r.ok]
        assert len(failed) == 3 and all("422" in r.error for r in failed)
        assert all(r.attempts == 1 for r in failed)
        assert set(fleet.states().values()) == {CircuitState.CLOSED}
        assert {e.endpoint: e.rejected for e in fleet.endpoint_stats()}[bad.url] == 3


def test_429_is_busy_not_broken_and_adaptive_members_share_the_load():
    # fleet of adaptive members; the first server answers 429 beyond 2 requests in flight
    with servers({"latency": 0.03, "capacity": 8, "max_concurrent_requests": 2},
                 {"latency": 0.03, "capacity": 8}) as stack:
        busy, calm = stack.servers
        config = SynthesisConfig(endpoint=[busy.url, calm.url], max_concurrency=16, adaptive_concurrency=True,
                                 max_retries=20)
        fleet = make_backend(config)
        assert isinstance(fleet, FleetBackend) and all(m.limiter is not None for m in fleet.members)
        for m in fleet.members:  # fast backoff for the test
            m.config.backoff_base, m.config.backoff_max = 0.01, 0.05
        fleet.retry_policy = fleet.members[0].config.retry_policy
        results = run_requests(fleet, requests(300))
        assert all(r.ok for r in results) and len({r.key for r in results}) == 300
        st = {e.endpoint: e for e in fleet.endpoint_stats()}
        assert busy.stats().faults.get("overloaded", 0) > 0 and st[busy.url].overloads > 0
        assert st[busy.url].failures == 0 and st[busy.url].opened == 0 and st[busy.url].state == "closed"
        assert fleet.members[0].limiter.stats().overloads > 0
        assert 1 <= fleet.members[0].concurrency_limit <= 16
        assert st[busy.url].successes > 0 and st[calm.url].successes > st[busy.url].successes


def test_swapping_a_fleet_member_or_the_url_spelling_reuses_every_generation(small_seed_dir, tmp_path):
    """Generation cache keys name the served model, never an endpoint URL."""
    from hf_context_synthesis.synthesis.pipeline import synthesize_rows

    def run(endpoint):
        config = SynthesisConfig(seed=str(small_seed_dir), endpoint=endpoint, progress=False, num_distractors=2,
                                 generation_cache_dir=str(tmp_path / "gens"))
        rows, report = synthesize_rows(config, datasets_cache_dir=str(tmp_path / "ds"))
        return [r["relevant_context"] for r in rows], report

    with servers({}, {}, {}) as stack:
        a, b, c = stack.servers
        first, r1 = run([a.url, b.url])
        assert r1.generated == len(first) > 0 and r1.cached == 0
        swapped, r2 = run([a.url.replace("127.0.0.1", "localhost") + "/", c.url])  # one member replaced
        single, r3 = run(b.url)
        assert sum(s.stats().generation_requests for s in (a, b, c)) == r1.generated  # nothing asked again
    assert r2.generated == r3.generated == 0 and r2.cached == r3.cached == r1.generated
    assert swapped == single == first
