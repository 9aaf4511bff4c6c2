"""scripts/gpu_check.sh --cpu-smoke: the prepared GPU check runs on CPU through the same shell entry point
(the package copied as an install lays it out), writes one JSON file with every stage, and its comparisons
pass; the wheels it carries to the GPU are pinned within pyproject's ranges."""

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
    """The JSON report and output of one CPU smoke run of scripts/gpu_check.sh."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "out" / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HOME": str(tmp / "hf"), "GPU_CHECK_SITE": str(tmp / "site")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=280, cwd=tmp)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_report_has_every_stage_and_passed(smoke):
    report, stdout = smoke
    assert {"passed", "failures", "cpu_smoke", "environment", "attention", "trainer", "benchmark", "wall_s"} <= set(report)
    assert report["passed"] is True and report["failures"] == [] and report["cpu_smoke"] is True
    assert json.loads(stdout.strip().splitlines()[-1])["passed"] is True
    packages = report["environment"]["packages"]
    assert packages["torch"]["version"] and packages["trl"]["version"]
    # the package came from the copy gpu_check.sh laid out, not from the checkout or an install
    assert not packages["hf_context_synthesis"]["from"].startswith(str(ROOT))


def test_packed_row_matches_documents_alone_and_the_guard_refuses(smoke):
    report, _ = smoke
    att = report["attention"]
    assert att["dtype"] == "bfloat16" and len(att["doc_lengths"]) == 3
    assert set(att["paths"]) == {"flash_attention_2", "flex_attention", "packed_sdpa"}
    ran = {p: r for p, r in att["paths"].items() if "skipped" not in r}
    assert "packed_sdpa" in ran
    tol = att["tolerance"]
    for path, r in ran.items():
        assert r["passed"] is True, path
        assert r["logits_rel_diff"] <= tol["logits_rel"] and r["grad_rel_diff"] <= tol["grad_rel"], path
        assert r["loss_rel_diff"] <= tol["loss_rel"] and len(r["losses"]) == 3, path
    guard = att["guard"]
    assert guard["refused"]["sdpa"] is True and guard["refused"]["eager"] is True
    assert "attend to each other" in guard["message"]
    # the negative control: a packed row on sdpa with a cache (guard removed) really mixes the documents
    assert guard["mixed_rel_diff"] > 10 * tol["logits_rel"]
    assert guard["sdpa_dense_mask_rel_diff"] <= tol["logits_rel"]


def test_trainer_on_rows_of_three_examples_with_both_weightings(smoke):
    report, _ = smoke
    trainer = report["trainer"]
    assert set(trainer) == {"example", "token"}
    for weighting, r in trainer.items():
        assert r["passed"] is True and r["attention"] == "packed_sdpa", weighting
        assert r["rows_examples"] and all(n == 3 for n in r["rows_examples"])
        assert r["steps"] == 3 and len(r["losses"]) == 3 and r["master_dtype"] == "float32"
        assert r["first_loss_rel_diff"] <= 2e-2 and r["weights_max_change"] > 0
    # the two weightings give different losses on the same first row (LongAlign's mean over examples is not
    # the token mean), and each trainer matched its own one
    ex, tok = trainer["example"], trainer["token"]
    assert ex["first_loss_reference"] == pytest.approx(tok["other_weighting_reference"])
    assert abs(ex["first_loss_reference"] - tok["first_loss_reference"]) > 0.05 * tok["first_loss_reference"]


def test_reduced_benchmark_ran_all_methods(smoke):
    report, _ = smoke
    bench = report["benchmark"]
    assert bench["returncode"] == 0 and "--cpu-smoke" in bench["command"]
    assert set(bench["scenarios"]) == {"32k", "64k"}
    for sc in bench["scenarios"].values():
        assert set(sc["methods"]) == {"ours", "trl_bfd", "padded"}
        assert sc["ratios"]["ours/trl_bfd"] > 0 and sc["ratios"]["ours/padded"] > 0


def test_check_refuses_to_pretend_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--cpu-smoke" in proc.stderr and not (tmp_path / "x.json").exists()


def test_carried_wheels_are_pinned_within_the_project_requirements():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (ROOT / "scripts" / "fetch_gpu_wheels.sh").read_text()
    pins = {canonicalize_name(n): v for n, v in re.findall(r"^\s+([A-Za-z0-9_.-]+)==([\w.]+)$", text, re.M)}
    for needed in ("transformers", "trl", "datasets", "huggingface-hub", "accelerate", "kernels", "httpx2"):
        assert needed in pins, needed
    if sys.version_info >= (3, 11):
        import tomllib

        deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        for dep in map(Requirement, deps):
            name = canonicalize_name(dep.name)
            if name in pins:
                assert dep.specifier.contains(pins[name]), (dep, pins[name])
    assert "/.whl/" in (ROOT / ".gitignore").read_text().splitlines()
