"""synthesize_on_ray on a real local Ray cluster: a shard's worker killed mid-run is retried and the
merged dataset equals a one-process run row for row; a shard that stays dead is reported by name."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import datasets
import pytest

ray = pytest.importorskip("ray")

from hf_context_synthesis import SynthesisConfig  # noqa: E402
from hf_context_synthesis.output import synthesize_to_directory  # noqa: E402
from hf_context_synthesis.scale import shard_concurrency, synthesize_on_ray  # noqa: E402
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), configure_logging=False)
    yield
    ray.shutdown()


def read(folder) -> list[dict]:
    return datasets.load_dataset("parquet", data_dir=os.path.join(folder, "data"), split="train",
                                 cache_dir=os.path.join(folder, ".hf")).to_list()


def kill_first_attempt(shard_dir: Path, srv: FakeTGIServer, after_requests: int, killed: list[int]) -> threading.Thread:
    """SIGKILL the worker process of the shard's first attempt once the server has seen some requests."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            markers = sorted((shard_dir / "attempts").glob("*.json")) if (shard_dir / "attempts").is_dir() else []
            if markers and srv.stats().generation_requests >= after_requests:
                pid = json.loads(markers[0].read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_budget_is_shared_by_running_shards():
    assert shard_concurrency(64, 8) == 8
    assert shard_concurrency(64, 8, max_parallel_shards=2) == 32
    assert shard_concurrency(4, 8) == 1


def test_killed_worker_is_retried_and_merge_equals_one_process(ray_cluster, small_seed_dir, tmp_path):
    with FakeTGIServer(latency=0.4, capacity=16) as srv:
        config = SynthesisConfig(seed=str(small_seed_dir), endpoint=srv.url, random_seed=11, max_concurrency=6)
        single = synthesize_to_directory(config, str(tmp_path / "single"),
                                         datasets_cache_dir=str(tmp_path / "single-cache"))
        assert single.generated == 36 and srv.stats().generation_requests == 36
        srv.reset_stats()  # count the Ray run alone
        killed: list[int] = []
        watcher = kill_first_attempt(tmp_path / "out" / "shards" / "shard-00001", srv, 4, killed)
        result = synthesize_on_ray(config, num_shards=3, output=str(tmp_path / "out"),
                                   local_dir=str(tmp_path / "node-local"), max_retries=2)
        watcher.join(timeout=5)
        made = srv.stats().generation_requests
        max_in_flight = srv.stats().max_in_flight
    assert killed, "the watcher never killed shard 1's worker"
    assert result.complete and result.failed_shards == {}, result.failed_shards
    assert result.attempts == {0: 1, 1: 2, 2: 1}, result.attempts
    # the retry resumed from the node-local cache: at most the requests in flight were made twice
    assert 36 <= made <= 36 + 2, made
    # the budget (max_concurrency=6) is shared: 2 per shard, 2 shards at once on the 2 CPUs (one shard
    # alone with the whole budget would reach 6)
    assert max_in_flight <= 4, max_in_flight
    assert read(result.dataset_dir) == read(tmp_path / "single")
    report = json.loads((Path(result.dataset_dir) / "synthesis_report.json").read_text())
    assert report["synthesized"] == 36 and report["missing_shards"] == []
    assert report["tokens_out"] >= single.tokens_out and report["generated"] >= 36


def test_a_shard_that_stays_dead_is_named_and_the_rest_merged(ray_cluster, small_seed_dir, tmp_path):
    with FakeTGIServer(latency=0.4, capacity=16) as srv:
        config = SynthesisConfig(seed=str(small_seed_dir), endpoint=srv.url, max_concurrency=6)
        killed: list[int] = []
        watcher = kill_first_attempt(tmp_path / "out" / "shards" / "shard-00002", srv, 4, killed)
        result = synthesize_on_ray(config, num_shards=3, output=str(tmp_path / "out"),
                                   local_dir=str(tmp_path / "node-local"), max_retries=0)
        watcher.join(timeout=5)
    assert killed
    assert list(result.failed_shards) == [2] and not result.complete
    assert result.report.missing_shards == [2]
    assert result.report.failure_reasons == {"missing_from_shard_caches": 12}
    assert len(read(result.dataset_dir)) == 24


def test_a_cancelled_shard_is_named_and_the_rest_merged(ray_cluster, small_seed_dir, tmp_path, monkeypatch):
    """ray.cancel of one shard's task (here: the one still queued) does not stop the run: the shard is
    named as failed and missing, the other shards are merged."""
    real_wait, cancelled = ray.wait, []

    def wait_then_cancel(refs, **kwargs):
        if not cancelled:
            ray.cancel(refs[-1])  # shard 2: queued behind shards 0 and 1 on the 2 CPUs
            cancelled.append(refs[-1])
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(ray, "wait", wait_then_cancel)
    with FakeTGIServer(latency=0.1, capacity=16) as srv:
        config = SynthesisConfig(seed=str(small_seed_dir), endpoint=srv.url, max_concurrency=6)
        result = synthesize_on_ray(config, num_shards=3, output=str(tmp_path / "out"),
                                   local_dir=str(tmp_path / "node-local"), max_retries=2)
    assert cancelled and list(result.failed_shards) == [2] and "Cancelled" in result.failed_shards[2]
    assert result.report.missing_shards == [2] and not result.complete
    assert result.report.failure_reasons == {"missing_from_shard_caches": 12}
    assert len(read(result.dataset_dir)) == 24
