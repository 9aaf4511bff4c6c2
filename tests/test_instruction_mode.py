"""load_dataset("context_synthesis", mode="instruction_synthesis", documents=...): the paper's baseline."""

from __future__ import annotations

import re

import datasets

import hf_context_synthesis  # noqa: F401
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer


def qa_responder(prompt):
    """Writes a question about the first word of the chunk the request shows."""
    chunk = prompt.prompt.split("Document:\n", 1)[1]
    first = re.findall(r"\w+", chunk)[0]
    return f"**Question:** Which word opens the chunk?\n**Answer:** {first}"


def docs(n=6, words=5000):
    return datasets.Dataset.from_list(
        [{"text": " ".join(f"d{i}w{k}" for k in range(words)), "task": "books"} for i in range(n)]
    )


def test_instruction_synthesis_mode(tmp_path):
    caches = {"cache_dir": str(tmp_path / "c"), "generation_cache_dir": str(tmp_path / "g")}
    documents = docs()
    with FakeTGIServer(latency=0.0, capacity=4, responder=qa_responder) as srv:
        ds = datasets.load_dataset("context_synthesis", mode="instruction_synthesis", documents=documents,
                                   endpoint=srv.url, num_distractors=0, split="train", **caches)
        n = srv.stats().generation_requests
        prompts = [p for p in srv.stats().per_prompt]
        again = datasets.load_dataset("context_synthesis", mode="instruction_synthesis", documents=documents,
                                      endpoint=srv.url, num_distractors=2, split="train", **caches)
        assert srv.stats().generation_requests == n == 6 and len(prompts) == 6
    assert len(ds) == 6 and set(ds["num_documents"]) == {1}
    for row, doc in zip(ds, documents):
        assert row["relevant_context"] == doc["text"] and row["task"] == "books"
        assert row["instruction"] == "Which word opens the chunk?"
        # the answer is the first word of a ~3,000-word chunk taken from inside the 5,000-word document
        k = int(row["answer"].split("w")[1])
        assert 0 <= k <= 2000
        assert row["messages"][1]["content"] == row["answer"]
    assert len({r["answer"] for r in ds}) > 1  # chunks start at different places
    assert set(again["num_documents"]) == {3}


def test_unparsable_replies_are_retried(tmp_path):
    caches = {"cache_dir": str(tmp_path / "c"), "generation_cache_dir": str(tmp_path / "g")}
    calls = {"n": 0}

    def flaky(prompt):
        calls["n"] += 1
        return "I think this is a nice document." if calls["n"] <= 2 else qa_responder(prompt)

    with FakeTGIServer(latency=0.0, capacity=1, responder=flaky) as srv:
        ds = datasets.load_dataset("context_synthesis", mode="instruction_synthesis", documents=docs(3, 50),
                                   endpoint=srv.url, num_distractors=0, split="train", **caches)
        assert srv.stats().generation_requests == 5
    assert len(ds) == 3
