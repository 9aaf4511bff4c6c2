"""Templates a user supplies are data: render them in jinja2's sandbox, refuse anything else in one line.

Every jinja2 template that can come from a user (a recipe shared by someone else, a ``--prompt-template``
flag, a card template file) is compiled here, in a :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`
*without a loader*:

- attribute access to private/internal attributes (``__init__``, ``__globals__``, ``__class__``, ``mro``,
  ``gi_frame`` ...), calls of unsafe callables and mutation of lists/dicts/sets are refused;
- ``{% include %}``, ``{% import %}``, ``{% from ... import %}`` and ``{% extends %}`` are refused when the
  template is compiled (there is nothing to load from, and no file is ever read);
- ``*`` / ``**`` cannot build huge strings or numbers (:data:`MAX_REPEAT`, :data:`MAX_EXPONENT`,
  :data:`MAX_POWER_BITS`) and the rendered text is at most :data:`MAX_OUTPUT_CHARS` long (a template
  can still loop for a long time: it is not run with a time limit).

Each refusal is a :class:`PromptTemplateError` (a ``ValueError``) whose one-line message starts with the
setting, e.g. ``prompt_template: unsafe template (access to attribute '__init__' of 'Cycler' object is
unsafe)``, so the command line prints one line and no traceback.

Task templates are ``str.format`` strings; :func:`format_fields` parses them with
:class:`string.Formatter` and accepts only plain, known field names (``{context}``, ``{input}``): no
attribute or index access (``{context.__class__}``), conversion or format spec. They are then filled by
plain text substitution, never by ``str.format``.

This module imports only ``jinja2`` and the standard library.
"""

from __future__ import annotations

import functools
import operator
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

__all__ = [
    "MAX_EXPONENT",
    "MAX_OUTPUT_CHARS",
    "MAX_POWER_BITS",
    "MAX_REPEAT",
    "PromptTemplateError",
    "check_template",
    "compile_template",
    "format_fields",
    "refuse_private_attributes",
    "render_error",
    "render_template",
]

#: Largest result length of ``str``/``list`` repetition (``'a' * n``) inside a template.
MAX_REPEAT = 1_000_000
#: Largest exponent of ``**`` inside a template.
MAX_EXPONENT = 1_000
#: Largest integer ``**`` may build inside a template, in bits.
MAX_POWER_BITS = 100_000
#: Longest text a template may render (a loop cannot fill the memory).
MAX_OUTPUT_CHARS = 10_000_000

#: Tags that load other templates: refused (the environment has no loader).
_LOADER_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}


class PromptTemplateError(ValueError):
    """A user-supplied template does not compile, does not render, or is unsafe.

    The message is one line and names the setting (``prompt_template``, ``task_templates['qasper']``,
    a card template's path ...) and the cause.
    """


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with unsafe attribute access raising (not rendering as empty) and bounded ``*``/``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # the stock sandbox returns an Undefined that only fails when used: with a lenient Undefined
        # (card templates) ``{{ lipsum.__globals__ }}`` would then render as nothing. Refuse it outright.
        what = f"class {obj.__name__!r}" if isinstance(obj, type) else f"{type(obj).__name__!r} object"
        raise SecurityError(f"access to attribute {attribute!r} of {what} is unsafe")

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right!r} is too large (at most {MAX_EXPONENT})")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"power would build an integer of more than {MAX_POWER_BITS} bits")
            return operator.pow(left, right)
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                    if len(seq) * max(count, 0) > MAX_REPEAT:
                        raise SecurityError(f"repetition would build {len(seq) * count} items (at most {MAX_REPEAT})")
            return operator.mul(left, right)
        return super().call_binop(context, operator_, left, right)


@functools.lru_cache(maxsize=4)
def _environment(strict: bool, trim_blocks: bool) -> _Sandbox:
    return _Sandbox(
        loader=None,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=trim_blocks,
        lstrip_blocks=trim_blocks,
    )


def _syntax_error(setting: str, template: str, err: jinja2.TemplateSyntaxError) -> PromptTemplateError:
    lines = template.splitlines()
    where = f": {lines[err.lineno - 1].strip()!r}" if err.lineno and 0 < err.lineno <= len(lines) else ""
    message = " ".join(str(err.message or err).split())
    return PromptTemplateError(f"{setting} is not a valid jinja2 template: {message} (line {err.lineno}{where})")


def render_error(setting: str, err: BaseException) -> PromptTemplateError:
    """A failing render of a user template as one line naming ``setting`` (e.g. for a card template)."""
    return PromptTemplateError(f"{setting} cannot be rendered: {type(err).__name__}: {' '.join(str(err).split())}")


def _unsafe(setting: str, reason: object) -> PromptTemplateError:
    return PromptTemplateError(f"{setting}: unsafe template ({' '.join(str(reason).split())})")


@functools.lru_cache(maxsize=64)
def _compile(template: str, setting: str, strict: bool, trim_blocks: bool) -> jinja2.Template:
    env = _environment(strict, trim_blocks)
    try:
        tree = env.parse(template)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(setting, template, err) from None
    for node_type, tag in _LOADER_TAGS.items():
        node = tree.find(node_type)
        if node is not None:
            raise _unsafe(
                setting,
                f"{{% {tag} %}} on line {node.lineno} is not allowed: templates are rendered without a loader "
                "and never read files; put the text into the template itself",
            )
    try:
        return env.from_string(tree)
    except jinja2.TemplateSyntaxError as err:  # e.g. an unknown filter, found when the tree is compiled
        raise _syntax_error(setting, template, err) from None


def compile_template(
    template: str, setting: str = "prompt_template", *, strict: bool = True, trim_blocks: bool = False
) -> jinja2.Template:
    """Compile a user-supplied ``template`` in the sandbox (cached).

    Args:
        template: jinja2 source.
        setting: What the template is, for error messages (``"prompt_template"``, a file path ...).
        strict: Undefined variables raise (:class:`jinja2.StrictUndefined`); else they render empty.
        trim_blocks: ``trim_blocks`` and ``lstrip_blocks`` (block tags leave no blank lines).

    Raises:
        PromptTemplateError: not a string, a syntax error, or a loader tag (include/import/extends).
    """
    if not isinstance(template, str):
        raise PromptTemplateError(f"{setting} must be a jinja2 template string, got {type(template).__name__}")
    return _compile(template, setting, strict, trim_blocks)


def render_template(
    template: str | jinja2.Template, variables: Mapping[str, Any], setting: str = "prompt_template", **options: Any
) -> str:
    """Render ``template`` (source or :func:`compile_template` result) with ``variables`` in the sandbox.

    ``options`` go to :func:`compile_template` when ``template`` is source. An unsafe access raises
    :class:`PromptTemplateError` (``"<setting>: unsafe template (...)"``); other render errors propagate
    (:func:`check_template` turns them into one line).
    """
    compiled = compile_template(template, setting, **options) if isinstance(template, str) else template
    parts: list[str] = []
    size = 0
    try:
        for part in compiled.generate(**variables):  # what render() joins, with the length bounded
            size += len(part)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError(f"the rendered text exceeds {MAX_OUTPUT_CHARS} characters")
            parts.append(part)
    except SecurityError as err:
        raise _unsafe(setting, err) from None
    return "".join(parts)


def _post_order(node: nodes.Node) -> Iterable[nodes.Node]:
    for child in node.iter_child_nodes():
        yield from _post_order(child)
    yield node


def _static_unsafe_attribute(tree: nodes.Template) -> str | None:
    """The first private attribute the template names anywhere (also in branches the sample render
    skipped); in ``a.__init__.__globals__`` that is ``__init__``, the one accessed first."""
    for node in _post_order(tree):
        if not isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Filter)):
            continue
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        else:  # {{ x|attr('__class__') }}
            first = node.args[0] if node.name == "attr" and node.args else None
            name = first.value if isinstance(first, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            return name
    return None


def check_template(
    template: str, variables: Mapping[str, Any], setting: str = "prompt_template", **options: Any
) -> None:
    """Validate a user-supplied template: compile it, check its variables, render it once with the sample
    ``variables`` in the sandbox, and refuse private attributes named anywhere in it.

    Raises :class:`PromptTemplateError` with one line naming ``setting`` and the cause.
    """
    from jinja2 import meta

    available = ", ".join(sorted(variables))
    compiled = compile_template(template, setting, **options)
    tree = compiled.environment.parse(template)
    unknown = sorted(set(meta.find_undeclared_variables(tree)) - set(variables))
    if unknown and options.get("strict", True):
        raise PromptTemplateError(f"{setting} uses undefined variable(s) {', '.join(unknown)}; it receives {available}")
    try:
        render_template(compiled, variables, setting)
    except PromptTemplateError:
        raise
    except jinja2.UndefinedError as err:
        raise PromptTemplateError(f"{setting} cannot be rendered: {err.message}; it receives {available}") from None
    except Exception as err:  # noqa: BLE001 - any failure of the user's template, named
        raise render_error(setting, err) from None
    refuse_private_attributes(template, setting, **options)


def refuse_private_attributes(template: str, setting: str = "prompt_template", **options: Any) -> None:
    """Refuse a template that names a private attribute (``x.__init__``, ``x['_y']``, ``x|attr('__class__')``)
    anywhere, also in a branch that a render did not take (the sandbox refuses such an access when it
    happens; this refuses it up front). Raises :class:`PromptTemplateError` naming ``setting``."""
    tree = compile_template(template, setting, **options).environment.parse(template)
    private = _static_unsafe_attribute(tree)
    if private is not None:
        raise _unsafe(setting, f"access to attribute {private!r} is unsafe")


def format_fields(
    template: str, allowed: Iterable[str], setting: str = "template", *, required: Sequence[str] = ()
) -> list[tuple[str, str | None]]:
    """Parse a ``str.format`` template into ``[(literal_text, field_name or None), ...]``.

    Only plain fields named in ``allowed`` are accepted (no ``{x.attr}``, ``{x[0]}``, ``{}``, ``{0}``,
    ``!r`` conversion or ``:spec``); each name in ``required`` must appear exactly once. Literal text has
    ``{{``/``}}`` already unescaped, so joining the pieces with the field values equals ``str.format``.

    Raises:
        PromptTemplateError: naming ``setting``, the offending field and what is allowed.
    """
    allowed = tuple(allowed)
    shown = " and ".join("{" + name + "}" for name in allowed)
    hint = f"a str.format string with only {shown} fields (escape other braces as '{{{{' and '}}}}')"
    if not isinstance(template, str):
        raise PromptTemplateError(f"{setting}: template must be {hint}, got {type(template).__name__}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise PromptTemplateError(f"{setting}: template must be {hint}: {err}") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            pieces.append((literal, None))
            continue
        shown_field = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field not in allowed or spec or conversion:
            raise PromptTemplateError(f"{setting}: field {shown_field!r} is not allowed; template must be {hint}")
        pieces.append((literal, field))
    for name in required:
        count = sum(1 for _, field in pieces if field == name)
        if count != 1:
            found = "does not contain" if count == 0 else f"contains {count} times"
            raise PromptTemplateError(
                f"{setting}: a task prompt template must contain '{{{name}}}' exactly once; it {found} it"
                f" ({template[:80]!r})"
            )
    return pieces
