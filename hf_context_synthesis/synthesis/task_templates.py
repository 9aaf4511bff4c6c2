"""Prompt templates that wrap a composed context and an instruction into the user turn.

The eight LongBench document-level tasks use LongBench's own prompts (as the paper does, so
training prompts match evaluation prompts; the ``asconcisely`` typo is LongBench's and is kept).
Other tasks use :data:`GENERIC_TEMPLATE`. Templates are ``str.format`` strings with ``{context}``
(once) and optionally ``{input}``; user templates may use nothing else (no ``{context.attr}`` or
``{input[0]}``: see :func:`validate_template`), and they are filled by plain substitution, not ``str.format``.

**Summarization quirk.** LongBench's govreport and multinews prompts have no ``{input}``: with 10
documents the target summary is ambiguous, since nothing says which document to summarize. The
paper trains on them anyway. With ``expose_instruction=True`` (the default) we append the seed
instruction after the documents for templates without ``{input}`` (see :func:`render_task_prompt`),
so the instruction the seed pair carries is at least visible; pass ``expose_instruction=False`` to
reproduce the paper's prompts byte for byte.
"""

from __future__ import annotations

import functools

from ..utils.templates import format_fields

LONGBENCH_TEMPLATES: dict[str, str] = {
    "narrativeqa": (
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
        "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}"
        "\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. "
        "Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "qasper": (
        "You are given a scientific article and a question. Answer the question as concisely as you can, using a "
        "single phrase or sentence if possible. If the question cannot be answered based on the information in the "
        'article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". '
        "Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as "
        "concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered "
        'based on the information in the article, write "unanswerable". If the question is a yes/no question, answer '
        '"yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:'
    ),
    "hotpotqa": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other words."
        "\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only "
        "give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "2wikiqa": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other words."
        "\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only "
        "give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "musique": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other words."
        "\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only "
        "give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "govreport": (
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}"
        "\n\nNow, write a one-page summary of the report.\n\nSummary:"
    ),
    "qmsum": (
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one "
        "or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript "
        "in one or more sentences.\n\nQuery: {input}\nAnswer:"
    ),
    "multinews": (
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, "
        "write a one-page summary of all the news.\n\nSummary:"
    ),
}
# LongBench's own key for 2WikiMultihopQA.
LONGBENCH_TEMPLATES["2wikimqa"] = LONGBENCH_TEMPLATES["2wikiqa"]

GENERIC_TEMPLATE = (
    "Read the following documents and answer the instruction that follows.\n\n{context}\n\n"
    "Instruction: {input}\nAnswer:"
)

#: Added after the documents when a template has no ``{input}`` and ``expose_instruction`` is on.
EXPOSED_INSTRUCTION = "\n\nInstruction: {input}"


def template_for(task: str, user_templates: dict[str, str] | None = None) -> str:
    """The template for ``task``: user templates first, then LongBench's, then the generic one."""
    if user_templates:
        if task in user_templates:
            return user_templates[task]
        if "default" in user_templates:
            return user_templates["default"]
    return LONGBENCH_TEMPLATES.get(task, GENERIC_TEMPLATE)


#: The fields a task template may use.
TEMPLATE_FIELDS = ("context", "input")


def validate_template(template: str, name: str = "template") -> None:
    """Raise :class:`~hf_context_synthesis.utils.templates.PromptTemplateError` (a ``ValueError``) unless
    ``template`` is a ``str.format`` string with ``{context}`` exactly once, optionally ``{input}``, and no
    other field: attribute or index access (``{context.__class__}``), positional fields, conversions and
    format specs are refused. The template is never passed to ``str.format``."""
    _pieces(template, f"task_templates[{name!r}]")


@functools.lru_cache(maxsize=64)
def _pieces(template: str, setting: str = "task template") -> tuple[tuple[str, str | None], ...]:
    return tuple(format_fields(template, TEMPLATE_FIELDS, setting, required=("context",)))


def render_task_prompt(
    template: str, documents: list[str], instruction: str, *, separator: str = "\n\n", expose_instruction: bool = True
) -> tuple[str, list[list[int]]]:
    """Fill ``template`` and return ``(prompt, spans)``.

    ``spans[i] = [start, end)`` locates ``documents[i]`` inside ``prompt`` (character offsets). The
    template is parsed (see :func:`validate_template`) and filled by plain substitution, so braces in the
    documents and the instruction are kept as they are.
    """
    pieces = _pieces(template)
    if expose_instruction and not any(field == "input" for _, field in pieces):
        pieces = pieces + _pieces("{context}" + EXPOSED_INSTRUCTION)[1:]
    out: list[str] = []
    pos = 0
    spans: list[list[int]] = []
    for literal, field in pieces:
        out.append(literal)
        pos += len(literal)
        if field == "input":
            out.append(instruction)
            pos += len(instruction)
        elif field == "context":
            for i, doc in enumerate(documents):
                if i:
                    out.append(separator)
                    pos += len(separator)
                spans.append([pos, pos + len(doc)])
                out.append(doc)
                pos += len(doc)
    return "".join(out), spans
