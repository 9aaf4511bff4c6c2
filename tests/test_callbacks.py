"""Trainer callbacks: throughput / padding efficiency and the positional long-context probe, on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_context_synthesis.trainer_callbacks.probe import (  # noqa: E402
    LongContextProbeCallback,
    build_probe_prompts,
    relevant_slot_for,
)
from hf_context_synthesis.testing.rows import composed_rows as _composed_rows  # noqa: E402
from hf_context_synthesis.trainer_callbacks.throughput import ThroughputCallback  # noqa: E402


def composed_rows(seeds_dir: Path, tasks=("hotpotqa", "qasper"), per_task: int = 6, num_distractors: int = 4):
    return _composed_rows(seeds_dir, tasks, per_task, num_distractors)


# -- probe prompt construction --------------------------------------------------------------------


def test_probe_prompts_move_only_the_relevant_document(seeds_dir):
    rows = composed_rows(seeds_dir)
    for row in rows:
        prompt = row["messages"][0]["content"]
        docs = [prompt[s:e] for s, e in row["context_spans"]]
        relevant = docs[row["relevant_index"]]
        others = [d for i, d in enumerate(docs) if i != row["relevant_index"]]
        probes = build_probe_prompts(row, ("begin", "middle", "end", str(row["relevant_index"])))
        for probe in probes:
            text = probe["messages"][-1]["content"]
            assert probe["documents"][probe["slot"]] == relevant
            assert [d for d in probe["documents"] if d != relevant] == others
            # the template text before the first and after the last document is untouched
            assert text.startswith(prompt[: row["context_spans"][0][0]])
            assert text.endswith(prompt[row["context_spans"][-1][1] :])
            assert text.count(relevant) == 1 and len(text) == len(prompt)
        assert [p["slot"] for p in probes[:3]] == [0, len(docs) // 2, len(docs) - 1]
        # putting the document back where it was reproduces the original prompt exactly
        assert probes[3]["messages"][-1]["content"] == prompt


def test_probe_prompt_errors_name_the_row(seeds_dir):
    row = composed_rows(seeds_dir)[0]
    with pytest.raises(ValueError, match=r"hotpotqa/\d+.*relevant_index"):
        build_probe_prompts({**row, "relevant_index": 99})
    with pytest.raises(ValueError, match="context_spans"):
        build_probe_prompts({**row, "context_spans": [[0, 10**9]]})
    assert relevant_slot_for("middle", 10) == 5 and relevant_slot_for("end", 10) == 9
    with pytest.raises(ValueError):
        relevant_slot_for("sideways", 10)


class FirstDocumentReader(torch.nn.Module):
    """A stand-in LM that answers right only when the relevant document comes first, else a wrong answer."""

    def __init__(self, tokenizer, rows):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.rows = rows
        self.calls = 0

    def generate(self, input_ids, max_new_tokens, **kwargs):
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        text = self.tokenizer.decode(input_ids[0])
        row = max((r for r in self.rows if r["instruction"] in text), key=lambda r: len(r["instruction"]))
        start = text.find(row["relevant_context"])
        first = all(start <= text.find(d) for d in (row["messages"][0]["content"][s:e] for s, e in row["context_spans"]) if d in text)
        answer = row["answer"] if first else "zzz"
        new = self.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([input_ids, new], dim=1)


def test_probe_scores_by_position(seeds_dir, tiny_model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = composed_rows(seeds_dir)
    cb = LongContextProbeCallback(rows, tok, max_examples=4, max_new_tokens=64)
    model = FirstDocumentReader(tok, rows)
    model.train()
    metrics = cb.run_probe(model)
    assert model.training  # put back in train mode
    assert model.calls == 4 * 3
    assert metrics["probe/accuracy@begin"] == 1.0 and metrics["probe/f1@begin"] > 0.9
    assert metrics["probe/accuracy@middle"] == 0.0 and metrics["probe/accuracy@end"] == 0.0
    assert metrics["probe/f1@end"] < metrics["probe/f1@begin"]


def test_probe_drops_summary_rows(seeds_dir):
    rows = composed_rows(seeds_dir, tasks=("hotpotqa", "govreport"), per_task=3, num_distractors=2)
    cb = LongContextProbeCallback(rows, every_n_steps=1)
    assert {p["seed_id"].split("/")[0] for p in cb.prompts} == {"hotpotqa"}
    with pytest.raises(ValueError):
        LongContextProbeCallback([])


# -- in a real Trainer --------------------------------------------------------------------------


class CountingPadCollator:
    """Pads a causal-LM batch and counts real / batch tokens like PackedDataCollator does."""

    def __init__(self, tokenizer):
        self.inner = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False)
        self.real_tokens = 0
        self.batch_tokens = 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real_tokens += int(batch["attention_mask"].sum())
        self.batch_tokens += int(batch["input_ids"].numel())
        return batch


def _plain_trainer(tmp_path, tiny_model_dir, rows, callbacks, collator=None, max_steps=4, workers=0):
    import datasets

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    chats = [tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"] for r in rows]
    ids = [x[: 48 + 17 * i] for i, x in enumerate(chats)]  # distinct lengths: batches of 2 need padding
    ds = datasets.Dataset.from_dict({"input_ids": ids})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_steps=max_steps,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=workers,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=collator or transformers.DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok,
        callbacks=callbacks,
    )
    return trainer, ids


class NoMask:
    """Drops the attention mask: the callback must fall back to the collator counters / pad tokens."""

    def __init__(self, inner):
        self.data_collator = inner

    def __call__(self, features):
        batch = self.data_collator(features)
        batch.pop("attention_mask")
        return batch


@pytest.mark.parametrize("source", ["attention_mask", "pad_token"])
def test_throughput_logs_with_plain_trainer(tmp_path, seeds_dir, tiny_model_dir, source):
    rows = composed_rows(seeds_dir, per_task=4)  # 8 rows of different lengths: 4 steps = one epoch
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    counting = CountingPadCollator(tok)
    collator = {"attention_mask": counting, "pad_token": NoMask(counting)}[source]
    cb = ThroughputCallback()  # discovers the counting collator through the wrapper's attributes
    trainer, ids = _plain_trainer(tmp_path, tiny_model_dir, rows, [cb], collator=collator)
    trainer.train()
    assert cb.source == source
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4
    # counted when the model trains on a batch: every window, the last included, has its own step
    # (a window that also counted a prefetched batch would hold four examples, not two)
    pairs = {len(a) + len(b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
    deltas = np.diff([0.0] + [h["train_real_tokens"] for h in logs])
    assert all(d in pairs for d in deltas), (deltas, sorted(pairs))
    assert deltas.sum() == sum(len(x) for x in ids)
    for h in logs:
        assert h["train_tokens_per_second"] > 0
        assert 0 < h["padding_efficiency"] <= 1
        assert h["train_world_size"] == 1.0
        assert h["train_tokens_per_second_per_rank"] == h["train_tokens_per_second"]
    # lengths differ inside batches of 2: some padding is measured
    assert min(h["padding_efficiency"] for h in logs) < 1
    # the collator ran ahead of training (prefetch); the callback's counts did not
    assert counting.real_tokens >= logs[0]["train_real_tokens"]
    # one full epoch: every real token counted once, and the epoch boundary has its own figures
    assert cb.epochs and cb.epochs[-1]["train_epoch_real_tokens"] == sum(len(x) for x in ids)
    epoch_entries = [h for h in trainer.state.log_history if "train_epoch_tokens_per_second" in h]
    assert len(epoch_entries) == 1 and epoch_entries[0]["train_epoch_tokens_per_second"] > 0
    assert logs[-1]["train_batch_tokens"] > logs[-1]["train_real_tokens"]


def test_throughput_rejects_collator_without_counters():
    with pytest.raises(TypeError, match="real_tokens"):
        ThroughputCallback(collator=lambda features: features)


def test_probe_logs_at_configured_steps_and_restores_train_mode(tmp_path, seeds_dir, tiny_model_dir):
    rows = composed_rows(seeds_dir, per_task=4)
    probe = LongContextProbeCallback(rows[:2], every_n_steps=2, max_new_tokens=4, at_train_end=False)
    trainer, _ = _plain_trainer(tmp_path, tiny_model_dir, rows, [probe], max_steps=3)
    trainer.train()
    probed = {h["step"] for h in trainer.state.log_history if "probe/accuracy@middle" in h}
    assert probed == {2}
    entry = next(h for h in trainer.state.log_history if h.get("step") == 2 and "probe/f1@end" in h)
    assert "loss" in entry  # merged into the step's training log
    for pos in ("begin", "middle", "end"):
        assert 0.0 <= entry[f"probe/accuracy@{pos}"] <= 1.0
    assert trainer.model.training
    assert [h["step"] for h in probe.history] == [2.0]
