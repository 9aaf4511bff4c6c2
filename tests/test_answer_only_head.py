"""The LongAlign/fused loss projects answer tokens only, with the full-logits loss and gradients (issue 20, item 3)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import trl.kernels  # noqa: E402

from hf_context_synthesis.training.packing import PackingConfig, longalign_loss  # noqa: E402
from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402
from hf_context_synthesis.training.trainer import build_trainer, default_sft_config  # noqa: E402


@pytest.mark.parametrize("weighting", ["example", "token"])
def test_answer_only_head_matches_full_logits_loss_and_gradients(weighting, seeds_dir, tok, tiny_model_dir, tmp_path,
                                                                 monkeypatch):
    rows = composed_rows(seeds_dir)[:3]
    length = sum(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows)
    cfg = default_sft_config(str(tmp_path), max_steps=1, use_cpu=True, save_strategy="no", disable_tqdm=True,
                             activation_checkpointing=False, max_length=length)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30)  # spread the logits: per-token losses differ
    trainer = build_trainer(model, tok, datasets.Dataset.from_list(rows), cfg,
                            packing=PackingConfig(max_length=length, shuffle_seed=None, loss_weighting=weighting))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert len(trainer.train_dataset[0]["seq_lengths"]) == 3
    projected: list[int] = []
    apply = trl.kernels.ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        projected.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl.kernels.ChunkedLogProbFunction, "apply", counting)
    model.train()
    model.zero_grad()
    got = trainer.compute_loss(model, dict(batch))
    got.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert projected == [answer_tokens] and answer_tokens < batch["input_ids"].shape[1] // 4  # answers only

    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}
    logits = model(**inputs).logits  # the model's own forward: full [tokens, vocab] logits
    expected = longalign_loss(logits, batch["labels"], batch.get("loss_weights"))
    expected.backward()
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    assert set(ours) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        assert torch.allclose(ours[name], p.grad, atol=1e-5, rtol=1e-4), name


def test_loss_memory_benchmark_smoke(capsys):
    """benchmarks/loss_memory.py runs its three methods (same loss) at a tiny size and prints the ratios."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "loss_memory.py"
    spec = importlib.util.spec_from_file_location("loss_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tokens", "256", "--vocab", "1024", "--hidden", "32", "--answer", "4"]) == 0
    out = capsys.readouterr().out
    assert "answer/full" in out and out.strip().splitlines()[-1].split()[0] == "256"
