"""Write a synthesized dataset to a folder: size-bounded parquet shards + report + settings."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .config import SynthesisConfig
from .report import SynthesisReport

logger = logging.getLogger(__name__)

REPORT_FILE = "synthesis_report.json"
CONFIG_FILE = "synthesis_config.json"


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

    Rows are streamed to disk in batches: memory does not grow with the number of rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .pipeline import synthesize_rows
    from .schema import ROW_FEATURES

    out = os.fspath(output_dir)
    data_dir = os.path.join(out, "data")
    os.makedirs(data_dir, exist_ok=True)
    for stale in os.listdir(data_dir):
        if stale.startswith(f"{split}-") and stale.endswith(".parquet"):
            os.remove(os.path.join(data_dir, stale))
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
            shards.append(os.path.join(data_dir, f".{split}-{len(shards):05d}.parquet.tmp"))
            writer = pq.ParquetWriter(shards[-1], schema)
            written = 0
        writer.write_table(table)
        written += table.nbytes

    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= rows_per_batch:
            flush(batch)
            batch = []
    flush(batch)
    if writer is not None:
        writer.close()
    if not shards:  # no rows at all: still write an empty shard so the folder loads
        shards.append(os.path.join(data_dir, f".{split}-00000.parquet.tmp"))
        pq.write_table(schema.empty_table(), shards[-1])
    for i, tmp in enumerate(shards):
        os.replace(tmp, os.path.join(data_dir, f"{split}-{i:05d}-of-{len(shards):05d}.parquet"))
    with open(os.path.join(out, REPORT_FILE), "w", encoding="utf-8") as fh:
        fh.write(report.to_json())
    with open(os.path.join(out, CONFIG_FILE), "w", encoding="utf-8") as fh:
        json.dump(config.to_dict(), fh, indent=2, default=str)
    logger.info("Wrote %d examples in %d shard(s) to %s", report.examples, len(shards), data_dir)
    return report
