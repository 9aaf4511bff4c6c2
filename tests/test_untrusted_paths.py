"""Names from data never become paths out, and output folders are never written or deleted through
links (issue #17, parts 2 and 3). Each probe is run as a user would and must fail closed: no request,
no file outside the output, link targets untouched, one error line naming the file, row and value."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from hf_context_synthesis.utils.paths import (
    LinkRefusedError,
    UnsafeNameError,
    check_name,
    path_inside,
    refuse_links_below,
)
from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

#: Task values a hostile or careless seed dataset may hold.
UNSAFE_TASKS = ["../../../ESCAPED", "/tmp/ESCAPED-abs", "a/b", "", "   ", "\x00x", "bad\nname", "tab\tname",
                "..", ".", "C:ESCAPED", "back\\slash"]


def _good_rows(seeds_dir: Path, n: int = 3) -> list[dict]:
    lines = (seeds_dir / "hotpotqa.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(x) for x in lines]


def _seed_file(path: Path, seeds_dir: Path, bad_task) -> Path:
    """Line 1: a good row; line 2: blank; line 3: a row whose task is ``bad_task``."""
    good, bad = _good_rows(seeds_dir, 2)
    good["task"] = "hotpotqa"
    bad["task"] = bad_task
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    return path


def _escaped(root: Path) -> list[Path]:
    return [p for p in root.rglob("*ESCAPED*")] + [p for p in Path("/tmp").glob("ESCAPED-abs*")]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("value", UNSAFE_TASKS + [None, 3])
def test_check_name_refuses_what_is_not_a_plain_file_name(value):
    with pytest.raises(UnsafeNameError, match=r"seeds\.jsonl: line 3: task .* is not a safe name") as info:
        check_name(value, what="task", where="seeds.jsonl: line 3")
    assert "\n" not in str(info.value)  # one line, even for a value holding a newline


@pytest.mark.parametrize("value", ["hotpotqa", "qa v2", "a..b", "multi_news-zh", "日本語"])
def test_check_name_keeps_ordinary_task_names(value):
    assert check_name(value, what="task", where="x") == value


def test_path_inside_refuses_a_link_out_of_the_folder(tmp_path):
    folder, outside = tmp_path / "holdout", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "t.jsonl").symlink_to(outside / "t.jsonl")
    with pytest.raises(UnsafeNameError, match="resolves outside the folder"):
        path_inside(folder, "t.jsonl")
    with pytest.raises(UnsafeNameError):
        path_inside(folder, "../x.jsonl")
    assert path_inside(folder, "u.jsonl") == folder / "u.jsonl"


@pytest.mark.parametrize("bad_task", UNSAFE_TASKS)
def test_load_dataset_refuses_an_unsafe_task_before_any_request(bad_task, seeds_dir, caches, tmp_path):
    import datasets

    import hf_context_synthesis  # noqa: F401 - registers the builder
    from hf_context_synthesis.synthesis.seeds import SeedError

    seeds = _seed_file(tmp_path / "seeds.jsonl", seeds_dir, bad_task)
    with FakeTGIServer(latency=0.0) as srv:
        with pytest.raises(SeedError) as info:
            datasets.load_dataset("context_synthesis", seed=str(seeds), endpoint=srv.url, split="train",
                                  num_distractors=1, progress=False, **caches)
        requests = srv.stats().generation_requests
    message = str(info.value)
    assert requests == 0
    assert f"{seeds}: line 3: task {bad_task!r} is not a safe name" in message
    assert "\n" not in message
    assert not _escaped(tmp_path)


def test_on_bad_row_skip_does_not_hide_an_unsafe_task(seeds_dir, tmp_path):
    from hf_context_synthesis import SynthesisConfig
    from hf_context_synthesis.synthesis.seeds import SeedError, load_seeds

    seeds = _seed_file(tmp_path / "seeds.jsonl", seeds_dir, "../../../ESCAPED")
    with pytest.raises(SeedError, match=r"line 3: task '\.\./\.\./\.\./ESCAPED'.*also with on_bad_row='skip'"):
        load_seeds(SynthesisConfig(seed=str(seeds), endpoint="http://127.0.0.1:9", on_bad_row="skip"))


def test_an_unsafe_task_in_a_dataset_row_is_named_by_row_index(seeds_dir):
    import datasets

    from hf_context_synthesis import SynthesisConfig
    from hf_context_synthesis.synthesis.seeds import SeedError, load_seeds

    rows = _good_rows(seeds_dir, 3)
    for row, task in zip(rows, ["ok", "ok", "/etc/ESCAPED"]):
        row["task"] = task
    with pytest.raises(SeedError, match=r"<Dataset>: row 2: task '/etc/ESCAPED' is not a safe name"):
        load_seeds(SynthesisConfig(seed=datasets.Dataset.from_list(rows), endpoint="http://127.0.0.1:9"))


@pytest.mark.parametrize("bad_task", ["../../../ESCAPED", "/tmp/ESCAPED-abs", "\x00x"])
def test_cli_synthesize_refuses_an_unsafe_task_in_one_line(bad_task, seeds_dir, tmp_path, capsys):
    from hf_context_synthesis.cli import main

    seeds = _seed_file(tmp_path / "in" / "seeds.jsonl", seeds_dir, bad_task)
    out = tmp_path / "a" / "b" / "out"
    with FakeTGIServer(latency=0.0) as srv:
        code = main(["synthesize", "--seed", str(seeds), "--endpoint", srv.url, "--output", str(out),
                     "--num-distractors", "1", "--generation-cache-dir", str(tmp_path / "gen")])
        requests = srv.stats().generation_requests
    lines = _error_lines(capsys)
    assert code != 0 and requests == 0
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert str(seeds) in lines[0] and "line 3" in lines[0] and repr(bad_task) in lines[0]
    assert not _escaped(tmp_path)
    assert not out.exists() or not any(out.rglob("*.parquet"))


def test_cli_run_with_a_holdout_refuses_an_unsafe_task(seeds_dir, tiny_model_dir, tmp_path, capsys):
    """The issue's probe: ``run ... --steps synthesize train evaluate`` with ``holdout_per_task``."""
    from hf_context_synthesis.cli import main

    seeds = _seed_file(tmp_path / "in" / "seeds.jsonl", seeds_dir, "../../../ESCAPED")
    run = tmp_path / "a" / "b" / "c" / "run"  # holdout/../../../ESCAPED.jsonl would land in tmp_path/a/b
    recipe = {
        "output_dir": str(run),
        "synthesis": {"seed": str(seeds), "num_distractors": 1, "progress": False},
        "training": {"model": tiny_model_dir, "max_steps": 1, "use_cpu": True, "report_to": "none"},
        "evaluation": {"holdout_per_task": 1, "limit": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with FakeTGIServer(latency=0.0) as srv:
        code = main(["run", str(path), "--steps", "synthesize", "train", "evaluate",
                     "--set", f"synthesis.endpoint={srv.url}"])
        requests = srv.stats().generation_requests
    lines = _error_lines(capsys)
    assert code != 0 and requests == 0
    assert len(lines) == 1 and "line 3" in lines[0] and "'../../../ESCAPED'" in lines[0]
    assert not _escaped(tmp_path)
    assert not (run / "model").exists()


def _rows_dataset(folder: Path, tasks: list[str]) -> Path:
    """A dataset folder as ``synthesize`` writes it (``data/train-...parquet``), rows of ``tasks``."""
    import datasets

    from hf_context_synthesis.synthesis.schema import ROW_FEATURES

    rows = []
    for i, task in enumerate(tasks):
        doc = f"Doc {i} says answer-{i}."
        content = f"Read.\n\n{doc}\n\nQ?"
        rows.append({
            "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": f"answer-{i}"}],
            "task": task, "instruction": "Q?", "answer": f"answer-{i}", "relevant_context": doc, "relevant_index": 0,
            "context_spans": [[content.index(doc), content.index(doc) + len(doc)]], "num_documents": 1,
            "num_tokens": 10, "generator": "g", "seed_id": f"s/{i}",
        })
    features = datasets.Features({k: v for k, v in ROW_FEATURES.items() if k in rows[0]})
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize("bad_task", ["../../../ESCAPED", "/tmp/ESCAPED-abs", "a/ESCAPED"])
def test_the_holdout_writer_checks_task_names_itself(bad_task, tmp_path):
    """Defence in depth: a dataset folder that did not come through load_seeds is checked at the writer."""
    from hf_context_synthesis.recipe import split_holdout

    run = tmp_path / "a" / "b" / "c" / "run"
    src = _rows_dataset(run / "dataset", [bad_task] * 3 + ["ok"] * 2)
    with pytest.raises(UnsafeNameError, match=r"row 0: task .* is not a safe name"):
        split_holdout(src, 1, 0, run / "train_data", run / "holdout")
    assert not _escaped(tmp_path)
    assert not list((run / "holdout").glob("*.jsonl")) if (run / "holdout").exists() else True


def test_the_holdout_split_deletes_only_the_files_it_wrote(tmp_path):
    from hf_context_synthesis.recipe import HOLDOUT_MARKER, split_holdout

    run = tmp_path / "run"
    src = _rows_dataset(run / "dataset", ["a"] * 3 + ["b"] * 3)
    assert split_holdout(src, 1, 0, run / "train_data", run / "holdout") == 2
    assert sorted(p.name for p in (run / "holdout").glob("*.jsonl")) == ["a.jsonl", "b.jsonl"]
    assert json.loads((run / "holdout" / HOLDOUT_MARKER).read_text())["files"] == ["a.jsonl", "b.jsonl"]
    assert split_holdout(src, 1, 1, run / "train_data", run / "holdout") == 2  # a rerun replaces its own files
    foreign = run / "holdout" / "notes.jsonl"
    foreign.write_text('{"mine": true}\n')
    before = _snapshot(run / "holdout")
    with pytest.raises(FileExistsError, match=r"notes\.jsonl was not written by the recipe's holdout split"):
        split_holdout(src, 1, 2, run / "train_data", run / "holdout")
    assert _snapshot(run / "holdout") == before


def test_a_linked_holdout_folder_is_refused_and_its_target_untouched(tmp_path):
    from hf_context_synthesis.recipe import split_holdout

    run, decoy = tmp_path / "run", tmp_path / "decoy"
    src = _rows_dataset(run / "dataset", ["a"] * 3)
    decoy.mkdir()
    (decoy / "a.jsonl").write_text("precious\n")
    (decoy / "other.jsonl").write_text("precious too\n")
    (run / "holdout").symlink_to(decoy, target_is_directory=True)
    before = _snapshot(decoy)
    with pytest.raises(LinkRefusedError, match=r"recipe holdout folder .*holdout is a symbolic link"):
        split_holdout(src, 1, 0, run / "train_data", run / "holdout")
    assert _snapshot(decoy) == before


# ------------------------------------------------------------------------------------ links in the output
def _synth_seeds(tmp_path: Path, seeds_dir: Path) -> Path:
    path = tmp_path / "seeds" / "hotpotqa.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in _good_rows(seeds_dir, 3)), encoding="utf-8")
    return path.parent


def _synthesize_cli(seeds: Path, out: Path, url: str, tmp_path: Path) -> int:
    from hf_context_synthesis.cli import main

    return main(["synthesize", "--seed", str(seeds), "--endpoint", url, "--output", str(out), "--num-distractors",
                 "1", "--generation-cache-dir", str(tmp_path / "gen"), "--progress", "false"])


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    """A folder outside the output with a file named like a shard and an unrelated parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "decoy"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"y": ["a"]}), folder / "unrelated.parquet")
    return folder


def test_rerun_into_an_output_whose_data_is_a_link_is_refused(seeds_dir, tmp_path, decoy, capsys):
    seeds, out = _synth_seeds(tmp_path, seeds_dir), tmp_path / "out"
    with FakeTGIServer(latency=0.0) as srv:
        assert _synthesize_cli(seeds, out, srv.url, tmp_path) == 0
        import shutil

        shutil.rmtree(out / "data")
        (out / "data").symlink_to(decoy, target_is_directory=True)
        before, out_before = _snapshot(decoy), _snapshot(out)
        capsys.readouterr()
        code = _synthesize_cli(seeds, out, srv.url, tmp_path)
        requests = srv.stats().generation_requests
    lines = _error_lines(capsys)
    assert code != 0 and requests == 3  # the first run's three; the refused rerun asked nothing
    assert len(lines) == 1 and "dataset folder" in lines[0] and str(out / "data") in lines[0]
    assert "symbolic link" in lines[0]
    assert _snapshot(decoy) == before  # same files, same bytes, same mtimes
    assert _snapshot(out) == out_before


def test_shards_the_project_did_not_write_are_never_deleted(seeds_dir, tmp_path, decoy, capsys):
    import shutil

    seeds, out = _synth_seeds(tmp_path, seeds_dir), tmp_path / "out"
    (out / "data").mkdir(parents=True)
    shutil.copy2(decoy / "train-00000-of-00001.parquet", out / "data")
    before = _snapshot(out)
    with FakeTGIServer(latency=0.0) as srv:
        code = _synthesize_cli(seeds, out, srv.url, tmp_path)
        requests = srv.stats().generation_requests
    lines = _error_lines(capsys)
    assert code != 0 and requests == 0
    assert len(lines) == 1 and "was not written by context synthesis" in lines[0]
    assert _snapshot(out) == before


def test_a_lock_file_link_is_refused_and_its_target_not_truncated(seeds_dir, tmp_path, capsys):
    from hf_context_synthesis.synthesis.output import LOCK_FILE

    seeds, out = _synth_seeds(tmp_path, seeds_dir), tmp_path / "out"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (out / LOCK_FILE).symlink_to(precious)
    with FakeTGIServer(latency=0.0) as srv:
        code = _synthesize_cli(seeds, out, srv.url, tmp_path)
        requests = srv.stats().generation_requests
    lines = _error_lines(capsys)
    assert code != 0 and requests == 0 and len(lines) == 1 and "lock file" in lines[0]
    assert precious.read_text() == "keep me"


def test_a_rerun_leaves_linked_and_foreign_staging_folders_alone(seeds_dir, tmp_path, decoy):
    seeds, out = _synth_seeds(tmp_path, seeds_dir), tmp_path / "out"
    with FakeTGIServer(latency=0.0) as srv:
        assert _synthesize_cli(seeds, out, srv.url, tmp_path) == 0
        (out / ".staging-123-abcdef12").symlink_to(decoy, target_is_directory=True)
        (out / ".staging-mine").mkdir()
        (out / ".staging-mine" / "keep.txt").write_text("x")
        left = out / ".staging-456-0123abcd"  # one a killed run of ours left: removed
        left.mkdir()
        before = _snapshot(decoy)
        assert _synthesize_cli(seeds, out, srv.url, tmp_path) == 0  # cached: a full rerun that succeeds
    assert _snapshot(decoy) == before
    assert (out / ".staging-mine" / "keep.txt").read_text() == "x" and not left.exists()
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_a_dataset_card_link_is_refused(seeds_dir, tmp_path, capsys):
    seeds, out = _synth_seeds(tmp_path, seeds_dir), tmp_path / "out"
    out.mkdir()
    precious = tmp_path / "precious.md"
    precious.write_text("keep me")
    (out / "README.md").symlink_to(precious)
    with FakeTGIServer(latency=0.0) as srv:
        code = _synthesize_cli(seeds, out, srv.url, tmp_path)
        assert srv.stats().generation_requests == 0
    lines = _error_lines(capsys)
    assert code != 0 and len(lines) == 1 and "README.md is a symbolic link" in lines[0]
    assert precious.read_text() == "keep me"


def test_a_linked_recipe_model_folder_is_refused(tiny_model_dir, tmp_path, decoy, capsys):
    from hf_context_synthesis.cli import main

    run = tmp_path / "run"
    _rows_dataset(run / "dataset", ["a"] * 4)
    (run / "model").symlink_to(decoy, target_is_directory=True)
    recipe = {"output_dir": str(run), "synthesis": {"seed": "unused.jsonl"},
              "training": {"model": tiny_model_dir, "max_steps": 1, "use_cpu": True, "report_to": "none"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    before = _snapshot(decoy)
    capsys.readouterr()
    code = main(["run", str(path), "--steps", "train"])
    lines = _error_lines(capsys)
    assert code != 0 and len(lines) == 1 and "recipe model folder" in lines[0] and "symbolic link" in lines[0]
    assert _snapshot(decoy) == before


def test_train_refuses_an_output_holding_links(tiny_model_dir, tmp_path, decoy):
    from hf_context_synthesis.training.trainer import TrainingJobArguments, train

    out = tmp_path / "model"
    out.mkdir()
    (out / "checkpoint-1").symlink_to(decoy, target_is_directory=True)
    before = _snapshot(decoy)
    with pytest.raises(LinkRefusedError, match=r"training output folder: entry .*checkpoint-1 is a symbolic link"):
        train(TrainingJobArguments(model=tiny_model_dir, dataset=str(tmp_path / "none"), output=str(out)))
    assert _snapshot(decoy) == before


def test_shard_cache_files_are_never_written_through_links(tmp_path):
    from hf_context_synthesis.synthesis.cache import GenerationCache
    from hf_context_synthesis.scale.sharding import export_cache, merge_caches

    cache = tmp_path / "node" / "generations.sqlite"
    cache.parent.mkdir()
    GenerationCache(str(cache)).close()
    precious = tmp_path / "precious.sqlite"
    precious.write_bytes(b"keep me")
    published = tmp_path / "shards" / "shard-00000"
    published.mkdir(parents=True)
    (published / "generations.sqlite").symlink_to(precious)
    with pytest.raises(LinkRefusedError, match="shard cache file"):
        export_cache(str(cache), str(published / "generations.sqlite"))
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "generations.sqlite").symlink_to(precious)
    with pytest.raises(LinkRefusedError, match="merged cache file"):
        merge_caches([str(cache)], str(merged / "generations.sqlite"))
    assert precious.read_bytes() == b"keep me"


def test_refuse_links_below_finds_a_nested_link(tmp_path, decoy):
    (tmp_path / "m" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "m" / "checkpoint-2" / "model.safetensors").symlink_to(decoy / "unrelated.parquet")
    with pytest.raises(LinkRefusedError, match="model.safetensors"):
        refuse_links_below(tmp_path / "m")
    refuse_links_below(tmp_path / "missing")  # nothing there yet: fine
    os.unlink(tmp_path / "m" / "checkpoint-2" / "model.safetensors")
    refuse_links_below(tmp_path / "m")
