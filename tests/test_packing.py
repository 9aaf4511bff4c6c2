"""Packing: BFD validity, position ids, the padding-free collator (labels, flash kwargs, LongAlign
weights), loss equivalence of packed vs one-by-one forward passes, map-style vs streaming datasets."""

from __future__ import annotations

import collections
import copy
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

import torch.nn.functional as F  # noqa: E402

from hf_context_synthesis.training.packing import (  # noqa: E402
    IGNORE_INDEX,
    PackedDataCollator,
    PackingConfig,
    count_weighted_sequences,
    example_loss_weights,
    get_packing_stats,
    longalign_loss,
    pack_bfd,
    position_ids_for,
    prepare_packed_dataset,
    tokenize_example,
    tokenize_messages,
)
from hf_context_synthesis.testing.rows import composed_rows as _composed_rows  # noqa: E402
from hf_context_synthesis.testing.tiny_model import TINY_CHAT_TEMPLATE  # noqa: E402


def composed_rows(seeds_dir: Path, tasks=("hotpotqa", "musique", "qasper"), per_task: int = 6, num_distractors: int = 3):
    return _composed_rows(seeds_dir, tasks, per_task, num_distractors)


@pytest.fixture(scope="module")
def rows(seeds_dir):
    return composed_rows(seeds_dir)


def chat_len(tok, row) -> int:
    return len(tokenize_messages(row["messages"], tok)[0])


def relevant_only_len(tok, row) -> int:
    """Tokens of the chat with every distractor removed (the shortest truncation can reach)."""
    content, spans = row["messages"][0]["content"], row["context_spans"]
    s, e = spans[row["relevant_index"]]
    user = content[: spans[0][0]] + content[s:e] + content[spans[-1][1] :]
    return len(tokenize_messages([{"role": "user", "content": user}, row["messages"][1]], tok)[0])


def examples_of(packed_rows) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input_ids, labels)`` of every example in packed rows (split by ``seq_lengths``)."""
    out = []
    for r in packed_rows:
        start = 0
        assert list(r["position_ids"]) == position_ids_for(np.asarray(r["seq_lengths"])).tolist()
        for n in r["seq_lengths"]:
            out.append((tuple(r["input_ids"][start : start + n]), tuple(r["labels"][start : start + n])))
            start += n
        assert start == len(r["input_ids"]) == len(r["labels"])
    return out


# ------------------------------------------------------------------------------------------------
# best-fit decreasing and position ids


def reference_bfd(lengths, max_length):
    """Plain O(n * bins) best-fit decreasing: the open bin with the least room that fits."""
    rooms: list[int] = []
    for length in sorted(lengths, reverse=True):
        fits = [(room, b) for b, room in enumerate(rooms) if room >= length]
        if fits:
            _, b = min(fits)
            rooms[b] -= length
        else:
            rooms.append(max_length - length)
    return sorted(max_length - r for r in rooms)


@pytest.mark.parametrize("seed", range(6))
def test_pack_bfd_is_valid_and_matches_reference(seed):
    rng = np.random.default_rng(seed)
    max_length = int(rng.integers(50, 2000))
    n = int(rng.integers(1, 400))
    if seed % 2:
        lengths = rng.integers(0, max_length + 1, size=n)  # anything up to max_length, zeros included
    else:
        lengths = rng.integers(max_length // 10, max_length // 2, size=n)  # many fit together
    bins = pack_bfd(lengths.tolist(), max_length)
    flat = [i for b in bins for i in b]
    assert sorted(flat) == list(range(n))  # every index exactly once
    loads = [int(lengths[b].sum()) for b in bins]
    assert all(load <= max_length for load in loads) and all(b for b in bins)
    # same bins (as multiset of loads) as the naive best-fit decreasing
    assert sorted(loads) == reference_bfd(lengths.tolist(), max_length)
    lower = math.ceil(int(lengths.sum()) / max_length)
    assert lower <= len(bins) <= max(1, math.ceil(11 / 9 * lower + 1))
    # longest first: within a bin, placement order is non-increasing
    for b in bins:
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)


def test_pack_bfd_edge_cases():
    assert pack_bfd([], 10) == []
    assert pack_bfd([10, 10], 10) == [[0], [1]]
    assert sorted(map(sorted, pack_bfd([6, 4, 5, 5], 10))) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="example 1 has 11 tokens"):
        pack_bfd([3, 11, 2], 10)
    with pytest.raises(ValueError, match="negative"):
        pack_bfd([3, -1], 10)


def test_position_ids_for_matches_naive_loop():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(0, 9, size=int(rng.integers(0, 12)))
        naive = [p for n in lengths for p in range(n)]
        got = position_ids_for(lengths)
        assert got.dtype == np.int32 and got.tolist() == naive
        assert position_ids_for(lengths, np.int64).dtype == np.int64
    assert position_ids_for(np.array([0, 0, 3, 0, 2])).tolist() == [0, 1, 2, 0, 1]


# ------------------------------------------------------------------------------------------------
# collator


def feature(seq_lengths, start=10, labels=None, with_positions=False):
    n = sum(seq_lengths)
    f = {"input_ids": list(range(start, start + n)), "labels": labels if labels is not None else list(range(start, start + n))}
    f["seq_lengths"] = list(seq_lengths)
    if with_positions:
        f["position_ids"] = position_ids_for(np.asarray(seq_lengths)).tolist()
    return f


def test_collator_concatenates_rows_sets_first_token_label_and_restarts_positions():
    feats = [feature([3, 4], start=10, with_positions=True), feature([5], start=100)]
    collator = PackedDataCollator()
    batch = collator(feats)
    assert "attention_mask" not in batch
    assert batch["input_ids"].shape == (1, 12)
    assert batch["input_ids"][0].tolist() == list(range(10, 17)) + list(range(100, 105))
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    labels = batch["labels"][0].tolist()
    # the first token of each example is never a target; everything else unchanged
    assert [i for i, v in enumerate(labels) if v == IGNORE_INDEX] == [0, 3, 7]
    assert [v for v in labels if v != IGNORE_INDEX] == [11, 12, 14, 15, 16, 101, 102, 103, 104]
    assert (collator.real_tokens, collator.batch_tokens) == (12, 12)
    # a row without seq_lengths / position_ids is one example; input features are not modified
    plain = {"input_ids": [1, 2, 3], "labels": [1, 2, 3]}
    batch = collator([plain])
    assert batch["position_ids"][0].tolist() == [0, 1, 2] and batch["labels"][0].tolist() == [-100, 2, 3]
    assert plain["labels"] == [1, 2, 3]
    with pytest.raises(ValueError, match="seq_lengths sum"):
        collator([{"input_ids": [1, 2], "labels": [1, 2], "seq_lengths": [3]}])
    with pytest.raises(ValueError, match="labels"):
        collator([{"input_ids": [1, 2], "labels": [1]}])


@pytest.mark.parametrize("multiple", [None, 8, 5])
def test_flash_kwargs_and_padding(multiple):
    feats = [feature([3, 4]), feature([5])]
    collator = PackedDataCollator(pad_token_id=7, return_flash_kwargs=True, pad_to_multiple_of=multiple)
    batch = collator(feats)
    total = batch["input_ids"].shape[1]
    pad = 0 if multiple is None else (-12) % multiple
    assert total == 12 + pad and (multiple is None or total % multiple == 0)
    segments = [3, 4, 5] + ([pad] if pad else [])
    expected_cu = np.concatenate([[0], np.cumsum(segments)]).tolist()
    for key in ("cu_seq_lens_q", "cu_seq_lens_k"):
        assert batch[key].dtype == torch.int32 and batch[key].tolist() == expected_cu
    assert batch["max_length_q"] == batch["max_length_k"] == max(segments)
    assert isinstance(batch["max_length_q"], int)
    # the boundaries agree with what flash attention derives from the restarting position ids
    pos = batch["position_ids"][0]
    starts = torch.nonzero(pos == 0).flatten().tolist() + [total]
    assert starts == expected_cu
    assert batch["input_ids"][0, 12:].tolist() == [7] * pad
    assert batch["labels"][0, 12:].tolist() == [IGNORE_INDEX] * pad
    assert (collator.real_tokens, collator.batch_tokens) == (12, 12 + pad)


def test_example_loss_weights_longalign():
    # example 0: 2 answer tokens, example 1: none, example 2: 4 answer tokens, then 2 padding tokens
    labels = np.array([-100, 5, 6, -100, -100, -100, -100, 1, 2, 3, 4, -100, -100])
    w = example_loss_weights(labels, [3, 4, 4])
    assert w.dtype == np.float32 and w.shape == labels.shape
    assert math.isclose(float(w.sum()), 2.0, rel_tol=1e-6)  # one per example with answer tokens
    assert np.allclose(w[[1, 2]], 1 / 2) and np.allclose(w[7:11], 1 / 4)
    assert not w[labels == IGNORE_INDEX].any()
    assert not example_loss_weights(np.full(4, -100), [4]).any()


def test_collator_loss_weights_sum_to_the_examples_of_the_batch():
    feats = [
        feature([4, 6], labels=[-100, -100, 1, 2] + [-100, -100, -100, 3, 4, 5]),
        feature([5], labels=[-100, -100, -100, -100, 9]),
    ]
    batch = PackedDataCollator(loss_weighting="example", pad_to_multiple_of=4)(feats)
    w, labels = batch["loss_weights"][0], batch["labels"][0]
    assert w.dtype == torch.float32 and w.shape == labels.shape
    assert torch.isclose(w.sum(), torch.tensor(3.0)) and count_weighted_sequences(w) == 3
    valid = labels != IGNORE_INDEX
    assert torch.equal(w > 0, valid)
    assert torch.allclose(w[2:4], torch.tensor(1 / 2)) and torch.allclose(w[7:10], torch.tensor(1 / 3))
    assert torch.isclose(w[14], torch.tensor(1.0))
    with pytest.raises(ValueError, match="loss_weighting"):
        PackedDataCollator(loss_weighting="sequence")


def test_longalign_loss_is_mean_of_per_example_means():
    g = torch.Generator().manual_seed(0)
    vocab = 11
    lengths = [5, 9, 4, 7]
    answer = [2, 6, 0, 1]  # answer tokens at the end of each example; example 2 has none
    labels_rows, ids = [], []
    for n, a in zip(lengths, answer):
        x = torch.randint(0, vocab, (n,), generator=g)
        ids.append(x.tolist())
        labels_rows.append([-100] * (n - a) + x[n - a :].tolist())
    feats = [
        {"input_ids": ids[0] + ids[1], "labels": labels_rows[0] + labels_rows[1], "seq_lengths": lengths[:2]},
        {"input_ids": ids[2] + ids[3], "labels": labels_rows[2] + labels_rows[3], "seq_lengths": lengths[2:]},
    ]
    batch = PackedDataCollator(loss_weighting="example")(feats)
    logits = torch.randn(1, sum(lengths), vocab, generator=g)
    got = longalign_loss(logits, batch["labels"], batch["loss_weights"])
    # by hand: per example, mean cross-entropy of its answer tokens (logits at t-1 predict token t)
    means, all_ce, start = [], [], 0
    for x, n, a in zip(ids, lengths, answer):
        ce = [F.cross_entropy(logits[0, start + t - 1], torch.tensor(x[t])) for t in range(n - a, n)]
        start += n
        if ce:
            means.append(torch.stack(ce).mean())
            all_ce.extend(ce)
    assert torch.isclose(got, torch.stack(means).mean(), atol=1e-6)
    # over a larger global batch (M examples in all), the same sum is divided by M
    assert torch.isclose(longalign_loss(logits, batch["labels"], batch["loss_weights"], 7), torch.stack(means).sum() / 7)
    token_mean = longalign_loss(logits, batch["labels"])
    assert torch.isclose(token_mean, torch.stack(all_ce).mean(), atol=1e-6)
    assert not torch.isclose(got, token_mean, atol=1e-3)  # the weighting changes the loss here


# ------------------------------------------------------------------------------------------------
# labels


def test_labels_are_exactly_the_answer_and_end_of_turn(tok, rows):
    assert tok.eos_token in TINY_CHAT_TEMPLATE and tok.eos_token == "<|end|>"
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows), tok, max_length=1024)
    batch = PackedDataCollator()(list(packed))
    ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = torch.nonzero(pos == 0).flatten().tolist() + [ids.numel()]
    assert len(starts) - 1 == len(rows)
    got = []
    for s, e in zip(starts, starts[1:]):
        assert labels[s] == IGNORE_INDEX
        seg_ids, seg_labels = ids[s:e], labels[s:e]
        mask = seg_labels != IGNORE_INDEX
        assert torch.equal(seg_labels[mask], seg_ids[mask])
        # the labelled tokens are one contiguous run at the end of the chat (before the final newline)
        where = torch.nonzero(mask).flatten()
        assert where.tolist() == list(range(int(where[0]), int(where[-1]) + 1))
        got.append(tok.decode(seg_ids[mask].tolist()))
    assert collections.Counter(got) == collections.Counter(r["answer"] + tok.eos_token for r in rows)


def test_labels_without_generation_markers(tok, rows):
    plain = copy.deepcopy(tok)
    plain.chat_template = TINY_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    row = rows[0]
    ids_m, labels_m = tokenize_messages(row["messages"], tok)
    ids_p, labels_p = tokenize_messages(row["messages"], plain)
    assert ids_m == ids_p
    # everything after the generation prompt: the answer, the end-of-turn token and the template's newline
    assert plain.decode([t for t in labels_p if t != IGNORE_INDEX]) == row["answer"] + tok.eos_token + "\n"
    assert tok.decode([t for t in labels_m if t != IGNORE_INDEX]) == row["answer"] + tok.eos_token
    no_template = copy.deepcopy(tok)
    no_template.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        tokenize_messages(row["messages"], no_template)


# ------------------------------------------------------------------------------------------------
# loss equivalence: packed (position ids restart, no attention mask) == one example at a time


def _sharpened_model(path, impl):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation=impl).eval()
    with torch.no_grad():
        # a random tiny model is close to uniform and barely looks at the context: sharpen the
        # embeddings (tied to the output) and the attention so a leak across examples shows
        model.get_input_embeddings().weight.mul_(10)
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4)
            layer.self_attn.k_proj.weight.mul_(4)
            layer.self_attn.v_proj.weight.mul_(5)
            layer.self_attn.o_proj.weight.mul_(20)
    return model


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_loss_equals_one_by_one(tok, rows, tiny_model_dir, impl):
    model = _sharpened_model(tiny_model_dir, impl)
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows[:8]), tok, max_length=1024)
    batch = PackedDataCollator()(list(packed)[:2])
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    seqs = [n for r in list(packed)[:2] for n in r["seq_lengths"]]
    assert len(seqs) >= 4 and "attention_mask" not in batch

    with torch.no_grad():
        out = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False)
        logits = out.logits[0].float()
        arange_logits = model(input_ids=ids, use_cache=False).logits[0].float()
        full_logits = model(
            input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), use_cache=False
        ).logits[0].float()
        singles = []
        start = 0
        for n in seqs:
            singles.append(model(input_ids=ids[:, start : start + n], use_cache=False).logits[0].float())
            start += n
    ref_logits = torch.cat(singles)
    vocab = ref_logits.shape[-1]
    entropy = -(ref_logits.softmax(-1) * ref_logits.log_softmax(-1)).sum(-1).mean()
    assert entropy < math.log(vocab) - 1  # not near-uniform: the comparison means something

    # logits of every example unchanged by its neighbours
    start = 0
    for single in singles:
        n = single.shape[0]
        assert (logits[start : start + n] - single).abs().max() < 1e-4
        start += n

    # per-token loss on the answer tokens: packed batch vs each example alone (own labels, alone)
    def per_token(lg, lb):
        return F.cross_entropy(lg[:-1], lb[1:], ignore_index=IGNORE_INDEX, reduction="none")[lb[1:] != IGNORE_INDEX]

    packed_ce = per_token(logits, labels[0])
    ref_ce, start = [], 0
    for single, n in zip(singles, seqs):
        own_labels = labels[0, start : start + n].clone()
        ref_ce.append(per_token(single, own_labels))
        start += n
    ref_ce = torch.cat(ref_ce)
    assert packed_ce.shape == ref_ce.shape and packed_ce.numel() > 20
    assert (packed_ce - ref_ce).abs().max() < 1e-4
    assert abs(out.loss.item() - ref_ce.mean().item()) < 1e-4
    assert abs(longalign_loss(out.logits, labels).item() - ref_ce.mean().item()) < 1e-4

    # negative controls: without restarting positions, or with a full attention mask, examples leak
    first = seqs[0]
    assert (arange_logits[first:] - ref_logits[first:]).abs().max() > 1e-2
    assert (full_logits[first:] - ref_logits[first:]).abs().max() > 1e-2
    assert (per_token(arange_logits, labels[0]) - ref_ce).abs().max() > 1e-3
    # the first example sees no neighbour in any case
    assert (arange_logits[:first] - ref_logits[:first]).abs().max() < 1e-4


# ------------------------------------------------------------------------------------------------
# datasets: map-style, streaming, pre-tokenized


@pytest.fixture(scope="module")
def max_length(tok, rows):
    lengths = sorted(chat_len(tok, r) for r in rows)
    return lengths[len(lengths) * 2 // 3]  # a third of the rows need truncation


def test_map_style_packing_and_stats(tok, rows, max_length):
    ds = datasets.Dataset.from_list(rows)
    packed = prepare_packed_dataset(ds, tok, max_length=max_length, shuffle_seed=None)
    assert packed.column_names == ["input_ids", "labels", "position_ids", "seq_lengths"]
    stats = get_packing_stats(packed)
    assert stats is packed.packing_stats
    dropped = sum(relevant_only_len(tok, r) > max_length for r in rows)
    truncated = sum(chat_len(tok, r) > max_length for r in rows) - dropped
    assert truncated > 0 and stats.num_truncated == truncated and stats.num_dropped == dropped
    assert stats.num_examples == len(rows) and stats.num_rows == len(packed)
    lengths = [len(x) for x in packed["input_ids"]]
    assert max(lengths) <= max_length and stats.real_tokens == stats.row_tokens == sum(lengths)
    assert math.ceil(sum(lengths) / max_length) <= stats.num_rows < len(rows)
    assert stats.efficiency == pytest.approx(sum(lengths) / (len(packed) * max_length))
    assert stats.to_dict()["efficiency"] == round(stats.efficiency, 6)
    # the examples are exactly the per-row tokenizations (truncated where needed)
    expected = [e for e in (tokenize_example(r, tok, max_length) for r in rows) if e is not None]
    assert len(expected) == len(rows) - dropped
    got = examples_of(packed)
    assert collections.Counter(got) == collections.Counter((tuple(e["input_ids"]), tuple(e["labels"])) for e in expected)
    # BFD order without shuffling: rows are created longest example first
    firsts = [r[0] for r in packed["seq_lengths"]]
    assert firsts == sorted(firsts, reverse=True)
    # transformed copies lose the attribute; stats are then recomputed from seq_lengths
    shuffled = packed.shuffle(seed=1)
    assert get_packing_stats(shuffled) is None
    again = get_packing_stats(shuffled, max_length)
    assert (again.num_examples, again.num_rows, again.real_tokens) == (len(rows) - dropped, stats.num_rows, stats.real_tokens)
    assert again.efficiency == pytest.approx(stats.efficiency)
    # the shuffle seed permutes rows, not their content
    reshuffled = prepare_packed_dataset(ds, tok, max_length=max_length, shuffle_seed=3)
    assert sorted(map(tuple, reshuffled["input_ids"])) == sorted(map(tuple, packed["input_ids"]))


def test_streaming_matches_map_style(tok, rows, max_length):
    ds = datasets.Dataset.from_list(rows)
    config = PackingConfig(max_length=max_length, stream_buffer_size=5)
    packed = prepare_packed_dataset(ds, tok, config)
    stream = prepare_packed_dataset(ds.to_iterable_dataset(num_shards=2), tok, config)
    assert isinstance(stream, datasets.IterableDataset)
    stream_rows = list(stream)
    assert all(len(r["input_ids"]) <= max_length for r in stream_rows)
    assert collections.Counter(examples_of(stream_rows)) == collections.Counter(examples_of(packed))
    s, m = get_packing_stats(stream), packed.packing_stats
    assert (s.num_examples, s.num_truncated, s.num_dropped, s.real_tokens) == (
        m.num_examples, m.num_truncated, m.num_dropped, m.real_tokens
    )
    assert s.num_rows == len(stream_rows) >= m.num_rows  # buffers of 5 pack no better than one pass
    assert sum(len(r["seq_lengths"]) for r in stream_rows) == len(rows) - s.num_dropped


@pytest.mark.parametrize("streaming", [False, True])
def test_pretokenized_input(tok, rows, max_length, streaming):
    tokenized = [tokenize_example(r, tok) for r in rows]
    ds = datasets.Dataset.from_dict(
        {"input_ids": [t["input_ids"] for t in tokenized], "labels": [t["labels"] for t in tokenized]}
    )
    fits = [(tuple(t["input_ids"]), tuple(t["labels"])) for t in tokenized if len(t["input_ids"]) <= max_length]
    source = ds.to_iterable_dataset() if streaming else ds
    packed = prepare_packed_dataset(source, tok, max_length=max_length, stream_buffer_size=4)
    packed_rows = list(packed)
    assert collections.Counter(examples_of(packed_rows)) == collections.Counter(fits)
    stats = get_packing_stats(packed)
    assert stats.num_examples == len(rows) and stats.num_dropped == len(rows) - len(fits) > 0
    assert stats.num_truncated == 0 and stats.num_rows == len(packed_rows)
    # without a labels column, every token is a label
    ids_only = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]]})
    out = prepare_packed_dataset(ids_only, tok, max_length=8)
    assert collections.Counter(examples_of(out)) == collections.Counter({((1, 2, 3), (1, 2, 3)): 1, ((4, 5), (4, 5)): 1})


def test_packing_config_validation_and_bad_input(tok):
    with pytest.raises(ValueError, match="max_length"):
        PackingConfig(max_length=0)
    with pytest.raises(ValueError, match="loss_weighting"):
        PackingConfig(loss_weighting="sample")
    with pytest.raises(ValueError, match="stream_buffer_size"):
        PackingConfig(stream_buffer_size=0)
    with pytest.raises(ValueError, match="messages"):
        prepare_packed_dataset(datasets.Dataset.from_dict({"text": ["a"]}), tok, max_length=8)
    for empty in (
        datasets.Dataset.from_dict({"input_ids": [], "labels": []}),
        datasets.Dataset.from_list([{"input_ids": [1], "labels": [1]}]).select([]),
        datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}]).select([]),
    ):
        out = prepare_packed_dataset(empty, tok, max_length=8)
        assert len(out) == 0 and out.packing_stats.num_rows == 0 and out.packing_stats.num_examples == 0


def test_flash_kwargs_and_seq_idx_on_by_default_match_trls_padding_free_collator():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    ids = list(range(1, 13))
    row = {"input_ids": ids, "labels": ids, "seq_lengths": [5, 4, 3]}
    ours = PackedDataCollator()([row])
    trl = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, return_position_ids=True)(
        [{"input_ids": ids, "seq_lengths": [5, 4, 3]}]
    )
    for key in ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "seq_idx"):
        assert torch.equal(ours[key], trl[key]), key
    assert ours["seq_idx"].dtype == trl["seq_idx"].dtype and ours["seq_idx"][0].tolist() == [0] * 5 + [1] * 4 + [2] * 3
    assert (ours["max_length_q"], ours["max_length_k"]) == (trl["max_length_q"], trl["max_length_k"]) == (5, 5)
    assert PackingConfig().return_flash_kwargs is True


def test_packed_sdpa_equals_sdpa_on_packed_rows_and_falls_back_elsewhere(tiny_model_dir):
    """CPU path: each packed example attends alone (no dense T x T mask); logits and gradients as sdpa's."""
    from transformers import AutoModelForCausalLM

    from hf_context_synthesis.training.attention import register_packed_sdpa, use_packed_sdpa_on_cpu

    register_packed_sdpa()
    g = torch.Generator().manual_seed(0)
    lengths = [37, 80, 21, 55]
    ids = torch.randint(5, 200, (sum(lengths),), generator=g).tolist()
    batch = PackedDataCollator()([{"input_ids": ids, "labels": ids, "seq_lengths": lengths}])
    assert "cu_seq_lens_q" in batch
    results = {}
    for impl in ("sdpa", "packed_sdpa"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
        if impl == "packed_sdpa":
            assert use_packed_sdpa_on_cpu(model) and model.config._attn_implementation == "packed_sdpa"
        out = model(**batch, use_cache=False)
        out.loss.backward()
        results[impl] = (out.logits.detach(), model.lm_head.weight.grad.clone(), model)
    assert torch.allclose(results["sdpa"][0], results["packed_sdpa"][0], atol=1e-5)
    assert torch.allclose(results["sdpa"][1], results["packed_sdpa"][1], atol=1e-5)
    # a padded batch with an attention mask (no cu_seq_lens) goes through transformers' sdpa unchanged
    model = results["packed_sdpa"][2]
    x = torch.tensor([ids[:30], ids[30:60]])
    mask = torch.ones_like(x)
    mask[1, 25:] = 0
    with torch.no_grad():
        got = model(input_ids=x, attention_mask=mask, use_cache=False).logits
        ref = results["sdpa"][2](input_ids=x, attention_mask=mask, use_cache=False).logits
    assert torch.allclose(got, ref, atol=1e-5)
