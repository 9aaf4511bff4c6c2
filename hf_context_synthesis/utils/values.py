"""Typed, range-checked settings: one check for recipe YAML, ``--set``, CLI flags and dataclasses.

Settings arrive from places a user does not control (a shared recipe, a JSON flag, a notebook). Each
is checked where it enters, against the type hint of the field it fills, and a wrong value is one
:class:`InvalidSettingError` that names the setting, the value and what is allowed::

    num_distractors: expected an integer >= 0, got 'nine' (str)

Rules (the same everywhere):

- integers: ``int`` (never ``bool``); a ``float`` without a fraction (``1e9`` in JSON) and a string
  holding an exact integer (PyYAML reads ``1e9`` as the *string* ``"1e9"``) are converted, logged at
  debug level; ``"nine"``, ``1.5``, lists and ``True`` are refused.
- numbers (``float`` fields): ``int``/``float`` or a numeric string (PyYAML reads ``1e-5`` as a
  string), always finite: ``nan`` and ``inf`` are refused.
- booleans: ``True``/``False`` only.
- strings: ``str`` (a ``pathlib.Path`` is converted); lists of strings and string mappings are checked
  item by item.
- ranges come from a small per-class table (:class:`Range`), e.g. ``temperature >= 0``,
  ``0 < top_p <= 1``.

This module imports nothing heavy (no torch/transformers/datasets).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "InvalidSettingError",
    "Range",
    "check_bool",
    "check_float",
    "check_int",
    "check_str",
    "check_str_list",
    "check_str_mapping",
    "check_value",
    "check_values",
    "check_dataclass_fields",
    "describe_value",
    "yaml_error_message",
]


class InvalidSettingError(ValueError, TypeError):
    """A setting has the wrong type or is out of range (a ``ValueError`` and a ``TypeError``).

    Attributes:
        setting: The setting's name as the user wrote it (``num_distractors``, ``synthesis.top_p``).
        value: The value that was refused.
        allowed: What is allowed, in words (``"an integer >= 0"``).
    """

    def __init__(self, setting: str, value: Any, allowed: str) -> None:
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"{setting}: expected {allowed}, got {describe_value(value)}")

    def with_prefix(self, prefix: str) -> "InvalidSettingError":
        """The same error with ``prefix`` before the setting's name (``synthesis.`` for a recipe)."""
        return InvalidSettingError(f"{prefix}{self.setting}", self.value, self.allowed)


def describe_value(value: Any) -> str:
    """``'nine' (str)``, ``nan (float)``, ``[1, 2] (list)``: the value (shortened) and its type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed numbers of a setting: ``minimum``/``maximum`` (inclusive unless ``*_exclusive``)."""

    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False

    def contains(self, number: float) -> bool:
        if self.minimum is not None and (number <= self.minimum if self.minimum_exclusive else number < self.minimum):
            return False
        if self.maximum is not None and (number >= self.maximum if self.maximum_exclusive else number > self.maximum):
            return False
        return True

    def describe(self) -> str:
        """`` >= 0``, `` in (0, 1]`` or ``""``."""
        if self.minimum is not None and self.maximum is not None:
            left = "(" if self.minimum_exclusive else "["
            right = ")" if self.maximum_exclusive else "]"
            return f" in {left}{_num(self.minimum)}, {_num(self.maximum)}{right}"
        if self.minimum is not None:
            return f" {'>' if self.minimum_exclusive else '>='} {_num(self.minimum)}"
        if self.maximum is not None:
            return f" {'<' if self.maximum_exclusive else '<='} {_num(self.maximum)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _or_none(text: str, optional: bool) -> str:
    return f"{text} or null" if optional else text


def check_int(name: str, value: Any, limits: Range | None = None, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` within ``limits`` (see the module rules), else :class:`InvalidSettingError`."""
    allowed = _or_none(f"an integer{limits.describe() if limits else ''}", optional)
    if value is None and optional:
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = int(value)
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        number = _int_from_text(value)
        if number is not None:
            logger.debug("%s: read the string %r as the integer %d", name, value, number)
    if number is None or (limits is not None and not limits.contains(number)):
        raise InvalidSettingError(name, value, allowed)
    return number


def _int_from_text(text: str) -> int | None:
    """The exact integer a string holds (``"12"``, ``"1e9"``, ``"3.0"``), else ``None``."""
    text = text.strip()
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or not number.is_integer():
        return None
    return int(number)


def check_float(name: str, value: Any, limits: Range | None = None, *, optional: bool = False) -> float | None:
    """``value`` as a finite ``float`` within ``limits``, else :class:`InvalidSettingError`."""
    allowed = _or_none(f"a finite number{limits.describe() if limits else ''}", optional)
    if value is None and optional:
        return None
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
        if number is not None:
            logger.debug("%s: read the string %r as the number %r", name, value, number)
    if number is None or not math.isfinite(number) or (limits is not None and not limits.contains(number)):
        raise InvalidSettingError(name, value, allowed)
    return number


def check_bool(name: str, value: Any, *, optional: bool = False) -> bool | None:
    """``value`` if it is ``True``/``False`` (or ``None`` when optional), else :class:`InvalidSettingError`."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise InvalidSettingError(name, value, _or_none("true or false", optional))
    return value


def check_str(name: str, value: Any, *, optional: bool = False) -> str | None:
    """``value`` as a string (``os.PathLike`` converted), else :class:`InvalidSettingError`."""
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike) and not isinstance(value, bytes):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InvalidSettingError(name, value, _or_none("a string", optional))
    return value


def check_str_list(name: str, value: Any, *, optional: bool = False, allow_str: bool = False) -> Any:
    """A list of strings (a tuple becomes a list; a single string too when ``allow_str``)."""
    if value is None and optional:
        return None
    allowed = _or_none(("a string or " if allow_str else "") + "a list of strings", optional)
    if allow_str and isinstance(value, (str, os.PathLike)):
        return check_str(name, value)
    if not isinstance(value, (list, tuple)):
        raise InvalidSettingError(name, value, allowed)
    out = []
    for i, item in enumerate(value):
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise InvalidSettingError(f"{name}[{i}]", item, "a string")
        out.append(item)
    return out


def check_str_mapping(name: str, value: Any, *, optional: bool = False) -> dict[str, str] | None:
    """A mapping of strings to strings, else :class:`InvalidSettingError` naming the bad entry."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise InvalidSettingError(name, value, _or_none("a mapping of strings to strings", optional))
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidSettingError(f"{name} key", key, "a string")
        if not isinstance(item, str):
            raise InvalidSettingError(f"{name}.{key}", item, "a string")
    return dict(value)


# ------------------------------------------------------------------------------ from type hints
def _members(hint: Any) -> tuple[list[Any], bool]:
    """(non-None members of a union hint, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], hint is type(None)


def check_value(name: str, hint: Any, value: Any, limits: Range | None = None) -> Any:
    """Check (and convert) ``value`` against the type hint ``hint`` of the setting ``name``.

    Hints this module has no rule for (``Any``, ``Literal`` choices, dataclasses, mixed unions) pass
    the value through unchanged: their own validation covers them."""
    members, optional = _members(hint)
    if value is None and optional:
        return None
    plain = [typing.get_origin(m) or m for m in members]
    if any(m is Any for m in members) or any(typing.get_origin(m) is typing.Literal for m in members):
        return value
    if plain == [int]:
        return check_int(name, value, limits, optional=optional)
    if plain in ([float], [float, int], [int, float]):
        return check_float(name, value, limits, optional=optional)
    if plain == [bool]:
        return check_bool(name, value, optional=optional)
    if plain == [str]:
        return check_str(name, value, optional=optional)
    if plain == [list] and _item_hint(members[0]) is str:
        return check_str_list(name, value, optional=optional)
    if set(plain) == {str, list} and all(m is str or _item_hint(m) is str for m in members):
        return check_str_list(name, value, optional=optional, allow_str=True)
    if plain == [dict] and typing.get_args(members[0]) == (str, str):
        return check_str_mapping(name, value, optional=optional)
    if set(plain) == {str, bool}:
        if isinstance(value, (str, bool)):
            return value
        raise InvalidSettingError(name, value, _or_none("a string or true/false", optional))
    return value


def _item_hint(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if len(args) == 1 else None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - an unresolvable annotation: no type rule for that class
        return {}


def check_values(
    cls: type, values: Mapping[str, Any], limits: Mapping[str, Range] | None = None, *, prefix: str = ""
) -> dict[str, Any]:
    """``values`` (a mapping of ``cls``'s field names) checked against ``cls``'s type hints and
    ``limits``; returns the converted mapping. Names that are not fields of ``cls`` pass unchanged."""
    hints = _hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(hints)
    out = dict(values)
    for name, value in values.items():
        if name in fields and name in hints:
            out[name] = check_value(f"{prefix}{name}", hints[name], value, (limits or {}).get(name))
    return out


def check_dataclass_fields(obj: Any, limits: Mapping[str, Range] | None = None, *, prefix: str = "") -> None:
    """Check every field of the dataclass instance ``obj`` in place (converted values are set back)."""
    cls = type(obj)
    current = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}
    for name, value in check_values(cls, current, limits, prefix=prefix).items():
        if value is not current[name]:
            object.__setattr__(obj, name, value)


def yaml_error_message(source: str, err: Exception, *, lines: bool = True) -> str:
    """One line for a YAML error (``yaml.YAMLError``): ``SOURCE, line N: problem``.

    A tag that would build a Python object (``!!python/object/apply:os.system``) is named as refused:
    recipes are read with ``yaml.safe_load``, so such a tag is never constructed."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{source}, line {mark.line + 1}" if lines and mark is not None else source
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context = getattr(err, "context", None)
    if "python/" in problem or "constructor for the tag" in problem:
        return (f"{where}: {problem}; a recipe is plain YAML (read with yaml.safe_load): tags that build Python "
                "objects are refused, remove the tag")
    if context:
        problem = f"{' '.join(str(context).split())}: {problem}"
    return f"{where}: invalid YAML: {problem}"
