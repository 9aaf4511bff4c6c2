"""Small models echo the synthesis prompt ("Context: [MISSING] Question: ... Answer: ...") instead of
writing a document: the echo is never taken for a context (reason ``echoed_prompt``), what follows an
echo is kept, and the embedded backend writes the ``Context:`` start of the reply for the model."""

from __future__ import annotations

import pytest

from hf_context_synthesis.synthesis.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    is_echo,
    parse_context,
    render_synthesis_messages,
)
from hf_context_synthesis.synthesis.quality import QualityConfig, validate_generation

PAIR = ("Who ran the mill on the river?", "Anna Berg")
DOC = ("Anna Berg ran the mill on the river for thirty years. Her father built it in 1851 after the flood "
       "destroyed the old weir, and the village paid him in grain for every sack he ground.")


def _echo(one_line: bool = False) -> str:
    """What a small model wrote back: the user message of the default prompt, verbatim."""
    user = render_synthesis_messages(*PAIR, context_words=300)[-1]["content"]
    return user.replace("\n", " ") if one_line else user


@pytest.mark.parametrize("one_line", [False, True])
def test_a_verbatim_echo_of_the_prompt_is_no_context(one_line):
    text = _echo(one_line)
    assert text.startswith("Context: [MISSING]")
    assert parse_context(text) is None and is_echo(text)
    assert validate_generation(text, *PAIR, QualityConfig(min_context_words=5)) == (None, "echoed_prompt")


def test_the_placeholder_alone_is_an_echo_too():
    for text in ("Context: [MISSING]", "**Context:** [missing]\nQuestion: Who?\nAnswer: Anna Berg"):
        assert parse_context(text) is None and is_echo(text), text


def test_a_document_written_after_the_echo_is_kept():
    pair = f"Context: [MISSING]\nQuestion: {PAIR[0]}\nAnswer: {PAIR[1]}\n\n"
    for text in (pair + DOC, pair + "Context: " + DOC, _echo() + "\n\n" + DOC, pair + "**Context:**\n" + DOC):
        assert parse_context(text) == DOC, text
        assert not is_echo(text)
        assert validate_generation(text, *PAIR, QualityConfig(min_context_words=5)) == (DOC, None)


def test_ordinary_contexts_parse_as_before():
    assert parse_context("Context: " + DOC) == DOC
    assert parse_context("**Context:** " + DOC) == DOC
    assert parse_context("Sure! Context:\n\n" + DOC) == DOC
    assert parse_context(DOC) is None and not is_echo(DOC)
    assert parse_context(DOC, require_marker=False) == DOC
    assert parse_context("Context:   ") is None and not is_echo("Context:   ")
    # a real document that merely mentions a question later is untouched
    text = "Context: " + DOC + "\nQuestion: who? Answer: Anna Berg."
    assert parse_context(text) == text[len("Context: "):]
    assert "[MISSING]" in DEFAULT_PROMPT_TEMPLATE  # the scaffold the echo copies


def test_embedded_backend_writes_the_reply_prefix(tmp_path):
    torch = pytest.importorskip("torch")
    from hf_context_synthesis.backends.base import GenerationRequest
    from hf_context_synthesis.backends.local import TransformersBackend
    from hf_context_synthesis.testing.tiny_model import make_tiny_llama

    path = make_tiny_llama(tmp_path / "tiny")
    plain = TransformersBackend(path, device="cpu", progress=False)
    prefixed = TransformersBackend(plain.model, tokenizer=plain.tokenizer, device="cpu", progress=False,
                                   response_prefix="Context:")
    req = GenerationRequest(key="k", messages=render_synthesis_messages(*PAIR, context_words=50),
                            max_new_tokens=6, temperature=0)
    assert prefixed._render(req) == plain._render(req) + "Context:"
    assert plain._render(req).endswith(plain._render_prompt(req))
    torch.manual_seed(0)
    (result,) = prefixed._generate_batch([req])
    assert result.error is None and result.text.startswith("Context:") and result.tokens_out > 0
    # the prefix changes what is generated: it is part of the request keys, absent when off
    assert prefixed.sampling_settings()["response_prefix"] == "Context:"
    assert "response_prefix" not in plain.sampling_settings()


def test_make_backend_prefixes_context_synthesis_only(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from hf_context_synthesis.synthesis import backend as backend_module
    from hf_context_synthesis.synthesis.config import SynthesisConfig

    seen = []

    class Recorder:
        def __init__(self, model, **kwargs):
            seen.append(kwargs["response_prefix"])

    monkeypatch.setattr("hf_context_synthesis.backends.local.TransformersBackend", Recorder)
    backend_module.make_backend(SynthesisConfig(seed="s.jsonl", generator_model="m"))
    backend_module.make_backend(SynthesisConfig(seed="s.jsonl", generator_model="m", require_context_marker=False))
    backend_module.make_backend(SynthesisConfig(seed=None, mode="instruction_synthesis", documents="d.jsonl",
                                                generator_model="m"))
    assert seen == [backend_module.RESPONSE_PREFIX, "", ""]


def test_both_validators_name_the_same_reason_for_unparsable_text():
    """With and without the quality filters, a reply with no context gets one reason: an echo is
    ``echoed_prompt``, text without the marker ``missing_context_marker``, a bare marker (the reply
    prefix and nothing after it) ``empty_generation``."""
    from hf_context_synthesis.synthesis.config import SynthesisConfig
    from hf_context_synthesis.synthesis.generation import default_validator
    from hf_context_synthesis.synthesis.seeds import SeedExample

    seed = SeedExample(task="hotpotqa", instruction=PAIR[0], answer=PAIR[1], seed_id="hotpotqa/0")
    filtered = default_validator(SynthesisConfig(seed="s.jsonl"))
    plain = default_validator(SynthesisConfig(seed="s.jsonl", quality=False))
    cases = {_echo(): "echoed_prompt", DOC: "missing_context_marker", "Context:": "empty_generation",
             "Context:\n\n": "empty_generation"}
    for text, reason in cases.items():
        assert filtered(text, seed) == (None, reason), text
        assert plain(text, seed) == (None, reason), text
