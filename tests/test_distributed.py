"""Two-process training (gloo DDP on CPU) through ``context-synthesis train`` and ``build_trainer``.

One ``accelerate launch --multi_gpu --num_processes 2`` run (tests/distributed_train.py) with TRL's flag
names, gradient accumulation 2 and LongAlign weighting, on 12 examples packed into 6 rows (2 padding
rows make whole steps of 2 ranks x 2 micro-batches). Checked from what each rank's model was fed:
every example trained exactly once per epoch, on one rank; the first step's loss equals LongAlign's
(1/M) sum_i L_i/N_i over the examples of both ranks and both micro-batches; the summary and the
throughput figures are global and labelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("trl")

from hf_context_synthesis.training.packing import PackingConfig, prepare_packed_dataset  # noqa: E402
from hf_context_synthesis.testing.rows import composed_rows  # noqa: E402

HERE = Path(__file__).parent
#: `accelerate` of this interpreter (the CLI on PATH may belong to another environment)
ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
MAX_LENGTH = 700
EPOCHS = 2


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _segments(ids: list[int], pos: list[int]) -> list[tuple[int, ...]]:
    starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
    return [tuple(ids[a:b]) for a, b in zip(starts, starts[1:])]


@pytest.fixture(scope="module")
def run(tmp_path_factory, seeds_dir, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("ddp")
    rows = composed_rows(seeds_dir)  # 12 examples
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    record = tmp / "record"
    record.mkdir()
    out = tmp / "out"
    env = {
        **os.environ,
        "HF_HOME": str(tmp / "hf"),
        "HF_DATASETS_CACHE": str(tmp / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("ACCELERATE_USE_CPU", None)  # the train command itself must turn gloo DDP on without CUDA
    cmd = [
        *ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(HERE / "distributed_train.py"), tiny_model_dir, str(data), str(out), str(record),
        "--max_length", str(MAX_LENGTH), "--num_train_epochs", str(EPOCHS), "--gradient_accumulation_steps", "2",
        "--loss_weighting", "example", "--logging_steps", "1", "--save_strategy", "no",
        "--activation_checkpointing", "false", "--learning_rate", "1e-3", "--warmup_steps", "0",
        "--disable_tqdm", "true", "--dataset_num_proc", "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"rows": rows, "ranks": ranks, "out": out, "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def expected(run, tok):
    from datasets import Dataset

    packed = prepare_packed_dataset(Dataset.from_list(run["rows"]), tok, PackingConfig(max_length=MAX_LENGTH))
    examples = {}
    for row in packed:
        bounds = [0]
        for n in row["seq_lengths"]:
            bounds.append(bounds[-1] + n)
        for a, b in zip(bounds, bounds[1:]):
            examples[tuple(row["input_ids"][a:b])] = row["labels"][a:b]
    return examples


def test_two_gloo_ranks_train_every_example_once_per_epoch(run, expected, tok):
    ranks = run["ranks"]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rc"] for r in ranks] == [0, 0]
    # whole steps: both ranks ran the same number of micro-batches (2 epochs x 2 steps x 2 micro-batches)
    assert [len(r["batches"]) for r in ranks] == [EPOCHS * 4, EPOCHS * 4]
    trained: Counter = Counter()
    padding = 0
    for r in ranks:
        for b in r["batches"]:
            for seg in _segments(b["input_ids"], b["position_ids"]):
                if seg in expected:
                    trained[seg] += 1
                else:
                    assert seg == (_pad_id(tok),), "a trained segment is neither an example nor a padding row"
                    padding += 1
    assert len(expected) == 12
    assert trained == Counter({ex: EPOCHS for ex in expected})  # each example once per epoch, never re-fed
    assert padding == EPOCHS * 2  # 6 rows -> 8 = whole steps; the 2 padding rows carry no loss
    # within an epoch no example is trained on both ranks
    half = EPOCHS * 4 // EPOCHS
    for epoch in range(EPOCHS):
        seen = [
            {s for b in r["batches"][epoch * half : (epoch + 1) * half] for s in _segments(b["input_ids"], b["position_ids"])}
            for r in ranks
        ]
        assert not (seen[0] & seen[1]) - {(_pad_id(tok),)}


def test_first_step_loss_is_longalign_over_the_global_batch(run, expected, tiny_model_dir):
    """Step 1 = micro-batches 0 and 1 of both ranks, all under the initial weights."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    per_example = []
    for r in run["ranks"]:
        for b in r["batches"][:2]:
            for seg in _segments(b["input_ids"], b["position_ids"]):
                if seg not in expected:
                    continue
                labels = torch.tensor(expected[seg][1:])
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([seg]), use_cache=False).logits[0, :-1].float()
                mask = labels != -100
                per_example.append(F.cross_entropy(logits[mask], labels[mask]).item())  # L_i / N_i
    assert len(per_example) >= 3  # examples from both ranks and both micro-batches
    direct = sum(per_example) / len(per_example)  # (1/M) sum_i L_i / N_i
    state = json.loads((run["out"] / "trainer_state.json").read_text())
    first = next(h for h in state["log_history"] if "loss" in h)
    assert first["step"] == 1
    assert abs(first["loss"] - direct) < 2e-3 * max(1.0, direct), (first["loss"], direct)


def test_summary_and_throughput_are_global_and_labelled(run, expected):
    summary = json.loads((run["out"] / "context_synthesis_training.json").read_text())
    # TRL's flag names reached the job: --model_name_or_path, --dataset_name, --dataset_num_proc -> packing
    assert summary["base_model"] and summary["dataset"].endswith("data.jsonl")
    assert summary["packing"]["num_proc"] == 1 and summary["packing"]["loss_weighting"] == "example"
    stats = summary["packing_stats"]
    assert stats["world_size"] == 2 and stats["num_ranks"] == 2 and stats["num_padding_rows"] == 2
    example_tokens = sum(len(e) for e in expected)
    # what both ranks' models trained on, both epochs; padding rows are not real tokens
    assert stats["trained_real_tokens"] == EPOCHS * example_tokens
    assert stats["trained_batch_tokens"] == EPOCHS * (example_tokens + 2)
    assert stats["collated_real_tokens"] >= stats["rank0_collated_real_tokens"]
    state = json.loads((run["out"] / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert all(h["train_world_size"] == 2 for h in logs)
    for h in logs:
        assert h["train_tokens_per_second_per_rank"] == pytest.approx(h["train_tokens_per_second"] / 2)
    # TRL's num_tokens is global too (both ranks, padding rows included)
    assert logs[-1]["num_tokens"] == EPOCHS * (example_tokens + 2)
    epochs = [h for h in state["log_history"] if "train_epoch_real_tokens" in h]
    assert [h["train_epoch_real_tokens"] for h in epochs] == [example_tokens] * EPOCHS


def test_accelerate_cpu_flag_quietly_starts_one_process(tmp_path):
    """What the README says about launching on a machine without CUDA: ``--cpu --num_processes 2``
    quietly starts ONE process (``--multi_gpu --num_processes 2`` starts two, which train as one gloo
    DDP job because ``context-synthesis train`` sets ``use_cpu``: the ``run`` fixture above)."""
    if torch.cuda.is_available():
        pytest.skip("about machines without CUDA")
    script = tmp_path / "who.py"
    script.write_text("import os\nprint('PROCESS', os.environ.get('RANK', 'none'), flush=True)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("ACCELERATE_USE_CPU", None)
    common = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cpu = subprocess.run([*ACCELERATE, "launch", "--cpu", *common, str(script)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    assert cpu.stdout.count("PROCESS") == 1
