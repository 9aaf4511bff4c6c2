"""Retry vocabulary shared by network backends: error classes, ``Retry-After`` parsing, backoff policy.

A backend's single HTTP attempt raises :class:`RetryableError` (worth trying again, possibly after the
server's ``Retry-After``) or :class:`FatalRequestError` (trying again cannot help). :class:`RetryPolicy`
turns that into waits: the server's ``Retry-After`` when it sent one, else exponential backoff with
"full jitter" (a uniform draw in ``[0, min(backoff_max, backoff_base * 2**(n-1))]``), and builds the
:class:`tenacity.AsyncRetrying` controller that runs the attempts.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity
from tenacity.wait import wait_base

logger = logging.getLogger(__name__)


class RetryableError(Exception):
    """One attempt failed in a way that may succeed later (429, 5xx, timeout, connection, bad body).

    Args:
        reason: Short, credential-free description (e.g. ``"HTTP 503: Model is overloaded"``).
        retry_after: Seconds the server asked us to wait (``Retry-After``), if it said.
        status: HTTP status, when there was a response.
    """

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, retry_after={self.retry_after!r}, status={self.status!r})"


class FatalRequestError(Exception):
    """One attempt failed in a way that retrying cannot fix (4xx other than 408/424/425/429).

    Args:
        reason: Short, credential-free description.
        status: HTTP status, when there was a response.
        stops_run: Every other request would fail the same way (e.g. the server has no route for the
            configured API): the backend raises instead of recording one failure per request.
    """

    def __init__(self, reason: str, status: int | None = None, *, stops_run: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.stops_run = stops_run

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status!r})"


#: 4xx statuses that are worth retrying: request timeout, TGI's "failed dependency" (a generation
#: error such as an out-of-memory), "too early" and "too many requests". Every 5xx is retryable too.
RETRYABLE_4XX = frozenset({408, 424, 425, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth retrying."""
    return status >= 500 or status in RETRYABLE_4XX


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, fractional allowed, or an HTTP date).

    Returns ``None`` when absent or unparseable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait in between.

    Args:
        max_retries: Retries after the first attempt (so at most ``max_retries + 1`` attempts).
        backoff_base: First backoff ceiling in seconds; doubles on each retry.
        backoff_max: Upper bound of one backoff wait.
        jitter: Full jitter (uniform in ``[0, ceiling]``) when true, else exactly the ceiling.
        retry_after_max: Upper bound on an honoured ``Retry-After``.
    """

    max_retries: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: bool = True
    retry_after_max: float = 600.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("backoff_base, backoff_max and retry_after_max must be >= 0")

    def delay(self, retry_number: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 = first retry).

        A server-sent ``retry_after`` is honoured (capped at ``retry_after_max``; with ``jitter`` up to
        10% is added so that a crowd of clients does not come back at the same instant).
        """
        draw = (rng or random).uniform
        if retry_after is not None:
            wait = min(retry_after, self.retry_after_max)
            return wait + (draw(0.0, 0.1 * wait) if self.jitter else 0.0)
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, retry_number - 1))
        return draw(0.0, ceiling) if self.jitter else ceiling

    def retrying(
        self,
        before_sleep: Callable[[tenacity.RetryCallState], Awaitable[None] | None] | None = None,
    ) -> tenacity.AsyncRetrying:
        """A fresh :class:`tenacity.AsyncRetrying` that retries :class:`RetryableError` under this policy.

        The last :class:`RetryableError` is re-raised when attempts run out; anything else propagates at once.
        """
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=_RetryAfterOrBackoff(self),
            retry=tenacity.retry_if_exception_type(RetryableError),
            before_sleep=before_sleep,
            reraise=True,
        )


class _RetryAfterOrBackoff(wait_base):
    """tenacity wait strategy: the server's ``Retry-After`` if given, else the policy's jittered backoff."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        return self.policy.delay(retry_state.attempt_number, retry_after)
