"""Durable generation cache: SQLite in WAL mode, one row per finished generation.

Every result is committed as soon as it arrives, so a run killed with SIGKILL loses at most the
requests that were in flight. Keys hash (prompt messages, model, generation settings, attempt), so
any run with the same request reuses the text, whatever dataset config asked for it.

A damaged file (truncated, overwritten) is detected when the cache is opened
(:class:`CacheCorruptedError`, naming the file and how to rebuild it); :meth:`GenerationCache.rebuild`
(or ``context-synthesis cache --rebuild PATH``) moves it aside and keeps every generation
that can still be read. A full disk, a read-only file or file system and a folder without write
permission are each one clear :class:`CacheWriteError` (an ``OSError`` with ``errno`` ENOSPC, EROFS or
EACCES and a one-line message), not a traceback; what was committed before stays and is reused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
import socket
import threading
import time
import uuid
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
    created REAL NOT NULL,
    finish_reason TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
)
"""
#: Seconds a claim on a request stays valid when its owner cannot be checked (another machine).
CLAIM_TTL_S = 3600.0


def request_key(messages: Iterable[dict[str, str]], model: str, settings: dict[str, Any]) -> str:
    """Cache key of one generation request (hex sha256)."""
    payload = json.dumps(
        {"messages": list(messages), "model": model, "settings": settings}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CacheCorruptedError(RuntimeError):
    """The generation cache file is damaged (see the message for how to rebuild it)."""


class CacheWriteError(OSError):
    """The generation cache cannot be written: no space left on the device (``errno.ENOSPC``), a
    read-only file system or database (``errno.EROFS``), or no permission (``errno.EACCES``). Its
    message is one line naming the file and what to do; generations committed before stay reusable."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


def write_error_for(exc: sqlite3.Error, path: str | None) -> CacheWriteError | None:
    """The :class:`CacheWriteError` for an SQLite error that says the cache file at ``path`` cannot be
    written (full disk, read-only file or file system, no permission), else ``None``."""
    text = str(exc).lower()
    cache = f"the generation cache {path}" if path else "the generation cache"
    if "full" in text:
        return CacheWriteError(
            errno.ENOSPC,
            f"no space left on the device for {cache}: the generations stored so far are safe; free space (or "
            f"set generation_cache_dir to another disk) and rerun: they are reused, only the rest is requested",
        )
    if "readonly" in text or "read-only" in text:
        return CacheWriteError(
            errno.EROFS,
            f"{cache} is read-only ({exc}): make it and its folder writable, or copy it to a writable folder "
            f"and set generation_cache_dir there (its generations are reused)",
        )
    if "unable to open" in text or "permission" in text or "access" in text:
        return CacheWriteError(
            errno.EACCES,
            f"cannot open {cache} for writing ({exc}): check that its folder exists and is writable, or set "
            f"generation_cache_dir to a writable folder",
        )
    return None


#: Seconds a connection waits for another process's write to finish before giving up.
BUSY_TIMEOUT_S = 300.0


class GenerationCache:
    """A process- and crash-safe key -> generated text store.

    Args:
        path: SQLite file (created with its folder). Several processes may share it (WAL mode; a
            writer waits up to :data:`BUSY_TIMEOUT_S` for another's write instead of failing with
            "database is locked").
        on_corrupt: What to do with a damaged file: ``"error"`` (default) raises
            :class:`CacheCorruptedError` naming the file and the rebuild command; ``"rebuild"`` moves it
            aside and starts a new cache holding every generation that could still be read.
    """

    def __init__(self, path: str | os.PathLike[str], *, on_corrupt: str = "error") -> None:
        if on_corrupt not in ("error", "rebuild"):
            raise ValueError(f"on_corrupt must be 'error' or 'rebuild', got {on_corrupt!r}")
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # read-only file system, no permission, full disk: one clear line
            raise CacheWriteError(
                exc.errno or errno.EACCES,
                f"cannot create the folder of the generation cache {self.path} ({exc.strerror or exc}): "
                f"set generation_cache_dir to a writable folder",
            ) from None
        self._lock = threading.Lock()
        #: Who this cache object is in ``claims`` (one per object, so two runs in one process differ too).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        try:
            self._conn = self._open(self.path)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                write_error = write_error_for(exc, self.path)
                if write_error is not None:
                    raise write_error from None
                raise
            if on_corrupt == "rebuild":
                GenerationCache.rebuild(self.path)
                self._conn = self._open(self.path)
            else:
                raise CacheCorruptedError(
                    f"the generation cache {self.path} is damaged ({exc}). Rebuild it, keeping every generation "
                    f"that can still be read, with `context-synthesis cache --rebuild {self.path}` "
                    f"(or GenerationCache.rebuild(path)); the damaged file is kept beside it as *.corrupt-*"
                ) from None

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            # NORMAL in WAL mode: a committed transaction survives a process crash (SIGKILL); FULL would
            # also survive power loss at one fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            _retry_busy(lambda: conn.executescript(_SCHEMA))
            columns = {row[1] for row in conn.execute("PRAGMA table_info(generations)")}
            if "finish_reason" not in columns:  # a cache written before finish reasons were kept
                _retry_busy(lambda: conn.execute("ALTER TABLE generations ADD COLUMN finish_reason TEXT"))
            # A damaged file fails here, before the run spends anything (quick_check reads every page once).
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {result[0] if result else 'no answer'}")
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def rebuild(cls, path: str | os.PathLike[str]) -> int:
        """Move a damaged cache file aside (``<path>.corrupt-<time>``) and write a new one at ``path``
        holding every generation that can still be read from it. Returns how many were kept."""
        path = os.fspath(path)
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        rows = _salvage(aside)
        conn = cls._open(path)
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO generations (key, text, model, tokens_in, tokens_out, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        logger.warning("Rebuilt the generation cache %s: kept %d generations; the damaged file is %s",
                       path, len(rows), aside)
        return len(rows)

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

    def put(
        self, key: str, text: str, *, model: str, tokens_in: int = 0, tokens_out: int = 0,
        finish_reason: str | None = None,
    ) -> None:
        """Store one generation and commit it at once (:class:`CacheWriteError` when the disk is full)."""
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO generations (key, text, model, tokens_in, tokens_out, created, "
                    "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, text, model, int(tokens_in), int(tokens_out), time.time(), finish_reason),
                )
                self._conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
        except sqlite3.OperationalError as exc:
            write_error = write_error_for(exc, self.path)
            if write_error is not None:
                raise write_error from None
            raise

    def meta(self, key: str) -> dict[str, Any] | None:
        """``tokens_in``, ``tokens_out`` and ``finish_reason`` of a stored generation (``None`` if absent)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT tokens_in, tokens_out, finish_reason FROM generations WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return {"tokens_in": row[0], "tokens_out": row[1], "finish_reason": row[2]}

    # ------------------------------------------------------------------ claims between processes
    def claim(self, key: str, ttl: float = CLAIM_TTL_S) -> bool:
        """Claim the request ``key`` for this run: ``False`` when another live run has claimed it (it is
        being generated there; wait for it in the cache), ``True`` otherwise. A claim of a dead process
        on this machine, or older than ``ttl`` seconds, is taken over. Released by :meth:`put`,
        :meth:`release` and :meth:`close`."""
        host, pid = socket.gethostname(), os.getpid()
        try:
            with self._lock:
                conn = self._conn
                _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
                try:
                    row = conn.execute("SELECT owner, host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
                    if row is not None and row[0] != self.owner and not _claim_is_stale(row, host):
                        return False
                    conn.execute(
                        "INSERT OR REPLACE INTO claims (key, owner, host, pid, expires) VALUES (?, ?, ?, ?, ?)",
                        (key, self.owner, host, pid, time.time() + ttl),
                    )
                    return True
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with self._lock:
                if self._conn.in_transaction:  # a failed COMMIT leaves the transaction open
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
            write_error = write_error_for(exc, self.path)
            if write_error is not None:
                raise write_error from None
            raise

    def claimed_elsewhere(self, key: str) -> bool:
        """Whether another live run holds a claim on ``key``."""
        with self._lock:
            row = self._conn.execute("SELECT owner, host, pid, expires FROM claims WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] != self.owner and not _claim_is_stale(row, socket.gethostname())

    def release(self, key: str) -> None:
        """Drop this run's claim on ``key`` (e.g. after a failed request). Never fails: on a full or
        read-only disk the claim stays and expires (a dead run's claims are taken over)."""
        with self._lock:
            try:
                self._conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
            except sqlite3.OperationalError as exc:
                if write_error_for(exc, self.path) is None:
                    raise
                logger.debug("could not release the claim on %s in %s: %s", key[:12], self.path, exc)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM generations WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            except sqlite3.Error:  # closing must not fail (e.g. a full disk): claims of a dead run expire
                pass
            try:  # fold the WAL into the main file: a closed cache is one self-contained file to copy
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:  # another process still reading: its own close checkpoints later
                pass
            self._conn.close()

    def __enter__(self) -> "GenerationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _claim_is_stale(row: tuple[Any, ...], host: str) -> bool:
    """A claim ``(owner, host, pid, expires)`` whose run is gone (dead pid on this host) or expired, or
    one of this very process (an earlier, interrupted run: a process never waits for itself)."""
    _, claim_host, pid, expires = row
    if expires < time.time():
        return True
    if claim_host == host and int(pid) == os.getpid():
        return True
    if claim_host == host:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by another user
            return False
    return False


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file is damaged (not merely busy or unreadable for permissions)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return True


def _retry_busy(action: Any, deadline_s: float = BUSY_TIMEOUT_S) -> Any:
    """Run ``action``; retry while another process holds a lock SQLite does not wait for itself
    (switching to WAL and creating the schema can answer "database is locked" at once)."""
    deadline = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _fix_page_count(path: str) -> None:
    """Make the header's page count match a truncated file, so that SQLite reads the pages that remain
    (with a header larger than the file it refuses every query)."""
    try:
        with open(path, "r+b") as fh:
            header = fh.read(100)
            if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
                return
            page_size = int.from_bytes(header[16:18], "big")
            page_size = 65536 if page_size == 1 else page_size
            if page_size < 512:
                return
            size = os.fstat(fh.fileno()).st_size
            pages = size // page_size
            if pages < int.from_bytes(header[28:32], "big"):
                fh.truncate(pages * page_size)
                fh.seek(28)
                fh.write(pages.to_bytes(4, "big"))
    except OSError:
        pass


def _salvage(path: str) -> list[tuple[Any, ...]]:
    """Every row of ``generations`` that can still be read from a damaged file (skipping bad pages)."""
    import shutil
    import tempfile

    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
        copy = os.path.join(tmp, "salvage.sqlite")  # the damaged file itself is kept as it is
        shutil.copyfile(path, copy)
        if os.path.exists(path + "-wal"):  # generations committed since the last checkpoint
            shutil.copyfile(path + "-wal", copy + "-wal")
        _fix_page_count(copy)
        try:
            conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        except sqlite3.DatabaseError:
            return rows
        try:
            return _read_rows(conn)
        finally:
            conn.close()


def _read_rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    last, misses = 0, 0
    query = ("SELECT rowid, key, text, model, tokens_in, tokens_out, created FROM generations "
             "WHERE rowid > ? ORDER BY rowid")
    while misses < 10_000:
        try:
            for row in conn.execute(query, (last,)):
                rows.append(tuple(row[1:]))
                last, misses = row[0], 0
            break
        except sqlite3.DatabaseError:
            last, misses = last + 1, misses + 1  # step over the damaged row/page
    return rows

