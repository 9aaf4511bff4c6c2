"""The model under test: a backend for a local model, an endpoint or a ready backend, and the tokenizer and
context window that LongBench's truncation reads (shared by the v1 and v2 runners)."""

from __future__ import annotations

import os
from typing import Any

from ..backends.base import GenerationBackend

__all__ = ["context_window", "evaluation_tokenizer", "load_tokenizer", "make_model_backend"]


def load_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` loaded with ``AutoTokenizer`` when it is a path or Hub id; objects and ``None`` pass through."""
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(tokenizer))


def make_model_backend(
    model_or_backend: Any, *, tokenizer: Any, batch_size: int, device: str | None
) -> tuple[GenerationBackend, bool]:
    """A backend for ``model_or_backend`` and whether we created it (and must close it)."""
    if isinstance(model_or_backend, GenerationBackend):
        return model_or_backend, False
    if isinstance(model_or_backend, str) and model_or_backend.startswith(("http://", "https://")):
        from ..backends.tgi import TGIBackend, TGIBackendConfig

        return TGIBackend(TGIBackendConfig(endpoint=model_or_backend, max_concurrency=batch_size)), True
    from ..backends.local import TransformersBackend

    model = os.fspath(model_or_backend) if isinstance(model_or_backend, os.PathLike) else model_or_backend
    return TransformersBackend(model, tokenizer=tokenizer, batch_size=batch_size, device=device), True


def evaluation_tokenizer(backend: Any, owned: bool, tokenizer: Any) -> Any:
    """The tokenizer that truncates prompts: the one an owned backend already loaded from ``tokenizer``,
    else ``tokenizer`` loaded here (object, path or Hub id), else the backend's own."""
    backend_tokenizer = getattr(backend, "tokenizer", None)
    if owned and backend_tokenizer is not None:
        return backend_tokenizer
    return load_tokenizer(tokenizer) or backend_tokenizer


def context_window(backend: Any, tokenizer_source: Any) -> int | None:
    """The model's context window: the local model's config, else the config beside the tokenizer."""
    config = getattr(getattr(backend, "model", None), "config", None)
    window = getattr(config, "max_position_embeddings", None)
    if window is None and isinstance(tokenizer_source, (str, os.PathLike)):
        try:
            from transformers import AutoConfig

            window = getattr(AutoConfig.from_pretrained(os.fspath(tokenizer_source)), "max_position_embeddings", None)
        except Exception:  # noqa: BLE001 - a tokenizer without a model config: the caller must say
            window = None
    return int(window) if window else None
