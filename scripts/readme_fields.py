"""Regenerate the README's table of SynthesisConfig fields from the dataclass and its docstring.

Usage: ``python scripts/readme_fields.py`` rewrites the block between the ``fields:start`` and
``fields:end`` markers of README.md; ``--check`` exits 1 when the README is out of date.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from hf_context_synthesis.config import RUNTIME_FIELDS, SynthesisConfig

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- fields:start -->", "<!-- fields:end -->"


def field_docs() -> dict[str, str]:
    """``field -> description`` parsed from the ``name: text`` entries of the class docstring."""
    docs: dict[str, str] = {}
    current: list[str] | None = None
    names = {f.name for f in dataclasses.fields(SynthesisConfig)}
    for line in (SynthesisConfig.__doc__ or "").splitlines():
        m = re.match(r"^ {8}(\w+(?: / \w+)*): (.*)$", line)
        keys = m.group(1).split(" / ") if m else []
        if keys and all(k in names for k in keys):
            current = keys
            for k in keys:
                docs[k] = m.group(2).strip()
        elif current and line.startswith(" " * 12):
            for k in current:
                docs[k] += " " + line.strip()
        else:
            current = None
    return docs


def render_table() -> str:
    docs = field_docs()
    lines = ["| field | default | kind | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(SynthesisConfig):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "required"
        kind = "runtime" if f.name in RUNTIME_FIELDS else "semantic"
        text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", docs.get(f.name, "")).replace("``", "`").replace("|", "\\|")
        lines.append(f"| `{f.name}` | `{default}` | {kind} | {text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render_table()}\n{END}{tail}"
    if args.check:
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
