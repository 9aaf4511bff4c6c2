"""Scale-out beyond one machine: each node generates a disjoint shard, one merge composes them all.

Shards follow ``datasets.distributed.split_dataset_by_node`` semantics: seed ``i`` of ``n`` belongs to
one of ``num_shards`` contiguous blocks (the first ``n % num_shards`` blocks are one longer). Each
node runs :func:`synthesize_shard` (generation only) into its own cache; :func:`merge_shards` copies
every shard cache into one and composes the whole dataset from it, exactly as a single-machine run
with the same settings would (cache keys depend on the request only, and composition on the seeds,
the contexts and ``random_seed``). Run the nodes with an existing scheduler: see
``examples/slurm_array.sh`` and ``examples/ray_shards.py``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from .backends.base import GenerationBackend, GenerationRequest, GenerationResult
from .cache import GenerationCache
from .config import SynthesisConfig
from .report import SynthesisReport
from .seeds import SeedExample

logger = logging.getLogger(__name__)


def shard_bounds(num_items: int, num_shards: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of contiguous shard ``index`` (same split as ``Dataset.shard(contiguous=True)``)."""
    div, mod = divmod(num_items, num_shards)
    start = div * index + min(index, mod)
    return start, start + div + (1 if index < mod else 0)


def select_shard(seeds: Sequence[SeedExample], config: SynthesisConfig) -> list[SeedExample]:
    """The seeds of ``config``'s shard (all of them when ``num_shards == 1``)."""
    start, stop = shard_bounds(len(seeds), config.num_shards, config.shard_index)
    return list(seeds[start:stop])


def synthesize_shard(
    config: SynthesisConfig, *, backend: GenerationBackend | None = None, cache: GenerationCache | None = None
) -> SynthesisReport:
    """Generate the contexts of ``config``'s shard into its generation cache (no composition)."""
    from .seeds import load_seeds
    from .synthesis import ContextSynthesizer

    loaded = load_seeds(config)
    mine = select_shard(loaded.examples, config)
    synthesizer = ContextSynthesizer(config, backend=backend, cache=cache)
    result = synthesizer.run(mine)
    logger.info(
        "Shard %d/%d: %d of %d seeds, %s", config.shard_index, config.num_shards, len(mine),
        len(loaded.examples), result.report.summary(include_examples=False),
    )
    return result.report


class CacheOnlyBackend(GenerationBackend):
    """A backend that generates nothing: every request is a recorded failure.

    The merge step uses it so a context missing from every shard cache shows up as a failure in the
    report instead of being generated behind the user's back.
    """

    kind = "cache"

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id

    async def model_id(self) -> str:
        return self._model_id

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(key=request.key, error="missing_from_shard_caches")


def merge_caches(shard_caches: Sequence[str], target: str) -> tuple[int, str]:
    """Copy every row of the shard caches into ``target``; return ``(rows, model_id)``."""
    merged = GenerationCache(target)
    merged.close()
    models: set[str] = set()
    conn = sqlite3.connect(target)
    try:
        for i, path in enumerate(shard_caches):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard cache {path!r} does not exist")
            GenerationCache(path).close()  # the target's columns (an older cache gains finish_reason)
            conn.execute(f"ATTACH DATABASE ? AS s{i}", (path,))
            conn.execute(f"INSERT OR IGNORE INTO generations SELECT * FROM s{i}.generations")
            models.update(m for (m,) in conn.execute(f"SELECT DISTINCT model FROM s{i}.generations"))
            conn.commit()
            conn.execute(f"DETACH DATABASE s{i}")
        rows = conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    finally:
        conn.close()
    if len(models) != 1:
        raise ValueError(f"shard caches must come from one generator model, found {sorted(models) or 'none'}")
    return rows, models.pop()


def merge_shards(
    config: SynthesisConfig, shard_caches: Sequence[str], output_dir: str, **kwargs: Any
) -> SynthesisReport:
    """Merge shard caches and write the composed dataset to ``output_dir`` (see module docs).

    ``config`` must carry the same semantic settings the shards used; its shard fields are ignored.
    """
    import dataclasses

    from .output import synthesize_to_directory

    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, "generations.sqlite")
    rows, model_id = merge_caches(shard_caches, target)
    logger.info("Merged %d generations from %d shard caches", rows, len(shard_caches))
    whole = dataclasses.replace(config, shard_index=0, num_shards=1)
    cache = GenerationCache(target)
    try:
        return synthesize_to_directory(whole, output_dir, backend=CacheOnlyBackend(model_id), cache=cache, **kwargs)
    finally:
        cache.close()
