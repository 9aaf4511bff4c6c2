"""TRL training path on CPU: build_trainer + ContextSynthesisSFTTrainer, LongAlign weighting, callbacks, CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from hf_context_synthesis.training.packing import (  # noqa: E402
    PackingConfig,
    count_weighted_sequences,
    longalign_loss,
    prepare_packed_dataset,
)
from hf_context_synthesis.trainer_callbacks.probe import LongContextProbeCallback  # noqa: E402
from hf_context_synthesis.trainer_callbacks.throughput import ThroughputCallback  # noqa: E402
from hf_context_synthesis.training.trainer import (  # noqa: E402
    SUMMARY_FILE,
    ContextSynthesisSFTTrainer,
    build_trainer,
    default_sft_config,
)


from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402


@pytest.fixture(scope="module")
def rows(seeds_dir):
    return composed_rows(seeds_dir)


def _chat_len(tok, row) -> int:
    return len(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])


def _config(tmp_path, **kw):
    base = dict(
        max_steps=5,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        activation_checkpointing=False,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return default_sft_config(str(tmp_path / "out"), **base)


def test_default_sft_config_is_set_up_for_prepacked_data(tmp_path):
    cfg = default_sft_config(str(tmp_path), warmup_ratio=0.05)
    assert cfg.dataset_kwargs == {"skip_prepare_dataset": True}
    assert cfg.remove_unused_columns is False and cfg.packing is False
    assert cfg.per_device_train_batch_size == 1 and cfg.max_length == 32768
    assert cfg.learning_rate == 2e-5 and str(getattr(cfg.lr_scheduler_type, "value", cfg.lr_scheduler_type)) == "cosine"
    assert cfg.num_train_epochs == 2 and cfg.warmup_steps == 0.05
    assert cfg.bf16 == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_sft_run_loss_decreases_and_callbacks_log(tmp_path, rows, tok, tiny_model_dir):
    """Five steps on one repeated example: the loss goes down; throughput and probe metrics are logged."""
    row = rows[0]
    length = _chat_len(tok, row)
    train = datasets.Dataset.from_list([row] * 12)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    probe = LongContextProbeCallback(rows[1:3], every_n_steps=2, max_new_tokens=3, at_train_end=False)
    throughput = ThroughputCallback()
    trainer = build_trainer(
        model,
        tok,
        train,
        _config(tmp_path, max_length=length),
        packing=PackingConfig(max_length=length, shuffle_seed=None),
        callbacks=[throughput, probe],
    )
    assert isinstance(trainer, ContextSynthesisSFTTrainer)
    # one example per pack: every batch is the same sequence
    first = trainer.train_dataset[0]
    assert all(trainer.train_dataset[i]["input_ids"] == first["input_ids"] for i in range(len(trainer.train_dataset)))
    trainer.train()
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.05, losses
    # throughput: from the PackedDataCollator counters, no padding with one packed row per batch
    steps = [h for h in history if "loss" in h]
    assert throughput.source == "position_ids"  # padding-free batches: counted from the trained forwards
    for h in steps[:-1]:
        assert 0 < h["padding_efficiency"] <= 1 and h["train_tokens_per_second"] > 0
    assert steps[-1]["train_real_tokens"] >= 5 * length
    # probe: at steps 2 and 4 only, model back in train mode
    assert sorted(h["step"] for h in history if "probe/accuracy@begin" in h) == [2, 4]
    assert all(0 <= h["probe/f1@end"] <= 1 for h in history if "probe/f1@end" in h)
    assert trainer.model.training
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["packing"]["max_length"] == length
    assert summary["packing_stats"]["num_rows"] == 12 and summary["packing_stats"]["num_examples"] == 12
    assert summary["hyperparameters"]["learning_rate"] == 3e-3 and summary["global_step"] == 5


def test_example_weighting_uses_longalign_loss(tmp_path, rows, tok, tiny_model_dir):
    lengths = sorted(_chat_len(tok, r) for r in rows)
    max_length = lengths[0] + lengths[1] + 8  # at least two examples fit in some packs
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    packing = PackingConfig(max_length=max_length, loss_weighting="example")
    trainer = build_trainer(
        model, tok, datasets.Dataset.from_list(rows), _config(tmp_path, max_steps=2, max_length=max_length), packing
    )
    packed = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert max(len(r["seq_lengths"]) for r in packed) >= 2
    # two packed rows whose answers differ in length (the collator concatenates a batch's rows), so
    # that per-example weighting differs from the per-token mean
    n_answer = [sum(1 for x in r["labels"] if x != -100) for r in packed]
    a = max(range(len(packed)), key=n_answer.__getitem__)
    b = min(range(len(packed)), key=n_answer.__getitem__)
    assert n_answer[a] > n_answer[b]
    batch = trainer.data_collator([packed[a], packed[b]])
    assert "loss_weights" in batch and "attention_mask" not in batch
    model.eval()
    with torch.no_grad():
        # a random tiny model predicts ~uniformly (every token's loss ~log V); spread its logits so
        # that per-token losses differ and the weighting shows
        model.get_input_embeddings().weight.mul_(30)
        got = trainer.compute_loss(model, dict(batch))
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}
        logits = model(**inputs).logits
        expected = longalign_loss(logits, batch["labels"], batch["loss_weights"])
        shift_labels = batch["labels"][:, 1:]
        token_mean = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
        )
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, token_mean, atol=1e-4)  # the weights change the loss
    model.train()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


class _RecordingCollator:
    """Wraps the trainer's collator and keeps every batch it builds (in order; the dataloader prefetches)."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, features):
        batch = self.inner(features)
        self.batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
        return batch


class _GradCapture(transformers.TrainerCallback):
    def __init__(self, param):
        self.param, self.grad = param, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grad is None:
            self.grad = self.param.grad.detach().clone()


def direct_longalign_loss(model, batches):
    """(1/M) * sum_i L_i / N_i over every example i of ``batches`` (M examples with answer tokens), computed
    example by example from full logits: the definition, independent of the trainer's implementation."""
    total, m = 0.0, 0
    for b in batches:
        ids, labels = b["input_ids"][0], b["labels"][0]
        pos = b["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for s, e in zip(starts, starts[1:]):
            logits = model(input_ids=ids[s:e].unsqueeze(0)).logits[0].float()
            target = labels[s:e]
            ce = torch.nn.functional.cross_entropy(logits[:-1], target[1:], ignore_index=-100, reduction="sum")
            n = int((target[1:] != -100).sum())
            if n:
                total, m = total + ce / n, m + 1
    return total / m, m


def test_longalign_weighting_is_exact_over_gradient_accumulation(tmp_path, rows, tok, tiny_model_dir):
    """Two micro-batches per step whose packs hold different numbers of examples: the step's loss and
    gradient are those of (1/M) sum_i L_i/N_i over all M examples of the step, not a mean of per-batch means."""
    lengths = sorted(_chat_len(tok, r) for r in rows)
    max_length = lengths[0] + lengths[1] + lengths[2] + 8
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():  # spread the random model's logits so that per-token losses differ
        model.get_input_embeddings().weight.mul_(30)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    capture = _GradCapture(model.lm_head.weight)
    config = _config(tmp_path, max_steps=1, max_length=max_length, gradient_accumulation_steps=2, max_grad_norm=0.0)
    packing = PackingConfig(max_length=max_length, loss_weighting="example", shuffle_seed=None)
    by_length = sorted(rows, key=lambda r: _chat_len(tok, r))
    # the step's two micro-batches: a pack of the three shortest examples and one of the longest alone
    packed = datasets.concatenate_datasets(
        [prepare_packed_dataset(datasets.Dataset.from_list(part), tok, packing) for part in (by_length[:3], by_length[-1:])]
    )
    assert sorted(len(x) for x in packed["seq_lengths"]) == [1, 3]
    trainer = build_trainer(model, tok, packed, config, packing, callbacks=[capture])
    recorder = _RecordingCollator(trainer.data_collator)
    trainer.data_collator = recorder
    trainer.train()
    step = recorder.batches[:2]
    per_batch = [count_weighted_sequences(b["loss_weights"]) for b in step]
    assert len(set(per_batch)) == 2, per_batch  # the two micro-batches hold different numbers of examples
    reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference.load_state_dict(initial)
    expected, m = direct_longalign_loss(reference, step)
    assert m == sum(per_batch)
    expected.backward()
    logged = trainer.state.log_history[-1]["train_loss"]
    assert math.isclose(logged, expected.item(), rel_tol=1e-4), (logged, expected.item())
    assert torch.allclose(capture.grad, reference.lm_head.weight.grad, rtol=1e-3, atol=1e-6)
    # the old per-collate-call normalisation (mean of each micro-batch's per-example mean) differs here
    with torch.no_grad():
        means = [direct_longalign_loss(reference, [b])[0] for b in step]
    assert not math.isclose(float(sum(means) / 2), float(expected), rel_tol=1e-3)
    # TRL's metrics survive on the LongAlign path
    entry = next(h for h in trainer.state.log_history if "loss" in h)
    assert 0 <= entry["mean_token_accuracy"] <= 1 and entry["entropy"] > 0
    assert entry["num_tokens"] == sum(b["input_ids"].numel() for b in step)


def test_build_trainer_balanced_rows_train_in_order_and_mismatch_warns(tmp_path, rows, tok, tiny_model_dir, caplog):
    from hf_context_synthesis.training.packing import get_packing_stats

    lengths = sorted(_chat_len(tok, r) for r in rows)
    max_length = lengths[-1] + lengths[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    packing = PackingConfig(max_length=max_length, row_order="balanced")
    config = _config(tmp_path, max_length=max_length + 1, gradient_accumulation_steps=4)
    with caplog.at_level("WARNING", logger="hf_context_synthesis.training.trainer"):
        trainer = build_trainer(model, tok, datasets.Dataset.from_list(rows), config, packing)
    assert any("differs from SFTConfig.max_length" in r.getMessage() for r in caplog.records)
    assert isinstance(trainer._get_train_sampler(), torch.utils.data.SequentialSampler)
    assert trainer.model.config._attn_implementation == "packed_sdpa"  # CPU: each packed example attends alone
    stats = get_packing_stats(trainer.train_dataset)
    # one rank, 4 micro-batches a step: the rows are padded (no loss tokens) to whole steps
    assert len(trainer.train_dataset) % 4 == 0 and stats.num_padding_rows == len(trainer.train_dataset) - stats.num_rows
    assert stats.num_ranks == 1 and stats.balance_ratio == 1.0
    pads = [r for r in trainer.train_dataset if all(x == -100 for x in r["labels"])]
    assert len(pads) == stats.num_padding_rows and all(len(r["input_ids"]) == 1 for r in pads)


def test_build_trainer_rejects_unknown_columns(tmp_path, tok, tiny_model_dir):
    with pytest.raises(ValueError, match="messages"):
        build_trainer(tiny_model_dir, tok, datasets.Dataset.from_list([{"text": "hi"}]), _config(tmp_path))


def _write_parquet_dataset(rows, folder: Path) -> Path:
    from hf_context_synthesis.synthesis.schema import ROW_FEATURES

    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=ROW_FEATURES).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


CLI_SPEED = ["--activation_checkpointing", "false", "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true"]


def test_cli_train_writes_model_and_summary(tmp_path, rows, tiny_model_dir):
    from hf_context_synthesis.cli import main

    data = _write_parquet_dataset(rows, tmp_path / "synth")
    out = tmp_path / "model"
    argv = ["train", "--model", tiny_model_dir, "--dataset", str(data), "--output", str(out)]
    rc = main([*argv, "--max-steps", "2", "--max_length", "1024", "--learning_rate", "1e-4", *CLI_SPEED])
    assert rc == 0
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    assert list(out.glob("*.safetensors"))
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["base_model"] == tiny_model_dir and summary["dataset"] == str(data)
    assert summary["packing"]["max_length"] == 1024 and summary["packing"]["loss_weighting"] == "token"
    assert summary["packing_stats"]["source_rows"] == len(rows)
    hp = summary["hyperparameters"]
    assert hp["learning_rate"] == 1e-4 and hp["max_steps"] == 2 and hp["lr_scheduler_type"] == "cosine"
    assert summary["global_step"] == 2
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.vocab_size > 0


def test_cli_yaml_config_and_flag_precedence(tmp_path, rows, tiny_model_dir, monkeypatch):
    import yaml

    from hf_context_synthesis.cli import main

    data = _write_parquet_dataset(rows, tmp_path / "synth")
    out = tmp_path / "model"
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": tiny_model_dir,
                "dataset": str(data),
                "output": str(out),
                "max_steps": 3,
                "max_length": 768,
                "loss_weighting": "example",
                "learning_rate": 5e-4,
                "activation_checkpointing": False,
                "save_strategy": "no",
                "use_cpu": True,
                "probe_every_steps": 1,
                "probe_examples": 2,
                "probe_max_new_tokens": 2,
                "env": {"CONTEXT_SYNTHESIS_TEST_ENV": "set-by-yaml"},
            }
        )
    )
    monkeypatch.setenv("CONTEXT_SYNTHESIS_TEST_ENV", "unset")  # restored after the test
    rc = main(["train", "--config", str(cfg), "--max_steps", "1", "--disable_tqdm", "true"])
    assert rc == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["global_step"] == 1  # the flag beats the file
    assert summary["hyperparameters"]["learning_rate"] == 5e-4 and summary["hyperparameters"]["max_length"] == 768
    assert summary["packing"]["loss_weighting"] == "example" and summary["packing"]["max_length"] == 768
    assert summary["packing_stats"]["source_rows"] == len(rows) - 2  # probe rows held out of training
    assert os.environ.get("CONTEXT_SYNTHESIS_TEST_ENV") == "set-by-yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": tiny_model_dir, "not_a_field": 1}))
    assert main(["train", "--config", str(bad)]) == 2
    assert main(["train", "--model", tiny_model_dir, "--output", str(out)]) == 2  # no --dataset


def test_streaming_dataset_trains_and_reports_packing_stats_read_during_training(tmp_path, rows, tok, tiny_model_dir):
    """An IterableDataset is packed on the fly; the summary holds the stats of what was actually read."""
    stream = datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    max_length = max(_chat_len(tok, r) for r in rows)
    trainer = build_trainer(
        model, tok, stream, _config(tmp_path, max_steps=3, max_length=max_length),
        packing=PackingConfig(max_length=max_length, stream_buffer_size=4),
    )
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)
    trainer.train()
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    stats = summary["packing_stats"]
    assert summary["global_step"] == 3
    assert stats["num_rows"] >= 3 and stats["num_examples"] >= stats["num_rows"]
    assert 0 < stats["efficiency"] <= 1


def test_cli_train_takes_trl_names_and_refuses_packing_conflicts(tmp_path, rows, tiny_model_dir, capsys):
    """--packing true etc. are refused up front, with the reason, under TRL's flag names."""
    from hf_context_synthesis.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "trl-names"
    base = ["train", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(data), "--output_dir", str(out)]
    for flag, value, why in (
        ("--packing", "true", "packed by hf_context_synthesis"),
        ("--padding_free", "true", "already padding-free"),
        ("--remove_unused_columns", "true", "seq_lengths"),
    ):
        assert main([*base, flag, value]) == 2
        err = capsys.readouterr().err
        assert f"{flag} true conflicts with the packing path" in err and why in err
        assert not out.exists()  # refused before anything is written
    assert main(["train", "--model_name_or_path", tiny_model_dir, "--model", str(tmp_path / "other"),
                 "--dataset_name", str(data), "--output_dir", str(out)]) == 2
    assert "disagree" in capsys.readouterr().err
    # a run with these names (and --dataset_num_proc) is tests/test_distributed.py's 2-process training


def test_packed_rows_never_reach_a_collator_that_adds_an_all_ones_mask(tmp_path, rows, tok, tiny_model_dir):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hf_context_synthesis.training.packing import PackedDataCollator

    lengths = sorted(_chat_len(tok, r) for r in rows)
    max_length = lengths[0] + lengths[1] + 8
    packed = prepare_packed_dataset(datasets.Dataset.from_list(rows), tok, PackingConfig(max_length=max_length))
    assert max(len(x) for x in packed["seq_lengths"]) >= 2
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = _config(tmp_path, max_length=max_length)
    # TRL's default (padded) collator: refused with the reason
    with pytest.raises(ValueError, match="attend to each other"):
        ContextSynthesisSFTTrainer(
            model=model, args=config, train_dataset=packed, processing_class=tok,
            data_collator=DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id),
        )
    # no collator given: ours is picked, the batches carry no attention mask
    trainer = ContextSynthesisSFTTrainer(model=model, args=config, train_dataset=packed, processing_class=tok)
    assert isinstance(trainer.data_collator, PackedDataCollator)
    assert "attention_mask" not in trainer.data_collator([packed[0]])
