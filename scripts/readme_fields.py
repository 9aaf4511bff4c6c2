"""Regenerate the settings tables of ``docs/settings.md`` from the dataclasses and their field docs.

The text comes from :func:`hf_context_synthesis.utils.fields.field_docs`, the same parser that writes the
``--help`` of every ``context-synthesis`` flag, so the docs and the CLI never drift apart.

Usage: ``python scripts/readme_fields.py`` rewrites every ``<!-- fields:NAME:start -->`` ...
``<!-- fields:NAME:end -->`` block of docs/settings.md; ``--check`` exits 1 when it is out of date.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from hf_context_synthesis.utils.fields import field_default, field_docs, plain_text

SETTINGS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def _classes() -> dict[str, tuple[type, frozenset[str] | None]]:
    """Block name -> (dataclass, runtime fields or None when the table has no 'kind' column)."""
    from hf_context_synthesis.synthesis.config import RUNTIME_FIELDS, SynthesisConfig
    from hf_context_synthesis.synthesis.quality import QualityConfig
    from hf_context_synthesis.recipe import RecipeConfig

    out: dict[str, tuple[type, frozenset[str] | None]] = {
        "synthesis": (SynthesisConfig, RUNTIME_FIELDS),
        "quality": (QualityConfig, None),
        "recipe": (RecipeConfig, None),
    }
    from hf_context_synthesis.training.trainer import TrainingJobArguments

    out["training"] = (TrainingJobArguments, None)
    return out


def render_table(cls: type, runtime: frozenset[str] | None = None) -> str:
    """A Markdown table of ``cls``'s fields: name, default, (kind,) meaning."""
    docs = field_docs(cls)
    head = ["field", "default"] + (["kind"] if runtime is not None else []) + ["meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        default = field_default(f)
        default_text = "required" if default is dataclasses.MISSING else f"`{default!r}`"
        text = plain_text(docs.get(f.name, ""), markdown=True).replace("|", "\\|")
        cells = [f"`{f.name}`", default_text]
        if runtime is not None:
            cells.append("runtime" if f.name in runtime else "semantic")
        cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` with every known ``fields:NAME`` block regenerated."""
    for name, (cls, runtime) in _classes().items():
        start, end = f"<!-- fields:{name}:start -->", f"<!-- fields:{name}:end -->"
        if start not in text or end not in text:
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{render_table(cls, runtime)}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 when docs/settings.md is out of date.")
    args = parser.parse_args(argv)
    text = SETTINGS.read_text(encoding="utf-8")
    if not re.search(r"<!-- fields:\w+:start -->", text):
        print(f"{SETTINGS} has no <!-- fields:NAME:start --> block", file=sys.stderr)
        return 1
    new = render(text)
    if args.check:
        if new != text:
            print(f"{SETTINGS} is out of date: run python scripts/readme_fields.py", file=sys.stderr)
        return 0 if new == text else 1
    SETTINGS.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
