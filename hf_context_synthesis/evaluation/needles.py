"""Needle-in-a-haystack difficulty probes built over a haystack of given contexts.

Four kinds, as in RULER's needle tasks (the facts are ``"One of the special magic numbers for
<key> is <7-digit number>."``):

* ``single``: one needle, asked for its number;
* ``multikey``: several needles with different keys, asked for one key (the others distract);
* ``multivalue``: several needles with the *same* key, asked for all its numbers;
* ``multiquery``: several needles with different keys, asked for all of them.

The haystack is made of the given contexts (e.g. synthesized documents, so probes look like the
training data), shuffled and cut to ``haystack_words`` words; needles go in at sentence boundaries
at chosen or random depths. :func:`generate_needle_examples` is a ``datasets`` generator function::

    ds = datasets.Dataset.from_generator(
        generate_needle_examples, gen_kwargs={"contexts": contexts, "num_examples": 50}, features=NEEDLE_FEATURES
    )

(:func:`make_needle_dataset` does exactly that). Rows carry ``messages`` (user prompt and the
reference assistant answer), ``answer``/``answers``, and where every needle is:
``needle_positions`` (``[start, end)`` character offsets in the user prompt) and ``needle_depths``
(relative position in the haystack, 0 = start, 1 = end). :func:`score_needle` scores a prediction
the RULER way (share of expected numbers it contains).
"""

from __future__ import annotations

import bisect
import logging
import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

import datasets

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NEEDLE_TEMPLATE",
    "NEEDLE_FEATURES",
    "NEEDLE_KINDS",
    "evaluate_needles",
    "generate_needle_examples",
    "make_needle_dataset",
    "score_needle",
]

NEEDLE_KINDS: tuple[str, ...] = ("single", "multikey", "multivalue", "multiquery")

#: User prompt; ``{context}`` is the haystack with the needles, ``{question}`` the query.
DEFAULT_NEEDLE_TEMPLATE = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize them. I will quiz "
    "you about the numbers afterwards.\n\n{context}\n\n{question} Answer with the numbers only."
)

NEEDLE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "answer": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "query_keys": datasets.List(datasets.Value("string")),
        "needles": datasets.List(datasets.Value("string")),
        "needle_keys": datasets.List(datasets.Value("string")),
        "needle_queried": datasets.List(datasets.Value("bool")),
        "needle_positions": datasets.List(datasets.List(datasets.Value("int64"))),
        "needle_depths": datasets.List(datasets.Value("float32")),
        "haystack_words": datasets.Value("int64"),
    }
)

_ADJECTIVES = (
    "amber azure brave calm crimson dusty eager fierce gentle golden hollow icy jolly keen lively misty noble "
    "olive proud quiet rapid rustic silent silver tidy urban vivid wild witty young zealous"
).split()
_NOUNS = (
    "anchor badger canyon dragon ember falcon glacier harbor island jaguar kettle lantern meadow nebula orchard "
    "pepper quarry raven saddle tundra umbrella valley walrus xylophone yarrow zephyr beacon comet delta fjord"
).split()

_WORD = re.compile(r"\S+")
_SENTENCE_START = re.compile(r"(?<=[.!?])\s+")


def _needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is {value}."


def _question(kind: str, keys: Sequence[str]) -> str:
    if kind in ("single", "multikey"):
        return f"What is the special magic number for {keys[0]} mentioned in the provided text?"
    if kind == "multivalue":
        return f"What are all the special magic numbers for {keys[0]} mentioned in the provided text?"
    joined = ", ".join(keys[:-1]) + f" and {keys[-1]}" if len(keys) > 1 else keys[0]
    return f"What are all the special magic numbers for {joined} mentioned in the provided text?"


def _haystack(contexts: Sequence[str], words: int, rng: random.Random) -> str:
    """Shuffled contexts joined by blank lines (cycled if too short), cut to ``words`` words."""
    order = list(range(len(contexts)))
    rng.shuffle(order)
    parts: list[str] = []
    total = 0
    i = 0
    while total < words:
        text = contexts[order[i % len(order)]].strip()
        i += 1
        if i == len(order) + 1:
            logger.info("Needle haystack: the contexts hold fewer than %d words; reusing them", words)
        n = len(_WORD.findall(text))
        if n == 0:
            continue
        parts.append(text)
        total += n
    text = "\n\n".join(parts)
    spans = list(_WORD.finditer(text))
    return text[: spans[min(words, len(spans)) - 1].end()]


def _boundaries(text: str) -> list[int]:
    """Offsets where a sentence starts (plus 0 and the end of the text)."""
    return sorted({0, len(text), *(m.end() for m in _SENTENCE_START.finditer(text))})


def _insert(haystack: str, needles: Sequence[str], depths: Sequence[float]) -> tuple[str, list[tuple[int, int]], list[float]]:
    """Insert ``needles[i]`` at the sentence boundary nearest ``depths[i]``; return text, spans, real depths."""
    bounds = _boundaries(haystack)
    n = len(haystack)
    placed = []
    for j, (needle, depth) in enumerate(zip(needles, depths)):
        target = depth * n
        k = bisect.bisect_left(bounds, target)
        best = min((b for b in bounds[max(0, k - 1) : k + 1]), key=lambda b: (abs(b - target), b))
        placed.append((best, j))
    placed.sort()
    out: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(needles)
    real: list[float] = [0.0] * len(needles)
    cursor = 0
    length = 0
    for offset, j in placed:
        out.append(haystack[cursor:offset])
        length += offset - cursor
        cursor = offset
        # a needle joins the text as its own sentence: "<needle> " before a sentence, " <needle>" at the end
        if offset == n and n > 0:
            out.append(" ")
            length += 1
        spans[j] = (length, length + len(needles[j]))
        real[j] = offset / n if n else 0.0
        out.append(needles[j])
        length += len(needles[j])
        if offset < n:
            sep = "" if haystack[offset : offset + 1].isspace() else " "
            out.append(sep)
            length += len(sep)
    out.append(haystack[cursor:])
    return "".join(out), spans, real


def _render(template: str, context: str, question: str) -> tuple[str, int]:
    """Fill the template; return the prompt and the offset of the context in it."""
    if template.count("{context}") != 1 or "{question}" not in template:
        raise ValueError("a needle template needs exactly one '{context}' and a '{question}'")
    head, tail = template.split("{context}")
    head = head.replace("{question}", question)
    return head + context + tail.replace("{question}", question), len(head)


def generate_needle_examples(
    contexts: Sequence[str],
    num_examples: int = 10,
    kinds: Sequence[str] = NEEDLE_KINDS,
    haystack_words: int = 2000,
    num_needles: int = 4,
    depths: Sequence[float] | None = None,
    seed: int = 0,
    template: str = DEFAULT_NEEDLE_TEMPLATE,
) -> Iterator[dict[str, Any]]:
    """Yield ``num_examples`` probes of each kind in ``kinds`` (a ``datasets`` generator function).

    Args:
        contexts: Haystack material (non-empty texts).
        num_examples: Probes per kind.
        kinds: Any of :data:`NEEDLE_KINDS`.
        haystack_words: Haystack length in words (needles excluded).
        num_needles: Needles of the multi-needle kinds (``single`` always has one).
        depths: Depths (0..1) to sweep: probe ``i`` puts its first queried needle at
            ``depths[i % len(depths)]``; other needles, and all of them when ``None``, go at
            random depths.
        seed: Everything (haystack order, keys, numbers, depths) is drawn from ``random.Random(seed)``.
        template: User prompt with ``{context}`` and ``{question}``.
    """
    contexts = [c for c in contexts if c and c.strip()]
    if not contexts:
        raise ValueError("needle probes need at least one non-empty context for the haystack")
    unknown = [k for k in kinds if k not in NEEDLE_KINDS]
    if unknown:
        raise ValueError(f"unknown needle kinds {unknown}; choose from {list(NEEDLE_KINDS)}")
    if haystack_words < 1 or num_needles < 1 or num_examples < 0:
        raise ValueError("haystack_words and num_needles must be >= 1, num_examples >= 0")
    if num_needles > len(_ADJECTIVES) * len(_NOUNS):
        raise ValueError(f"num_needles must be <= {len(_ADJECTIVES) * len(_NOUNS)}")
    if depths is not None and (not depths or any(not 0 <= d <= 1 for d in depths)):
        raise ValueError("depths must be a non-empty list of numbers in [0, 1]")
    rng = random.Random(seed)
    for kind in kinds:
        for i in range(num_examples):
            count = 1 if kind == "single" else num_needles
            all_keys = rng.sample([f"{a}-{n}" for a in _ADJECTIVES for n in _NOUNS], count)
            values = [str(v) for v in rng.sample(range(1_000_000, 10_000_000), count)]
            if kind == "multivalue":
                keys = [all_keys[0]] * count
                queried = [True] * count
                query_keys = [all_keys[0]]
            else:
                keys = all_keys
                queried = [kind == "multiquery" or j == 0 for j in range(count)]
                query_keys = [k for k, q in zip(keys, queried) if q]
            needle_depths = [rng.random() for _ in range(count)]
            if depths is not None:
                needle_depths[0] = float(depths[i % len(depths)])
            needles = [_needle(k, v) for k, v in zip(keys, values)]
            haystack = _haystack(contexts, haystack_words, rng)
            text, spans, real_depths = _insert(haystack, needles, needle_depths)
            prompt, offset = _render(template, text, _question(kind, query_keys))
            answers = [v for v, q in zip(values, queried) if q]
            answer = ", ".join(answers)
            yield {
                "id": f"{kind}-{i}",
                "kind": kind,
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                "answer": answer,
                "answers": answers,
                "query_keys": query_keys,
                "needles": needles,
                "needle_keys": keys,
                "needle_queried": queried,
                "needle_positions": [[offset + s, offset + e] for s, e in spans],
                "needle_depths": real_depths,
                "haystack_words": haystack_words,
            }


def make_needle_dataset(
    contexts: Sequence[str], *, cache_dir: str | None = None, keep_in_memory: bool = False, **kwargs: Any
) -> datasets.Dataset:
    """:func:`generate_needle_examples` as a ``datasets.Dataset`` with :data:`NEEDLE_FEATURES`."""
    # ``from_generator`` shards list-valued gen_kwargs into separate generator calls: pass tuples
    gen_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in {"contexts": contexts, **kwargs}.items()}
    gen_kwargs["contexts"] = tuple(gen_kwargs["contexts"])
    return datasets.Dataset.from_generator(
        generate_needle_examples,
        gen_kwargs=gen_kwargs,
        features=NEEDLE_FEATURES,
        cache_dir=cache_dir,
        keep_in_memory=keep_in_memory,
    )


def score_needle(prediction: str, answers: Sequence[str]) -> float:
    """Share (0..1) of the expected numbers found in ``prediction`` (RULER's ``string_match_all``)."""
    if not answers:
        raise ValueError("no expected answers")
    text = (prediction or "").lower()
    return sum(a.lower() in text for a in answers) / len(answers)


def evaluate_needles(backend: Any, ds: datasets.Dataset | Sequence[dict[str, Any]], max_new_tokens: int = 64) -> dict[str, float]:
    """Greedy answers to every probe through ``backend``; mean :func:`score_needle` x100 per kind."""
    from ..backends.base import GenerationRequest, run_requests

    rows = list(ds)
    requests = [
        GenerationRequest(
            key=f"needle/{i}",
            messages=tuple(m for m in row["messages"] if m["role"] != "assistant"),
            max_new_tokens=max_new_tokens,
            temperature=0.0,
        )
        for i, row in enumerate(rows)
    ]
    by_kind: dict[str, list[float]] = {}
    for row, res in zip(rows, run_requests(backend, requests)):
        by_kind.setdefault(row["kind"], []).append(score_needle(res.text or "", row["answers"]))
    return {kind: round(100 * sum(v) / len(v), 2) for kind, v in by_kind.items()}
