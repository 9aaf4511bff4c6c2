"""Several endpoints serving the same model, used as one backend: routing, circuit breakers, re-routing.

:class:`FleetBackend` wraps member backends (normally one
:class:`~hf_context_synthesis.backends.tgi.TGIBackend` per endpoint, each with its own concurrency
limit, fixed or adaptive) and runs every request attempt by attempt:

* **Least outstanding, late binding.** An attempt is bound to an endpoint only when that endpoint has
  a free slot: among the healthy endpoints with ``outstanding < limit`` it takes the one with the
  fewest outstanding requests *relative to its own limit* (ties: the least recently picked). When no
  endpoint has a free slot the attempt waits for one. A slow endpoint frees its slots slowly and so
  naturally receives fewer requests; nothing queues behind it while a fast one is idle.
* **Circuit breaker per endpoint.** ``closed`` (in use) -> ``open`` after ``failure_threshold``
  consecutive endpoint failures (connection errors, timeouts, malformed bodies, 5xx / 408 / 424 / 425
  without ``Retry-After``); while open it gets no requests. After ``cooldown`` seconds a probe runs
  (the member's ``health()``, i.e. ``GET /health``); success -> ``half_open``, which admits exactly
  one real request; its success -> ``closed``, its failure (or a failed probe) -> ``open`` again with
  the cool-down doubled (up to ``max_cooldown``). ``429`` and answers with ``Retry-After`` mean
  "alive but busy": the request backs off (honouring ``Retry-After``) without counting against the
  endpoint. A non-retryable answer (4xx) is final for the request and proves the endpoint alive.
* **Re-routing.** An attempt that fails for an endpoint reason is retried at once on another healthy
  endpoint (the failing one is avoided for that request until every healthy endpoint has failed it,
  then the retry policy's backoff applies). A request fails for good after
  ``retry_policy.max_retries + len(members)`` failed attempts.
* **No healthy endpoint.** While every endpoint is open the requests wait; if none closes again
  within ``no_healthy_timeout`` seconds, :class:`NoHealthyEndpointError` is raised out of
  :meth:`FleetBackend.generate` / :meth:`~GenerationBackend.stream` (naming the sanitized endpoints
  and their last errors). The synthesis loop stores each result as it arrives, so a rerun resumes.

:attr:`FleetBackend.max_concurrency` is the sum of the members' limits; :meth:`FleetBackend.model_id`
is the model all endpoints serve (a ``ValueError`` if they disagree). :meth:`FleetBackend.endpoint_stats`
returns per-endpoint counters (requests, failures, state changes) for reports and logs.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..utils.urls import sanitize_url
from .base import GenerationBackend, GenerationRequest, GenerationResult
from .errors import EndpointRouteError, EndpointUnreachableError, ModelDiscoveryError
from .retry import FatalRequestError, RetryableError, RetryPolicy

logger = logging.getLogger(__name__)

__all__ = ["CircuitState", "EndpointStats", "FleetBackend", "NoHealthyEndpointError"]


class NoHealthyEndpointError(RuntimeError):
    """Every endpoint of a :class:`FleetBackend` stayed unhealthy for longer than ``no_healthy_timeout``.

    Args:
        endpoints: Sanitized endpoint URL -> its last error (``""`` if none was recorded).
        waited: Seconds the fleet had no healthy endpoint.
    """

    def __init__(self, endpoints: dict[str, str], waited: float) -> None:
        self.endpoints = dict(endpoints)
        self.waited = waited
        listing = "; ".join(f"{url} (last error: {err or 'unknown'})" for url, err in self.endpoints.items())
        super().__init__(
            f"No healthy generation endpoint for {waited:.1f}s: all {len(self.endpoints)} endpoints failed and "
            f"their health probes keep failing: {listing}. Finished generations are in the generation cache; "
            "rerun once an endpoint is reachable to resume."
        )


class CircuitState(str, enum.Enum):
    """State of one endpoint's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class EndpointStats:
    """Counters of one fleet member (a snapshot from :meth:`FleetBackend.endpoint_stats`).

    Args:
        endpoint: Sanitized endpoint URL (or the member's repr).
        state: Current :class:`CircuitState` value.
        requests: Attempts sent to this endpoint.
        successes: Attempts that returned a generation.
        failures: Attempts that failed for an endpoint reason (they open the circuit).
        overloads: Attempts answered 429 / with ``Retry-After`` (busy, not broken).
        rejected: Attempts answered with a non-retryable error (the request's fault).
        rerouted: Failed attempts whose request was then sent to another endpoint.
        opened: Times the circuit opened.
        probes / probe_failures: Health probes run / failed.
        in_flight: Attempts bound to this endpoint now.
        limit: Its concurrency limit now (adaptive limits change).
        last_error: The last failure's reason.
        transitions: ``(seconds since the fleet was created, from, to, why)`` per state change.
    """

    endpoint: str
    state: str = CircuitState.CLOSED.value
    requests: int = 0
    successes: int = 0
    failures: int = 0
    overloads: int = 0
    rejected: int = 0
    rerouted: int = 0
    opened: int = 0
    probes: int = 0
    probe_failures: int = 0
    in_flight: int = 0
    limit: int = 0
    last_error: str = ""
    transitions: list[tuple[float, str, str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        d = asdict(self)
        d["transitions"] = [list(t) for t in self.transitions]
        return d


class _Member:
    """A member backend with its breaker state and counters."""

    def __init__(self, backend: GenerationBackend, name: str, cooldown: float) -> None:
        self.backend = backend
        self.name = name
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.outstanding = 0
        self.trial_in_flight = False
        self.cooldown = cooldown
        self.retry_at = 0.0
        self.last_pick = 0
        self.probe_task: asyncio.Task[None] | None = None
        self.stats = EndpointStats(endpoint=name)

    @property
    def limit(self) -> int:
        limit = getattr(self.backend, "concurrency_limit", None)
        return int(limit) if limit is not None else self.backend.max_concurrency

    def admits(self) -> bool:
        if self.state is CircuitState.CLOSED:
            return self.outstanding < self.limit
        if self.state is CircuitState.HALF_OPEN:
            return not self.trial_in_flight
        return False


def _member_name(backend: GenerationBackend) -> str:
    safe = getattr(backend, "safe_endpoint", None)
    if isinstance(safe, str):
        return safe
    endpoint = getattr(backend, "endpoint", None)
    return sanitize_url(endpoint) if isinstance(endpoint, str) else repr(backend)


class FleetBackend(GenerationBackend):
    """One backend over several endpoints serving the same model (see the module docstring).

    Args:
        members: The member backends, normally one :class:`~hf_context_synthesis.backends.tgi.TGIBackend`
            per endpoint. Members with ``attempt(request)`` (one attempt raising
            :class:`RetryableError` / :class:`FatalRequestError`) are driven attempt by attempt; others
            through ``generate`` (an error result then counts as an endpoint failure).
        failure_threshold: Consecutive endpoint failures that open an endpoint's circuit.
        cooldown: Seconds an opened circuit waits before its first probe (doubles after each failed
            probe or failed half-open trial, up to ``max_cooldown``).
        max_cooldown: Upper bound of the cool-down.
        probe_timeout: Seconds a health probe may take.
        no_healthy_timeout: Seconds the fleet may have no healthy endpoint before
            :class:`NoHealthyEndpointError` is raised.
        retry_policy: Backoff between attempts when no other endpoint can take a request, and the
            retry budget (``max_retries + len(members)`` failed attempts). Default: the first member's
            ``config.retry_policy``, else :class:`RetryPolicy()`.
    """

    kind = "fleet"

    def __init__(
        self,
        members: Sequence[GenerationBackend],
        *,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        max_cooldown: float = 60.0,
        probe_timeout: float = 10.0,
        no_healthy_timeout: float = 120.0,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        members = list(members)
        if not members:
            raise ValueError("FleetBackend needs at least one member backend")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown <= 0 or max_cooldown < cooldown:
            raise ValueError(f"need 0 < cooldown <= max_cooldown, got {cooldown} / {max_cooldown}")
        if probe_timeout <= 0 or no_healthy_timeout < 0:
            raise ValueError("probe_timeout must be > 0 and no_healthy_timeout >= 0")
        names = [_member_name(m) for m in members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"the same endpoint appears more than once in the fleet: {', '.join(duplicates)}")
        self.failure_threshold = int(failure_threshold)
        self.cooldown = float(cooldown)
        self.max_cooldown = float(max_cooldown)
        self.probe_timeout = float(probe_timeout)
        self.no_healthy_timeout = float(no_healthy_timeout)
        if retry_policy is None:
            config = getattr(members[0], "config", None)
            retry_policy = getattr(config, "retry_policy", None) or RetryPolicy()
        self.retry_policy = retry_policy
        self._members = [_Member(m, n, self.cooldown) for m, n in zip(members, names)]
        self._created = time.monotonic()
        self._picks = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._all_down_since: float | None = None
        self._model_id: str | None = None

    def __repr__(self) -> str:
        return f"FleetBackend([{', '.join(m.name for m in self._members)}])"

    # ------------------------------------------------------------------ public state

    @property
    def members(self) -> list[GenerationBackend]:
        """The member backends, in the order given."""
        return [m.backend for m in self._members]

    @property
    def endpoints(self) -> list[str]:
        """The members' sanitized endpoint URLs."""
        return [m.name for m in self._members]

    @property
    def max_concurrency(self) -> int:
        """Sum of the members' ``max_concurrency`` (what :meth:`stream` keeps in flight)."""
        return sum(m.backend.max_concurrency for m in self._members)

    @property
    def concurrency_limit(self) -> int:
        """Sum of the members' current limits (adaptive members change theirs)."""
        return sum(m.limit for m in self._members)

    def states(self) -> dict[str, CircuitState]:
        """Sanitized endpoint -> circuit state."""
        return {m.name: m.state for m in self._members}

    def endpoint_stats(self) -> list[EndpointStats]:
        """A snapshot of every member's counters (see :class:`EndpointStats`)."""
        out = []
        for m in self._members:
            s = EndpointStats(**{**asdict(m.stats), "transitions": list(m.stats.transitions)})
            s.state = m.state.value
            s.in_flight = m.outstanding
            s.limit = m.limit
            out.append(s)
        return out

    # ------------------------------------------------------------------ model

    async def model_id(self) -> str:
        """The model every endpoint serves (``config.model``, else each member's discovered model).

        Unreachable endpoints are skipped (with a warning). Raises ``ValueError`` if endpoints report
        different models, :class:`ModelDiscoveryError` if an endpoint cannot tell (e.g. it serves
        several) and :class:`EndpointUnreachableError` if none can be reached. The model id, never a
        URL, is what cache keys and cards record.
        """
        if self._model_id is not None:
            return self._model_id

        async def ask(member: _Member) -> str | Exception:
            try:
                return await member.backend.model_id()
            except (EndpointUnreachableError, ModelDiscoveryError) as exc:
                return exc

        answers = await asyncio.gather(*(ask(m) for m in self._members))
        models = {m.name: a for m, a in zip(self._members, answers) if isinstance(a, str)}
        distinct = sorted(set(models.values()))
        if len(distinct) > 1:
            listing = ", ".join(f"{url}: {model}" for url, model in models.items())
            raise ValueError(f"the fleet's endpoints serve different models ({listing}); a fleet needs one model")
        undecided = [a for a in answers if isinstance(a, ModelDiscoveryError)]
        if undecided and not distinct:
            raise undecided[0]
        if not distinct:
            if len(self._members) == 1:
                raise answers[0]  # type: ignore[misc]
            raise EndpointUnreachableError(
                "cannot reach any generation endpoint: " + "; ".join(str(a) for a in answers)
            )
        self._model_id = distinct[0]
        missing = [m.name for m in self._members if m.name not in models]
        if missing:
            logger.warning("fleet endpoints %s did not report a model id (unreachable?)", ", ".join(missing))
        return self._model_id

    # ------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run ``request`` on the fleet (routing, re-routing, retries; see the module docstring).

        Failures come back as ``GenerationResult(error=...)``; only :class:`NoHealthyEndpointError`
        (and cancellation) propagate.
        """
        budget = self.retry_policy.max_retries + len(self._members)
        attempts = failures = 0
        avoid: set[_Member] = set()
        used: set[str] = set()
        while True:
            member = await self._acquire(avoid)
            attempts += 1
            used.add(member.name)
            member.stats.requests += 1
            try:
                result = await self._attempt_on(member, request)
            except RetryableError as exc:
                overload = exc.status == 429 or exc.retry_after is not None
                self._release(member)
                self._on_failure(member, exc.reason, overload)
                failures += 1
                if failures > budget:
                    reason = f"{exc.reason} (after {attempts} attempts on {len(used)} endpoint(s))"
                    logger.warning("fleet request %s failed: %s", request.key, reason)
                    return GenerationResult(key=request.key, error=reason, attempts=attempts)
                avoid.add(member)
                healthy = {m for m in self._members if m.state is not CircuitState.OPEN}
                if overload or healthy <= avoid:
                    avoid.clear()
                    await asyncio.sleep(self.retry_policy.delay(failures, exc.retry_after))
                else:
                    member.stats.rerouted += 1
                    logger.info("fleet request %s failed on %s (%s); re-routing", request.key, member.name, exc.reason)
                continue
            except FatalRequestError as exc:
                self._release(member)
                member.stats.rejected += 1
                self._on_alive(member)
                if exc.stops_run:
                    raise EndpointRouteError(exc.reason) from None
                logger.warning("fleet request %s rejected by %s: %s", request.key, member.name, exc.reason)
                return GenerationResult(key=request.key, error=exc.reason, attempts=attempts)
            except Exception as exc:  # noqa: BLE001 - generate() must not raise for one request
                self._release(member)
                if member.state is CircuitState.HALF_OPEN:
                    member.trial_in_flight = False
                reason = f"unexpected {type(exc).__name__} on {member.name}"
                logger.warning("fleet request %s failed: %s", request.key, reason)
                return GenerationResult(key=request.key, error=reason, attempts=attempts)
            except BaseException:  # cancellation
                self._release(member)
                if member.state is CircuitState.HALF_OPEN:
                    member.trial_in_flight = False
                raise
            self._release(member)
            self._on_success(member)
            result.attempts = attempts
            result.extra = {**result.extra, "endpoint": member.name}
            return result

    async def _attempt_on(self, member: _Member, request: GenerationRequest) -> GenerationResult:
        attempt = getattr(member.backend, "attempt", None)
        if attempt is not None:
            return await attempt(request)
        result = await member.backend.generate(request)
        if not result.ok:
            raise RetryableError(result.error or "unknown error")
        return result

    # ------------------------------------------------------------------ routing

    def _loop_state(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._changed is None:
            # A new event loop: whatever was bound to the old one is gone.
            self._loop = loop
            self._changed = asyncio.Event()
            for m in self._members:
                m.outstanding = 0
                m.trial_in_flight = False
                m.probe_task = None
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _acquire(self, avoid: set[_Member]) -> _Member:
        """Wait for a free slot on the best admissible endpoint (outside ``avoid`` if possible)."""
        while True:
            changed = self._loop_state()
            for m in self._members:
                if m.state is CircuitState.OPEN and (m.probe_task is None or m.probe_task.done()):
                    m.probe_task = asyncio.ensure_future(self._probe_loop(m))
            candidates = [m for m in self._members if m.admits() and m not in avoid]
            if not candidates and avoid:
                # Only endpoints that already failed this request are admissible: wait for the others
                # unless none of them is usable.
                others = [m for m in self._members if m not in avoid and m.state is not CircuitState.OPEN]
                if not others:
                    candidates = [m for m in self._members if m.admits()]
            if candidates:
                best = min(candidates, key=lambda m: (m.outstanding / max(1, m.limit), m.last_pick))
                best.outstanding += 1
                best.last_pick = next(self._picks)
                if best.state is CircuitState.HALF_OPEN:
                    best.trial_in_flight = True
                return best
            timeout = 1.0
            if self._all_unhealthy():
                now = time.monotonic()
                if self._all_down_since is None:
                    self._all_down_since = now
                waited = now - self._all_down_since
                if waited >= self.no_healthy_timeout:
                    raise NoHealthyEndpointError({m.name: m.stats.last_error for m in self._members}, waited)
                timeout = min(timeout, self.no_healthy_timeout - waited)
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(0.01, timeout))
            except asyncio.TimeoutError:
                pass

    def _all_unhealthy(self) -> bool:
        return not any(
            m.state is CircuitState.CLOSED or (m.state is CircuitState.HALF_OPEN and m.trial_in_flight)
            for m in self._members
        )

    def _release(self, member: _Member) -> None:
        member.outstanding -= 1
        self._notify()

    # ------------------------------------------------------------------ breaker

    def _transition(self, member: _Member, new: CircuitState, why: str) -> None:
        old = member.state
        if old is new:
            return
        member.state = new
        member.stats.transitions.append((round(time.monotonic() - self._created, 3), old.value, new.value, why))
        if new is CircuitState.OPEN:
            member.stats.opened += 1
            member.retry_at = time.monotonic() + member.cooldown
            member.trial_in_flight = False
            if member.probe_task is None or member.probe_task.done():
                member.probe_task = asyncio.ensure_future(self._probe_loop(member))
            logger.warning("fleet endpoint %s taken out (%s); probing again in %.1fs", member.name, why, member.cooldown)
        elif new is CircuitState.CLOSED:
            member.cooldown = self.cooldown
            member.consecutive_failures = 0
            self._all_down_since = None
            logger.info("fleet endpoint %s back in service (%s)", member.name, why)
        else:
            logger.info("fleet endpoint %s half-open (%s): sending one trial request", member.name, why)
        if new is CircuitState.OPEN and self._all_unhealthy() and self._all_down_since is None:
            self._all_down_since = time.monotonic()
        self._notify()

    def _on_success(self, member: _Member) -> None:
        member.stats.successes += 1
        self._on_alive(member)

    def _on_alive(self, member: _Member) -> None:
        member.consecutive_failures = 0
        if member.state is CircuitState.HALF_OPEN:
            member.trial_in_flight = False
            self._transition(member, CircuitState.CLOSED, "trial request succeeded")

    def _on_failure(self, member: _Member, reason: str, overload: bool) -> None:
        member.stats.last_error = reason
        if overload:
            member.stats.overloads += 1
            if member.state is CircuitState.HALF_OPEN:
                member.trial_in_flight = False  # alive but busy: let another trial through
            return
        member.stats.failures += 1
        member.consecutive_failures += 1
        if member.state is CircuitState.HALF_OPEN:
            member.cooldown = min(self.max_cooldown, member.cooldown * 2)
            self._transition(member, CircuitState.OPEN, f"trial request failed: {reason}")
        elif member.state is CircuitState.CLOSED and member.consecutive_failures >= self.failure_threshold:
            self._transition(member, CircuitState.OPEN, f"{member.consecutive_failures} consecutive failures, last: {reason}")

    async def _probe_loop(self, member: _Member) -> None:
        """While ``member`` is open: wait out its cool-down, probe, and half-open it once a probe passes."""
        while member.state is CircuitState.OPEN:
            await asyncio.sleep(max(0.0, member.retry_at - time.monotonic()))
            if member.state is not CircuitState.OPEN:
                return
            ok = await self._probe(member)
            if member.state is not CircuitState.OPEN:
                return
            if ok:
                self._transition(member, CircuitState.HALF_OPEN, "health probe passed")
                return
            member.stats.probe_failures += 1
            member.cooldown = min(self.max_cooldown, member.cooldown * 2)
            member.retry_at = time.monotonic() + member.cooldown
            logger.info("fleet endpoint %s: health probe failed; next probe in %.1fs", member.name, member.cooldown)

    async def _probe(self, member: _Member) -> bool:
        member.stats.probes += 1
        health = getattr(member.backend, "health", None)
        if health is None:
            return True  # no probe available: the half-open trial request is the probe
        try:
            return bool(await asyncio.wait_for(health(), self.probe_timeout))
        except (asyncio.TimeoutError, OSError):
            return False
        except Exception as exc:  # noqa: BLE001 - a failing probe is a failed probe
            logger.debug("fleet endpoint %s: probe raised %s", member.name, type(exc).__name__)
            return False

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Stop the probes and close every member."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        tasks = [m.probe_task for m in self._members if m.probe_task is not None and not m.probe_task.done()]
        if loop is not None and loop is self._loop:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        for m in self._members:
            m.probe_task = None
        for st in self.endpoint_stats():
            if st.requests:
                logger.info(
                    "fleet endpoint %s: %s, %d attempts, %d ok, %d failed, %d overloaded, %d re-routed, opened %d times",
                    st.endpoint, st.state, st.requests, st.successes, st.failures, st.overloads, st.rerouted, st.opened,
                )
        for m in self._members:
            await m.backend.aclose()
