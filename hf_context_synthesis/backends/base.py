"""The one small async interface every generation backend implements.

A backend turns :class:`GenerationRequest` objects into :class:`GenerationResult` objects. Retries,
concurrency and batching are the backend's business; callers only see requests go in and results
come out (in completion order) through :meth:`GenerationBackend.stream`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationRequest:
    """One generation to run.

    Args:
        key: Caller's identifier, returned unchanged on the result (e.g. the cache key).
        messages: Chat messages (``[{"role": "user", "content": ...}]``).
        max_new_tokens: Upper bound on generated tokens.
        temperature: Sampling temperature; ``0`` means greedy decoding.
        top_p: Nucleus sampling mass (``None`` leaves the server default).
        seed: Sampling seed forwarded to the server (TGI honours it per request).
        stop: Optional stop sequences.
    """

    key: str
    messages: tuple[dict[str, str], ...]
    max_new_tokens: int = 4096
    temperature: float = 0.7
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class GenerationResult:
    """What a backend returns for one request.

    Args:
        key: The request's key.
        text: Generated text (``None`` when ``error`` is set).
        error: Why the request failed for good after all retries (``None`` on success).
        tokens_in: Prompt tokens as counted by the server/tokenizer (0 if unknown).
        tokens_out: Generated tokens (0 if unknown).
        attempts: Number of attempts made (1 = no retry).
    """

    key: str
    text: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class GenerationBackend(abc.ABC):
    """Base class of generation backends.

    Subclasses implement :meth:`generate` (one request, with their own retries) and may override
    :meth:`stream` (e.g. to batch requests). ``kind`` is a short public name ("tgi", "transformers").
    """

    kind: str = "backend"

    @abc.abstractmethod
    async def model_id(self) -> str:
        """The identifier of the model that generates (used in cache keys and cards)."""

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one request to completion (success or final failure); never raises for request errors."""

    @property
    def max_concurrency(self) -> int:
        """How many requests :meth:`stream` keeps in flight."""
        return 1

    async def stream(self, requests: Iterable[GenerationRequest]) -> AsyncIterator[GenerationResult]:
        """Yield results in completion order, keeping at most :attr:`max_concurrency` requests in flight.

        ``requests`` is consumed lazily, so an unbounded iterator uses bounded memory. It may also be
        a *refillable* iterator (an object whose ``__next__`` raises ``StopIteration`` while it is
        momentarily empty and yields again later, see :class:`RequestQueue`): the stream asks it for
        more after every result it hands out, and ends once it is empty with nothing in flight.
        """
        iterator = iter(requests)
        pending: set[asyncio.Task[GenerationResult]] = set()
        finished: list[asyncio.Task[GenerationResult]] = []

        def refill() -> None:
            while len(pending) < self.max_concurrency:
                try:
                    req = next(iterator)
                except StopIteration:
                    return
                pending.add(asyncio.ensure_future(self.generate(req)))

        try:
            while True:
                refill()
                if not pending:
                    return
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                refill()
                finished.extend(done)
                while finished:
                    yield finished.pop().result()
        finally:
            for task in finished:  # left unconsumed by an exception: retrieve theirs too
                if not task.cancelled():
                    task.exception()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Release network clients / models."""

    async def __aenter__(self) -> "GenerationBackend":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RequestQueue:
    """A refillable request iterator: fresh requests from ``source`` after any re-queued ones.

    ``__next__`` raises ``StopIteration`` while nothing is queued; :meth:`push` makes it yield again.
    """

    def __init__(self, source: Iterable[GenerationRequest] = ()) -> None:
        import collections

        self._retries: collections.deque[GenerationRequest] = collections.deque()
        self._source = iter(source)

    def push(self, request: GenerationRequest) -> None:
        self._retries.append(request)

    def __iter__(self) -> "RequestQueue":
        return self

    def __next__(self) -> GenerationRequest:
        if self._retries:
            return self._retries.popleft()
        return next(self._source)


def run_requests(
    backend: GenerationBackend,
    requests: Iterable[GenerationRequest],
    on_result: Callable[[GenerationResult], Any] | None = None,
) -> list[GenerationResult]:
    """Synchronously run ``requests`` and return their results **in request order**.

    Convenience for small jobs (evaluation, probes); large jobs use :meth:`GenerationBackend.stream`.
    ``on_result`` is called with every result as it arrives (e.g. to advance a progress bar).
    """
    reqs = list(requests)
    order = {r.key: i for i, r in enumerate(reqs)}
    if len(order) != len(reqs):
        raise ValueError("run_requests needs unique request keys")

    async def _run() -> list[GenerationResult]:
        out: list[GenerationResult | None] = [None] * len(reqs)
        async for res in backend.stream(reqs):
            out[order[res.key]] = res
            if on_result is not None:
                on_result(res)
        return out  # type: ignore[return-value]

    return run_coro(_run())


def run_coro(coro: Any) -> Any:
    """Run a coroutine from sync code, also when a loop is already running (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
