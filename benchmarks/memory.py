"""Peak RSS of a synthesis run must not grow with the number of seeds.

Runs the full path (seeds -> requests -> TGI-protocol loopback server -> SQLite cache -> composition
-> parquet shards) for 2,000 and 20,000 seeds, each in a fresh subprocess, with the server in its own
process, and prints the ratio of the children's peak RSS (target <= 1.3).

    python benchmarks/memory.py [--small 2000] [--large 20000] [--words 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import datasets
datasets.disable_progress_bars()
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.output import synthesize_to_directory
seed, url, out = sys.argv[1:4]
t = time.perf_counter()
report = synthesize_to_directory(SynthesisConfig(seed=seed, endpoint=url, max_concurrency=64, progress=False,
                                                 generation_cache_dir=out), out)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "examples": report.examples, "seconds": time.perf_counter() - t}))
"""


def serve(port_queue, words: int) -> None:
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    with FakeTGIServer(latency=0.0, capacity=256, response_words=words) as srv:
        port_queue.put(srv.url)
        while True:
            time.sleep(3600)


def write_seeds(path: str, n: int) -> None:
    tasks = ["hotpotqa", "qasper", "govreport", "qmsum"]
    per = n // len(tasks)
    os.makedirs(path, exist_ok=True)
    for t in tasks:
        with open(os.path.join(path, f"{t}.jsonl"), "w") as fh:
            for i in range(per):
                fh.write(json.dumps({"instruction": f"What happened to item {i} in {t}?", "answer": f"It moved {i}."}) + "\n")


def measure(n: int, url: str, tmp: str) -> dict:
    seeds = os.path.join(tmp, f"seeds-{n}")
    write_seeds(seeds, n)
    out = subprocess.run([sys.executable, "-c", CHILD, seeds, url, os.path.join(tmp, f"out-{n}")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--words", type=int, default=200, help="words per synthesized context")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=serve, args=(q, args.words), daemon=True)
    server.start()
    url = q.get(timeout=60)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            small = measure(args.small, url, tmp)
            large = measure(args.large, url, tmp)
    finally:
        server.terminate()
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"seeds={args.small:>6}: peak RSS {small['peak_rss_mb']:.0f} MB, {small['examples']} examples, {small['seconds']:.1f}s")
    print(f"seeds={args.large:>6}: peak RSS {large['peak_rss_mb']:.0f} MB, {large['examples']} examples, {large['seconds']:.1f}s")
    print(f"RSS ratio large/small = {ratio:.3f} (target <= 1.3) -> {'PASS' if ratio <= 1.3 else 'FAIL'}")


if __name__ == "__main__":
    main()
