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

import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..backends.base import GenerationBackend, GenerationRequest, GenerationResult
from ..synthesis.cache import GenerationCache
from ..synthesis.config import SynthesisConfig
from ..synthesis.report import SynthesisReport
from ..utils.paths import refuse_links
from ..synthesis.seeds import SeedExample

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


#: Written next to a shard's generation cache: which shard it is and the settings it was made with.
SHARD_INFO_FILE = "shard.json"
#: Written next to a shard's generation cache: the shard's synthesis report (summed by the merge).
SHARD_REPORT_FILE = "shard_report.json"
#: Report counters of the generation phase that a merge sums over the shards.
_SUMMED = ("requested", "cached", "generated", "requests", "attempts", "transport_retries", "regenerated",
           "retried", "filtered", "tokens_in", "tokens_out")


def shard_identity(config: SynthesisConfig) -> dict[str, Any]:
    """The settings every shard of one dataset must share: the semantic settings, with sources
    identified by content (a seed folder mounted at another path on another node is the same seed)
    and without the generator label (the merge checks the model recorded in every cache instead)."""
    d = config.identity_dict()
    d.pop("generator", None)
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def synthesize_shard(
    config: SynthesisConfig, *, backend: GenerationBackend | None = None, cache: GenerationCache | None = None
) -> SynthesisReport:
    """Generate the contexts of ``config``'s shard into its generation cache (no composition).

    The cache is ``generations.sqlite`` under ``config.generation_cache_dir`` (or the default cache
    path). When this function returns, the cache it opened is closed and checkpointed: the one
    ``generations.sqlite`` file holds every generation and is safe to copy (no ``-wal`` file left
    behind, even in a long-lived worker process). Next to it, :data:`SHARD_INFO_FILE` records the
    shard and its settings and :data:`SHARD_REPORT_FILE` its report, so :func:`merge_shards` can
    check the shards belong together and sum their counts. A cache passed in stays open (the caller
    owns it).
    """
    from ..synthesis.seeds import load_seeds
    from ..synthesis.generation import ContextSynthesizer, default_cache_path

    loaded = load_seeds(config)
    mine = select_shard(loaded.examples, config)
    own_cache = cache is None
    if cache is None:
        cache = GenerationCache(default_cache_path(config))
    try:
        synthesizer = ContextSynthesizer(config, backend=backend, cache=cache)
        result = synthesizer.run(mine)
    finally:
        if own_cache:
            cache.close()
    report = result.report
    start, stop = shard_bounds(len(loaded.examples), config.num_shards, config.shard_index)
    write_shard_files(
        os.path.dirname(os.path.abspath(cache.path)), config, report,
        seeds=(start, stop), total_seeds=len(loaded.examples),
    )
    logger.info(
        "Shard %d/%d: %d of %d seeds, %s", config.shard_index, config.num_shards, len(mine),
        len(loaded.examples), report.summary(include_examples=False),
    )
    return report


def write_shard_files(
    folder: str, config: SynthesisConfig, report: SynthesisReport, *, seeds: tuple[int, int], total_seeds: int
) -> None:
    """Write :data:`SHARD_INFO_FILE` and :data:`SHARD_REPORT_FILE` into ``folder`` (atomically, redacted)."""
    from ..utils.folders import atomic_write
    from ..utils.secrecy import redact

    info = {
        "shard_index": config.shard_index,
        "num_shards": config.num_shards,
        "seeds": list(seeds),
        "total_seeds": total_seeds,
        "identity": shard_identity(config),
        "backend": config.backend_kind,
    }
    os.makedirs(folder, exist_ok=True)
    refuse_links(os.path.join(folder, SHARD_INFO_FILE), os.path.join(folder, SHARD_REPORT_FILE), what="shard file")
    atomic_write(os.path.join(folder, SHARD_INFO_FILE), redact(json.dumps(info, indent=2, sort_keys=True)))
    atomic_write(os.path.join(folder, SHARD_REPORT_FILE), redact(report.to_json()))


def read_shard_files(cache_path: str) -> tuple[dict[str, Any], SynthesisReport] | None:
    """The shard info and report written next to ``cache_path``, or ``None`` for a cache without them."""
    folder = os.path.dirname(os.path.abspath(cache_path))
    info_path, report_path = os.path.join(folder, SHARD_INFO_FILE), os.path.join(folder, SHARD_REPORT_FILE)
    if not (os.path.isfile(info_path) and os.path.isfile(report_path)):
        return None
    with open(info_path, encoding="utf-8") as fh:
        info = json.load(fh)
    with open(report_path, encoding="utf-8") as fh:
        report = SynthesisReport.from_dict(json.load(fh))
    return info, report


def export_cache(cache_path: str, target: str) -> int:
    """Copy the generation cache ``cache_path`` into the self-contained SQLite file ``target`` with
    SQLite's online backup (consistent even while a writer is open, WAL included); return its rows."""
    os.makedirs(os.path.dirname(os.path.abspath(target)) or ".", exist_ok=True)
    tmp = target + ".partial"
    # SQLite opens through links: the published copy and its temporary file must be real files
    refuse_links(target, tmp, tmp + "-journal", what="shard cache file")
    src = sqlite3.connect(cache_path)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            rows = dst.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(tmp, target)
    return rows


class ShardMismatchError(ValueError):
    """Shards that do not belong to one dataset (different settings, shard counts or duplicates)."""


def check_shards(config: SynthesisConfig, shard_caches: Sequence[str]) -> tuple[list[tuple[dict[str, Any], SynthesisReport]], list[int]]:
    """Check the shards' settings against ``config``; return their (info, report) and missing indices.

    Raises :class:`ShardMismatchError` naming the shard and the differing settings when a shard was
    made with other semantic settings, when shards disagree on ``num_shards``, or when one index
    appears twice. Caches without shard files (made before they existed) are merged unchecked.
    """
    expected = shard_identity(config)
    found: list[tuple[dict[str, Any], SynthesisReport]] = []
    seen: dict[int, str] = {}
    counts: set[int] = set()
    shards_bound = False
    for path in shard_caches:
        files = read_shard_files(path)
        if files is None:
            logger.warning("%s has no %s next to it: merged without checking its settings", path, SHARD_INFO_FILE)
            continue
        info, report = files
        if config.max_new_tokens is None and "max_new_tokens" in info["identity"] and not shards_bound:
            # unset in the merge: the bound the shards resolved (4096 with their endpoint) is the one to match
            expected["max_new_tokens"] = info["identity"]["max_new_tokens"]
            shards_bound = True
        differ = sorted(k for k in set(expected) | set(info["identity"])
                        if expected.get(k) != info["identity"].get(k))
        if differ:
            detail = ", ".join(f"{k}: shard {info['identity'].get(k)!r} vs merge {expected.get(k)!r}" for k in differ)
            raise ShardMismatchError(f"shard {path} was synthesized with other settings ({detail})")
        index = int(info["shard_index"])
        if index in seen:
            raise ShardMismatchError(f"shard {index} given twice: {seen[index]} and {path}")
        seen[index] = path
        counts.add(int(info["num_shards"]))
        found.append((info, report))
    if len(counts) > 1:
        raise ShardMismatchError(f"shards were made with different --num-shards: {sorted(counts)}")
    missing = sorted(set(range(counts.pop())) - set(seen)) if counts else []
    return found, missing


class CacheOnlyBackend(GenerationBackend):
    """A backend that generates nothing: every request is a recorded failure.

    The merge step uses it so a context missing from every shard cache shows up as a failure in the
    report instead of being generated behind the user's back.
    """

    kind = "cache"

    def __init__(self, model_id: str, *, generated_by_endpoint: bool = False) -> None:
        self._model_id = model_id
        #: The shards' contexts came from an endpoint: the merge loads no embedded tokenizer either.
        self.generated_by_endpoint = generated_by_endpoint

    async def model_id(self) -> str:
        return self._model_id

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(key=request.key, error="missing_from_shard_caches")


def _read_only_uri(path: str) -> str:
    """SQLite URI that reads a shard cache without writing anything next to it: ``immutable=1`` for a
    self-contained file (no ``-wal``: published, or closed and checkpointed), else ``mode=ro`` (reads
    the generations still in the ``-wal`` of a cache that was not closed)."""
    from pathlib import Path

    uri = Path(path).absolute().as_uri()
    return uri + ("?mode=ro" if os.path.exists(path + "-wal") else "?immutable=1")


def merge_caches(shard_caches: Sequence[str], target: str) -> tuple[int, str]:
    """Copy every row of the shard caches into ``target``; return ``(rows, model_id)``.

    The shard files are only read (attached read-only): a published shard on a shared filesystem is
    never switched to WAL mode nor written to, and may lie on read-only storage.
    """
    from pathlib import Path

    refuse_links(target, target + "-wal", target + "-shm", what="merged cache file")
    merged = GenerationCache(target)
    merged.close()
    models: set[str] = set()
    conn = sqlite3.connect(Path(target).absolute().as_uri(), uri=True)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA main.table_info(generations)")]
        for i, path in enumerate(shard_caches):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard cache {path!r} does not exist")
            conn.execute(f"ATTACH DATABASE ? AS s{i}", (_read_only_uri(path),))
            try:
                # an older shard cache may lack a column (e.g. finish_reason): copy the columns it has
                have = {row[1] for row in conn.execute(f"PRAGMA s{i}.table_info(generations)")}
                if not have:
                    raise sqlite3.DatabaseError("no generations table")
                names = ", ".join(c for c in columns if c in have)
                conn.execute(f"INSERT OR IGNORE INTO generations ({names}) SELECT {names} FROM s{i}.generations")
                models.update(m for (m,) in conn.execute(f"SELECT DISTINCT model FROM s{i}.generations"))
            except sqlite3.DatabaseError as exc:
                from ..synthesis.cache import CacheCorruptedError

                raise CacheCorruptedError(
                    f"shard cache {path} cannot be read ({exc}): publish the shard again (re-run it; its "
                    f"node-local cache is reused) or rebuild it with `python -m hf_context_synthesis.synthesis.cache "
                    f"--rebuild {path}`"
                ) from None
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

    ``config`` must carry the same semantic settings the shards used (checked against each shard's
    :data:`SHARD_INFO_FILE`); its shard fields are ignored. The returned report sums the shards'
    generation counts (requests, attempts, retries, tokens in/out; wall time is the slowest shard's,
    as shards run side by side), keeps each failed seed's reason from its shard, and lists in
    ``missing_shards`` the shard indices that were not given: their seeds fail as
    ``missing_from_shard_caches``.
    """
    import dataclasses

    from ..synthesis.output import synthesize_to_directory
    from ..utils.folders import atomic_write
    from ..utils.secrecy import redact

    shards, missing = check_shards(config, shard_caches)
    bound = next((info["identity"].get("max_new_tokens") for info, _ in shards), None)
    if config.max_new_tokens is None and bound is not None:
        # unset in the merge: the shards' resolved bound is part of their generations' keys
        config = dataclasses.replace(config, max_new_tokens=int(bound))
    if missing:
        logger.error("Shards missing from the merge: %s (their seeds fail as missing_from_shard_caches)",
                     ", ".join(map(str, missing)))
    from ..synthesis.output import check_output_folder

    check_output_folder(output_dir, kwargs.get("split", "train"))  # links / foreign shards: refused before any write
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, "generations.sqlite")
    rows, model_id = merge_caches(shard_caches, target)
    logger.info("Merged %d generations from %d shard caches", rows, len(shard_caches))
    whole = dataclasses.replace(config, shard_index=0, num_shards=1)
    cache = GenerationCache(target)
    try:
        report = synthesize_to_directory(whole, output_dir, backend=CacheOnlyBackend(
            model_id, generated_by_endpoint=any(info.get("backend") == "tgi" for info, _ in shards)), cache=cache, **kwargs)
    finally:
        cache.close()
    if shards:
        _fold_shard_reports(report, [r for _, r in shards])
    report.missing_shards = missing
    from ..synthesis.output import REPORT_FILE

    if os.path.isfile(os.path.join(output_dir, REPORT_FILE)):
        atomic_write(os.path.join(output_dir, REPORT_FILE), redact(report.to_json()))
    return report


def _fold_shard_reports(merged: SynthesisReport, shard_reports: Sequence[SynthesisReport]) -> None:
    """Put the shards' generation-phase counts into the merge's report (the merge itself only read a cache)."""
    from ..synthesis.report import merge_reasons

    for name in _SUMMED:
        setattr(merged, name, sum(getattr(r, name) for r in shard_reports))
    merged.wall_time_s = max((r.wall_time_s for r in shard_reports), default=merged.wall_time_s)
    merged.filter_reasons = merge_reasons(*(r.filter_reasons for r in shard_reports))
    merged.filter_examples = {}
    for r in shard_reports:  # shards in order: the first shard's excerpt of each reason
        for reason, text in r.filter_examples.items():
            merged.filter_examples.setdefault(reason, text)
    # a seed that failed in its shard (e.g. a server error) keeps that reason, not "missing from shard caches"
    shard_failures: dict[str, str] = {}
    for r in shard_reports:
        shard_failures.update(r.failed_seeds)
    for seed_id, reason in list(merged.failed_seeds.items()):
        if reason == "missing_from_shard_caches" and seed_id in shard_failures:
            merged.failed_seeds[seed_id] = shard_failures[seed_id]
    from collections import Counter

    from ..backends.errors import failure_key

    # every failed seed has its reason in failed_seeds: group them afresh, shard reasons included
    merged.failure_reasons = dict(Counter(failure_key(reason) for reason in merged.failed_seeds.values()))
