"""Attention-cost balanced global steps for multi-rank training of packed rows.

With variable-length attention a packed row costs about ``α·Σlen + β·Σlen²`` (linear layers grow with
the tokens, attention with the square of each example's length). In data-parallel training every
rank trains its micro-batches of a global step in lock step, so the slowest rank sets the pace; the
*balance ratio* of a step is ``mean / max`` of the per-rank costs (1.0: no rank waits).

:func:`balanced_order` arranges rows the way Hierarchical Balance Packing (arXiv 2503.07680) does at
the batch level, without touching the loss (every row is still trained exactly once per epoch):

1. rows are sorted by cost, so rows of similar cost fall into the same global step;
2. within a step, rows are dealt to ranks longest-processing-time first (each row to the rank with
   the least cost so far that still has a free slot), which evens the per-rank cost;
3. the steps are shuffled (seeded), so training does not see costs in sorted order.

Rows are laid out for the order in which ``accelerate`` shards a sequential sampler: batch ``b`` of
``rows_per_batch`` rows goes to rank ``b % num_ranks``, and ``gradient_accumulation_steps`` batches of
a rank make its part of a global step. When the row count does not fill the last step, the order is
padded with ``-1`` entries (padding rows without loss tokens, see :func:`arrange_rows`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
import numpy as np

__all__ = ["DEFAULT_ATTENTION_LENGTH", "balance_ratio", "balanced_order", "order_costs", "row_costs", "step_slots"]

#: Example length at which attention costs as much as the linear layers (≈ 6·P / (12·layers·hidden);
#: about 27k for a Llama-7B shape). ``cost(row) = Σlen + Σlen² / DEFAULT_ATTENTION_LENGTH``.
DEFAULT_ATTENTION_LENGTH = 32768


def row_costs(seq_lengths: Sequence[Sequence[int]], attention_length: float = DEFAULT_ATTENTION_LENGTH) -> np.ndarray:
    """Estimated compute of each packed row: ``Σlen + Σlen² / attention_length`` over its examples."""
    out = np.empty(len(seq_lengths), dtype=np.float64)
    for i, lens in enumerate(seq_lengths):
        a = np.asarray(lens, dtype=np.float64)
        out[i] = a.sum() + (a * a).sum() / float(attention_length)
    return out


def step_slots(num_ranks: int, rows_per_batch: int = 1, gradient_accumulation_steps: int = 1) -> np.ndarray:
    """``slots[r]``: positions (within one global step's block of rows) that rank ``r`` trains."""
    per_step = num_ranks * rows_per_batch * gradient_accumulation_steps
    pos = np.arange(per_step)
    rank_of = (pos // rows_per_batch) % num_ranks
    return np.stack([pos[rank_of == r] for r in range(num_ranks)])


def balance_ratio(
    costs_in_order: Sequence[float],
    num_ranks: int,
    rows_per_batch: int = 1,
    gradient_accumulation_steps: int = 1,
) -> float:
    """Useful compute of an order of rows: ``Σ_steps mean_r(cost) / Σ_steps max_r(cost)``.

    ``costs_in_order`` are the row costs in training order (0 for padding rows); the last step is
    padded with zero-cost rows. 1.0 means no rank ever waits for another.
    """
    costs = np.asarray(costs_in_order, dtype=np.float64)
    slots = step_slots(num_ranks, rows_per_batch, gradient_accumulation_steps)
    per_step = slots.size
    if costs.size == 0:
        return 1.0
    costs = np.concatenate([costs, np.zeros((-costs.size) % per_step)])
    blocks = costs.reshape(-1, per_step)
    per_rank = np.stack([blocks[:, slots[r]].sum(axis=1) for r in range(num_ranks)], axis=1)
    worst = per_rank.max(axis=1).sum()
    return float(per_rank.mean(axis=1).sum() / worst) if worst > 0 else 1.0


def balanced_order(
    costs: Sequence[float],
    num_ranks: int,
    rows_per_batch: int = 1,
    gradient_accumulation_steps: int = 1,
    seed: int | None = 0,
) -> np.ndarray:
    """Row indices in a training order whose global steps are cost-balanced across ranks.

    Returns an int64 array whose length is a multiple of ``num_ranks * rows_per_batch *
    gradient_accumulation_steps``; ``-1`` marks a padding slot (only in the cheapest step). Every row
    index appears exactly once.
    """
    if num_ranks < 1 or rows_per_batch < 1 or gradient_accumulation_steps < 1:
        raise ValueError("balanced_order: num_ranks, rows_per_batch and gradient_accumulation_steps must be >= 1")
    c = np.asarray(costs, dtype=np.float64)
    slots = step_slots(num_ranks, rows_per_batch, gradient_accumulation_steps)
    per_step, per_rank = slots.size, slots.shape[1]
    order = np.argsort(-c, kind="stable")
    order = np.concatenate([order, np.full((-order.size) % per_step, -1, dtype=np.int64)])
    steps = []
    for block in order.reshape(-1, per_step) if order.size else []:
        heap: list[tuple[float, int]] = [(0.0, r) for r in range(num_ranks)]
        filled = [0] * num_ranks
        out = np.full(per_step, -1, dtype=np.int64)
        for idx in block:  # costliest first (padding, cost 0, last)
            load, r = heapq.heappop(heap)
            out[slots[r][filled[r]]] = idx
            filled[r] += 1
            if filled[r] < per_rank:
                heapq.heappush(heap, (load + (c[idx] if idx >= 0 else 0.0), r))
        steps.append(out)
    if seed is not None and len(steps) > 1:
        perm = np.random.default_rng(seed).permutation(len(steps))
        steps = [steps[i] for i in perm]
    return np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)


def order_costs(order: np.ndarray, costs: Sequence[float]) -> np.ndarray:
    """Costs along an order that may contain ``-1`` padding slots (cost 0)."""
    c = np.asarray(costs, dtype=np.float64)
    return np.where(order >= 0, c[np.maximum(order, 0)], 0.0)
