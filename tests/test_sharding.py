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


# --------------------------------------------------------------------------- issue 13: nothing lost between nodes
import json
import shutil
import sqlite3

import pytest

from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.synthesis.cache import GenerationCache
from hf_context_synthesis.scale.sharding import synthesize_shard


def test_shard_cache_is_one_self_contained_file(small_seed_dir, tmp_path):
    """In a long-lived worker (another handle on the cache stays open) the shard's generations.sqlite
    alone, copied elsewhere, holds every generation: nothing is left only in the -wal file."""
    out = tmp_path / "shard"
    cfg = SynthesisConfig(seed=str(small_seed_dir), num_shards=2, shard_index=0, generation_cache_dir=str(out))
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        cfg.endpoint = srv.url
        keeper = GenerationCache(str(out / "generations.sqlite"))  # the worker keeps a handle, like a Ray actor
        try:
            report = synthesize_shard(cfg)
            copy = tmp_path / "copied.sqlite"
            shutil.copyfile(out / "generations.sqlite", copy)  # only the main file, as `cp`/upload would
        finally:
            keeper.close()
    assert report.generated == 18
    rows = sqlite3.connect(copy).execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert rows == 18
    info = json.loads((out / "shard.json").read_text())
    assert (info["shard_index"], info["num_shards"], info["seeds"]) == (0, 2, [0, 18])
    assert json.loads((out / "shard_report.json").read_text())["generated"] == 18


def _one_empty_output(srv):
    srv.set_fault("empty", count=1)  # one unusable output; with one attempt that seed fails


def test_a_failed_seed_does_not_stop_the_pipeline(small_seed_dir, tmp_path):
    """Exit 0 when the run completed with its failures accounted for (shard and merge alike);
    --fail-on-failures makes any failed seed exit 1."""
    common = ["--seed", str(small_seed_dir), "--num-shards", "2", "--max-generation-attempts", "1"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        _one_empty_output(srv)
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "0",
                     "--output", str(tmp_path / "s0")]) == 0
        assert json.loads((tmp_path / "s0" / "shard_report.json").read_text())["failed"] == 1
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "1",
                     "--output", str(tmp_path / "s1")]) == 0
        _one_empty_output(srv)
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "1", "--fail-on-failures",
                     "--generation-cache-dir", str(tmp_path / "other"), "--output", str(tmp_path / "s1b")]) == 1
    caches = [str(tmp_path / s / "generations.sqlite") for s in ("s0", "s1")]
    merge = ["merge", *common[:2], "--max-generation-attempts", "1", "--endpoint", "http://127.0.0.1:9",
             "--shard-cache", *caches]
    assert main([*merge, "--output", str(tmp_path / "m")]) == 0
    report = json.loads((tmp_path / "m" / "synthesis_report.json").read_text())
    assert report["failed"] == 1 and report["examples"] == 35 and report["missing_shards"] == []
    # the failed seed keeps the reason its shard gave, not "missing from shard caches"
    assert "missing_from_shard_caches" not in report["failure_reasons"]
    assert main([*merge, "--output", str(tmp_path / "m2"), "--fail-on-failures"]) == 1


def test_merged_report_sums_the_shards(small_seed_dir, tmp_path):
    common = ["--seed", str(small_seed_dir), "--random-seed", "5"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        assert main(["synthesize", *common, "--endpoint", srv.url, "--output", str(tmp_path / "single"),
                     "--generation-cache-dir", str(tmp_path / "single-gens")]) == 0
        caches = []
        for i in range(3):
            assert main(["synthesize", *common, "--endpoint", srv.url, "--num-shards", "3", "--shard-index", str(i),
                         "--output", str(tmp_path / f"s{i}")]) == 0
            caches.append(str(tmp_path / f"s{i}" / "generations.sqlite"))
    assert main(["merge", *common, "--endpoint", "http://127.0.0.1:9", "--shard-cache", *caches,
                 "--output", str(tmp_path / "m")]) == 0
    single = json.loads((tmp_path / "single" / "synthesis_report.json").read_text())
    merged = json.loads((tmp_path / "m" / "synthesis_report.json").read_text())
    assert single["generated"] == 36 and single["tokens_out"] > 0
    for key in ("seeds", "requested", "generated", "requests", "attempts", "tokens_in", "tokens_out",
                "synthesized", "failed", "examples"):
        assert merged[key] == single[key], key
    assert merged["cached"] == 0 and merged["wall_time_s"] > 0


def test_merge_refuses_shards_made_with_other_settings(small_seed_dir, tmp_path):
    common = ["--seed", str(small_seed_dir), "--num-shards", "2"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "0",
                     "--output", str(tmp_path / "s0")]) == 0
        assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", "1", "--context-words", "500",
                     "--output", str(tmp_path / "s1")]) == 0
    from hf_context_synthesis.scale.sharding import ShardMismatchError, merge_shards

    with pytest.raises(ShardMismatchError, match=r"s1.*context_words: shard 500 vs merge 2000"):
        merge_shards(SynthesisConfig(seed=str(small_seed_dir), endpoint="http://127.0.0.1:9"),
                     [str(tmp_path / s / "generations.sqlite") for s in ("s0", "s1")], str(tmp_path / "m"))
    assert not (tmp_path / "m" / "data").exists()


def test_merge_names_the_missing_shards(small_seed_dir, tmp_path, capsys):
    common = ["--seed", str(small_seed_dir), "--num-shards", "3"]
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        for i in (0, 2):
            assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", str(i),
                         "--output", str(tmp_path / f"s{i}")]) == 0
    assert main(["merge", "--seed", str(small_seed_dir), "--endpoint", "http://127.0.0.1:9", "--shard-cache",
                 *(str(tmp_path / f"s{i}" / "generations.sqlite") for i in (0, 2)), "--output", str(tmp_path / "m")]) == 1
    assert "shards missing from the merge: 1" in capsys.readouterr().err
    report = json.loads((tmp_path / "m" / "synthesis_report.json").read_text())
    assert report["missing_shards"] == [1] and report["failure_reasons"] == {"missing_from_shard_caches": 12}


def test_merge_only_reads_the_published_shards(small_seed_dir, tmp_path):
    """Published shards (export_cache: self-contained, rollback journal) are attached read-only: the
    merge never switches them to WAL nor writes beside them (a shared or read-only folder stays as it
    was); a shard cache made before the finish_reason column existed still merges."""
    import hashlib

    from hf_context_synthesis.scale.sharding import export_cache, merge_shards

    common = ["--seed", str(small_seed_dir), "--num-shards", "2"]
    published = []
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        for i in range(2):
            local = tmp_path / f"local{i}"
            assert main(["synthesize", *common, "--endpoint", srv.url, "--shard-index", str(i),
                         "--output", str(local)]) == 0
            pub = tmp_path / "shared" / f"shard-{i}"
            export_cache(str(local / "generations.sqlite"), str(pub / "generations.sqlite"))
            for name in ("shard.json", "shard_report.json"):
                shutil.copyfile(local / name, pub / name)
            published.append(pub / "generations.sqlite")
    with sqlite3.connect(published[1]) as conn:  # an older shard cache: no finish_reason column
        conn.execute("ALTER TABLE generations DROP COLUMN finish_reason")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in published}
    assert all(p.read_bytes()[18:20] == b"\x01\x01" for p in published)  # rollback journal, not WAL
    report = merge_shards(SynthesisConfig(seed=str(small_seed_dir), endpoint="http://127.0.0.1:9"),
                          [str(p) for p in published], str(tmp_path / "m"))
    assert report.synthesized == 36 and report.missing_shards == []
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in published} == before
    assert sorted(q.name for q in (tmp_path / "shared").rglob("*") if q.is_file()) == sorted(
        ["generations.sqlite", "shard.json", "shard_report.json"] * 2)
