"""One packed attention path per device, never a dense mask (issue 20, item 2); CUDA is mocked for the choice only."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from hf_context_synthesis.training import attention  # noqa: E402
from hf_context_synthesis.training import trainer as training  # noqa: E402
from hf_context_synthesis.training.attention import PACKED_SDPA, choose_packed_attention, use_packed_attention  # noqa: E402
from hf_context_synthesis.training.packing import PackingConfig  # noqa: E402
from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402


def test_choice_per_device():
    assert choose_packed_attention("cuda", flash_installed=True, flex_available=True) == "flash_attention_2"
    assert choose_packed_attention("cuda", flash_installed=False, flex_available=True) == "flex_attention"
    assert choose_packed_attention("cuda", flash_installed=False, flex_available=False) == PACKED_SDPA
    for flash in (True, False):  # no varlen kernel and no flex backward off CUDA
        assert choose_packed_attention("cpu", flash_installed=flash, flex_available=True) == PACKED_SDPA


@pytest.mark.parametrize(("flex", "expected"), [(True, "flex_attention"), (False, PACKED_SDPA)])
def test_build_trainer_on_cuda_switches_dense_paths_and_logs(flex, expected, seeds_dir, tok, tiny_model_dir, tmp_path,
                                                             monkeypatch, caplog):
    # the device is mocked for the choice only: the Trainer still runs on CPU (use_cpu) and no kernel is faked
    monkeypatch.setattr(training, "_trains_on_cpu", lambda cfg: False)
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    monkeypatch.setattr(attention, "flex_attention_available", lambda: flex)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    cfg = training.default_sft_config(str(tmp_path), max_steps=1, use_cpu=True, save_strategy="no", disable_tqdm=True,
                                      activation_checkpointing=False, max_length=4096)
    with caplog.at_level(logging.INFO, logger="hf_context_synthesis.training.attention"):
        training.build_trainer(model, tok, datasets.Dataset.from_list(composed_rows(seeds_dir)[:2]), cfg,
                               packing=PackingConfig(max_length=4096, cpu_packed_attention=False))
    assert model.config._attn_implementation == expected
    assert f"packed rows on cuda: attention switched from sdpa to {expected}" in caplog.text


def test_chosen_implementations_are_kept_and_cpu_gets_packed_sdpa(tiny_model_dir, monkeypatch):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: True)  # irrelevant on CPU
    assert use_packed_attention(model) == PACKED_SDPA and model.config._attn_implementation == PACKED_SDPA
    assert use_packed_attention(model, "cuda") == PACKED_SDPA  # not a dense path any more: kept
