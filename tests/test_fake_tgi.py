"""FakeTGIServer speaks TGI's protocol as the real huggingface_hub.AsyncInferenceClient expects it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx2
import pytest
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OverloadedError, ValidationError

from hf_context_synthesis.testing.fake_tgi import (
    CONTEXT_PREFIX,
    FAULT_KINDS,
    REFUSAL_TEXT,
    Fault,
    FakePrompt,
    FakeTGIServer,
    count_tokens,
    prompt_key,
)

PROMPT = (
    "Context: [MISSING]\n"
    "Question: Who rebuilt the harbour bridge in 1921?\n"
    "Answer: The engineer Ada Moreau rebuilt it after the storm.\n\n"
    "The above is a question-answer pair. Write the missing context."
)


def client(srv: FakeTGIServer, url: str | None = None, timeout: float | None = 10.0) -> AsyncInferenceClient:
    return AsyncInferenceClient(model=url or srv.url, provider="hf-inference", timeout=timeout)


def chat(srv: FakeTGIServer, content: str = PROMPT, **kwargs):
    async def go():
        async with client(srv) as c:
            return await c.chat_completion([{"role": "user", "content": content}], **kwargs)

    return asyncio.run(go())


def test_chat_completion_text_usage_and_determinism():
    with FakeTGIServer(response_words=120, seed=3) as srv:
        out = chat(srv, max_tokens=1000)
        again = chat(srv, max_tokens=1000)
        other = chat(srv, content=PROMPT.replace("1921", "1922"), max_tokens=1000)
        stats = srv.stats()

    text = out.choices[0].message.content
    assert text.startswith(CONTEXT_PREFIX)
    # The seed's instruction and answer appear verbatim, embedded in filler text.
    assert "Who rebuilt the harbour bridge in 1921?" in text
    assert "The engineer Ada Moreau rebuilt it after the storm." in text
    assert "Write the missing context" not in text
    assert 120 <= len(text.split()) <= 125
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == count_tokens(PROMPT)
    assert out.usage.completion_tokens == count_tokens(text)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.model == "fake-org/fake-tgi-model"
    assert again.choices[0].message.content == text  # same prompt -> same text
    assert other.choices[0].message.content != text
    assert stats.prompt_count(PROMPT) == 2
    assert stats.per_route == {"POST /v1/chat/completions": 3}
    assert stats.completed == 3 and stats.total_requests == 3


def test_seed_changes_text_and_max_tokens_truncates():
    with FakeTGIServer(response_words=400) as srv:
        a = chat(srv, seed=1, max_tokens=4000).choices[0].message.content
        b = chat(srv, seed=2, max_tokens=4000).choices[0].message.content
        short = chat(srv, seed=1, max_tokens=26)
    assert a != b
    assert short.choices[0].finish_reason == "length"
    assert len(short.choices[0].message.content.split()) == 20  # 26 tokens / 1.3 tokens per word
    assert a.startswith(short.choices[0].message.content)


@pytest.mark.parametrize("path", ["", "/generate"])
def test_text_generation_details(path):
    with FakeTGIServer(response_words=50) as srv:

        async def go():
            async with client(srv, url=srv.url + path) as c:
                plain = await c.text_generation(PROMPT, max_new_tokens=500)
                detailed = await c.text_generation(PROMPT, max_new_tokens=500, details=True, seed=7)
                full = await c.text_generation(PROMPT, max_new_tokens=500, return_full_text=True)
                return plain, detailed, full

        plain, detailed, full = asyncio.run(go())
        stats = srv.stats()
    assert isinstance(plain, str) and plain.startswith(CONTEXT_PREFIX)
    assert detailed.generated_text.startswith(CONTEXT_PREFIX)
    assert detailed.details.generated_tokens == count_tokens(detailed.generated_text)
    assert detailed.details.finish_reason == "eos_token"
    assert detailed.details.seed == 7
    assert full == PROMPT + plain
    assert stats.per_route == {f"POST {path or '/'}": 3}
    assert stats.prompt_count(PROMPT) == 3


def test_details_tokens_and_length_finish():
    with FakeTGIServer(response_words=50, details_tokens=True) as srv:

        async def go():
            async with client(srv) as c:
                return await c.text_generation(PROMPT, max_new_tokens=13, details=True)

        out = asyncio.run(go())
    assert out.details.finish_reason == "length"
    assert len(out.generated_text.split()) == 10
    assert len(out.details.tokens) == out.details.generated_tokens == count_tokens(out.generated_text)


def test_info_and_health():
    with FakeTGIServer(capacity=5, model_id="org/m", max_concurrent_requests=77) as srv:

        async def go():
            async with client(srv) as c:
                return await c.get_endpoint_info(), await c.health_check()

        info, healthy = asyncio.run(go())
        stats = srv.stats()
    assert info["model_id"] == "org/m"
    assert info["max_concurrent_requests"] == 77
    assert info["fake_capacity"] == 5
    assert healthy is True
    assert stats.per_route == {"GET /info": 1, "GET /health": 1}
    assert stats.generation_requests == 0


def test_responder_override():
    seen: list[FakePrompt] = []

    def responder(p: FakePrompt) -> str:
        seen.append(p)
        return f"Context: echo {len(p.prompt)}"

    with FakeTGIServer(responder=responder) as srv:
        out = chat(srv, max_tokens=100, seed=5, temperature=0.5)
    assert out.choices[0].message.content == f"Context: echo {len(PROMPT)}"
    assert seen[0].route == "chat" and seen[0].max_new_tokens == 100 and seen[0].seed == 5
    assert seen[0].temperature == 0.5 and seen[0].messages[0]["content"] == PROMPT


def test_capacity_queues_excess_requests():
    n, capacity, latency = 12, 4, 0.15
    with FakeTGIServer(latency=latency, capacity=capacity, response_words=10) as srv:

        async def go():
            async with client(srv) as c:
                t0 = time.perf_counter()
                await asyncio.gather(*(c.chat_completion([{"role": "user", "content": f"p{i}"}]) for i in range(n)))
                return time.perf_counter() - t0

        elapsed = asyncio.run(go())
        stats = srv.stats()
    assert stats.max_active == capacity
    assert stats.max_in_flight == n  # all arrived at once; the excess queued
    assert elapsed >= (n / capacity) * latency * 0.95  # 3 waves: throughput bounded by capacity / latency
    assert elapsed < (n / capacity) * latency + 2.0


def test_max_concurrent_requests_rejects_with_429():
    with FakeTGIServer(latency=0.2, capacity=2, max_concurrent_requests=3, response_words=5) as srv:

        async def go():
            async with client(srv) as c:
                return await asyncio.gather(
                    *(c.chat_completion([{"role": "user", "content": f"p{i}"}]) for i in range(6)),
                    return_exceptions=True,
                )

        results = asyncio.run(go())
        stats = srv.stats()
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 3
    assert all(isinstance(e, HfHubHTTPError) and e.response.status_code == 429 for e in errors)
    assert stats.faults == {"overloaded": 3}


def test_status_faults_with_counts_and_retry_after():
    with FakeTGIServer(faults={"http_503": 1, "http_429": 1}, retry_after=2.5) as srv:

        async def go():
            out = []
            async with client(srv) as c:
                for _ in range(3):
                    try:
                        out.append(await c.chat_completion([{"role": "user", "content": "x"}]))
                    except HfHubHTTPError as exc:
                        out.append(exc)
            return out

        first, second, third = asyncio.run(go())
        stats = srv.stats()
    assert first.response.status_code == 503 and first.response.headers["retry-after"] == "2.5"
    assert second.response.status_code == 429 and second.response.headers["retry-after"] == "2.5"
    assert third.choices[0].message.content.startswith(CONTEXT_PREFIX)  # counts used up
    assert stats.faults == {"http_503": 1, "http_429": 1}
    assert stats.completed == 1


def test_tgi_error_payloads_map_to_huggingface_hub_errors():
    with FakeTGIServer(faults={"http_503": 1, "http_422": 1}, retry_after=None) as srv:

        async def go():
            out = []
            async with client(srv) as c:
                for _ in range(2):
                    try:
                        await c.text_generation("x")
                    except Exception as exc:  # noqa: BLE001
                        out.append(exc)
            return out

        overloaded, invalid = asyncio.run(go())
    assert isinstance(overloaded, OverloadedError)
    assert "retry-after" not in overloaded.__cause__.response.headers
    assert isinstance(invalid, ValidationError) and invalid.__cause__.response.status_code == 422


def test_body_faults():
    with FakeTGIServer() as srv:

        async def one(kind):
            srv.set_fault(kind, count=1)
            async with client(srv) as c:
                try:
                    return await c.chat_completion([{"role": "user", "content": PROMPT}])
                except Exception as exc:  # noqa: BLE001
                    return exc

        results = {kind: asyncio.run(one(kind)) for kind in ("drop", "garbage", "empty", "refusal", "no_prefix")}
        normal_after = chat(srv)  # every count was 1: back to normal
        stats = srv.stats()
    assert isinstance(results["drop"], httpx2.RemoteProtocolError)
    assert isinstance(results["garbage"], ValueError)  # json.JSONDecodeError
    assert results["empty"].choices[0].message.content == ""
    assert results["refusal"].choices[0].message.content == REFUSAL_TEXT
    no_prefix = results["no_prefix"].choices[0].message.content
    assert not no_prefix.startswith(CONTEXT_PREFIX)
    assert CONTEXT_PREFIX + no_prefix == normal_after.choices[0].message.content
    assert stats.faults == {"drop": 1, "garbage": 1, "empty": 1, "refusal": 1, "no_prefix": 1}


def test_timeout_fault_hangs_past_client_timeout_and_stop_is_quick():
    srv = FakeTGIServer(faults={"timeout": 1}, hang_seconds=30).start()
    try:

        async def go():
            async with client(srv, timeout=0.3) as c:
                t0 = time.perf_counter()
                with pytest.raises(InferenceTimeoutError):
                    await c.chat_completion([{"role": "user", "content": "x"}])
                return time.perf_counter() - t0

        assert 0.25 <= asyncio.run(go()) < 5
        assert srv.stats().faults == {"timeout": 1}
    finally:
        t0 = time.perf_counter()
        srv.stop()  # the hanging handler must not hold up shutdown
        assert time.perf_counter() - t0 < 5


def test_probabilistic_faults_are_seeded_per_prompt_and_attempt():
    def pattern(seed):
        with FakeTGIServer(seed=seed, faults={"http_500": 0.5}) as srv:

            async def go():
                async with client(srv) as c:
                    out = []
                    for i in range(30):
                        try:
                            await c.chat_completion([{"role": "user", "content": f"prompt {i}"}])
                            out.append(False)
                        except HfHubHTTPError as exc:
                            assert exc.response.status_code == 500
                            out.append(True)
                    return out

            result = asyncio.run(go())
            assert srv.stats().faults.get("http_500", 0) == sum(result)
            return result

    a, b, c = pattern(1), pattern(1), pattern(2)
    assert a == b  # deterministic with a seed
    assert a != c
    assert 5 <= sum(a) <= 25


def test_set_fault_validation_and_runtime_changes():
    srv = FakeTGIServer(faults={"garbage": Fault(probability=0.25, count=2)})
    assert srv.faults()["garbage"] == Fault(probability=0.25, count=2)
    srv.set_fault("garbage", count=0)
    assert srv.faults()["garbage"] == Fault(probability=0.25, count=0)
    srv.clear_faults()
    assert srv.faults() == {}
    with pytest.raises(ValueError, match="unknown fault kind"):
        srv.set_fault("explode", probability=0.1)
    with pytest.raises(ValueError, match="probability"):
        srv.set_fault("garbage", probability=1.5)
    assert set(FAULT_KINDS) >= {"http_503", "http_429", "timeout", "drop", "garbage", "empty", "refusal", "no_prefix"}


def test_outage_refuses_connections_then_recovers_on_same_port():
    with FakeTGIServer() as srv:
        port = srv.port
        assert chat(srv).choices[0].message.content
        srv.outage(0.8)
        assert not srv.listening
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        with pytest.raises(httpx2.ConnectError):
            chat(srv)
        deadline = time.monotonic() + 5
        while not srv.listening and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.listening and srv.port == port
        assert chat(srv).choices[0].message.content
        assert srv.stats().outages == 1


def test_outage_drops_open_keepalive_connections_and_can_end_early():
    with FakeTGIServer(latency=0.5) as srv:

        async def go():
            async with client(srv) as c:
                task = asyncio.ensure_future(c.chat_completion([{"role": "user", "content": "x"}]))
                await asyncio.sleep(0.2)  # the request is being processed on an open connection
                await asyncio.to_thread(srv.outage, 30)
                with pytest.raises(httpx2.TransportError):
                    await task
                await asyncio.to_thread(srv.end_outage)
                return await c.chat_completion([{"role": "user", "content": "y"}])

        out = asyncio.run(go())
    assert out.choices[0].message.content.startswith(CONTEXT_PREFIX)


def test_required_authorization_and_invalid_body():
    with FakeTGIServer(required_authorization="Bearer s3cret") as srv:

        async def go():
            async with AsyncInferenceClient(model=srv.url, provider="hf-inference", token="wrong") as c:
                with pytest.raises(HfHubHTTPError) as info:
                    await c.chat_completion([{"role": "user", "content": "x"}])
                assert info.value.response.status_code == 401
            async with AsyncInferenceClient(model=srv.url, provider="hf-inference", token="s3cret") as c:
                ok = await c.chat_completion([{"role": "user", "content": "x"}])
            async with httpx2.AsyncClient() as http:
                bad = await http.post(
                    srv.url + "/generate", content=b"not json", headers={"Authorization": "Bearer s3cret"}
                )
            return ok, bad

        ok, bad = asyncio.run(go())
        stats = srv.stats()
    assert ok.choices[0].message.content
    assert bad.status_code == 422 and bad.json()["error_type"] == "validation"
    assert stats.faults == {"unauthorized": 1}


def test_stats_are_thread_safe_snapshots():
    with FakeTGIServer(latency=0.01, capacity=4, response_words=5) as srv:
        snapshots = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                snapshots.append(srv.stats())

        thread = threading.Thread(target=reader)
        thread.start()

        async def go():
            async with client(srv) as c:
                await asyncio.gather(*(c.chat_completion([{"role": "user", "content": f"p{i % 5}"}]) for i in range(40)))

        asyncio.run(go())
        stop.set()
        thread.join()
        final = srv.stats()
        srv.reset_stats()
        after_reset = srv.stats()
    assert final.total_requests == 40 == final.completed
    assert sum(final.per_prompt.values()) == 40 and final.per_prompt[prompt_key("p0")] == 8
    assert snapshots and all(s.total_requests <= 40 for s in snapshots)
    assert all(sum(s.per_prompt.values()) <= s.generation_requests for s in snapshots)
    assert after_reset.total_requests == 0 and after_reset.per_prompt == {}
