"""TGIBackend through the real huggingface_hub.AsyncInferenceClient against FakeTGIServer."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import traceback

import pytest

from hf_context_synthesis.backends.errors import EndpointUnreachableError, ModelDiscoveryError
from hf_context_synthesis.backends.base import GenerationRequest, run_requests
from hf_context_synthesis.backends.retry import RetryPolicy, parse_retry_after
from hf_context_synthesis.backends.tgi import (
    FatalRequestError,
    RetryableError,
    TGIBackend,
    TGIBackendConfig,
    sanitize_url,
)
from hf_context_synthesis.testing.fake_tgi import FakePrompt, FakeTGIServer, count_tokens

SECRET = "hf_SuperSecretToken0123456789"


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch):
    """Tests decide what is sent: no locally saved token leaks in."""
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home-for-tests")


def req(i: int | str = 0, content: str | None = None, **kwargs) -> GenerationRequest:
    content = content or f"Question: what happened in year {i}?\nAnswer: the bridge opened in year {i}."
    return GenerationRequest(key=f"k{i}", messages=({"role": "user", "content": content},), **kwargs)


def backend(srv: FakeTGIServer, **kwargs) -> TGIBackend:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("timeout", 10.0)
    return TGIBackend(TGIBackendConfig(endpoint=srv.url, **kwargs))


def one(b: TGIBackend, request: GenerationRequest):
    async def go():
        try:
            t0 = time.perf_counter()
            result = await b.generate(request)
            return result, time.perf_counter() - t0
        finally:
            await b.aclose()

    return asyncio.run(go())


def reverse_responder(p: FakePrompt) -> str:
    return "Context: " + " ".join(reversed(p.prompt.split()))


def test_chat_api_returns_server_text_and_token_counts():
    with FakeTGIServer(responder=reverse_responder) as srv:
        request = req(1, max_new_tokens=500, seed=4, temperature=0.3)
        result, _ = one(backend(srv), request)
        stats = srv.stats()
    content = request.messages[0]["content"]
    assert result.ok and result.attempts == 1
    assert result.text == reverse_responder(FakePrompt(route="chat", prompt=content))
    assert result.tokens_in == count_tokens(content)
    assert result.tokens_out == count_tokens(result.text)
    assert result.extra["finish_reason"] == "stop"
    assert result.key == "k1"
    # one GET /info discovers the model name sent with the request (never a made-up one)
    assert stats.per_route == {"GET /info": 1, "POST /v1/chat/completions": 1}
    assert stats.prompt_count(content) == 1


def test_text_api_renders_chat_template_and_returns_details(tmp_path):
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    seen: list[FakePrompt] = []

    def responder(p: FakePrompt) -> str:
        seen.append(p)
        return "Context: rendered " + str(len(p.prompt))

    with FakeTGIServer(responder=responder) as srv:
        by_object = backend(srv, api="text", tokenizer=tokenizer)
        by_path = backend(srv, api="text", tokenizer=str(tmp_path / "tok"))
        request = req(2, max_new_tokens=300, temperature=0.0, seed=9)
        r1, _ = one(by_object, request)
        r2, _ = one(by_path, request)
        stats = srv.stats()
    rendered = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
    assert by_object.render_prompt(request) == rendered
    assert seen[0].route == "generate" and seen[0].prompt == rendered
    assert seen[0].max_new_tokens == 300 and seen[0].seed == 9
    assert r1.ok and r1.text == f"Context: rendered {len(rendered)}" and r2.text == r1.text
    assert r1.tokens_out == count_tokens(r1.text)
    assert r1.tokens_in == len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) > 0
    assert stats.per_route == {"POST /": 2}
    assert stats.prompt_count(rendered) == 2


def test_text_api_requires_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        TGIBackendConfig(endpoint="http://localhost:1", api="text")
    with pytest.raises(ValueError, match="api"):
        TGIBackendConfig(endpoint="http://localhost:1", api="completion")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http"):
        TGIBackendConfig(endpoint="localhost:8080")


def test_concurrency_is_bounded_by_max_concurrency():
    with FakeTGIServer(latency=0.05, capacity=100, response_words=20) as srv:
        b = backend(srv, max_concurrency=5)
        results = run_requests(b, [req(i) for i in range(40)])
        stats = srv.stats()
    assert all(r.ok for r in results) and [r.key for r in results] == [f"k{i}" for i in range(40)]
    assert stats.max_in_flight == 5  # reached, never exceeded
    assert b.max_concurrency == 5


def test_concurrency_bound_holds_for_direct_gather():
    with FakeTGIServer(latency=0.05, capacity=100, response_words=20) as srv:
        b = backend(srv, max_concurrency=3)

        async def go():
            try:
                return await asyncio.gather(*(b.generate(req(i)) for i in range(15)))
            finally:
                await b.aclose()

        results = asyncio.run(go())
        stats = srv.stats()
    assert all(r.ok for r in results)
    assert stats.max_in_flight == 3


@pytest.mark.parametrize("kind", ["http_503", "http_429"])
def test_overload_is_retried_and_retry_after_honoured(kind):
    with FakeTGIServer(faults={kind: 1}, retry_after=0.6) as srv:
        result, elapsed = one(backend(srv, backoff_base=0.001), req(0))
        stats = srv.stats()
    assert result.ok and result.attempts == 2
    assert stats.faults == {kind: 1} and stats.prompt_count(req(0).messages[0]["content"]) == 2
    assert 0.6 <= elapsed < 0.6 * 1.1 + 1.0  # waited the server's Retry-After (+ <= 10% jitter)


def test_without_retry_after_the_backoff_is_used():
    with FakeTGIServer(faults={"http_503": 2}, retry_after=None) as srv:
        result, elapsed = one(backend(srv, backoff_base=0.001, jitter=False), req(0))
    assert result.ok and result.attempts == 3
    assert elapsed < 0.5  # 1 ms + 2 ms of backoff, not the 0.6 s of the test above


@pytest.mark.parametrize("kind", ["drop", "garbage", "http_500"])
def test_dropped_connections_garbage_and_5xx_are_retried(kind):
    with FakeTGIServer(faults={kind: 2}) as srv:
        result, _ = one(backend(srv), req(0))
        stats = srv.stats()
    assert result.ok and result.text.startswith("Context: ")
    assert result.attempts == 3
    assert stats.faults == {kind: 2} and stats.completed == 1


def test_timeouts_are_retried():
    with FakeTGIServer(faults={"timeout": 1}, hang_seconds=20) as srv:
        result, elapsed = one(backend(srv, timeout=0.4), req(0))
    assert result.ok and result.attempts == 2
    assert 0.4 <= elapsed < 3


def test_retries_exhausted_returns_error_result_not_exception():
    with FakeTGIServer(faults={"http_500": 1.0}) as srv:
        result, _ = one(backend(srv, max_retries=3), req(0))
        stats = srv.stats()
    assert not result.ok and result.text is None
    assert result.attempts == 4
    assert "HTTP 500" in result.error and "after 4 attempts" in result.error
    assert stats.prompt_count(req(0).messages[0]["content"]) == 4


def test_connection_refused_exhausts_retries():
    with FakeTGIServer() as srv:
        url = srv.url
    b = TGIBackend(TGIBackendConfig(endpoint=url, max_retries=2, backoff_base=0.001))  # server gone
    result, _ = one(b, req(0))
    assert not result.ok and result.attempts == 3 and "connection error" in result.error


@pytest.mark.parametrize("api", ["chat", "text"])
def test_4xx_is_fatal_without_retry(api):
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    extra = {"tokenizer": make_tiny_tokenizer()} if api == "text" else {}
    with FakeTGIServer(faults={"http_422": 1}) as srv:
        result, _ = one(backend(srv, api=api, **extra), req(0))
        stats = srv.stats()
    assert not result.ok and result.attempts == 1
    assert "HTTP 422" in result.error and "validation" in result.error.lower()
    assert stats.generation_requests == 1


def test_text_api_overloaded_error_is_retried():
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    with FakeTGIServer(faults={"http_503": 1}, retry_after=0.2) as srv:
        result, elapsed = one(backend(srv, api="text", tokenizer=make_tiny_tokenizer()), req(0))
    assert result.ok and result.attempts == 2 and elapsed >= 0.2


def test_attempt_raises_classified_errors():
    with FakeTGIServer(faults={"http_429": 1, "http_422": 1}, retry_after=3) as srv:
        b = backend(srv)

        async def go():
            with pytest.raises(RetryableError) as retryable:
                await b.attempt(req(0))
            with pytest.raises(FatalRequestError) as fatal:
                await b.attempt(req(0))
            ok = await b.attempt(req(0))
            await b.aclose()
            return retryable.value, fatal.value, ok

        retryable, fatal, ok = asyncio.run(go())
    assert retryable.status == 429 and retryable.retry_after == 3.0 and retryable.reason.startswith("HTTP 429")
    assert fatal.status == 422
    assert ok.ok and ok.attempts == 1


def test_token_is_sent_but_never_logged_or_shown(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeTGIServer(required_authorization=f"Bearer {SECRET}", retry_after=0.01) as srv:
        b = backend(srv, token=SECRET, max_retries=2, timeout=0.3, headers={"X-Trace": "t"})
        for kind in ("http_503", "http_500", "garbage", "drop", "timeout"):
            srv.set_fault(kind, count=1)
        srv.hang_seconds = 5
        good = run_requests(b, [req(i) for i in range(6)])
        srv.set_fault("http_422", probability=1.0)
        fatal = run_requests(b, [req(99)])[0]
        srv.clear_faults()
        srv.set_fault("http_500", probability=1.0)
        exhausted = run_requests(b, [req(100)])[0]

        async def failing_attempt():
            with pytest.raises(RetryableError) as info:
                await b.attempt(req(101))
            await b.aclose()
            return info.value

        exc = asyncio.run(failing_attempt())
        stats = srv.stats()
    assert all(r.ok for r in good)  # the token was sent: the server requires it
    assert "unauthorized" not in stats.faults
    assert not fatal.ok and not exhausted.ok
    shown = [
        caplog.text,
        repr(b),
        repr(b.config),
        str(b.config),
        fatal.error,
        exhausted.error,
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(exc)),
    ]
    shown += [r.error or "" for r in good]
    assert caplog.text  # retries were logged
    for text in shown:
        assert SECRET not in text


def test_wrong_or_missing_token_is_fatal_401():
    with FakeTGIServer(required_authorization=f"Bearer {SECRET}") as srv:
        wrong, _ = one(backend(srv, token="hf_wrong"), req(0))
        none, _ = one(backend(srv, token=False), req(0))
        stats = srv.stats()
    for result in (wrong, none):
        assert not result.ok and result.attempts == 1 and "HTTP 401" in result.error
    assert stats.faults == {"unauthorized": 2}


def test_hub_token_goes_to_a_non_hub_endpoint_only_when_asked(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with FakeTGIServer(required_authorization=f"Bearer {SECRET}") as srv:
        implicit, _ = one(backend(srv), req(0))  # token=None: a loopback server is not a Hub host
        asked, _ = one(backend(srv, token=True), req(0))  # token=True: the Hub token, on purpose
        disabled, _ = one(backend(srv, token=False), req(0))
    assert asked.ok
    assert not implicit.ok and "HTTP 401" in implicit.error
    assert not disabled.ok and "HTTP 401" in disabled.error


def test_url_credentials_become_basic_auth_and_are_hidden(caplog):
    caplog.set_level(logging.DEBUG)
    basic = base64.b64encode(b"alice:pa55w0rd").decode()
    with FakeTGIServer(required_authorization=f"Basic {basic}", faults={"http_500": 1}) as srv:
        url = srv.url.replace("http://", "http://alice:pa55w0rd@")
        b = TGIBackend(TGIBackendConfig(endpoint=url, backoff_base=0.001))
        result, _ = one(b, req(0))
        model = asyncio.run(TGIBackend(TGIBackendConfig(endpoint=url)).model_id())
    assert result.ok and result.attempts == 2
    assert model == "fake-org/fake-tgi-model"
    for text in (caplog.text, repr(b), repr(b.config), b.safe_endpoint):
        assert "pa55w0rd" not in text
    with pytest.raises(ValueError, match="not both"):
        TGIBackendConfig(endpoint=url, token="hf_x")


def test_outage_then_recovery():
    with FakeTGIServer() as srv:
        b = backend(srv, backoff_base=0.2, backoff_max=0.4, max_retries=10)

        async def go():
            try:
                assert await b.health()
                await asyncio.to_thread(srv.outage, 1.0)
                healthy_during = await b.health()
                t0 = time.perf_counter()
                result = await b.generate(req(0))
                return healthy_during, result, time.perf_counter() - t0, await b.health()
            finally:
                await b.aclose()

        healthy_during, result, elapsed, healthy_after = asyncio.run(go())
    assert healthy_during is False and healthy_after is True
    assert result.ok and result.attempts >= 2
    assert elapsed >= 0.7


def test_model_id_sources():
    with FakeTGIServer(model_id="org/served-model") as srv:
        configured = asyncio.run(backend(srv, model="my/model").model_id())
        from_info = asyncio.run(backend(srv).model_id())
        info_requests = srv.stats().per_route.get("GET /info", 0)
        url = srv.url
    with pytest.raises(EndpointUnreachableError) as gone:  # never a URL as the model id
        asyncio.run(TGIBackend(TGIBackendConfig(endpoint=url + "/?key=abc", timeout=2)).model_id())
    assert configured == "my/model"
    assert from_info == "org/served-model" and info_requests == 1
    assert url in str(gone.value) and "key=abc" not in str(gone.value)  # named, sanitized


def test_backend_survives_successive_event_loops():
    with FakeTGIServer(response_words=10) as srv:
        b = backend(srv)
        first = run_requests(b, [req(1)])
        second = run_requests(b, [req(2)])  # a new asyncio.run loop: the client is rebuilt
    assert first[0].ok and second[0].ok


def test_generate_never_raises_on_unexpected_errors(monkeypatch):
    with FakeTGIServer() as srv:
        b = backend(srv)

        async def boom(request):
            raise RuntimeError(f"bug with {SECRET}")

        monkeypatch.setattr(b, "attempt", boom)
        b._secrets.append(SECRET)
        result, _ = one(b, req(0))
    assert not result.ok and "RuntimeError" in result.error and SECRET not in result.error


def test_stream_yields_all_results_with_mixed_faults():
    with FakeTGIServer(latency=0.01, capacity=8, seed=1, faults={"http_503": 0.2, "garbage": 0.1}, retry_after=0.01) as srv:
        b = backend(srv, max_concurrency=8)
        results = run_requests(b, [req(i) for i in range(60)])
        stats = srv.stats()
    assert all(r.ok for r in results)
    assert sum(r.attempts - 1 for r in results) == sum(stats.faults.values()) > 0
    assert stats.completed == 60


def test_sanitize_url_and_retry_helpers():
    assert sanitize_url("https://user:pw@tgi.example:8080/v1?key=abc#x") == "https://tgi.example:8080/v1"
    assert sanitize_url("http://host") == "http://host"
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0 and parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0, jitter=True)
    waits = [policy.delay(4) for _ in range(200)]
    assert all(0 <= w <= 5.0 for w in waits) and max(waits) > 2.5  # full jitter up to min(5, 8)
    assert RetryPolicy(backoff_base=1.0, backoff_max=100, jitter=False).delay(3) == 4.0
    assert 7.0 <= policy.delay(1, retry_after=7.0) <= 7.7
    assert RetryPolicy(retry_after_max=2.0, jitter=False).delay(1, retry_after=60.0) == 2.0
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


# ---------------------------------------------------------------- real-server behaviour (issue 9)


def test_openai_server_model_is_discovered_from_v1_models():
    with FakeTGIServer(protocol="openai", model_id="org/only") as srv:
        b = backend(srv)
        result, _ = one(b, req(0))
        stats = srv.stats()
    assert result.ok and b._model_id == "org/only"
    # no /info on this server (404): /v1/models named the model; the one chat request carried it
    assert stats.per_route == {"GET /info": 1, "GET /v1/models": 1, "POST /v1/chat/completions": 1}


def test_several_served_models_need_generator_model():
    with FakeTGIServer(protocol="openai", served_models=["org/a", "org/b"]) as srv:
        with pytest.raises(ModelDiscoveryError, match="org/a, org/b.*generator_model"):
            asyncio.run(backend(srv).model_id())
        result, _ = one(backend(srv), req(0))
        chosen, _ = one(backend(srv, model="org/b"), req(1))
        stats = srv.stats()
    assert not result.ok and result.attempts == 1 and "org/a, org/b" in result.error
    assert chosen.ok
    assert stats.per_route["POST /v1/chat/completions"] == 1  # no request with a made-up name


@pytest.mark.parametrize("style", ["tgi", "openai", "fastapi", "text"])
def test_error_bodies_are_shown_as_the_server_wrote_them(style):
    with FakeTGIServer(error_style=style, faults={"http_422": 1}) as srv:
        result, _ = one(backend(srv), req(0))
    assert not result.ok and result.attempts == 1  # 422 is not retried
    assert result.error == "HTTP 422: Input validation error: fake invalid request"


def test_wrong_model_name_is_rejected_with_the_server_s_words_not_retried():
    with FakeTGIServer(protocol="openai", model_id="org/only", error_style="fastapi") as srv:
        result, _ = one(backend(srv, model="tgi"), req(0))
    assert not result.ok and result.attempts == 1
    assert result.error == "HTTP 400: Server is pinned to 'org/only'; requested 'tgi'."


def test_non_retryable_statuses():
    from hf_context_synthesis.backends.retry import is_retryable_status

    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 413, 422))
    assert all(is_retryable_status(s) for s in (408, 429, 500, 502, 503, 504))


def test_text_api_against_an_openai_server_stops_at_the_first_failure():
    from hf_context_synthesis.backends.errors import EndpointRouteError
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    with FakeTGIServer(protocol="openai", error_style="fastapi") as srv:
        b = backend(srv, api="text", tokenizer=make_tiny_tokenizer(), max_concurrency=1)
        with pytest.raises(EndpointRouteError, match="api='chat'") as info:
            run_requests(b, [req(i) for i in range(20)])
        stats = srv.stats()
    assert stats.total_requests == 1 and "no POST /" in str(info.value) and "\n" not in str(info.value)


def test_a_huge_body_fails_its_request_quickly_without_retry():
    with FakeTGIServer(faults={"huge": 1}, huge_bytes=50 * 1024 * 1024) as srv:
        b = backend(srv)  # default max_response_bytes: 16 MiB
        result, elapsed = one(b, req(0))
        small = backend(srv, max_response_bytes=4096)
        normal, _ = one(small, req(1))  # an ordinary answer fits a small cap
    assert not result.ok and result.attempts == 1 and "max_response_bytes" in result.error
    assert elapsed < 20
    assert normal.ok


def test_an_attempt_is_bounded_in_total_time():
    with FakeTGIServer(faults={"timeout": 1}, hang_seconds=5.0) as srv:
        result, elapsed = one(backend(srv, timeout=0.5, max_retries=0), req(0))
    assert not result.ok and "timeout" in result.error and elapsed < 3


def test_endpoint_must_have_a_scheme_and_a_host_and_never_echoes_a_password():
    from hf_context_synthesis import SynthesisConfig

    for bad in ("http://", "https://", "localhost:8080", "http://:8080"):
        with pytest.raises(ValueError, match="endpoint"):
            SynthesisConfig(endpoint=bad)
        with pytest.raises(ValueError, match="endpoint"):
            TGIBackendConfig(endpoint=bad)
    with pytest.raises(ValueError) as info:
        SynthesisConfig(endpoint="alice:pa55w0rd@tgi.example:8080")
    assert "pa55w0rd" not in str(info.value) and "tgi.example:8080" in str(info.value)
    with pytest.raises(ValueError, match="endpoint"):
        SynthesisConfig(endpoint=["http://ok:1", "http://"])


def test_failure_keys_group_varying_messages():
    from hf_context_synthesis.backends.errors import failure_key, server_error_message

    reasons = {failure_key(f"HTTP 422: Input validation error: inputs must have less than 4096 tokens. Given: {n} "
                           f"(after {1 + n % 3} attempts)") for n in range(5000, 6000)}
    assert reasons == {"HTTP 422: Input validation error: inputs must have less than <n> tokens. Given: <n>"}
    assert failure_key("HTTP 400: Server is pinned to '/m/v2-1'.") == "HTTP 400: Server is pinned to '/m/v2-1'."
    long = server_error_message("x " * 5000)
    assert len(long) <= 1000 and "\n" not in server_error_message('{"detail": "a\\nb"}')
    assert server_error_message('{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}') == (
        "messages: field required")
