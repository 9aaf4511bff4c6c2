"""Issue #17 parts 5 and 6: values typed and range-checked where they enter (CLI flags, recipe YAML,
``--set``, dataclass construction, ``load_dataset``), and one error line, not a traceback, for YAML
tags, refused pickles and remote code, and a full or read-only generation cache (whose committed
generations a rerun reuses)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import hf_context_synthesis  # noqa: F401  (registers "context_synthesis" with load_dataset)
from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.synthesis.cache import CacheWriteError, GenerationCache
from hf_context_synthesis.cli import main
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer
from hf_context_synthesis.utils.values import InvalidSettingError, check_float, check_int


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    rows = [{"instruction": f"What is item {i}?", "answer": f"item {i} is a widget"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_error_line(err: str) -> str:
    """The single line of stderr (asserting there is one and no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# ------------------------------------------------------------------------------ the dataclass
@pytest.mark.parametrize(
    "setting, value, expected",
    [
        ("num_distractors", "nine", "num_distractors: expected an integer >= 0, got 'nine' (str)"),
        ("num_distractors", True, "num_distractors: expected an integer >= 0, got True (bool)"),
        ("num_distractors", 1.5, "num_distractors: expected an integer >= 0, got 1.5 (float)"),
        ("num_distractors", [9], "num_distractors: expected an integer >= 0, got [9] (list)"),
        ("num_distractors", -1, "num_distractors: expected an integer >= 0, got -1 (int)"),
        ("max_new_tokens", "1.5e3x", "max_new_tokens: expected an integer >= 1 or null, got '1.5e3x' (str)"),
        ("temperature", float("nan"), "temperature: expected a finite number >= 0, got nan (float)"),
        ("temperature", float("inf"), "temperature: expected a finite number >= 0, got inf (float)"),
        ("temperature", -3, "temperature: expected a finite number >= 0, got -3 (int)"),
        ("temperature", "hot", "temperature: expected a finite number >= 0, got 'hot' (str)"),
        ("top_p", 0, "top_p: expected a finite number in (0, 1] or null, got 0 (int)"),
        ("top_p", 1.01, "top_p: expected a finite number in (0, 1] or null, got 1.01 (float)"),
        ("timeout", 0, "timeout: expected a finite number > 0, got 0 (int)"),
        ("progress", "no", "progress: expected true or false, got 'no' (str)"),
        ("endpoint", ["http://127.0.0.1:1", 7], "endpoint[1]: expected a string, got 7 (int)"),
        ("columns", {"instruction": 3}, "columns.instruction: expected a string, got 3 (int)"),
        ("quality", {"min_context_words": "many"}, "quality.min_context_words: expected an integer >= 0, got 'many'"),
    ],
)
def test_dataclass_names_setting_value_and_what_is_allowed(setting, value, expected):
    with pytest.raises(InvalidSettingError) as err:
        SynthesisConfig(seed="seeds.jsonl", **{setting: value})
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, TypeError)  # old except clauses still match
    assert setting in err.value.setting


def test_numeric_strings_and_integral_floats_are_read_as_numbers():
    """PyYAML reads ``1e9`` and ``1e-5`` as strings: an exact integer / finite number is accepted."""
    config = SynthesisConfig(seed="seeds.jsonl", max_new_tokens="1e3", num_distractors=2.0, temperature="5e-1",
                             generation_cache_dir=Path("gen"))
    assert config.max_new_tokens == 1000 and isinstance(config.max_new_tokens, int)
    assert config.num_distractors == 2 and isinstance(config.num_distractors, int)
    assert config.temperature == 0.5
    assert config.generation_cache_dir == "gen"
    assert check_int("n", "1e9") == 10**9
    with pytest.raises(InvalidSettingError, match=r"n: expected an integer, got '1\.5e0' \(str\)"):
        check_int("n", "1.5e0")
    with pytest.raises(InvalidSettingError, match=r"x: expected a finite number, got 'nan' \(str\)"):
        check_float("x", "nan")


def test_load_dataset_refuses_nan_temperature_before_any_request(seed_file: Path, caches):
    import datasets

    with FakeTGIServer() as srv:
        with pytest.raises(InvalidSettingError, match=r"^temperature: expected a finite number >= 0, got nan \(float\)$"):
            datasets.load_dataset("context_synthesis", seed=str(seed_file), endpoint=srv.url, split="train",
                                  temperature=float("nan"), progress=False, **caches)
        assert srv.stats().generation_requests == 0


# ------------------------------------------------------------------------------ CLI flags
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--num-distractors", "nine"], "num_distractors: expected an integer >= 0, got 'nine' (str)"),
        (["--temperature", "-3"], "temperature: expected a finite number >= 0, got -3 (int)"),
        (["--temperature", "nan"], "temperature: expected a finite number >= 0, got nan (float)"),
        (["--top-p", "0"], "top_p: expected a finite number in (0, 1] or null, got 0 (int)"),
        (["--max-seeds", "1.5"], "max_seeds: expected an integer >= 1 or null, got 1.5 (float)"),
    ],
)
def test_cli_flag_errors_are_one_line_naming_setting_and_value(tmp_path, capsys, seed_file, flags, expected):
    out = tmp_path / "out"
    with FakeTGIServer() as srv:
        code = main(["synthesize", "--seed", str(seed_file), "--output", str(out), "--endpoint", srv.url,
                     "--generation-cache-dir", str(tmp_path / "gen"), *flags])
        assert srv.stats().generation_requests == 0
    assert code == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {expected}"
    assert not out.exists()


# ------------------------------------------------------------------------------ recipes and --set
def _recipe(tmp_path: Path, seed_file: Path, synthesis: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\nsynthesis:\n  seed: {seed_file}\n{synthesis}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "synthesis, overrides, expected",
    [
        ("  num_distractors: nine\n", [], "recipe synthesis.num_distractors: expected an integer >= 0, got 'nine' (str)"),
        ("  num_distractors: [1, 2]\n", [], "recipe synthesis.num_distractors: expected an integer >= 0, got [1, 2] (list)"),
        ("  temperature: -3\n", [], "recipe synthesis.temperature: expected a finite number >= 0, got -3 (int)"),
        ("  temperature: .nan\n", [], "recipe synthesis.temperature: expected a finite number >= 0, got nan (float)"),
        ("", ["synthesis.temperature=nan"],
         "recipe synthesis.temperature: expected a finite number >= 0, got 'nan' (str)"),
        ("", ["synthesis.top_p=2"], "recipe synthesis.top_p: expected a finite number in (0, 1] or null, got 2 (int)"),
        ("", ["evaluation.limit=many"], "recipe evaluation.limit: expected an integer >= 1 or null, got 'many' (str)"),
        ("", ["hub.private=maybe"], "recipe hub.private: expected true or false or null, got 'maybe' (str)"),
    ],
)
def test_recipe_and_set_values_are_checked_before_anything_runs(tmp_path, capsys, seed_file, synthesis, overrides,
                                                                  expected):
    recipe = _recipe(tmp_path, seed_file, "  endpoint: http://127.0.0.1:9\n" + synthesis)
    argv = ["run", str(recipe), "--steps", "synthesize"]
    for item in overrides:
        argv += ["--set", item]
    for dry in ([], ["--dry-run"]):
        assert main([*argv, *dry]) == 2
        assert _one_error_line(capsys.readouterr().err) == f"error: {expected}"
    assert not (tmp_path / "run").exists()


def test_recipe_training_values_name_the_field(tmp_path, capsys, seed_file):
    recipe = _recipe(tmp_path, seed_file, "training:\n  model: some/model\n  learning_rate: 1e-5\n  max_steps: [3]\n")
    assert main(["run", str(recipe), "--dry-run", "--steps", "train"]) == 2
    assert _one_error_line(capsys.readouterr().err) == "error: recipe training.max_steps: expected an integer, got [3] (list)"


def test_recipe_yaml_numbers_read_as_strings_become_numbers(tmp_path, seed_file):
    from hf_context_synthesis.recipe import load_recipe, synthesis_config, validate_recipe

    recipe = load_recipe(_recipe(tmp_path, seed_file, "  max_new_tokens: 1e3\ntraining:\n  learning_rate: 1e-5\n"))
    assert recipe.synthesis["max_new_tokens"] == "1e3" and recipe.training["learning_rate"] == "1e-5"  # PyYAML
    validate_recipe(recipe)
    assert synthesis_config(recipe).max_new_tokens == 1000
    assert recipe.training["learning_rate"] == 1e-5


def test_python_tag_in_a_recipe_is_one_line_and_never_runs(tmp_path, seed_file):
    """Through the real executable: the tag is refused by yaml.safe_load, the command never runs."""
    marker = tmp_path / "MARKER"
    recipe = _recipe(tmp_path, seed_file, f'  num_distractors: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = subprocess.run([sys.executable, "-m", "hf_context_synthesis.cli", "run", str(recipe), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert f"{recipe}, line 4:" in line and "python/object/apply:os.system" in line and "refused" in line
    assert not marker.exists()


def test_python_tag_in_a_set_override_is_one_line_and_never_runs(tmp_path, capsys, seed_file):
    marker = tmp_path / "MARKER"
    recipe = _recipe(tmp_path, seed_file, "")
    item = f'synthesis.num_distractors=!!python/object/apply:os.system ["touch {marker}"]'
    assert main(["run", str(recipe), "--dry-run", "--set", item]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--set" in line and "python/object/apply:os.system" in line
    assert not marker.exists()


def test_broken_recipe_yaml_names_file_and_line(tmp_path, capsys, seed_file):
    recipe = _recipe(tmp_path, seed_file, "  temperature: [0.8\n")
    assert main(["run", str(recipe), "--dry-run"]) == 2
    assert f"{recipe}, line " in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------ pickles and remote code
def _longbench_dir(tmp_path: Path) -> Path:
    data = tmp_path / "longbench"
    data.mkdir()
    row = {"input": "Who?", "context": "Ann wrote it.", "answers": ["Ann"], "length": 3, "all_classes": None, "_id": "a"}
    (data / "qasper.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    return data


def test_refused_pickle_is_one_line_and_runs_nothing(tmp_path, capsys, tiny_model_dir):
    import shutil

    import torch

    marker = tmp_path / "PICKLE_MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    torch.save({"model.embed_tokens.weight": Payload()}, model / "pytorch_model.bin")
    code = main(["evaluate", "--model", str(model), "--data-dir", str(_longbench_dir(tmp_path)),
                 "--output-dir", str(tmp_path / "eval")])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "refused to load pickled weights" in line and str(model) in line and "safetensors" in line
    assert not marker.exists()


def test_remote_code_is_refused_in_one_line_and_not_run(tmp_path, capsys, tiny_model_dir):
    import shutil

    marker = tmp_path / "REMOTE_MARKER"
    model = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="my_custom", auto_map={"AutoConfig": "conf.MyConf", "AutoModelForCausalLM": "conf.M"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "conf.py").write_text(f"import os\nos.system('touch {marker}')\n")
    code = main(["evaluate", "--model", str(model), "--data-dir", str(_longbench_dir(tmp_path)),
                 "--output-dir", str(tmp_path / "eval")])
    assert code == 1
    captured = capsys.readouterr()
    assert "Do you wish to run the custom code" not in captured.out + captured.err  # no prompt: refused at once
    line = _one_error_line(captured.err)
    assert "custom code" in line and "trust_remote_code" in line and str(model) in line
    assert not marker.exists()


# ------------------------------------------------------------------------------ full / read-only cache
class _FillingConnection:
    """An sqlite3 connection whose disk fills up after ``room`` stored generations."""

    def __init__(self, conn: sqlite3.Connection, room: list[int]) -> None:
        self._conn, self._room = conn, room

    def execute(self, sql: str, *args):
        if sql.startswith("INSERT OR REPLACE INTO generations"):
            if self._room[0] <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            self._room[0] -= 1
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_full_cache_stops_in_one_line_and_the_rerun_reuses_every_committed_generation(
    tmp_path, capsys, monkeypatch, small_seed_dir
):
    out, gen = tmp_path / "out", tmp_path / "gen"
    argv = ["synthesize", "--seed", str(small_seed_dir), "--output", str(out), "--generation-cache-dir", str(gen),
            "--num-distractors", "2", "--max-generation-attempts", "1", "--progress", "false"]
    original_open = GenerationCache._open
    room = [10]
    monkeypatch.setattr(GenerationCache, "_open", staticmethod(lambda path: _FillingConnection(original_open(path), room)))
    with FakeTGIServer(latency=0.0, capacity=4) as srv:
        assert main([*argv, "--endpoint", srv.url, "--max-concurrency", "4"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left on the device for the generation cache" in line and str(gen) in line
    monkeypatch.undo()
    (cache_file,) = gen.rglob("*.sqlite")
    with sqlite3.connect(cache_file) as conn:
        committed = conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert committed == 10  # everything stored before the disk filled stays committed

    with FakeTGIServer(latency=0.0, capacity=4) as srv:
        assert main([*argv, "--endpoint", srv.url]) == 0
        requested = srv.stats().generation_requests
    assert requested == 36 - committed  # not one committed generation is requested again
    report = json.loads((out / "synthesis_report.json").read_text())
    assert report["cached"] == committed


def test_read_only_cache_is_one_clear_error(tmp_path):
    path = tmp_path / "g.sqlite"
    cache = GenerationCache(path)
    cache.put("kept", "text", model="m")
    cache.close()
    ro = GenerationCache(path)
    ro._conn.close()
    ro._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    with pytest.raises(CacheWriteError, match=r"the generation cache .*g\.sqlite is read-only") as err:
        ro.put("k", "text", model="m")
    assert "\n" not in str(err.value) and str(err.value).startswith("the generation cache")
    with pytest.raises(CacheWriteError, match="read-only"):
        ro.claim("k")
    ro.release("k")  # releasing never fails (the claim expires)
    assert ro.get("kept") == "text"


def test_uncreatable_cache_folder_is_one_cli_line(tmp_path, capsys, seed_file):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should go")
    with FakeTGIServer() as srv:
        code = main(["synthesize", "--seed", str(seed_file), "--output", str(tmp_path / "out"), "--endpoint", srv.url,
                     "--generation-cache-dir", str(blocker / "gen"), "--progress", "false"])
        assert srv.stats().generation_requests == 0
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(blocker / "gen") in line and "writable folder" in line
    assert blocker.read_text() == "a file where the cache folder should go"


@pytest.mark.parametrize(
    "failure, expected",
    [
        (OSError(errno.EROFS, "Read-only file system", "/hf-home/datasets"),
         "error: Read-only file system: /hf-home/datasets: choose a writable output folder, generation_cache_dir or HF_HOME"),
        (PermissionError(errno.EACCES, "Permission denied", "/shared/out"),
         "error: Permission denied: /shared/out: choose a writable output folder"),
        (OSError(errno.ENOSPC, "No space left on device"),
         "error: No space left on device: free space on the disk of the output folder, the generation cache or HF_HOME"),
        (sqlite3.OperationalError("attempt to write a readonly database"),
         "error: the generation cache is read-only (attempt to write a readonly database)"),
    ],
)
def test_disk_failures_outside_the_cache_are_one_line(tmp_path, capsys, monkeypatch, seed_file, failure, expected):
    """Output folder and HF_HOME failures (full, read-only, no permission) print one line with what to do."""
    import hf_context_synthesis.synthesis.output as output

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(output, "synthesize_to_directory", fail)
    with FakeTGIServer() as srv:
        code = main(["synthesize", "--seed", str(seed_file), "--output", str(tmp_path / "out"), "--endpoint", srv.url,
                     "--generation-cache-dir", str(tmp_path / "gen"), "--progress", "false"])
    assert code == 1
    assert _one_error_line(capsys.readouterr().err).startswith(expected)
