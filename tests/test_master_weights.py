"""fp32 master weights by default (issue 20, item 1): a bf16 checkpoint's weights move at the paper's lr."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from hf_context_synthesis.training.packing import PackingConfig  # noqa: E402
from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402
from hf_context_synthesis.training.trainer import TrainingJobArguments, build_trainer, default_sft_config, model_load_kwargs  # noqa: E402


@pytest.fixture(scope="module")
def bf16_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama saved as a bf16 checkpoint (as Llama-3.1-8B is)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    out = tmp_path_factory.mktemp("bf16-llama")
    model.to(torch.bfloat16).save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def _one_step(tmp_path, bf16_dir, tok, rows, master_weights):
    row = rows[0]
    length = len(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
    cfg = default_sft_config(
        str(tmp_path / master_weights), max_steps=1, learning_rate=2e-5, lr_scheduler_type="constant",
        warmup_steps=0, activation_checkpointing=False, save_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=0, max_length=length,
    )
    trainer = build_trainer(bf16_dir, tok, datasets.Dataset.from_list([row] * 2), cfg,
                            packing=PackingConfig(max_length=length, shuffle_seed=None), master_weights=master_weights)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.ndim == 2}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = sum(int((after[n].detach() != b).sum()) for n, b in before.items())
    total = sum(b.numel() for b in before.values())
    return trainer.model.dtype, moved / total


def test_bf16_checkpoint_trains_fp32_master_weights_by_default_and_moves(tmp_path, bf16_dir, tok, seeds_dir, caplog):
    rows = composed_rows(seeds_dir)
    dtype, moved = _one_step(tmp_path, bf16_dir, tok, rows, "fp32")
    assert dtype == torch.float32
    assert moved > 0.9, moved  # Adam's first step moves every weight with a gradient by ~lr
    with caplog.at_level(logging.WARNING, logger="hf_context_synthesis.training.trainer"):
        dtype, moved_bf16 = _one_step(tmp_path, bf16_dir, tok, rows, "checkpoint")
    assert dtype == torch.bfloat16
    assert moved_bf16 < 0.5 < moved, (moved_bf16, moved)  # pure bf16: most 2e-5 updates are rounded away
    assert "rounded away" in caplog.text


def test_model_load_kwargs_explicit_dtype_wins_and_auto_means_fp32(caplog):
    cfg = type("Cfg", (), {"model_init_kwargs": None})()
    assert model_load_kwargs(cfg)["dtype"] == torch.float32
    cfg.model_init_kwargs = {"dtype": "auto", "attn_implementation": "sdpa"}
    assert model_load_kwargs(cfg) == {"dtype": torch.float32, "attn_implementation": "sdpa"}
    assert model_load_kwargs(cfg, "checkpoint")["dtype"] == "auto"
    cfg.model_init_kwargs = {"torch_dtype": "bfloat16"}
    with caplog.at_level(logging.WARNING, logger="hf_context_synthesis.training.trainer"):
        assert model_load_kwargs(cfg) == {"dtype": torch.bfloat16}
    assert "bfloat16" in caplog.text and "rounded away" in caplog.text
    with pytest.raises(ValueError, match="master_weights"):
        TrainingJobArguments(master_weights="bf16")
