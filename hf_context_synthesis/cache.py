"""Durable generation cache: SQLite in WAL mode, one row per finished generation.

Every result is committed as soon as it arrives, so a run killed with SIGKILL loses at most the
requests that were in flight. Keys hash (prompt messages, model, generation settings, attempt), so
any run with the same request reuses the text, whatever dataset config asked for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    model TEXT NOT NULL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
)
"""


def request_key(messages: Iterable[dict[str, str]], model: str, settings: dict[str, Any]) -> str:
    """Cache key of one generation request (hex sha256)."""
    payload = json.dumps(
        {"messages": list(messages), "model": model, "settings": settings}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class GenerationCache:
    """A process- and crash-safe key -> generated text store.

    Args:
        path: SQLite file (created with its folder). Several processes may share it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL); FULL would
        # also survive power loss at one fsync per commit.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT text FROM generations WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Texts of the keys that are cached (missing keys are absent)."""
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                out.update(self._conn.execute(f"SELECT key, text FROM generations WHERE key IN ({marks})", chunk))
        return out

    def put(self, key: str, text: str, *, model: str, tokens_in: int = 0, tokens_out: int = 0) -> None:
        """Store one generation and commit it at once."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO generations (key, text, model, tokens_in, tokens_out, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, text, model, int(tokens_in), int(tokens_out), time.time()),
            )

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM generations WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "GenerationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
