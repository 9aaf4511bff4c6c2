"""benchmarks/gpu_training.py --cpu-smoke: the GPU benchmark's code paths (our trainer, TRL bfd, padded) run
end to end on CPU with a tiny model, and report per-step tokens/s and the ratios side by side."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """stdout and JSON report of one CPU smoke run."""
    tmp = tmp_path_factory.mktemp("gpu-bench")
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_DATASETS_CACHE": str(tmp / "ds"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_training.py"), "--cpu-smoke", "--json", str(tmp / "r.json")],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads((tmp / "r.json").read_text())


def test_cpu_smoke_times_our_trainer_trl_bfd_and_padding(smoke):
    out, report = smoke
    assert "random, from config" in out and report["cpu_smoke"] is True
    assert set(report["scenarios"]) == {"32k", "64k"}
    for name, sc in report["scenarios"].items():
        assert set(sc["methods"]) == {"ours", "trl_bfd", "padded"}
        # ours went through build_trainer, which switched the model to the CPU packed path
        assert sc["methods"]["ours"]["attention"] == "packed_sdpa" and sc["methods"]["padded"]["attention"] == "sdpa"
        for method, r in sc["methods"].items():
            assert r["timed_steps"] == report["steps"] == 2, (name, method)
            assert 0 < r["tokens_per_s_min"] <= r["tokens_per_s_median"] <= r["tokens_per_s_max"]
            assert r["tokens"] > 0 and r["train_loss"] is not None and r["peak_gpu_gib"] is None
        ratio = sc["ratios"]["ours/trl_bfd"]
        assert ratio == pytest.approx(sc["methods"]["ours"]["tokens_per_s_median"]
                                      / sc["methods"]["trl_bfd"]["tokens_per_s_median"], rel=1e-2)
        assert re.search(rf"^\[{name}\] rows of [\d,]+ tokens", out, re.M)
    # the 64k rows are twice the example cap (rows of several examples), the 32k ones equal it
    assert report["scenarios"]["64k"]["row_length"] == 2 * report["scenarios"]["64k"]["example_cap"]
    assert report["scenarios"]["32k"]["row_length"] == report["scenarios"]["32k"]["example_cap"]
    for method in ("ours", "trl_bfd", "padded"):
        assert re.search(rf"^{method}\s+\S+\s+2\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+n/a$", out, re.M), (method, out)
    assert len(re.findall(r"^ratios: ours/trl_bfd=[\d.]+x, ours/padded=[\d.]+x, trl_bfd/padded=[\d.]+x", out, re.M)) == 2


def test_packed_rows_of_the_64k_scenario_hold_several_examples():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import numpy as np
        from gpu_training import SCENARIOS, simulate_examples

        from hf_context_synthesis.training.packing import pack_bfd
    finally:
        sys.path.pop(0)
    row, cap = SCENARIOS["64k"]
    lengths, answer = simulate_examples(64, cap, 1.0, np.random.default_rng(0))
    assert lengths.max() <= cap and (answer < lengths).all() and 20_000 < np.median(lengths) < cap
    rows = pack_bfd(lengths.tolist(), row)
    assert np.mean([len(r) for r in rows]) >= 2  # several examples per 64k row
    assert max(len(r) for r in pack_bfd(lengths.tolist(), SCENARIOS["32k"][0])) == 1  # one per 32k row


def test_gpu_training_benchmark_refuses_to_pretend_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_training.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "--cpu-smoke" in proc.stderr
