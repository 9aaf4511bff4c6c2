"""The embedded backend with a tiny random Llama: per-sequence stops, greedy = ``model.generate``,
the derived ``max_new_tokens``, repetition guards in the request keys."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hf_context_synthesis.backends.base import GenerationRequest  # noqa: E402
from hf_context_synthesis.backends.local import TransformersBackend  # noqa: E402
from hf_context_synthesis.synthesis.config import SynthesisConfig, embedded_max_new_tokens  # noqa: E402
from hf_context_synthesis.testing.tiny_model import make_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = make_tiny_llama(tmp_path_factory.mktemp("tiny"))
    b = TransformersBackend(path, device="cpu", repetition_penalty=1.0, no_repeat_ngram_size=0, progress=False)
    torch.manual_seed(0)
    with torch.no_grad():  # varied greedy outputs (a fresh random Llama repeats one token)
        for p in b.model.parameters():
            p.normal_(0, 0.6)
    return b


def _requests(n: int, max_new: int = 24) -> list[GenerationRequest]:
    words = ["river", "budget", "film", "report", "mill", "agency"]
    return [
        GenerationRequest(key=str(i), messages=({"role": "user", "content": " ".join(words[: i + 1] * (i + 1))},),
                          max_new_tokens=max_new + 3 * i, temperature=0)
        for i in range(n)
    ]


def _reference(backend, reqs, eos_id):
    enc = backend.tokenizer([backend._render(r) for r in reqs], return_tensors="pt", padding=True, add_special_tokens=False)
    out = []
    for i, req in enumerate(reqs):  # one at a time: generate's own per-request result
        row = {k: v[i : i + 1] for k, v in enc.items()}
        ids = backend.model.generate(**row, max_new_tokens=req.max_new_tokens, do_sample=False, eos_token_id=eos_id,
                                     pad_token_id=backend.tokenizer.pad_token_id)[0, row["input_ids"].shape[1] :].tolist()
        out.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return out


def test_greedy_matches_generate_and_sequences_stop_at_their_own_eos(backend, monkeypatch):
    reqs = _requests(4)
    free = backend._generate_batch(reqs)
    tokenized = [backend.tokenizer(r.text, add_special_tokens=False)["input_ids"] for r in free]
    # choose as "EOS" a token some outputs produce early and others never: sequences then end at different steps
    counts = {}
    for ids in tokenized:
        for t in set(ids[:8]):
            counts[t] = counts.get(t, 0) + 1
    eos_id = next((t for t, c in sorted(counts.items()) if 0 < c < len(reqs)), None)
    assert eos_id is not None, tokenized
    monkeypatch.setattr(backend, "_eos_ids", lambda: {eos_id})
    expected = _reference(backend, reqs, eos_id)
    seen_batch_sizes = []
    forward = backend.model.forward

    def counting_forward(*args, **kwargs):
        seen_batch_sizes.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", counting_forward)
    results = backend._generate_batch(reqs)
    assert [r.tokens_out for r in results] == [len(e) for e in expected]
    assert [r.text for r in results] == [backend.tokenizer.decode(e, skip_special_tokens=True) for e in expected]
    finish = [r.extra["finish_reason"] for r in results]
    assert "stop" in finish and "length" in finish
    # finished sequences left the batch: later steps run on fewer rows, the longest alone at the end
    assert seen_batch_sizes[0] == len(reqs) and seen_batch_sizes[-1] < len(reqs)
    assert sum(seen_batch_sizes) < len(reqs) * len(seen_batch_sizes)


def test_each_sequence_honours_its_own_max_new_tokens(backend):
    results = backend._generate_batch(_requests(3, max_new=5))
    assert [r.tokens_out for r in results if r.extra["finish_reason"] == "length"] == [
        5 + 3 * i for i, r in enumerate(results) if r.extra["finish_reason"] == "length"
    ]
    assert all(r.tokens_out <= 5 + 3 * i for i, r in enumerate(results))


def test_repetition_guard_forbids_repeated_ngrams(backend, monkeypatch):
    reqs = _requests(2, max_new=40)
    decoded = []
    decode = backend._decode
    monkeypatch.setattr(backend, "_decode", lambda enc, batch: decoded.append(decode(enc, batch)) or decoded[-1])

    def repeats(ids):
        grams = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
        return len(grams) - len(set(grams))

    monkeypatch.setattr(backend, "no_repeat_ngram_size", 3)
    backend._generate_batch(reqs)
    assert [repeats(ids) for ids in decoded[-1][0]] == [0, 0]
    assert sum(len(ids) for ids in decoded[-1][0]) > 20
    assert backend.sampling_settings()["no_repeat_ngram_size"] == 3  # part of the request keys
    monkeypatch.setattr(backend, "no_repeat_ngram_size", 0)
    assert not any("NoRepeat" in type(p).__name__ for p in backend._processors(reqs[0]))


def test_max_new_tokens_defaults_to_a_bound_from_context_words_unless_set():
    cfg = SynthesisConfig(seed="seeds.jsonl", context_words=400)
    assert cfg.max_new_tokens is None and cfg.resolved_max_new_tokens == embedded_max_new_tokens(400)
    assert 600 < embedded_max_new_tokens(400) < 800
    assert cfg.semantic_dict()["max_new_tokens"] == cfg.resolved_max_new_tokens
    assert SynthesisConfig(seed="s.jsonl", context_words=400, max_new_tokens=4096).resolved_max_new_tokens == 4096
    assert SynthesisConfig(seed="s.jsonl", context_words=400, endpoint="http://127.0.0.1:9").resolved_max_new_tokens == 4096
    import dataclasses

    assert dataclasses.replace(cfg, context_words=2000).resolved_max_new_tokens == embedded_max_new_tokens(2000)
