"""Peak RSS of a synthesis run must not grow with the number of seeds, on both user paths.

Runs the full path (seeds -> requests -> TGI-protocol loopback server -> SQLite cache -> composition
-> Arrow/parquet) through ``load_dataset("context_synthesis", ...)`` and through the CLI
(``context-synthesis synthesize --output``), each for a small and a large number of seeds, each run in a
fresh subprocess, the server in its own process, with paper-length contexts (2,000 words by default:
a composed row of 10 documents is ~150 KB). Prints the children's peak RSS side by side and the
large/small ratio per path (target <= 1.3).

    python benchmarks/memory.py [--small 500] [--large 2000] [--words 2000] [--paths load_dataset,cli]
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
import json, os, resource, sys, time
import datasets
datasets.disable_progress_bars()
import hf_context_synthesis  # registers the builder
path, seed, url, out = sys.argv[1:5]
t = time.perf_counter()
if path == "load_dataset":
    ds = datasets.load_dataset("context_synthesis", seed=seed, endpoint=url, split="train", max_concurrency=64,
                               progress=False, cache_dir=os.path.join(out, "ds"),
                               generation_cache_dir=os.path.join(out, "gen"))
    examples = len(ds)
else:
    from hf_context_synthesis.cli import main
    code = main(["-q", "synthesize", "--seed", seed, "--endpoint", url, "--output", os.path.join(out, "data"),
                 "--max-concurrency", "64", "--progress", "false",
                 "--generation-cache-dir", os.path.join(out, "gen")])
    assert code == 0, code
    report = json.load(open(os.path.join(out, "data", "synthesis_report.json")))
    examples = report["examples"]
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "examples": examples, "seconds": time.perf_counter() - t}))
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


def measure(path: str, n: int, url: str, tmp: str) -> dict:
    seeds = os.path.join(tmp, f"seeds-{n}")
    if not os.path.isdir(seeds):
        write_seeds(seeds, n)
    env = {**os.environ, "HF_HOME": os.path.join(tmp, "hf-home"), "HF_DATASETS_CACHE": os.path.join(tmp, "hf-ds")}
    out = subprocess.run([sys.executable, "-c", CHILD, path, seeds, url, os.path.join(tmp, f"{path}-{n}")],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{path} with {n} seeds failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--words", type=int, default=2000, help="words per synthesized context")
    parser.add_argument("--paths", default="load_dataset,cli", help="comma-separated: load_dataset, cli")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=serve, args=(q, args.words), daemon=True)
    server.start()
    url = q.get(timeout=60)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path in args.paths.split(","):
                results[path] = (measure(path, args.small, url, tmp), measure(path, args.large, url, tmp))
    finally:
        server.terminate()
    print(f"contexts of {args.words} words; peak RSS of the run's process")
    print(f"{'path':<14}{'seeds=' + str(args.small):>16}{'seeds=' + str(args.large):>16}{'ratio':>8}")
    ok = True
    for path, (small, large) in results.items():
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        ok &= ratio <= 1.3
        print(f"{path:<14}{small['peak_rss_mb']:>13.0f} MB{large['peak_rss_mb']:>13.0f} MB{ratio:>8.2f}"
              f"   ({small['examples']}/{large['examples']} examples, {small['seconds']:.0f}s/{large['seconds']:.0f}s)")
    print(f"target: ratio <= 1.3 on every path -> {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
