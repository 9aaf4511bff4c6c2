"""Seeds -> synthesis requests -> backend -> durable cache: the generation phase of a run.

:class:`ContextSynthesizer` turns every valid seed pair into one accepted context (or a recorded
failure). Finished generations go to the :class:`~hf_context_synthesis.synthesis.cache.GenerationCache` the
moment they arrive; already-cached ones make no request. Unusable outputs (no ``Context:`` marker,
empty, refused, filtered) are retried with a new sampling seed up to ``max_generation_attempts``;
see :mod:`hf_context_synthesis.synthesis.quality` for the filters and the near-duplicate post-pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

from ..backends.base import GenerationBackend, GenerationRequest, RequestQueue
from ..backends.errors import failure_key
from .cache import GenerationCache, request_key
from .config import SynthesisConfig
from ..utils.progress import RequestProgress
from .prompts import DEFAULT_SYSTEM_PROMPT, parse_context, render_synthesis_messages, unparsed_reason
from .report import SynthesisReport
from .seeds import SeedExample, load_seeds

logger = logging.getLogger(__name__)

#: ``validator(text, seed) -> (context, reason)``: the accepted context, or ``None`` and why not.
Validator = Callable[[str, SeedExample], "tuple[str | None, str | None]"]


@dataclass
class SynthesisResult:
    """Outcome of the generation phase.

    Args:
        seeds: The valid seed pairs, in seed order.
        context_keys: ``seed index -> cache key`` of each accepted context.
        failures: ``seed index -> reason`` for seeds without a usable context.
        report: Counters of the run.
        model_id: The generator's id.
        cache: The cache that holds the texts (read contexts with :meth:`context`).
    """

    seeds: list[SeedExample]
    context_keys: dict[int, str]
    failures: dict[int, str]
    report: SynthesisReport
    model_id: str
    cache: GenerationCache
    require_marker: bool = True
    #: ``seed index -> generation attempts`` its accepted context took (1 = accepted at once).
    attempts: dict[int, int] | None = None

    def context(self, index: int) -> str:
        """The accepted context of seed ``index`` (read from the cache, parsed)."""
        text = self.cache.get(self.context_keys[index])
        if text is None:  # pragma: no cover - cache deleted under us
            raise KeyError(f"context of seed {index} vanished from the cache {self.cache.path}")
        context = parse_context(text, require_marker=self.require_marker)
        assert context is not None
        return context

    def provenance(self, index: int) -> dict[str, Any]:
        """How seed ``index``'s accepted context was generated: ``attempts`` (generations it took, 1 =
        accepted at once), ``finish_reason`` (``"stop"``/``"length"``, ``None`` if the server gave
        none), ``tokens_in`` / ``tokens_out`` of the accepted generation."""
        meta = self.cache.meta(self.context_keys[index]) or {}
        return {
            "attempts": (self.attempts or {}).get(index),
            "finish_reason": meta.get("finish_reason"),
            "tokens_in": meta.get("tokens_in"),
            "tokens_out": meta.get("tokens_out"),
        }


def default_validator(config: SynthesisConfig) -> Validator:
    """The paper's parsing (text after the first ``Context:``) plus the configured quality filters."""
    from .quality import QualityConfig, validate_generation

    if config.quality is not False:
        qconf = config.quality if isinstance(config.quality, QualityConfig) else None

        def validate(text: str, seed: SeedExample) -> tuple[str | None, str | None]:
            return validate_generation(
                text, seed.instruction, seed.answer, qconf, require_context_marker=config.require_context_marker
            )

        return validate

    def validate_plain(text: str, seed: SeedExample) -> tuple[str | None, str | None]:
        context = parse_context(text, require_marker=config.require_context_marker)
        if context is None:
            return None, unparsed_reason(text, require_marker=config.require_context_marker)
        return context, None

    return validate_plain


def sampling_seed(random_seed: int, messages: tuple[dict[str, str], ...], attempt: int) -> int:
    """Per-request sampling seed: depends on the run's ``random_seed``, the prompt and the attempt only."""
    h = hashlib.sha256(f"{random_seed}|{attempt}|{messages!r}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def default_cache_path(config: SynthesisConfig, datasets_cache_dir: str | None = None) -> str:
    """Where the generation cache lives: ``generation_cache_dir``, else inside the datasets cache."""
    if config.generation_cache_dir:
        return os.path.join(config.generation_cache_dir, "generations.sqlite")
    if datasets_cache_dir is None:
        import datasets

        datasets_cache_dir = datasets.config.HF_DATASETS_CACHE
    return os.path.join(os.fspath(datasets_cache_dir), "context_synthesis", "generations.sqlite")


class ContextSynthesizer:
    """Runs the generation phase of ``config``.

    Args:
        config: The run's settings.
        backend: A backend to use (default: built from ``config`` by :func:`make_backend`).
        cache: The generation cache (default: :func:`default_cache_path`).
        validator: Output check (default: :func:`default_validator`).
        render: ``item -> chat messages`` of the request for one item (default: the synthesis prompt
            of a seed pair); with ``validator``, lets other generation tasks share this machinery.

    With the default validator and prompt, ``config.quality`` also applies its seed-level check
    (answer leaked into the instruction) and, after all generations are settled, the near-duplicate
    post-pass over the accepted contexts in seed order (later duplicates fail with ``near_duplicate``).
    Every seed ends up either accepted or in ``failures`` with its reason.
    """

    def __init__(
        self,
        config: SynthesisConfig,
        *,
        backend: GenerationBackend | None = None,
        cache: GenerationCache | None = None,
        validator: Validator | None = None,
        render: Callable[[Any], tuple[dict[str, str], ...]] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.render = render
        #: A folder the preflight checks for writability before any request (e.g. the CLI's --output).
        self.output_dir = output_dir
        self._backend = backend
        # not `cache or ...`: an empty GenerationCache is falsy (it has __len__)
        self.cache = cache if cache is not None else GenerationCache(default_cache_path(config))
        self.validator = validator or default_validator(config)
        quality = config.quality
        #: The quality settings for seed-level checks and the near-duplicate post-pass (``None``: off).
        self.quality = None
        if quality is not False:
            from .quality import QualityConfig

            self.quality = quality if isinstance(quality, QualityConfig) else QualityConfig()
        #: Whether the seed-level check and the near-duplicate post-pass run (default prompt and
        #: validator only: other generation tasks, e.g. instruction synthesis, bring their own checks).
        self.context_checks = render is None and validator is None and self.quality is not None

    def run(self, seeds: list[SeedExample] | None = None) -> SynthesisResult:
        """Synthesize (or read from cache) one context per seed. Blocking; see :meth:`arun`."""
        from ..backends.base import run_coro

        return run_coro(self.arun(seeds))

    async def arun(self, seeds: list[SeedExample] | None = None) -> SynthesisResult:
        config = self.config
        report = SynthesisReport()
        if seeds is None:
            loaded = load_seeds(config)
            seeds = loaded.examples
            report.rejected_rows = loaded.rejected_rows
            report.rejected_reasons = dict(loaded.rejected)
        report.seeds = len(seeds) + report.rejected_rows
        report.requested = len(seeds)

        backend = self._backend
        owns_backend = backend is None
        if backend is None:
            from .backend import make_backend

            backend = make_backend(config)
        try:
            from .preflight import run_preflight

            checked = await run_preflight(config, backend, lambda: self._longest_prompts(seeds), output_dir=self.output_dir)
            model_id = checked.model_id
            self.max_new_tokens = checked.max_new_tokens
            result = await self._generate(seeds, backend, model_id, report)
        finally:
            if owns_backend:
                await backend.aclose()
        # the generation phase's own counts: composed examples are counted later, when rows are written
        logger.info("Context synthesis: %s", report.summary(include_examples=False))
        for reason, count in sorted(report.filter_reasons.items()):
            logger.info("Filtered %d output(s) as %s, e.g.: %s", count, reason, report.filter_examples.get(reason, "-"))
        return result

    def _longest_prompts(self, seeds: list[Any], k: int = 8) -> Any:
        """``(seed_id, messages)`` of the prompts most likely to be the longest, for the context-window check.

        With the default prompt only the ``k`` seeds with the longest instruction + answer + task are
        rendered (the template around them is the same for all); a custom ``render`` renders every item.
        """
        import heapq

        if self.render is None:
            order = heapq.nlargest(
                k, range(len(seeds)), key=lambda i: len(seeds[i].instruction) + len(seeds[i].answer) + len(seeds[i].task or "")
            )
        else:
            order = range(len(seeds))
        for i in order:
            yield getattr(seeds[i], "seed_id", i), self._messages(seeds[i])

    def _messages(self, seed: Any) -> tuple[dict[str, str], ...]:
        """The chat messages of the request for one seed (or item, with a custom ``render``)."""
        if self.render is not None:
            return self.render(seed)
        config = self.config
        return render_synthesis_messages(
            seed.instruction,
            seed.answer,
            task=seed.task,
            context_words=config.context_words,
            template=config.prompt_template,
            system_prompt=config.system_prompt if config.system_prompt is not None else DEFAULT_SYSTEM_PROMPT,
        )

    async def _generate(
        self, seeds: list[SeedExample], backend: GenerationBackend, model_id: str, report: SynthesisReport
    ) -> SynthesisResult:
        config = self.config
        max_new_tokens = int(getattr(self, "max_new_tokens", None) or config.resolved_max_new_tokens)
        settings = {
            "api": config.api,
            "max_new_tokens": max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        # the embedded backend's own decoding settings (repetition guards) change its outputs
        settings.update(getattr(backend, "sampling_settings", dict)())
        context_keys: dict[int, str] = {}
        failures: dict[int, str] = {}
        attempts: dict[int, int] = {}
        accepted_attempts: dict[int, int] = {}
        #: request key -> seeds waiting for it (identical seed pairs share one request).
        key_to_seeds: dict[str, list[int]] = {}
        qconf = self.quality
        dedup = self.context_checks and qconf is not None and qconf.near_duplicate_threshold is not None
        hasher = None
        if dedup:
            from .quality import MinHasher

            hasher = MinHasher(num_perm=qconf.num_perm, shingle_words=qconf.shingle_words)
        #: MinHash signatures of accepted contexts, computed as results arrive on a worker thread (its
        #: numpy work overlaps the event loop and the network wait); the order-dependent near-duplicate
        #: pass runs on them after generation, in seed order.
        signatures: dict[int, Any] = {}
        hashing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="minhash") if hasher else None

        def messages_of(i: int) -> tuple[dict[str, str], ...]:
            return self._messages(seeds[i])

        def make_request(i: int) -> GenerationRequest:
            msgs = messages_of(i)
            seed_value = sampling_seed(config.random_seed, msgs, attempts[i])
            key = request_key(msgs, model_id, {**settings, "seed": seed_value})
            return GenerationRequest(
                key=key,
                messages=msgs,
                max_new_tokens=max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=seed_value,
            )

        # advances per finished request (cache hits do not enter the rate), with output tokens/s
        bar = RequestProgress(total=len(seeds), desc="Synthesizing contexts", unit="seed", enabled=config.progress)
        key_of: dict[int, str] = {}

        def judge(i: int, text: str) -> bool:
            """Validate a text for seed i: True when settled (accepted or out of attempts)."""
            context, reason = self.validator(text, seeds[i])
            if context is not None:
                context_keys[i] = key_of[i]
                accepted_attempts[i] = attempts[i] + 1
                if hashing is not None:
                    signatures[i] = hashing.submit(hasher.signature, context)
                bar.update(1)
                return True
            report.note_filtered(reason or "unknown", text, (i, attempts[i]))
            attempts[i] += 1
            if attempts[i] >= config.max_generation_attempts:
                fail(i, reason or "unknown")
                return True
            return False

        def fail(i: int, reason: str) -> None:
            failures[i] = reason  # the full reason per seed; the report groups by a normalized key
            report.count("failure", failure_key(reason))
            bar.update(1)

        def schedule(i: int) -> GenerationRequest | None:
            """Walk seed i's attempts through the cache; return the request to make, if any."""
            while True:
                req = make_request(i)
                key_of[i] = req.key
                waiting = key_to_seeds.get(req.key)
                if waiting is not None:  # the same request is already in flight for an identical seed
                    waiting.append(i)
                    return None
                cached = self.cache.get(req.key)
                if cached is None and not self.cache.claim(req.key):
                    # another run on this cache is generating this very request: wait for its result
                    deferred[i] = req
                    return None
                if cached is None:
                    key_to_seeds[req.key] = [i]
                    if attempts[i] > 0:  # a new sampling seed because the previous output was unusable
                        report.regenerated += 1
                    return req
                report.cached += 1
                with bar.from_cache():
                    settled = judge(i, cached)
                if settled:
                    return None

        def seed_rejected(i: int) -> bool:
            """Seed-level checks (before any request): flag or drop answers leaked into the instruction."""
            if not self.context_checks or qconf is None or qconf.answer_in_instruction == "ignore":
                return False
            from .quality import answer_in_instruction

            if not answer_in_instruction(seeds[i].instruction, seeds[i].answer, qconf):
                return False
            if qconf.answer_in_instruction == "drop":
                fail(i, "answer_in_instruction")
                return True
            report.count("flagged", "answer_in_instruction")
            return False

        def fresh_requests():
            for i in range(len(seeds)):
                attempts[i] = 0
                if seed_rejected(i):
                    continue
                req = schedule(i)
                if req is not None:
                    yield req

        #: seed -> request another run (another process on the same cache) has claimed and is making.
        deferred: dict[int, GenerationRequest] = {}

        async def run_stream(queue: RequestQueue) -> None:
            async for res in backend.stream(queue):
                waiting = key_to_seeds.pop(res.key, None)
                if waiting is None:  # pragma: no cover - a backend answering a request twice
                    logger.warning("ignoring an unexpected second result for request %s", res.key[:12])
                    continue
                report.requests += 1
                report.attempts += max(1, res.attempts)
                report.transport_retries += max(0, res.attempts - 1)
                bar.request_done(res.tokens_out if res.ok else 0)
                if res.ok:
                    self.cache.put(res.key, res.text, model=model_id, tokens_in=res.tokens_in, tokens_out=res.tokens_out,
                                   finish_reason=(res.extra or {}).get("finish_reason"))
                    report.generated += 1
                    report.tokens_in += res.tokens_in
                    report.tokens_out += res.tokens_out
                else:
                    self.cache.release(res.key)
                for i in waiting:
                    if not res.ok:
                        fail(i, res.error or "unknown")  # the backend already retried transient errors
                    elif not judge(i, res.text):
                        nxt = schedule(i)
                        if nxt is not None:
                            queue.push(nxt)

        async def await_deferred() -> list[GenerationRequest]:
            """Wait until another run's claimed requests land in the cache (or it gives them up); judge
            them like cache hits and return the requests still to make here."""
            todo: list[GenerationRequest] = []
            delay = 0.05
            while deferred and not todo:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                found = self.cache.get_many([req.key for req in deferred.values()])
                for i, req in list(deferred.items()):
                    text = found.get(req.key)
                    if text is None and self.cache.claimed_elsewhere(req.key):
                        continue  # still being generated there
                    del deferred[i]
                    if text is not None:
                        report.cached += 1
                        with bar.from_cache():
                            if judge(i, text):
                                continue
                    nxt = schedule(i)  # the next attempt, or the same request if the other run gave it up
                    if nxt is not None:
                        todo.append(nxt)
            return todo

        start = time.perf_counter()
        try:
            queue = RequestQueue(fresh_requests())
            while True:
                await run_stream(queue)
                if not deferred:
                    break
                queue = RequestQueue(await await_deferred())
        except BaseException:
            if hashing is not None:  # the run is stopping: no signature is needed any more
                hashing.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            report.wall_time_s = time.perf_counter() - start
            bar.close()
            for key in list(key_to_seeds):  # requests still in flight when the run stopped: free them
                self.cache.release(key)
        for i in range(len(seeds)):  # every seed is accounted for, whatever the backend did
            if i not in context_keys and i not in failures:
                logger.warning("seed %s got no result from the backend; recorded as failed", seeds[i].seed_id)
                failures[i] = "no_result"
                report.count("failure", "no_result")
        if hashing is not None:
            hashing.shutdown(wait=True)
            signatures = {i: f.result() for i, f in signatures.items()}
        if dedup:
            self._drop_near_duplicates(seeds, context_keys, signatures, failures, report, qconf)
        report.retried = report.transport_retries + report.regenerated
        report.failed = len(failures)
        report.failed_seeds = {str(getattr(seeds[i], "seed_id", i)): failures[i] for i in sorted(failures)}
        report.filtered = sum(report.filter_reasons.values())
        report.synthesized = len(context_keys)
        return SynthesisResult(
            seeds=seeds,
            context_keys=context_keys,
            failures=failures,
            report=report,
            model_id=model_id,
            cache=self.cache,
            require_marker=config.require_context_marker,
            attempts=accepted_attempts,
        )

    def _drop_near_duplicates(
        self,
        seeds: list[SeedExample],
        context_keys: dict[int, str],
        signatures: dict[int, Any],
        failures: dict[int, str],
        report: SynthesisReport,
        qconf: Any,
    ) -> None:
        """Move accepted contexts that near-duplicate an earlier one (in seed order) to ``failures``."""
        from .quality import near_duplicates_of_signatures

        duplicates = near_duplicates_of_signatures(
            ((i, signatures.pop(i)) for i in sorted(context_keys)), qconf.near_duplicate_threshold, qconf.num_perm
        )
        for i, first in sorted(duplicates.items()):
            logger.debug("seed %s: context near-duplicates seed %s's; dropped", seeds[i].seed_id, seeds[first].seed_id)
            del context_keys[i]
            failures[i] = "near_duplicate"
            report.count("failure", "near_duplicate")
        if duplicates:
            logger.info("Dropped %d near-duplicate contexts", len(duplicates))
