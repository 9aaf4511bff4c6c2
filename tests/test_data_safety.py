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
from hf_context_synthesis.output import LOCK_FILE, REPORT_FILE, OutputBusyError, synthesize_to_directory
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
    from hf_context_synthesis.output import output_lock

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
