"""Command-line flags from documented dataclasses: one source for ``--help``, docs and validation.

The field documentation of a config dataclass lives in its docstring (``name: text`` entries, as in
:class:`~hf_context_synthesis.synthesis.config.SynthesisConfig`) or in ``field(metadata={"help": ...})`` (as in
TRL's and transformers' argument classes). :func:`field_docs` reads both; :func:`add_dataclass_arguments`
turns every field into a ``--flag`` whose help shows that text, the default and the choices, and
``scripts/readme_fields.py`` renders the same text into ``docs/settings.md``, so the CLI help and the
docs cannot drift apart. :func:`did_you_mean` suggests the closest known name for a typo.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "add_dataclass_arguments",
    "did_you_mean",
    "field_default",
    "field_docs",
    "parse_bool",
    "plain_text",
]

_ENTRY = re.compile(r"^(?P<indent> +)(?P<keys>\w+(?: / \w+)*): (?P<text>.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """``field -> description`` of a dataclass.

    Read from ``field(metadata={"help": ...})`` first, then from the ``name: text`` entries of the class
    docstring (continuation lines indented deeper; ``a / b: text`` documents both ``a`` and ``b``).
    The text keeps its reStructuredText markup; see :func:`plain_text`.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    current: list[str] = []
    indent = 0
    for line in (cls.__doc__ or "").splitlines():
        m = _ENTRY.match(line)
        keys = m.group("keys").split(" / ") if m else []
        if keys and all(k in names for k in keys):
            current, indent = keys, len(m.group("indent"))
            for k in keys:
                docs[k] = m.group("text").strip()
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            for k in current:
                docs[k] += " " + line.strip()
        else:
            current = []
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help") if f.metadata else None
        if text:
            docs[f.name] = str(text)
    return docs


def plain_text(text: str, *, markdown: bool = False) -> str:
    """Strip reStructuredText roles/literals: ``:class:`~a.B``` -> ``B``, ````x```` -> ``x``.

    With ``markdown=True`` literals become Markdown code spans (for docs tables)."""
    tick = "`" if markdown else ""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"{tick}{m.group(1).rsplit('.', 1)[-1]}{tick}", text)
    return text.replace("``", tick)


def field_default(f: dataclasses.Field) -> Any:
    """The default of a dataclass field (``dataclasses.MISSING`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def parse_bool(value: str | bool) -> bool:
    """``true/false``, ``yes/no``, ``1/0``, ``on/off`` (any case) -> bool."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected JSON, got {value!r} ({err.msg})") from None


def _number_or_text(value: str) -> Any:
    """``"12"`` -> 12, ``"0.5"``/``"nan"`` -> float, anything else the text itself: for the flags of a
    dataclass that checks its own field types, so the error names the setting (one line, no usage)."""
    try:
        return int(value, 10)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _bool_or_text(value: str | bool) -> Any:
    try:
        return parse_bool(value)
    except argparse.ArgumentTypeError:
        return value


def _args_of(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(a for a in typing.get_args(hint) if a is not type(None))
    return (hint,)


def _argparse_kwargs(hint: Any, *, checked: bool = False) -> dict[str, Any]:
    """``type``/``choices``/``nargs`` for a type hint.

    With ``checked`` (the dataclass checks its own field types, see
    :mod:`hf_context_synthesis.utils.values`) numbers and booleans that do not parse are handed over as
    text, so the dataclass's one-line error names the setting, the value and what is allowed."""
    members = _args_of(hint)
    literals = [a for a in members if typing.get_origin(a) is typing.Literal]
    if literals and len(literals) == len(members):
        choices = [c for lit in literals for c in typing.get_args(lit)]
        return {"choices": choices, "type": type(choices[0])}
    plain = [typing.get_origin(a) or a for a in members]
    if plain == [bool]:
        return {"type": _bool_or_text if checked else parse_bool, "nargs": "?", "const": True,
                "metavar": "{true,false}"}
    if plain == [int]:
        return {"type": _number_or_text if checked else int}
    if plain in ([float], [float, int], [int, float]):
        return {"type": _number_or_text if checked else float}
    if plain == [str]:
        return {"type": str}
    if set(plain) == {str, list} or plain == [list]:
        return {"type": str, "nargs": "+"}
    if any(p in (dict, Mapping) for p in plain) or any(dataclasses.is_dataclass(p) for p in plain):
        return {"type": _json, "metavar": "JSON"}
    return {"type": _json_or_text}


def _format_default(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    dashes: bool = True,
    underscores: bool = True,
    keep_defaults: bool = False,
) -> list[argparse.Action]:
    """Add one ``--flag`` per field of dataclass ``cls`` and return the actions.

    Every flag's help is the field's documentation (:func:`field_docs`) followed by its default and,
    for ``Literal`` fields, its choices. Booleans accept ``--flag`` / ``--flag false``; dict-valued
    fields take JSON; ``str | list[str]`` fields take several values.

    Args:
        parser: A parser or argument group.
        cls: The dataclass.
        exclude: Fields not to add.
        overrides: ``field -> add_argument keyword arguments`` replacing the derived ones (e.g.
            ``{"seed": {"required": True}}``).
        dashes / underscores: Spell flags ``--max-seeds`` and/or ``--max_seeds`` (both by default, as
            ``transformers.HfArgumentParser`` accepts both).
        keep_defaults: Put the field defaults into the namespace; by default an unset flag is ``None``
            (``argparse.SUPPRESS`` for required-free layering is up to the caller) so the dataclass keeps
            its own default.
    """
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    checked = bool(getattr(cls, "checks_field_types", False))
    skip = set(exclude)
    actions = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or f.name.startswith("_"):
            continue
        kwargs = _argparse_kwargs(hints.get(f.name, Any), checked=checked)
        meta_choices = (f.metadata or {}).get("choices")
        if meta_choices:
            kwargs["choices"] = list(meta_choices)
        default = field_default(f)
        help_text = plain_text(docs.get(f.name, "")).strip() or f.name.replace("_", " ")
        extras = []
        required = bool((overrides or {}).get(f.name, {}).get("required"))
        if required:
            extras.append("required")
        elif default is not dataclasses.MISSING:
            extras.append(f"default: {_format_default(default)}")
        if kwargs.get("choices"):
            extras.append("choices: " + ", ".join(map(str, kwargs["choices"])))
        if extras:
            help_text += f" [{'; '.join(extras)}]"
        kwargs.update(dest=f.name, help=help_text.replace("%", "%%"))
        kwargs["default"] = default if keep_defaults and default is not dataclasses.MISSING else None
        kwargs.update((overrides or {}).get(f.name, {}))
        names = []
        if dashes:
            names.append("--" + f.name.replace("_", "-"))
        if underscores and "_" in f.name or not names:
            names.append("--" + f.name)
        actions.append(parser.add_argument(*dict.fromkeys(names), **kwargs))
    return actions


def did_you_mean(name: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    """``" (did you mean --max-seeds?)"`` for the closest candidate, or ``""`` when none is close."""
    match = closest_name(name, candidates)
    return f" (did you mean {prefix}{match}?)" if match else ""


def closest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (dashes and underscores alike, answered in ``name``'s spelling
    style), or ``None`` when none is close."""
    pool = list(dict.fromkeys(candidates))
    key = name.lstrip("-").replace("-", "_")
    normalized: dict[str, list[str]] = {}
    for c in pool:
        normalized.setdefault(c.lstrip("-").replace("-", "_"), []).append(c)
    match = difflib.get_close_matches(key, list(normalized), n=1, cutoff=0.6)
    if not match:
        return None
    spellings = normalized[match[0]]  # --max-seeds / --max_seeds: answer in the user's style
    styled = [s for s in spellings if ("_" in s) == ("_" in name) and ("-" in s.lstrip("-")) == ("-" in name.lstrip("-"))]
    return (styled or spellings)[0]


def unknown_names_message(where: str, unknown: Sequence[str], known: Iterable[str], prefix: str = "") -> str:
    """One message listing unknown names, each with its suggestion."""
    pool = list(known)
    parts = [f"{prefix}{name}{did_you_mean(name, pool, prefix=prefix)}" for name in unknown]
    return f"{where}: unknown setting{'s' if len(parts) > 1 else ''} " + ", ".join(parts)
