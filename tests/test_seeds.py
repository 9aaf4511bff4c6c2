"""Seed loading: formats, column layouts, validation errors that name file/row/field."""

from __future__ import annotations

import json

import datasets
import pytest

from hf_context_synthesis import SeedError, SynthesisConfig, load_seeds


def seeds_of(seed, **kw):
    return load_seeds(SynthesisConfig(seed=seed, **kw))


def test_shared_folder_one_task_per_file(seeds_dir):
    result = seeds_of(str(seeds_dir))
    tasks = {}
    for ex in result.examples:
        tasks[ex.task] = tasks.get(ex.task, 0) + 1
    assert tasks == {t: 200 for t in
                     ["2wikiqa", "govreport", "hotpotqa", "multinews", "musique", "narrativeqa", "qasper", "qmsum"]}
    first = json.loads((seeds_dir / "2wikiqa.jsonl").read_text().splitlines()[0])
    ex = result.examples[0]
    assert (ex.task, ex.instruction, ex.answer, ex.seed_id) == ("2wikiqa", first["instruction"], first["answer"], "2wikiqa/0")


ROWS = [{"instruction": "Who built the mill?", "answer": "The miller."}, {"instruction": "When?", "answer": "1820"}]


@pytest.mark.parametrize("ext", ["jsonl", "json", "parquet", "csv"])
def test_file_formats(tmp_path, ext):
    path = tmp_path / f"mytask.{ext}"
    ds = datasets.Dataset.from_list(ROWS)
    if ext == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif ext == "json":
        path.write_text(json.dumps(ROWS))
    elif ext == "parquet":
        ds.to_parquet(str(path))
    else:
        ds.to_csv(str(path), index=False)
    result = seeds_of(str(path))
    assert [(e.task, e.instruction, e.answer) for e in result.examples] == [
        ("mytask", r["instruction"], r["answer"]) for r in ROWS
    ]


@pytest.mark.parametrize(
    "row, instruction, answer",
    [
        ({"instruction": "Summarize.", "input": "The text.", "output": "Short."}, "Summarize.\n\nThe text.", "Short."),
        ({"instruction": "Name it.", "input": "", "output": "X"}, "Name it.", "X"),
        ({"instruction": "Q?", "context": "Background.", "response": "R"}, "Q?\n\nBackground.", "R"),
        ({"prompt": "P?", "completion": "C"}, "P?", "C"),
        ({"question": "Q?", "answer": "A"}, "Q?", "A"),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "U?"},
                          {"role": "assistant", "content": "A!"}, {"role": "user", "content": "more"}]},
            "U?",
            "A!",
        ),
    ],
    ids=["alpaca", "alpaca-empty-input", "dolly", "prompt-completion", "question-answer", "messages"],
)
def test_column_layouts(row, instruction, answer):
    result = seeds_of(datasets.Dataset.from_list([row]), task="t")
    assert (result.examples[0].instruction, result.examples[0].answer, result.examples[0].task) == (instruction, answer, "t")


def test_explicit_columns_and_task_column():
    ds = datasets.Dataset.from_list([{"q": "Why?", "gold": "Because.", "src": "faq", "instruction": "ignored"}])
    result = seeds_of(ds, columns={"instruction": "q", "answer": "gold", "task": "src"})
    assert (result.examples[0].instruction, result.examples[0].answer, result.examples[0].task) == ("Why?", "Because.", "faq")


def test_int_seed_gets_a_clear_error():
    with pytest.raises(TypeError, match="random_seed"):
        SynthesisConfig(seed=42)


def test_int_seed_through_load_dataset():
    import hf_context_synthesis  # noqa: F401 - registers the builder

    with pytest.raises(TypeError, match=r"`seed` names the seed .*random_seed=42"):
        datasets.load_dataset("context_synthesis", seed=42, split="train")


def test_bad_row_names_file_row_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = ROWS + [{"instruction": "Empty answer?", "answer": "  "}, {"instruction": 7, "answer": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(SeedError) as err:
        seeds_of(str(path))
    msg = str(err.value)
    assert str(path) in msg and "row 2" in msg and "'answer'" in msg and "empty" in msg


def test_bad_rows_skipped_and_counted(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = ROWS + [{"instruction": "Empty answer?", "answer": ""}, {"instruction": 7, "answer": "x"}, {"answer": "y"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = seeds_of(str(path), on_bad_row="skip")
    assert len(result.examples) == 2
    assert result.rejected == {"answer empty": 1, "instruction not a string (int)": 1, "instruction missing": 1}
    assert result.total_rows == 5


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_non_utf8_row_names_file_and_line_and_skip_applies(tmp_path, ext):
    path = tmp_path / f"qa.{ext}"
    good = [("What colour is the sky?", "blue"), ("Who wrote it?", "Ann")]
    if ext == "jsonl":
        lines = [json.dumps({"instruction": q, "answer": a}).encode() for q, a in good]
        lines.insert(1, b'{"instruction": "Caf\xe9 au lait?", "answer": "latin-1 bytes"}')
        path.write_bytes(b"\n".join(lines) + b"\n")
        line = 2
    else:
        lines = [b"instruction,answer"] + [f"{q},{a}".encode() for q, a in good]
        lines.insert(2, b"Caf\xe9 au lait?,latin-1 bytes")
        path.write_bytes(b"\n".join(lines) + b"\n")
        line = 3
    with pytest.raises(SeedError) as err:
        seeds_of(str(path))
    msg = str(err.value)
    assert str(path) in msg and f"line {line} is not valid UTF-8" in msg and "on_bad_row='skip'" in msg
    result = seeds_of(str(path), on_bad_row="skip")
    assert [e.answer for e in result.examples] == ["blue", "Ann"]
    assert result.rejected == {"not valid UTF-8": 1} and result.total_rows == 3


def test_non_utf8_json_file_names_the_line(tmp_path):
    path = tmp_path / "qa.json"
    path.write_bytes(b'[{"instruction": "a?", "answer": "b"},\n {"instruction": "Caf\xe9?", "answer": "c"}]')
    with pytest.raises(SeedError, match=r"qa.json: line 2 is not valid UTF-8"):
        seeds_of(str(path))


def test_invalid_json_line_is_a_bad_row(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"instruction": "a?", "answer": "b"}\n{"instruction": oops}\n')
    with pytest.raises(SeedError, match="line 2 is not valid JSON"):
        seeds_of(str(path))
    assert seeds_of(str(path), on_bad_row="skip").rejected == {"not valid JSON": 1}


def test_unknown_layout_and_missing_path(tmp_path):
    with pytest.raises(SeedError, match="columns="):
        seeds_of(datasets.Dataset.from_list([{"foo": "a", "bar": "b"}]))
    with pytest.raises(SeedError, match="does not exist"):
        seeds_of(str(tmp_path / "nope.jsonl"))


def test_max_seeds_per_task(seeds_dir):
    result = seeds_of(str(seeds_dir), max_seeds=3)
    assert len(result.examples) == 24
