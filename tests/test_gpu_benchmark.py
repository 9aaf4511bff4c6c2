"""benchmarks/gpu_training.py --cpu-smoke: the GPU benchmark's code paths run end to end on CPU (tiny model)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_training_benchmark_cpu_smoke(seeds_dir, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "ds"),
           "HFCS_SEEDS_DIR": str(seeds_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_training.py"), "--cpu-smoke"],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "random, from config" in out
    for method in ("ours", "balanced", "trl_bfd", "padded"):
        row = re.search(rf"^{method}\s+(\d+)\s+([\d,]+)\s+([\d,]+)\s+\S+\s+([\d.]+)x$", out, re.M)
        assert row, (method, out)
        assert int(row.group(1)) > 0 and int(row.group(2).replace(",", "")) > 0 and int(row.group(3).replace(",", "")) > 0
    assert re.search(r"ratios: ours/padded=[\d.]+x, balanced/padded=[\d.]+x, trl_bfd/padded=[\d.]+x, ours/trl_bfd=[\d.]+x", out)


def test_gpu_training_benchmark_refuses_to_pretend_without_cuda(seeds_dir):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_training.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "--cpu-smoke" in proc.stderr
