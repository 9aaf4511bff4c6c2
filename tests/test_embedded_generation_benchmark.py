"""benchmarks/embedded_generation.py runs its three columns (embedded backend, plain generate loop,
transformers' generate_batch) on the same prompts, here with the tiny local model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_generation_benchmark_smoke(tiny_model_dir, seeds_dir):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "embedded_generation.py"), "--model", tiny_model_dir,
         "--seeds", str(seeds_dir), "--prompts", "3", "--batch-size", "2", "--max-new-tokens", "6",
         "--context-words", "20"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    rows = {m.group(1): (int(m.group(2)), float(m.group(4))) for m in re.finditer(
        r"^(embedded|plain loop|generate_batch)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", out, flags=re.M)}
    assert set(rows) == {"embedded", "plain loop", "generate_batch"}, out
    # greedy, same prompts and cap: the embedded backend and generate make the same useful tokens
    assert rows["embedded"][0] == rows["plain loop"][0] > 0
    assert all(rate > 0 for _, rate in rows.values())
    assert re.search(r"^ratio embedded / plain tokens/s: [\d.]+x", out, flags=re.M)
    assert re.search(r"^ratio embedded / generate_batch tokens/s: [\d.]+x", out, flags=re.M)
