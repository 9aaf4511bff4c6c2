"""A loopback HTTP server that speaks Text Generation Inference's protocol, for tests and benchmarks.

:class:`FakeTGIServer` runs an :mod:`aiohttp` application in a background thread with its own event
loop, so synchronous tests can use it as a context manager::

    with FakeTGIServer(latency=0.05, capacity=8) as srv:
        backend = TGIBackend(TGIBackendConfig(endpoint=srv.url))
        ...
        assert srv.stats().max_in_flight <= 8

Routes (the subset of TGI that :class:`huggingface_hub.AsyncInferenceClient` uses):

* ``POST /`` and ``POST /generate``: ``{"inputs", "parameters"}`` -> ``{"generated_text", "details"}``
  (``details`` only when ``parameters.details`` is true, as in TGI). Streaming is not implemented.
* ``POST /v1/chat/completions``: OpenAI chat schema with ``usage`` token counts.
* ``GET /info`` (``model_id``, ``max_concurrent_requests``, ``max_input_tokens``, ...), ``GET /v1/models``
  (OpenAI's model list) and ``GET /health``.

With ``protocol="openai"`` only ``/v1/chat/completions``, ``/v1/models`` and ``/health`` exist (like
``transformers serve`` or vLLM) and a chat request naming another model than the served one is
refused (``400 Server is pinned to ...``). Unknown routes answer ``404`` in the server's
``error_style`` (TGI, OpenAI, FastAPI or plain text bodies) and are counted too.

Behaviour: every generation request waits for one of ``capacity`` slots (excess requests queue, like
TGI's continuous batcher), holds it for ``latency`` seconds, then answers; the server's maximum
throughput is therefore ``capacity / latency`` requests per second. Response text is deterministic: a
word stream seeded by a hash of (server seed, prompt, request seed) that starts with ``"Context: "``
and embeds the prompt's ``Question:``/``Answer:``-style lines verbatim (see ``snippet_labels``), or
whatever a ``responder`` callable returns. Token counts are approximated as ``1.3`` tokens per word.

Faults (:data:`FAULT_KINDS`) are injected per request, either by probability or by an explicit count
(counts are used up first), and can be changed at runtime with :meth:`FakeTGIServer.set_fault`;
:meth:`FakeTGIServer.outage` stops listening (and drops open connections) for a while, then listens
again on the same port. :meth:`FakeTGIServer.stats` returns a consistent snapshot of the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

#: Fault kinds understood by :meth:`FakeTGIServer.set_fault`.
#:
#: * ``http_503`` / ``http_429``: error status with a ``Retry-After`` header (``retry_after`` seconds).
#: * ``http_500``: internal error without ``Retry-After``.
#: * ``http_422``: TGI input-validation error (a non-retryable client error).
#: * ``http_401``: authentication error (with ``echo_authorization``, the message quotes the header).
#: * ``timeout``: the server hangs for ``hang_seconds`` (past the client's timeout) before answering.
#: * ``drop``: headers and half of the body are sent, then the connection is closed.
#: * ``garbage``: a 200 response whose body is not JSON.
#: * ``empty``: an empty generation.
#: * ``refusal``: the generation is :data:`REFUSAL_TEXT`.
#: * ``no_prefix``: a normal generation without the leading ``"Context: "``.
#: * ``huge``: a 200 response streaming ``huge_bytes`` bytes (chunked, no ``Content-Length``).
FAULT_KINDS: tuple[str, ...] = (
    "http_503",
    "http_429",
    "http_500",
    "http_422",
    "http_401",
    "timeout",
    "drop",
    "garbage",
    "empty",
    "refusal",
    "no_prefix",
    "huge",
)

#: Error body styles of :class:`FakeTGIServer` (``error_style``): TGI ``{"error", "error_type"}``,
#: OpenAI ``{"error": {"message", "type"}}``, FastAPI ``{"detail"}`` (transformers serve, vLLM) and
#: plain text.
ERROR_STYLES: tuple[str, ...] = ("tgi", "openai", "fastapi", "text")

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
CONTEXT_PREFIX = "Context: "
TOKENS_PER_WORD = 1.3

GENERATION_ROUTES = ("/", "/generate", "/v1/chat/completions")

_VOCAB = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no what up out about into than "
    "them can only other new some could time these two may then do first any my now such like our over man "
    "me even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see men work "
    "long get here between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three river valley council harbour treaty archive "
    "village engineer library festival railway museum province record survey chapter bridge market journal"
).split()


def prompt_key(prompt: str) -> str:
    """The key under which :attr:`FakeStats.per_prompt` counts a prompt (a short SHA-256 hex digest).

    For ``/v1/chat/completions`` the prompt is the messages' contents joined by newlines (just the
    content for a single user message); for ``/generate`` it is ``inputs``.
    """
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def count_tokens(text: str) -> int:
    """The fake server's token count: ``ceil(1.3 * words)``."""
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


@dataclass(frozen=True)
class FakePrompt:
    """What a :attr:`FakeTGIServer.responder` receives.

    Args:
        route: ``"chat"`` or ``"generate"``.
        prompt: The prompt text (see :func:`prompt_key`).
        messages: The chat messages (empty for ``generate``).
        max_new_tokens: ``max_tokens`` / ``max_new_tokens`` from the request, if any.
        seed: The request's sampling seed, if any.
        temperature: The request's temperature, if any.
    """

    route: str
    prompt: str
    messages: tuple[dict[str, Any], ...] = ()
    max_new_tokens: int | None = None
    seed: int | None = None
    temperature: float | None = None


@dataclass
class Fault:
    """How often a fault fires: ``count`` next requests for sure, then with ``probability``."""

    probability: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"fault probability must be in [0, 1], got {self.probability}")
        if self.count < 0:
            raise ValueError(f"fault count must be >= 0, got {self.count}")


@dataclass(frozen=True)
class FakeStats:
    """A snapshot of a :class:`FakeTGIServer`'s counters.

    Args:
        total_requests: All HTTP requests that reached a handler (all routes).
        per_route: ``"POST /v1/chat/completions"`` style keys -> count.
        per_prompt: :func:`prompt_key` -> number of generation requests with that prompt.
        faults: Fault kind -> number of times injected (``"overloaded"`` counts rejections above
            ``max_concurrent_requests``, ``"unauthorized"`` requests without the required authorization).
        completed: Generation requests answered normally (200 with a well-formed body).
        max_in_flight: Most generation requests being handled at once (queued or processing).
        max_active: Most generation requests holding a capacity slot at once (<= capacity).
        outages: Number of outages started.
    """

    total_requests: int
    per_route: dict[str, int]
    per_prompt: dict[str, int]
    faults: dict[str, int]
    completed: int
    max_in_flight: int
    max_active: int
    outages: int

    @property
    def generation_requests(self) -> int:
        """Requests to the generation routes."""
        return sum(n for k, n in self.per_route.items() if k.split(" ", 1)[-1] in GENERATION_ROUTES)

    def prompt_count(self, prompt: str) -> int:
        """How many times ``prompt`` was requested."""
        return self.per_prompt.get(prompt_key(prompt), 0)


def _snippet_regex(labels: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(label) for label in labels)
    label = rf"[ \t>#*_-]*(?:{alternatives})[ \t*_]*:"
    return re.compile(
        rf"^{label}[ \t]*(?P<text>.*?)(?=\n[ \t]*\n|\n{label}|\Z)",
        re.MULTILINE | re.DOTALL | re.IGNORECASE,
    )


class FakeTGIServer:
    """A TGI-protocol test server on ``127.0.0.1`` (see the module docstring).

    Args:
        latency: Seconds each generation request holds a capacity slot.
        capacity: Generation requests processed concurrently (the batch size ``B``).
        seed: Seeds the response text and the probabilistic faults.
        model_id: Reported by ``/info`` and in chat responses.
        response_words: Words per default response (before ``max_new_tokens`` truncation).
        responder: ``FakePrompt -> str`` replacing the default text generator.
        snippet_labels: Line labels whose text the default responder copies verbatim into its output.
        faults: Initial faults: kind -> :class:`Fault`, or a float (probability) or int (count).
        retry_after: ``Retry-After`` seconds sent with ``http_503``/``http_429`` (``None``: no header).
        hang_seconds: How long a ``timeout`` fault hangs before answering.
        max_concurrent_requests: Like TGI's flag: in-flight generation requests above this are
            answered ``429`` (counted as fault ``"overloaded"``); reported by ``/info``.
        details_tokens: Include one entry per generated token in ``details.tokens`` (as real TGI
            does; off by default because it makes responses large).
        required_authorization: If set, every request must carry exactly this ``Authorization``
            header value (e.g. ``"Bearer hf_xxx"``), else it gets ``401`` (counted as fault
            ``"unauthorized"``), like a protected Inference Endpoint.
        protocol: ``"tgi"`` (all routes) or ``"openai"`` (only ``/v1/chat/completions``,
            ``/v1/models`` and ``/health``, like ``transformers serve`` or vLLM: no ``/info``, no ``/``).
        served_models: Model ids listed by ``GET /v1/models`` (default: ``[model_id]``).
        error_style: How error bodies are written, one of :data:`ERROR_STYLES`.
        huge_bytes: Body size of the ``huge`` fault.
        max_input_tokens / max_total_tokens: The context window ``/info`` reports.
        echo_authorization: Like some careless servers, write the ``Authorization`` header it got
            into the ``401`` error message (to test that credentials are redacted everywhere).
        port: Port to bind (``0``: any free port; kept across outages).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        capacity: int = 8,
        seed: int = 0,
        model_id: str = "fake-org/fake-tgi-model",
        response_words: int = 200,
        responder: Callable[[FakePrompt], str] | None = None,
        snippet_labels: Sequence[str] = ("Question", "Instruction", "Query", "Answer", "Response", "Output"),
        faults: Mapping[str, Fault | float | int] | None = None,
        retry_after: float | None = 1.0,
        hang_seconds: float = 30.0,
        max_concurrent_requests: int = 1024,
        details_tokens: bool = False,
        required_authorization: str | None = None,
        echo_authorization: bool = False,
        port: int = 0,
        protocol: str = "tgi",
        served_models: Sequence[str] | None = None,
        error_style: str = "tgi",
        huge_bytes: int = 60 * 1024 * 1024,
        max_input_tokens: int = 32768,
        max_total_tokens: int = 65536,
    ) -> None:
        if protocol not in ("tgi", "openai"):
            raise ValueError(f"protocol must be 'tgi' or 'openai', got {protocol!r}")
        if error_style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {ERROR_STYLES}, got {error_style!r}")
        self.protocol = protocol
        self.served_models = list(served_models) if served_models is not None else [model_id]
        self.error_style = error_style
        self.huge_bytes = int(huge_bytes)
        self.max_input_tokens = int(max_input_tokens)
        self.max_total_tokens = int(max_total_tokens)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        self.latency = float(latency)
        self.capacity = int(capacity)
        self.seed = seed
        self.model_id = model_id
        self.response_words = int(response_words)
        self.responder = responder
        self.snippet_regex = _snippet_regex(snippet_labels)
        self.retry_after = retry_after
        self.hang_seconds = float(hang_seconds)
        self.max_concurrent_requests = int(max_concurrent_requests)
        self.details_tokens = details_tokens
        self.required_authorization = required_authorization
        self.echo_authorization = echo_authorization
        self._requested_port = port

        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        for kind, spec in (faults or {}).items():
            self._set_fault_locked(kind, spec)
        self._reset_counters_locked()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stopping: asyncio.Event | None = None
        self._outage_task: asyncio.Task[None] | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``), valid once started."""
        if self._port is None:
            raise RuntimeError("FakeTGIServer is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeTGIServer is not started")
        return self._port

    def start(self) -> "FakeTGIServer":
        """Start the server thread and wait until it listens."""
        if self._thread is not None:
            raise RuntimeError("FakeTGIServer already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FakeTGIServer", daemon=True)
        self._thread.start()
        try:
            self._call(self._astart(), timeout=30)
        except BaseException:
            self._shutdown_thread()
            raise
        logger.debug("FakeTGIServer listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close all connections and join the thread."""
        if self._thread is None:
            return
        try:
            self._call(self._astop(), timeout=30)
        finally:
            self._shutdown_thread()

    def __enter__(self) -> "FakeTGIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _shutdown_thread(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._thread = None
        self._loop = None

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        if self._loop is None:
            raise RuntimeError("FakeTGIServer is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _astart(self) -> None:
        self._slots = asyncio.Semaphore(self.capacity)
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._unrouted])
        if self.protocol == "tgi":
            app.router.add_post("/", self._handle_generate)
            app.router.add_post("/generate", self._handle_generate)
            app.router.add_get("/info", self._handle_info)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen(self._requested_port)

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        self._port = self._site.port

    async def _unlisten(self) -> None:
        """Stop accepting connections and drop the open ones."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        assert self._runner is not None and self._runner.server is not None
        for handler in self._runner.server.connections:
            handler.force_close()

    async def _astop(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        if self._outage_task is not None:
            self._outage_task.cancel()
        await self._runner.cleanup()

    # ------------------------------------------------------------------ runtime controls

    def set_fault(self, kind: str, probability: float | None = None, count: int | None = None) -> None:
        """Set ``kind``'s probability and/or remaining count (``None`` leaves that part unchanged)."""
        with self._lock:
            current = self._faults.get(kind, Fault())
            self._set_fault_locked(
                kind,
                Fault(
                    probability=current.probability if probability is None else probability,
                    count=current.count if count is None else count,
                ),
            )

    def clear_faults(self) -> None:
        """Remove every fault (the counters are kept)."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> dict[str, Fault]:
        """A copy of the current fault settings."""
        with self._lock:
            return {k: Fault(v.probability, v.count) for k, v in self._faults.items()}

    def _set_fault_locked(self, kind: str, spec: Fault | float | int) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if isinstance(spec, Fault):
            fault = Fault(spec.probability, spec.count)
        elif isinstance(spec, bool):
            raise TypeError("fault spec must be a Fault, a float probability or an int count")
        elif isinstance(spec, int):
            fault = Fault(count=spec)
        elif isinstance(spec, float):
            fault = Fault(probability=spec)
        else:
            raise TypeError("fault spec must be a Fault, a float probability or an int count")
        self._faults[kind] = fault

    def outage(self, seconds: float) -> None:
        """Stop listening and drop all open connections for ``seconds``, then listen again on the same port.

        Returns once the server has stopped listening (the restart happens in the background).
        """
        if seconds <= 0:
            raise ValueError("outage seconds must be > 0")
        self._call(self._begin_outage(seconds), timeout=30)

    def end_outage(self) -> None:
        """End a running outage now (no-op if none)."""
        self._call(self._end_outage_now(), timeout=30)

    @property
    def listening(self) -> bool:
        """Whether the server accepts connections (``False`` during an outage)."""
        return self._site is not None

    async def _begin_outage(self, seconds: float) -> None:
        with self._lock:
            self._outages += 1
        if self._outage_task is not None:
            self._outage_task.cancel()
        if self._site is not None:
            await self._unlisten()
        self._outage_task = asyncio.ensure_future(self._restart_after(seconds))

    async def _restart_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._listen(self.port)
        self._outage_task = None

    async def _end_outage_now(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
            self._outage_task = None
        if self._site is None:
            await self._listen(self.port)

    # ------------------------------------------------------------------ counters

    def _reset_counters_locked(self) -> None:
        self._total = 0
        self._per_route: Counter[str] = Counter()
        self._per_prompt: Counter[str] = Counter()
        self._fault_counts: Counter[str] = Counter()
        self._completed = 0
        self._in_flight = 0
        self._active = 0
        self._max_in_flight = 0
        self._max_active = 0
        self._outages = 0

    def reset_stats(self) -> None:
        """Zero all counters (faults settings are kept)."""
        with self._lock:
            in_flight, active = self._in_flight, self._active
            self._reset_counters_locked()
            self._in_flight, self._active = in_flight, active

    def stats(self) -> FakeStats:
        """A consistent, thread-safe snapshot of the counters."""
        with self._lock:
            return FakeStats(
                total_requests=self._total,
                per_route=dict(self._per_route),
                per_prompt=dict(self._per_prompt),
                faults=dict(self._fault_counts),
                completed=self._completed,
                max_in_flight=self._max_in_flight,
                max_active=self._max_active,
                outages=self._outages,
            )

    def _count_request(self, request: web.Request) -> web.Response | None:
        """Count a request; return a 401 response if it lacks the required authorization."""
        with self._lock:
            self._total += 1
            self._per_route[f"{request.method} {request.path}"] += 1
            if self.required_authorization is not None:
                if request.headers.get("Authorization") != self.required_authorization:
                    self._fault_counts["unauthorized"] += 1
                    message = self._unauthorized_message(request)
                    return web.json_response({"error": message, "error_type": "authentication"}, status=401)
        return None

    def _unauthorized_message(self, request: web.Request) -> str:
        if not self.echo_authorization:
            return "Unauthorized"
        return f"Unauthorized: invalid credentials in header Authorization: {request.headers.get('Authorization')}"

    # ------------------------------------------------------------------ text

    def _rng(self, prompt: FakePrompt) -> random.Random:
        material = f"{self.seed}\x00{prompt.seed}\x00{prompt.prompt}".encode()
        return random.Random(hashlib.sha256(material).digest())

    def default_response(self, prompt: FakePrompt) -> str:
        """The default responder: ``"Context: "`` + a hash-seeded word stream with the prompt's snippets."""
        rng = self._rng(prompt)
        snippets: list[str] = []
        for match in self.snippet_regex.finditer(prompt.prompt):
            text = match.group("text").strip()
            if text and text not in snippets:
                snippets.append(text)
        snippet_words = [s.split() for s in snippets]
        filler = max(0, self.response_words - sum(len(w) for w in snippet_words))
        pieces = len(snippet_words) + 1
        words: list[str] = []
        for i in range(pieces):
            n = filler // pieces + (1 if i < filler % pieces else 0)
            words.extend(_sentences(rng, n))
            if i < len(snippet_words):
                words.extend(snippet_words[i])
        return CONTEXT_PREFIX + " ".join(words)

    def _generate_text(self, prompt: FakePrompt, fault: str | None) -> tuple[str, str]:
        """Return ``(text, finish_reason)`` where finish_reason is ``"length"`` or ``"stop"``."""
        if fault == "empty":
            return "", "stop"
        if fault == "refusal":
            return REFUSAL_TEXT, "stop"
        text = self.responder(prompt) if self.responder is not None else self.default_response(prompt)
        if fault == "no_prefix" and text.startswith(CONTEXT_PREFIX):
            text = text[len(CONTEXT_PREFIX) :]
        finish = "stop"
        if prompt.max_new_tokens is not None:
            max_words = max(1, int(prompt.max_new_tokens / TOKENS_PER_WORD))
            words = text.split(" ")
            if len(words) > max_words:
                text = " ".join(words[:max_words])
                finish = "length"
        return text, finish

    # ------------------------------------------------------------------ fault selection

    def _pick_fault(self, key: str, nth: int) -> str | None:
        with self._lock:
            for kind, fault in self._faults.items():
                if fault.count > 0:
                    fault.count -= 1
                    self._fault_counts[kind] += 1
                    return kind
            probabilistic = [(k, f.probability) for k, f in self._faults.items() if f.probability > 0]
        if not probabilistic:
            return None
        # Seeded per (prompt, attempt number): deterministic whatever the arrival order.
        rng = random.Random(f"{self.seed}\x00{key}\x00{nth}")
        for kind, probability in probabilistic:
            if rng.random() < probability:
                with self._lock:
                    self._fault_counts[kind] += 1
                return kind
        return None

    # ------------------------------------------------------------------ handlers

    async def _handle_info(self, request: web.Request) -> web.Response:
        denied = self._count_request(request)
        if denied is not None:
            return denied
        return web.json_response(
            {
                "model_id": self.model_id,
                "model_sha": None,
                "model_dtype": "torch.float16",
                "model_device_type": "cpu",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "fake",
                "sha": None,
                "docker_label": None,
                "fake_capacity": self.capacity,
                "fake_latency": self.latency,
            }
        )

    @web.middleware
    async def _unrouted(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Requests to routes this server lacks are counted too, and answered in its error style."""
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            with self._lock:
                self._total += 1
                self._per_route[f"{request.method} {request.path}"] += 1
            return self._error(exc.status, exc.reason, "not_found")

    def _error(self, status: int, message: str, error_type: str) -> web.Response:
        """An error response in this server's :data:`ERROR_STYLES` style."""
        if self.error_style == "openai":
            payload = {"error": {"message": message, "type": error_type, "param": None, "code": status}}
            return web.json_response(payload, status=status)
        if self.error_style == "fastapi":
            return web.json_response({"detail": message}, status=status)
        if self.error_style == "text":
            return web.Response(status=status, text=message, content_type="text/plain")
        return _error(status, message, error_type)

    async def _handle_models(self, request: web.Request) -> web.Response:
        denied = self._count_request(request)
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.served_models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_health(self, request: web.Request) -> web.Response:
        denied = self._count_request(request)
        if denied is not None:
            return denied
        return web.Response(status=200)

    async def _handle_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_generation(request, "generate")

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_generation(request, "chat")

    async def _handle_generation(self, request: web.Request, route: str) -> web.StreamResponse:
        denied = self._count_request(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
            prompt = _parse_prompt(body, route)
        except (ValueError, TypeError, KeyError) as exc:
            return self._error(422, f"Input validation error: {exc}", "validation")

        if self.protocol == "openai" and route == "chat":
            asked = body.get("model")
            if asked not in self.served_models:  # like transformers serve / vLLM: the name must be right
                if len(self.served_models) == 1:
                    return self._error(400, f"Server is pinned to '{self.served_models[0]}'; requested '{asked}'.",
                                       "invalid_request_error")
                return self._error(404, f"The model `{asked}` does not exist.", "invalid_request_error")
        key = prompt_key(prompt.prompt)
        with self._lock:
            self._per_prompt[key] += 1
            nth = self._per_prompt[key]
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            overloaded = self._in_flight > self.max_concurrent_requests
            if overloaded:
                self._fault_counts["overloaded"] += 1
        try:
            if overloaded:
                return self._error(429, "Model is overloaded", "overloaded")
            fault = self._pick_fault(key, nth)
            if fault in ("http_503", "http_429"):
                response = self._error(int(fault[5:]), "Model is overloaded", "overloaded")
                if self.retry_after is not None:
                    value = self.retry_after
                    response.headers["Retry-After"] = str(int(value)) if float(value).is_integer() else str(value)
                return response
            if fault == "http_500":
                return self._error(500, "Request failed during generation: fake internal error", "generation")
            if fault == "http_422":
                return self._error(422, "Input validation error: fake invalid request", "validation")
            if fault == "http_401":
                return self._error(401, self._unauthorized_message(request), "authentication")
            if fault == "timeout":
                await self._sleep_unless_stopping(self.hang_seconds)
                fault = None  # answer normally if the client is still there

            assert self._slots is not None
            async with self._slots:
                with self._lock:
                    self._active += 1
                    self._max_active = max(self._max_active, self._active)
                try:
                    await self._sleep_unless_stopping(self.latency)
                finally:
                    with self._lock:
                        self._active -= 1

            if fault == "huge":
                return await self._stream_huge(request)
            if fault == "garbage":
                return web.Response(
                    status=200, body=b"<html><body>502 upstream garbage", content_type="application/json"
                )
            text, finish = self._generate_text(prompt, fault)
            payload = self._chat_payload(prompt, text, finish) if route == "chat" else self._generate_payload(
                body, prompt, text, finish
            )
            data = json.dumps(payload).encode()
            if fault == "drop":
                return await _drop_mid_body(request, data)
            with self._lock:
                self._completed += 1
            return web.Response(status=200, body=data, content_type="application/json")
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _stream_huge(self, request: web.Request) -> web.StreamResponse:
        """The ``huge`` fault: a JSON-looking body of ``huge_bytes`` bytes, chunked."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        chunk = b"x" * (1 << 20)
        try:
            await response.prepare(request)
            await response.write(b'{"generated_text": "')
            sent = 0
            while sent < self.huge_bytes:
                piece = chunk[: self.huge_bytes - sent]
                await response.write(piece)
                sent += len(piece)
            await response.write(b'"}')
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client gave up on the body, as it should
        return response

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        if seconds <= 0:
            return
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def _chat_payload(self, prompt: FakePrompt, text: str, finish: str) -> dict[str, Any]:
        prompt_tokens = count_tokens(prompt.prompt)
        completion_tokens = count_tokens(text)
        return {
            "object": "chat.completion",
            "id": "",
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": "fake-tgi",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _generate_payload(self, body: dict[str, Any], prompt: FakePrompt, text: str, finish: str) -> dict[str, Any]:
        parameters = body.get("parameters") or {}
        generated = prompt.prompt + text if parameters.get("return_full_text") else text
        payload: dict[str, Any] = {"generated_text": generated}
        if parameters.get("details"):
            n_tokens = count_tokens(text)
            tokens: list[dict[str, Any]] = []
            if self.details_tokens:
                tokens = [
                    {"id": 1000 + i, "text": f" t{i}", "logprob": -1.0, "special": False} for i in range(n_tokens)
                ]
            payload["details"] = {
                "finish_reason": "length" if finish == "length" else "eos_token",
                "generated_tokens": n_tokens,
                "seed": prompt.seed,
                "prefill": [],
                "tokens": tokens,
            }
        return payload


def _sentences(rng: random.Random, n: int) -> list[str]:
    """``n`` words as sentences (capitalised first word, period every 8-15 words)."""
    words = rng.choices(_VOCAB, k=n)
    i = 0
    while i < n:
        words[i] = words[i].capitalize()
        end = min(n, i + rng.randint(8, 15))
        words[end - 1] += "."
        i = end
    return words


def _parse_prompt(body: Any, route: str) -> FakePrompt:
    if not isinstance(body, dict):
        raise TypeError("request body must be a JSON object")
    if route == "chat":
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        if body.get("stream"):
            raise ValueError("streaming is not supported by FakeTGIServer")
        contents = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            contents.append(content or "")
        return FakePrompt(
            route="chat",
            prompt="\n".join(contents),
            messages=tuple(messages),
            max_new_tokens=body.get("max_tokens"),
            seed=body.get("seed"),
            temperature=body.get("temperature"),
        )
    inputs = body["inputs"]
    if not isinstance(inputs, str):
        raise TypeError("inputs must be a string")
    if body.get("stream"):
        raise ValueError("streaming is not supported by FakeTGIServer")
    parameters = body.get("parameters") or {}
    return FakePrompt(
        route="generate",
        prompt=inputs,
        max_new_tokens=parameters.get("max_new_tokens"),
        seed=parameters.get("seed"),
        temperature=parameters.get("temperature"),
    )


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


async def _drop_mid_body(request: web.Request, data: bytes) -> web.StreamResponse:
    """Send the headers and half of ``data``, then close the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(data)
    try:
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        return response  # the client already gave up (e.g. its timeout): nothing left to drop
    if request.protocol is not None:
        request.protocol.force_close()
    elif request.transport is not None:
        request.transport.close()
    return response


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_context_synthesis.testing.fake_tgi``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--response-words", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = FakeTGIServer(
        latency=args.latency,
        capacity=args.capacity,
        response_words=args.response_words,
        seed=args.seed,
        port=args.port,
    )
    with server:
        logger.warning("FakeTGIServer serving on %s (Ctrl-C to stop)", server.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main())
