"""The ``evaluate`` output is what LongBench's own tools read, and LongBench's data arrives in all its forms.

* ``context-synthesis evaluate`` against a scripted endpoint writes ``<longbench_name>.jsonl`` files that
  LongBench's ``eval.py`` loop (its scoring functions vendored in ``tests/longbench_reference.py``)
  scores into the same numbers as our ``results.json`` and ``result.json``.
* Data: a folder, LongBench's ``data.zip``, a parquet mirror (folder or Hub id through the loopback
  Hub); a task file outside the eight is reported.
* A model without a chat template gets its BOS, as ``tokenizer(prompt)`` gives it in LongBench.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from hf_context_synthesis.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from hf_context_synthesis.evaluation.longbench_v1 import evaluate_longbench
from hf_context_synthesis.evaluation.longbench_tasks import LONGBENCH_NAMES, LONGBENCH_TASKS, load_task, resolve_data

_LONG_SUMMARY = (
    "The agency reviewed 24 projects. Twelve were over budget. Officials blamed changing requirements. "
    "The committee asked for a new oversight board. The board will meet before the end of the year."
)

#: Per task: (answers, scripted prediction) for three examples: right, partly right / reworded, empty.
_SCRIPT: dict[str, list[tuple[list[str], str]]] = {
    "qa": [
        (["The Georgia Peach", "Ty Cobb"], "Ty Cobb."),
        (["in 1820, in Paris"], "Paris (1820)"),
        (["yes"], ""),
    ],
    "summary": [
        ([_LONG_SUMMARY], _LONG_SUMMARY.upper()),
        ([_LONG_SUMMARY], " ".join(reversed(_LONG_SUMMARY.split(". ")))),
        ([_LONG_SUMMARY], ""),
    ],
}


def _rows(task: str) -> list[dict]:
    kind = "summary" if task in ("govreport", "qmsum", "multinews") else "qa"
    return [
        {"input": "" if kind == "summary" else f"question {i}?", "context": f"ctx-{task}-{i} " + "words " * 50,
         "answers": answers, "length": 51, "all_classes": None, "_id": f"{task}-{i}"}
        for i, (answers, _) in enumerate(_SCRIPT[kind])
    ]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def longbench_folder(tmp_path: Path) -> Path:
    data = tmp_path / "longbench"
    data.mkdir()
    for task in LONGBENCH_TASKS:
        _write(data / f"{LONGBENCH_NAMES[task]}.jsonl", _rows(task))
    return data


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    path = tmp_path_factory.mktemp("tok")
    make_tiny_tokenizer().save_pretrained(path)
    return str(path)


def _responder(p) -> str:
    for task in LONGBENCH_TASKS:
        for i in range(3):
            if f"ctx-{task}-{i} " in p.prompt:
                kind = "summary" if task in ("govreport", "qmsum", "multinews") else "qa"
                return _SCRIPT[kind][i][1]
    raise AssertionError("unexpected prompt")


def test_longbench_eval_py_scores_our_files_into_our_numbers(
    longbench_folder: Path, tmp_path: Path, tokenizer_dir: str
) -> None:
    import longbench_reference as ref

    from hf_context_synthesis.cli import main
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    out = tmp_path / "pred" / "my-model"
    with FakeTGIServer(responder=_responder, model_id="org/scripted") as srv:
        code = main(["evaluate", "--endpoint", srv.url, "--tokenizer", tokenizer_dir, "--max-length", "31500",
                     "--data-dir", str(longbench_folder), "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    ours = json.loads((out / "results.json").read_text())["scores"]
    assert list(ours) == list(LONGBENCH_TASKS)
    # LongBench's eval.py main loop over the folder, with LongBench's metrics.py functions
    theirs = ref.eval_folder(str(out))
    assert theirs == {LONGBENCH_NAMES[t]: s for t, s in ours.items()}
    assert json.loads((out / "result.json").read_text()) == theirs
    # the scripted answers really exercise the metrics: not all 0, not all 100, summaries case-sensitive
    assert 0 < ours["hotpotqa"] < 100 and 0 < ours["govreport"] < 100
    assert {json.loads(x)["pred"] for x in (out / "qmsum.jsonl").read_text().splitlines()} >= {""}
    for task in LONGBENCH_TASKS:
        rows = [json.loads(x) for x in (out / f"{LONGBENCH_NAMES[task]}.jsonl").read_text().splitlines()]
        assert [set(r) for r in rows] == [{"pred", "answers", "all_classes", "length"}] * 3


def test_rouge_score_option_keeps_longbench_numbers_in_result_json(longbench_folder: Path, tmp_path: Path) -> None:
    import longbench_reference as ref

    class Scripted(GenerationBackend):
        kind = "scripted"

        async def model_id(self) -> str:
            return "scripted"

        async def generate(self, request: GenerationRequest) -> GenerationResult:
            task, i = request.key.split("/")
            return GenerationResult(key=request.key, text=_SCRIPT["summary"][int(i)][1])

    report = evaluate_longbench(Scripted(), longbench_folder, tasks=["qmsum"], max_length=0,
                                summarization_metric="rouge-score", output_dir=tmp_path / "o")  # fmt: skip
    assert report.tasks["qmsum"].metric == "ROUGE-L (rouge-score)"
    assert json.loads((tmp_path / "o" / "result.json").read_text()) == ref.eval_folder(str(tmp_path / "o"))
    assert report.scores["qmsum"] != report.tasks["qmsum"].longbench_score


def test_data_zip_and_unsupported_files_are_reported(longbench_folder: Path, tmp_path: Path, caplog) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(longbench_folder.glob("*.jsonl")):
            zf.write(f, f"data/{f.name}")
        zf.writestr("data/trec.jsonl", "{}\n")
        zf.writestr("data/qasper_e.jsonl", "{}\n")
    with caplog.at_level(logging.WARNING, logger="hf_context_synthesis"):
        data = resolve_data(archive)
    assert data.tasks == list(LONGBENCH_TASKS)
    assert data.unsupported == ["data/qasper_e.jsonl", "data/trec.jsonl"]
    assert any("not evaluated: data/qasper_e.jsonl, data/trec.jsonl" in r.getMessage() for r in caplog.records)
    from_zip = load_task(archive, "2wikimqa")
    assert [e.answers for e in from_zip] == [e.answers for e in load_task(longbench_folder, "2wikiqa")]
    # a folder with an unsupported file: the run says so (log and results.json)
    (longbench_folder / "passage_count.jsonl").write_text("{}\n")
    backend_answers = {"hotpotqa/0": "Ty Cobb"}

    class Scripted(GenerationBackend):
        kind = "scripted"

        async def model_id(self) -> str:
            return "scripted"

        async def generate(self, request: GenerationRequest) -> GenerationResult:
            return GenerationResult(key=request.key, text=backend_answers.get(request.key, ""))

    report = evaluate_longbench(Scripted(), longbench_folder, tasks=["hotpotqa"], max_length=0)
    assert report.settings["unsupported_files"] == ["passage_count.jsonl"]
    # only unsupported files: the error names them
    only = tmp_path / "only"
    only.mkdir()
    (only / "lcc.jsonl").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="found only unsupported ones: lcc.jsonl"):
        evaluate_longbench(Scripted(), only, max_length=0)


def _parquet_mirror(root: Path, layout: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for task in ("hotpotqa", "govreport"):
        name = LONGBENCH_NAMES[task]
        path = root / (f"{name}/test/0000.parquet" if layout == "convert" else f"data/{name}-00000-of-00001.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(_rows(task)), path)


@pytest.mark.parametrize("layout", ["convert", "data"])
def test_parquet_mirror_folder(tmp_path: Path, layout: str) -> None:
    _parquet_mirror(tmp_path, layout)
    data = resolve_data(tmp_path)
    assert data.tasks == ["hotpotqa", "govreport"]
    examples = load_task(data, "gov_report")
    assert [e.id for e in examples] == ["govreport-0", "govreport-1", "govreport-2"]
    assert examples[0].answers == [_LONG_SUMMARY] and examples[0].length == 51


def test_hub_dataset_id_of_a_parquet_mirror(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    from hf_context_synthesis.testing.fake_hub import FakeHubServer, hub_endpoint

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    mirror = tmp_path / "mirror"
    _parquet_mirror(mirror, "convert")
    with FakeHubServer() as hub, hub_endpoint(hub.url):
        api = HfApi(endpoint=hub.url, token="hf_test")
        api.create_repo("someone/LongBench-parquet", repo_type="dataset")
        api.upload_folder(folder_path=str(mirror), repo_id="someone/LongBench-parquet", repo_type="dataset")
        data = resolve_data("someone/LongBench-parquet")
        assert data.tasks == ["hotpotqa", "govreport"] and data.source == "someone/LongBench-parquet"
        assert [e.answers for e in load_task(data, "hotpotqa")] == [a for a, _ in _SCRIPT["qa"]]
        with pytest.raises(FileNotFoundError, match="no such local folder or file, and not readable as a Hub"):
            resolve_data("someone/missing-mirror")


def test_model_without_chat_template_gets_its_bos(tiny_model_dir: str) -> None:
    """The local backend tokenizes a raw prompt with the tokenizer's special tokens (LongBench's tokenizer(prompt))."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from hf_context_synthesis.backends.local import TransformersBackend

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
    seen = []
    for template in (tok.chat_template, None):
        tok.chat_template = template
        backend = TransformersBackend(tiny_model_dir, tokenizer=tok, batch_size=1, device="cpu")
        real = backend._decode  # the token loop receives the tokenized batch
        backend._decode = lambda enc, batch: (seen.append(enc["input_ids"][0].tolist()), real(enc, batch))[1]
        backend._generate_batch([GenerationRequest(key="k", messages=({"role": "user", "content": "hello"},),
                                                   max_new_tokens=2, temperature=0.0)])  # fmt: skip
    with_template, raw = seen
    assert raw == tok("hello")["input_ids"] and raw[0] == tok.bos_token_id
    assert with_template[0] == tok.bos_token_id != with_template[1]  # the template's own BOS, not a second one


def test_endpoint_budget_from_the_tokenizers_config_and_batch_size_one_by_default(
    longbench_folder: Path, tiny_model_dir: str
) -> None:
    """No --max-length: the window comes from the config beside the tokenizer (131,072 -> 127,500)."""
    import inspect

    from hf_context_synthesis.cli import build_parser
    from hf_context_synthesis.testing.fake_tgi import FakeTGIServer

    with FakeTGIServer(responder=_responder, model_id="org/scripted") as srv:
        report = evaluate_longbench(srv.url, longbench_folder, tasks=["hotpotqa"], tokenizer=tiny_model_dir)
    assert report.settings["context_window"] == 131072 and report.settings["max_length"] == 127500
    assert report.settings["batch_size"] == 1
    assert inspect.signature(evaluate_longbench).parameters["batch_size"].default == 1
    args = build_parser(only="evaluate").parse_args(["evaluate", "--model", "m", "--data-dir", "d", "--output-dir", "o"])
    assert args.batch_size == 1 and args.max_length is None and args.summarization_metric == "rouge"
