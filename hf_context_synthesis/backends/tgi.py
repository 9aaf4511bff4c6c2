"""Generation through a Text Generation Inference (TGI) server with ``huggingface_hub.AsyncInferenceClient``.

:class:`TGIBackend` sends each :class:`~hf_context_synthesis.backends.base.GenerationRequest` to a TGI
endpoint (or any server speaking TGI's / OpenAI's chat protocol, including Hugging Face Inference
Endpoints), through one shared :class:`huggingface_hub.AsyncInferenceClient` whose connection pool is
sized for ``max_concurrency``:

* ``api="chat"`` (default) calls ``/v1/chat/completions`` (the server applies its chat template);
* ``api="text"`` renders the messages with a local tokenizer's chat template and calls TGI's raw
  ``/generate`` protocol (``POST`` on the endpoint URL) with ``details=True``.

:meth:`TGIBackend.attempt` is exactly one HTTP attempt that classifies failures as
:class:`~hf_context_synthesis.backends.retry.RetryableError` or
:class:`~hf_context_synthesis.backends.retry.FatalRequestError`; :meth:`TGIBackend.generate` adds retries
(exponential backoff with full jitter, honouring ``Retry-After``) and never raises for request errors.
With ``adaptive_concurrency`` the fixed semaphore becomes an
:class:`~hf_context_synthesis.backends.adaptive.AdaptiveLimiter` that finds the server's sweet spot
(AIMD on 429/503/timeouts and queueing latency); :attr:`TGIBackend.concurrency_limit` shows the current limit.
Credentials (``token``, passwords in the URL) never appear in logs, exception messages or reprs; use
:func:`sanitize_url` whenever an endpoint is shown.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OfflineModeIsEnabled,
    TextGenerationError,
    ValidationError,
)
from huggingface_hub.utils import build_hf_headers

from ..utils.secrecy import endpoint_token, redact, register_secret
from ..utils.urls import sanitize_url, validate_endpoint
from .adaptive import AdaptiveLimiter
from .base import GenerationBackend, GenerationRequest, GenerationResult
from .errors import (
    MAX_SERVER_MESSAGE,
    EndpointRouteError,
    EndpointUnreachableError,
    ModelDiscoveryError,
    ResponseTooLargeError,
    server_error_message,
)
from .retry import FatalRequestError, RetryableError, RetryPolicy, is_retryable_status, parse_retry_after

logger = logging.getLogger(__name__)

__all__ = [
    "FatalRequestError",
    "RetryableError",
    "TGIBackend",
    "TGIBackendConfig",
    "sanitize_url",
]

_MAX_SERVER_MESSAGE = MAX_SERVER_MESSAGE
_asyncio_timeout = getattr(asyncio, "timeout", None)

#: Default cap on one response body (a 4,096-token generation is a few tens of KB).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Seconds each discovery / preflight GET may take at most.
PROBE_TIMEOUT = 10.0


@dataclass
class TGIBackendConfig:
    """Where and how :class:`TGIBackend` sends requests.

    Args:
        endpoint: Base URL of the server (``http://host:8080`` or an Inference Endpoint URL). For
            ``api="chat"`` the client appends ``/v1/chat/completions``; for ``api="text"`` it posts to
            the URL itself (TGI's ``POST /``).
        model: Model name sent in chat requests and used as :meth:`TGIBackend.model_id`; ``None``
            discovers it: TGI's ``GET /info`` ``model_id``, else OpenAI's ``GET /v1/models`` (when it lists
            exactly one model; several raise :class:`ModelDiscoveryError` listing them). No made-up
            name is ever sent.
        api: ``"chat"`` (server-side chat template) or ``"text"`` (raw generation of a prompt rendered
            with ``tokenizer``'s chat template).
        tokenizer: For ``api="text"``: a tokenizer object with ``apply_chat_template`` or a local
            path / Hub id loaded with :class:`transformers.AutoTokenizer`.
        max_concurrency: Requests in flight at most (a semaphore; the connection pool has as many
            connections). With ``adaptive_concurrency`` the upper bound of the adaptive limit.
        adaptive_concurrency: Replace the fixed semaphore by an
            :class:`~hf_context_synthesis.backends.adaptive.AdaptiveLimiter` (AIMD with a latency
            gradient, slow start; decreases on 429/503/timeouts) bounded by
            ``[min_concurrency, max_concurrency]``. The current limit is :attr:`TGIBackend.concurrency_limit`.
        min_concurrency: Lower bound of the adaptive limit.
        initial_concurrency: Starting adaptive limit (``None``: ``min(8, max_concurrency)``).
        timeout: Seconds one HTTP attempt may take in total, body included (``None``: wait forever).
        max_response_bytes: Largest response body accepted; a larger one fails its request at once
            (not retried) instead of filling memory.
        max_retries: Retries after the first attempt.
        backoff_base: First backoff ceiling (s), doubled on each retry.
        backoff_max: Largest backoff wait (s).
        jitter: Full jitter on backoff waits (strongly recommended with many clients).
        retry_after_max: Largest server ``Retry-After`` honoured (s).
        token: ``str``: bearer token to send; ``True``: the Hugging Face Hub token (``HF_TOKEN`` or
            the login cache), asked for explicitly; ``None``: the Hub token only when the endpoint is
            a Hugging Face host (Inference Endpoints, Spaces), else no ``Authorization`` header (the
            Hub token never goes elsewhere unless asked); ``False``: no ``Authorization`` header.
            Never logged or shown in reprs (see :mod:`hf_context_synthesis.utils.secrecy`).
        headers: Extra HTTP headers (values are hidden in reprs).

    Credentials in the URL (``https://user:password@host``) are sent as HTTP Basic auth (the URL
    itself travels without them, so no library logs them); they cannot be combined with ``token``.
    """

    endpoint: str
    model: str | None = None
    api: Literal["chat", "text"] = "chat"
    tokenizer: Any = None
    max_concurrency: int = 64
    adaptive_concurrency: bool = False
    min_concurrency: int = 1
    initial_concurrency: int | None = None
    timeout: float | None = 600.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_retries: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: bool = True
    retry_after_max: float = 600.0
    token: str | bool | None = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.headers is None:
            self.headers = {}
        validate_endpoint(self.endpoint)
        if self.max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be >= 1024, got {self.max_response_bytes}")
        if self.api not in ("chat", "text"):
            raise ValueError(f"api must be 'chat' or 'text', got {self.api!r}")
        if self.api == "text" and self.tokenizer is None:
            raise ValueError("api='text' needs `tokenizer` (a path, Hub id or tokenizer object) to render the chat template")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError(
                f"min_concurrency must be in [1, max_concurrency={self.max_concurrency}], got {self.min_concurrency}"
            )
        if self.initial_concurrency is not None and self.initial_concurrency < 1:
            raise ValueError(f"initial_concurrency must be >= 1, got {self.initial_concurrency}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 or None, got {self.timeout}")
        if self.token is not None and not isinstance(self.token, (str, bool)):
            raise ValueError("token must be a string, True (the Hub token), False (no auth) or None")
        if isinstance(self.token, str) and _url_credentials(self.endpoint) is not None:
            raise ValueError("give credentials either in the endpoint URL (Basic auth) or as `token`, not both")
        self.retry_policy  # validates the retry fields

    @property
    def retry_policy(self) -> RetryPolicy:
        """The :class:`RetryPolicy` described by the retry fields."""
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            jitter=self.jitter,
            retry_after_max=self.retry_after_max,
        )

    def __repr__(self) -> str:
        token = repr(self.token) if self.token is None or isinstance(self.token, bool) else "'***'"
        return (
            f"TGIBackendConfig(endpoint={sanitize_url(self.endpoint)!r}, model={self.model!r}, api={self.api!r}, "
            f"max_concurrency={self.max_concurrency}, adaptive_concurrency={self.adaptive_concurrency}, "
            f"timeout={self.timeout}, max_retries={self.max_retries}, "
            f"backoff_base={self.backoff_base}, backoff_max={self.backoff_max}, jitter={self.jitter}, "
            f"token={token}, headers={sorted(self.headers or {})})"
        )


def _url_credentials(url: str) -> tuple[str, str] | None:
    """``(user, password)`` from ``url``'s userinfo, if it has any."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def _is_overload(exc: RetryableError) -> bool:
    """Whether a failed attempt says "too much load" (429, 503, timeout) to the adaptive limiter."""
    return exc.status in (429, 503) or exc.reason.startswith("timeout")


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class _LoopState:
    """Per-event-loop resources (httpx connections and asyncio primitives are bound to one loop)."""

    loop: asyncio.AbstractEventLoop
    client: AsyncInferenceClient
    http: httpx2.AsyncClient
    semaphore: asyncio.Semaphore
    limiter: AdaptiveLimiter | None = None
    discovery: asyncio.Lock = field(default_factory=asyncio.Lock)


class TGIBackend(GenerationBackend):
    """:class:`GenerationBackend` backed by a TGI server (see the module docstring).

    Args:
        config: A :class:`TGIBackendConfig`, or an endpoint URL with keyword overrides.
    """

    kind = "tgi"

    def __init__(self, config: TGIBackendConfig | str, **overrides: Any) -> None:
        if isinstance(config, str):
            config = TGIBackendConfig(endpoint=config, **overrides)
        elif overrides:
            raise TypeError("pass either a TGIBackendConfig or an endpoint with keyword arguments, not both")
        self.config = config
        credentials = _url_credentials(config.endpoint)
        #: The URL requests go to (without credentials: those travel in a header).
        self.endpoint = _strip_credentials(config.endpoint).rstrip("/")
        #: The endpoint as shown in logs, reports and cards.
        self.safe_endpoint = sanitize_url(self.endpoint)
        self._policy = config.retry_policy
        self._headers: dict[str, str | None] = {k.lower(): v for k, v in (config.headers or {}).items()}
        if credentials is not None and "authorization" not in self._headers:
            basic = base64.b64encode(":".join(credentials).encode()).decode()
            self._headers["authorization"] = f"Basic {basic}"
        # The token actually sent: the Hub token only when asked (token=True) or to a Hugging Face host.
        self._token: str | bool = endpoint_token(config.token, self.endpoint)
        self._secrets = self._collect_secrets(credentials)
        if self._token is False and "authorization" not in self._headers:
            # huggingface_hub drops None-valued headers after merging, so this removes the default auth.
            self._headers["authorization"] = None  # type: ignore[assignment]
        self._client_token = self._token if isinstance(self._token, str) else None
        self._tokenizer = self._load_tokenizer(config.tokenizer) if config.api == "text" else None
        self._state: _LoopState | None = None
        self._model_id: str | None = config.model
        self._limiter: AdaptiveLimiter | None = None
        if config.adaptive_concurrency:
            initial = config.initial_concurrency or min(8, config.max_concurrency)
            self._limiter = AdaptiveLimiter(
                initial, min_limit=config.min_concurrency, max_limit=config.max_concurrency, name=self.safe_endpoint
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.safe_endpoint!r}, api={self.config.api!r}, "
            f"max_concurrency={self.config.max_concurrency})"
        )

    @property
    def max_concurrency(self) -> int:
        return self.config.max_concurrency

    @property
    def concurrency_limit(self) -> int:
        """Requests allowed in flight now: the adaptive limit, or ``max_concurrency`` when fixed."""
        return self._limiter.admission_limit if self._limiter is not None else self.config.max_concurrency

    @property
    def limiter(self) -> AdaptiveLimiter | None:
        """The :class:`AdaptiveLimiter` with ``adaptive_concurrency``, else ``None``."""
        return self._limiter

    # ------------------------------------------------------------------ setup

    def _collect_secrets(self, credentials: tuple[str, str] | None) -> list[str]:
        secrets = []
        for token in (self.config.token, self._token):
            if isinstance(token, str) and token:
                secrets.append(token)
        if credentials is not None and credentials[1]:
            secrets.append(credentials[1])
        for name, value in self._headers.items():
            if name in ("authorization", "proxy-authorization", "x-api-key", "api-key") and value:
                secrets.append(str(value))
                secrets.append(str(value).split(" ", 1)[-1])
        for secret in secrets:
            register_secret(secret)  # redacted from every message and log record of the library
        # Longest first, so that a secret containing another is replaced whole.
        return sorted(set(secrets), key=len, reverse=True)

    def _redact(self, text: str) -> str:
        """Remove credentials from a server-provided or library-provided string."""
        text = text.replace(self.config.endpoint, self.safe_endpoint).replace(self.endpoint, self.safe_endpoint)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    @staticmethod
    def _load_tokenizer(tokenizer: Any) -> Any:
        if hasattr(tokenizer, "apply_chat_template"):
            return tokenizer
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tokenizer)
        raise TypeError("tokenizer must be a path / Hub id or an object with apply_chat_template")

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is not None and state.loop is loop:
            return state
        if state is not None:
            # The previous loop (e.g. an earlier asyncio.run) is gone with its connections; start afresh.
            logger.debug("TGIBackend %s: new event loop, creating a new HTTP client", self.safe_endpoint)
        client, http = self._make_client()
        if self._limiter is not None and state is not None:
            self._limiter = self._limiter.fork()  # keep what was learned, drop the old loop's waiters
        self._state = state = _LoopState(
            loop=loop,
            client=client,
            http=http,
            semaphore=asyncio.Semaphore(self.max_concurrency),
            limiter=self._limiter,
        )
        return state

    def _make_client(self) -> tuple[AsyncInferenceClient, httpx2.AsyncClient]:
        client = AsyncInferenceClient(
            model=self.endpoint,
            provider="hf-inference",
            token=self._client_token,
            timeout=self.config.timeout,
            headers=self._headers,
        )
        # One pool for all requests, as large as the concurrency (httpx keeps only 20 idle connections
        # by default, which would reconnect constantly at higher concurrency). `_async_client` is how
        # AsyncInferenceClient caches its httpx client; if that ever changes, we fall back to its default.
        n = self.max_concurrency
        limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0)
        http = httpx2.AsyncClient(
            transport=_CappedTransport(httpx2.AsyncHTTPTransport(limits=limits), self.config.max_response_bytes),
            follow_redirects=True,
            timeout=None,
        )
        if hasattr(client, "_async_client") and hasattr(client, "exit_stack"):
            client._async_client = http
        else:  # pragma: no cover - depends on huggingface_hub internals
            logger.debug("AsyncInferenceClient has no _async_client; using its default connection pool")
        client.exit_stack.push_async_callback(http.aclose)
        return client, http

    # ------------------------------------------------------------------ public API

    async def model_id(self) -> str:
        """The served model: ``config.model``, else discovered (see :meth:`discover_model`)."""
        if self._model_id is None:
            async with self._loop_state().discovery:  # concurrent first requests ask the server once
                if self._model_id is None:
                    self._model_id = await self.discover_model()
        return self._model_id

    async def discover_model(self) -> str:
        """Ask the server which model it serves: TGI's ``/info`` ``model_id``, else ``/v1/models``.

        Raises :class:`ModelDiscoveryError` when ``/v1/models`` lists several models (naming them) or
        the server reports none, and :class:`EndpointUnreachableError` when it cannot be reached.
        """
        # /info first (TGI); /v1/models only when it names no model (OpenAI-compatible servers)
        probe = await self.probe(health=False, routes=("/info",))
        model = probe.info.get("model_id") if isinstance(probe.info, dict) else None
        if isinstance(model, str) and model:
            return model
        if probe.status("/info") not in (401, 403):
            more = await self.probe(health=False, routes=("/v1/models",))
            probe.answers.update(more.answers)
            probe.models = more.models
        if probe.models is not None:
            if len(probe.models) == 1:
                return probe.models[0]
            if len(probe.models) > 1:
                raise ModelDiscoveryError(
                    f"{self.safe_endpoint} serves {len(probe.models)} models ({', '.join(probe.models)}): "
                    "set generator_model to the one to use"
                )
        if not probe.reachable:
            raise EndpointUnreachableError(probe.unreachable_message())
        for route, (status, body) in probe.answers.items():
            if status in (401, 403):
                raise ModelDiscoveryError(
                    f"{self.http_error_reason(status, body)} ({self.safe_endpoint} refused the credentials on "
                    f"GET {route}, asked for the served model; check the endpoint token)"
                )
        raise ModelDiscoveryError(
            f"cannot tell which model {self.safe_endpoint} serves ({probe.describe()}); set generator_model"
        )

    async def probe(
        self, *, health: bool = True, timeout: float | None = None, routes: tuple[str, ...] = ("/info", "/v1/models")
    ) -> "EndpointProbe":
        """One look at the server: ``GET /health`` (optional), ``/info`` and ``/v1/models``, at once.

        Each GET is one attempt bounded by ``timeout`` (default: ``min(config.timeout, PROBE_TIMEOUT)``).
        """
        limit = timeout or min(self.config.timeout or PROBE_TIMEOUT, PROBE_TIMEOUT)
        routes = (["/health"] if health else []) + list(routes)
        answers = await asyncio.gather(*(self._probe_get(r, limit) for r in routes))
        result = EndpointProbe(endpoint=self.safe_endpoint, answers=dict(zip(routes, answers)))
        info = result.json("/info")
        result.info = info if isinstance(info, dict) else None
        models = result.json("/v1/models")
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            result.models = [str(m["id"]) for m in models["data"] if isinstance(m, dict) and m.get("id")]
        return result

    async def _probe_get(self, route: str, timeout: float) -> "tuple[int | None, bytes | str]":
        try:
            response = await asyncio.wait_for(self._get(route), timeout=timeout)
        except asyncio.TimeoutError:
            return None, f"no answer within {timeout:g}s"
        except ResponseTooLargeError as exc:
            return None, str(exc)
        except httpx2.HTTPError as exc:
            return None, f"{type(exc).__name__}: {self._redact(str(exc))[:200]}"
        return response.status_code, response.content

    async def info(self) -> dict[str, Any] | None:
        """The server's ``/info`` payload, or ``None`` if it cannot be had (one attempt, no retry)."""
        try:
            response = await self._get("/info")
            if response.status_code != 200:
                return None
            data = response.json()
        except (httpx2.HTTPError, ValueError, asyncio.TimeoutError, ResponseTooLargeError) as exc:
            logger.debug("TGI /info failed on %s: %s", self.safe_endpoint, type(exc).__name__)
            return None
        return data if isinstance(data, dict) else None

    async def health(self) -> bool:
        """Whether ``GET /health`` answers 200 (one attempt, bounded by ``timeout``)."""
        try:
            response = await self._get("/health")
        except (httpx2.HTTPError, asyncio.TimeoutError, ResponseTooLargeError) as exc:
            logger.debug("TGI /health failed on %s: %s", self.safe_endpoint, type(exc).__name__)
            return False
        return response.status_code == 200

    async def _get(self, route: str) -> httpx2.Response:
        state = self._loop_state()
        http = state.http
        headers = {**build_hf_headers(token=self._token), **self._headers}
        headers = {k: v for k, v in headers.items() if v is not None}
        return await asyncio.wait_for(http.get(self.endpoint + route, headers=headers), timeout=self.config.timeout)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run ``request`` with retries; failures come back as ``GenerationResult(error=...)``, never raised.

        Each attempt holds one of the ``max_concurrency`` slots; backoff waits do not. ``attempts`` on
        the result counts the HTTP attempts made. Cancellation propagates.
        """
        attempts = 0

        async def one_attempt() -> GenerationResult:
            nonlocal attempts
            attempts += 1
            return await self.attempt(request)

        try:
            async for attempt in self._policy.retrying(before_sleep=self._log_retry(request)):
                with attempt:
                    result = await one_attempt()
        except RetryableError as exc:
            logger.warning(
                "TGI request %s failed on %s after %d attempts: %s", request.key, self.safe_endpoint, attempts, exc.reason
            )
            return GenerationResult(key=request.key, error=f"{exc.reason} (after {attempts} attempts)", attempts=attempts)
        except FatalRequestError as exc:
            if exc.stops_run:
                raise EndpointRouteError(exc.reason) from None
            logger.warning("TGI request %s rejected by %s: %s", request.key, self.safe_endpoint, exc.reason)
            return GenerationResult(key=request.key, error=exc.reason, attempts=attempts)
        except Exception as exc:  # noqa: BLE001 - generate() must not raise for a request
            reason = f"unexpected {type(exc).__name__}: {self._redact(str(exc))[:_MAX_SERVER_MESSAGE]}"
            logger.warning("TGI request %s failed on %s: %s", request.key, self.safe_endpoint, reason)
            return GenerationResult(key=request.key, error=reason, attempts=attempts)
        result.attempts = attempts
        return result

    def _log_retry(self, request: GenerationRequest) -> Any:
        def before_sleep(retry_state: Any) -> None:
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            reason = exc.reason if isinstance(exc, RetryableError) else type(exc).__name__
            sleep = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
            logger.info(
                "TGI request %s attempt %d on %s failed (%s); retrying in %.2fs",
                request.key,
                retry_state.attempt_number,
                self.safe_endpoint,
                reason,
                sleep,
            )

        return before_sleep

    async def attempt(self, request: GenerationRequest) -> GenerationResult:
        """Exactly one HTTP attempt (waiting for a concurrency slot first).

        Returns a successful :class:`GenerationResult` (``attempts=1``), or raises
        :class:`RetryableError` (429, 408/424/425, 5xx, timeout, connection error, malformed body) or
        :class:`FatalRequestError` (other 4xx, invalid request). Messages never contain credentials.
        """
        state = self._loop_state()
        if state.limiter is not None:
            async with state.limiter.slot() as slot:
                try:
                    result = await self._attempt(state, request)
                except RetryableError as exc:
                    if _is_overload(exc):
                        slot.overloaded()
                    raise
                slot.succeeded(cost=result.tokens_out or 1)
                return result
        async with state.semaphore:
            return await self._attempt(state, request)

    async def _attempt(self, state: _LoopState, request: GenerationRequest) -> GenerationResult:
        try:
            # The whole attempt, body included, is bounded: httpx's own timeout is per read, so a
            # server trickling a huge body would otherwise never time out.
            if self.config.timeout is None:
                return await self._protocol_call(state, request)
            if _asyncio_timeout is not None:  # Python >= 3.11: no extra task per attempt
                async with _asyncio_timeout(self.config.timeout):
                    return await self._protocol_call(state, request)
            return await asyncio.wait_for(self._protocol_call(state, request), timeout=self.config.timeout)
        except (RetryableError, FatalRequestError):
            raise
        except ResponseTooLargeError as exc:
            raise FatalRequestError(str(exc)) from None
        except asyncio.TimeoutError:
            raise RetryableError(f"timeout after {self.config.timeout}s") from None
        except InferenceTimeoutError:
            raise RetryableError(f"timeout after {self.config.timeout}s") from None
        except (TextGenerationError, HfHubHTTPError) as exc:
            raise self._classify_http_error(exc) from None
        except OfflineModeIsEnabled:
            raise FatalRequestError("huggingface_hub offline mode is enabled (HF_HUB_OFFLINE)") from None
        except httpx2.TimeoutException:
            raise RetryableError(f"timeout after {self.config.timeout}s") from None
        except httpx2.TransportError as exc:
            raise RetryableError(f"connection error ({type(exc).__name__})") from None
        except httpx2.HTTPError as exc:
            raise RetryableError(f"HTTP error ({type(exc).__name__})") from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # json.JSONDecodeError / UnicodeDecodeError are ValueErrors: the body was not what TGI sends.
            raise RetryableError(f"malformed response ({type(exc).__name__})") from None

    # ------------------------------------------------------------------ protocol details

    async def _protocol_call(self, state: _LoopState, request: GenerationRequest) -> GenerationResult:
        if self.config.api == "chat":
            return await self._chat(state.client, request)
        return await self._text(state.client, request)

    async def _chat(self, client: AsyncInferenceClient, request: GenerationRequest) -> GenerationResult:
        output = await client.chat_completion(
            messages=[dict(m) for m in request.messages],
            model=self._model_id or await self._model_for_request(),
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
        )
        choices = output.choices
        if not choices:
            raise RetryableError("malformed response (no choices)")
        choice = choices[0]
        text = choice.message.content if choice.message is not None else None
        if not isinstance(text, str):
            raise RetryableError("malformed response (no message content)")
        usage = output.usage
        return GenerationResult(
            key=request.key,
            text=text,
            tokens_in=int(usage.prompt_tokens or 0) if usage is not None else 0,
            tokens_out=int(usage.completion_tokens or 0) if usage is not None else 0,
            attempts=1,
            extra={"finish_reason": choice.finish_reason},
        )

    async def _model_for_request(self) -> str:
        """The model name for a chat payload, discovered on first use (a failure fails the attempt)."""
        try:
            return await self.model_id()
        except EndpointUnreachableError as exc:
            raise RetryableError(f"connection error (model discovery: {exc})") from None
        except ModelDiscoveryError as exc:
            raise FatalRequestError(str(exc)) from None

    def render_prompt(self, request: GenerationRequest) -> str:
        """The raw prompt ``api="text"`` sends: the messages through the tokenizer's chat template."""
        if self._tokenizer is None:
            raise RuntimeError("render_prompt needs api='text' and a tokenizer")
        return self._tokenizer.apply_chat_template(
            [dict(m) for m in request.messages], tokenize=False, add_generation_prompt=True
        )

    async def _text(self, client: AsyncInferenceClient, request: GenerationRequest) -> GenerationResult:
        try:
            prompt = self.render_prompt(request)
            tokens_in = len(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a template error is the request's fault
            raise FatalRequestError(f"cannot render chat template ({type(exc).__name__}: {exc})") from None
        sample = request.temperature > 0
        output = await client.text_generation(
            prompt,
            details=True,
            max_new_tokens=request.max_new_tokens,
            do_sample=sample,
            temperature=request.temperature if sample else None,
            top_p=request.top_p if sample else None,
            seed=request.seed,
            stop=list(request.stop) or None,
            return_full_text=False,
        )
        text = getattr(output, "generated_text", None)
        if not isinstance(text, str):
            raise RetryableError("malformed response (no generated_text)")
        details = output.details
        return GenerationResult(
            key=request.key,
            text=text,
            tokens_in=tokens_in,
            tokens_out=int(details.generated_tokens or 0) if details is not None else 0,
            attempts=1,
            extra={"finish_reason": details.finish_reason if details is not None else None},
        )

    def _classify_http_error(self, exc: Exception) -> RetryableError | FatalRequestError:
        http_error = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
        if isinstance(http_error, HfHubHTTPError) and http_error.response is not None:
            response = http_error.response
            status = response.status_code
            reason = self.http_error_reason(status, _body_of(response), response.headers.get("content-type", ""))
            if is_retryable_status(status):
                return RetryableError(reason, parse_retry_after(response.headers.get("retry-after")), status)
            if status in (404, 405) and self._is_missing_route(reason):
                route = "/v1/chat/completions" if self.config.api == "chat" else "POST / (TGI's /generate protocol)"
                other = "text" if self.config.api == "chat" else "chat"
                hint = (
                    "OpenAI-compatible servers (transformers serve, vLLM, ...) speak api='chat'"
                    if other == "chat"
                    else "a TGI server older than 1.4.3 speaks only api='text' (with a tokenizer)"
                )
                return FatalRequestError(
                    f"{self.safe_endpoint} has no {route} route ({reason}): api={self.config.api!r} does not "
                    f"match this server; use api={other!r} ({hint})",
                    status,
                    stops_run=True,
                )
            return FatalRequestError(reason, status)
        # A TGI error without an HTTP response attached: validation errors are final.
        message = self._redact(str(exc))[:_MAX_SERVER_MESSAGE]
        reason = f"{type(exc).__name__}: {message}"
        if isinstance(exc, ValidationError):
            return FatalRequestError(reason)
        return RetryableError(reason)

    def http_error_reason(self, status: int, body: bytes | str | None, content_type: str = "") -> str:
        """``"HTTP <status>: <the server's message>"``, credential-free, on one line.

        Redaction hook: every failure reason built from a server's error body is made here.
        """
        message = self._redact(server_error_message(body, content_type))
        return f"HTTP {status}" + (f": {message}" if message else "")

    def _is_missing_route(self, reason: str) -> bool:
        message = reason.split(":", 1)[1].strip().lower() if ":" in reason else ""
        if self.config.api == "text":
            return True  # TGI answers every valid generate request; a 404/405 there is the route
        return message in ("", "not found", "method not allowed", "404 page not found")

    async def aclose(self) -> None:
        """Close the HTTP client of the current event loop."""
        if self._limiter is not None and self._limiter.stats().min_latency is not None:
            st = self._limiter.stats()
            logger.info(
                "adaptive concurrency on %s: limit %d (peak %d; %d increases, %d decreases, %d overload signals)",
                self.safe_endpoint, st.limit, st.peak_limit, st.increases, st.decreases, st.overloads,
            )
        state, self._state = self._state, None
        if state is None:
            return
        try:
            if state.loop is asyncio.get_running_loop():
                await state.client.close()
        except RuntimeError:  # no running loop / closed loop
            pass


def _body_of(response: httpx2.Response) -> bytes:
    try:
        return response.content
    except httpx2.ResponseNotRead:  # pragma: no cover - huggingface_hub reads error bodies
        return b""


@dataclass
class EndpointProbe:
    """What :meth:`TGIBackend.probe` saw: per route, the HTTP status (``None``: no answer) and body or error.

    Args:
        endpoint: Sanitized endpoint URL.
        answers: ``route -> (status or None, body bytes or error text)``.
        info: TGI's ``/info`` payload, when it answered with JSON.
        models: Model ids listed by ``/v1/models``, when it answered with an OpenAI model list.
    """

    endpoint: str
    answers: dict[str, tuple[int | None, bytes | str]]
    info: dict[str, Any] | None = None
    models: list[str] | None = None

    @property
    def reachable(self) -> bool:
        """Whether any route answered with an HTTP status (even an error)."""
        return any(status is not None for status, _ in self.answers.values())

    def json(self, route: str) -> Any:
        status, body = self.answers.get(route, (None, b""))
        if status != 200 or not isinstance(body, (bytes, str)):
            return None
        try:
            import json

            return json.loads(body)
        except ValueError:
            return None

    def status(self, route: str) -> int | None:
        return self.answers.get(route, (None, b""))[0]

    def describe(self) -> str:
        """One line: what each route answered."""
        parts = []
        for route, (status, body) in self.answers.items():
            if status is None:
                parts.append(f"GET {route}: {body}")
            elif status == 200:
                parts.append(f"GET {route}: 200")
            else:
                message = server_error_message(body, limit=200)
                parts.append(f"GET {route}: HTTP {status}" + (f" {message}" if message else ""))
        return "; ".join(parts)

    def unreachable_message(self) -> str:
        return (
            f"cannot reach the generation endpoint {self.endpoint} ({self.describe()}); "
            "is the server running and the URL right?"
        )


class _CappedStream(httpx2.AsyncByteStream):
    """A response body stream that raises :class:`ResponseTooLargeError` past ``limit`` bytes."""

    def __init__(self, inner: Any, limit: int, url: str) -> None:
        self._inner = inner
        self._limit = limit
        self._url = url

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLargeError(
                    f"response body from {self._url} exceeds max_response_bytes={self._limit} (failed, not retried)"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Transport wrapper that refuses response bodies larger than ``limit`` bytes (checked as they stream)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        url = sanitize_url(str(request.url))
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            await response.aclose()
            raise ResponseTooLargeError(
                f"response body from {url} is {int(length)} bytes, over max_response_bytes={self._limit} "
                "(failed, not retried)"
            )
        response.stream = _CappedStream(response.stream, self._limit, url)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
