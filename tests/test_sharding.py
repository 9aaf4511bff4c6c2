"""Scale-out: shards generate disjoint parts; the merge equals a single-machine run."""

from __future__ import annotations

import os

import datasets

from hf_context_synthesis.cli import main
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def read(folder):
    return datasets.load_dataset("parquet", data_dir=os.path.join(folder, "data"), split="train",
                                 cache_dir=os.path.join(folder, ".hf")).to_list()


def test_shards_then_merge_equal_single_machine(small_seed_dir, tmp_path):
    common = ["--seed", str(small_seed_dir), "--num-distractors", "4", "--random-seed", "3"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        assert main(["synthesize", *common, "--endpoint", srv.url, "--output", str(tmp_path / "single"),
                     "--generation-cache-dir", str(tmp_path / "single-gens")]) == 0
        requests_single = srv.stats().generation_requests
        shard_caches = []
        for i in range(3):
            out = tmp_path / f"shard{i}"
            assert main(["synthesize", *common, "--endpoint", srv.url, "--num-shards", "3", "--shard-index", str(i),
                         "--output", str(out)]) == 0
            shard_caches.append(str(out / "generations.sqlite"))
        # each shard generated its own third, nothing twice
        assert srv.stats().generation_requests == 2 * requests_single == 72
        assert all(n == 2 for n in srv.stats().per_prompt.values())
    # the merge makes no request at all (the server is gone) and composes the same dataset
    assert main(["merge", *common, "--endpoint", "http://127.0.0.1:9", "--shard-cache", *shard_caches,
                 "--output", str(tmp_path / "merged")]) == 0
    assert read(tmp_path / "merged") == read(tmp_path / "single")


def test_merge_reports_missing_shards(small_seed_dir, tmp_path):
    common = ["--seed", str(small_seed_dir), "--num-shards", "2"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "0", "--output", str(tmp_path / "s0")]) == 0
    # shard 1 never ran: its seeds are failures, named as such
    assert main(["merge", "--seed", str(small_seed_dir), "--endpoint", "http://127.0.0.1:9",
                 "--shard-cache", str(tmp_path / "s0" / "generations.sqlite"), "--output", str(tmp_path / "m")]) == 1
    import json

    report = json.loads((tmp_path / "m" / "synthesis_report.json").read_text())
    assert report["failure_reasons"] == {"missing_from_shard_caches": 18} and report["examples"] == 18
