"""Packed rows never run on an attention path that mixes their documents (issue 20, item 2)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from hf_context_synthesis.training.attention import PACKED_SDPA, PackedAttentionError, packed_rows_unsafe_reason  # noqa: E402
from hf_context_synthesis.training.packing import PackingConfig  # noqa: E402
from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402
from hf_context_synthesis.training.trainer import build_trainer, default_sft_config  # noqa: E402


@pytest.fixture(scope="module")
def packed(seeds_dir, tok, tiny_model_dir, tmp_path_factory):
    """A trainer on rows of two examples each, and the collated batch of its first row."""
    rows = composed_rows(seeds_dir)[:2]
    length = sum(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows)
    cfg = default_sft_config(str(tmp_path_factory.mktemp("guard")), max_steps=1, use_cpu=True, save_strategy="no",
                             activation_checkpointing=False, disable_tqdm=True, max_length=length)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = build_trainer(model, tok, datasets.Dataset.from_list(rows), cfg,
                            packing=PackingConfig(max_length=length, shuffle_seed=None))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert len(trainer.train_dataset[0]["seq_lengths"]) == 2 and "attention_mask" not in batch
    trainer.model.eval()
    return trainer, {k: v for k, v in batch.items() if k in ("input_ids", "position_ids", "cu_seq_lens_q",
                                                             "cu_seq_lens_k", "max_length_q", "max_length_k")}


def test_guard_refuses_a_cache_on_paths_that_ignore_the_boundaries(packed):
    trainer, batch = packed
    model = trainer.model
    assert model.config._attn_implementation == PACKED_SDPA  # CPU: build_trainer switched sdpa to packed_sdpa
    with torch.no_grad():
        safe = model(**batch, use_cache=False).logits
        # packed_sdpa reads cu_seq_lens itself: a cache changes nothing
        assert torch.allclose(model(**batch, use_cache=True).logits, safe, atol=1e-5)
        no_cu = {k: batch[k] for k in ("input_ids", "position_ids")}  # falls back to sdpa over transformers' mask
        assert torch.allclose(model(**no_cu, use_cache=False).logits, safe, atol=1e-5)
        with pytest.raises(PackedAttentionError, match="attend to each other"):
            model(**no_cu, use_cache=True)
        model.set_attn_implementation("sdpa")
        try:
            with pytest.raises(PackedAttentionError):
                model(**no_cu, use_cache=True)
            # what the guard prevents: without it the second document sees the first one
            model._context_synthesis_packed_guard.remove()
            mixed = model(**no_cu, use_cache=True).logits
            assert (mixed - safe).abs().max() > 1e-3
        finally:
            model.set_attn_implementation(PACKED_SDPA)
            from hf_context_synthesis.training.attention import guard_packed_forward

            model._context_synthesis_packed_guard = None
            guard_packed_forward(model)


def test_unsafe_reason_per_attention_path():
    assert packed_rows_unsafe_reason("sdpa", use_cache=False, has_cu_seq_lens=False) is None
    assert packed_rows_unsafe_reason("flash_attention_2", use_cache=True, has_cu_seq_lens=False) is None
    assert packed_rows_unsafe_reason(PACKED_SDPA, use_cache=True, has_cu_seq_lens=True) is None
    for impl in ("eager", "sdpa", "flex_attention"):
        assert "attend to each other" in packed_rows_unsafe_reason(impl, use_cache=True, has_cu_seq_lens=True)
