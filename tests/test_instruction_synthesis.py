"""Instruction-synthesis baseline: chunk sampling, prompt, robust Question/Answer parsing, the run helper."""

from __future__ import annotations

import random
import re

import jinja2
import pytest

from hf_context_synthesis.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from hf_context_synthesis.synthesis.instructions import (
    DEFAULT_CHUNK_WORDS,
    parse_question_answer,
    render_instruction_messages,
    sample_chunk,
    synthesize_instructions,
)


@pytest.mark.parametrize(
    ("text", "question", "answer"),
    [
        ("Question: What is X?\nAnswer: Y", "What is X?", "Y"),
        ("**Question:** What is X?\n**Answer:** Y", "What is X?", "Y"),
        ("**Question**: Who?\n\n**Answer**: The miller **", "Who?", "The miller"),
        ("Sure, here it is.\n\nquestion: lower case?\nANSWER: fine", "lower case?", "fine"),
        ("### Question 1: What?\n### Answer 1: Y", "What?", "Y"),
        ("1. **Question:** Which answer is right?\n2. **Answer:** B", "Which answer is right?", "B"),
        ("- Q: short form?\n- A: yes", "short form?", "yes"),
        ("Question: one line? Answer: same line", "one line?", "same line"),
        ("Question: multi\nline question?\nAnswer: multi\nline answer", "multi\nline question?", "multi\nline answer"),
        # several pairs: the first one wins, the next question does not leak into the answer
        ("Question: A?\nAnswer: B\n\nQuestion: C?\nAnswer: D", "A?", "B"),
        ("**Question 1:** A?\n**Answer 1:** B\n**Question 2:** C?\n**Answer 2:** D", "A?", "B"),
        ("Question：全角?\nAnswer：ok", "全角?", "ok"),
    ],
)
def test_parse_question_answer(text: str, question: str, answer: str) -> None:
    parsed = parse_question_answer(text)
    assert parsed.ok, parsed
    assert (parsed.question, parsed.answer) == (question, answer)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_output"),
        (None, "empty_output"),
        ("   \n", "empty_output"),
        ("The answer is 5.", "missing_question_marker"),
        ("Here is a question: what? Answer: z", "missing_question_marker"),  # not at a line start
        ("Question: What is missing?", "missing_answer_marker"),
        ("Answer: 5\nQuestion: backwards?", "missing_answer_marker"),
        ("Question:\nAnswer: B", "empty_question"),
        ("Question: What?\nAnswer:   ", "empty_answer"),
        ("**Question:** What?\n**Answer:**", "empty_answer"),
    ],
)
def test_parse_failures_have_reasons(text: str | None, reason: str) -> None:
    parsed = parse_question_answer(text)
    assert not parsed.ok
    assert (parsed.question, parsed.answer, parsed.error) == (None, None, reason)


def _words(n: int) -> str:
    # numbered words, a line break every 7 words: chunk positions and layout are checkable
    return "".join(f"w{i}" + ("\n" if i % 7 == 6 else " ") for i in range(n))


def test_sample_chunk_short_document_is_kept_whole() -> None:
    doc = _words(50)
    assert sample_chunk(doc, 3000) == doc.strip()


def test_sample_chunk_is_a_contiguous_slice_of_the_right_length() -> None:
    doc = _words(10_000)
    chunk = sample_chunk(doc, DEFAULT_CHUNK_WORDS, random.Random(1))
    words = chunk.split()
    assert len(words) == DEFAULT_CHUNK_WORDS
    first = int(words[0][1:])
    assert words == [f"w{i}" for i in range(first, first + DEFAULT_CHUNK_WORDS)]
    assert chunk in doc and "\n" in chunk  # original layout kept
    assert sample_chunk(doc, 3000, random.Random(1)) == chunk  # reproducible


def test_sample_chunk_covers_every_start() -> None:
    doc = _words(12)
    rng = random.Random(0)
    starts = {int(sample_chunk(doc, 10, rng).split()[0][1:]) for _ in range(200)}
    assert starts == {0, 1, 2}
    with pytest.raises(ValueError):
        sample_chunk(doc, 0)


def test_render_instruction_messages() -> None:
    messages = render_instruction_messages("THE CHUNK", task="qasper")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "THE CHUNK" in user and "Task: qasper" in user and "Question:" in user and "Answer:" in user
    assert "Task:" not in render_instruction_messages("c")[1]["content"]
    custom = render_instruction_messages("c", template="Q about {{ chunk }}", system_prompt=None)
    assert custom == ({"role": "user", "content": "Q about c"},)
    with pytest.raises(jinja2.UndefinedError):
        render_instruction_messages("c", template="{{ nope }}")


class ScriptedBackend(GenerationBackend):
    kind = "scripted"

    def __init__(self, replies: list[str | None]) -> None:
        self.replies = replies
        self.requests: list[GenerationRequest] = []

    async def model_id(self) -> str:
        return "scripted"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        reply = self.replies[int(request.key.split("/")[1])]
        if reply is None:
            return GenerationResult(key=request.key, error="http_500")
        return GenerationResult(key=request.key, text=reply)


def test_synthesize_instructions_rows() -> None:
    docs = [_words(5000), "A short document about the mill.", "Another one.", "Fourth."]
    backend = ScriptedBackend(
        ["**Question:** Q0?\n**Answer:** A0", "Question: Q1?\nAnswer: A1\nQuestion: extra?\nAnswer: no", "no markers", None]
    )
    rows = synthesize_instructions(docs, backend, task="hotpotqa", seed=3, temperature=0.5)
    assert [(r["instruction"], r["answer"], r["error"]) for r in rows] == [
        ("Q0?", "A0", None),
        ("Q1?", "A1", None),
        (None, None, "missing_question_marker"),
        (None, None, "http_500"),
    ]
    assert [r["context"] for r in rows] == docs and [r["document_index"] for r in rows] == [0, 1, 2, 3]
    assert len(rows[0]["chunk"].split()) == 3000 and rows[1]["chunk"] == docs[1]
    by_key = {r.key: r for r in backend.requests}
    assert rows[0]["chunk"] in by_key["instruction/0"].messages[-1]["content"]
    assert all(r.temperature == 0.5 for r in backend.requests)
    # same seed, same chunks
    again = synthesize_instructions(docs, ScriptedBackend(["x"] * 4), seed=3)
    assert again[0]["chunk"] == rows[0]["chunk"]
    other = synthesize_instructions(docs, ScriptedBackend(["x"] * 4), seed=4)
    assert re.match(r"w\d+", other[0]["chunk"]) and other[0]["chunk"] != rows[0]["chunk"]
