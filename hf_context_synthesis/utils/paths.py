"""Names from data and the project's own output files: the one place their file-system rules live.

Two rules, both fail closed with a one-line error:

* **Names from data are names, never paths.** A seed's ``task`` (a Hub dataset controls that
  column), a split name and anything else read from data that ends up in a file name is checked by
  :func:`check_name` where it enters (seeds: :func:`~hf_context_synthesis.synthesis.seeds.load_seeds`), and
  the writer checks once more that the file it builds stays inside its folder
  (:func:`path_inside`).
* **No writing or deleting through links.** Where the project expects its own folder or file inside
  an output folder (``data/``, a shard, ``holdout/``, ``model/``, a report) and finds a symbolic
  link, it refuses (:func:`refuse_links`, :func:`refuse_links_below`) and leaves the link's target
  untouched. The output folder a user names may itself be a link (that is the user's choice).

This module imports only the standard library.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

#: What a safe name is, as error messages say it.
SAFE_NAME_RULE = "no path separators, '..', control characters or empty names"
#: Longest name (UTF-8 bytes) that still leaves room for a suffix in a 255-byte file name.
MAX_NAME_BYTES = 200
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeNameError(ValueError):
    """A name read from data (or a setting) would not be a plain file name; the message names the
    file, row and value."""


class LinkRefusedError(OSError):
    """A symbolic link where the project expects its own folder or file; nothing was written or
    deleted through it."""


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a safe single file-name component, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value.strip():
        return "empty"
    if value in (".", ".."):
        return f"{value!r} names a folder"
    if "/" in value or "\\" in value:
        return "holds a path separator"
    if _DRIVE.match(value) or os.path.isabs(value):
        return "is an absolute path or drive"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "holds a control character"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(value: object, *, what: str, where: str) -> str:
    """Return ``value`` when it is a safe file-name component, else raise :class:`UnsafeNameError`.

    ``what`` names the field (``"task"``), ``where`` the file and row (``"seeds.jsonl: line 3"``)::

        seeds.jsonl: line 3: task '../../../ESCAPED' is not a safe name (holds a path separator;
        no path separators, '..', control characters or empty names)
    """
    problem = name_problem(value)
    if problem is None:
        return value  # type: ignore[return-value]
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise UnsafeNameError(f"{where}: {what} {shown} is not a safe name ({problem}; {SAFE_NAME_RULE})")


def path_inside(folder: str | os.PathLike[str], name: str, *, what: str = "file name") -> Path:
    """``folder / name``, checked to be a direct child of ``folder`` once both are resolved (and not a
    link out of it). Raises :class:`UnsafeNameError` naming the folder and the name otherwise."""
    check_name(name, what=what, where=os.fspath(folder))
    base = Path(os.path.realpath(folder))
    candidate = Path(folder) / name
    if Path(os.path.realpath(candidate)).parent != base:
        raise UnsafeNameError(
            f"{os.fspath(folder)}: {what} {name!r} resolves outside the folder ({os.path.realpath(candidate)})"
        )
    return candidate


def _link_error(path: str | os.PathLike[str], what: str) -> LinkRefusedError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return LinkRefusedError(
        f"{what} {os.fspath(path)} is a symbolic link (to {target}): refusing to write or delete through it "
        "(its target is untouched); remove the link or choose another output folder"
    )


def refuse_links(*paths: str | os.PathLike[str], what: str = "output path") -> None:
    """Raise :class:`LinkRefusedError` when any of ``paths`` is a symbolic link (missing paths are fine)."""
    for path in paths:
        if os.path.islink(path):
            raise _link_error(path, what)


def refuse_links_below(folder: str | os.PathLike[str], *, what: str = "output folder") -> None:
    """Raise :class:`LinkRefusedError` when a symbolic link lies anywhere below ``folder`` (links are
    not followed; ``folder`` itself may be one: the user named it)."""
    if not os.path.isdir(folder):
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise _link_error(path, f"{what}: entry")

