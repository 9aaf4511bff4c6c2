"""Tokenize, truncate and pack long-context SFT examples for padding-free training.

Pipeline (:func:`prepare_packed_dataset`):

1. **Tokenize** each row's ``messages`` with the tokenizer's chat template (:func:`tokenize_example`).
   Labels are the input ids on assistant answer tokens (including the end-of-turn token the template
   emits inside the assistant turn) and ``-100`` elsewhere.
2. **Truncate** rows longer than ``max_length`` without cutting the answer, the instruction or the
   relevant document (:mod:`hf_context_synthesis.training.truncation`), or drop those that cannot fit.
3. **Pack** the tokenized examples into rows of at most ``max_length`` tokens with best-fit decreasing
   (:func:`pack_bfd`); the packed columns are built with pyarrow/numpy (no per-token Python loops).

Packed rows have ``input_ids``, ``labels``, ``position_ids`` (restarting at 0 at every example) and
``seq_lengths`` (the example lengths in the row, in order).

**Batches** (:class:`PackedDataCollator`): the rows of a batch are concatenated into one padding-free
sequence of shape ``[1, total]`` with **no** ``attention_mask``. Examples are kept apart by their
``position_ids`` alone: transformers derives a block-diagonal causal mask from position ids that restart
at 0 (eager, sdpa and flex attention, when there is no attention mask and no cache), and flash-attention
uses them (or the optional ``cu_seq_lens_q/k``) for its variable-length kernel, which needs batch size 1.
This is why rows are concatenated rather than padded side by side: it works for every attention
implementation, and it carries no padding at all (``pad_to_multiple_of`` aside).

**Statistics**: the returned dataset carries a :class:`PackingStats` in its ``packing_stats``
attribute; read it with :func:`get_packing_stats` (for a streaming dataset it fills up as the stream is
consumed in this process, and every further pass over the stream, e.g. another epoch, adds to it again;
it stays empty when the stream is consumed in DataLoader worker processes). Dataset transforms (``shuffle``, ``select``...) return new objects without it;
:func:`get_packing_stats` then recomputes what the ``seq_lengths`` column tells (no truncation counts).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .truncation import DROP_REASONS, fit_row_to_length

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")

#: Features of the tokenized (not yet packed) examples.
TOKENIZED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "truncated": datasets.Value("bool"),
    }
)
#: :data:`TOKENIZED_FEATURES` plus why a row was dropped ("" when kept; see :data:`DROP_REASONS`).
_TOKENIZED_WITH_REASON = datasets.Features({**TOKENIZED_FEATURES, "drop_reason": datasets.Value("string")})
#: Features of the packed rows.
PACKED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "position_ids": datasets.List(datasets.Value("int32")),
        "seq_lengths": datasets.List(datasets.Value("int32")),
    }
)


@dataclass
class PackingConfig:
    """How examples are tokenized, truncated, packed and collated.

    Attributes:
        max_length: Tokens per packed row (the micro-batch token budget; also the longest example kept
            unless ``max_example_length`` is set).
        truncation: Shorten over-long examples (distractors first, see
            :mod:`hf_context_synthesis.training.truncation`) instead of dropping them.
        loss_weighting: ``"token"``: the mean over all answer tokens of the batch (TRL's default
            loss); ``"example"``: LongAlign's loss weighting, every example of the batch counts
            equally whatever its answer length (the collator adds ``loss_weights``, see
            :func:`longalign_loss`).
        return_flash_kwargs: Add ``cu_seq_lens_q/k`` and ``max_length_q/k`` to batches (flash
            attention's variable-length kernel then skips deriving them from ``position_ids``; eager,
            sdpa and flex attention ignore them). On by default, as in TRL's padding-free collator.
        max_example_length: Longest example kept (longer ones are truncated or dropped); ``None``:
            ``max_length``. A row budget larger than the example cap (e.g. examples <= 32k packed into
            64k rows) fills rows better.
        row_order: ``"shuffle"``: rows in a seeded random order; ``"balanced"``: global steps of rows
            of similar attention cost, spread evenly over the ranks (:mod:`hf_context_synthesis.training.balancing`;
            applied by :func:`~hf_context_synthesis.training.trainer.build_trainer`, which knows the ranks).
        attention_length: Example length at which attention costs as much as the linear layers, in
            the row cost ``Σlen + Σlen²/attention_length`` used by ``row_order="balanced"`` and the
            balance ratio.
        cpu_packed_attention: When the model trains on CPU with ``sdpa`` or ``eager`` attention,
            :func:`~hf_context_synthesis.training.trainer.build_trainer` switches it to ``"packed_sdpa"``
            (:mod:`hf_context_synthesis.training.attention`): each packed example attends alone instead of the
            whole row over a dense block-diagonal mask (same outputs, ``Σlen²`` instead of ``T²``).
        shuffle_seed: Seed of the order of the packed rows (``None`` keeps BFD's order, longest
            first). For a streaming dataset the rows of each buffer are shuffled.
        stream_buffer_size: Examples packed together at a time when the dataset is an
            ``IterableDataset``.
        num_proc: Processes for tokenization of a map-style dataset (``None``: in this process).
    """

    max_length: int = 32768
    truncation: bool = True
    loss_weighting: str = "token"
    return_flash_kwargs: bool = True
    shuffle_seed: int | None = 0
    stream_buffer_size: int = 1000
    num_proc: int | None = None
    max_example_length: int | None = None
    row_order: str = "shuffle"
    attention_length: int = 32768
    cpu_packed_attention: bool = True

    def __post_init__(self) -> None:
        if self.max_length <= 0:
            raise ValueError(f"PackingConfig.max_length must be positive, got {self.max_length}")
        if self.max_example_length is not None and not 0 < self.max_example_length <= self.max_length:
            raise ValueError(
                f"PackingConfig.max_example_length must be in (0, max_length={self.max_length}], got {self.max_example_length}"
            )
        if self.row_order not in ("shuffle", "balanced"):
            raise ValueError(f"PackingConfig.row_order must be 'shuffle' or 'balanced', got {self.row_order!r}")
        if self.attention_length <= 0:
            raise ValueError(f"PackingConfig.attention_length must be positive, got {self.attention_length}")
        if self.loss_weighting not in ("token", "example"):
            raise ValueError(f"PackingConfig.loss_weighting must be 'token' or 'example', got {self.loss_weighting!r}")
        if self.stream_buffer_size <= 0:
            raise ValueError(f"PackingConfig.stream_buffer_size must be positive, got {self.stream_buffer_size}")

    @property
    def example_cap(self) -> int:
        """The longest example kept: ``max_example_length`` or ``max_length``."""
        return self.max_example_length or self.max_length


@dataclass
class PackingStats:
    """What packing did.

    Attributes:
        num_examples: Examples read.
        num_truncated: Examples shortened to fit ``max_length``.
        num_dropped: Examples that could not fit (or were over-long with truncation off).
        drop_reasons: ``num_dropped`` by reason (keys of
            :data:`~hf_context_synthesis.training.truncation.DROP_REASONS`, plus ``"over_example_cap"`` for
            pre-tokenized rows).
        num_rows: Packed rows.
        real_tokens: Tokens of the kept examples.
        answer_tokens: Tokens of ``real_tokens`` with a label: the answers, which the loss is computed on
            (the prompt and its documents are input only; the collator also unlabels the first token of
            each example).
        row_tokens: Sum of the row lengths (rows are not padded, so equal to ``real_tokens``).
        max_length: Row capacity.
        num_padding_rows: Rows without loss tokens appended so every rank gets the same number of
            batches (see :func:`arrange_rows`); they carry one pad token each and change no loss.
        num_ranks: Ranks the rows were arranged for (0: not arranged).
        balance_ratio: ``mean/max`` of per-rank row cost per global step in the training order
            (:func:`hf_context_synthesis.training.balancing.balance_ratio`), for ``num_ranks``; ``None`` if not arranged.
        scope: ``"global"``: counts over the whole dataset; ``"rank"``: a streaming dataset's counts of
            what this process packed.
    """

    num_examples: int = 0
    num_truncated: int = 0
    num_dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    num_rows: int = 0
    real_tokens: int = 0
    answer_tokens: int = 0
    row_tokens: int = 0
    max_length: int = 0
    num_padding_rows: int = 0
    num_ranks: int = 0
    balance_ratio: float | None = None
    scope: str = "global"

    @property
    def efficiency(self) -> float:
        """``real_tokens / (num_rows * max_length)``: how full the rows are (1.0 = every row full)."""
        cap = self.num_rows * self.max_length
        return self.real_tokens / cap if cap else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``efficiency``."""
        return {
            "num_examples": self.num_examples,
            "num_truncated": self.num_truncated,
            "num_dropped": self.num_dropped,
            "drop_reasons": dict(self.drop_reasons),
            "num_rows": self.num_rows,
            "real_tokens": self.real_tokens,
            "answer_tokens": self.answer_tokens,
            "row_tokens": self.row_tokens,
            "max_length": self.max_length,
            "efficiency": round(self.efficiency, 6),
            "num_padding_rows": self.num_padding_rows,
            "num_ranks": self.num_ranks,
            "balance_ratio": None if self.balance_ratio is None else round(self.balance_ratio, 6),
            "scope": self.scope,
        }


# --------------------------------------------------------------------------------------------
# tokenization


def has_generation_markers(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template marks assistant tokens with ``{% generation %}``."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and bool(_GENERATION_RE.search(template))


def tokenize_messages(messages: list[dict[str, Any]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a chat; labels are the ids of assistant tokens, ``-100`` elsewhere.

    With ``{% generation %}`` markers in the template, the assistant mask of every assistant turn is
    used. Otherwise the prompt (all turns before the last, with ``add_generation_prompt=True``) is
    tokenized alone and everything after it is labelled (the last assistant turn only).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat_template: set tokenizer.chat_template before packing")
    if has_generation_markers(tokenizer):
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = list(enc["input_ids"])
        mask = enc["assistant_masks"]
        labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
        return ids, labels
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    if messages[-1].get("role") != "assistant":
        return ids, [IGNORE_INDEX] * len(ids)
    prompt = list(
        tokenizer.apply_chat_template(messages[:-1], tokenize=True, return_dict=True, add_generation_prompt=True)[
            "input_ids"
        ]
    )
    if ids[: len(prompt)] != prompt:
        raise ValueError(
            "chat template: the tokenized prompt (add_generation_prompt=True) is not a prefix of the tokenized "
            "chat; add {% generation %} markers to the template to label assistant tokens"
        )
    return ids, [IGNORE_INDEX] * len(prompt) + ids[len(prompt) :]


def tokenize_example(
    row: dict[str, Any],
    tokenizer: Any,
    max_length: int | None = None,
    truncation: bool = True,
    on_drop: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Tokenize one composed row.

    Returns ``{"input_ids", "labels", "truncated"}``, or ``None`` when the row is longer than
    ``max_length`` and cannot be shortened (``truncation=False``, or the relevant document +
    instruction + answer alone do not fit; see :func:`~hf_context_synthesis.training.truncation.fit_row_to_length`).
    A dropped row is logged at DEBUG and its reason (a key of :data:`~hf_context_synthesis.training.truncation.DROP_REASONS`)
    passed to ``on_drop``.
    """
    if "messages" not in row:
        raise ValueError(f"row {row.get('seed_id', '<row>')}: no 'messages' field (columns {sorted(row)})")
    ids, labels = tokenize_messages(row["messages"], tokenizer)
    if max_length is None or len(ids) <= max_length:
        return {"input_ids": ids, "labels": labels, "truncated": False}
    if not truncation:
        logger.debug("row %s: %d > max_length=%d tokens; dropping the example (truncation_off)",
                     row.get("seed_id", "<row>"), len(ids), max_length)
        if on_drop is not None:
            on_drop("truncation_off")
        return None
    last: dict[str, Any] = {}

    def count(messages: list[dict[str, Any]]) -> int:
        last["ids"], last["labels"] = tokenize_messages(messages, tokenizer)
        return len(last["ids"])

    fitted = fit_row_to_length(row, tokenizer, max_length, num_tokens=len(ids), count_tokens=count, on_drop=on_drop)
    if fitted is None:
        return None
    if len(last.get("ids", ())) != fitted.num_tokens:  # pragma: no cover - count() ran last on fitted.messages
        last["ids"], last["labels"] = tokenize_messages(fitted.messages, tokenizer)
    return {"input_ids": last["ids"], "labels": last["labels"], "truncated": True}


def _tokenize_batch(batch: dict[str, list[Any]], tokenizer: Any, max_length: int, truncation: bool) -> dict[str, list]:
    """Tokenize a batch of composed rows; every row stays, a dropped one with no tokens and its
    ``drop_reason`` (``""`` for a kept row), so the reasons can be counted after a parallel ``map``."""
    names = list(batch)
    out: dict[str, list] = {"input_ids": [], "labels": [], "truncated": [], "drop_reason": []}
    for i in range(len(batch[names[0]]) if names else 0):
        row = {k: batch[k][i] for k in names}
        reasons: list[str] = []
        tok = tokenize_example(row, tokenizer, max_length, truncation, on_drop=reasons.append)
        dropped = tok is None
        if tok is None:
            tok = {"input_ids": [], "labels": [], "truncated": False}
        for k in ("input_ids", "labels", "truncated"):
            out[k].append(tok[k])
        out["drop_reason"].append((reasons[0] if reasons else "truncation_off") if dropped else "")
    return out


def _split_dropped(tok: dict[str, list]) -> tuple[dict[str, list], dict[str, int]]:
    """``(kept rows, {reason: count})`` of a :func:`_tokenize_batch` output (its ``drop_reason`` removed)."""
    reasons = tok.pop("drop_reason")
    counts: dict[str, int] = {}
    for reason in reasons:
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    if counts:
        tok = {k: [v for v, r in zip(values, reasons) if not r] for k, values in tok.items()}
    return tok, counts


def _answer_tokens(labels: Any) -> int:
    """Tokens with a label (not ``IGNORE_INDEX``) in a list column of labels: the answers."""
    flat = pc.list_flatten(labels)
    return int(pc.sum(pc.not_equal(flat, IGNORE_INDEX)).as_py() or 0) if len(flat) else 0


def drop_summary(num_dropped: int, num_examples: int, reasons: dict[str, int], max_length: int) -> str:
    """One line for many dropped examples: how many, and how many for each reason (most first)."""
    parts = [f"{count} {reason}: {DROP_REASONS.get(reason, reason)}"
             for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))]
    return (f"{num_dropped} of {num_examples} examples were dropped, not trained on (max_length={max_length}): "
            f"{'; '.join(parts) or 'longer than max_length'} (each row at DEBUG, -v)")


# --------------------------------------------------------------------------------------------
# best-fit decreasing


def pack_bfd(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Best-fit decreasing: bins of example indices whose lengths sum to at most ``max_length``.

    Examples are placed longest first (ties in index order), each into the open bin with the least
    room that still fits it, or a new bin. Open bins are kept by remaining capacity in a sorted list
    of distinct capacities (bisect), so each placement costs ``O(log C + C_moved)`` with at most
    ``max_length`` distinct capacities. Bins are returned in creation order (fullest-first tends to
    come first); indices within a bin in placement order.

    Raises:
        ValueError: an example is longer than ``max_length`` or has a negative length.
    """
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size == 0:
        return []
    if lens.min() < 0:
        raise ValueError(f"pack_bfd: negative length at index {int(lens.argmin())}")
    if lens.max() > max_length:
        i = int(lens.argmax())
        raise ValueError(f"pack_bfd: example {i} has {int(lens[i])} tokens > max_length={max_length}")
    order = np.argsort(-lens, kind="stable")
    caps: list[int] = []  # sorted distinct remaining capacities of open bins
    by_cap: dict[int, list[int]] = {}  # capacity -> bin ids with that capacity (LIFO)
    bins: list[list[int]] = []
    for idx, length in zip(order.tolist(), lens[order].tolist()):
        pos = bisect.bisect_left(caps, length)
        if pos < len(caps):
            cap = caps[pos]
            same = by_cap[cap]
            b = same.pop()
            if not same:
                del by_cap[cap]
                del caps[pos]
        else:
            b, cap = len(bins), max_length
            bins.append([])
        bins[b].append(idx)
        rest = cap - length
        if rest > 0:
            lst = by_cap.get(rest)
            if lst is None:
                by_cap[rest] = [b]
                bisect.insort(caps, rest)
            else:
                lst.append(b)
    return bins


# --------------------------------------------------------------------------------------------
# building packed columns


def _list_column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _list_lengths(arr: pa.Array) -> np.ndarray:
    return pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)


def position_ids_for(lengths: np.ndarray, dtype: Any = np.int32) -> np.ndarray:
    """Concatenated ``arange(l)`` for every ``l`` in ``lengths`` (vectorized)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    pos = np.ones(total, dtype=dtype)
    if total == 0:
        return pos
    starts = np.cumsum(lengths) - lengths
    nz = lengths > 0
    pos[starts[nz]] = np.concatenate([[0], 1 - lengths[nz][:-1]]).astype(dtype)
    return np.cumsum(pos, dtype=dtype)


def pack_table(
    table: pa.Table, max_length: int, shuffle_seed: int | None = 0, columns: Sequence[str] = ("input_ids", "labels")
) -> pa.Table:
    """Pack the tokenized examples of ``table`` into rows (see the module docstring).

    ``columns`` are list columns of equal per-row lengths; every example must fit ``max_length``.
    Returns a table with those columns plus ``position_ids`` and ``seq_lengths``.
    """
    arrays = [_list_column(table, c) for c in columns]
    lengths = _list_lengths(arrays[0])
    for c, a in zip(columns[1:], arrays[1:]):
        if not np.array_equal(_list_lengths(a), lengths):
            raise ValueError(f"pack_table: column {c!r} has lengths different from {columns[0]!r}")
    bins = pack_bfd(lengths, max_length)
    if shuffle_seed is not None and len(bins) > 1:
        perm = np.random.default_rng(shuffle_seed).permutation(len(bins))
        bins = [bins[i] for i in perm]
    counts = np.fromiter((len(b) for b in bins), dtype=np.int64, count=len(bins))
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=int(counts.sum()))
    seq_lengths = lengths[order]
    ex_offsets = np.concatenate([[0], np.cumsum(counts)])
    row_offsets = np.concatenate([[0], np.cumsum(seq_lengths)])[ex_offsets]
    take = pa.array(order)
    # int32 offsets as long as they fit (datasets' List feature), int64 (large_list) beyond
    big = int(row_offsets[-1]) >= 2**31 - 1
    list_type, off_dtype = (pa.LargeListArray, np.int64) if big else (pa.ListArray, np.int32)
    offsets = pa.array(row_offsets.astype(off_dtype))
    out = {}
    for c, a in zip(columns, arrays):
        out[c] = list_type.from_arrays(offsets, pc.take(a, take).flatten())
    out["position_ids"] = list_type.from_arrays(offsets, pa.array(position_ids_for(seq_lengths)))
    out["seq_lengths"] = pa.ListArray.from_arrays(
        pa.array(ex_offsets.astype(np.int32)), pa.array(seq_lengths.astype(np.int32))
    )
    return pa.table(out)


def pack_tokenized_dataset(
    dataset: datasets.Dataset, max_length: int, shuffle_seed: int | None = 0
) -> datasets.Dataset:
    """Pack an already tokenized map-style dataset (``input_ids`` and ``labels`` columns) in one BFD pass.

    Examples longer than ``max_length`` raise ``ValueError`` (truncate them first, see
    :func:`prepare_packed_dataset`). The result is an in-memory dataset with ``input_ids``,
    ``labels``, ``position_ids`` and ``seq_lengths``.
    """
    if not len(dataset):
        return datasets.Dataset.from_dict({k: [] for k in PACKED_FEATURES}, features=PACKED_FEATURES)
    table = dataset.with_format("arrow")[:]
    cols = ("input_ids", "labels") if "labels" in table.column_names else ("input_ids",)
    packed = pack_table(table, max_length, shuffle_seed, cols)
    if "labels" not in cols:
        packed = packed.append_column("labels", packed.column("input_ids"))
    # derive the fingerprint from the input's: datasets would otherwise hash the whole packed table
    source = getattr(dataset, "_fingerprint", None) or str(id(dataset))
    fingerprint = hashlib.sha256(f"{source}|pack_bfd|{max_length}|{shuffle_seed}".encode()).hexdigest()[:16]
    return datasets.Dataset(datasets.table.InMemoryTable(packed), fingerprint=fingerprint)


# --------------------------------------------------------------------------------------------
# datasets


def get_packing_stats(dataset: Any, max_length: int | None = None) -> PackingStats | None:
    """The :class:`PackingStats` of a dataset returned by :func:`prepare_packed_dataset` or :func:`arrange_rows`.

    For a dataset without the attribute (transformed copies), the stats are recomputed from its
    ``seq_lengths`` column when ``max_length`` is given (truncation/drop counts are then unknown: 0).
    """
    stats = getattr(dataset, "packing_stats", None)
    if stats is not None or max_length is None or not isinstance(dataset, datasets.Dataset):
        return stats
    if "seq_lengths" not in (dataset.column_names or []):
        return None
    lengths = _list_column(dataset.with_format("arrow")[:], "seq_lengths")
    flat = lengths.flatten().to_numpy(zero_copy_only=False)
    real = int(flat.sum())
    return PackingStats(
        num_examples=int(flat.size), num_rows=len(dataset), real_tokens=real, row_tokens=real, max_length=max_length
    )


def _seq_lengths_of(dataset: datasets.Dataset) -> list[np.ndarray]:
    col = _list_column(dataset.with_format("arrow")[:], "seq_lengths")
    offsets = col.offsets.to_numpy(zero_copy_only=False)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(col))]


def balance_report(
    dataset: datasets.Dataset,
    num_ranks: int = 8,
    rows_per_batch: int = 1,
    gradient_accumulation_steps: int = 1,
    attention_length: int = 32768,
    seed: int | None = 0,
) -> dict[str, float]:
    """Balance ratios (``mean/max`` per-rank row cost per global step) of packed rows at ``num_ranks``.

    ``"as_is"``: the dataset's own order, as a sequential sampler would feed it; ``"shuffled"``: a
    seeded random order (what the Trainer's default random sampler does); ``"balanced"``:
    :func:`hf_context_synthesis.training.balancing.balanced_order`.
    """
    from .balancing import balance_ratio, balanced_order, order_costs, row_costs

    costs = row_costs(_seq_lengths_of(dataset), attention_length)
    args = (num_ranks, rows_per_batch, gradient_accumulation_steps)
    perm = np.random.default_rng(seed).permutation(len(costs))
    return {
        "as_is": balance_ratio(costs, *args),
        "shuffled": balance_ratio(costs[perm], *args),
        "balanced": balance_ratio(order_costs(balanced_order(costs, *args, seed=seed), costs), *args),
    }


def arrange_rows(
    dataset: datasets.Dataset,
    num_ranks: int,
    rows_per_batch: int = 1,
    gradient_accumulation_steps: int = 1,
    *,
    row_order: str = "shuffle",
    pad_token_id: int = 0,
    attention_length: int = 32768,
    seed: int | None = 0,
) -> datasets.Dataset:
    """Order packed rows for ``num_ranks`` data-parallel ranks and pad them to whole global steps.

    Accelerate hands out batches round-robin, and when the batches do not divide by the ranks it
    re-feeds the first rows to the last ranks, so some examples would be trained twice an epoch. Here
    the row count is padded, by design, to a multiple of ``num_ranks * rows_per_batch *
    gradient_accumulation_steps`` with *padding rows*: one pad token, label ``-100``, no loss and no
    example (``PackingStats.num_padding_rows`` reports them). Every example is then trained exactly
    once per epoch, on exactly one rank.

    ``row_order="balanced"`` reorders the rows with
    :func:`hf_context_synthesis.training.balancing.balanced_order` (train them with a sequential sampler, as
    :func:`~hf_context_synthesis.training.trainer.build_trainer` does); ``"shuffle"`` keeps the order. The
    result's stats carry ``num_ranks`` and the ``balance_ratio`` of the resulting order.
    """
    from .balancing import balance_ratio, balanced_order, order_costs, row_costs

    if row_order not in ("shuffle", "balanced"):
        raise ValueError(f"row_order must be 'shuffle' or 'balanced', got {row_order!r}")
    stats = get_packing_stats(dataset)
    stats = replace(stats) if stats is not None else PackingStats(num_rows=len(dataset))
    costs = row_costs(_seq_lengths_of(dataset), attention_length) if len(dataset) else np.zeros(0)
    per_step = num_ranks * rows_per_batch * gradient_accumulation_steps
    if row_order == "balanced":
        order = balanced_order(costs, num_ranks, rows_per_batch, gradient_accumulation_steps, seed=seed)
    else:
        order = np.arange(len(dataset), dtype=np.int64)
        order = np.concatenate([order, np.full((-order.size) % per_step, -1, dtype=np.int64)])
    n_pad = int((order < 0).sum())
    table = dataset.with_format("arrow")[:].select(list(PACKED_FEATURES))
    if n_pad:
        pad_rows = pa.table(
            {
                "input_ids": pa.array([[pad_token_id]] * n_pad, type=pa.list_(pa.int32())),
                "labels": pa.array([[IGNORE_INDEX]] * n_pad, type=pa.list_(pa.int32())),
                "position_ids": pa.array([[0]] * n_pad, type=pa.list_(pa.int32())),
                "seq_lengths": pa.array([[1]] * n_pad, type=pa.list_(pa.int32())),
            }
        ).cast(table.schema)
        table = pa.concat_tables([table, pad_rows])
        take = np.where(order >= 0, order, len(dataset) + np.cumsum(order < 0) - 1)
    else:
        take = order
    if row_order == "balanced" or n_pad:
        table = table.take(pa.array(take))
    source = getattr(dataset, "_fingerprint", None) or str(id(dataset))
    key = f"{source}|arrange|{num_ranks}|{rows_per_batch}|{gradient_accumulation_steps}|{row_order}|{seed}|{attention_length}"
    out = datasets.Dataset(
        datasets.table.InMemoryTable(table), fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16]
    )
    stats.num_padding_rows = n_pad
    stats.num_ranks = num_ranks
    stats.balance_ratio = balance_ratio(
        order_costs(order, costs), num_ranks, rows_per_batch, gradient_accumulation_steps
    )
    out.packing_stats = stats  # type: ignore[attr-defined]
    if n_pad:
        logger.info(
            "%d padding rows (no loss tokens) added so %d rows fill whole steps of %d ranks x %d rows",
            n_pad, len(dataset), num_ranks, per_step // num_ranks,
        )
    return out


def _is_tokenized(names: Sequence[str] | None) -> bool:
    return bool(names) and "input_ids" in names and "messages" not in names  # type: ignore[operator]


def prepare_packed_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset,
    tokenizer: Any,
    config: PackingConfig | None = None,
    **overrides: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Tokenize (with truncation), then pack ``dataset`` into rows of at most ``config.max_length`` tokens.

    Args:
        dataset: Composed rows (a ``messages`` column, plus ``context_spans`` / ``relevant_index``
            for document-aware truncation) or already tokenized rows (``input_ids`` and ``labels``;
            those must fit ``max_length``). A map-style ``Dataset`` is packed in one BFD pass over all
            examples; an ``IterableDataset`` is packed ``config.stream_buffer_size`` examples at a time
            and stays an ``IterableDataset``.
        tokenizer: Tokenizer with a chat template.
        config: Packing settings (default :class:`PackingConfig`); ``overrides`` replace fields.

    Returns:
        A dataset of packed rows (``input_ids``, ``labels``, ``position_ids``, ``seq_lengths``) with
        a ``packing_stats`` attribute (:func:`get_packing_stats`).
    """
    config = replace(config or PackingConfig(), **overrides)
    if isinstance(dataset, datasets.IterableDataset):
        return _prepare_streaming(dataset, tokenizer, config)
    stats = PackingStats(num_examples=len(dataset), max_length=config.max_length)
    if not len(dataset):
        packed = pack_tokenized_dataset(dataset, config.max_length, config.shuffle_seed)
        packed.packing_stats = stats  # type: ignore[attr-defined]
        return packed
    if _is_tokenized(dataset.column_names):
        tokenized = dataset
        lengths = _list_lengths(_list_column(dataset.with_format("arrow")[:], "input_ids"))
        keep = np.nonzero(lengths <= config.example_cap)[0]
        if keep.size < len(dataset):
            stats.drop_reasons["over_example_cap"] = len(dataset) - int(keep.size)
            tokenized = dataset.select(keep)
    else:
        if "messages" not in (dataset.column_names or []):
            raise ValueError(f"dataset: expected a 'messages' column (composed rows); got {dataset.column_names}")
        tokenized = dataset.map(
            _tokenize_batch,
            batched=True,
            batch_size=64,
            remove_columns=dataset.column_names,
            features=_TOKENIZED_WITH_REASON,
            fn_kwargs={"tokenizer": tokenizer, "max_length": config.example_cap, "truncation": config.truncation},
            num_proc=config.num_proc,
            desc="Tokenizing",
        )
        reasons = tokenized.with_format("arrow")["drop_reason"]
        for item in pc.value_counts(reasons).to_pylist():
            if item["values"]:
                stats.drop_reasons[item["values"]] = int(item["counts"])
        if stats.drop_reasons:
            tokenized = tokenized.select(np.nonzero(pc.equal(reasons, "").to_numpy(zero_copy_only=False))[0])
        tokenized = tokenized.remove_columns("drop_reason")
        stats.num_truncated = int(np.sum(tokenized.with_format("arrow")["truncated"].to_numpy(zero_copy_only=False)))
    stats.num_dropped = len(dataset) - len(tokenized)
    if stats.num_dropped and not len(tokenized):  # else TRL's trainer ends in a bare StopIteration
        raise ValueError(
            f"all {len(dataset)} examples are longer than max_length={config.example_cap} tokens and none could be "
            f"shortened to fit{'' if config.truncation else ' (truncation is off)'}: nothing is left to train on. "
            f"Raise max_length, or compose shorter examples (fewer num_distractors, target_tokens <= max_length)"
        )
    if stats.num_dropped:  # one line for all of them; each row was logged at DEBUG
        logger.warning(drop_summary(stats.num_dropped, len(dataset), stats.drop_reasons, config.example_cap))
    packed = pack_tokenized_dataset(tokenized, config.max_length, config.shuffle_seed)
    stats.num_rows = len(packed)
    if len(packed):
        table = packed.with_format("arrow")[:]
        real = int(pc.sum(pc.list_value_length(_list_column(table, "input_ids"))).as_py())
        stats.answer_tokens = _answer_tokens(_list_column(table, "labels"))
    else:
        real = 0
    stats.real_tokens = stats.row_tokens = real
    packed.packing_stats = stats  # type: ignore[attr-defined]
    logger.info(
        "packed %d examples into %d rows of <= %d tokens (fill %.3f; %d truncated, %d dropped)",
        len(tokenized),
        stats.num_rows,
        config.max_length,
        stats.efficiency,
        stats.num_truncated,
        stats.num_dropped,
    )
    return packed


def _prepare_streaming(
    dataset: datasets.IterableDataset, tokenizer: Any, config: PackingConfig
) -> datasets.IterableDataset:
    names = dataset.column_names
    if names is None:  # features unknown: peek at one row
        first = next(iter(dataset), None)
        names = list(first) if isinstance(first, dict) else []
    tokenized_input = _is_tokenized(names)
    if not tokenized_input and "messages" not in names:
        raise ValueError(f"dataset: expected a 'messages' column (composed rows); got {names}")
    stats = PackingStats(max_length=config.max_length, scope="rank")
    state = {"buffer": 0}

    def pack_buffer(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n = len(batch[names[0]]) if names else 0
        stats.num_examples += n
        if tokenized_input:
            tok = {"input_ids": batch["input_ids"], "labels": batch.get("labels", batch["input_ids"])}
            keep = [i for i, ids in enumerate(tok["input_ids"]) if len(ids) <= config.example_cap]
            tok = {k: [v[i] for i in keep] for k, v in tok.items()}
            reasons = {"over_example_cap": n - len(keep)} if len(keep) < n else {}
        else:
            tok, reasons = _split_dropped(_tokenize_batch(batch, tokenizer, config.example_cap, config.truncation))
            stats.num_truncated += int(sum(tok.pop("truncated")))
        kept = len(tok["input_ids"])
        stats.num_dropped += n - kept
        for reason, count in reasons.items():
            stats.drop_reasons[reason] = stats.drop_reasons.get(reason, 0) + count
        if reasons:  # one line per buffer of stream_buffer_size examples; each row at DEBUG
            logger.warning(drop_summary(n - kept, n, reasons, config.example_cap))
        if not kept:
            return {k: [] for k in PACKED_FEATURES}
        table = pa.table(
            {k: pa.array(v, type=pa.list_(pa.int32())) for k, v in tok.items()}
        )
        packed = pack_table(table, config.max_length, None, ("input_ids", "labels"))
        if config.shuffle_seed is not None and packed.num_rows > 1:
            rng = np.random.default_rng([config.shuffle_seed, state["buffer"]])
            packed = packed.take(pa.array(rng.permutation(packed.num_rows)))
        state["buffer"] += 1
        stats.num_rows += packed.num_rows
        real = int(pc.sum(pc.list_value_length(packed.column("input_ids"))).as_py())
        stats.answer_tokens += _answer_tokens(packed.column("labels"))
        stats.real_tokens += real
        stats.row_tokens += real
        return packed.to_pydict()

    packed = dataset.map(
        pack_buffer,
        batched=True,
        batch_size=config.stream_buffer_size,
        remove_columns=names,
        features=PACKED_FEATURES,
    )
    packed.packing_stats = stats  # type: ignore[attr-defined]
    return packed


# --------------------------------------------------------------------------------------------
# collation and loss


@dataclass
class PackedDataCollator:
    """Collate packed rows into one padding-free sequence with position ids and no attention mask.

    ``__call__(features)`` concatenates the rows of a batch into tensors of shape ``[1, total]``:

    * ``input_ids``, ``labels`` (the first token of every example is set to ``-100``, so no example
      is trained to predict the start of the next one), ``position_ids`` (restart at 0 at every
      example: transformers keeps examples apart with them; taken from the rows' ``position_ids`` or
      rebuilt from ``seq_lengths``; a row with neither is one example);
    * with ``return_flash_kwargs`` (the default, as in TRL's padding-free collator; eager, sdpa and flex
      attention ignore them): ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (int32 cumulative example
      boundaries ``[0, l0, l0+l1, ..., total]``), ``max_length_q`` / ``max_length_k`` (int, the
      longest example) and ``seq_idx`` (int32 ``[1, total]``, the example index of every token, for
      linear-attention and SSM layers, as TRL emits it);
    * with ``loss_weighting="example"``: ``loss_weights`` (float32, shape of ``labels``), ``1 / N_k``
      on the ``N_k`` answer tokens of each example, 0 elsewhere; the trainer divides the weighted sum by
      the number of examples in the global batch (see :func:`longalign_loss`).

    ``pad_to_multiple_of`` appends pad tokens (labels ``-100``, position ids from 0, i.e. their own
    segment, also in ``cu_seq_lens``) so the length is a multiple of it.

    Run the model with ``use_cache=False`` (``Trainer`` does): with a cache, transformers does not
    derive the per-example mask from ``position_ids`` and packed examples would attend to each other.

    Counters ``real_tokens`` (example tokens) and ``batch_tokens`` (tokens in the tensors, padding
    included) accumulate over calls (read by
    :class:`hf_context_synthesis.trainer_callbacks.ThroughputCallback`).
    """

    pad_token_id: int = 0
    return_flash_kwargs: bool = True
    loss_weighting: str = "token"
    pad_to_multiple_of: int | None = None
    real_tokens: int = field(default=0, init=False)
    batch_tokens: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.loss_weighting not in ("token", "example"):
            raise ValueError(f"loss_weighting must be 'token' or 'example', got {self.loss_weighting!r}")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("PackedDataCollator: empty batch")
        ids_parts, label_parts, pos_parts, seq_parts = [], [], [], []
        for i, f in enumerate(features):
            ids = np.asarray(f["input_ids"], dtype=np.int64)
            labels = np.asarray(f["labels"] if f.get("labels") is not None else f["input_ids"], dtype=np.int64)
            if labels.shape != ids.shape:
                raise ValueError(f"PackedDataCollator: feature {i} has {labels.size} labels for {ids.size} input_ids")
            seq = f.get("seq_lengths")
            seq = np.asarray(seq if seq is not None else [ids.size], dtype=np.int64)
            if int(seq.sum()) != ids.size:
                raise ValueError(f"PackedDataCollator: feature {i}: seq_lengths sum {int(seq.sum())} != {ids.size} tokens")
            pos = f.get("position_ids")
            pos = np.asarray(pos, dtype=np.int64) if pos is not None else position_ids_for(seq, np.int64)
            ids_parts.append(ids)
            label_parts.append(labels)
            pos_parts.append(pos)
            seq_parts.append(seq)
        ids = np.concatenate(ids_parts)
        labels = np.concatenate(label_parts)
        pos = np.concatenate(pos_parts)
        seq = np.concatenate(seq_parts)
        seq = seq[seq > 0]
        starts = np.cumsum(seq) - seq
        labels[starts] = IGNORE_INDEX
        real = int(ids.size)
        pad = 0
        if self.pad_to_multiple_of:
            pad = (-real) % int(self.pad_to_multiple_of)
        if pad:
            ids = np.concatenate([ids, np.full(pad, self.pad_token_id, dtype=np.int64)])
            labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, dtype=np.int64)])
            pos = np.concatenate([pos, np.arange(pad, dtype=np.int64)])
        batch: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids).unsqueeze(0),
            "labels": torch.from_numpy(labels).unsqueeze(0),
            "position_ids": torch.from_numpy(pos).unsqueeze(0),
        }
        if self.return_flash_kwargs:
            segs = np.concatenate([seq, [pad]]) if pad else seq
            cu = torch.from_numpy(np.concatenate([[0], np.cumsum(segs)]).astype(np.int32))
            longest = int(segs.max()) if segs.size else 0
            batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu.clone(), max_length_q=longest, max_length_k=longest)
            # example index of every token, as TRL's padding-free collator emits (linear-attention / SSM layers)
            seq_idx = np.repeat(np.arange(segs.size, dtype=np.int32), segs)
            batch["seq_idx"] = torch.from_numpy(seq_idx).unsqueeze(0)
        if self.loss_weighting == "example":
            batch["loss_weights"] = torch.from_numpy(example_loss_weights(labels, seq)).unsqueeze(0)
        self.real_tokens += real
        self.batch_tokens += int(ids.size)
        return batch


def example_loss_weights(labels: np.ndarray, seq_lengths: Sequence[int]) -> np.ndarray:
    """LongAlign per-token weights for one concatenated sequence: ``1 / N_k`` on answer tokens.

    ``seq_lengths`` split ``labels`` into examples (a trailing remainder, such as padding, is one more
    segment). ``N_k`` counts the labels ``!= -100`` of example ``k``; each example with answer tokens
    gets weights summing to 1, so the weights of a batch sum to the number of its examples with answer
    tokens (the trainer divides by that count over the whole global batch, see :func:`longalign_loss`).
    """
    labels = np.asarray(labels).reshape(-1)
    bounds = np.concatenate([[0], np.cumsum(np.asarray(seq_lengths, dtype=np.int64))])
    if bounds[-1] < labels.size:
        bounds = np.concatenate([bounds, [labels.size]])
    valid = labels != IGNORE_INDEX
    seg = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    n_k = np.bincount(seg[valid], minlength=len(bounds) - 1).astype(np.float64)
    weights = np.zeros(labels.size, dtype=np.float32)
    per = np.where(n_k > 0, 1.0 / np.maximum(n_k, 1), 0.0)
    weights[valid] = per[seg[valid]].astype(np.float32)
    return weights


def count_weighted_sequences(loss_weights: Any) -> int:
    """Examples with answer tokens in a batch: the sum of its ``1 / N_k`` weights, rounded."""
    return int(round(float(loss_weights.sum())))


def longalign_loss(logits: Any, labels: Any, loss_weights: Any | None = None, num_sequences: Any | None = None) -> Any:
    """Shifted causal-LM cross-entropy with LongAlign's per-example weighting (a reference implementation).

    With ``w = 1/N_k`` on the answer tokens of example ``k`` (:class:`PackedDataCollator`,
    ``loss_weighting="example"``), the loss is LongAlign's Eq. 2::

        L = (1/M) * sum_k (1/N_k) * sum_{t in answer tokens of example k} CE_t

    where ``M`` is ``num_sequences`` (in training: the examples with answer tokens in the whole global
    batch, over gradient accumulation and ranks, see ``ContextSynthesisSFTTrainer``) or, when ``None``,
    the examples of this batch (``w.sum()``). The logits at ``t-1`` predict the label at ``t``. With
    ``loss_weights=None`` it is the plain mean over all answer tokens (``"token"`` weighting). Positions
    with label ``-100`` never contribute. This function takes full logits; training computes the same
    sum from TRL's chunked log-probabilities and never materialises the ``[tokens, vocab]`` logits.
    """
    import torch
    import torch.nn.functional as F

    logits = logits[..., :-1, :].float()
    target = labels[..., 1:].to(logits.device)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    valid = target.reshape(-1) != IGNORE_INDEX
    if loss_weights is None:
        return ce.sum() / valid.sum().clamp(min=1)
    w = loss_weights[..., 1:].to(ce.device, torch.float32).reshape(-1)
    m = loss_weights.sum() if num_sequences is None else num_sequences
    return (ce * w * valid).sum() / torch.as_tensor(m, dtype=torch.float32, device=ce.device).clamp(min=1e-12)
