"""One run end to end: seeds -> synthesis (cache) -> composition -> rows, plus the report."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..backends.base import GenerationBackend
from .cache import GenerationCache
from .composition import compose_examples
from .config import SynthesisConfig
from .backend import load_tokenizer
from .report import SynthesisError, SynthesisReport
from .generation import ContextSynthesizer, SynthesisResult, default_cache_path

logger = logging.getLogger(__name__)


def load_distractor_texts(config: SynthesisConfig) -> list[str] | None:
    """Texts of ``config.distractor_source`` (column ``text``, or the only string column)."""
    source = config.distractor_source
    if source is None:
        return None
    import datasets

    if isinstance(source, str):
        import os

        from .seeds import list_seed_files

        if os.path.isdir(source):
            files = list_seed_files(source)
        elif os.path.isfile(source):
            files = [source]
        else:
            files = None
        if files is not None:
            ext = os.path.splitext(files[0])[1].lstrip(".").replace("jsonl", "json")
            ds = datasets.load_dataset(ext, data_files=files, split="train")
        else:
            ds = datasets.load_dataset(source, split="train")
    else:
        ds = source
    column = "text" if "text" in ds.column_names else None
    if column is None:
        strings = [n for n, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        if len(strings) != 1:
            raise ValueError(f"distractor_source needs a 'text' column (columns: {ds.column_names})")
        column = strings[0]
    texts = [t for t in ds[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("distractor_source holds no non-empty texts")
    return texts


def synthesize_rows(
    config: SynthesisConfig,
    *,
    backend: GenerationBackend | None = None,
    cache: GenerationCache | None = None,
    datasets_cache_dir: str | None = None,
    output_dir: str | None = None,
) -> tuple[Iterator[dict[str, Any]], SynthesisReport]:
    """Run the generation phase now and return ``(rows, report)``; rows are composed lazily.

    ``report.examples`` is final once ``rows`` is exhausted. ``output_dir``, when given, is checked
    for writability by the preflight, before any request.
    """
    owns_backend = backend is None
    if backend is None:
        from .backend import make_backend

        backend = make_backend(config)
    if cache is None:  # not `cache or ...`: an empty GenerationCache is falsy (it has __len__)
        cache = GenerationCache(default_cache_path(config, datasets_cache_dir))
    try:
        if config.mode == "instruction_synthesis":
            from .instructions import instruction_rows

            return instruction_rows(config, backend=backend, cache=cache)
        result = ContextSynthesizer(config, backend=backend, cache=cache, output_dir=output_dir).run()
    finally:
        if owns_backend:
            from ..backends.base import run_coro

            run_coro(backend.aclose())
    if not result.context_keys:
        raise SynthesisError(
            f"No context could be synthesized: {result.report.failed} of {result.report.requested} seeds failed "
            f"(reasons: {result.report.failure_reasons}; first: {next(iter(result.report.failed_seeds.values()), '')}). "
            "Finished generations stay cached; fix the cause and rerun."
        )
    tokenizer = load_tokenizer(config, backend)
    return _rows(result, config, tokenizer), result.report


def _rows(result: SynthesisResult, config: SynthesisConfig, tokenizer: Any) -> Iterator[dict[str, Any]]:
    accepted = sorted(result.context_keys)
    rows = compose_examples(
        result.seeds,
        result.context,
        accepted,
        config,
        generator=result.model_id,
        tokenizer=tokenizer,
        distractor_texts=load_distractor_texts(config),
        provenance=result.provenance,
    )
    for row in rows:
        result.report.examples += 1
        yield row
