"""The dry run checks every step of a recipe and lists every problem at once (issue #17, part 4).

A shared recipe is tried as a careless user would: several inputs are wrong at once (a seed file that
is not there, an endpoint nobody listens on, a base model folder that is gone, LongBench data that is
missing, a push without a token). ``run --dry-run`` and the real ``run`` name all of them in one error,
exit non-zero, send no generation request and write nothing; LongBench data is probed (folder, archive,
Hub dataset id on the loopback Hub).
"""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest
import yaml

from hf_context_synthesis.cli import main
from hf_context_synthesis.testing.fake_tgi import GENERATION_ROUTES, FakeTGIServer

PAPER = Path(__file__).resolve().parents[1] / "examples" / "configs" / "paper.yaml"


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _generation_requests(server: FakeTGIServer) -> int:
    routes = {f"POST {r}" for r in GENERATION_ROUTES}
    return sum(n for route, n in server.stats().per_route.items() if route in routes)


@pytest.fixture
def no_hub_token(tmp_path, monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


@pytest.fixture
def seeds(small_seed_dir: Path) -> Path:
    return small_seed_dir


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _error_lines(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return captured.out, captured.err.strip().splitlines()


def _longbench_zip(path: Path, tasks: tuple[str, ...]) -> Path:
    row = json.dumps({"input": "q", "context": "c", "answers": ["a"], "length": 1, "all_classes": None})
    with zipfile.ZipFile(path, "w") as zf:
        for task in tasks:
            zf.writestr(f"data/{task}.jsonl", row + "\n")
    return path


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
def test_every_problem_of_every_step_at_once(tmp_path, capsys, no_hub_token, dry_run):
    out = tmp_path / "run"
    port = _closed_port()
    recipe = _write(tmp_path / "r.yaml", {
        "output_dir": str(out),
        "synthesis": {"seed": str(tmp_path / "seeds.jsonl"), "endpoint": f"http://127.0.0.1:{port}"},
        "training": {"model": str(tmp_path / "base-model")},
        "evaluation": {"data_dir": str(tmp_path / "longbench")},
        "hub": {"dataset_repo_id": "you/synth"},
    })
    rc = main(["run", str(recipe), *(["--dry-run"] if dry_run else [])])
    _, err = _error_lines(capsys)
    assert rc == 1
    assert err[0] == f"error: recipe{' --dry-run' if dry_run else ''} found 5 problems:", err
    by_setting = {line.split(": ", 1)[0].strip(" -"): line for line in err[1:]}
    assert sorted(by_setting) == sorted(
        ["synthesis.seed", "synthesis.endpoint", "training.model", "evaluation.data_dir", "hub.token"]
    ), err
    assert "seeds.jsonl" in by_setting["synthesis.seed"] and "does not exist" in by_setting["synthesis.seed"]
    assert f"http://127.0.0.1:{port}" in by_setting["synthesis.endpoint"]
    assert "base-model" in by_setting["training.model"] and "not a folder" in by_setting["training.model"]
    assert "longbench" in by_setting["evaluation.data_dir"]
    assert "no Hub token" in by_setting["hub.token"]
    assert not out.exists()  # nothing written, not even the generation cache folder


def test_problems_are_found_without_a_generation_request(tmp_path, capsys, seeds, no_hub_token):
    """The endpoint answers: it is probed (health/info), but no generation request is sent, dry run or not."""
    out = tmp_path / "run"
    with FakeTGIServer(latency=0.0, capacity=4) as tgi:
        recipe = _write(tmp_path / "r.yaml", {
            "output_dir": str(out),
            "synthesis": {"seed": str(seeds), "endpoint": tgi.url, "progress": False},
            "training": {"model": str(tmp_path / "base-model")},
            "evaluation": {"holdout_per_task": 0},
            "hub": {"model_repo_id": "you/tuned model", "private": True},
        })
        for extra in (["--dry-run"], []):
            rc = main(["run", str(recipe), *extra])
            _, err = _error_lines(capsys)
            assert rc == 1 and "found 4 problems:" in err[0], err
            text = "\n".join(err)
            for setting in ("training.model", "evaluation.data_dir", "hub.model_repo_id", "hub.token"):
                assert f"  - {setting}: " in text, (setting, err)
            assert "synthesis." not in text  # seeds and endpoint are fine
            assert "'you/tuned model'" in text
        assert tgi.stats().total_requests > 0  # the endpoint was probed ...
        assert _generation_requests(tgi) == 0  # ... and never asked to generate
    assert not out.exists()


def test_paper_recipe_without_longbench_data_fails_at_the_dry_run(tmp_path, capsys, seeds, tiny_model_dir):
    out = tmp_path / "paper"
    with FakeTGIServer(latency=0.0, capacity=4) as tgi:
        common = ["run", str(PAPER), "--dry-run", "--set", f"output_dir={out}", "--set", f"synthesis.seed={seeds}",
                  "--set", f"synthesis.endpoint={tgi.url}", "--set", f"synthesis.tokenizer={tiny_model_dir}",
                  "--set", "synthesis.max_new_tokens=512", "--set", f"training.model={tiny_model_dir}"]
        # the shipped data_dir (data/longbench) is not there
        assert main([*common, "--set", f"evaluation.data_dir={tmp_path / 'data' / 'longbench'}"]) == 1
        _, err = _error_lines(capsys)
        assert len(err) == 1 and err[0].startswith("error: evaluation.data_dir: "), err
        assert "not a folder of LongBench" in err[0]
        # no data_dir at all: nothing to evaluate is a problem too, naming the setting
        assert main([*common, "--set", "evaluation.data_dir=null"]) == 1
        _, err = _error_lines(capsys)
        assert len(err) == 1 and err[0].startswith("error: evaluation.data_dir: "), err
        assert "nothing to evaluate" in err[0] and "holdout_per_task" in err[0]
        # with LongBench data the same dry run passes and prints the plan
        data = tmp_path / "longbench"
        data.mkdir()
        (data / "hotpotqa.jsonl").write_text('{"input": "q", "context": "c", "answers": ["a"]}\n', encoding="utf-8")
        assert main([*common, "--set", f"evaluation.data_dir={data}"]) == 0
        printed, err = _error_lines(capsys)
        assert "evaluate: longbench" in printed and "seeds: 36 valid" in printed
        assert _generation_requests(tgi) == 0
    assert not out.exists()


def test_longbench_archive_without_the_requested_tasks_is_named(tmp_path, capsys):
    archive = _longbench_zip(tmp_path / "data.zip", ("hotpotqa",))
    out = tmp_path / "run"
    recipe = _write(tmp_path / "r.yaml", {
        "output_dir": str(out),
        "evaluation": {"data_dir": str(archive), "tasks": ["hotpotqa", "qasper", "gov_report"],
                       "endpoint": "http://127.0.0.1:9"},
    })
    assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run"]) == 1
    _, err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: evaluation.data_dir: "), err
    assert "qasper.jsonl" in err[0] and "gov_report.jsonl" in err[0] and "hotpotqa.jsonl" not in err[0]
    assert str(archive) in err[0]
    # a task name that is no LongBench task is its own problem, naming evaluation.tasks
    assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run", "--set", "evaluation.tasks=[hotpotqa, trek]"]) == 2
    _, err = _error_lines(capsys)
    assert err[0].startswith("error: evaluation.tasks: ") and "'trek'" in err[0], err
    # the archive holding the tasks passes
    _longbench_zip(archive, ("hotpotqa", "qasper", "gov_report"))
    assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run"]) == 0
    # `evaluate` probes the same way, before loading any model
    assert main(["evaluate", "--endpoint", "http://127.0.0.1:9", "--data-dir", str(archive), "--tasks", "musique",
                 "--output-dir", str(tmp_path / "eval")]) == 1
    _, err = _error_lines(capsys)
    assert "--data-dir" in err[0] and "musique.jsonl" in err[0], err
    assert not out.exists() and not (tmp_path / "eval").exists()
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run", "--set",
                 f"evaluation.data_dir={tmp_path / 'broken.zip'}"]) == 1
    _, err = _error_lines(capsys)
    assert "evaluation.data_dir" in err[0] and "zip" in err[0]


def test_longbench_hub_dataset_id_is_probed_on_the_hub(tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi

    from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    recipe = _write(tmp_path / "r.yaml", {
        "output_dir": str(tmp_path / "run"),
        "evaluation": {"data_dir": "lb/LongBench", "tasks": ["hotpotqa"], "endpoint": "http://127.0.0.1:9"},
    })
    with FakeHubServer() as hub, hub_endpoint(hub.url):
        api = HfApi(endpoint=hub.url, token="hf_test")
        api.create_repo("lb/LongBench", repo_type="dataset")
        api.upload_file(path_or_fileobj=b'{"input": "q", "context": "c", "answers": ["a"]}\n',
                        path_in_repo="data/hotpotqa.jsonl", repo_id="lb/LongBench", repo_type="dataset")
        assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run"]) == 0
        capsys.readouterr()
        assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run", "--set", "evaluation.data_dir=lb/missing"]) == 1
        _, err = _error_lines(capsys)
        assert err[0].startswith("error: evaluation.data_dir: ") and "'lb/missing'" in err[0], err
        assert "no such dataset repository" in err[0]
        # the repo exists but lacks the requested task
        assert main(["run", str(recipe), "--steps", "evaluate", "--dry-run", "--set", "evaluation.tasks=[qmsum]"]) == 1
        _, err = _error_lines(capsys)
        assert "qmsum.jsonl" in err[0] and "Hub dataset" in err[0], err
        assert not hub.requests_to("/resolve/")  # probed by listing: nothing downloaded
    assert not (tmp_path / "run").exists()


def test_synthesize_and_train_list_all_their_problems(tmp_path, capsys):
    port = _closed_port()
    out = tmp_path / "data"
    for extra in (["--dry-run"], []):
        rc = main(["synthesize", "--seed", str(tmp_path / "missing.jsonl"), "--endpoint", f"http://127.0.0.1:{port}",
                   "--tokenizer", str(tmp_path / "no-tokenizer"), "--output", str(out), *extra])
        _, err = _error_lines(capsys)
        assert rc == 1 and err[0].endswith("found 3 problems:"), err
        for flag in ("--seed", "--endpoint", "--tokenizer"):
            assert any(line.startswith(f"  - {flag}: ") for line in err), (flag, err)
    assert not out.exists()
    rc = main(["train", "--model", str(tmp_path / "no-model"), "--dataset", str(tmp_path / "no-data"),
               "--output", str(tmp_path / "model")])
    _, err = _error_lines(capsys)
    assert rc == 1 and err[0] == "error: train found 2 problems:", err
    assert err[1].startswith("  - --model: ") and err[2].startswith("  - --dataset: ")
    assert not (tmp_path / "model").exists()


def test_problem_collector_lines_and_exit_classes():
    from hf_context_synthesis.synthesis.plan import RunSetupError, SetupProblems, SetupValueError

    problems = SetupProblems("recipe --dry-run")
    with problems.check("synthesis.seed"):
        raise RunSetupError("recipe step synthesize: seed data 'x' does not exist")
    with problems.check("hub.private"):
        raise ValueError("expected true or false, got 'yes'")
    with problems.check("training.model"):
        pass  # no problem, nothing recorded
    err = problems.error()
    assert isinstance(err, RunSetupError) and not isinstance(err, ValueError)
    assert str(err).splitlines() == [
        "recipe --dry-run found 2 problems:",
        "  - synthesis.seed: recipe step synthesize: seed data 'x' does not exist",
        "  - hub.private: expected true or false, got 'yes'",
    ]
    assert [p.setting for p in err.problems] == ["synthesis.seed", "hub.private"]
    only_values = SetupProblems("recipe")
    with only_values.check("hub.private"):
        raise ValueError("expected true or false,\ngot 'yes'")
    with pytest.raises(SetupValueError) as caught:  # bad values only: a settings error (exit 2)
        only_values.raise_if_any()
    assert str(caught.value) == "hub.private: expected true or false, got 'yes'"  # one problem: one line
    SetupProblems("nothing").raise_if_any()  # no problem: no error
