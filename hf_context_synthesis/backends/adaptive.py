"""Adaptive concurrency: an AIMD limiter with a latency gradient, for backends that do not know their server.

A TGI server has a sweet spot: too few requests in flight leave its continuous batcher idle, too many
only queue (latency grows, throughput does not) or get ``429`` once ``--max-concurrent-requests`` is
reached. :class:`AdaptiveLimiter` finds that spot at run time, like TCP congestion control:

* **Baseline.** Until ``baseline_samples`` latency samples have arrived (default 2: the first one
  also pays for connection set-up) only ``min_limit`` requests are admitted, so the smallest latency
  is measured without queueing (a start far above capacity would otherwise never see it).
* **Windows.** Completions are grouped into windows of about ``limit`` samples (one "round trip").
* **Slow start.** Until the first decrease, every clean window doubles the limit (so a start far
  below the server's capacity is left in a few round trips).
* **Additive increase.** Afterwards, every clean window adds ``increase`` (default 1) to the limit.
  A window only grows the limit if it was *used*: at some point at least half the limit was in flight
  (a run that is short of requests does not inflate the limit).
* **Gradient decrease.** A window whose median latency is more than ``tolerance`` times the smallest
  latency seen so far means requests queue on the server: the limit is multiplied by
  ``tolerance * min_latency / median`` (clamped to ``[latency_backoff_min, 0.95]``), so with ``n`` requests
  in flight against a server of capacity ``C`` (latency ``~ n/C`` times the minimum) the limit lands
  near ``tolerance * C``. Consecutive latency decreases compound (the k-th in a row uses the k-th
  power of that factor): after a start far above capacity even the smallest latency seen is inflated
  by queueing, so the measured ratio understates the excess until the queue is gone.
* **Multiplicative decrease on overload.** ``429``/``503`` responses and timeouts (reported with
  :meth:`Slot.overloaded`) multiply the limit by ``backoff_ratio`` (default 0.5), at most once per
  round trip: only a request that *started after* the previous decrease can trigger another one.

The limit always stays within ``[min_limit, max_limit]``. Latency samples may be normalised by a
``cost`` (e.g. generated tokens), so that long and short generations compare. Usage::

    limiter = AdaptiveLimiter(initial=4, min_limit=1, max_limit=256)
    async with limiter.slot() as slot:
        try:
            result = await send(request)
        except Overloaded:
            slot.overloaded()
            raise
        slot.succeeded(cost=result.tokens_out)

:attr:`AdaptiveLimiter.limit` is the current limit (logged at ``DEBUG`` on each change, and
:meth:`AdaptiveLimiter.stats` gives a snapshot for reports). The limiter is loop-agnostic state plus
waiters of the running event loop; use it from one event loop at a time (see :meth:`fork`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["AdaptiveLimiter", "LimiterStats", "Slot"]


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of an :class:`AdaptiveLimiter`.

    Args:
        limit: Current concurrency limit.
        in_flight: Slots held now.
        min_latency: Smallest (cost-normalised) latency seen, seconds (``None`` before the first sample).
        increases / decreases: How many times the limit went up / down.
        overloads: Overload signals received (429/503/timeouts).
        peak_limit: Largest limit reached.
        slow_start: Whether the limiter is still doubling per window.
    """

    limit: int
    in_flight: int
    min_latency: float | None
    increases: int
    decreases: int
    overloads: int
    peak_limit: int
    slow_start: bool


class Slot:
    """One held concurrency slot; report how its request went with :meth:`succeeded` or :meth:`overloaded`.

    A slot released without either (a fatal client error, a cancellation) leaves the limit unchanged.
    """

    __slots__ = ("_limiter", "started", "_outcome", "_latency", "_cost")

    def __init__(self, limiter: "AdaptiveLimiter") -> None:
        self._limiter = limiter
        self.started = time.monotonic()
        self._outcome: str | None = None
        self._latency: float | None = None
        self._cost = 1.0

    def succeeded(self, latency: float | None = None, cost: float = 1.0) -> None:
        """The request completed normally in ``latency`` seconds (default: since the slot was taken).

        ``cost`` normalises the latency sample (e.g. the number of generated tokens); ``<= 0`` means 1.
        """
        self._outcome = "ok"
        self._latency = time.monotonic() - self.started if latency is None else float(latency)
        self._cost = float(cost) if cost and cost > 0 else 1.0

    def overloaded(self) -> None:
        """The server said it is overloaded (429/503) or the request timed out."""
        self._outcome = "overload"


class AdaptiveLimiter:
    """AIMD concurrency limiter with a latency gradient (see the module docstring).

    Args:
        initial: Starting limit (clamped into ``[min_limit, max_limit]``).
        min_limit: Lowest limit (>= 1).
        max_limit: Highest limit.
        tolerance: Median window latency above ``tolerance * min_latency`` counts as queueing (> 1).
        backoff_ratio: Multiplier on overload (in ``(0, 1)``).
        latency_backoff_min: Smallest multiplier of one latency decrease (in ``(0, 1)``); lets a start
            far above the server's capacity come down in a few round trips.
        increase: Added to the limit per clean window once slow start is over.
        slow_start: Double the limit per clean window until the first decrease.
        baseline_samples: Latency samples taken at ``min_limit`` before ``initial`` applies (0: none).
        name: Shown in log messages (e.g. the sanitized endpoint).
    """

    def __init__(
        self,
        initial: int = 8,
        *,
        min_limit: int = 1,
        max_limit: int = 1024,
        tolerance: float = 1.5,
        backoff_ratio: float = 0.5,
        latency_backoff_min: float = 0.25,
        increase: float = 1.0,
        slow_start: bool = True,
        baseline_samples: int = 2,
        name: str = "",
    ) -> None:
        if min_limit < 1:
            raise ValueError(f"min_limit must be >= 1, got {min_limit}")
        if max_limit < min_limit:
            raise ValueError(f"max_limit ({max_limit}) must be >= min_limit ({min_limit})")
        if tolerance <= 1.0:
            raise ValueError(f"tolerance must be > 1, got {tolerance}")
        if not 0.0 < backoff_ratio < 1.0:
            raise ValueError(f"backoff_ratio must be in (0, 1), got {backoff_ratio}")
        if not 0.0 < latency_backoff_min < 1.0:
            raise ValueError(f"latency_backoff_min must be in (0, 1), got {latency_backoff_min}")
        if increase <= 0:
            raise ValueError(f"increase must be > 0, got {increase}")
        self.min_limit = int(min_limit)
        self.max_limit = int(max_limit)
        self.tolerance = float(tolerance)
        self.backoff_ratio = float(backoff_ratio)
        self.latency_backoff_min = float(latency_backoff_min)
        self.increase = float(increase)
        self.name = name
        self.baseline_samples = max(0, int(baseline_samples))
        self._samples = 0
        self._limit = float(min(max(initial, self.min_limit), self.max_limit))
        self._slow_start = slow_start
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._min_latency: float | None = None
        self._window: list[float] = []
        self._window_peak = 0
        self._last_decrease = float("-inf")
        self._streak = 0
        self._increases = 0
        self._decreases = 0
        self._overloads = 0
        self._peak = int(self._limit)

    # ------------------------------------------------------------------ state

    @property
    def limit(self) -> int:
        """The current concurrency limit (an integer in ``[min_limit, max_limit]``)."""
        return max(self.min_limit, min(self.max_limit, int(self._limit)))

    @property
    def admission_limit(self) -> int:
        """Slots admitted now: ``min_limit`` while the baseline latency is measured, else :attr:`limit`."""
        return self.limit if self._samples >= self.baseline_samples else self.min_limit

    @property
    def in_flight(self) -> int:
        """Slots currently held."""
        return self._in_flight

    @property
    def min_latency(self) -> float | None:
        """Smallest cost-normalised latency observed (seconds), ``None`` before any sample."""
        return self._min_latency

    def stats(self) -> LimiterStats:
        """A snapshot for logs and reports."""
        return LimiterStats(
            limit=self.limit,
            in_flight=self._in_flight,
            min_latency=self._min_latency,
            increases=self._increases,
            decreases=self._decreases,
            overloads=self._overloads,
            peak_limit=self._peak,
            slow_start=self._slow_start,
        )

    def fork(self) -> "AdaptiveLimiter":
        """A new limiter with this one's settings and learned limit / minimum latency, no waiters.

        For a new event loop: waiters of a finished loop cannot be woken from another one.
        """
        other = AdaptiveLimiter(
            self.limit,
            min_limit=self.min_limit,
            max_limit=self.max_limit,
            tolerance=self.tolerance,
            backoff_ratio=self.backoff_ratio,
            latency_backoff_min=self.latency_backoff_min,
            increase=self.increase,
            slow_start=self._slow_start,
            baseline_samples=max(0, self.baseline_samples - self._samples),
            name=self.name,
        )
        other._min_latency = self._min_latency
        other._increases, other._decreases, other._overloads = self._increases, self._decreases, self._overloads
        other._peak = self._peak
        return other

    # ------------------------------------------------------------------ slots

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold one slot for the body (waits while ``limit`` slots are held); FIFO among waiters."""
        await self._acquire()
        slot = Slot(self)
        try:
            yield slot
        finally:
            self._release(slot)

    async def _acquire(self) -> None:
        if self._in_flight < self.admission_limit and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # We were handed a slot just as we were cancelled: pass it on.
                self._in_flight -= 1
                self._wake()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _take(self) -> None:
        self._in_flight += 1
        self._window_peak = max(self._window_peak, self._in_flight)

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self.admission_limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._take()
            fut.set_result(None)

    def _release(self, slot: Slot) -> None:
        self._in_flight -= 1
        if slot._outcome == "ok" and slot._latency is not None:
            self._on_sample(slot._latency / slot._cost, slot.started)
        elif slot._outcome == "overload":
            self._on_overload(slot.started)
        self._wake()

    # ------------------------------------------------------------------ control law

    def _set_limit(self, value: float, why: str) -> None:
        old = self.limit
        self._limit = float(min(max(value, self.min_limit), self.max_limit))
        new = self.limit
        self._peak = max(self._peak, new)
        if new > old:
            self._increases += 1
        elif new < old:
            self._decreases += 1
        if new != old:
            logger.debug("adaptive concurrency %s: %d -> %d (%s)", self.name or "", old, new, why)

    def _on_overload(self, started: float) -> None:
        self._overloads += 1
        if started < self._last_decrease:
            return  # this request was sent before the last decrease: already accounted for
        self._slow_start = False
        self._set_limit(self._limit * self.backoff_ratio, "overload")
        self._last_decrease = time.monotonic()
        self._reset_window()

    def _on_sample(self, latency: float, started: float) -> None:
        self._samples += 1
        if self._min_latency is None or latency < self._min_latency:
            self._min_latency = latency
        if started < self._last_decrease:
            return  # sent under the previous (larger) limit: says nothing about the current one
        self._window.append(latency)
        if len(self._window) < max(1, self.limit):
            return
        median = statistics.median(self._window)
        used = self._window_peak * 2 >= self.limit
        assert self._min_latency is not None
        ratio = median / self._min_latency if self._min_latency > 0 else 1.0
        if ratio > self.tolerance:
            # Consecutive latency decreases compound: the minimum latency itself may be inflated when
            # the run started far above capacity (every early request queued), so the ratio understates.
            self._streak += 1
            factor = max(self.latency_backoff_min, min(0.95, self.tolerance / ratio) ** self._streak)
            self._slow_start = False
            if self.limit <= self.min_limit:
                # Queueing even at the floor: the server got slower for everyone. Re-baseline.
                self._min_latency = min(self._window)
                self._streak = 0
            self._set_limit(self._limit * factor, f"latency x{ratio:.2f} of minimum")
            self._last_decrease = time.monotonic()
        else:
            self._streak = 0
        if ratio <= self.tolerance and used:
            if self._slow_start:
                self._set_limit(self._limit * 2, "slow start")
            else:
                self._set_limit(self._limit + self.increase, "additive increase")
        self._reset_window()

    def _reset_window(self) -> None:
        self._window = []
        self._window_peak = self._in_flight
