"""A run SIGKILLed halfway resumes: at most the in-flight requests are made again, same final dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import datasets

from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

SCRIPT = textwrap.dedent(
    """
    import sys, datasets, hf_context_synthesis
    seed, url, cache_dir, gen_dir = sys.argv[1:5]
    ds = datasets.load_dataset("context_synthesis", seed=seed, endpoint=url, max_seeds=15, max_concurrency=4,
                               cache_dir=cache_dir, generation_cache_dir=gen_dir, split="train")
    ds.to_json(cache_dir + "/out.jsonl")
    """
)


def run(args, env):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env)


def test_sigkill_then_resume(seeds_dir, tmp_path):
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    cache, gens = str(tmp_path / "cache"), str(tmp_path / "gens")
    with FakeTGIServer(latency=0.08, capacity=4) as srv:
        proc = run([str(seeds_dir), srv.url, cache, gens], env)
        deadline = time.time() + 120
        while srv.stats().completed < 50 and time.time() < deadline:
            time.sleep(0.02)
            assert proc.poll() is None, "synthesis finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = srv.stats()
        assert 50 <= before.completed < 120
        assert run([str(seeds_dir), srv.url, cache, gens], env).wait(timeout=180) == 0
        after = srv.stats()
        repeated = [k for k, n in after.per_prompt.items() if n > 1]
        assert len(after.per_prompt) == 120
        assert len(repeated) <= 4, f"{len(repeated)} prompts were requested again (max_concurrency=4)"
        # an uninterrupted run against the same server, with its own caches, gives the same dataset
        fresh = str(tmp_path / "fresh")
        assert run([str(seeds_dir), srv.url, fresh, str(tmp_path / "fresh-gens")], env).wait(timeout=180) == 0
    resumed = datasets.Dataset.from_json(cache + "/out.jsonl", cache_dir=str(tmp_path / "j1")).to_list()
    uninterrupted = datasets.Dataset.from_json(fresh + "/out.jsonl", cache_dir=str(tmp_path / "j2")).to_list()
    assert len(resumed) == 120 and resumed == uninterrupted
