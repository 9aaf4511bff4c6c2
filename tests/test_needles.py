"""Needle probes: needle placement and positions, answers per kind, depth sweeps, dataset wrapping."""

from __future__ import annotations

import re

import datasets
import pytest

from hf_context_synthesis.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from hf_context_synthesis.evaluation.needles import (
    DEFAULT_NEEDLE_TEMPLATE,
    NEEDLE_FEATURES,
    NEEDLE_KINDS,
    evaluate_needles,
    generate_needle_examples,
    make_needle_dataset,
    score_needle,
)

CONTEXTS = [
    " ".join(f"Document {d} sentence {s} talks about the mill and the river." for s in range(40)) for d in range(5)
]
HEAD, TAIL = DEFAULT_NEEDLE_TEMPLATE.split("{context}")


def haystack_of(row: dict) -> str:
    """The user prompt's context part with the needles cut out."""
    prompt = row["messages"][0]["content"]
    pieces, cursor = [], 0
    for start, end in sorted(row["needle_positions"]):
        pieces.append(prompt[cursor:start])
        cursor = end
    pieces.append(prompt[cursor:])
    text = "".join(pieces)
    question_tail = TAIL.split("{question}")[0]
    return text[len(HEAD) : text.rindex(question_tail)]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(generate_needle_examples(CONTEXTS, num_examples=3, haystack_words=500, num_needles=4, seed=7))


def test_needle_positions_point_at_the_needles(rows) -> None:
    assert len(rows) == 3 * len(NEEDLE_KINDS)
    for row in rows:
        prompt = row["messages"][0]["content"]
        assert [prompt[s:e] for s, e in row["needle_positions"]] == row["needles"]
        assert all(len(HEAD) <= s for s, _ in row["needle_positions"])
        # needles sit between sentences: after a sentence end, another needle or the context start,
        # or at the very end of the context (the cut haystack may end mid-sentence)
        context_end = TAIL.split("{question}")[0]
        for s, e in row["needle_positions"]:
            assert prompt[s - 1].isspace() and prompt[e].isspace()
            before = prompt[:s].rstrip()
            at_end = prompt[e:].lstrip(" ").startswith(context_end.lstrip(" ")) or prompt[e:].startswith(" One of")
            assert s == len(HEAD) or before[-1] in ".!?" or at_end
        assert row["messages"][1] == {"role": "assistant", "content": row["answer"]}


def test_haystack_has_the_requested_words_from_the_contexts(rows) -> None:
    source = " ".join(CONTEXTS)
    for row in rows:
        hay = haystack_of(row)
        assert len(hay.split()) == 500
        for sentence in re.split(r"(?<=\.)\s+", hay.strip())[:-1]:  # last one may be cut
            assert sentence.strip() in source


def test_answers_per_kind(rows) -> None:
    kinds = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row)
        values = [re.search(r"is (\d{7})\.", n).group(1) for n in row["needles"]]
        question = row["messages"][0]["content"][len(HEAD) :]
        assert all(key in question.split("\n")[-1] for key in row["query_keys"])
        assert row["answers"] == [v for v, q in zip(values, row["needle_queried"]) if q]
        assert row["answer"] == ", ".join(row["answers"])
    for row in kinds["single"]:
        assert len(row["needles"]) == 1 and row["needle_queried"] == [True]
    for row in kinds["multikey"]:
        assert len(set(row["needle_keys"])) == 4 and row["needle_queried"] == [True, False, False, False]
        assert len(row["answers"]) == 1 and row["query_keys"] == row["needle_keys"][:1]
    for row in kinds["multivalue"]:
        assert len(set(row["needle_keys"])) == 1 and len(set(row["answers"])) == 4
    for row in kinds["multiquery"]:
        assert row["query_keys"] == row["needle_keys"] and len(set(row["needle_keys"])) == 4
        assert len(row["answers"]) == 4


def test_depth_sweep_places_the_queried_needle(rows) -> None:
    swept = list(
        generate_needle_examples(CONTEXTS, num_examples=3, kinds=["single"], haystack_words=800, depths=[0.0, 0.5, 1.0])
    )
    got = [r["needle_depths"][0] for r in swept]
    assert got[0] == 0.0 and got[2] == 1.0 and abs(got[1] - 0.5) < 0.03
    start = swept[0]["needle_positions"][0][0]
    assert start == len(HEAD)  # depth 0: first thing in the context
    end = swept[2]["needle_positions"][0][1]
    assert swept[2]["messages"][0]["content"][end:].startswith(TAIL.split("{question}")[0])  # depth 1: last
    # random depths otherwise, recorded as the real relative positions
    prompt_len = [len(r["messages"][0]["content"]) for r in rows]
    for row, n in zip(rows, prompt_len):
        assert all(0.0 <= d <= 1.0 for d in row["needle_depths"])
        order_by_depth = sorted(range(len(row["needles"])), key=lambda j: (row["needle_depths"][j], row["needle_positions"][j][0]))
        order_by_pos = sorted(range(len(row["needles"])), key=lambda j: row["needle_positions"][j][0])
        assert order_by_depth == order_by_pos


def test_deterministic_and_seeded() -> None:
    a = list(generate_needle_examples(CONTEXTS, num_examples=2, haystack_words=100, seed=1))
    b = list(generate_needle_examples(CONTEXTS, num_examples=2, haystack_words=100, seed=1))
    c = list(generate_needle_examples(CONTEXTS, num_examples=2, haystack_words=100, seed=2))
    assert a == b and a != c


def test_short_contexts_are_reused() -> None:
    (row,) = generate_needle_examples(["One short sentence here."], num_examples=1, kinds=["single"], haystack_words=50)
    assert len(haystack_of(row).split()) == 50


def test_make_needle_dataset(tmp_path) -> None:
    ds = make_needle_dataset(
        CONTEXTS, cache_dir=str(tmp_path), num_examples=2, haystack_words=120, seed=3, depths=[0.2, 0.8]
    )
    assert isinstance(ds, datasets.Dataset) and ds.features == NEEDLE_FEATURES
    assert len(ds) == 2 * len(NEEDLE_KINDS)
    expected = list(generate_needle_examples(CONTEXTS, num_examples=2, haystack_words=120, seed=3, depths=[0.2, 0.8]))
    got = ds.to_list()
    for row, exp in zip(got, expected):  # depths are stored as float32
        assert row.pop("needle_depths") == pytest.approx(exp.pop("needle_depths"), abs=1e-6)
    assert got == expected


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty context"):
        list(generate_needle_examples(["", "  "]))
    with pytest.raises(ValueError, match="unknown needle kinds"):
        list(generate_needle_examples(CONTEXTS, kinds=["haystack"]))
    with pytest.raises(ValueError, match="depths"):
        list(generate_needle_examples(CONTEXTS, depths=[1.5]))
    with pytest.raises(ValueError, match="template"):
        list(generate_needle_examples(CONTEXTS, template="no fields"))


def test_score_needle() -> None:
    assert score_needle("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 1.0
    assert score_needle("1234567", ["1234567", "7654321"]) == 0.5
    assert score_needle("", ["1234567"]) == 0.0
    with pytest.raises(ValueError):
        score_needle("x", [])


class ReadingBackend(GenerationBackend):
    """Answers by looking the asked keys up in the prompt: proves every probe is answerable."""

    kind = "reader"

    async def model_id(self) -> str:
        return "reader"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        prompt = request.messages[-1]["content"]
        question = prompt.rsplit("\n", 1)[-1]
        keys = re.findall(r"[a-z]+-[a-z]+", question)
        found = [v for k in keys for v in re.findall(rf"numbers for {k} is (\d+)\.", prompt)]
        return GenerationResult(key=request.key, text=" ".join(found))


class SilentBackend(ReadingBackend):
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(key=request.key, text="I do not know.")


def test_evaluate_needles(rows) -> None:
    assert evaluate_needles(ReadingBackend(), rows) == {kind: 100.0 for kind in NEEDLE_KINDS}
    assert evaluate_needles(SilentBackend(), rows) == {kind: 0.0 for kind in NEEDLE_KINDS}
