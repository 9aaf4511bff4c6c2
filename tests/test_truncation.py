"""Truncation of over-long composed rows: answer, instruction and relevant document survive verbatim,
distractors go farthest-first, the middle of the next one is cut, and rows that cannot fit are dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402
from hf_context_synthesis.training.packing import prepare_packed_dataset, tokenize_example, tokenize_messages  # noqa: E402
from hf_context_synthesis.training.truncation import (  # noqa: E402
    chat_length,
    distractor_drop_order,
    drop_order_for_row,
    fit_row_to_length,
)


def numbered_words_context(i, seed) -> str:
    return f"Document {i} begins. " + " ".join(f"d{i}w{k}" for k in range(40)) + f" The answer is {seed.answer[:60]}. Document {i} ends."


def long_rows(seeds_dir: Path, tasks=("hotpotqa", "qasper", "govreport"), per_task: int = 4, num_distractors: int = 4):
    """Composed rows from real seeds; every document is ~40 distinct numbered words (``d<i>w<k>``)."""
    return composed_rows(seeds_dir, tasks, per_task, num_distractors, numbered_words_context, distractor_pool="all_tasks")


@pytest.fixture(scope="module")
def rows(seeds_dir):
    return long_rows(seeds_dir)


def docs_of(row):
    content = row["messages"][0]["content"]
    return [content[s:e] for s, e in row["context_spans"]]


def n_tokens(tok, messages) -> int:
    return len(tokenize_messages(messages, tok)[0])


def text_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def relevant_only_length(tok, row) -> int:
    """Tokens of the row's chat with every distractor removed (the shortest it can be truncated to)."""
    content = row["messages"][0]["content"]
    spans = row["context_spans"]
    rel = spans[row["relevant_index"]]
    user = content[: spans[0][0]] + content[rel[0] : rel[1]] + content[spans[-1][1] :]
    return n_tokens(tok, [{"role": "user", "content": user}, row["messages"][1]])


def assert_core_survives(row, messages):
    content = messages[0]["content"]
    assert row["relevant_context"] in content
    assert row["instruction"] in content
    assert messages[1] == row["messages"][1] == {"role": "assistant", "content": row["answer"]}
    # the task prompt around the documents is unchanged
    spans = row["context_spans"]
    orig = row["messages"][0]["content"]
    assert content.startswith(orig[: spans[0][0]])
    assert content.endswith(orig[spans[-1][1] :])


# --------------------------------------------------------------------------------------------------


def test_distractor_drop_order_farthest_first_later_on_ties():
    assert distractor_drop_order(5, 1) == [4, 3, 2, 0]
    assert distractor_drop_order(5, 2) == [4, 0, 3, 1]
    assert distractor_drop_order(4, 0) == [3, 2, 1]
    assert distractor_drop_order(4, 3) == [0, 1, 2]
    assert distractor_drop_order(1, 0) == []
    # against a brute-force definition on many sizes
    for n in range(1, 12):
        for r in range(n):
            order = distractor_drop_order(n, r)
            assert sorted(order) == [i for i in range(n) if i != r]
            dist = [abs(i - r) for i in order]
            assert dist == sorted(dist, reverse=True)
            for a, b in zip(order, order[1:]):
                if abs(a - r) == abs(b - r):
                    assert a > b


def test_fitting_row_is_unchanged(tok, rows):
    row = rows[0]
    n = n_tokens(tok, row["messages"])
    res = fit_row_to_length(row, tok, n)
    assert res.messages == row["messages"] and res.num_tokens == n
    assert res.dropped_documents == [] and res.cut_document is None and res.cut_tokens == 0
    assert res.context_spans == row["context_spans"] and res.relevant_index == row["relevant_index"]
    assert tokenize_example(row, tok, n)["truncated"] is False


@pytest.mark.parametrize("overflow", [3, 25, 120, 260, 420])
def test_truncated_rows_keep_answer_instruction_relevant_and_drop_farthest_first(tok, rows, overflow):
    counted = 0
    for row in rows:
        n = n_tokens(tok, row["messages"])
        max_length = n - overflow
        if relevant_only_length(tok, row) > max_length:
            assert fit_row_to_length(row, tok, max_length) is None
            continue
        counted += 1
        res = fit_row_to_length(row, tok, max_length)
        assert res is not None
        assert res.num_tokens == n_tokens(tok, res.messages) <= max_length
        assert_core_survives(row, res.messages)
        # spans locate the kept documents and the relevant one
        new_docs = [res.messages[0]["content"][s:e] for s, e in res.context_spans]
        assert new_docs[res.relevant_index] == row["relevant_context"]
        # whole documents dropped in drop order, then (at most) the next one in that order is cut
        order = drop_order_for_row(row)
        k = len(res.dropped_documents)
        assert res.dropped_documents == order[:k]
        if res.cut_document is not None:
            assert res.cut_document == order[k] and res.cut_tokens > 0
        old_docs = docs_of(row)
        kept = [i for i in range(len(old_docs)) if i not in res.dropped_documents]
        assert len(new_docs) == len(kept)
        for new, i in zip(new_docs, kept):
            if i == res.cut_document:
                assert len(new) < len(old_docs[i])
            else:
                assert new == old_docs[i]  # every other kept document verbatim, in original order
        for i in res.dropped_documents:
            assert old_docs[i] not in res.messages[0]["content"]
        # no more than needed is lost: keeping the last dropped document whole would not fit
        # (unless the cut one took its place; then the cut is at most the overflow + estimate slack)
        removed = n - res.num_tokens
        assert removed >= overflow
        if not res.dropped_documents:
            assert res.cut_tokens <= overflow + 3
    assert counted >= 1


def test_middle_cut_keeps_head_and_tail_of_the_farthest_distractor(tok, rows):
    row = rows[1]
    order = drop_order_for_row(row)
    far = order[0]
    old = docs_of(row)[far]
    ids = text_ids(tok, old)
    n = n_tokens(tok, row["messages"])
    cut = len(ids) // 3
    res = fit_row_to_length(row, tok, n - cut)
    assert res.dropped_documents == [] and res.cut_document == far
    new_docs = [res.messages[0]["content"][s:e] for s, e in res.context_spans]
    new = new_docs[far]
    assert new_docs[: far] + new_docs[far + 1 :] == docs_of(row)[:far] + docs_of(row)[far + 1 :]
    # LongBench's middle truncation: the first and last halves of the kept tokens stay
    keep = len(ids) - res.cut_tokens
    head, tail = keep // 2, keep - keep // 2
    assert res.cut_tokens >= cut
    assert new == tok.decode(ids[:head]) + tok.decode(ids[len(ids) - tail :])
    prefix, suffix = tok.decode(ids[:head]), tok.decode(ids[len(ids) - tail :])
    assert old.startswith(prefix) and old.endswith(suffix) and len(prefix) > 10 and len(suffix) > 10
    # the removed middle is really gone: a word from the middle of the document is missing
    mid_word = f"w{20}"
    doc_index = old.split()[1]
    assert f"d{doc_index}{mid_word}" in old and f"d{doc_index}{mid_word}" not in new
    assert new.startswith(f"Document {doc_index} begins.") and new.endswith(f"Document {doc_index} ends.")


def test_overflow_larger_than_farthest_drops_it_whole_then_cuts_next(tok, rows):
    row = rows[2]
    order = drop_order_for_row(row)
    docs = docs_of(row)
    n = n_tokens(tok, row["messages"])
    first_cost = len(text_ids(tok, docs[order[0]]))
    res = fit_row_to_length(row, tok, n - first_cost - 15)
    assert res.dropped_documents == [order[0]]
    assert res.cut_document == order[1]
    assert res.num_tokens <= n - first_cost - 15
    assert_core_survives(row, res.messages)


def test_dropped_when_relevant_instruction_and_answer_do_not_fit(tok, rows):
    for row in rows[:4]:
        floor = relevant_only_length(tok, row)
        res = fit_row_to_length(row, tok, floor)
        assert res is not None and len(res.context_spans) == 1 and res.relevant_index == 0
        assert res.num_tokens <= floor
        assert res.dropped_documents == drop_order_for_row(row) and res.cut_document is None
        assert_core_survives(row, res.messages)
        assert fit_row_to_length(row, tok, floor - 1) is None
        assert tokenize_example(row, tok, floor - 1) is None


def test_tokenize_example_truncates_to_max_length(tok, rows):
    row = rows[5]
    n = n_tokens(tok, row["messages"])
    out = tokenize_example(row, tok, n - 100)
    assert out["truncated"] is True and len(out["input_ids"]) <= n - 100
    text = tok.decode(out["input_ids"])
    assert row["relevant_context"] in text and row["instruction"] in text
    answer = tok.decode([t for t in out["labels"] if t != -100])
    assert answer == row["answer"] + tok.eos_token
    assert tokenize_example(row, tok, n - 100, truncation=False) is None


def test_plain_rows_without_spans_get_middle_truncated(tok):
    words = " ".join(f"p{k}" for k in range(200))
    row = {"messages": [{"role": "user", "content": "Intro. " + words + " Question: who?"}, {"role": "assistant", "content": "nobody"}]}
    n = n_tokens(tok, row["messages"])
    res = fit_row_to_length(row, tok, n - 50)
    assert res.num_tokens <= n - 50 and res.context_spans is None and res.relevant_index is None
    user = res.messages[0]["content"]
    ids = text_ids(tok, row["messages"][0]["content"])
    keep = len(ids) - res.cut_tokens
    assert res.cut_tokens >= 50
    assert user == tok.decode(ids[: keep // 2]) + tok.decode(ids[len(ids) - (keep - keep // 2) :])
    assert user.startswith("Intro. p0 p1 ") and user.endswith("p198 p199 Question: who?")
    assert len(user.split()) < len(row["messages"][0]["content"].split())
    assert res.messages[1] == row["messages"][1]
    assert fit_row_to_length(row, tok, 10) is None  # the chat without its user message does not fit


def test_invalid_spans_raise(tok, rows):
    row = dict(rows[0])
    n = n_tokens(tok, row["messages"])
    with pytest.raises(ValueError, match="relevant_index"):
        fit_row_to_length({**row, "relevant_index": 99}, tok, n - 10)
    spans = [list(s) for s in row["context_spans"]]
    spans[0], spans[1] = spans[1], spans[0]
    with pytest.raises(ValueError, match="out of order"):
        fit_row_to_length({**row, "context_spans": spans}, tok, n - 10)


def test_chat_length_counts_template_tokens(tok, rows):
    assert chat_length(tok)(rows[0]["messages"]) == n_tokens(tok, rows[0]["messages"])


@pytest.mark.parametrize("truncation", [True, False])
def test_packing_stats_count_truncated_and_dropped(tok, rows, truncation):
    full = [n_tokens(tok, r["messages"]) for r in rows]
    floor = [relevant_only_length(tok, r) for r in rows]
    max_length = sorted(full)[len(full) // 2]  # about half the rows are over-long
    fits = sum(f <= max_length for f in full)
    if truncation:
        truncated = sum(fl <= max_length < f for f, fl in zip(full, floor))
        dropped = sum(fl > max_length for fl in floor)
    else:
        truncated, dropped = 0, sum(f > max_length for f in full)
    assert 0 < fits < len(rows) and (truncated > 0 or not truncation)
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows), tok, max_length=max_length, truncation=truncation)
    stats = packed.packing_stats
    assert stats.num_examples == len(rows)
    assert stats.num_truncated == truncated and stats.num_dropped == dropped
    assert sum(len(s) for s in packed["seq_lengths"]) == len(rows) - dropped
    # every kept example, truncated or not, still holds its relevant document, instruction and answer
    texts = []
    for ids, seqs in zip(packed["input_ids"], packed["seq_lengths"]):
        assert len(ids) <= max_length
        start = 0
        for length in seqs:
            texts.append(tok.decode(ids[start : start + length]))
            start += length
    kept = [r for r, f, fl in zip(rows, full, floor) if (fl if truncation else f) <= max_length]
    for row in kept:
        hits = [t for t in texts if row["relevant_context"] in t and row["instruction"] in t and t.count(row["answer"] + tok.eos_token)]
        assert hits, row["seed_id"]


@pytest.mark.parametrize("truncation", [True, False])
def test_dropped_rows_are_one_summary_warning_with_counts_per_reason_and_rows_at_debug(tok, rows, truncation, caplog):
    import logging

    # the shortest each row can get: its relevant document + instruction + answer, or all of it without truncation
    floor = [relevant_only_length(tok, r) if truncation else n_tokens(tok, r["messages"]) for r in rows]
    max_length = sorted(floor)[len(floor) // 2]  # about half the rows cannot be kept
    expected = sum(f > max_length for f in floor)
    assert 1 < expected < len(rows)
    caplog.set_level(logging.DEBUG, logger="hf_context_synthesis")
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows), tok, max_length=max_length, truncation=truncation)
    reason = "core_too_long" if truncation else "truncation_off"
    assert packed.packing_stats.drop_reasons == {reason: expected}
    assert packed.packing_stats.to_dict()["drop_reasons"] == {reason: expected}
    labelled = sum(t != -100 for labels in packed["labels"] for t in labels)
    assert 0 < packed.packing_stats.answer_tokens == labelled < packed.packing_stats.real_tokens
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # not one line per row
    assert f"{expected} of {len(rows)} examples were dropped" in warnings[0] and f"{expected} {reason}:" in warnings[0]
    per_row = [r for r in caplog.records if "dropping the example" in r.getMessage()]
    assert len(per_row) == expected and {r.levelno for r in per_row} == {logging.DEBUG}
    assert all(f"({reason})" in r.getMessage() for r in per_row)


def test_streamed_rows_get_the_same_drop_counts(tok, rows, caplog):
    import logging

    floor = [relevant_only_length(tok, r) for r in rows]
    max_length = sorted(floor)[len(floor) // 2]
    caplog.set_level(logging.WARNING, logger="hf_context_synthesis")
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows).to_iterable_dataset(), tok, max_length=max_length,
                                    stream_buffer_size=len(rows))
    list(packed)
    assert packed.packing_stats.drop_reasons == {"core_too_long": sum(f > max_length for f in floor)}
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_fit_row_reports_the_reason_of_a_drop(tok, rows):
    reasons = []
    row = rows[0]
    assert fit_row_to_length(row, tok, relevant_only_length(tok, row) - 1, on_drop=reasons.append) is None
    plain = {"messages": [{"role": "user", "content": "x " * 50}, {"role": "assistant", "content": "nobody"}]}
    assert fit_row_to_length(plain, tok, 5, on_drop=reasons.append) is None
    assert reasons == ["core_too_long", "chat_without_user_too_long"]
