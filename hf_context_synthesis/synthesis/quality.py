"""Quality filters for synthesized contexts: what a generation must satisfy to be kept.

Per generation (:func:`validate_generation`, called for every output, cached or fresh; a rejected
output is retried with a new sampling seed up to ``max_generation_attempts``), in this order:

* ``empty_generation``: nothing but whitespace;
* ``refusal``: the output (or the text after ``Context:``) starts like a refusal ("I'm sorry",
  "I cannot", "As an AI", ...);
* ``missing_context_marker``: no ``Context:`` marker (when ``require_context_marker``);
* ``echoed_prompt``: a ``Context:`` marker followed only by a copy of the prompt's scaffolding
  (``[MISSING]``, the ``Question:``/``Answer:`` pair, the request paragraph), as small models often
  write (:func:`~hf_context_synthesis.synthesis.prompts.strip_echo`: an echo followed by real text
  keeps the text);
* ``repetitive``: a degenerate loop (``"A. A. A. ..."``, a sentence written again and again): at least
  ``max_repeated_ngram_fraction`` of the context's word ``repetition_ngram_words``-grams repeat an
  earlier one (contexts under 20 words are measured on character 10-grams, so a loop without spaces
  counts too); see :func:`repeated_ngram_fraction`;
* ``too_short``: fewer than ``min_context_words`` words;
* ``answer_not_in_context``: for short answers (at most ``short_answer_words`` normalized words,
  except ``answer_check_exempt`` ones such as "yes"/"no"), the answer cannot be recovered from the
  context: neither its LongBench-normalized form is contained in the normalized context, nor does a
  window of the context reach token-F1 ``answer_f1_threshold`` against it. Long answers (summaries)
  skip this check.

Per run (:func:`find_near_duplicates`, a post-pass over the accepted contexts in seed order, so the
outcome does not depend on completion order): a context whose MinHash-estimated Jaccard similarity of
word ``shingle_words``-shingles with an earlier kept context reaches ``near_duplicate_threshold`` is
dropped (reason ``near_duplicate``); the first occurrence is kept.

Per seed (:func:`answer_in_instruction`): a short answer that already appears verbatim (normalized)
in the instruction is flagged (``answer_in_instruction`` in the report's ``flagged_reasons``), or the
seed is dropped when ``answer_in_instruction="drop"``.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..utils.text import normalize_answer
from .prompts import parse_context, unparsed_reason

__all__ = [
    "DEFAULT_REFUSAL_PREFIXES",
    "QualityConfig",
    "answer_in_instruction",
    "answer_recoverable",
    "find_near_duplicates",
    "repeated_ngram_fraction",
    "is_refusal",
    "is_short_answer",
    "resolve_quality",
    "validate_generation",
]

#: Openings that mark a refusal or a meta answer instead of a context (matched case-insensitively at
#: the start of the output and of the text after ``Context:``; curly apostrophes count as ``'``).
DEFAULT_REFUSAL_PREFIXES: tuple[str, ...] = (
    "I'm sorry",
    "I am sorry",
    "Sorry,",
    "I apologize",
    "I cannot",
    "I can't",
    "I can not",
    "I won't",
    "I will not",
    "I'm unable",
    "I am unable",
    "I'm not able",
    "I am not able",
    "As an AI",
    "As a language model",
    "As an assistant",
)


@dataclass
class QualityConfig:
    """Settings of the quality filters (``SynthesisConfig.quality``); every field is semantic.

    Args:
        min_context_words: Reject contexts with fewer whitespace-separated words (``0`` = no
            minimum). The default, 100, only catches stubs and truncated outputs: the paper asks for
            about 2,000 words but small generators often write a few hundred; raise it (e.g. to a
            quarter of ``context_words``) for a stricter run.
        reject_refusals: Reject outputs that open like a refusal (:data:`DEFAULT_REFUSAL_PREFIXES`).
        refusal_prefixes: Openings counted as refusals (``None`` = :data:`DEFAULT_REFUSAL_PREFIXES`).
        short_answer_words: Answers of at most this many normalized words must be recoverable from
            the context (``0`` = never check). Longer answers (summaries) skip the check.
        answer_f1_threshold: Without normalized containment, the best token-F1 of a context window
            (of the answer's length to two words longer) against the answer must reach this.
        answer_check_exempt: Normalized answers never checked (they need not appear in the text).
        near_duplicate_threshold: Jaccard similarity (MinHash estimate) at which a later context
            counts as a near-duplicate of an earlier one and is dropped (``None`` = no dedup).
        shingle_words: Words per shingle for the near-duplicate check.
        num_perm: MinHash permutations (more = finer Jaccard estimates, slower).
        max_repeated_ngram_fraction: Reject a context (reason ``repetitive``) when at least this
            share of its n-grams repeat an earlier one (``None`` = off). Natural prose of a few hundred
            words stays under 0.1 with 4-grams; a small model's loop is above 0.8.
        repetition_ngram_words: Words per n-gram of the repetition check.
        answer_in_instruction: What to do with seeds whose short answer appears verbatim in the
            instruction: ``"flag"`` (count it in the report, keep the seed), ``"drop"`` (record the
            seed as failed, make no request) or ``"ignore"``.
    """

    min_context_words: int = 100
    reject_refusals: bool = True
    refusal_prefixes: list[str] | None = None
    short_answer_words: int = 5
    answer_f1_threshold: float = 0.8
    answer_check_exempt: list[str] = field(default_factory=lambda: ["yes", "no", "unanswerable"])
    near_duplicate_threshold: float | None = 0.9
    shingle_words: int = 5
    num_perm: int = 128
    max_repeated_ngram_fraction: float | None = 0.5
    repetition_ngram_words: int = 4
    answer_in_instruction: Literal["flag", "drop", "ignore"] = "flag"

    def __post_init__(self) -> None:
        if self.min_context_words < 0:
            raise ValueError(f"quality.min_context_words must be >= 0, got {self.min_context_words}")
        if self.short_answer_words < 0:
            raise ValueError(f"quality.short_answer_words must be >= 0, got {self.short_answer_words}")
        if not 0.0 < self.answer_f1_threshold <= 1.0:
            raise ValueError(f"quality.answer_f1_threshold must be in (0, 1], got {self.answer_f1_threshold}")
        if self.near_duplicate_threshold is not None and not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ValueError(
                f"quality.near_duplicate_threshold must be in (0, 1] or None, got {self.near_duplicate_threshold}"
            )
        if self.shingle_words < 1:
            raise ValueError(f"quality.shingle_words must be >= 1, got {self.shingle_words}")
        if self.max_repeated_ngram_fraction is not None and not 0.0 < self.max_repeated_ngram_fraction <= 1.0:
            raise ValueError(
                f"quality.max_repeated_ngram_fraction must be in (0, 1] or None, got {self.max_repeated_ngram_fraction}"
            )
        if self.repetition_ngram_words < 1:
            raise ValueError(f"quality.repetition_ngram_words must be >= 1, got {self.repetition_ngram_words}")
        if self.num_perm < 16:
            raise ValueError(f"quality.num_perm must be >= 16, got {self.num_perm}")
        if self.answer_in_instruction not in ("flag", "drop", "ignore"):
            raise ValueError(
                f"quality.answer_in_instruction must be 'flag', 'drop' or 'ignore', got {self.answer_in_instruction!r}"
            )
        if self.refusal_prefixes is not None:
            self.refusal_prefixes = [str(p) for p in self.refusal_prefixes]
        self.answer_check_exempt = [normalize_answer(str(a)) for a in self.answer_check_exempt]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (part of the run's cache id)."""
        return dataclasses.asdict(self)


def resolve_quality(value: Any) -> "QualityConfig | Literal[False]":
    """Normalize ``SynthesisConfig.quality``: ``None``/``True`` -> defaults, a mapping -> its settings,
    ``False`` -> filters off (the paper's plain parsing)."""
    if value is False:
        return False
    if value is None or value is True:
        return QualityConfig()
    if isinstance(value, QualityConfig):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(QualityConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"quality: unknown setting(s) {unknown}; known: {sorted(known)}")
        return QualityConfig(**dict(value))
    raise TypeError(f"quality must be a QualityConfig, a dict, True/None (defaults) or False (off), got {value!r}")


# ---------------------------------------------------------------------------------------------- checks

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_LEADING_NOISE = re.compile(r"^[\s*_#>\"'-]+")


def is_refusal(text: str, prefixes: Iterable[str] | None = None) -> bool:
    """Whether ``text`` opens like a refusal (case-insensitive, markdown and quotes skipped)."""
    head = _LEADING_NOISE.sub("", (text or "")[:300].translate(_APOSTROPHES)).lower()
    for prefix in DEFAULT_REFUSAL_PREFIXES if prefixes is None else prefixes:
        if head.startswith(prefix.translate(_APOSTROPHES).lower()):
            return True
    return False


def is_short_answer(answer: str, qconf: QualityConfig) -> bool:
    """Whether ``answer`` is short enough (and not exempt) for the recoverability checks."""
    words = normalize_answer(answer).split()
    return 0 < len(words) <= qconf.short_answer_words and " ".join(words) not in qconf.answer_check_exempt


def _contains(haystack_norm: str, needle_norm: str) -> bool:
    return f" {needle_norm} " in f" {haystack_norm} "


def _best_window_f1(tokens: list[str], answer: list[str], extra: int = 2) -> float:
    """Best token-F1 of a window of ``len(answer)`` .. ``len(answer) + extra`` tokens against ``answer``."""
    want = Counter(answer)
    n = len(answer)
    best = 0.0
    for size in range(n, n + extra + 1):
        if size > len(tokens):
            break
        have: Counter[str] = Counter(t for t in tokens[:size] if t in want)
        for start in range(len(tokens) - size + 1):
            if start:
                out, inc = tokens[start - 1], tokens[start + size - 1]
                if out in want:
                    have[out] -= 1
                if inc in want:
                    have[inc] += 1
            overlap = sum(min(c, want[t]) for t, c in have.items())
            if overlap:
                best = max(best, 2 * overlap / (size + n))
                if best >= 1.0:
                    return best
    return best


def answer_recoverable(answer: str, context: str, f1_threshold: float = 0.8) -> bool:
    """Whether ``answer`` can be read off ``context``: normalized containment, else a window's token-F1."""
    answer_norm = normalize_answer(answer)
    if not answer_norm:
        return True
    context_norm = normalize_answer(context)
    if _contains(context_norm, answer_norm):
        return True
    return _best_window_f1(context_norm.split(), answer_norm.split()) >= f1_threshold


def answer_in_instruction(instruction: str, answer: str, qconf: QualityConfig | None = None) -> bool:
    """Whether a short ``answer`` already appears (normalized, whole words) in ``instruction``."""
    qconf = qconf or QualityConfig()
    if not is_short_answer(answer, qconf):
        return False
    return _contains(normalize_answer(instruction), normalize_answer(answer))


def validate_generation(
    text: str,
    instruction: str,
    answer: str,
    qconf: QualityConfig | None = None,
    *,
    require_context_marker: bool = True,
) -> tuple[str | None, str | None]:
    """``(context, None)`` when ``text`` passes every per-generation filter, else ``(None, reason)``.

    Reasons: ``empty_generation``, ``refusal``, ``missing_context_marker``, ``echoed_prompt``, ``repetitive``,
    ``too_short``,
    ``answer_not_in_context`` (see the module docstring). ``instruction`` is accepted for filters that
    look at the pair; the current ones use the answer only.
    """
    qconf = qconf or QualityConfig()
    if not text or not text.strip():
        return None, "empty_generation"
    prefixes = qconf.refusal_prefixes
    if qconf.reject_refusals and is_refusal(text, prefixes):
        return None, "refusal"
    context = parse_context(text, require_marker=require_context_marker)
    if context is None:
        return None, unparsed_reason(text, require_marker=require_context_marker)
    if qconf.reject_refusals and is_refusal(context, prefixes):
        return None, "refusal"
    if (
        qconf.max_repeated_ngram_fraction is not None
        and repeated_ngram_fraction(context, qconf.repetition_ngram_words) >= qconf.max_repeated_ngram_fraction
    ):
        return None, "repetitive"
    if qconf.min_context_words and len(context.split()) < qconf.min_context_words:
        return None, "too_short"
    if is_short_answer(answer, qconf) and not answer_recoverable(answer, context, qconf.answer_f1_threshold):
        return None, "answer_not_in_context"
    return context, None


def repeated_ngram_fraction(text: str, n: int = 4, *, min_words: int = 20, char_n: int = 10) -> float:
    """Share of the n-grams of ``text`` that repeat an earlier one (``0`` = all distinct, near ``1`` = a loop).

    Word ``n``-grams of the lower-cased words; a text of fewer than ``min_words`` words is measured on
    character ``char_n``-grams of its whitespace-free form instead (``"A.A.A.A..."`` is one "word").
    A text with no n-gram at all scores 0.
    """
    words = text.lower().split()
    if len(words) >= min_words:
        grams: list[Any] = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    else:
        flat = "".join(words)
        grams = [flat[i : i + char_n] for i in range(len(flat) - char_n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


# ------------------------------------------------------------------------------------ near-duplicates


def _shingle_hashes(text: str, size: int) -> Any:
    """Distinct 32-bit hashes of the normalized word ``size``-shingles of ``text`` (stable across runs).

    Words are hashed with CRC-32 and combined by a polynomial rolling hash in numpy, which is several
    times faster than hashing every shingle string with SHA-1 (datasketch's default).
    """
    import numpy as np

    words = normalize_answer(text).split() or [""]
    hv = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    if len(hv) > size:
        n = len(hv) - size + 1
        h = hv[:n].copy()
        for k in range(1, size):
            h = (h * np.uint64(1000003) + hv[k : k + n]) & np.uint64(0xFFFFFFFF)
        hv = h
    else:
        h = np.uint64(0)
        for v in hv:
            h = (h * np.uint64(1000003) + v) & np.uint64(0xFFFFFFFF)
        hv = np.array([h], dtype=np.uint64)
    return np.unique(hv)


class MinHasher:
    """MinHash signatures of texts (word shingles, :mod:`datasketch`'s ``MinHash`` with shared permutations).

    A signature is a ``uint32`` array of ``num_perm`` values (datasketch's ``affine32`` scheme), 4 bytes
    per permutation; two signatures agree at a position with probability equal to the Jaccard
    similarity of the texts' shingle sets.
    """

    def __init__(self, num_perm: int = 128, shingle_words: int = 5, seed: int = 1) -> None:
        from datasketch import MinHash

        self.num_perm = int(num_perm)
        self.shingle_words = int(shingle_words)
        self.seed = int(seed)
        template = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=int)
        self._permutations, self._scheme = template.permutations, template.scheme

    def signature(self, text: str) -> Any:
        """The signature of ``text`` (stable across runs and processes)."""
        import numpy as np
        from datasketch import MinHash

        mh = MinHash(
            num_perm=self.num_perm, seed=self.seed, hashfunc=int, permutations=self._permutations, scheme=self._scheme
        )
        mh.update_batch(_shingle_hashes(text, self.shingle_words))  # the values are hashes already
        return np.asarray(mh.hashvalues, dtype=np.uint32)


def lsh_bands(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """``(bands, rows)`` of the LSH banding :class:`datasketch.MinHashLSH` picks for Jaccard ``threshold``:
    the least ``weights``-weighted sum of false-positive and false-negative probability mass."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    return lsh.b, lsh.r


#: (false positive, false negative) weights of the near-duplicate LSH banding.
RECALL_WEIGHTS = (0.1, 0.9)


class NearDuplicateIndex:
    """Order-aware near-duplicate detection over MinHash signatures, in compact memory.

    :meth:`check` takes signatures in order: it returns the earliest kept signature's key whose
    estimated Jaccard similarity reaches ``threshold`` (the new one is then a duplicate and is not
    kept), else keeps the new one and returns ``None``. Candidates come from LSH banding
    (:func:`lsh_bands`, weighted for recall: a false candidate costs one signature comparison, a
    missed one a duplicate left in the data; at ``threshold=0.9`` a pair of Jaccard 0.95 is a
    candidate with probability ~1 where an even weighting misses one in five). Kept signatures live
    in one ``uint32`` matrix and the band buckets in one dict of ints, so memory per kept text is
    ``4 * num_perm`` bytes plus a few dict entries.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = 128) -> None:
        import numpy as np

        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.bands, self.rows = lsh_bands(self.threshold, self.num_perm, RECALL_WEIGHTS)
        self._signatures = np.empty((64, self.num_perm), dtype=np.uint32)
        self._keys: list[Any] = []
        self._buckets: dict[int, int | list[int]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, key: Any, signature: Any) -> Any | None:
        """The key of the earliest kept near-duplicate of ``signature``, or ``None`` (then it is kept)."""
        import numpy as np

        sig = np.asarray(signature, dtype=np.uint32)
        r = self.rows
        band_keys = [hash((b, sig[b * r : (b + 1) * r].tobytes())) for b in range(self.bands)]
        candidates: set[int] = set()
        for bk in band_keys:
            hit = self._buckets.get(bk)
            if hit is not None:
                candidates.update(hit if isinstance(hit, list) else (hit,))
        for idx in sorted(candidates):  # earliest first
            if float(np.mean(self._signatures[idx] == sig)) >= self.threshold:
                return self._keys[idx]
        idx = len(self._keys)
        if idx == len(self._signatures):
            grown = np.empty((2 * idx, self.num_perm), dtype=np.uint32)
            grown[:idx] = self._signatures
            self._signatures = grown
        self._signatures[idx] = sig
        self._keys.append(key)
        for bk in band_keys:
            hit = self._buckets.get(bk)
            if hit is None:
                self._buckets[bk] = idx
            elif isinstance(hit, list):
                hit.append(idx)
            else:
                self._buckets[bk] = [hit, idx]
        return None


def near_duplicates_of_signatures(
    signatures: Iterable[tuple[Any, Any]], threshold: float = 0.9, num_perm: int = 128
) -> dict[Any, Any]:
    """``{later key: earlier kept key}`` over ordered ``(key, MinHasher signature)`` pairs."""
    index = NearDuplicateIndex(threshold, num_perm)
    duplicates: dict[Any, Any] = {}
    for key, sig in signatures:
        first = index.check(key, sig)
        if first is not None:
            duplicates[key] = first
    return duplicates


def find_near_duplicates(
    texts: Iterable[tuple[Any, str]],
    threshold: float = 0.9,
    *,
    shingle_words: int = 5,
    num_perm: int = 128,
) -> dict[Any, Any]:
    """``{later key: earlier kept key}`` for every text that near-duplicates an earlier kept one.

    ``texts`` is an ordered iterable of ``(key, text)``; the first occurrence is kept. Candidates come
    from MinHash LSH banding and are confirmed by the MinHash Jaccard estimate, so the result is
    deterministic for a given order (fixed MinHash seed) and needs ``4 * num_perm`` bytes of memory
    per kept text (:class:`NearDuplicateIndex`).
    """
    hasher = MinHasher(num_perm=num_perm, shingle_words=shingle_words)
    return near_duplicates_of_signatures(((key, hasher.signature(text)) for key, text in texts), threshold, num_perm)
