"""The synthesis prompt (seed pair -> request for the missing context) and output parsing.

The default reproduces the paper's prompt (arXiv 2502.15592, reference scripts): a system message
asking for the missing context only, starting with ``Context:``, and a user message showing the
question-answer pair with the context marked ``[MISSING]``. Users override it with a jinja2
template that receives ``instruction``, ``answer``, ``task`` and ``context_words``; it is rendered in
jinja2's sandbox (:mod:`hf_context_synthesis.utils.templates`), so a template from a shared recipe cannot run
code or read files. The system prompt is sent as plain text, never rendered.
"""

from __future__ import annotations

import re

import jinja2

from ..utils.templates import PromptTemplateError, check_template, compile_template, render_template

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "INSTRUCTION_TEMPLATE_VARIABLES",
    "PromptTemplateError",
    "SYNTHESIS_TEMPLATE_VARIABLES",
    "is_echo",
    "parse_context",
    "unparsed_reason",
    "render_synthesis_messages",
    "validate_prompt_template",
]

DEFAULT_SYSTEM_PROMPT = (
    "Please infer the missing context. Always start with ``Context:'' and do not provide any explanation."
)

DEFAULT_PROMPT_TEMPLATE = (
    "Context: [MISSING]\n"
    "Question: {{ instruction }}\n"
    "Answer: {{ answer }}\n\n"
    "The above is a question-answer pair based on a context which is missing. Write the missing context to "
    "provide relevant background information that leads to both the question and the answer, ensuring that "
    "any necessary numerical or factual details are included. The context also should include relevant details "
    "about the character, their environment, aspirations, challenges, and relationships. It should be "
    "sufficiently detailed to reach approximately {{ context_words }} words."
)

_CONTEXT_MARKER = re.compile(r"(?:\*\*|__)?\s*context\s*:\s*(?:\*\*|__)?", re.IGNORECASE)


def _compile(template: str, setting: str = "prompt_template") -> jinja2.Template:
    """``template`` compiled in the sandbox (:mod:`hf_context_synthesis.utils.templates`; cached there)."""
    return compile_template(template, setting)


#: Variables a synthesis ``prompt_template`` receives (sample values for the dry render).
SYNTHESIS_TEMPLATE_VARIABLES = {
    "instruction": "What is the name of the miller?",
    "answer": "Anna",
    "task": "hotpotqa",
    "context_words": 2000,
}
#: Variables an ``instruction_synthesis`` ``prompt_template`` receives.
INSTRUCTION_TEMPLATE_VARIABLES = {"chunk": "The mill stood by the river.", "task": "hotpotqa"}


def validate_prompt_template(
    template: str, variables: dict[str, object] | None = None, name: str = "prompt_template"
) -> None:
    """Compile ``template`` in the sandbox and render it once with sample ``variables`` (default: the
    synthesis prompt's), raising :class:`PromptTemplateError` naming ``name``, the line and the cause on a
    syntax error, a variable the template uses but does not receive, a failing render, or an unsafe
    construct (private attributes such as ``__globals__``, ``{% include %}``/``{% import %}``/``{% extends %}``)."""
    check_template(template, SYNTHESIS_TEMPLATE_VARIABLES if variables is None else variables, name)


def render_synthesis_messages(
    instruction: str,
    answer: str,
    *,
    task: str = "",
    context_words: int = 2000,
    template: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> tuple[dict[str, str], ...]:
    """Build the chat messages that ask the generator for the missing context of one seed pair."""
    user = render_template(
        _compile(template or DEFAULT_PROMPT_TEMPLATE),
        {"instruction": instruction, "answer": answer, "task": task, "context_words": context_words},
        "prompt_template",
    )
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user})
    return tuple(messages)


#: What a small model copies back from the default prompt instead of writing the context: the
#: ``[MISSING]`` placeholder, the ``Question: ... Answer: ...`` pair (up to the blank line after the
#: answer), and the prompt's request paragraph.
_PLACEHOLDER = re.compile(r"\A\s*(?:\*\*|__)?\s*\[\s*missing\s*\](?:\*\*|__)?", re.IGNORECASE)
_ECHOED_PAIR = re.compile(
    r"\A\s*(?:\*\*|__)?\s*question\s*:.*?(?:\*\*|__)?\s*answer\s*:.*?(?:\n[ \t]*\n|\Z)", re.IGNORECASE | re.DOTALL
)
_ECHOED_REQUEST = re.compile(
    r"\A\s*the above is a question-answer pair based on a context which is missing\b.*?(?:\n[ \t]*\n|\Z)",
    re.IGNORECASE | re.DOTALL,
)


_LEADING_MARKER = re.compile(r"\A\s*" + _CONTEXT_MARKER.pattern, re.IGNORECASE)


def strip_echo(body: str) -> str:
    """``body`` without a leading copy of the default prompt's scaffolding (see :data:`_ECHOED_PAIR`),
    stripped. Small models often answer ``Context: [MISSING] Question: ... Answer: ...`` instead of a
    document; what they write after the echo, if anything, is kept."""
    previous = None
    while previous != body:
        previous = body
        body = _PLACEHOLDER.sub("", body, count=1)
        body = _ECHOED_PAIR.sub("", body, count=1)
        body = _ECHOED_REQUEST.sub("", body, count=1)
        body = _LEADING_MARKER.sub("", body, count=1)  # the echo ended where the real context begins
    return body.strip()


def parse_context(text: str, *, require_marker: bool = True) -> str | None:
    """Return the synthesized context: the text after the first ``Context:`` marker, stripped.

    Tolerates markdown bold (``**Context:**``) and any case. A copy of the prompt's scaffolding right
    after the marker (``[MISSING]``, the echoed ``Question:``/``Answer:`` pair, the request paragraph;
    :func:`strip_echo`) is not context: it is skipped, and when nothing follows it the next ``Context:``
    marker is tried. Without a marker, returns the whole stripped text (echo removed) when
    ``require_marker`` is false, else ``None``. Empty results are ``None``.
    """
    text = text or ""
    found = False
    for match in _CONTEXT_MARKER.finditer(text):
        found = True
        body = strip_echo(text[match.end() :])
        if body:
            return body
    if found or require_marker:
        return None
    return strip_echo(text) or None


def is_echo(text: str) -> bool:
    """Whether ``text`` is only a copy of the prompt's scaffolding (a ``Context:`` marker with nothing
    but the echoed placeholder, pair or request after it)."""
    text = text or ""
    match = _CONTEXT_MARKER.search(text)
    return match is not None and bool(text[match.end() :].strip()) and parse_context(text) is None


def unparsed_reason(text: str, *, require_marker: bool = True) -> str:
    """Why :func:`parse_context` found no context in ``text``: ``"echoed_prompt"`` (:func:`is_echo`),
    ``"missing_context_marker"`` (text, but no ``Context:`` marker where one is required), else
    ``"empty_generation"`` (nothing, or nothing after the marker)."""
    if is_echo(text):
        return "echoed_prompt"
    if require_marker and parse_context(text, require_marker=False) is not None:
        return "missing_context_marker"
    return "empty_generation"
