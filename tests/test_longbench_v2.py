"""LongBench v2: pred.py's prompts, truncation and answer extraction, result.py's scores (compared with
LongBench v2's own code, vendored in ``tests/longbench_v2_reference.py``), data options, outputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import longbench_v2_reference as ref
from hf_context_synthesis.backends.base import GenerationRequest, GenerationResult
from hf_context_synthesis.testing.scripted import ScriptedBackend as _Scripted
from hf_context_synthesis.evaluation.longbench_v2 import (
    TEMPLATE_0SHOT,
    TEMPLATE_0SHOT_COT_ANS,
    build_prompt,
    default_max_length,
    evaluate_longbench_v2,
    extract_answer,
    load_questions,
    summarize,
    truncate,
)


class ScriptedBackend(_Scripted):
    """Answers from a (key, turn) table: the second turn of a chain of thought is keyed ``<key>/ans``."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        super().__init__(answers, model="org/scripted-v2")

    def key_of(self, request: GenerationRequest) -> str:
        content = request.messages[0]["content"]
        return request.key + ("/ans" if "single, most likely answer" in content else "")


def question(i: int, difficulty: str, length: str, answer: str, context: str | None = None) -> dict:
    return {
        "_id": f"q{i}", "domain": "Single-Document QA", "sub_domain": "Academic", "difficulty": difficulty,
        "length": length, "question": f"  Which option is right for question {i}?  ",
        "choice_A": "alpha ", "choice_B": " beta", "choice_C": "gamma", "choice_D": "delta", "answer": answer,
        "context": context if context is not None else f"  The document of question {i}. " * 3,
    }  # fmt: skip


QUESTIONS = [
    question(0, "easy", "short", "B"),
    question(1, "hard", "short", "C"),
    question(2, "hard", "medium", "A"),
    question(3, "easy", "long", "D"),
    question(4, "hard", "long", "A"),
    question(5, "hard", "medium", "B"),
]
RESPONSES = {
    "q0": "The correct answer is (B)",  # right
    "q1": "**The correct answer is C**",  # right once '*' is removed
    "q2": "I believe the answer is A.",  # no extractable answer -> wrong
    "q3": "The correct answer is (A)",  # wrong letter
    "q4": None,  # generation failed -> wrong, kept
    "q5": "Reasoning... The correct answer is (B) because",  # right
}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    return make_tiny_tokenizer()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(QUESTIONS), "utf-8")
    return path


def test_prompt_is_pred_py_replace_chain() -> None:
    q = QUESTIONS[0]
    prompt = build_prompt(TEMPLATE_0SHOT, q)
    assert prompt.startswith("Please read the following text and answer the question below.\n\n<text>\nThe document")
    assert "(A) alpha\n(B) beta\n(C) gamma\n(D) delta\n\n" in prompt  # each field stripped
    assert "question 0?\nChoices:" in prompt and "\n</text>\n\n" in prompt
    assert prompt.endswith('Format your response as follows: "The correct answer is (insert answer here)".')
    assert "$" not in prompt
    ans = build_prompt(TEMPLATE_0SHOT_COT_ANS, q, cot="step 1, step 2")
    assert "The text is too long and omitted here." in ans and "step by step: step 1, step 2\n\n" in ans


@pytest.mark.parametrize(
    "response",
    ["The correct answer is (B)", "The correct answer is **(C)**", "*The correct answer is D*", "the correct answer is (A)",
     "The correct answer is (E)", "The correct answer is A or B", "", "(A)", "The correct answer is (a)",
     "The correct answer is (C). The correct answer is (D)"],
)  # fmt: skip
def test_extract_answer_equals_pred_py(response: str) -> None:
    assert extract_answer(response) == ref.extract_answer(response)


def test_truncation_is_pred_py(tiny_tokenizer) -> None:
    long = "BEGIN " + "middle words here. " * 300 + "question at the END"
    out = truncate(long, tiny_tokenizer, 41)
    ids = tiny_tokenizer.encode(long)
    # pred.py's ids[:max_len//2] + ids[-max_len//2:]: -41//2 == -21, so the tail keeps one token more
    assert out == tiny_tokenizer.decode(ids[:20] + ids[-21:], skip_special_tokens=True)
    assert truncate(long, tiny_tokenizer, 40) == tiny_tokenizer.decode(ids[:20] + ids[-20:], skip_special_tokens=True)
    assert out.startswith("BEGIN") and out.endswith("question at the END")
    assert truncate("short", tiny_tokenizer, 41) == "short"
    assert default_max_length(131072) == 120000 and default_max_length(32768) == 30720
    assert default_max_length(1024) == 512


def test_evaluate_scores_equal_result_py(tmp_path: Path, data_file: Path, tiny_tokenizer) -> None:
    backend = ScriptedBackend(RESPONSES)
    out = tmp_path / "out"
    report = evaluate_longbench_v2(backend, data_file, tokenizer=tiny_tokenizer, max_length=5000, output_dir=out)
    # hand-worked: right = q0, q1, q5 -> 3/6; easy {q0 right, q3 wrong} 50.0; hard {q1, q5 right of 4} 50.0;
    # short {q0, q1} 100.0; medium {q2 wrong, q5 right} 50.0; long {q3, q4 wrong} 0.0
    expected = {"Overall": 50.0, "Easy": 50.0, "Hard": 50.0, "Short": 100.0, "Medium": 50.0, "Long": 0.0}
    assert report.scores == expected and report.num_failed == 1
    # LongBench v2's result.py, run on the predictions folder we wrote, prints the same numbers
    header, line = ref.result_rows(out / "predictions")
    assert header == "Model\tOverall\tEasy\tHard\tShort\tMedium\tLong"
    name, *values = line.split("\t")
    assert name == "scripted-v2" and [float(v) for v in values] == list(expected.values())
    results = json.loads((out / "results.json").read_text())
    assert results["scores"] == expected and results["suite"] == "longbench-v2" and results["num_failed"] == 1
    assert results["counts"] == {"Overall": 6, "Easy": 2, "Hard": 4, "Short": 2, "Medium": 2, "Long": 2}
    assert json.loads((out / "result.json").read_text()) == expected
    assert (out / "result.txt").read_text().splitlines() == [header, line]
    md = (out / "results.md").read_text()
    assert "| Overall | 50.0 | 6 |" in md and md.startswith("LongBench v2 (subset: 6 of 503 questions) evaluation")
    # pred.py's line layout: question fields + response, pred, judge, context cut to 1000 chars
    rows = [json.loads(x) for x in (out / "predictions" / "scripted-v2.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in rows] == ["B", "C", None, "A", None, "B"]
    assert [r["judge"] for r in rows] == [True, True, False, False, False, True]
    assert rows[4]["error"] == "http_503" and rows[0]["_id"] == "q0" and rows[0]["sub_domain"] == "Academic"
    # requests: one user turn with the 0-shot prompt, pred.py's temperature and 128 new tokens
    req = next(r for r in backend.requests if r.key == "q0")
    assert req.messages[0]["content"] == build_prompt(TEMPLATE_0SHOT, QUESTIONS[0])
    assert (req.temperature, req.max_new_tokens) == (0.1, 128)


def test_long_contexts_are_truncated_and_cot_asks_twice(tmp_path: Path, tiny_tokenizer) -> None:
    qs = [question(0, "easy", "long", "C", context="START " + "filler text of the book. " * 400 + " FINAL"), question(1, "hard", "short", "A")]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in qs), "utf-8")
    backend = ScriptedBackend({"q0": "Let us see, it is gamma.", "q0/ans": "The correct answer is (C)", "q1": None})
    report = evaluate_longbench_v2(backend, path, tokenizer=tiny_tokenizer, max_length=300, cot=True, temperature=0)
    first = [r for r in backend.requests if "single, most likely" not in r.messages[0]["content"]]
    second = [r for r in backend.requests if "single, most likely" in r.messages[0]["content"]]
    assert {r.max_new_tokens for r in first} == {1024} and {r.max_new_tokens for r in second} == {128}
    long_prompt = next(r for r in first if r.key == "q0").messages[0]["content"]
    assert len(tiny_tokenizer.encode(long_prompt)) <= 302 and long_prompt.startswith("Please read") and "FINAL" not in long_prompt[:200]
    assert long_prompt.endswith("Let\u2019s think step by step:")
    ans_prompt = next(r for r in second if r.key == "q0").messages[0]["content"]
    assert "step by step: Let us see, it is gamma." in ans_prompt
    assert [r["pred"] for r in report.predictions] == ["C", None] and report.num_failed == 1
    assert report.predictions[0]["response_cot"] == "Let us see, it is gamma."
    assert report.scores["Overall"] == 50.0 and report.scores["Medium"] is None


def test_data_options_and_errors(tmp_path: Path, data_file: Path) -> None:
    as_list = load_questions(data_file)
    assert [q["_id"] for q in as_list] == [f"q{i}" for i in range(6)]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "data.json").write_bytes(data_file.read_bytes())
    (folder / "other.jsonl").write_text(json.dumps(QUESTIONS[0]) + "\n", "utf-8")  # data.json wins
    assert load_questions(folder) == as_list
    archive = tmp_path / "v2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(data_file, "LongBench-v2/data.json")
    assert load_questions(archive, limit=2) == as_list[:2]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(QUESTIONS), tmp_path / "train-00000-of-00001.parquet")
    assert load_questions(tmp_path / "train-00000-of-00001.parquet") == as_list

    bad = [dict(QUESTIONS[0]), {k: v for k, v in QUESTIONS[1].items() if k != "choice_C"}]
    (tmp_path / "bad.json").write_text(json.dumps(bad), "utf-8")
    with pytest.raises(ValueError, match=r"bad.json\[1\]: missing field 'choice_C'"):
        load_questions(tmp_path / "bad.json")
    bad[1] = dict(QUESTIONS[1], answer="E")
    (tmp_path / "bad.json").write_text(json.dumps(bad), "utf-8")
    with pytest.raises(ValueError, match=r"bad.json\[1\]: field 'answer' must be one of A, B, C, D"):
        load_questions(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="not a data.json"):
        load_questions(tmp_path / "missing-dir" / "x")


def test_summarize_matches_result_py_rounding(tmp_path: Path) -> None:
    rows = [{"judge": i % 3 == 0, "difficulty": "easy" if i % 2 else "hard", "length": ["short", "medium", "long"][i % 3], "pred": "A"} for i in range(7)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    _, line = ref.result_rows(tmp_path)
    assert [float(v) for v in line.split("\t")[1:]] == list(summarize(rows).values())


def test_evaluate_command_runs_v2_on_the_tiny_model(tmp_path: Path, tiny_model_dir: str, data_file: Path) -> None:
    """``context-synthesis evaluate --suite longbench-v2`` in process on a tiny local model writes result.py's files."""
    from hf_context_synthesis.cli import main

    out = tmp_path / "out"
    data = tmp_path / "three.jsonl"  # every group non-empty (result.py divides by each group's size)
    data.write_text("".join(json.dumps(QUESTIONS[i]) + "\n" for i in (0, 2, 4)), "utf-8")
    rc = main(["evaluate", "--suite", "longbench-v2", "--model", tiny_model_dir, "--data-dir", str(data),
               "--output-dir", str(out), "--batch-size", "3", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == "longbench-v2" and results["counts"]["Overall"] == 3
    assert results["settings"]["max_length"] == default_max_length(131072)
    _, line = ref.result_rows(out / "predictions")
    assert [float(v) for v in line.split("\t")[1:]] == list(results["scores"].values())
    assert json.loads((out / "result.json").read_text()) == results["scores"]


def test_model_index_entries_are_labelled_by_coverage(tmp_path: Path, data_file: Path, tiny_tokenizer) -> None:
    """A 6-question run is published as a LongBench v2 *subset*; push-model's loader reads the v2 results.json."""
    from hf_context_synthesis.evaluation.results import load_eval_results
    from hf_context_synthesis.evaluation.longbench_v2 import eval_results_from_dict

    report = evaluate_longbench_v2(
        ScriptedBackend(RESPONSES), data_file, tokenizer=tiny_tokenizer, max_length=5000, output_dir=tmp_path / "o"
    )
    entries = load_eval_results(tmp_path / "o")
    assert [(e.metric_name, e.metric_value) for e in entries] == [
        (f"Accuracy ({k.lower()})", v) for k, v in report.scores.items()
    ]
    assert {(e.dataset_type, e.dataset_name, e.dataset_split, e.metric_type) for e in entries} == {
        ("THUDM/LongBench-v2", "LongBench v2 (subset: 6 of 503 questions)", "train", "accuracy")
    }
    full = dict(report.to_dict(), counts={"Overall": 503})
    assert {e.dataset_name for e in eval_results_from_dict(full)} == {"LongBench v2"}


def test_hub_dataset_id_data_json_and_parquet_mirror(tmp_path: Path, monkeypatch, data_file: Path) -> None:
    """``--data-dir owner/name[@revision]``: the repo's data.json, or its parquet files on another revision."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi, constants

    from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    pq.write_table(pa.Table.from_pylist(QUESTIONS[:3]), tmp_path / "0000.parquet")
    with FakeHubServer(token="hf_test", write_namespaces={"lb"}) as server, hub_endpoint(server.url):
        api = HfApi(token="hf_test")
        api.create_repo("lb/LongBench-v2", repo_type="dataset")
        api.upload_file(path_or_fileobj=str(data_file), path_in_repo="data.json", repo_id="lb/LongBench-v2",
                        repo_type="dataset")  # fmt: skip
        api.create_branch("lb/LongBench-v2", branch="parquet", repo_type="dataset")
        api.upload_file(path_or_fileobj=str(tmp_path / "0000.parquet"), path_in_repo="default/train/0000.parquet",
                        repo_id="lb/LongBench-v2", repo_type="dataset", revision="parquet")  # fmt: skip
        api.delete_file("data.json", "lb/LongBench-v2", repo_type="dataset", revision="parquet")  # parquet only
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        assert [q["_id"] for q in load_questions("lb/LongBench-v2")] == [f"q{i}" for i in range(6)]
        assert load_questions("lb/LongBench-v2@parquet") == load_questions(data_file)[:3]
    assert (tmp_path / "hf-home" / "hub").is_dir()  # downloads went to the test's cache, not ~/.cache


def test_a_rerun_resumes_from_the_answers_already_written(tmp_path: Path, data_file: Path, tiny_tokenizer) -> None:
    """Answers are appended as they arrive; a rerun asks only the unanswered and the failed questions."""
    out = tmp_path / "out"
    first = ScriptedBackend(RESPONSES)
    evaluate_longbench_v2(first, data_file, tokenizer=tiny_tokenizer, max_length=5000, limit=5, output_dir=out)
    pred = out / "predictions" / "scripted-v2.jsonl"
    assert json.loads(pred.read_text().splitlines()[4])["error"] == "http_503"  # q4 failed
    with open(pred, "a", encoding="utf-8") as f:
        f.write('{"_id": "q5", "resp')  # a line cut short by a crash
    again = ScriptedBackend(dict(RESPONSES, q4="The correct answer is (A)"))
    report = evaluate_longbench_v2(again, data_file, tokenizer=tiny_tokenizer, max_length=5000, output_dir=out)
    assert sorted(r.key for r in again.requests) == ["q4", "q5"]  # q0-q3 reused, the failed q4 asked again
    assert [r["pred"] for r in report.predictions] == ["B", "C", None, "A", "A", "B"] and report.num_failed == 0
    assert [json.loads(x)["_id"] for x in pred.read_text().splitlines()] == [f"q{i}" for i in range(6)]
    assert report.scores["Overall"] == 66.7 and ref.result_rows(out / "predictions")[1].split("\t")[1] == "66.7"
    # the chain-of-thought mode does not reuse 0-shot answers
    cot = ScriptedBackend({})
    evaluate_longbench_v2(cot, data_file, tokenizer=tiny_tokenizer, max_length=5000, cot=True, limit=2, output_dir=out)
    assert sorted(r.key for r in cot.requests) == ["q0", "q1"]


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps(QUESTIONS[0]) + "\n", "utf-8")
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate _id 'q0' \(first at .*dup.jsonl:1\)"):
        load_questions(path)


def test_answers_written_before_a_crash_are_kept(tmp_path: Path, data_file: Path, tiny_tokenizer) -> None:
    class Crashing(ScriptedBackend):
        async def generate(self, request: GenerationRequest) -> GenerationResult:
            if request.key == "q3":
                raise KeyboardInterrupt  # the run is stopped mid-way
            return await super().generate(request)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        evaluate_longbench_v2(Crashing(RESPONSES), data_file, tokenizer=tiny_tokenizer, max_length=5000, output_dir=out)
    lines = (out / "predictions" / "scripted-v2.jsonl").read_text().splitlines()
    assert [json.loads(x)["_id"] for x in lines] == ["q0", "q1", "q2"]  # one line per answer, as it arrived


def test_evaluate_command_through_an_endpoint(tmp_path: Path, data_file: Path, tiny_model_dir: str) -> None:
    """``evaluate --suite longbench-v2 --endpoint URL --tokenizer ...``: chat requests with pred.py's settings."""
    from hf_context_synthesis.cli import main
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    seen = []

    def responder(p) -> str:
        seen.append(p)
        return "The correct answer is (B)"

    out = tmp_path / "out"
    with FakeTGIServer(responder=responder, model_id="org/served-model") as srv:
        rc = main(["evaluate", "--suite", "longbench-v2", "--endpoint", srv.url, "--tokenizer", tiny_model_dir,
                   "--max-length", "120000", "--data-dir", str(data_file), "--output-dir", str(out)])  # fmt: skip
    assert rc == 0
    assert sorted((p.route, p.max_new_tokens, p.temperature) for p in seen) == [("chat", 128, 0.1)] * 6
    results = json.loads((out / "results.json").read_text())
    # answers B: right for q0 and q5 only -> 2/6; easy {q0} of 2; hard {q5} of 4; short {q0} of 2; medium {q5} of 2
    assert results["scores"] == {"Overall": 33.3, "Easy": 50.0, "Hard": 25.0, "Short": 50.0, "Medium": 50.0, "Long": 0.0}
    assert results["settings"]["backend"] == "tgi" and (out / "predictions" / "served-model.jsonl").is_file()

    seen.clear()  # --cot --temperature 0: reasoning turn (1,024 tokens), then the answer turn (128), greedy
    with FakeTGIServer(responder=responder, model_id="org/served-model") as srv:
        rc = main(["evaluate", "--suite", "longbench-v2", "--endpoint", srv.url, "--tokenizer", tiny_model_dir,
                   "--max-length", "120000", "--data-dir", str(data_file), "--output-dir", str(tmp_path / "cot"),
                   "--cot", "--temperature", "0", "--limit", "2"])  # fmt: skip
    assert rc == 0
    assert sorted((p.max_new_tokens, p.temperature) for p in seen) == [(128, 0.0)] * 2 + [(1024, 0.0)] * 2
    cot = json.loads((tmp_path / "cot" / "results.json").read_text())
    assert cot["settings"]["cot"] is True and cot["scores"]["Overall"] == 50.0  # B: right for q0, wrong for q1
