"""Attention-cost balanced global steps (hf_context_synthesis.training.balancing) and arrange_rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_context_synthesis.training.balancing import balance_ratio, balanced_order, order_costs, row_costs, step_slots
from hf_context_synthesis.training.packing import arrange_rows, balance_report, pack_bfd, pack_tokenized_dataset

datasets = pytest.importorskip("datasets")


def paper_lengths(seeds_dir, cap: int = 32768, seed: int = 0) -> np.ndarray:
    """The paper's example lengths: real seed instruction + answer (words x 1.3 tokens) + 10 documents of
    lognormal(mean 2,000 words, sigma 0.3) x 1.3 tokens/word, clipped to ``cap`` (as benchmarks/packing.py)."""
    base = []
    for path in sorted(seeds_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                base.append(int(1.3 * (len(r["instruction"].split()) + len(r["answer"].split()))) + 200)
    rng = np.random.default_rng(seed)
    sigma = 0.3
    docs = rng.lognormal(math.log(2000) - sigma**2 / 2, sigma, size=(len(base), 10)) * 1.3
    return np.minimum(np.asarray(base) + docs.sum(axis=1).astype(np.int64), cap)


def test_step_slots_match_how_accelerate_shards_a_sequential_sampler():
    """Rank r trains, in global step s, exactly the rows balanced_order put in slots[r] of block s."""
    import torch
    from accelerate.data_loader import BatchSamplerShard

    ranks, per_batch, ga, n = 3, 2, 2, 48
    slots = step_slots(ranks, per_batch, ga)
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(n)), per_batch, drop_last=False)
    per_step = ranks * per_batch * ga
    for r in range(ranks):
        shard = list(BatchSamplerShard(sampler, num_processes=ranks, process_index=r))
        for s in range(n // per_step):
            trained = sorted(i for b in shard[s * ga : (s + 1) * ga] for i in b)
            assert trained == sorted((s * per_step + slots[r]).tolist())


def test_balanced_order_is_a_padded_permutation():
    rng = np.random.default_rng(1)
    costs = rng.uniform(1, 100, 203)
    order = balanced_order(costs, 8, 1, 2, seed=3)
    assert order.size % 16 == 0 and order.size - 203 == (-203) % 16
    assert sorted(order[order >= 0].tolist()) == list(range(203))
    # padding sits in the cheapest step only
    blocks = order.reshape(-1, 16)
    assert sum(bool((b < 0).any()) for b in blocks) == 1
    with pytest.raises(ValueError):
        balanced_order(costs, 0)


def test_balanced_mode_reaches_095_useful_compute_at_8_ranks_on_paper_lengths(seeds_dir):
    lengths = paper_lengths(seeds_dir)
    assert lengths.size == 1600 and 20000 < np.median(lengths) < 32768
    for budget in (32768, 65536):  # and a micro-batch budget larger than the example cap
        rows = [lengths[b] for b in pack_bfd(lengths, budget)]
        costs = row_costs(rows)
        shuffled = balance_ratio(costs[np.random.default_rng(0).permutation(costs.size)], 8)
        balanced = balance_ratio(order_costs(balanced_order(costs, 8, seed=0), costs), 8)
        assert balanced >= 0.95, (budget, balanced)
        assert shuffled < 0.9 < balanced, (budget, shuffled, balanced)
    # a wider budget than the example cap puts more examples per row
    assert len(pack_bfd(lengths, 65536)) < 0.6 * len(pack_bfd(lengths, 32768))


def test_balance_ratio_of_equal_costs_is_one_and_of_one_busy_rank_is_1_over_ranks():
    assert balance_ratio([5.0] * 16, 8) == 1.0
    assert balance_ratio([8.0] + [0.0] * 7, 8) == pytest.approx(1 / 8)


def _tokenized(lengths):
    ids = [list(range(1, n + 1)) for n in lengths]
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})


def test_arrange_rows_pads_to_whole_steps_and_reports_balance():
    lengths = [50, 40, 30, 30, 20, 10, 90, 80, 5, 60, 70]
    packed = pack_tokenized_dataset(_tokenized(lengths), 100, 0)
    n = len(packed)
    out = arrange_rows(packed, 4, 1, 2, row_order="balanced", pad_token_id=7, attention_length=100)
    stats = out.packing_stats
    assert len(out) % 8 == 0 and stats.num_padding_rows == len(out) - n and stats.num_ranks == 4
    assert 0 < stats.balance_ratio <= 1
    pads = [r for r in out if r["labels"] == [-100]]
    assert len(pads) == stats.num_padding_rows and all(r["input_ids"] == [7] and r["seq_lengths"] == [1] for r in pads)
    # every real example is still there exactly once
    real = sorted(tuple(r["input_ids"][a:b]) for r in out if r["labels"] != [-100]
                  for a, b in zip(np.cumsum([0] + r["seq_lengths"][:-1]), np.cumsum(r["seq_lengths"])))
    assert sorted(len(x) for x in real) == sorted(lengths)
    kept = arrange_rows(packed, 4, 1, 2, row_order="shuffle", pad_token_id=7)
    assert [r["input_ids"] for r in kept][:n] == [r["input_ids"] for r in packed]  # order kept, padding appended
    report = balance_report(packed, num_ranks=4, attention_length=100)
    assert set(report) == {"as_is", "shuffled", "balanced"} and report["balanced"] >= report["as_is"] - 1e-9
