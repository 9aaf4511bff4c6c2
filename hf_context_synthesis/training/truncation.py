"""Fit an over-long composed example into ``max_length`` tokens without cutting what it is about.

A composed row (see :data:`~hf_context_synthesis.synthesis.schema.ROW_FEATURES`) is a user turn made of a task
prompt around ``num_documents`` documents (``context_spans`` locates them in ``messages[0]["content"]``,
``relevant_index`` names the one that leads to the answer) and an assistant turn with the answer.
When the whole chat is longer than ``max_length`` tokens, :func:`fit_row_to_length` shortens it in
this order, and never touches the answer, the instruction (it is part of the prompt outside the
documents) or the relevant document:

1. **Drop whole distractor documents**, farthest from the relevant document first
   (:func:`distractor_drop_order`; between two at the same distance, the later one first). Dropping
   from the far ends keeps the relevant document's neighbourhood and roughly its relative position
   (a relevant document at the start stays at the start, one in the middle stays in the middle).
   A document is dropped whole only while the overflow is at least its size (cutting it would leave
   nothing), so no more text is lost than needed (its separator goes with it).
2. **Cut the middle of the next distractor** in that order (the farthest remaining one), the way
   LongBench truncates prompts: its first and last halves of the kept tokens stay, the middle goes
   (:func:`hf_context_synthesis.evaluation.longbench_tasks.middle_truncate_ids`; the two halves are decoded separately
   and joined). Only this one document is cut, by exactly the remaining overflow.
3. If no distractor is left and the chat still does not fit (the relevant document + instruction +
   answer alone are too long), the example cannot be kept: :func:`fit_row_to_length` returns ``None``
   and the caller drops the example (and counts it).

The user message is rebuilt from the kept documents in their original order, joined with the
original separators (the text between consecutive spans), between the original prompt head and tail,
so the task template around the documents is unchanged. Token counts of single documents are
estimates (BPE merges can differ at a boundary), so the rebuilt chat is measured again and the step
above is repeated for any remaining overflow (rarely more than a token or two).

Rows without ``context_spans`` (plain SFT rows) fall back to LongBench's middle truncation of the
first user message only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..evaluation.longbench_tasks import middle_truncate_ids

logger = logging.getLogger(__name__)

#: Re-measure / re-cut rounds before giving up on an example (each round fixes the estimate error).
MAX_ROUNDS = 8

#: Why an example was dropped instead of trained on: reason -> what it means (the summary line of
#: :func:`~hf_context_synthesis.training.packing.prepare_packed_dataset` counts examples per reason;
#: the row of each drop is logged at DEBUG).
DROP_REASONS: dict[str, str] = {
    "core_too_long": "the relevant document, instruction and answer alone are longer than max_length",
    "chat_without_user_too_long": "the chat without its user message is longer than max_length (rows without context_spans)",
    "not_converged": f"still longer than max_length after {MAX_ROUNDS} truncation rounds",
    "truncation_off": "longer than max_length and truncation is off",
    "over_example_cap": "pre-tokenized and longer than the example cap (max_example_length or max_length)",
}


def _dropped(row: dict[str, Any], reason: str, detail: str, on_drop: Callable[[str], None] | None) -> None:
    """Log one dropped example at DEBUG (its row and why) and report its reason to ``on_drop``."""
    logger.debug("row %s: %s; dropping the example (%s)", _row_name(row), detail, reason)
    if on_drop is not None:
        on_drop(reason)


@dataclass
class TruncationResult:
    """An example shortened to fit.

    Attributes:
        messages: The chat with the rebuilt user message (other turns unchanged).
        num_tokens: Tokens of the whole chat after truncation (as measured by the caller's counter).
        dropped_documents: Original indices of the documents dropped whole, in drop order.
        cut_document: Original index of the document whose middle was cut, or ``None``.
        cut_tokens: Tokens removed from the middle of ``cut_document`` (or of the user message for
            rows without ``context_spans``).
        context_spans: ``[start, end)`` of the kept documents in the new user message.
        relevant_index: Index of the relevant document among the kept ones (``None`` for plain rows).
    """

    messages: list[dict[str, Any]]
    num_tokens: int
    dropped_documents: list[int] = field(default_factory=list)
    cut_document: int | None = None
    cut_tokens: int = 0
    context_spans: list[list[int]] | None = None
    relevant_index: int | None = None


def distractor_drop_order(num_documents: int, relevant_index: int) -> list[int]:
    """Distractor indices in the order they are given up: farthest from ``relevant_index`` first.

    Ties (same distance on both sides) drop the later document first.

    >>> distractor_drop_order(5, 1)
    [4, 3, 2, 0]
    """
    others = [i for i in range(num_documents) if i != relevant_index]
    return sorted(others, key=lambda i: (-abs(i - relevant_index), -i))


def chat_length(tokenizer: Any) -> Callable[[list[dict[str, Any]]], int]:
    """A counter of the tokens of a chat with ``tokenizer``'s chat template."""

    def count(messages: list[dict[str, Any]]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    return count


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_middle(tokenizer: Any, text: str, remove: int) -> tuple[str, int]:
    """``text`` without ``remove`` tokens from its middle (LongBench style); returns (text, removed)."""
    ids = _text_ids(tokenizer, text)
    keep = len(ids) - remove
    if keep <= 0:
        return "", len(ids)
    kept = middle_truncate_ids(ids, keep)
    head = keep // 2
    new = tokenizer.decode(kept[:head], skip_special_tokens=True) + tokenizer.decode(
        kept[head:], skip_special_tokens=True
    )
    return new, len(ids) - keep


def _row_name(row: dict[str, Any]) -> str:
    return str(row.get("seed_id") or row.get("id") or "<row>")


def _validate_spans(row: dict[str, Any], content: str) -> tuple[list[list[int]], int]:
    spans = [list(map(int, s)) for s in row["context_spans"]]
    rel = row.get("relevant_index")
    name = _row_name(row)
    if rel is None or not 0 <= int(rel) < len(spans):
        raise ValueError(f"row {name}: relevant_index={rel!r} is not an index of its {len(spans)} context_spans")
    prev = 0
    for i, (s, e) in enumerate(spans):
        if len((s, e)) != 2 or not (prev <= s <= e <= len(content)):
            raise ValueError(
                f"row {name}: context_spans[{i}]={[s, e]} is out of order or outside messages[0]['content'] "
                f"({len(content)} characters)"
            )
        prev = e
    return spans, int(rel)


def fit_row_to_length(
    row: dict[str, Any],
    tokenizer: Any,
    max_length: int,
    *,
    num_tokens: int | None = None,
    count_tokens: Callable[[list[dict[str, Any]]], int] | None = None,
    on_drop: Callable[[str], None] | None = None,
) -> TruncationResult | None:
    """Shorten ``row`` so its chat fits in ``max_length`` tokens (see the module docstring for the order).

    Args:
        row: A composed row with ``messages`` and, ideally, ``context_spans`` and ``relevant_index``.
        tokenizer: Tokenizer with a chat template (used to count and to cut tokens).
        max_length: Token budget of the whole chat (template tokens included).
        num_tokens: The chat's current length if the caller already knows it.
        count_tokens: ``messages -> token count``; default :func:`chat_length` of ``tokenizer``.
        on_drop: Called with the reason (a key of :data:`DROP_REASONS`) when the row cannot be kept; the
            row itself is logged at DEBUG only, so that a caller can log one summary for many rows.

    Returns:
        A :class:`TruncationResult` (unchanged messages if the row already fits), or ``None`` when the
        row cannot fit without cutting the answer, the instruction or the relevant document.
    """
    count = count_tokens or chat_length(tokenizer)
    messages = [dict(m) for m in row["messages"]]
    if not messages or messages[0].get("role") not in ("user", "system"):
        raise ValueError(f"row {_row_name(row)}: messages[0] must be the user (or system) turn")
    n = count(messages) if num_tokens is None else int(num_tokens)
    spans_field = row.get("context_spans")
    if n <= max_length:
        return TruncationResult(
            messages, n, context_spans=spans_field, relevant_index=row.get("relevant_index") if spans_field else None
        )
    if not spans_field:
        return _fit_plain(row, messages, tokenizer, max_length, n, count, on_drop)

    content = messages[0]["content"]
    spans, rel = _validate_spans(row, content)
    head, tail = content[: spans[0][0]], content[spans[-1][1] :]
    docs: list[str | None] = [content[s:e] for s, e in spans]
    seps = [content[spans[i][1] : spans[i + 1][0]] for i in range(len(spans) - 1)]
    sep_tokens = {sep: len(_text_ids(tokenizer, sep)) for sep in set(seps)}
    order = distractor_drop_order(len(docs), rel)
    result = TruncationResult(messages, n)

    def rebuild() -> None:
        parts, new_spans, pos, prev = [head], [], len(head), None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if prev is not None:
                sep = seps[i - 1]  # the separator that preceded this document
                parts.append(sep)
                pos += len(sep)
            new_spans.append([pos, pos + len(doc)])
            parts.append(doc)
            pos += len(doc)
            prev = i
        parts.append(tail)
        messages[0] = {**messages[0], "content": "".join(parts)}
        kept = [i for i, d in enumerate(docs) if d is not None]
        result.context_spans, result.relevant_index = new_spans, kept.index(rel)

    for _ in range(MAX_ROUNDS):
        excess = n - max_length
        if excess <= 0:
            result.num_tokens = n
            return result
        remaining = [d for d in order if docs[d] is not None]
        if not remaining:
            _dropped(row, "core_too_long", f"the relevant document, instruction and answer alone take {n} > "
                     f"max_length={max_length} tokens", on_drop)
            return None
        # (1) whole documents, farthest first, while the overflow is at least their size (a cut
        # would leave nothing of them; dropping also removes their separator)
        for d in remaining:
            doc_tokens = len(_text_ids(tokenizer, docs[d]))  # type: ignore[arg-type]
            if doc_tokens > excess:
                break
            docs[d] = None
            result.dropped_documents.append(d)
            if result.cut_document == d:  # cut in an earlier round, now gone whole
                result.cut_document, result.cut_tokens = None, 0
            excess -= doc_tokens + sep_tokens.get(seps[d - 1] if d else (seps[0] if seps else ""), 0)
        # (2) the middle of the next distractor in that order
        left = [d for d in order if docs[d] is not None]
        if excess > 0 and left:
            d = left[0]
            docs[d], removed = _cut_middle(tokenizer, docs[d], excess)  # type: ignore[arg-type]
            if result.cut_document not in (None, d):
                logger.debug("row %s: cutting a second document (%d) after %d", _row_name(row), d, result.cut_document)
            result.cut_document = d
            result.cut_tokens += removed
        rebuild()
        n = count(messages)
    _dropped(row, "not_converged", f"could not fit in max_length={max_length} after {MAX_ROUNDS} rounds", on_drop)
    return None


def _fit_plain(
    row: dict[str, Any],
    messages: list[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    n: int,
    count: Callable[[list[dict[str, Any]]], int],
    on_drop: Callable[[str], None] | None = None,
) -> TruncationResult | None:
    """LongBench middle truncation of the first user message (rows without ``context_spans``)."""
    user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if user is None:
        raise ValueError(f"row {_row_name(row)}: no user message to truncate")
    result = TruncationResult(messages, n)
    for _ in range(MAX_ROUNDS):
        excess = n - max_length
        if excess <= 0:
            result.num_tokens = n
            return result
        text = messages[user]["content"]
        if len(_text_ids(tokenizer, text)) <= excess:
            _dropped(row, "chat_without_user_too_long",
                     f"the chat without its user message already exceeds max_length={max_length}", on_drop)
            return None
        new, removed = _cut_middle(tokenizer, text, excess)
        messages[user] = {**messages[user], "content": new}
        result.cut_tokens += removed
        n = count(messages)
    _dropped(row, "not_converged", f"could not fit in max_length={max_length} after {MAX_ROUNDS} rounds", on_drop)
    return None


def drop_order_for_row(row: dict[str, Any]) -> Sequence[int]:
    """:func:`distractor_drop_order` of a composed row."""
    return distractor_drop_order(len(row["context_spans"]), int(row["relevant_index"]))
