"""The model ids discovered on endpoints in this process (TGI ``/info``, ``GET /v1/models``), remembered
so one run asks each endpoint set once; :meth:`SynthesisConfig.generator_label` reads it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..utils.urls import sanitize_url

__all__ = ["DISCOVERY_TTL", "discovered_model", "recent_model", "remember_model"]

#: Seconds a discovery answer is reused by :func:`resolve_generator_model` within one process.
DISCOVERY_TTL = 30.0


_discovered: dict[tuple[str, ...], tuple[float, str]] = {}


def _endpoint_key(endpoints: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(sanitize_url(e).rstrip("/") for e in endpoints))


def discovered_model(endpoints: Sequence[str]) -> str | None:
    """The model id last discovered for these endpoints in this process, if any."""
    hit = _discovered.get(_endpoint_key(endpoints))
    return hit[1] if hit else None


def remember_model(endpoints: Sequence[str], model: str) -> None:
    """Record a discovered model id (see :func:`discovered_model`)."""
    _discovered[_endpoint_key(endpoints)] = (time.monotonic(), model)


def recent_model(endpoints: Sequence[str], ttl: float = DISCOVERY_TTL) -> str | None:
    """The model id discovered for these endpoints less than ``ttl`` seconds ago, if any."""
    hit = _discovered.get(_endpoint_key(endpoints))
    return hit[1] if hit is not None and time.monotonic() - hit[0] < ttl else None
