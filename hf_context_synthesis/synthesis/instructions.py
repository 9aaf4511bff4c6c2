"""The paper's *instruction synthesis* baseline: long document in, question-answer pair out.

The opposite direction of context synthesis: given real long documents (e.g. the contexts of the
seed tasks), take a random contiguous chunk of about 3,000 words when the document is longer, ask an
LLM to write one question about the chunk and its answer, and parse the ``Question:`` / ``Answer:``
reply. The resulting (document, question, answer) rows train the baseline the paper compares with.

The reference scripts do not publish the baseline's prompt; :data:`DEFAULT_INSTRUCTION_PROMPT` is our
wording of the paper's description (one question answerable from the chunk, with its answer, in a
fixed ``Question:`` / ``Answer:`` format). Override it with any jinja2 template that receives
``chunk`` and ``task``; it is rendered in jinja2's sandbox (:mod:`hf_context_synthesis.utils.templates`).

:func:`parse_question_answer` is deliberately tolerant of chatty models: markers in any case, in
markdown bold (``**Question:**``, ``**Question**:``), behind list or heading markup, ``Q:``/``A:`` at
the start of a line, and the question and answer on one line. Several pairs -> the first one. A reply
without both markers, or with an empty question or answer, is rejected with a reason.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from ..backends.base import GenerationBackend, GenerationRequest, run_requests
from ..utils.templates import compile_template, render_template

__all__ = [
    "DEFAULT_CHUNK_WORDS",
    "DEFAULT_INSTRUCTION_PROMPT",
    "DEFAULT_INSTRUCTION_SYSTEM_PROMPT",
    "DocumentItem",
    "QAPair",
    "instruction_rows",
    "load_documents",
    "parse_question_answer",
    "render_instruction_messages",
    "sample_chunk",
    "synthesize_instructions",
]

#: Chunk length (words) the paper samples from longer documents.
DEFAULT_CHUNK_WORDS = 3000

DEFAULT_INSTRUCTION_SYSTEM_PROMPT = (
    "You write reading-comprehension questions. Always answer in the format ``Question: ...`` followed by "
    "``Answer: ...`` and do not provide any explanation."
)

DEFAULT_INSTRUCTION_PROMPT = (
    "{% if task %}Task: {{ task }}\n\n{% endif %}"
    "Document:\n{{ chunk }}\n\n"
    "The above is a document without any question. Write one question (or instruction) that can be answered "
    "from the document, and its correct answer based only on the document. The question should require reading "
    "the document carefully; the answer should be concise and include any necessary numerical or factual "
    "details. Reply in exactly this format:\nQuestion: <the question>\nAnswer: <the answer>"
)

_WORD = re.compile(r"\S+")
_STRAY_BOLD = re.compile(r"^\*+|\*+$")

# "Question:" / "**Question:**" / "**Question**:" / "### Question 1:" / "- Q:" at the start of a line.
_LINE_PREFIX = r"(?:^|\n)[ \t]*(?:[#>\-*+]+[ \t]*|\d+[.)][ \t]*)*"
_BOLD = r"(?:\*\*|__)?"
_Q_MARKER = re.compile(
    _LINE_PREFIX + _BOLD + r"[ \t]*(?:question|q)(?:[ \t]*\d+)?[ \t]*" + _BOLD + r"[ \t]*[:：][ \t]*" + _BOLD,
    re.IGNORECASE,
)
# The answer marker also counts in the middle of a line ("Question: ... Answer: ...") when spelled out.
_A_MARKER = re.compile(
    r"(?:"
    + _LINE_PREFIX
    + _BOLD
    + r"[ \t]*(?:answer|a)(?:[ \t]*\d+)?"
    + r"|(?<![\w*])"
    + _BOLD
    + r"answer(?:[ \t]*\d+)?"
    + r")[ \t]*"
    + _BOLD
    + r"[ \t]*[:：][ \t]*"
    + _BOLD,
    re.IGNORECASE,
)


@dataclass(frozen=True)
class QAPair:
    """A parsed reply: ``question`` and ``answer``, or ``None`` for both with ``error`` saying why."""

    question: str | None
    answer: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _clean(value: str) -> str:
    """Strip whitespace and markdown bold asterisks left around a parsed value."""
    return _STRAY_BOLD.sub("", value.strip()).strip()


def parse_question_answer(text: str | None) -> QAPair:
    """Extract the first ``Question:`` / ``Answer:`` pair from an LLM reply.

    Returns ``QAPair(question, answer)``, or ``QAPair(None, None, error)`` with ``error`` one of
    ``"empty_output"``, ``"missing_question_marker"``, ``"missing_answer_marker"``,
    ``"empty_question"``, ``"empty_answer"``.
    """
    if text is None or not text.strip():
        return QAPair(None, None, "empty_output")
    q = _Q_MARKER.search(text)
    if q is None:
        return QAPair(None, None, "missing_question_marker")
    a = _A_MARKER.search(text, q.end())
    if a is None:
        return QAPair(None, None, "missing_answer_marker")
    question = _clean(text[q.end() : a.start()])
    next_q = _Q_MARKER.search(text, a.end())
    answer = _clean(text[a.end() : next_q.start() if next_q else len(text)])
    if not question:
        return QAPair(None, None, "empty_question")
    if not answer:
        return QAPair(None, None, "empty_answer")
    return QAPair(question, answer)


def sample_chunk(document: str, chunk_words: int = DEFAULT_CHUNK_WORDS, rng: random.Random | None = None) -> str:
    """A random contiguous chunk of ``chunk_words`` words of ``document`` (the whole text if shorter).

    The chunk is a slice of the original text, so line breaks and spacing inside it are kept.
    """
    if chunk_words <= 0:
        raise ValueError(f"chunk_words must be positive, got {chunk_words}")
    words = list(_WORD.finditer(document))
    if len(words) <= chunk_words:
        return document.strip()
    rng = rng or random.Random()
    start = rng.randrange(0, len(words) - chunk_words + 1)
    return document[words[start].start() : words[start + chunk_words - 1].end()]


def _compile(template: str) -> jinja2.Template:
    """``template`` compiled in the sandbox (:mod:`hf_context_synthesis.utils.templates`; cached there)."""
    return compile_template(template, "prompt_template")


def render_instruction_messages(
    chunk: str,
    *,
    task: str = "",
    template: str | None = None,
    system_prompt: str | None = DEFAULT_INSTRUCTION_SYSTEM_PROMPT,
) -> tuple[dict[str, str], ...]:
    """Chat messages asking the generator for one question-answer pair about ``chunk``."""
    user = render_template(_compile(template or DEFAULT_INSTRUCTION_PROMPT), {"chunk": chunk, "task": task})
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user})
    return tuple(messages)


def synthesize_instructions(
    documents: Iterable[str] | Sequence[str],
    backend: GenerationBackend,
    *,
    task: str = "",
    chunk_words: int = DEFAULT_CHUNK_WORDS,
    seed: int = 0,
    temperature: float = 0.7,
    max_new_tokens: int = 1024,
    template: str | None = None,
    system_prompt: str | None = DEFAULT_INSTRUCTION_SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """Run the baseline on ``documents`` and return one row per document, in input order.

    Rows: ``document_index``, ``task``, ``context`` (the full document, the long input of the
    training example), ``chunk`` (what the generator saw), ``instruction``, ``answer`` (``None`` when
    parsing failed), ``error`` (``None``, a parse reason or the backend's error) and ``raw`` (reply).
    Chunks are drawn with ``random.Random(seed)`` in document order, so runs are reproducible.
    """
    rng = random.Random(seed)
    docs = list(documents)
    chunks = [sample_chunk(doc, chunk_words, rng) for doc in docs]
    requests = [
        GenerationRequest(
            key=f"instruction/{i}",
            messages=render_instruction_messages(chunk, task=task, template=template, system_prompt=system_prompt),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + i,
        )
        for i, chunk in enumerate(chunks)
    ]
    rows = []
    for i, (doc, chunk, result) in enumerate(zip(docs, chunks, run_requests(backend, requests))):
        parsed = parse_question_answer(result.text) if result.ok else QAPair(None, None, result.error)
        rows.append(
            {
                "document_index": i,
                "task": task,
                "context": doc,
                "chunk": chunk,
                "instruction": parsed.question,
                "answer": parsed.answer,
                "error": parsed.error,
                "raw": result.text,
            }
        )
    return rows


# --------------------------------------------------------------------------- the builder's mode
@dataclass(frozen=True)
class DocumentItem:
    """One long document of ``mode="instruction_synthesis"`` and the chunk its question comes from."""

    task: str
    text: str
    chunk: str
    seed_id: str


_TEXT_COLUMNS = ("text", "context", "document", "content")


def load_documents(config: Any) -> list[DocumentItem]:
    """Read ``config.documents`` and draw each document's chunk (reproducible per document)."""
    import hashlib

    from ..utils.paths import check_name
    from .seeds import SeedError, iter_sources

    items: list[DocumentItem] = []
    for source, default_task, rows, _ in iter_sources(config.documents, config, what="documents"):
        for index, row in enumerate(rows):
            column = next((c for c in _TEXT_COLUMNS if c in row), None)
            text = row.get(column) if column else None
            if not isinstance(text, str) or not text.strip():
                if config.on_bad_row == "skip":
                    continue
                raise SeedError(
                    f"{source}: row {index}: needs a non-empty string in one of the columns {list(_TEXT_COLUMNS)}"
                )
            task = str(row.get("task") or default_task or "instruction_synthesis")
            task = check_name(task, what="task", where=f"{source}: row {index}")
            seed_id = f"{task}/{index}"
            digest = hashlib.sha256(f"{config.random_seed}|{seed_id}".encode()).digest()
            chunk = sample_chunk(text, config.chunk_words, random.Random(int.from_bytes(digest[:8], "little")))
            items.append(DocumentItem(task=task, text=text, chunk=chunk, seed_id=seed_id))
    if not items:
        raise SeedError("documents= holds no usable document")
    return items


def instruction_rows(
    config: Any, *, backend: GenerationBackend, cache: Any
) -> tuple[Iterator[dict[str, Any]], Any]:
    """``mode="instruction_synthesis"``: generate one question-answer pair per document (cached,
    retried, reported like context synthesis) and compose rows whose relevant context is the whole
    document. Returns ``(rows, report)``."""
    from .composition import compose_examples
    from .backend import load_tokenizer
    from .report import SynthesisError
    from .seeds import SeedExample
    from .generation import ContextSynthesizer

    documents = load_documents(config)
    system = DEFAULT_INSTRUCTION_SYSTEM_PROMPT if config.system_prompt is None else config.system_prompt

    def render(item: DocumentItem) -> tuple[dict[str, str], ...]:
        return render_instruction_messages(
            item.chunk, task=item.task, template=config.prompt_template, system_prompt=system
        )

    def validate(text: str, item: DocumentItem) -> tuple[str | None, str | None]:
        pair = parse_question_answer(text)
        return (text, None) if pair.ok else (None, pair.error or "unparsable_question_answer")

    synthesizer = ContextSynthesizer(config, backend=backend, cache=cache, validator=validate, render=render)
    result = synthesizer.run(documents)  # type: ignore[arg-type]
    if not result.context_keys:
        raise SynthesisError(
            f"No question-answer pair could be synthesized from {len(documents)} documents "
            f"(reasons: {result.report.failure_reasons})"
        )
    accepted = sorted(result.context_keys)
    seeds: list[SeedExample] = []
    for i, item in enumerate(documents):
        pair = parse_question_answer(cache.get(result.context_keys[i])) if i in result.context_keys else None
        seeds.append(
            SeedExample(item.task, pair.question if pair else "", pair.answer if pair else "", item.seed_id)
        )

    def rows() -> Iterator[dict[str, Any]]:
        for row in compose_examples(
            seeds,
            lambda i: documents[i].text,
            accepted,
            config,
            generator=result.model_id,
            tokenizer=load_tokenizer(config, backend),
        ):
            result.report.examples += 1
            yield row

    return rows(), result.report
