"""The synthesis prompt (seed pair -> request for the missing context) and output parsing.

The default reproduces the paper's prompt (arXiv 2502.15592, reference scripts): a system message
asking for the missing context only, starting with ``Context:``, and a user message showing the
question-answer pair with the context marked ``[MISSING]``. Users override it with a jinja2
template that receives ``instruction``, ``answer``, ``task`` and ``context_words``.
"""

from __future__ import annotations

import functools
import re

import jinja2

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


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(template)


#: Variables a synthesis ``prompt_template`` receives (sample values for the dry render).
SYNTHESIS_TEMPLATE_VARIABLES = {
    "instruction": "What is the name of the miller?",
    "answer": "Anna",
    "task": "hotpotqa",
    "context_words": 2000,
}
#: Variables an ``instruction_synthesis`` ``prompt_template`` receives.
INSTRUCTION_TEMPLATE_VARIABLES = {"chunk": "The mill stood by the river.", "task": "hotpotqa"}


class PromptTemplateError(ValueError):
    """``prompt_template`` does not compile or does not render (the message names it and the cause)."""


def validate_prompt_template(template: str, variables: dict[str, object] | None = None, name: str = "prompt_template") -> None:
    """Compile ``template`` and render it once with sample ``variables`` (default: the synthesis
    prompt's), raising :class:`PromptTemplateError` naming ``name``, the line and the cause on a syntax
    error, a variable the template uses but does not receive, or a failing render."""
    from jinja2 import meta

    variables = SYNTHESIS_TEMPLATE_VARIABLES if variables is None else variables
    available = ", ".join(sorted(variables))
    if not isinstance(template, str):
        raise PromptTemplateError(f"{name} must be a jinja2 template string, got {type(template).__name__}")
    try:
        compiled = _compile(template)
        undeclared = meta.find_undeclared_variables(compiled.environment.parse(template))
    except jinja2.TemplateSyntaxError as err:
        lines = template.splitlines()
        where = f": {lines[err.lineno - 1].strip()!r}" if err.lineno and 0 < err.lineno <= len(lines) else ""
        raise PromptTemplateError(
            f"{name} is not a valid jinja2 template: {err.message} (line {err.lineno}{where})"
        ) from None
    unknown = sorted(set(undeclared) - set(variables))
    if unknown:
        raise PromptTemplateError(
            f"{name} uses undefined variable(s) {', '.join(unknown)}; it receives {available}"
        )
    try:
        compiled.render(**variables)
    except jinja2.UndefinedError as err:
        raise PromptTemplateError(f"{name} cannot be rendered: {err.message}; it receives {available}") from None
    except Exception as err:  # noqa: BLE001 - any failure of the user's template, named
        raise PromptTemplateError(f"{name} cannot be rendered: {type(err).__name__}: {err}") from None


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
    user = _compile(template or DEFAULT_PROMPT_TEMPLATE).render(
        instruction=instruction, answer=answer, task=task, context_words=context_words
    )
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user})
    return tuple(messages)


def parse_context(text: str, *, require_marker: bool = True) -> str | None:
    """Return the synthesized context: the text after the first ``Context:`` marker, stripped.

    Tolerates markdown bold (``**Context:**``) and any case. Without a marker, returns the whole
    stripped text when ``require_marker`` is false, else ``None``. Empty results are ``None``.
    """
    match = _CONTEXT_MARKER.search(text or "")
    if match is None:
        body = (text or "").strip() if not require_marker else ""
    else:
        body = text[match.end() :].strip()
    return body or None
