"""Generation backends behind one small async interface (:class:`GenerationBackend`)."""

from __future__ import annotations

from .adaptive import AdaptiveLimiter
from .base import GenerationBackend, GenerationRequest, GenerationResult, RequestQueue, run_requests
from .fleet import EndpointStats, FleetBackend, NoHealthyEndpointError

__all__ = [
    "AdaptiveLimiter",
    "EndpointStats",
    "FleetBackend",
    "GenerationBackend",
    "GenerationRequest",
    "GenerationResult",
    "NoHealthyEndpointError",
    "RequestQueue",
    "run_requests",
]
