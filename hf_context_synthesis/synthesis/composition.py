"""Compose long examples: the relevant context + distractors, shuffled, wrapped in the task template.

Composition is a pure function of the accepted contexts, the settings and ``random_seed``: each
example draws from its own RNG seeded by ``(random_seed, seed_id)``, and pools are ordered by seed
order, so the result does not depend on the order in which generations completed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .config import SynthesisConfig
from .seeds import SeedExample
from .task_templates import render_task_prompt, template_for

logger = logging.getLogger(__name__)


def example_rng(random_seed: int, seed_id: str) -> np.random.Generator:
    """The RNG of one example: independent of every other example and of completion order."""
    digest = hashlib.sha256(seed_id.encode("utf-8")).digest()
    return np.random.default_rng([int(random_seed) & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


def relevant_slot(rng: np.random.Generator, num_documents: int, position: str) -> int:
    """Index of the relevant document among ``num_documents``."""
    if position == "uniform":
        return int(rng.integers(0, num_documents))
    if position == "beginning":
        return 0
    if position == "end":
        return num_documents - 1
    if position == "middle":
        return num_documents // 2
    raise ValueError(f"unknown relevant_position {position!r}")


def sample_excluding(rng: np.random.Generator, pool_size: int, k: int, exclude: int | None) -> list[int]:
    """``k`` distinct indices of ``range(pool_size)`` in random order, never ``exclude``."""
    available = pool_size - (1 if exclude is not None else 0)
    k = min(k, available)
    if k <= 0:
        return []
    picks = rng.choice(pool_size, size=min(k + 1, pool_size), replace=False).tolist()
    return [p for p in picks if p != exclude][:k]


class TokenCounter:
    """Counts tokens with a tokenizer (memoized per key), or words without one."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        self._memo: dict[Any, int] = {}
        if tokenizer is None:  # once per run (one counter per composition)
            logger.warning(
                "no tokenizer: the num_tokens column counts whitespace-separated words, not tokens "
                "(set tokenizer=<id or path> for token counts)"
            )

    def __call__(self, text: str, key: Any = None) -> int:
        if key is not None and key in self._memo:
            return self._memo[key]
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if self.tokenizer else len(text.split())
        if key is not None:
            self._memo[key] = n
        return n

    def chat(self, messages: list[dict[str, str]]) -> int:
        tok = self.tokenizer
        if tok is None:
            return sum(len(m["content"].split()) for m in messages)
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            return len(ids)
        return len(tok("\n".join(m["content"] for m in messages), add_special_tokens=False)["input_ids"])


def compose_examples(
    seeds: Sequence[SeedExample],
    contexts: Callable[[int], str],
    accepted: Sequence[int],
    config: SynthesisConfig,
    *,
    generator: str,
    tokenizer: Any = None,
    distractor_texts: Sequence[str] | None = None,
    provenance: Callable[[int], dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one row (see :data:`~hf_context_synthesis.synthesis.schema.ROW_FEATURES`) per accepted seed.

    Args:
        seeds: All valid seeds (indices refer to this list).
        contexts: ``index -> context text`` of an accepted seed.
        accepted: Indices of the seeds that have a context, in seed order.
        config: Composition settings (``num_distractors``, ``target_tokens``, ``distractor_pool``,
            ``relevant_position``, ``separator``, ``task_templates``, ``expose_instruction``, ``random_seed``).
        generator: The generator id stored in each row.
        tokenizer: For ``num_tokens`` and ``target_tokens`` (words are counted without one).
        distractor_texts: An external distractor corpus (overrides ``distractor_pool``).
        provenance: ``index -> provenance`` of an accepted seed's context (the ``provenance`` column;
            unknown fields without it).
    """
    from .schema import UNKNOWN_PROVENANCE

    if config.target_tokens is not None and tokenizer is None:
        logger.warning("target_tokens without a tokenizer: lengths are counted in words")
    counter = TokenCounter(tokenizer)
    accepted = list(accepted)
    by_task: dict[str, list[int]] = {}
    for i in accepted:
        by_task.setdefault(seeds[i].task, []).append(i)
    small = [t for t, pool in by_task.items() if len(pool) - 1 < config.num_distractors]
    if small and distractor_texts is None and config.distractor_pool == "same_task" and config.target_tokens is None:
        logger.warning(
            "Tasks %s have fewer than %d other contexts: their examples get fewer distractors",
            small,
            config.num_distractors,
        )
    other_pools: dict[str, list[int]] = {}

    def pool_for(i: int) -> tuple[Sequence[Any], int | None, bool]:
        """(pool, position of i in pool or None, pool holds external texts)."""
        if distractor_texts is not None:
            return distractor_texts, None, True
        task = seeds[i].task
        if config.distractor_pool == "same_task":
            pool = by_task[task]
        elif config.distractor_pool == "other_tasks":
            if task not in other_pools:
                other_pools[task] = [j for j in accepted if seeds[j].task != task]
            return other_pools[task], None, False
        else:
            pool = accepted
        return pool, _index_in_sorted(pool, i), False

    for i in accepted:
        seed = seeds[i]
        rng = example_rng(config.random_seed, seed.seed_id)
        relevant = contexts(i)
        pool, self_pos, external = pool_for(i)

        def text_of(p: int) -> str:
            return pool[p] if external else contexts(pool[p])  # type: ignore[return-value]

        def key_of(p: int) -> Any:
            return ("x", p) if external else pool[p]

        if config.target_tokens is None:
            picks = sample_excluding(rng, len(pool), config.num_distractors, self_pos)
            distractors = [text_of(p) for p in picks]
        else:
            distractors = _fill_to_budget(rng, pool, self_pos, text_of, key_of, counter, seed, relevant, i, config)
        slot = relevant_slot(rng, len(distractors) + 1, config.relevant_position)
        documents = distractors[:slot] + [relevant] + distractors[slot:]
        template = template_for(seed.task, config.task_templates)
        prompt, spans = render_task_prompt(
            template, documents, seed.instruction, separator=config.separator, expose_instruction=config.expose_instruction
        )
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": seed.answer}]
        yield {
            "messages": messages,
            "task": seed.task,
            "seed_id": seed.seed_id,
            "instruction": seed.instruction,
            "answer": seed.answer,
            "relevant_context": relevant,
            "relevant_index": slot,
            "num_documents": len(documents),
            "context_spans": spans,
            "num_tokens": counter.chat(messages),
            "generator": generator,
            "provenance": provenance(i) if provenance is not None else dict(UNKNOWN_PROVENANCE),
        }


def _fill_to_budget(
    rng: np.random.Generator,
    pool: Sequence[Any],
    self_pos: int | None,
    text_of: Callable[[int], str],
    key_of: Callable[[int], Any],
    counter: TokenCounter,
    seed: SeedExample,
    relevant: str,
    index: int,
    config: SynthesisConfig,
) -> list[str]:
    """Distractors in random order, added while the example stays within ``target_tokens``.

    The budget counts the prompt template, the instruction and answer, every document and the
    separators; the example ends below the target by less than one document (the next candidate
    did not fit) or when the pool is exhausted.
    """
    target = int(config.target_tokens)  # type: ignore[arg-type]
    template = template_for(seed.task, config.task_templates)
    frame, _ = render_task_prompt(template, [], seed.instruction, expose_instruction=config.expose_instruction)
    sep_tokens = counter(config.separator, key=("sep", config.separator)) if config.separator.strip() else 0
    used = counter.chat([{"role": "user", "content": frame}, {"role": "assistant", "content": seed.answer}])
    used += counter(relevant, key=index)
    order = sample_excluding(rng, len(pool), len(pool), self_pos)
    chosen: list[str] = []
    for p in order:
        text = text_of(p)
        cost = counter(text, key=key_of(p)) + sep_tokens
        if used + cost > target:
            break
        used += cost
        chosen.append(text)
    return chosen


def _index_in_sorted(pool: Sequence[int], value: int) -> int | None:
    import bisect

    pos = bisect.bisect_left(pool, value)
    return pos if pos < len(pool) and pool[pos] == value else None
