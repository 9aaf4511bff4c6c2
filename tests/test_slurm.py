"""The Slurm array recipe (examples/slurm_array.sh) run as written: array tasks looped locally, one
shard re-run alone, then the merge; the result equals a one-process run row for row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets

from hf_context_synthesis.cli import main
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "slurm_array.sh"


def read(folder):
    return datasets.load_dataset("parquet", data_dir=os.path.join(folder, "data"), split="train",
                                 cache_dir=os.path.join(folder, ".hf")).to_list()


def array_task(task_id: int, array_size: int, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """What Slurm does for one array task: the script with SLURM_ARRAY_* set."""
    env = {**env, "SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_TASK_COUNT": str(array_size)}
    return subprocess.run(["bash", str(SCRIPT)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_slurm_array_then_rerun_one_shard_then_merge(small_seed_dir, tmp_path):
    bin_dir = os.path.dirname(sys.executable)  # the venv's context-synthesis
    with FakeTGIServer(latency=0.2, capacity=16) as srv:  # latency: requests overlap, so in-flight counts show
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NUM_SHARDS": "3",
               "SEEDS": str(small_seed_dir), "OUT": str(tmp_path / "out"), "TGI_ENDPOINT": srv.url,
               "LOCAL_DIR": str(tmp_path / "node-local"), "HF_HOME": str(tmp_path / "hf"),
               "SYNTHESIS_ARGS": "--random-seed 7", "ENDPOINT_BUDGET": "6", "PARALLEL_SHARDS": "3"}
        for task in range(3):  # sbatch --array=0-2
            proc = array_task(task, 3, env, tmp_path)
            assert proc.returncode == 0, proc.stderr[-2000:]
        assert srv.stats().generation_requests == 36
        assert srv.stats().max_in_flight <= 2  # each shard's share of the endpoint budget: 6 / 3
        # shard 1's node lost its local disk; re-run it alone: sbatch --array=1 (an array of one task)
        import shutil

        shutil.rmtree(tmp_path / "node-local" / "shard-1")
        proc = array_task(1, 1, env, tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert srv.stats().generation_requests == 48  # shard 1's 12 seeds again, nothing else
        assert main(["synthesize", "--seed", str(small_seed_dir), "--random-seed", "7", "--endpoint", srv.url,
                     "--output", str(tmp_path / "single"), "--generation-cache-dir", str(tmp_path / "single-gens")]) == 0
    for i in range(3):  # published: self-contained cache + shard files, no WAL, no partial upload
        published = sorted(p.name for p in (tmp_path / "out" / f"shard-{i}").iterdir())
        assert published == ["generations.sqlite", "shard.json", "shard_report.json"]
        header = (tmp_path / "out" / f"shard-{i}" / "generations.sqlite").read_bytes()[:20]
        assert header[18:20] == b"\x01\x01"  # exported in rollback-journal mode: no WAL on the shared folder
        assert json.loads((tmp_path / "out" / f"shard-{i}" / "shard.json").read_text())["num_shards"] == 3
    caches = [str(tmp_path / "out" / f"shard-{i}" / "generations.sqlite") for i in range(3)]
    assert main(["merge", "--seed", str(small_seed_dir), "--random-seed", "7", "--shard-cache", *caches,
                 "--output", str(tmp_path / "merged")]) == 0
    assert read(tmp_path / "merged") == read(tmp_path / "single")


def test_slurm_script_needs_the_shard_count(small_seed_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUM_SHARDS"}
    proc = array_task(3, 1, env, tmp_path)
    assert proc.returncode != 0 and "set NUM_SHARDS" in proc.stderr
