"""The generation backend a :class:`SynthesisConfig` asks for (``backends/`` knows no SynthesisConfig)."""

from __future__ import annotations

from typing import Any

from ..backends.base import GenerationBackend
from ..backends.fleet import FleetBackend
from ..utils.packaged_models import materialize_packaged_model
from .config import SynthesisConfig, embedded_generator_model

__all__ = ["RESPONSE_PREFIX", "load_tokenizer", "make_backend"]

#: The reply prefix of the embedded backend in context synthesis: the marker the prompt asks the reply
#: to start with and :func:`~hf_context_synthesis.synthesis.prompts.parse_context` looks for.
RESPONSE_PREFIX = "Context:"


def _wants_context_prefix(config: SynthesisConfig) -> bool:
    """Context synthesis with the ``Context:`` marker required (the paper's parsing)."""
    return config.mode == "context_synthesis" and bool(config.require_context_marker)


def make_backend(config: SynthesisConfig) -> GenerationBackend:
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
        from ..backends.local import TransformersBackend

        return TransformersBackend(
            embedded_generator_model(config.generator_model),
            tokenizer=config.tokenizer,
            batch_size=config.batch_size,
            device=config.device,
            progress=config.progress,
            # the prompt asks for a reply starting with "Context:": writing it for the model keeps small
            # models from echoing the prompt's scaffolding (acceptance measured in docs/generator-model.md)
            response_prefix=RESPONSE_PREFIX if _wants_context_prefix(config) else "",
        )
    from ..backends.tgi import TGIBackend, TGIBackendConfig

    def tgi(endpoint: str) -> TGIBackend:
        return TGIBackend(
            TGIBackendConfig(
                endpoint=endpoint,
                model=config.generator_model,
                api=config.api,
                tokenizer=config.tokenizer,
                max_concurrency=config.max_concurrency,
                adaptive_concurrency=config.adaptive_concurrency,
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


def load_tokenizer(config: SynthesisConfig, backend: GenerationBackend | None = None) -> Any:
    """The tokenizer for token counts: ``config.tokenizer``, else the embedded generator's, else None."""
    if backend is not None and getattr(backend, "tokenizer", None) is not None and config.tokenizer is None:
        return backend.tokenizer
    name = config.tokenizer
    # a merge of shards made through an endpoint counts like the shards did (not with the embedded model's)
    if name is None and not config.endpoints and not getattr(backend, "generated_by_endpoint", False):
        name = embedded_generator_model(config.generator_model)
    if name is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(materialize_packaged_model(name))
