"""Nothing finished is lost: reruns, concurrent writers, disk-full, corrupted caches, two processes."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.synthesis.output import LOCK_FILE, REPORT_FILE, OutputBusyError, synthesize_to_directory
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def _config(seeds: Path, root: Path, url: str, **kw) -> SynthesisConfig:
    kw.setdefault("num_distractors", 2)
    return SynthesisConfig(seed=str(seeds), endpoint=url, progress=False, max_generation_attempts=1,
                           generation_cache_dir=str(root / "gen"), **kw)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def first_run(small_seed_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        report = synthesize_to_directory(_config(small_seed_dir, tmp_path, srv.url), out,
                                         datasets_cache_dir=str(tmp_path / "ds"))
    assert report.examples == 36
    return out


def test_failed_rerun_keeps_the_previous_dataset(first_run: Path, small_seed_dir: Path, tmp_path: Path):
    before = _files(first_run)
    # a rerun with new settings (nothing cached) against a server that refuses every request
    with FakeTGIServer(latency=0.0, faults={"http_401": 1.0}) as srv:
        with pytest.raises(Exception, match="No context could be synthesized"):
            synthesize_to_directory(_config(small_seed_dir, tmp_path, srv.url, random_seed=7), first_run,
                                    datasets_cache_dir=str(tmp_path / "ds"))
    assert _files(first_run) == before  # every shard, the report and the settings, byte for byte


def test_a_second_writer_is_refused_and_nothing_is_requested_twice(small_seed_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    errors: list[BaseException] = []
    with FakeTGIServer(latency=0.05, capacity=2) as srv:
        config = _config(small_seed_dir, tmp_path, srv.url, max_concurrency=2)

        def first() -> None:
            try:
                synthesize_to_directory(config, out, datasets_cache_dir=str(tmp_path / "ds"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=first)
        thread.start()
        deadline = time.monotonic() + 30
        while not (out / LOCK_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(OutputBusyError, match="another synthesize run .* is writing"):
            synthesize_to_directory(config, out, datasets_cache_dir=str(tmp_path / "ds"))
        thread.join()
        requests = srv.stats().generation_requests
    assert not errors
    assert requests == 36  # one request per seed
    assert not (out / LOCK_FILE).exists()
    assert json.loads((out / REPORT_FILE).read_text())["examples"] == 36


def test_cli_second_writer_gets_one_error_line(first_run: Path, small_seed_dir: Path, tmp_path: Path, capsys):
    from hf_context_synthesis.cli import main
    from hf_context_synthesis.synthesis.output import output_lock

    before = _files(first_run)
    with FakeTGIServer(latency=0.0) as srv, output_lock(first_run):
        code = main(["synthesize", "--seed", str(small_seed_dir), "--endpoint", srv.url, "--output", str(first_run),
                     "--generation-cache-dir", str(tmp_path / "gen")])
        requests = srv.stats().generation_requests
    assert requests == 0
    assert {k: v for k, v in _files(first_run).items()} == before
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error:") and "is writing" in err and "Traceback" not in err


def test_disk_full_leaves_no_temporary_file_and_the_old_data(first_run: Path, small_seed_dir: Path,
                                                              tmp_path: Path, monkeypatch):
    import pyarrow.parquet as pq

    before = _files(first_run)
    real = pq.ParquetWriter.write_table
    calls = {"n": 0}

    def full_after_one(self, table, *a, **kw):  # the disk fills up after the first batch
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_after_one)
    with FakeTGIServer(latency=0.0, capacity=8) as srv:
        with pytest.raises(OSError, match="no space left on the device while writing the dataset") as err:
            synthesize_to_directory(_config(small_seed_dir, tmp_path, srv.url, random_seed=3), first_run,
                                    rows_per_batch=4, datasets_cache_dir=str(tmp_path / "ds"))
    assert err.value.errno == errno.ENOSPC
    assert _files(first_run) == before  # no .tmp, no staging folder, the previous shards untouched


# ------------------------------------------------------------------------------------------- the cache
def _filled_cache(path: Path, n: int = 200):
    from hf_context_synthesis.synthesis.cache import GenerationCache

    with GenerationCache(path) as cache:
        for i in range(n):
            cache.put(f"k{i}", f"Context: generation {i} " + "word " * 800, model="m")


def test_truncated_cache_is_detected_named_and_rebuilt_keeping_what_can_be_read(tmp_path: Path):
    from hf_context_synthesis.cli import main
    from hf_context_synthesis.synthesis.cache import CacheCorruptedError, GenerationCache

    path = tmp_path / "gen" / "generations.sqlite"
    _filled_cache(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(CacheCorruptedError, match="is damaged") as err:
        GenerationCache(path)
    assert str(path) in str(err.value) and "--rebuild" in str(err.value)
    assert main(["cache", "--rebuild", str(path)]) == 0
    with GenerationCache(path) as cache:
        kept = len(cache)
        assert 50 < kept < 200  # the first half of the rows survived the truncation
        assert cache.get("k0").startswith("Context: generation 0 ")
    assert list(path.parent.glob("generations.sqlite.corrupt-*"))  # the damaged file is kept aside


def test_load_dataset_on_a_damaged_cache_says_so_before_any_request(small_seed_dir: Path, caches, tmp_path: Path):
    import datasets

    from hf_context_synthesis.synthesis.cache import CacheCorruptedError

    path = Path(caches["generation_cache_dir"]) / "generations.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"SQLite format 3\x00" + b"\x10\x00" + b"garbage" * 500)
    with FakeTGIServer(latency=0.0) as srv:
        with pytest.raises(CacheCorruptedError, match="generations.sqlite is damaged"):
            datasets.load_dataset("context_synthesis", seed=str(small_seed_dir), endpoint=srv.url, split="train",
                                  **caches)
        assert srv.stats().generation_requests == 0


def test_disk_full_in_the_cache_is_one_clear_error(tmp_path: Path, monkeypatch):
    import sqlite3

    from hf_context_synthesis.synthesis.cache import CacheWriteError, GenerationCache

    class FullConnection:  # sqlite3.Connection cannot be patched: wrap it
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._conn.execute(sql, *args)

        def close(self):
            self._conn.close()

    cache = GenerationCache(tmp_path / "g.sqlite")
    cache.put("kept", "text", model="m")
    cache._conn = FullConnection(cache._conn)
    with pytest.raises(CacheWriteError, match="no space left on the device for the generation cache") as err:
        cache.put("k", "text", model="m")
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    cache.close()
    assert GenerationCache(tmp_path / "g.sqlite").get("kept") == "text"


_TWO_RUNS = """
import sys, datasets, hf_context_synthesis
url, seeds, root, k = sys.argv[1:5]
ds = datasets.load_dataset("context_synthesis", seed=seeds, endpoint=url, split="train", cache_dir=root + "/ds-" + k,
                           generation_cache_dir=root + "/gen", progress=False, num_distractors=int(k))
print("rows", len(ds))
"""


def test_two_processes_on_one_cache_make_each_request_once(small_seed_dir: Path, tmp_path: Path):
    """Two load_dataset runs (different compositions, so datasets' own lock does not serialize them)
    share one generation cache: both finish, each seed is requested once, no "database is locked"."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_TWO_RUNS)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "home")}
    with FakeTGIServer(latency=0.25, capacity=4) as srv:  # ~2 s of generation each: the runs overlap
        procs = [subprocess.Popen([sys.executable, str(script), srv.url, str(small_seed_dir), str(tmp_path), str(k)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for k in (2, 3)]
        outs = [p.communicate(timeout=240) for p in procs]
        requests = srv.stats().generation_requests
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
        assert "rows 36" in out and "locked" not in err
    assert requests == 36


# --------------------------------------------------------------------------------------------- training
def test_every_row_longer_than_max_length_is_a_clear_error_not_stop_iteration(seeds_dir, tok):
    import datasets

    from hf_context_synthesis import prepare_packed_dataset
    from hf_context_synthesis.testing.rows import composed_rows

    ds = datasets.Dataset.from_list(composed_rows(seeds_dir, per_task=3))
    for truncation in (False, True):  # max_length below even the instruction + answer: nothing can fit
        with pytest.raises(ValueError, match=r"all 6 examples are longer than max_length=8 tokens .*Raise max_length"):
            prepare_packed_dataset(ds, tok, max_length=8, truncation=truncation)


def test_claims_of_an_interrupted_run_do_not_block_the_next_one(tmp_path: Path):
    """A run stopped mid-way (exception, Ctrl-C in a notebook) leaves claims; a rerun in the same process
    or after the process died takes them over instead of waiting for a result that never comes."""
    import subprocess
    import sys

    from hf_context_synthesis.synthesis.cache import GenerationCache

    path = tmp_path / "g.sqlite"
    interrupted = GenerationCache(path)
    assert interrupted.claim("k1")  # never put, never released
    rerun = GenerationCache(path)
    assert not rerun.claimed_elsewhere("k1") and rerun.claim("k1")
    code = f"from hf_context_synthesis.synthesis.cache import GenerationCache; GenerationCache({str(path)!r}).claim('k2')"
    subprocess.run([sys.executable, "-c", code], check=True)  # its process is gone, its claim stays
    assert rerun.claim("k2")
