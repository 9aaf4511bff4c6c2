"""Quality filters: per-generation checks, the near-duplicate post-pass, seed-level flags, config plumbing."""

from __future__ import annotations

import json
import random

import datasets
import pytest

from hf_context_synthesis.backends.base import GenerationBackend
from hf_context_synthesis.backends.tgi import TGIBackend, TGIBackendConfig
from hf_context_synthesis.synthesis.cache import GenerationCache
from hf_context_synthesis.synthesis.config import SynthesisConfig
from hf_context_synthesis.synthesis.quality import (
    QualityConfig,
    answer_in_instruction,
    answer_recoverable,
    find_near_duplicates,
    is_refusal,
    resolve_quality,
    validate_generation,
)
from hf_context_synthesis.synthesis.generation import ContextSynthesizer
from hf_context_synthesis.synthesis.report import SynthesisReport
from hf_context_synthesis.testing.fake_tgi import FakePrompt, FakeTGIServer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def prose(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


# ------------------------------------------------------------------------------ per-generation checks


def test_each_filter_names_its_reason():
    body = prose(150, 0)
    q = QualityConfig()
    assert validate_generation("", "Q?", "Paris", q) == (None, "empty_generation")
    assert validate_generation("   \n", "Q?", "Paris", q) == (None, "empty_generation")
    assert validate_generation("I'm sorry, but I can't help with that.", "Q?", "Paris", q) == (None, "refusal")
    assert validate_generation("Context: As an AI, I cannot invent facts. " + body, "Q?", "x", q) == (None, "refusal")
    assert validate_generation(body + " Paris", "Q?", "Paris", q) == (None, "missing_context_marker")
    assert validate_generation("Context:   ", "Q?", "Paris", q) == (None, "empty_generation")
    assert validate_generation("Context: " + prose(40, 1) + " Paris", "Q?", "Paris", q) == (None, "too_short")
    assert validate_generation("Context: " + body, "Q?", "Paris", q) == (None, "answer_not_in_context")
    context, reason = validate_generation("**Context:** " + body + " in Paris.", "Q?", "Paris", q)
    assert reason is None and context.endswith("in Paris.") and not context.startswith("*")


def test_degenerate_repetition_is_rejected_with_its_own_reason():
    from hf_context_synthesis.synthesis.quality import repeated_ngram_fraction

    q = QualityConfig()
    loop = "Context: The village has a river. " + "The mill stands by the river in Paris. " * 30
    assert validate_generation(loop, "Q?", "Paris", q) == (None, "repetitive")
    # a loop without spaces is one "word": measured on characters, rejected as repetitive, not as too short
    assert validate_generation("Context: " + "A." * 600, "Q?", "A", q) == (None, "repetitive")
    assert validate_generation("Context: " + "A. " * 600, "Q?", "A", q) == (None, "repetitive")
    # real prose passes, and the measure separates it from the loop by a wide margin
    prose_text = (
        "The old mill was built in 1820 by the miller's family after the flood destroyed the bridge. "
        "Over the next decades the village grew along the river, and a school, a church and a market "
        "square were added. In 1901 the railway reached the valley, bringing visitors from Paris, and the "
        "mill was converted into a small museum that still shows the original wheel and the grinding stones."
    )
    assert repeated_ngram_fraction(prose_text) < 0.05 < 0.8 < repeated_ngram_fraction(loop)
    assert repeated_ngram_fraction(prose(150, 0)) < 0.1
    assert repeated_ngram_fraction("") == 0.0
    # the setting: off, or stricter / looser
    assert validate_generation(loop, "Q?", "Paris", QualityConfig(max_repeated_ngram_fraction=None))[1] is None
    half = "Context: " + prose(120, 7) + " Paris " + " ".join([prose(40, 8)] * 3)
    assert validate_generation(half, "Q?", "Paris", QualityConfig(max_repeated_ngram_fraction=0.3))[1] == "repetitive"
    assert validate_generation(half, "Q?", "Paris", QualityConfig(max_repeated_ngram_fraction=0.9))[1] is None
    with pytest.raises(ValueError, match="max_repeated_ngram_fraction"):
        QualityConfig(max_repeated_ngram_fraction=0)


def test_filters_follow_their_settings():
    short = "Context: " + prose(30, 2)
    assert validate_generation(short, "Q?", "long answer " * 10, QualityConfig(min_context_words=0))[1] is None
    assert validate_generation(short, "Q?", "Paris", QualityConfig(min_context_words=0))[1] == "answer_not_in_context"
    assert validate_generation(short, "Q?", "Paris", QualityConfig(min_context_words=0, short_answer_words=0))[1] is None
    refusal = "Context: I cannot do that. " + prose(150, 3)
    assert validate_generation(refusal, "Q?", "x y z w v u", QualityConfig(reject_refusals=False))[1] is None
    custom = QualityConfig(refusal_prefixes=["Nope"])
    assert validate_generation("Nope. " + prose(150, 4), "Q?", "x y z w v u", custom)[1] == "refusal"
    assert validate_generation("Context: " + prose(150, 4), "Q?", "x y z w v u", custom)[1] is None
    # without the marker requirement the whole text is the context
    assert validate_generation(prose(150, 5) + " Paris", "Q?", "Paris", require_context_marker=False)[1] is None


def test_long_and_exempt_answers_skip_the_recoverability_check():
    body = "Context: " + prose(150, 6)
    summary = "The report finds that the agency lacks a plan for its data centers and should write one."
    assert validate_generation(body, "Summarize.", summary)[1] is None
    for answer in ("yes", "No.", "unanswerable"):
        assert validate_generation(body, "Is it?", answer)[1] is None
    assert validate_generation(body, "Is it?", "maybe")[1] == "answer_not_in_context"


def test_refusal_detection():
    assert is_refusal("I\u2019m sorry, I can\u2019t write that")
    assert is_refusal("  **As an AI language model**, I ...")
    assert is_refusal("i cannot comply")
    assert not is_refusal("In 1998 the council could not agree. I'm sorry was all she said.")
    assert not is_refusal("Sorrento is a town")


def test_answer_recoverable_by_normalized_containment_or_window_f1():
    context = "The tower, finished in 1889, was designed by the engineer Gustave Eiffel's company in Paris."
    assert answer_recoverable("The Engineer.", context)  # case, articles and punctuation normalized away
    assert answer_recoverable("1889", context)
    assert answer_recoverable("Gustave Eiffels company", context)
    assert not answer_recoverable("Eiffe", context)  # whole words only
    assert not answer_recoverable("London", context)
    # window F1: the answer's words in another order, or with a word inserted
    assert answer_recoverable("Eiffel Gustave", "was designed by Gustave Eiffel in 1887")
    assert answer_recoverable("Gustave A. Eiffel", "was designed by Gustave Eiffel in 1887", f1_threshold=0.8)
    assert not answer_recoverable("Gustave Pierre Eiffel Bonnet", "Gustave was born; Eiffel later", f1_threshold=0.8)
    assert answer_recoverable("Gustave Pierre Eiffel Bonnet", "Gustave was born; Eiffel later", f1_threshold=0.3)


def test_answer_in_instruction():
    assert answer_in_instruction("Is Paris or Rome the capital of France?", "Paris")
    assert answer_in_instruction("Which year, 1889 or 1890?", "1889.")
    assert not answer_in_instruction("Which city is the capital of France?", "Paris")
    assert not answer_in_instruction("Is it yes or no?", "yes")  # exempt answers
    long_answer = "the capital of France is a city on the Seine"
    assert not answer_in_instruction(long_answer + "?", long_answer)  # only short answers


# ------------------------------------------------------------------------------------- near duplicates


def test_near_duplicates_keep_the_first_occurrence():
    base = prose(400, 7)
    texts = [
        ("a", base),
        ("b", prose(400, 8)),
        ("c", base + " and a closing remark"),
        ("d", base.replace("alpha", "ALPHA.")),  # normalization: case and punctuation
        ("e", prose(400, 9)),
    ]
    assert find_near_duplicates(texts, 0.9) == {"c": "a", "d": "a"}
    # the first of the group in the given order is the one kept
    assert find_near_duplicates(list(reversed(texts)), 0.9) == {"c": "d", "a": "d"}
    assert find_near_duplicates(texts, 0.9) == find_near_duplicates(texts, 0.9)  # deterministic


def test_near_duplicate_threshold_matters():
    base = prose(300, 10).split()
    edited = base[:]
    for k in range(0, 300, 12):  # change every 12th word: most 5-shingles survive, not 90% of them
        edited[k] = "changed"
    pair = [("x", " ".join(base)), ("y", " ".join(edited))]
    assert find_near_duplicates(pair, 0.9) == {}
    assert find_near_duplicates(pair, 0.3) == {"y": "x"}


def test_minhash_signatures_and_banding_match_datasketch():
    """Signatures are datasketch's MinHash values; the LSH banding is the one MinHashLSH picks."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from hf_context_synthesis.synthesis.quality import MinHasher, _shingle_hashes, lsh_bands

    text = prose(300, 3)
    reference = MinHash(num_perm=64, seed=1, hashfunc=int)
    reference.update_batch(_shingle_hashes(text, 5))
    signature = MinHasher(num_perm=64, shingle_words=5).signature(text)
    assert signature.dtype == np.uint32 and np.array_equal(signature, reference.hashvalues)
    for threshold, num_perm in ((0.9, 128), (0.7, 64), (0.5, 256)):
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        assert lsh_bands(threshold, num_perm) == (lsh.b, lsh.r)
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        assert lsh_bands(threshold, num_perm, (0.1, 0.9)) == (lsh.b, lsh.r)


def test_near_duplicate_index_agrees_with_pairwise_signature_similarity():
    """On a corpus with planted near-copies, the index finds exactly the pairs whose signatures agree."""
    import numpy as np

    from hf_context_synthesis.synthesis.quality import MinHasher, NearDuplicateIndex

    rng = random.Random(5)
    texts = [prose(200, 100 + k) for k in range(40)]
    for k in range(0, 40, 4):  # plant copies with one word changed
        words = texts[k].split()
        words[rng.randrange(len(words))] = "changed"
        texts.append(" ".join(words))
    hasher = MinHasher(num_perm=128)
    sigs = [hasher.signature(t) for t in texts]
    index = NearDuplicateIndex(0.9, 128)
    found = {i: index.check(i, s) for i, s in enumerate(sigs)}
    found = {i: first for i, first in found.items() if first is not None}
    expected = {}
    for i in range(len(sigs)):
        earlier = [j for j in range(i) if j not in expected and np.mean(sigs[i] == sigs[j]) >= 0.9]
        if earlier:
            expected[i] = earlier[0]
    assert found == expected and len(found) == 10
    assert len(index) == len(texts) - 10


# ------------------------------------------------------------------------------------ configuration


def test_quality_setting_forms_and_cache_identity():
    default = SynthesisConfig(seed="s")
    assert isinstance(default.quality, QualityConfig)
    assert SynthesisConfig(seed="s", quality=True).fingerprint() == default.fingerprint()
    assert SynthesisConfig(seed="s", quality={}).fingerprint() == default.fingerprint()
    custom = SynthesisConfig(seed="s", quality={"min_context_words": 50})
    assert custom.quality.min_context_words == 50 and custom.fingerprint() != default.fingerprint()
    off = SynthesisConfig(seed="s", quality=False)
    assert off.quality is False and off.fingerprint() != default.fingerprint()
    assert json.loads(json.dumps(custom.to_dict()))["quality"]["min_context_words"] == 50
    with pytest.raises(ValueError, match="unknown setting"):
        resolve_quality({"min_words": 3})
    with pytest.raises(ValueError, match="near_duplicate_threshold"):
        SynthesisConfig(seed="s", quality={"near_duplicate_threshold": 1.5})
    with pytest.raises(ValueError, match="max_new_tokens=12"):
        SynthesisConfig(seed="s", max_new_tokens=12)
    with pytest.raises(ValueError, match="exceeds context_words=50"):
        SynthesisConfig(seed="s", context_words=50)
    assert SynthesisConfig(seed="s", context_words=50, quality={"min_context_words": 25}).quality.min_context_words == 25
    with pytest.raises(TypeError, match="quality must be"):
        SynthesisConfig(seed="s", quality="strict")


def test_quality_from_the_command_line():
    import argparse

    from hf_context_synthesis.cli.synthesize import add_arguments as add_synthesize_arguments
    from hf_context_synthesis.cli.synthesize import config_from_args

    parser = argparse.ArgumentParser()
    add_synthesize_arguments(parser)
    args = parser.parse_args(["--output", "o", "--seed", "s", "--quality", '{"answer_in_instruction": "drop"}'])
    assert config_from_args(args).quality.answer_in_instruction == "drop"
    args = parser.parse_args(["--output", "o", "--seed", "s", "--quality", "false"])
    assert config_from_args(args).quality is False


def test_builder_config_carries_quality(tmp_path):
    from hf_context_synthesis.dataset_scripts.context_synthesis import ContextSynthesisBuilderConfig

    a = ContextSynthesisBuilderConfig(name="default", seed="s", quality={"min_context_words": 10})
    b = ContextSynthesisBuilderConfig(name="default", seed="s", quality={"min_context_words": 20})
    assert a.to_synthesis_config().quality.min_context_words == 10
    assert a.create_config_id({}) != b.create_config_id({})


# --------------------------------------------------------------------------- through the synthesizer


def _seed_rows() -> list[dict[str, str]]:
    rows = [{"instruction": f"Which archive holds record {i}?", "answer": f"Archive {i}"} for i in range(10)]
    for i in (2, 5, 8):  # these three get near-identical contexts from the responder below
        rows[i]["instruction"] = f"DUP: which archive holds record {i}?"
    rows[3] = {"instruction": "Was it Oslo or Bergen?", "answer": "Oslo"}  # answer leaked in the instruction
    return rows


def _responder(srv: FakeTGIServer, base: str):
    def respond(p: FakePrompt) -> str:
        if "DUP:" in p.prompt:
            answer = p.prompt.split("Answer:", 1)[1].split("\n", 1)[0].strip()
            return f"Context: {base} The record is kept in {answer}."
        return srv.default_response(p)

    return respond


class ReversedOrderBackend(GenerationBackend):
    """Hands out each wave of results in reverse completion order (later seeds settle first)."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner = inner

    async def model_id(self) -> str:
        return await self.inner.model_id()

    async def generate(self, request):
        return await self.inner.generate(request)

    @property
    def max_concurrency(self) -> int:
        return self.inner.max_concurrency

    async def stream(self, requests):
        while True:
            wave = [res async for res in self.inner.stream(requests)]
            if not wave:
                return
            for res in reversed(wave):
                yield res

    async def aclose(self) -> None:
        await self.inner.aclose()


def _run(srv, tmp_path, name, concurrency=4, reverse=False, **overrides):
    seed = datasets.Dataset.from_list(_seed_rows())
    config = SynthesisConfig(seed=seed, task="records", endpoint=srv.url, progress=False, max_concurrency=concurrency,
                             **overrides)
    backend = TGIBackend(TGIBackendConfig(endpoint=srv.url, max_concurrency=concurrency, backoff_base=0.01))
    if reverse:
        backend = ReversedOrderBackend(backend)
    cache = GenerationCache(str(tmp_path / f"{name}.sqlite"))
    try:
        return ContextSynthesizer(config, backend=backend, cache=cache).run()
    finally:
        cache.close()


def test_near_duplicates_dropped_in_seed_order_whatever_the_completion_order(tmp_path):
    base = prose(300, 11)
    outcomes = []
    for n, (concurrency, reverse) in enumerate(((1, False), (10, True))):
        with FakeTGIServer(latency=0.01, capacity=10) as srv:
            srv.responder = _responder(srv, base)
            result = _run(srv, tmp_path, f"run{n}", concurrency=concurrency, reverse=reverse)
        report = result.report
        assert result.failures == {5: "near_duplicate", 8: "near_duplicate"}
        assert 2 in result.context_keys
        assert report.failure_reasons == {"near_duplicate": 2}
        assert report.failed_seeds == {"records/5": "near_duplicate", "records/8": "near_duplicate"}
        assert report.flagged_reasons == {"answer_in_instruction": 1}
        assert report.synthesized == 8 and report.accounted
        outcomes.append((sorted(result.context_keys.items()), result.failures))
    assert outcomes[0] == outcomes[1]


def test_cached_rerun_gives_the_same_accounting(tmp_path):
    base = prose(300, 12)
    with FakeTGIServer(latency=0.0, capacity=4) as srv:
        srv.responder = _responder(srv, base)
        first = _run(srv, tmp_path, "cache")
        requests = srv.stats().generation_requests
        second = _run(srv, tmp_path, "cache")
        assert srv.stats().generation_requests == requests  # nothing asked again
    assert second.report.cached == 10 and second.report.generated == 0
    assert second.failures == first.failures and second.context_keys == first.context_keys
    assert second.report.accounted and second.report.failure_reasons == first.report.failure_reasons


def test_answer_in_instruction_drop_and_off(tmp_path):
    base = prose(300, 13)
    with FakeTGIServer(latency=0.0, capacity=4) as srv:
        srv.responder = _responder(srv, base)
        dropped = _run(srv, tmp_path, "drop", quality={"answer_in_instruction": "drop"})
        before = srv.stats().generation_requests
        off = _run(srv, tmp_path, "off", quality=False)
    assert dropped.failures[3] == "answer_in_instruction" and dropped.report.accounted
    assert dropped.report.flagged_reasons == {}
    assert before == 9  # the dropped seed made no request
    assert off.failures == {} and off.report.synthesized == 10 and off.report.flagged_reasons == {}


def test_bad_outputs_are_retried_then_failed_with_their_reason(tmp_path):
    calls: dict[str, int] = {}

    def respond(p: FakePrompt) -> str:
        answer = p.prompt.split("Answer:", 1)[1].split("\n", 1)[0].strip()
        n = calls[answer] = calls.get(answer, 0) + 1
        if answer == "Archive 0":  # always too short
            return f"Context: {answer}."
        if answer == "Archive 1" and n == 1:  # wrong first, right on the retry
            return "Context: " + prose(150, 14)
        return f"Context: {prose(150, n + len(calls) * 7)} {answer}."

    with FakeTGIServer(latency=0.0, capacity=4, responder=respond) as srv:
        result = _run(srv, tmp_path, "retry", max_generation_attempts=3, quality={"answer_in_instruction": "ignore"})
    assert result.failures == {0: "too_short"}
    assert calls["Archive 0"] == 3 and calls["Archive 1"] == 2
    assert result.report.filter_reasons == {"too_short": 3, "answer_not_in_context": 1}
    assert result.report.filtered == 4 and result.report.accounted
    # one excerpt per reason, of the output the filter saw: what a rejected output looked like
    examples = result.report.filter_examples
    assert examples["too_short"] == "Context: Archive 0."
    wrong = "Context: " + prose(150, 14)
    assert 190 <= len(examples["answer_not_in_context"]) <= 200 and examples["answer_not_in_context"].endswith("\u2026")
    assert wrong.startswith(examples["answer_not_in_context"][:-1])
    assert SynthesisReport.from_dict(result.report.to_dict()).filter_examples == examples


def test_filter_excerpts_are_short_one_line_and_secret_free():
    import secrets as _secrets

    from hf_context_synthesis.synthesis.report import excerpt
    from hf_context_synthesis.utils.secrecy import REDACTED, register_secret

    token = "tok_" + _secrets.token_hex(12)
    register_secret(token)
    report = SynthesisReport()
    report.note_filtered("too_short", "Context:\n\n  short " + token + "\n", (5, 0))
    report.note_filtered("too_short", "Context: later seed", (7, 0))
    report.note_filtered("too_short", "Context: earlier seed", (2, 1))
    assert report.filter_reasons == {"too_short": 3}
    assert report.filter_examples == {"too_short": "Context: earlier seed"}  # the lowest seed's, whatever the order
    assert excerpt("Context:\n\n  short " + token + "\n") == f"Context: short {REDACTED}"
    # a secret across the cut is redacted before cutting
    cut = excerpt("x" * 190 + " " + token + " tail")
    assert token[:8] not in cut and len(cut) <= 200


def test_identical_seeds_share_one_request_and_the_copy_is_a_near_duplicate(tmp_path):
    rows = [{"instruction": f"Which archive holds record {i}?", "answer": f"Archive {i}"} for i in range(4)]
    rows.append(dict(rows[1]))  # an exact copy of seed 1
    seed = datasets.Dataset.from_list(rows)
    with FakeTGIServer(latency=0.05, capacity=8) as srv:
        config = SynthesisConfig(seed=seed, task="records", endpoint=srv.url, progress=False)
        backend = TGIBackend(TGIBackendConfig(endpoint=srv.url, max_concurrency=8))
        cache = GenerationCache(str(tmp_path / "same.sqlite"))
        result = ContextSynthesizer(config, backend=backend, cache=cache).run()
        cache.close()
        assert srv.stats().generation_requests == 4
    assert result.failures == {4: "near_duplicate"} and result.report.accounted
    assert result.report.failed_seeds == {"records/4": "near_duplicate"}
