"""Folder and file helpers: atomic writes, JSON reads, and no empty output folder left behind by a failed run."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def keep_no_empty_folder(path: str | os.PathLike[str], action: Callable[[], Any]) -> Any:
    """Run ``action``; if it fails and ``path`` did not exist before, remove what is left of it when
    it holds no file (a failed first run leaves no empty output folder behind)."""
    target = Path(path)
    existed = target.exists()
    try:
        return action()
    except BaseException:
        if not existed:
            remove_if_nothing_kept(target)
        raise


def is_disposable(path: Path) -> bool:
    """A file a failed first run may leave that holds nothing: an empty generation cache (and its
    SQLite side files) or a lock file."""
    name = path.name
    if name.endswith((".lock", "-wal", "-shm", "-journal")):
        return True
    if name.endswith(".sqlite"):
        import sqlite3

        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0
        except sqlite3.Error:
            return path.stat().st_size == 0
    return False


def remove_if_nothing_kept(path: str | os.PathLike[str]) -> bool:
    """Remove the folder ``path`` when nothing worth keeping lives below it (only folders, empty
    generation caches, lock files): a failed first run leaves no empty output folder behind.
    Returns whether it was removed."""
    import shutil

    target = Path(path)
    if target.is_symlink() or not target.is_dir():
        return False
    if any(p.is_symlink() or (p.is_file() and not is_disposable(p)) for p in target.rglob("*")):
        return False
    shutil.rmtree(target, ignore_errors=True)
    return True


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when there is no such file."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
