"""Faults end to end: the real pipeline against the loopback TGI server with injected faults.

For every fault the run completes, the report accounts for every seed
(``synthesized + failed + rejected_rows == seeds``), no seed yields two rows, and every seed that got
no row is listed in ``report.failed_seeds`` with its reason.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import datasets
import pytest
from conftest import write_seed_subset

from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig
from hf_context_synthesis.synthesis.cache import GenerationCache
from hf_context_synthesis.synthesis.config import SynthesisConfig
from hf_context_synthesis.synthesis.pipeline import synthesize_rows
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

TASKS = {"hotpotqa": 6, "qasper": 6, "govreport": 4}
N_SEEDS = sum(TASKS.values())


@pytest.fixture
def fault_seeds(tmp_path: Path, seeds_dir: Path) -> Path:
    """16 real seeds: short answers (hotpotqa, qasper) and summaries (govreport)."""
    return write_seed_subset(seeds_dir, tmp_path / "seeds", TASKS)


def run_pipeline(srv: FakeTGIServer, seeds: Path, tmp_path: Path, *, timeout: float = 5.0, max_retries: int = 10,
                 concurrency: int = 4, cache_name: str = "gen", **overrides):
    """``synthesize_rows`` with the endpoint and a fast-retrying backend; returns ``(rows, report, config)``."""
    config = SynthesisConfig(seed=str(seeds), endpoint=srv.url, num_distractors=2, progress=False,
                             max_concurrency=concurrency, timeout=timeout, max_retries=max_retries, **overrides)
    backend = TGIBackend(TGIBackendConfig(endpoint=srv.url, max_concurrency=concurrency, timeout=timeout,
                                          max_retries=max_retries, backoff_base=0.02, backoff_max=0.2))
    cache = GenerationCache(str(tmp_path / f"{cache_name}.sqlite"))
    try:
        rows, report = synthesize_rows(config, backend=backend, cache=cache)
        rows = list(rows)
    finally:
        cache.close()
    return rows, report, config


def all_seed_ids(seeds: Path) -> set[str]:
    return {f"{task}/{i}" for task, n in TASKS.items() for i in range(n)}


def check_accounting(rows, report, seeds: Path) -> set[str]:
    """Every seed exactly once: a row or a recorded failure. Returns the failed seed ids."""
    ids = [row["seed_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a seed produced two rows"
    failed = set(report.failed_seeds)
    assert set(ids) | failed == all_seed_ids(seeds) and not set(ids) & failed
    assert report.seeds == N_SEEDS and report.accounted
    assert report.synthesized == len(rows) == report.examples
    assert report.failed == len(failed) == sum(report.failure_reasons.values())
    return failed


@pytest.mark.parametrize("kind", ["http_503", "http_429", "timeout", "drop", "garbage"])
def test_transport_faults_are_retried_until_every_seed_is_done(kind, fault_seeds, tmp_path):
    with FakeTGIServer(latency=0.01, capacity=4, faults={kind: 0.3}, retry_after=0.05, hang_seconds=1.0) as srv:
        rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path, timeout=0.3)
        stats = srv.stats()
    injected = stats.faults[kind]
    assert injected >= 2, f"the fault {kind} never fired"
    assert check_accounting(rows, report, fault_seeds) == set()
    assert report.retried == injected  # one extra attempt per injected fault, no more
    assert report.generated == N_SEEDS and report.filtered == 0


@pytest.mark.parametrize(
    "kind,reason", [("empty", "empty_generation"), ("refusal", "refusal"), ("no_prefix", "missing_context_marker")]
)
def test_bad_generations_are_retried_with_a_new_seed_then_recorded(kind, reason, fault_seeds, tmp_path):
    with FakeTGIServer(latency=0.0, capacity=4, faults={kind: 0.5}, seed=3) as srv:
        rows, report, config = run_pipeline(srv, fault_seeds, tmp_path, max_generation_attempts=3)
        stats = srv.stats()
    failed = check_accounting(rows, report, fault_seeds)
    assert report.filter_reasons == {reason: stats.faults[kind]} and report.filtered == stats.faults[kind]
    # units: every request after a seed's first is a regeneration, and `retried` counts them
    assert report.requests == stats.generation_requests and report.regenerated == report.requests - N_SEEDS > 0
    assert report.retried == report.transport_retries + report.regenerated and report.transport_retries == 0
    assert all(r == reason for r in report.failed_seeds.values())
    # the failed seeds are exactly those whose every attempt was bad: asked max_generation_attempts times
    exhausted = sum(1 for n in stats.per_prompt.values() if n == config.max_generation_attempts)
    assert report.failed == len(failed) and len(failed) <= exhausted
    assert report.generated == stats.generation_requests == N_SEEDS + stats.faults[kind]


def test_permanent_request_errors_are_recorded_and_retried_on_rerun(fault_seeds, tmp_path):
    with FakeTGIServer(latency=0.0, capacity=4, faults={"http_422": 2}) as srv:
        rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path)
        failed = check_accounting(rows, report, fault_seeds)
        assert len(failed) == 2 and all("422" in r for r in report.failed_seeds.values())
        assert report.retried == 0  # a validation error is not retried
        # the rerun reuses the 14 cached contexts and asks again for the two lost ones only
        rows2, report2, _ = run_pipeline(srv, fault_seeds, tmp_path)
    assert check_accounting(rows2, report2, fault_seeds) == set()
    assert report2.cached == N_SEEDS - 2 and report2.generated == 2


def test_server_dies_and_comes_back(fault_seeds, tmp_path):
    with FakeTGIServer(latency=0.05, capacity=2) as srv:
        def outage_once_running() -> None:  # mid-run: after the preflight, once answers flow
            deadline = time.monotonic() + 30
            while srv.stats().completed < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            srv.outage(1.0)

        timer = threading.Thread(target=outage_once_running)
        timer.start()
        try:
            rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path, concurrency=2, max_retries=30)
        finally:
            timer.join()
        stats = srv.stats()
    assert stats.outages == 1 and report.retried > 0
    assert check_accounting(rows, report, fault_seeds) == set()
    assert report.wall_time_s >= 1.0  # it did wait the outage out


def test_transport_failures_after_the_retries_are_recorded(fault_seeds, tmp_path):
    with FakeTGIServer(latency=0.0, capacity=4, faults={"http_500": 0.6}, seed=1) as srv:
        rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path, max_retries=1)
        stats = srv.stats()
    failed = check_accounting(rows, report, fault_seeds)
    assert failed, "with one retry and 60% errors some seeds must fail"
    assert all("500" in reason for reason in report.failed_seeds.values())
    # every 500 either caused the one retry of its seed or, on the retry, the seed's failure
    assert report.retried == sum(n - 1 for n in stats.per_prompt.values())
    assert stats.faults["http_500"] == report.retried + report.failed


def test_mixed_faults_through_load_dataset(fault_seeds, tmp_path):
    faults = {"http_503": 0.15, "drop": 0.05, "garbage": 0.05, "refusal": 0.1, "no_prefix": 0.05}
    with FakeTGIServer(latency=0.01, capacity=8, faults=faults, retry_after=0.02, seed=5) as srv:
        ds = datasets.load_dataset(
            "context_synthesis", seed=str(fault_seeds), endpoint=srv.url, num_distractors=2, max_concurrency=8,
            timeout=5.0, split="train", cache_dir=str(tmp_path / "ds"), generation_cache_dir=str(tmp_path / "gen"),
        )
        stats = srv.stats()
    assert sum(stats.faults.values()) > 0
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    ids = ds["seed_id"]
    assert len(ids) == len(set(ids)) == report["synthesized"]
    assert set(ids) | set(report["failed_seeds"]) == all_seed_ids(fault_seeds)
    assert report["synthesized"] + report["failed"] + report["rejected_rows"] == report["seeds"] == N_SEEDS
    assert report["filter_reasons"].get("refusal", 0) == stats.faults.get("refusal", 0)
    assert report["filter_reasons"].get("missing_context_marker", 0) == stats.faults.get("no_prefix", 0)


# ---------------------------------------------------------------- preflight and fail-fast (issue 9)


def _config(seeds: Path, endpoint, tmp_path: Path, **overrides) -> SynthesisConfig:
    overrides.setdefault("generation_cache_dir", str(tmp_path / "gen"))
    return SynthesisConfig(seed=str(seeds), endpoint=endpoint, num_distractors=2, progress=False, **overrides)


def test_unreachable_endpoint_stops_at_once_naming_the_url(fault_seeds, tmp_path, capsys):
    from hf_context_synthesis.backends.errors import EndpointUnreachableError
    from hf_context_synthesis.cli import main

    with FakeTGIServer() as srv:
        url = srv.url  # closed when the block ends: nothing listens there any more
    t0 = time.perf_counter()
    with pytest.raises(EndpointUnreachableError, match=url):  # the preflight, before any request
        synthesize_rows(_config(fault_seeds, url, tmp_path, generator_model="org/m"), datasets_cache_dir=str(tmp_path))
    with pytest.raises(EndpointUnreachableError, match=url):  # discovery for the cache id
        datasets.load_dataset("context_synthesis", seed=str(fault_seeds), endpoint=url, cache_dir=str(tmp_path / "ds"))
    rc = main(["synthesize", "--seed", str(fault_seeds), "--endpoint", url, "--output", str(tmp_path / "out"),
               "--generation-cache-dir", str(tmp_path / "gen"), "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert time.perf_counter() - t0 < 30
    assert rc == 1 and err[-1].startswith("error: --endpoint: synthesize: cannot reach the generation endpoint " + url)


def test_one_endpoint_is_a_fleet_of_one_whose_breaker_ends_a_dead_run(fault_seeds, tmp_path):
    from hf_context_synthesis import make_backend
    from hf_context_synthesis.backends import FleetBackend, NoHealthyEndpointError

    built = make_backend(_config(fault_seeds, "http://127.0.0.1:9", tmp_path))
    assert isinstance(built, FleetBackend) and len(built.members) == 1 and built.no_healthy_timeout <= 60
    with FakeTGIServer(latency=0.05, capacity=1) as srv:
        member = TGIBackend(TGIBackendConfig(endpoint=srv.url, max_concurrency=1, timeout=1.0, backoff_base=0.01,
                                             backoff_max=0.05, max_retries=50))
        fleet = FleetBackend([member], failure_threshold=2, cooldown=0.1, max_cooldown=0.2, no_healthy_timeout=1.0)

        def die_once_running() -> None:
            deadline = time.monotonic() + 30
            while srv.stats().completed < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            srv.outage(600)

        killer = threading.Thread(target=die_once_running)
        killer.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(NoHealthyEndpointError, match=srv.url):
                synthesize_rows(_config(fault_seeds, srv.url, tmp_path), backend=fleet,
                                cache=GenerationCache(str(tmp_path / "g.sqlite")))
        finally:
            killer.join()
            srv.end_outage()
    assert time.perf_counter() - t0 < 15  # not max_retries x backoff per seed


def test_context_window_caps_max_new_tokens_or_refuses(fault_seeds, tmp_path, caplog):
    from hf_context_synthesis.synthesis.preflight import PreflightResult  # noqa: F401 - public

    asked = []

    def responder(prompt):
        asked.append(prompt.max_new_tokens)
        import random

        rng = random.Random(prompt.prompt)  # distinct, non-repetitive filler per seed (the quality filters pass it)
        return "Context: " + " ".join(f"w{rng.randrange(10**6)}" for _ in range(150)) + " " + prompt.prompt

    with FakeTGIServer(responder=responder, max_total_tokens=3000) as srv:
        rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path, max_new_tokens=4096)
    assert report.failed == 0 and asked and max(asked) < 3000 and len(set(asked)) == 1
    assert "capping max_new_tokens" in caplog.text and "max_total_tokens=3000" in caplog.text
    with FakeTGIServer(max_input_tokens=20) as srv:
        with pytest.raises(ValueError, match=r"longest prompt \(seed .*max_input_tokens=20"):
            run_pipeline(srv, fault_seeds, tmp_path)
        assert srv.stats().generation_requests == 0


def test_unwritable_output_folder_is_refused_before_any_request(fault_seeds, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with FakeTGIServer() as srv:
        with pytest.raises(PermissionError, match="not writable"):
            synthesize_rows(_config(fault_seeds, srv.url, tmp_path), output_dir=str(blocker / "out"),
                            datasets_cache_dir=str(tmp_path))
        assert srv.stats().generation_requests == 0


def test_a_thousand_alike_failures_are_one_reason_and_counts_are_named(fault_seeds, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    with FakeTGIServer(latency=0.0, capacity=4, faults={"http_422": 8}, error_style="openai") as srv:
        rows, report, _ = run_pipeline(srv, fault_seeds, tmp_path)
    assert report.failure_reasons == {"HTTP 422: Input validation error: fake invalid request": 8}
    assert set(report.failed_seeds.values()) == {"HTTP 422: Input validation error: fake invalid request"}
    stage = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Context synthesis:")]
    assert stage and "examples" not in stage[0]  # the generation phase does not know the examples yet
    assert "seeds: 16 read" in stage[0] and "requests:" in stage[0] and "attempts:" in stage[0]
    words = [r for r in caplog.records if "counts whitespace-separated words" in r.getMessage()]
    assert len(words) == 1  # no tokenizer: num_tokens counts words, said once


def test_refused_credentials_and_a_bad_tokenizer_stop_before_any_request(fault_seeds, tmp_path):
    with FakeTGIServer(required_authorization="Bearer right-token") as srv:
        with pytest.raises(PermissionError, match="refused the credentials"):
            synthesize_rows(_config(fault_seeds, srv.url, tmp_path, generator_model="org/m",
                                    endpoint_token="wrong-token"), datasets_cache_dir=str(tmp_path))
        empty = tmp_path / "not-a-tokenizer"
        empty.mkdir()
        with pytest.raises(ValueError, match="tokenizer=.*not-a-tokenizer.* cannot be loaded"):
            synthesize_rows(_config(fault_seeds, srv.url, tmp_path, generator_model="org/m", endpoint_token="right-token",
                                    tokenizer=str(empty)), datasets_cache_dir=str(tmp_path))
        assert srv.stats().generation_requests == 0


def test_text_api_against_an_openai_only_server_stops_the_run_after_one_request(fault_seeds, tmp_path, tiny_model_dir):
    from hf_context_synthesis.backends.errors import EndpointRouteError

    with FakeTGIServer(protocol="openai", error_style="fastapi") as srv:
        with pytest.raises(EndpointRouteError, match="use api='chat'"):
            synthesize_rows(_config(fault_seeds, srv.url, tmp_path, api="text", tokenizer=tiny_model_dir,
                                    max_concurrency=1), datasets_cache_dir=str(tmp_path))
        posts = {k: n for k, n in srv.stats().per_route.items() if k.startswith("POST")}
    assert posts == {"POST /": 1}


def test_a_cached_dataset_loads_while_the_server_is_down_given_generator_model(fault_seeds, tmp_path):
    kw = dict(seed=str(fault_seeds), num_distractors=2, progress=False, split="train", cache_dir=str(tmp_path / "ds"),
              generation_cache_dir=str(tmp_path / "gen"))
    with FakeTGIServer(model_id="org/m") as srv:
        url = srv.url
        first = datasets.load_dataset("context_synthesis", endpoint=url, **kw)  # model discovered: org/m
    again = datasets.load_dataset("context_synthesis", endpoint=url, generator_model="org/m", **kw)  # server gone
    assert again.to_list() == first.to_list() and set(again["generator"]) == {"org/m"}
