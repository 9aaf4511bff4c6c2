"""Write a synthesized dataset to a folder: size-bounded parquet shards + report + settings.

Data safety: the new shards are written to a staging folder inside the output folder and swapped in
only once every row is written, so a failed rerun (dead endpoint, disk full, Ctrl-C) leaves the
previous dataset as it was and no temporary file behind. One run at a time writes a folder: a second
run on the same folder is refused at once (:class:`OutputBusyError`) instead of requesting every seed
again and colliding on the same file names.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

from .config import SynthesisConfig
from .report import SynthesisReport
from ..utils.folders import atomic_write
from ..utils.paths import check_name, refuse_links

logger = logging.getLogger(__name__)

#: The token-length histogram written beside a dataset (by the card writer in ``hub/``).
LENGTH_HISTOGRAM_FILE = "length_histogram.png"

REPORT_FILE = "synthesis_report.json"
CONFIG_FILE = "synthesis_config.json"
#: Lock file of a run writing the folder (held with ``flock``; removed when the run ends).
LOCK_FILE = ".synthesize.lock"
_STAGING_PREFIX = ".staging-"
_STAGING_NAME = re.compile(r"\.staging-\d+-[0-9a-f]{8}")
#: Columns every shard this project writes has (the content evidence before an old shard is replaced).
_SHARD_COLUMNS = frozenset({"messages", "task", "seed_id", "instruction", "answer", "context_spans"})


class OutputBusyError(OSError):
    """Another run is writing the same output folder."""


@contextlib.contextmanager
def output_lock(output_dir: str | os.PathLike[str]) -> Iterator[str]:
    """Hold the output folder's lock (:data:`LOCK_FILE`) for one run, or raise :class:`OutputBusyError`.

    The lock is an ``flock`` on a file inside the folder, so it is released when the process dies
    (even by SIGKILL) and works between processes on one machine.
    """
    import fcntl

    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_FILE)
    while True:
        try:
            # O_NOFOLLOW: a link planted at the lock's name is refused, its target never truncated
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(path):
                refuse_links(path, what="lock file")
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise OutputBusyError(
                errno.EBUSY,
                f"another synthesize run (pid {holder}) is writing {out}; wait for it to finish or choose "
                f"another --output (the lock is {path}, released when that run ends)",
            ) from None
        # The file may have been removed by the previous holder between our open and flock: retry.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def synthesize_to_directory(
    config: SynthesisConfig,
    output_dir: str | os.PathLike[str],
    *,
    max_shard_bytes: int = 500 * 1024 * 1024,
    rows_per_batch: int = 64,
    split: str = "train",
    datasets_cache_dir: str | None = None,
    **pipeline_kwargs: Any,
) -> SynthesisReport:
    """Synthesize with ``config`` and write ``data/<split>-XXXXX-of-YYYYY.parquet`` shards, the report
    (:data:`REPORT_FILE`) and the settings (:data:`CONFIG_FILE`) into ``output_dir``.

    Rows are streamed to disk in batches: memory does not grow with the number of rows. The shards
    are written to a staging folder and replace the previous ``split`` shards only when the run
    succeeds; a failure leaves the folder as it was. Raises :class:`OutputBusyError` when another run
    is writing ``output_dir``.
    """
    out = os.fspath(output_dir)
    check_name(split, what="split", where="synthesize_to_directory")
    with output_lock(out):
        check_output_folder(out, split)  # before any request: links and foreign files are refused
        staging = os.path.join(out, f"{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            _remove_stale_staging(out)
            return _synthesize_into(
                config, out, staging, max_shard_bytes=max_shard_bytes, rows_per_batch=rows_per_batch,
                split=split, datasets_cache_dir=datasets_cache_dir, **pipeline_kwargs,
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC and type(exc).__name__ != "CacheWriteError":  # that one names the cache
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on the device while writing the dataset to {out}: nothing was replaced "
                    f"(the previous dataset there, if any, is untouched) and no temporary file is left; free "
                    f"space and rerun (finished generations stay cached)",
                ) from exc
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(out: str) -> None:
    """Remove staging folders left by runs that were killed (we hold the lock: none is in use).

    Only real folders named as this module names them are removed; a link is left alone (``rmtree``
    never follows links inside them either)."""
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if _STAGING_NAME.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def _shard_name(split: str) -> re.Pattern[str]:
    return re.compile(re.escape(split) + r"-\d{5}-of-\d{5}\.parquet")


def _is_project_shard(path: str, split: str) -> bool:
    """Name pattern and content: ``<split>-NNNNN-of-NNNNN.parquet``, a regular file, with the columns
    of this project's rows."""
    if not _shard_name(split).fullmatch(os.path.basename(path)) or os.path.islink(path) or not os.path.isfile(path):
        return False
    import pyarrow.parquet as pq

    try:
        return _SHARD_COLUMNS <= set(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - not a parquet file: not ours
        return False


def _is_project_report(out: str) -> bool:
    """``out`` holds the report this module writes (a regular JSON file with the report's counts)."""
    path = os.path.join(out, REPORT_FILE)
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "examples" in data


def check_output_folder(out: str | os.PathLike[str], split: str = "train") -> list[str]:
    """Check that writing a dataset into ``out`` writes and deletes only this project's files; return
    the names of the previous ``split`` shards in ``out/data`` that the swap will replace.

    Refuses (one line, nothing touched) a symbolic link at ``data/``, the report, the settings or the
    card (:class:`~hf_context_synthesis.utils.paths.LinkRefusedError`), and ``<split>-*.parquet``
    files in ``data/`` that this project did not write (:class:`FileExistsError`): a shard is only
    replaced when its name matches, it is a regular file with this project's columns and the
    folder holds this project's report beside it.
    """
    out = os.fspath(out)
    data_dir = os.path.join(out, "data")
    refuse_links(data_dir, what="dataset folder")
    refuse_links(*(os.path.join(out, n) for n in (REPORT_FILE, CONFIG_FILE, "README.md", "length_histogram.png")),
                 what="dataset file")
    if not os.path.exists(data_dir):
        return []
    if not os.path.isdir(data_dir):
        raise FileExistsError(f"{data_dir} is not a folder: move it away or choose another output folder")
    old = sorted(n for n in os.listdir(data_dir) if n.startswith(f"{split}-") and n.endswith(".parquet"))
    if not old:
        return []
    ours = _is_project_report(out)
    for name in old:
        path = os.path.join(data_dir, name)
        refuse_links(path, what="dataset shard")
        if not ours or not _is_project_shard(path, split):
            why = "no synthesis_report.json of this project beside it" if not ours else "not a shard this project wrote"
            raise FileExistsError(
                f"{path} was not written by context synthesis ({why}): it is left as it is; move it away or "
                "choose another output folder"
            )
    return old


def _synthesize_into(
    config: SynthesisConfig,
    out: str,
    staging: str,
    *,
    max_shard_bytes: int,
    rows_per_batch: int,
    split: str,
    datasets_cache_dir: str | None,
    **pipeline_kwargs: Any,
) -> SynthesisReport:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .pipeline import synthesize_rows
    from .schema import ROW_FEATURES
    from ..utils.secrecy import redact

    os.makedirs(staging)
    rows, report = synthesize_rows(config, datasets_cache_dir=datasets_cache_dir, **pipeline_kwargs)
    schema = ROW_FEATURES.arrow_schema
    shards: list[str] = []
    writer: pq.ParquetWriter | None = None
    written = 0

    def flush(batch: list[dict[str, Any]]) -> None:
        nonlocal writer, written
        if not batch:
            return
        table = pa.Table.from_pylist(batch, schema=schema)
        if writer is None or written >= max_shard_bytes:
            if writer is not None:
                writer.close()
            shards.append(os.path.join(staging, f"{split}-{len(shards):05d}.parquet"))
            writer = pq.ParquetWriter(shards[-1], schema)
            written = 0
        writer.write_table(table)
        written += table.nbytes

    try:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= rows_per_batch:
                flush(batch)
                batch = []
        flush(batch)
    finally:
        if writer is not None:
            writer.close()
    if not shards:  # no rows at all: still write an empty shard so the folder loads
        shards.append(os.path.join(staging, f"{split}-00000.parquet"))
        pq.write_table(schema.empty_table(), shards[-1])
    # Everything is written: swap the new shards in for the previous ones of this split.
    data_dir = os.path.join(out, "data")
    # checked again now (the run took a while): a link or foreign file that appeared meanwhile is refused
    previous = check_output_folder(out, split)
    os.makedirs(data_dir, exist_ok=True)
    refuse_links(data_dir, what="dataset folder")
    trash = os.path.join(staging, "previous")
    os.makedirs(trash)
    for old in previous:  # only this project's shards (see check_output_folder)
        os.replace(os.path.join(data_dir, old), os.path.join(trash, old))
    for i, tmp in enumerate(shards):
        os.replace(tmp, os.path.join(data_dir, f"{split}-{i:05d}-of-{len(shards):05d}.parquet"))
    atomic_write(os.path.join(out, REPORT_FILE), redact(report.to_json()))
    atomic_write(os.path.join(out, CONFIG_FILE), redact(json.dumps(config.to_dict(), indent=2, default=str)))
    logger.info("Wrote %d examples in %d shard(s) to %s", report.examples, len(shards), data_dir)
    return report
