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
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

from .config import SynthesisConfig
from .report import SynthesisReport

logger = logging.getLogger(__name__)

REPORT_FILE = "synthesis_report.json"
CONFIG_FILE = "synthesis_config.json"
#: Lock file of a run writing the folder (held with ``flock``; removed when the run ends).
LOCK_FILE = ".synthesize.lock"
_STAGING_PREFIX = ".staging-"


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
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


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
    with output_lock(out):
        staging = os.path.join(out, f"{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            _remove_stale_staging(out)
            return _synthesize_into(
                config, out, staging, max_shard_bytes=max_shard_bytes, rows_per_batch=rows_per_batch,
                split=split, datasets_cache_dir=datasets_cache_dir, **pipeline_kwargs,
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
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
    """Remove staging folders left by runs that were killed (we hold the lock: none is in use)."""
    for name in os.listdir(out):
        if name.startswith(_STAGING_PREFIX):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)


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
    from .secrecy import redact

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
    os.makedirs(data_dir, exist_ok=True)
    trash = os.path.join(staging, "previous")
    os.makedirs(trash)
    for old in os.listdir(data_dir):
        if old.startswith(f"{split}-") and old.endswith(".parquet"):
            os.replace(os.path.join(data_dir, old), os.path.join(trash, old))
    for i, tmp in enumerate(shards):
        os.replace(tmp, os.path.join(data_dir, f"{split}-{i:05d}-of-{len(shards):05d}.parquet"))
    _atomic_write(os.path.join(out, REPORT_FILE), redact(report.to_json()))
    _atomic_write(os.path.join(out, CONFIG_FILE), redact(json.dumps(config.to_dict(), indent=2, default=str)))
    logger.info("Wrote %d examples in %d shard(s) to %s", report.examples, len(shards), data_dir)
    return report
