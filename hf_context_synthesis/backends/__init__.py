"""Generation backends behind one small async interface (:class:`GenerationBackend`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .adaptive import AdaptiveLimiter
from .base import GenerationBackend, GenerationRequest, GenerationResult, RequestQueue, run_requests
from .fleet import EndpointStats, FleetBackend, NoHealthyEndpointError

if TYPE_CHECKING:
    from ..config import SynthesisConfig

__all__ = [
    "AdaptiveLimiter",
    "EndpointStats",
    "FleetBackend",
    "GenerationBackend",
    "GenerationRequest",
    "GenerationResult",
    "NoHealthyEndpointError",
    "RequestQueue",
    "make_backend",
    "run_requests",
]


def make_backend(config: "SynthesisConfig") -> GenerationBackend:
    """Build the backend ``config`` asks for: TGI (one endpoint), a fleet (several), or local transformers.

    One endpoint is a :class:`~hf_context_synthesis.backends.fleet.FleetBackend` of one member, so its
    circuit breaker applies too (an unreachable server ends the run within about a minute).
    With several endpoints each gets its own :class:`~hf_context_synthesis.backends.tgi.TGIBackend`
    (``max_concurrency`` and ``adaptive_concurrency`` apply per endpoint) behind one
    :class:`~hf_context_synthesis.backends.fleet.FleetBackend` (least-outstanding routing, circuit
    breakers, re-routing of failed requests).
    """
    endpoints = config.endpoints
    if not endpoints:
        from ..config import DEFAULT_GENERATOR_MODEL
        from .local import TransformersBackend

        return TransformersBackend(
            config.generator_model or DEFAULT_GENERATOR_MODEL,
            tokenizer=config.tokenizer,
            batch_size=config.batch_size,
            device=config.device,
        )
    from .tgi import TGIBackend, TGIBackendConfig

    def tgi(endpoint: str) -> TGIBackend:
        return TGIBackend(
            TGIBackendConfig(
                endpoint=endpoint,
                model=config.generator_model,
                api=config.api,
                tokenizer=config.tokenizer,
                max_concurrency=config.max_concurrency,
                adaptive_concurrency=bool(getattr(config, "adaptive_concurrency", False)),
                timeout=config.timeout,
                max_retries=config.max_retries,
                token=config.endpoint_token,
                headers=dict(config.headers or {}),
            )
        )

    if len(endpoints) == 1:
        # One endpoint is a fleet of one: its circuit breaker stops a run against a dead server within
        # about a minute (NoHealthyEndpointError naming the URL) instead of retrying every request.
        return FleetBackend(
            [tgi(endpoints[0])], failure_threshold=5, cooldown=1.0, max_cooldown=15.0, no_healthy_timeout=60.0
        )
    return FleetBackend([tgi(e) for e in endpoints])
