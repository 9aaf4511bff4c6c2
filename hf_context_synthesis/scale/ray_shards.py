"""Synthesis on a Ray cluster: one task per shard, retried on worker loss, published to shared storage,
then one merge that equals a single-machine run row for row.

Data flow per shard task: generate into a **node-local** generation cache (SQLite WAL is not safe on a
shared network filesystem), close it (checkpointed: one self-contained file), export it with SQLite's
backup API and upload it with ``shard.json`` and ``shard_report.json`` to
``<output>/shards/shard-XXXXX/`` through fsspec (a local path, NFS, ``s3://``, ``gs://``...). A retried
task lands on the same node-local folder when Ray reschedules it on the same node and resumes from its
cache; elsewhere it starts that shard again. The driver then merges every published shard into
``<output>/dataset/`` (parquet shards, report, settings) and names the shards that failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..synthesis.config import SynthesisConfig
from ..synthesis.report import SynthesisReport

logger = logging.getLogger(__name__)

#: Files a finished shard publishes (``shard.json`` last: its presence marks a complete shard).
PUBLISHED_FILES = ("generations.sqlite", "shard_report.json", "shard.json")


@dataclass
class RaySynthesisResult:
    """What :func:`synthesize_on_ray` produced.

    Args:
        report: The merged synthesis report (shards' generation counts summed; ``missing_shards``).
        dataset_dir: ``<output>/dataset``: the merged dataset folder (load it with
            ``load_dataset("parquet", data_dir=<dataset_dir>/data)`` or push it with ``push-dataset``).
        shard_dirs: ``shard index -> <output>/shards/shard-XXXXX`` of every published shard.
        failed_shards: ``shard index -> reason`` of shards that failed after their retries (or were
            cancelled); their seeds fail in the merge as ``missing_from_shard_caches``.
        attempts: ``shard index -> attempts started`` (more than 1 when Ray retried the shard).
    """

    report: SynthesisReport
    dataset_dir: str
    shard_dirs: dict[int, str] = field(default_factory=dict)
    failed_shards: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every shard was published and merged."""
        return not self.failed_shards and not self.report.missing_shards


def shard_concurrency(endpoint_budget: int, num_shards: int, max_parallel_shards: int | None = None) -> int:
    """Requests in flight per endpoint *per shard* so that all shards running at once together stay
    within ``endpoint_budget`` per endpoint (at least 1)."""
    running = min(num_shards, max_parallel_shards or num_shards)
    return max(1, endpoint_budget // max(1, running))


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _run_shard(
    config: SynthesisConfig, index: int, num_shards: int, output: str, run_id: str,
    local_dir: str | None, storage_options: dict[str, Any],
) -> dict[str, Any]:
    """One Ray task: generate shard ``index`` locally, then publish it under ``<output>/shards/``."""
    import fsspec

    from .sharding import export_cache, synthesize_shard

    fs, root = fsspec.core.url_to_fs(output, **storage_options)
    shard_dir = _join(root, "shards", f"shard-{index:05d}")
    local_fs = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol))
    if local_fs:  # a shard is published into the output's own folders, never through a link
        from ..utils.paths import refuse_links

        refuse_links(_join(root, "shards"), shard_dir, _join(shard_dir, "attempts"),
                     *(_join(shard_dir, n) for name in PUBLISHED_FILES for n in (name, f".{name}.partial")),
                     what="shard path")
    host, pid = socket.gethostname(), os.getpid()
    # one marker per attempt: which node and process ran it (a retried shard has several)
    fs.makedirs(_join(shard_dir, "attempts"), exist_ok=True)
    with fs.open(_join(shard_dir, "attempts", f"{host}-{pid}-{uuid.uuid4().hex[:6]}.json"), "w") as fh:
        fh.write(json.dumps({"host": host, "pid": pid, "started": time.time()}))
    local = os.path.join(local_dir or tempfile.gettempdir(), f"hf-context-synthesis-{run_id}", f"shard-{index:05d}")
    cfg = dataclasses.replace(config, shard_index=index, num_shards=num_shards, generation_cache_dir=local)
    report = synthesize_shard(cfg)
    export = os.path.join(local, "publish", "generations.sqlite")
    export_cache(os.path.join(local, "generations.sqlite"), export)
    for name in PUBLISHED_FILES:  # shard.json last: a merge never sees half a shard
        src = export if name == "generations.sqlite" else os.path.join(local, name)
        tmp = _join(shard_dir, f".{name}.partial")
        fs.put_file(src, tmp)
        fs.mv(tmp, _join(shard_dir, name))
    return report.to_dict()


def synthesize_on_ray(
    config: SynthesisConfig,
    *,
    num_shards: int,
    output: str,
    max_retries: int = 3,
    max_parallel_shards: int | None = None,
    endpoint_concurrency: int | None = None,
    local_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    split: str = "train",
) -> RaySynthesisResult:
    """Synthesize ``config`` as ``num_shards`` Ray tasks and merge them into ``<output>/dataset``.

    Args:
        config: The synthesis settings (its ``shard_index``/``num_shards``/``generation_cache_dir``
            are set per task).
        num_shards: Shards (tasks); the seeds are split into contiguous blocks as
            :func:`~hf_context_synthesis.scale.sharding.shard_bounds` does.
        output: A path or fsspec URI every node sees; shards publish to ``<output>/shards/`` and the
            merged dataset goes to ``<output>/dataset``.
        max_retries: Ray retries of a shard whose worker died or raised (the retry resumes from the
            node-local cache when it runs on the same node).
        max_parallel_shards: Shards running at once (default: all; Ray's CPUs bound it too).
        endpoint_concurrency: Requests in flight per endpoint for the **whole job**, shared by the
            shards running at once (default: ``config.max_concurrency``). Each shard gets
            :func:`shard_concurrency` of it, so 8 shards on the same endpoints do not put 8x the
            budget in flight.
        local_dir: Node-local folder for the shard caches (default: the system temp dir).
        storage_options: fsspec options for ``output`` (credentials of an object store, ...).
        ray_remote_args: Extra ``.options()`` of each task (``num_cpus``, ``resources``, ...).
        split: Split name of the merged parquet shards.

    Returns:
        A :class:`RaySynthesisResult`. A shard that still failed after its retries (or was cancelled
        with ``ray.cancel``) does not stop the merge: it is listed in ``failed_shards`` and in the
        report's ``missing_shards``.
    """
    import fsspec
    import ray

    from .sharding import merge_shards

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not ray.is_initialized():
        ray.init()
    storage_options = dict(storage_options or {})
    budget = endpoint_concurrency or config.max_concurrency
    per_shard = shard_concurrency(budget, num_shards, max_parallel_shards)
    base = dataclasses.replace(config, max_concurrency=per_shard)
    run_id = config.fingerprint()
    logger.info("Ray synthesis: %d shards, %d request(s) in flight per endpoint per shard (budget %d), output %s",
                num_shards, per_shard, budget, output)
    task = ray.remote(max_retries=max_retries, retry_exceptions=True)(_run_shard)
    if ray_remote_args:
        task = task.options(**ray_remote_args)

    pending: dict[Any, int] = {}
    failed: dict[int, str] = {}
    window = max_parallel_shards or num_shards
    next_index = 0
    while next_index < num_shards or pending:
        while next_index < num_shards and len(pending) < window:
            ref = task.remote(base, next_index, num_shards, output, run_id, local_dir, storage_options)
            pending[ref] = next_index
            next_index += 1
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            try:
                shard_report = SynthesisReport.from_dict(ray.get(ref))
                logger.info("shard %d done: %s", index, shard_report.summary(include_examples=False))
            except Exception as err:  # worker lost after retries, task error, ray.cancel
                detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
                failed[index] = type(err).__name__ + (f": {detail}" if detail else "")
                logger.error("shard %d failed: %s", index, failed[index])

    fs, root = fsspec.core.url_to_fs(output, **storage_options)
    shard_dirs: dict[int, str] = {}
    attempts: dict[int, int] = {}
    for index in range(num_shards):
        d = _join(root, "shards", f"shard-{index:05d}")
        attempts[index] = len(fs.glob(_join(d, "attempts", "*.json")))
        if index not in failed and fs.exists(_join(d, "shard.json")):
            shard_dirs[index] = d
    with tempfile.TemporaryDirectory(prefix="hf-context-synthesis-merge-") as tmp:
        caches = []
        for index, d in sorted(shard_dirs.items()):
            local = os.path.join(tmp, f"shard-{index:05d}")
            os.makedirs(local)
            for name in PUBLISHED_FILES:
                fs.get_file(_join(d, name), os.path.join(local, name))
            caches.append(os.path.join(local, "generations.sqlite"))
        if not caches:
            raise RuntimeError(f"no shard finished ({failed}); nothing to merge")
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
            dataset_dir = os.path.join(root, "dataset")
            report = merge_shards(config, caches, dataset_dir, split=split)
        else:
            merged = os.path.join(tmp, "dataset")
            report = merge_shards(config, caches, merged, split=split)
            dataset_dir = _join(root, "dataset")
            fs.put(merged, dataset_dir, recursive=True)
            dataset_dir = _join(output, "dataset")
    if report.missing_shards:
        logger.error("Merged without shard(s) %s: re-run them and merge again", report.missing_shards)
    return RaySynthesisResult(report=report, dataset_dir=dataset_dir, shard_dirs=shard_dirs,
                              failed_shards=failed, attempts=attempts)
