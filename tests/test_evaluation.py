"""LongBench prompts/data/truncation, the scoring pipeline with a scripted backend, and the
``evaluate`` command end to end on a tiny random-weight local model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_context_synthesis.testing.scripted import ScriptedBackend
from hf_context_synthesis.evaluation.longbench_v1 import evaluate_longbench
from hf_context_synthesis.evaluation.longbench_tasks import (
    LONGBENCH_TASKS,
    available_tasks,
    build_prompt,
    canonical_task,
    dataset2maxlen,
    dataset2prompt,
    find_task_file,
    load_task,
    middle_truncate,
    middle_truncate_ids,
)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def lb_row(context: str, answers: list[str], question: str = "Who built the mill?") -> dict:
    return {"input": question, "context": context, "answers": answers, "length": len(context.split()), "all_classes": None}


# ----------------------------------------------------------------------------- prompts and lengths


def test_prompts_and_lengths_are_longbench_ones() -> None:
    for task in LONGBENCH_TASKS:
        assert "{context}" in dataset2prompt[task]
    # summarization prompts have no question; QA prompts end with the question and "Answer:"
    assert "{input}" not in dataset2prompt["govreport"] and "{input}" not in dataset2prompt["multinews"]
    assert dataset2prompt["hotpotqa"].endswith("Question: {input}\nAnswer:")
    assert dataset2prompt["narrativeqa"].endswith("Question: {input}\n\nAnswer:")
    assert "asconcisely" in dataset2prompt["narrativeqa"]  # LongBench's typo, kept on purpose
    assert dataset2prompt["2wikimqa"] == dataset2prompt["2wikiqa"] == dataset2prompt["musique"]
    assert dataset2prompt["gov_report"] == dataset2prompt["govreport"]
    assert {t: dataset2maxlen[t] for t in LONGBENCH_TASKS} == {
        "narrativeqa": 128, "qasper": 128, "hotpotqa": 32, "2wikiqa": 32, "musique": 32,
        "govreport": 512, "qmsum": 512, "multinews": 512,
    }  # fmt: skip
    assert (dataset2maxlen["multi_news"], dataset2maxlen["gov_report"], dataset2maxlen["2wikimqa"]) == (512, 512, 32)


def test_build_prompt_keeps_braces_in_context() -> None:
    prompt = build_prompt("2wikimqa", {"context": "set {x} = {y}", "input": "What is {x}?"})
    assert "set {x} = {y}" in prompt and prompt.endswith("Question: What is {x}?\nAnswer:")


def test_canonical_task_names() -> None:
    assert canonical_task("2wikimqa") == "2wikiqa"
    assert canonical_task("gov_report") == "govreport"
    assert canonical_task("multinews") == "multinews"
    with pytest.raises(ValueError, match="unknown LongBench task 'trec'"):
        canonical_task("trec")


# ----------------------------------------------------------------------------- data files


def test_find_task_file_both_names_and_data_subfolder(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "2wikimqa.jsonl", [lb_row("c", ["a"])])
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "govreport.jsonl", [lb_row("c", ["a"])])
    assert find_task_file(tmp_path, "2wikiqa").name == "2wikimqa.jsonl"
    assert find_task_file(tmp_path, "gov_report") == tmp_path / "data" / "govreport.jsonl"
    assert available_tasks(tmp_path) == ["2wikiqa", "govreport"]
    with pytest.raises(FileNotFoundError, match="qmsum"):
        find_task_file(tmp_path, "qmsum")


def test_load_task_fields_limit_and_errors(tmp_path: Path) -> None:
    rows = [lb_row(f"context {i}", [f"answer {i}"]) for i in range(3)]
    rows[1]["answers"] = "single string answer"
    rows[2]["_id"] = "abc"
    write_jsonl(tmp_path / "qasper.jsonl", rows)
    examples = load_task(tmp_path, "qasper")
    assert [e.answers for e in examples] == [["answer 0"], ["single string answer"], ["answer 2"]]
    assert [e.id for e in examples] == ["qasper/1", "qasper/2", "abc"]
    assert examples[0].input == "Who built the mill?" and examples[0].length == 2
    assert len(load_task(tmp_path, "qasper", limit=2)) == 2

    (tmp_path / "qmsum.jsonl").write_text(json.dumps(lb_row("c", ["a"])) + "\n{not json\n", "utf-8")
    with pytest.raises(ValueError, match=r"qmsum.jsonl:2: not valid JSON"):
        load_task(tmp_path, "qmsum")
    write_jsonl(tmp_path / "musique.jsonl", [{"input": "q", "answers": ["a"]}])
    with pytest.raises(ValueError, match=r"musique.jsonl:1: missing field 'context'"):
        load_task(tmp_path, "musique")
    write_jsonl(tmp_path / "hotpotqa.jsonl", [{"input": "q", "context": "c", "answers": [1, 2]}])
    with pytest.raises(ValueError, match="list of strings"):
        load_task(tmp_path, "hotpotqa")


# ----------------------------------------------------------------------------- truncation


def test_middle_truncate_ids() -> None:
    ids = list(range(10))
    assert middle_truncate_ids(ids, 4) == [0, 1, 8, 9]
    assert middle_truncate_ids(ids, 5) == [0, 1, 7, 8, 9]
    assert middle_truncate_ids(ids, 10) == ids
    with pytest.raises(ValueError):
        middle_truncate_ids(ids, 0)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    return make_tiny_tokenizer()


def test_middle_truncate_keeps_both_ends(tiny_tokenizer) -> None:
    prompt = "BEGINNING instructions. " + "filler words in the middle. " * 200 + "Question: who? Answer:"
    out = middle_truncate(prompt, tiny_tokenizer, 60)
    assert out.startswith("BEGINNING instructions.") and out.endswith("Question: who? Answer:")
    assert len(out) < len(prompt) / 5
    assert len(tiny_tokenizer(out, add_special_tokens=False)["input_ids"]) <= 61
    short = "short prompt"
    assert middle_truncate(short, tiny_tokenizer, 60) is short


# ----------------------------------------------------------------------------- scoring pipeline


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    data = tmp_path / "longbench"
    data.mkdir()
    write_jsonl(data / "hotpotqa.jsonl", [lb_row("Paris is big.", ["Paris", "Lyon"]), lb_row("c", ["Big Ben", "London"])])
    write_jsonl(data / "gov_report.jsonl", [lb_row("report text", ["the cat lay on the mat"], question="")])
    write_jsonl(data / "qasper.jsonl", [lb_row("article", ["yes"])])
    return data


def test_scores_requests_and_report_with_scripted_backend(small_data: Path, tmp_path: Path) -> None:
    backend = ScriptedBackend(
        {"hotpotqa/0": "Paris", "hotpotqa/1": "London bridge", "govreport/0": "The cat sat on the mat", "qasper/0": None}
    )
    report = evaluate_longbench(
        backend, small_data, tasks=["hotpotqa", "gov_report", "qasper"], output_dir=tmp_path / "out", max_length=0
    )
    # hotpotqa: (1 + 2/3)/2 -> 83.33 ; govreport: LongBench's rouge-package ROUGE-L ; qasper failed -> 0
    import longbench_reference as ref

    gov = round(100 * ref.rouge_score("The cat sat on the mat", "the cat lay on the mat"), 2)
    assert report.scores == {"hotpotqa": 83.33, "govreport": gov, "qasper": 0.0}
    assert report.average == round((83.33 + gov + 0.0) / 3, 2)
    assert report.tasks["qasper"].num_failed == 1 and report.tasks["hotpotqa"].num_failed == 0
    assert report.tasks["govreport"].metric == "ROUGE-L" and report.tasks["hotpotqa"].metric == "F1"

    # greedy, LongBench's per-task generation lengths, LongBench prompts as one user turn
    by_key = {r.key: r for r in backend.requests}
    assert all(r.temperature == 0 for r in backend.requests)
    assert by_key["hotpotqa/0"].max_new_tokens == 32 and by_key["govreport/0"].max_new_tokens == 512
    assert by_key["qasper/0"].max_new_tokens == 128
    assert by_key["hotpotqa/0"].messages == (
        {"role": "user", "content": dataset2prompt["hotpotqa"].format(context="Paris is big.", input="Who built the mill?")},
    )

    # files: results.json / results.md / predictions
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved["scores"] == report.scores and saved["model"] == "org/scripted-model"
    assert saved["settings"]["label"] == "LongBench" and saved["settings"]["max_length"] == 0
    # LongBench's own layout: <longbench name>.jsonl with exactly its four fields, flat result.json
    assert json.loads((out / "result.json").read_text()) == {"hotpotqa": 83.33, "gov_report": gov, "qasper": 0.0}
    lb_rows = [json.loads(x) for x in (out / "gov_report.jsonl").read_text().splitlines()]
    assert lb_rows == [{"pred": "The cat sat on the mat", "answers": ["the cat lay on the mat"], "all_classes": None,
                        "length": 2}]
    assert json.loads((out / "qasper.jsonl").read_text())["pred"] == ""  # a failed generation scores as ""
    table = (out / "results.md").read_text()
    assert "| hotpotqa | F1 | 83.33 | 2 | 0 | 0 |" in table and "| qasper | F1 | 0.00 | 1 | 1 | 0 |" in table
    preds = [json.loads(line) for line in (out / "predictions" / "hotpotqa.jsonl").read_text().splitlines()]
    assert [p["pred"] for p in preds] == ["Paris", "London bridge"]
    assert preds[1]["score"] == pytest.approx(2 / 3)


def test_eval_results_render_a_model_index(small_data: Path) -> None:
    from huggingface_hub import ModelCardData

    backend = ScriptedBackend({"hotpotqa/0": "Paris", "hotpotqa/1": "London", "govreport/0": "cat"})
    report = evaluate_longbench(backend, small_data, tasks=["hotpotqa", "govreport"], max_length=0)
    results = report.eval_results()
    assert [(r.dataset_config, r.metric_type, r.metric_value) for r in results] == [
        ("hotpotqa", "f1", 100.0),
        ("gov_report", "rougeL", report.scores["govreport"]),
    ]
    card = ModelCardData(model_name="tuned", eval_results=results).to_dict()
    entries = card["model-index"][0]["results"]
    assert {e["dataset"]["config"] for e in entries} == {"hotpotqa", "gov_report"}
    assert all(e["dataset"]["type"] == "THUDM/LongBench" and e["dataset"]["split"] == "test" for e in entries)


def test_held_out_synthesized_is_never_called_longbench(small_data: Path, tmp_path: Path, caplog) -> None:
    from huggingface_hub import ModelCardData

    from hf_context_synthesis.evaluation.longbench_v1 import HELD_OUT_LABEL

    backend = ScriptedBackend({"hotpotqa/0": "Paris", "hotpotqa/1": "London"})
    with caplog.at_level("INFO", logger="hf_context_synthesis"):
        report = evaluate_longbench(
            backend, small_data, tasks=["hotpotqa"], max_length=0, label=HELD_OUT_LABEL, output_dir=tmp_path / "o"
        )
    assert not report.is_longbench
    logs = [r.getMessage() for r in caplog.records if r.name.startswith("hf_context_synthesis.evaluation.longbench_v1")]
    task_lines = [m for m in logs if "hotpotqa" in m]
    assert len(task_lines) == 2 and all(m.startswith("held-out synthesized (hotpotqa template)") for m in task_lines)
    assert not any(m.startswith("LongBench") for m in logs), logs
    assert "held-out synthesized (hotpotqa template): F1 100.00" in logs
    md = (tmp_path / "o" / "results.md").read_text()
    assert "not LongBench" in md and "| held-out synthesized (hotpotqa template) | F1 | 100.00 |" in md
    entries = ModelCardData(model_name="m", eval_results=report.eval_results()).to_dict()["model-index"][0]["results"]
    (entry,) = entries
    assert entry["dataset"]["name"] == "held-out synthesized (hotpotqa template)"
    assert entry["dataset"]["split"] == "held-out" and "LongBench" not in json.dumps(entry)
    # the label survives results.json (hub.load_eval_results rebuilds the model-index from it)
    from hf_context_synthesis.evaluation.results import load_eval_results

    (loaded,) = load_eval_results(tmp_path / "o")
    assert loaded.dataset_name == "held-out synthesized (hotpotqa template)" and loaded.dataset_split == "held-out"
    # the model card's table and model-index say so too
    from hf_context_synthesis.hub.cards import render_model_card

    card = render_model_card(repo_id="me/tuned", eval_results=report.eval_results(), framework_versions={})
    assert "| `held-out synthesized (hotpotqa template)` | `F1` | 100" in card
    assert "not LongBench results" in card and "THUDM/LongBench" not in card
    lb = evaluate_longbench(backend, small_data, tasks=["hotpotqa"], max_length=0)
    card = render_model_card(repo_id="me/tuned", eval_results=lb.eval_results(), framework_versions={})
    assert "LongBench (hotpotqa)" in card and "not LongBench results" not in card
    subset = evaluate_longbench(backend, small_data, tasks=["hotpotqa"], max_length=0, limit=1)
    assert subset.eval_results()[0].dataset_name == "LongBench (hotpotqa) (subset: first 1 examples)"


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The tiny tokenizer made to add a BOS like Llama's (``tokenizer(text)`` -> [BOS, ...])."""
    from tokenizers.processors import TemplateProcessing

    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    return tok


def test_prompts_are_truncated_as_longbench_pred_py(tmp_path: Path, bos_tokenizer) -> None:
    """Head + tail of int(max_length/2) tokens each, counted with the BOS, decoded separately: pred.py's rule."""
    data = tmp_path / "d"
    data.mkdir()
    long_context = "START of the story. " + "The miller walked to the river again. " * 300 + "END of the story."
    write_jsonl(data / "narrativeqa.jsonl", [lb_row(long_context, ["the miller"]), lb_row("short story", ["x"])])
    backend = ScriptedBackend({})
    report = evaluate_longbench(backend, data, tokenizer=bos_tokenizer, max_length=401)
    long_req, short_req = sorted(backend.requests, key=lambda r: r.key)
    text = long_req.messages[0]["content"]
    # LongBench pred.py, line for line (tokenized with special tokens: the BOS is one of the head's tokens)
    full = build_prompt("narrativeqa", {"context": long_context, "input": "Who built the mill?"})
    ids = bos_tokenizer(full, truncation=False, return_tensors="pt").input_ids[0]
    half = int(401 / 2)
    expected = bos_tokenizer.decode(ids[:half], skip_special_tokens=True) + bos_tokenizer.decode(
        ids[-half:], skip_special_tokens=True
    )
    assert text == expected
    assert text.startswith("You are given a story") and text.endswith("Question: Who built the mill?\n\nAnswer:")
    assert short_req.messages[0]["content"] == build_prompt("narrativeqa", {"context": "short story", "input": "Who built the mill?"})
    assert [p["truncated"] for p in report.predictions["narrativeqa"]] == [True, False]
    assert report.tasks["narrativeqa"].num_truncated == 1
    assert report.predictions["narrativeqa"][0]["prompt_tokens"] <= 401  # BOS counted
    # a prompt of exactly max_length tokens with its BOS is kept whole; one more token and it is cut
    n = len(bos_tokenizer(short_req.messages[0]["content"])["input_ids"])
    assert middle_truncate(short_req.messages[0]["content"], bos_tokenizer, n) == short_req.messages[0]["content"]
    assert middle_truncate(short_req.messages[0]["content"], bos_tokenizer, n - 1) != short_req.messages[0]["content"]

    with pytest.raises(ValueError, match="needs a tokenizer"):
        evaluate_longbench(ScriptedBackend({}), data, max_length=400)
    with pytest.raises(ValueError, match="prompt budget"):
        evaluate_longbench(ScriptedBackend({}), data)  # no window known: never silently untruncated


def test_default_prompt_budget_follows_longbench_table() -> None:
    from hf_context_synthesis.evaluation.longbench_tasks import PROMPT_BUDGETS, default_max_length

    assert default_max_length(32768) == 31500 == PROMPT_BUDGETS["32k"]
    assert default_max_length(131072) == 127500 == PROMPT_BUDGETS["128k"]
    assert [default_max_length(k * 1024) for k in (4, 8, 16)] == [3500, 7500, 15500]
    assert default_max_length(1024) == 512


def test_unknown_task_and_missing_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no LongBench task files"):
        evaluate_longbench(ScriptedBackend({}), tmp_path, max_length=0)
    with pytest.raises(ValueError, match="unknown LongBench task"):
        evaluate_longbench(ScriptedBackend({}), tmp_path, tasks=["passage_count"], max_length=0)


# ----------------------------------------------------------------------------- end to end, tiny model


def test_evaluate_command_end_to_end_on_tiny_model(tmp_path: Path, tiny_model_dir: str) -> None:
    """Random weights produce garbage: this checks the plumbing (every task scored, files written)."""
    from hf_context_synthesis.cli import main

    data = tmp_path / "longbench"
    data.mkdir()
    file_names = ["narrativeqa", "qasper", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum", "multinews"]
    for name in file_names:
        write_jsonl(data / f"{name}.jsonl", [lb_row("The miller built the mill in 1820. " * 150, ["the miller"])] * 2)
    out = tmp_path / "results"
    code = main(
        ["evaluate", "--model", tiny_model_dir, "--data-dir", str(data), "--output-dir", str(out),
         "--limit", "1", "--max-length", "200", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["scores"]) == list(LONGBENCH_TASKS)
    assert all(0.0 <= s <= 100.0 for s in saved["scores"].values())
    assert all(t["num_examples"] == 1 and t["num_failed"] == 0 for t in saved["tasks"].values())
    assert saved["settings"]["backend"] == "transformers" and saved["settings"]["max_length"] == 200
    table = (out / "results.md").read_text()
    for task in LONGBENCH_TASKS:
        assert f"| {task} |" in table
    # every prompt was cut to fit 1024 tokens with the answer
    for task in LONGBENCH_TASKS:
        (pred,) = [json.loads(x) for x in (out / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        assert pred["truncated"] and pred["prompt_tokens"] <= 200
        assert isinstance(pred["pred"], str)


def test_evaluate_through_a_tgi_endpoint(small_data: Path, tiny_tokenizer) -> None:
    """A URL becomes a TGIBackend; requests reach the server greedy, with LongBench's lengths."""
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    seen = []

    def responder(p) -> str:
        seen.append(p)
        return "Paris" if "Paris is big." in p.prompt else "London"

    with FakeTGIServer(responder=responder, model_id="org/served-model") as srv:
        report = evaluate_longbench(srv.url, small_data, tasks=["hotpotqa"], tokenizer=tiny_tokenizer, max_length=4096)
    # "Paris" vs ["Paris", "Lyon"] -> 1 ; "London" vs ["Big Ben", "London"] -> 1
    assert report.scores == {"hotpotqa": 100.0} and report.settings["backend"] == "tgi"
    assert report.model_id == "org/served-model"
    assert sorted((p.route, p.max_new_tokens, p.temperature) for p in seen) == [("chat", 32, 0.0)] * 2
