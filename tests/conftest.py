"""Shared fixtures: the real seed data, a tiny local model, isolated caches. Nothing is downloaded."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests never write into the user's ~/.cache: every Hub/datasets/matplotlib cache of this test session
# lives in one temporary folder, set before any test module imports datasets or huggingface_hub
# (they read these variables once, at import). Subprocesses inherit it.
_TEST_HOME = tempfile.mkdtemp(prefix="hf-context-synthesis-tests-")
for _name, _sub in (("HF_HOME", "hf-home"), ("HF_DATASETS_CACHE", "hf-home/datasets"),
                    ("HF_HUB_CACHE", "hf-home/hub"), ("MPLCONFIGDIR", "matplotlib"), ("XDG_CACHE_HOME", "xdg-cache")):
    os.environ[_name] = os.path.join(_TEST_HOME, _sub)
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)

SEEDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "longbench-train-1.6k"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    """The paper's 1,600 seed pairs (8 tasks x 200), shared beside the checkout."""
    if not SEEDS_DIR.is_dir():
        pytest.skip(f"shared seed data not found at {SEEDS_DIR}")
    return SEEDS_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama + locally trained tokenizer with a chat template, saved to disk."""
    from hf_context_synthesis.testing.tiny_model import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tok(tiny_model_dir: str):
    """The tiny model's tokenizer (chat template with generation markers); copy it before changing it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def caches(tmp_path: Path) -> dict[str, str]:
    """Fresh datasets cache dir and generation cache dir for one test."""
    d = {"cache_dir": str(tmp_path / "datasets-cache"), "generation_cache_dir": str(tmp_path / "generations")}
    return d


def write_seed_subset(seeds_dir: Path, out: Path, per_task: "dict[str, int] | tuple[str, ...]", n: int = 0) -> Path:
    """``out/<task>.jsonl`` with the first seeds of real tasks: ``per_task`` maps task -> count, or names
    tasks that each get ``n``. Returns ``out`` (created if needed)."""
    counts = per_task if isinstance(per_task, dict) else dict.fromkeys(per_task, n)
    out.mkdir(parents=True, exist_ok=True)
    for task, count in counts.items():
        lines = (seeds_dir / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()[:count]
        (out / f"{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture
def small_seed_dir(tmp_path: Path, seeds_dir: Path) -> Path:
    """A folder with the first 12 seeds of three real tasks (fast end-to-end runs)."""
    return write_seed_subset(seeds_dir, tmp_path / "seeds", ("hotpotqa", "qasper", "govreport"), 12)
