"""load_dataset("context_synthesis", ...) end to end: TGI protocol server, embedded model, caches, report."""

from __future__ import annotations

import json
import os

import datasets
import pytest

import hf_context_synthesis  # noqa: F401 - registers the builder
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def load(seed, caches, **kw):
    return datasets.load_dataset("context_synthesis", seed=str(seed), split="train", **caches, **kw)


def builder_config_id(seed, **kw):
    return datasets.load_dataset_builder("context_synthesis", seed=str(seed), **kw).config_id


def test_load_dataset_through_tgi(small_seed_dir, caches):
    with FakeTGIServer(latency=0.01, capacity=8) as srv:
        ds = load(small_seed_dir, caches, endpoint=srv.url, max_concurrency=8)
        stats = srv.stats()
    assert len(ds) == 36 and stats.generation_requests == 36
    assert stats.max_active <= 8
    assert set(ds["task"]) == {"hotpotqa", "qasper", "govreport"}
    row = ds[0]
    # the relevant context is the server's text after "Context:" for this seed's prompt
    assert row["relevant_context"] and "Context:" not in row["relevant_context"][:20]
    assert row["answer"] in row["relevant_context"]  # the fake server echoes the answer line
    assert row["generator"] == "fake-org/fake-tgi-model"
    assert row["num_documents"] == 10  # 11 other contexts of the same task are available
    prompt = row["messages"][0]["content"]
    assert prompt[slice(*row["context_spans"][row["relevant_index"]])] == row["relevant_context"]
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    assert report["requested"] == 36 and report["generated"] == 36 and report["examples"] == 36
    assert report["synthesized"] + report["failed"] + report["rejected_rows"] == report["seeds"]


def test_second_load_makes_zero_requests_and_runtime_knobs_share_the_cache(small_seed_dir, caches):
    with FakeTGIServer(latency=0.0, capacity=16) as srv:
        first = load(small_seed_dir, caches, endpoint=srv.url)
        n = srv.stats().generation_requests
        again = load(small_seed_dir, caches, endpoint=srv.url, endpoint_token="hf_secret_token", timeout=5.0,
                     max_concurrency=3, num_distractors=9, random_seed=42)
        assert srv.stats().generation_requests == n == 36
        assert again.to_list() == first.to_list()
        # a new composition of the same contexts: new dataset cache, still zero generations
        fewer = load(small_seed_dir, caches, endpoint=srv.url, num_distractors=2)
        assert srv.stats().generation_requests == n
        assert set(fewer["num_documents"]) == {3}


def test_cache_id_depends_on_semantic_settings_only(small_seed_dir):
    # the cache id names the served model (asked from the server), never the endpoint URL
    with FakeTGIServer(model_id="org/m") as srv, FakeTGIServer(model_id="org/m") as twin, \
            FakeTGIServer(model_id="org/other") as other:
        url = srv.url
        base = builder_config_id(small_seed_dir, endpoint=url)
        assert base == builder_config_id(small_seed_dir, endpoint=url, endpoint_token="t", timeout=3.0,
                                         max_concurrency=2, max_retries=1, num_distractors=9, temperature=0.8)
        assert base == builder_config_id(small_seed_dir, endpoint=url.replace("://", "://user:pw@") + "?key=x")
        assert base == builder_config_id(small_seed_dir, endpoint=url.replace("127.0.0.1", "localhost") + "/")
        assert base == builder_config_id(small_seed_dir, endpoint=twin.url)  # another server, same model
        assert base == builder_config_id(small_seed_dir, endpoint=[url, twin.url])  # a fleet of it
        assert base == builder_config_id(small_seed_dir, endpoint=url, generator_model="org/m")
        assert base != builder_config_id(small_seed_dir, endpoint=other.url)  # another model
        assert base != builder_config_id(small_seed_dir, endpoint=url, random_seed=7)
        assert base != builder_config_id(small_seed_dir, endpoint=url, generator_model="other/model")
        assert base != builder_config_id(small_seed_dir, endpoint=url, context_words=500)


def test_cache_id_follows_seed_content(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"instruction": "a?", "answer": "b"}))
    before = builder_config_id(f)
    f.write_text(json.dumps({"instruction": "a?", "answer": "c"}))
    assert builder_config_id(f) != before


def test_in_memory_dataset_seed(caches):
    seed = datasets.Dataset.from_list(
        [{"instruction": f"Where is item {i}?", "answer": f"In box {i}."} for i in range(6)]
    )
    with FakeTGIServer(latency=0.0, capacity=4) as srv:
        ds = datasets.load_dataset("context_synthesis", seed=seed, endpoint=srv.url, task="boxes",
                                   split="train", **caches)
    assert len(ds) == 6 and set(ds["task"]) == {"boxes"} and set(ds["num_documents"]) == {6}


def test_unusable_outputs_are_retried_with_a_new_seed_then_recorded(small_seed_dir, caches):
    with FakeTGIServer(latency=0.0, capacity=4, faults={"no_prefix": 5, "empty": 2}) as srv:
        ds = load(small_seed_dir, caches, endpoint=srv.url)
        assert len(ds) == 36 and srv.stats().generation_requests == 36 + 7
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    assert report["filtered"] == 7 and report["failed"] == 0
    assert report["filter_reasons"].get("missing_context_marker", 0) + report["filter_reasons"].get(
        "empty_generation", 0
    ) >= 5


def test_failures_are_recorded_not_dropped(small_seed_dir, caches):
    with FakeTGIServer(latency=0.0, capacity=4, faults={"refusal": 4}) as srv:
        ds = load(small_seed_dir, caches, endpoint=srv.url, max_generation_attempts=1)
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    assert len(ds) == 32 and report["failed"] == 4 and sum(report["failure_reasons"].values()) == 4
    assert report["synthesized"] + report["failed"] + report["rejected_rows"] == report["seeds"] == 36


def test_all_failing_gives_a_clear_error(small_seed_dir, caches):
    from hf_context_synthesis.synthesis.report import SynthesisError

    with FakeTGIServer(latency=0.0, capacity=4, faults={"refusal": 1.0}) as srv:
        with pytest.raises(SynthesisError, match="36 of 36 seeds failed"):
            load(small_seed_dir, caches, endpoint=srv.url, max_generation_attempts=2)
        assert srv.stats().generation_requests == 72


def test_embedded_transformers_backend_end_to_end(small_seed_dir, caches, tiny_model_dir):
    # a random tiny model writes gibberish: quality filters off, this checks the backend plumbing
    ds = load(small_seed_dir, caches, generator_model=tiny_model_dir, require_context_marker=False,
              max_new_tokens=12, max_seeds=4, num_distractors=3, batch_size=4, quality=False)
    assert len(ds) == 12
    assert set(ds["num_documents"]) == {4}
    assert ds[0]["generator"] == tiny_model_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = ds[5]
    assert row["num_tokens"] == len(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])


def test_same_dataset_whatever_the_completion_order(small_seed_dir, tmp_path):
    rows = []
    with FakeTGIServer(latency=0.002, capacity=16) as srv:
        for conc in (1, 16):
            caches = {"cache_dir": str(tmp_path / f"c{conc}"), "generation_cache_dir": str(tmp_path / f"g{conc}")}
            rows.append(load(small_seed_dir, caches, endpoint=srv.url, max_concurrency=conc).to_list())
    assert rows[0] == rows[1]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Question: {{ instruction }\nAnswer: {{ answer }}", r"prompt_template is not a valid jinja2 template: .*line 1"),
        ("Question: {{ question }}\nAnswer: {{ answer }}", r"prompt_template uses undefined variable\(s\) question"),
        ("{{ answer | no_such_filter }}", r"prompt_template is not a valid jinja2 template: No filter named"),
    ],
)
def test_bad_prompt_template_is_refused_at_config_time_naming_it(small_seed_dir, caches, template, expected):
    from hf_context_synthesis.synthesis.prompts import PromptTemplateError

    with pytest.raises(PromptTemplateError, match=expected):
        SynthesisConfig(seed=str(small_seed_dir), prompt_template=template)
    with pytest.raises(PromptTemplateError, match=expected):  # before any request or cache is touched
        load(small_seed_dir, caches, endpoint="http://127.0.0.1:9", prompt_template=template)
    assert not os.path.exists(caches["generation_cache_dir"])


def test_bad_prompt_template_is_listed_with_every_other_set_up_problem(small_seed_dir, tmp_path, capsys):
    from hf_context_synthesis.cli import main

    code = main(["synthesize", "--seed", str(small_seed_dir), "--endpoint", "http://127.0.0.1:9", "--output",
                 str(tmp_path / "out"), "--prompt-template", "Q: {{ instruction }"])
    err = capsys.readouterr().err
    # the bad template and the unreachable endpoint, at once, one line each, before anything is written
    assert code == 1 and err.splitlines()[0] == "error: synthesize found 2 problems:", err
    assert err.splitlines()[1].startswith("  - prompt_template: prompt_template is not a valid jinja2 template")
    assert err.splitlines()[2].startswith("  - --endpoint: synthesize: cannot reach the generation endpoint")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 3 and not (tmp_path / "out").exists()


def test_builder_writes_arrow_in_small_batches(small_seed_dir):
    """A composed row holds ten ~2,000-word documents (~150 KB): datasets' default of 1,000 rows per
    write held ~150 MB of rows; the builder writes every 64 (benchmarks/memory.py measures the effect)."""
    builder = datasets.load_dataset_builder("context_synthesis", seed=str(small_seed_dir))
    assert builder._writer_batch_size == 64


def test_rows_carry_provenance_attempts_finish_reason_and_tokens(small_seed_dir, caches):
    with FakeTGIServer(latency=0.0, capacity=8, faults={"no_prefix": 3}) as srv:
        ds = load(small_seed_dir, caches, endpoint=srv.url)
    report = json.loads(ds.info.description.split("Synthesis report:\n", 1)[1].split("\n\nSettings:", 1)[0])
    prov = ds["provenance"]
    assert sorted(p["attempts"] for p in prov) == [1] * 33 + [2] * 3  # three first outputs lacked "Context:"
    assert {p["finish_reason"] for p in prov} == {"stop"}
    assert all(p["tokens_in"] > 0 and p["tokens_out"] > 0 for p in prov)
    # the accepted generations' tokens: all of the run's but the three rejected outputs'
    assert sum(p["tokens_out"] for p in prov) < report["tokens_out"]
    # a rerun from the cache reports the same provenance
    with FakeTGIServer(latency=0.0) as srv:
        again = load(small_seed_dir, caches, endpoint=srv.url, num_distractors=2)
        assert srv.stats().generation_requests == 0
    assert again["provenance"] == prov


def test_provenance_records_outputs_cut_at_max_new_tokens(small_seed_dir, caches):
    with FakeTGIServer(latency=0.0, capacity=8, response_words=400) as srv:
        ds = load(small_seed_dir, caches, endpoint=srv.url, max_new_tokens=200, context_words=150)
    assert {p["finish_reason"] for p in ds["provenance"]} == {"length"}
    assert all(0 < p["tokens_out"] <= 200 for p in ds["provenance"])
