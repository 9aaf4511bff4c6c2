"""Wall time of the offline demo (``context-synthesis demo``) from a cold process, per step.

The README promises it finishes in under a minute on 2 CPU cores. This runs the command exactly as a
user would (a fresh process, a fresh output folder, caches in a temporary HF_HOME), twice: the first
run builds the tiny model and makes every request; the second reuses both (cached generations,
existing model). Prints the wall times, the step times from the log and whether the first run was
under the target.

    python benchmarks/offline_demo.py [--target 60]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def run_once(output_dir: str, env: dict[str, str]) -> tuple[float, dict[str, float], str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hf_context_synthesis.cli", "demo", "--output-dir", output_dir],
        env=env, capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # step boundaries from the recipe's "recipe step: NAME" log lines (timestamps to the millisecond)
    marks = []
    for line in proc.stderr.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO hf_context_synthesis\.recipe: recipe step: (\w+)", line)
        if m:
            marks.append((m.group(2), _seconds(m.group(1))))
    end = _seconds(re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", proc.stderr)[-1])
    steps = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t for i, (name, t) in enumerate(marks)}
    return wall, steps, proc.stdout


def _seconds(stamp: str) -> float:
    hms, ms = stamp.split(" ")[1].split(",")
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s + int(ms) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=60.0, help="Seconds the first run must stay under.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        env = {**os.environ, "HF_HOME": os.path.join(tmp, "hf-home"), "PYTHONUNBUFFERED": "1"}
        out = os.path.join(tmp, "demo")
        first, first_steps, _ = run_once(out, env)
        second, second_steps, _ = run_once(out, env)
    print(f"CPU cores: {os.cpu_count()}")
    print(f"{'run':<28}{'wall s':>8}  " + "  ".join(f"{s:>10}" for s in first_steps))
    print(f"{'cold (builds model, 16 requests)':<28}{first:>8.1f}  " + "  ".join(f"{v:>10.1f}" for v in first_steps.values()))
    print(f"{'warm (cached)':<28}{second:>8.1f}  " + "  ".join(f"{v:>10.1f}" for v in second_steps.values()))
    print(f"cold run under {args.target:.0f} s: {'yes' if first < args.target else 'NO'} ({first / args.target:.2f} of the target)")
    return 0 if first < args.target else 1


if __name__ == "__main__":
    sys.exit(main())
