"""LongBench v2: 503 multiple-choice questions on 8k-2M-word contexts, scored by accuracy.

Follows THUDM/LongBench's top-level ``pred.py`` and ``result.py`` (the v2 code):

* **Prompts**: ``prompts/0shot.txt`` (default) or, with ``cot=True``, ``prompts/0shot_cot.txt`` followed
  by ``prompts/0shot_cot_ans.txt`` (the chain of thought is fed back and the answer asked for), filled with
  ``str.replace`` of ``$DOC$``, ``$Q$``, ``$C_A$`` .. ``$C_D$`` (and ``$COT$``), each value stripped.
* **Truncation**: ``tokenizer.encode(prompt)`` (special tokens counted); over ``max_length`` tokens,
  ``ids[:max_length//2] + ids[-max_length//2:]`` are kept and decoded together (special tokens skipped).
* **Generation**: one user turn (the backend applies the model's chat template; an in-process model
  without one gets the raw prompt after its BOS, as ``tokenizer(prompt)`` would), ``temperature=0.1``
  (pred.py's setting; pass ``temperature=0`` for greedy), at most 128 new tokens (1,024 for the chain
  of thought).
* **Answer extraction** (:func:`extract_answer`): ``*`` removed, then ``The correct answer is (X)`` or
  ``The correct answer is X`` for X in A-D; ``judge = pred == answer``.
* **Scores** (:func:`summarize`): accuracy x100 overall, by difficulty (``easy``; anything else is
  ``hard``) and by length (``short``, ``medium``; anything else is ``long``), rounded to 1 decimal as
  ``result.py`` prints them.

Differences from pred.py, stated: a generation that fails for good (after the backend's retries) is
kept and scored wrong (``pred`` ``None``), where pred.py drops the question from its file (so its
accuracy is over the answered questions only); ``num_failed`` says how many. Retrieval (``--rag``) and
``--no_context`` modes are not implemented.

Data (:func:`load_questions`): LongBench v2's ``data.json`` (a JSON list, as in the ``THUDM/LongBench-v2``
dataset repo), or JSON-lines / parquet with the same fields, given as a file, a folder holding it, a
``.zip`` archive, or a Hub dataset id (``owner/name[@revision]``, fetched with ``huggingface_hub``).

Outputs (:meth:`V2Report.save`): ``predictions/<model>.jsonl`` with pred.py's lines (question fields,
``response``, ``pred``, ``judge``, ``context`` cut to 1,000 characters), so ``result.py`` runs on the
``predictions`` folder; ``result.txt`` (``result.py``'s table), ``result.json`` (the same numbers, flat),
and the project's ``results.json`` / ``results.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import GenerationRequest, run_coro, run_requests
from ..utils.progress import progress_bar

logger = logging.getLogger(__name__)

from .model import evaluation_tokenizer, make_model_backend

__all__ = [
    "LONGBENCH_V2_DATASET_ID",
    "NUM_QUESTIONS",
    "TEMPLATE_0SHOT",
    "TEMPLATE_0SHOT_COT",
    "TEMPLATE_0SHOT_COT_ANS",
    "V2Report",
    "build_prompt",
    "default_max_length",
    "eval_results_from_dict",
    "evaluate_longbench_v2",
    "extract_answer",
    "load_questions",
    "summarize",
    "truncate",
]

#: The Hub dataset of LongBench v2 (``data.json``, split ``train``).
LONGBENCH_V2_DATASET_ID = "THUDM/LongBench-v2"

#: ``prompts/0shot.txt``.
TEMPLATE_0SHOT = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)
#: ``prompts/0shot_cot.txt``.
TEMPLATE_0SHOT_COT = (
    "Please read the following text and answer the questions below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    "Let\u2019s think step by step:"
)
#: ``prompts/0shot_cot_ans.txt``.
TEMPLATE_0SHOT_COT_ANS = (
    "Please read the following text and answer the questions below.\n\nThe text is too long and omitted here.\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n(D) $C_D$\n\n"
    "Let\u2019s think step by step: $COT$\n\nBased on the above, what is the single, most likely answer choice? "
    'Format your response as follows: "The correct answer is (insert answer here)".'
)

_FIELDS = ("_id", "difficulty", "length", "question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


def build_prompt(template: str, item: dict[str, Any], cot: str | None = None) -> str:
    """pred.py's ``template.replace(...)`` chain (each field stripped; ``$COT$`` only when given)."""
    prompt = (
        template.replace("$DOC$", item["context"].strip())
        .replace("$Q$", item["question"].strip())
        .replace("$C_A$", item["choice_A"].strip())
        .replace("$C_B$", item["choice_B"].strip())
        .replace("$C_C$", item["choice_C"].strip())
        .replace("$C_D$", item["choice_D"].strip())
    )
    return prompt.replace("$COT$", cot) if cot is not None else prompt


def extract_answer(response: str) -> str | None:
    """pred.py's ``extract_answer``: the letter A-D after "The correct answer is", else ``None``."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response)
    if match:
        return match.group(1)
    match = re.search(r"The correct answer is ([A-D])", response)
    return match.group(1) if match else None


def truncate(prompt: str, tokenizer: Any, max_length: int) -> str:
    """pred.py's truncation: over ``max_length`` tokens (special tokens counted), keep
    ``ids[:max_length//2] + ids[-max_length//2:]`` and decode them together, special tokens skipped.

    Python parses ``-max_length//2`` as ``(-max_length)//2``: for an odd ``max_length`` the tail keeps
    one token more than the head (41 -> 20 + 21), as in pred.py.
    """
    ids = list(tokenizer.encode(prompt))
    if len(ids) <= max_length:
        return prompt
    ids = ids[: max_length // 2] + ids[-max_length // 2 :]
    return tokenizer.decode(ids, skip_special_tokens=True)


def default_max_length(context_window: int) -> int:
    """Prompt budget for a model with ``context_window`` tokens: LongBench v2's 120,000 (its setting for
    every 128k model), capped at ``context_window - 2048`` (room for the chat template and a 1,024-token
    chain of thought); windows under 4,096 tokens keep half the window for the prompt."""
    if context_window < 4096:
        return max(1, context_window // 2)
    return min(120_000, context_window - 2048)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """``result.py``'s numbers: accuracy x100, 1 decimal, overall / easy / hard / short / medium / long.

    A group with no question is ``None`` (result.py divides by zero there).
    """
    groups: dict[str, list[int]] = {k: [] for k in ("Overall", "Easy", "Hard", "Short", "Medium", "Long")}
    for row in rows:
        acc = int(bool(row["judge"]))
        groups["Overall"].append(acc)
        groups["Easy" if row["difficulty"] == "easy" else "Hard"].append(acc)
        length = {"short": "Short", "medium": "Medium"}.get(row["length"], "Long")
        groups[length].append(acc)
    return {k: (round(100 * sum(v) / len(v), 1) if v else None) for k, v in groups.items()}


# ----------------------------------------------------------------------------- data


def _rows_from_bytes(raw: bytes, name: str) -> list[tuple[str, Any]]:
    if name.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        return [(f"{name}[{i}]", r) for i, r in enumerate(pq.read_table(io.BytesIO(raw)).to_pylist())]
    text = raw.decode("utf-8")
    if name.endswith(".json") and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return [(f"{name}[{i}]", r) for i, r in enumerate(rows)]
    out: list[tuple[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{name}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}:{lineno}: not valid JSON ({err.msg})") from None
    return out


def _data_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in _DATA_SUFFIXES]
    preferred = [p for p in files if p.name == "data.json"]
    return preferred or files


def _raw_rows(source: str | os.PathLike[str]) -> tuple[str, list[tuple[str, Any]]]:
    text = os.fspath(source)
    path = Path(text)
    if path.is_file() and path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(_DATA_SUFFIXES) and "__MACOSX" not in n]
            names = [n for n in names if n.rsplit("/", 1)[-1] == "data.json"] or names
            rows = [r for n in sorted(names) for r in _rows_from_bytes(zf.read(n), f"{path}!{n}")]
        return text, rows
    if path.is_file():
        return text, _rows_from_bytes(path.read_bytes(), str(path))
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise FileNotFoundError(f"{path}: no LongBench v2 data (data.json, *.jsonl or *.parquet) in this folder")
        return text, [r for f in files for r in _rows_from_bytes(f.read_bytes(), str(f))]
    if re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", text):
        from huggingface_hub import snapshot_download

        repo_id, _, revision = text.partition("@")
        local = snapshot_download(
            repo_id, repo_type="dataset", revision=revision or None, allow_patterns=["*.json", "*.jsonl", "*.parquet"]
        )
        return text, [r for f in _data_files(Path(local)) for r in _rows_from_bytes(f.read_bytes(), str(f))]
    raise FileNotFoundError(
        f"LongBench v2 data {text!r}: not a data.json / jsonl / parquet file, a folder or .zip holding one, "
        "or a Hub dataset id (e.g. THUDM/LongBench-v2)"
    )


def load_questions(source: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, Any]]:
    """LongBench v2's questions from a file, folder, ``.zip`` or Hub id (first ``limit`` if given).

    Raises ``ValueError`` naming the row and field when a row lacks a field or has a bad value.
    """
    description, raw = _raw_rows(source)
    questions: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, row in raw:
        if limit is not None and len(questions) >= limit:
            break
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with {', '.join(_FIELDS)}")
        for key in _FIELDS:
            if key not in row:
                raise ValueError(f"{where}: missing field {key!r} (LongBench v2 rows have {', '.join(_FIELDS)})")
            if key != "_id" and not isinstance(row[key], str):
                raise ValueError(f"{where}: field {key!r} must be a string")
        if row["answer"] not in ("A", "B", "C", "D"):
            raise ValueError(f"{where}: field 'answer' must be one of A, B, C, D, got {row['answer']!r}")
        if str(row["_id"]) in seen:
            raise ValueError(f"{where}: duplicate _id {row['_id']!r} (first at {seen[str(row['_id'])]})")
        seen[str(row["_id"])] = where
        questions.append({k: row[k] for k in ("_id", "domain", "sub_domain", *_FIELDS[1:]) if k in row})
    if not questions:
        raise ValueError(f"{description}: no LongBench v2 questions")
    return questions


# ----------------------------------------------------------------------------- evaluation


@dataclass
class V2Report:
    """Result of :func:`evaluate_longbench_v2`.

    Args:
        model_id: What generated the answers.
        scores: ``result.py``'s numbers (``Overall``, ``Easy``, ``Hard``, ``Short``, ``Medium``, ``Long``).
        predictions: pred.py's output lines, one per question.
        num_failed: Questions whose generation failed for good (scored wrong).
        settings: How the run was configured.
    """

    model_id: str
    scores: dict[str, float | None]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    num_failed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Questions per group."""
        c = {"Overall": len(self.predictions)}
        c["Easy"] = sum(r["difficulty"] == "easy" for r in self.predictions)
        c["Hard"] = c["Overall"] - c["Easy"]
        c["Short"] = sum(r["length"] == "short" for r in self.predictions)
        c["Medium"] = sum(r["length"] == "medium" for r in self.predictions)
        c["Long"] = c["Overall"] - c["Short"] - c["Medium"]
        return c

    def to_markdown(self) -> str:
        """One table: accuracy and question count per group."""
        counts = self.counts
        lines = [
            f"{suite_label(counts['Overall'])} evaluation of `{self.model_id}` (accuracy, %)",
            "",
            "| Group | Accuracy | Questions |",
            "| --- | ---: | ---: |",
        ]
        for k, v in self.scores.items():
            lines.append(f"| {k} | {'n/a' if v is None else f'{v:.1f}'} | {counts[k]} |")
        return "\n".join(lines) + "\n"

    def result_txt(self, name: str) -> str:
        """``result.py``'s tab-separated table for this run, the row named ``name``."""
        header = "Model\tOverall\tEasy\tHard\tShort\tMedium\tLong"
        return header + "\n" + "\t".join([name, *(str(self.scores[k]) for k in header.split("\t")[1:])])

    def eval_results(self) -> list[Any]:
        """``huggingface_hub.EvalResult`` entries (accuracy per group) for a model card's ``model-index``.

        Labelled "LongBench v2" only for a run over all 503 questions; a partial run says how many it
        scored (``LongBench v2 (subset: 100 of 503 questions)``).
        """
        return eval_results_from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-question lines)."""
        return {
            "suite": "longbench-v2",
            "model": self.model_id,
            "scores": self.scores,
            "counts": self.counts,
            "num_failed": self.num_failed,
            "settings": self.settings,
        }

    def save(self, output_dir: str | os.PathLike[str]) -> Path:
        """Write ``results.json``, ``results.md``, ``result.json``, ``result.txt`` and ``predictions/<model>.jsonl``."""
        out = Path(output_dir)
        (out / "predictions").mkdir(parents=True, exist_ok=True)
        path = prediction_path(out, self.model_id)
        name = path.stem
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in self.predictions:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)  # in question order; never a half-written file
        (out / "results.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        (out / "results.md").write_text(self.to_markdown(), "utf-8")
        (out / "result.json").write_text(json.dumps(self.scores, indent=4) + "\n", "utf-8")
        (out / "result.txt").write_text(self.result_txt(name), "utf-8")
        return out


def prediction_path(output_dir: str | os.PathLike[str], model_id: str) -> Path:
    """``<output_dir>/predictions/<model name>.jsonl`` (pred.py names its file after the model)."""
    return Path(output_dir) / "predictions" / f"{model_id.rstrip('/').split('/')[-1] or 'model'}.jsonl"


def _answered(path: Path, questions: list[dict[str, Any]], cot: bool) -> dict[str, dict[str, Any]]:
    """Rows of an earlier (interrupted) run to reuse: answered (no ``error``), same mode, known ``_id``."""
    if not path.is_file():
        return {}
    wanted = {str(q["_id"]) for q in questions}
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text("utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: asked again
        if isinstance(row, dict) and str(row.get("_id")) in wanted and "error" not in row and ("response_cot" in row) == cot:
            rows[str(row["_id"])] = row
    return rows


def _row(q: dict[str, Any], res: Any, cot_text: str | None, cot: bool) -> dict[str, Any]:
    """pred.py's output line for question ``q`` (``error`` added when the generation failed)."""
    ok = bool(res.ok) and (not cot or cot_text is not None)
    response = (res.text or "").strip() if ok else ""
    row = dict(q)
    if cot:
        row["response_cot"] = cot_text or ""
    row["response"] = response
    row["pred"] = extract_answer(response) if ok else None
    row["judge"] = row["pred"] == q["answer"]
    row["context"] = q["context"][:1000]
    if not ok:
        row["error"] = res.error or "no chain of thought"
    return row


#: Questions in LongBench v2 (a run over fewer is labelled a subset).
NUM_QUESTIONS = 503


def suite_label(num_questions: int) -> str:
    """"LongBench v2" for a run over all 503 questions, else "LongBench v2 (subset: N of 503 questions)"."""
    if num_questions == NUM_QUESTIONS:
        return "LongBench v2"
    return f"LongBench v2 (subset: {num_questions} of {NUM_QUESTIONS} questions)"


def eval_results_from_dict(results: dict[str, Any]) -> list[Any]:
    """Model-index entries from a LongBench v2 ``results.json`` (:meth:`V2Report.to_dict`)."""
    from huggingface_hub import EvalResult

    name = suite_label(int((results.get("counts") or {}).get("Overall", 0)))
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Long-context multiple-choice QA",
            dataset_type=LONGBENCH_V2_DATASET_ID,
            dataset_name=name,
            dataset_split="train",  # LongBench v2's only split
            metric_type="accuracy",
            metric_name=f"Accuracy ({group.lower()})",
            metric_value=value,
        )
        for group, value in results["scores"].items()
        if value is not None
    ]


def evaluate_longbench_v2(
    model_or_backend: Any,
    data: str | os.PathLike[str] = LONGBENCH_V2_DATASET_ID,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    cot: bool = False,
    temperature: float = 0.1,
    limit: int | None = None,
    batch_size: int = 1,
    device: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> V2Report:
    """Evaluate a model on LongBench v2 as its ``pred.py`` does, scored as ``result.py`` does.

    Args:
        model_or_backend: A backend, an endpoint URL, a local model path / Hub id or a loaded model
            (as :func:`~hf_context_synthesis.evaluation.longbench_v1.evaluate_longbench`).
        data: ``data.json`` / jsonl / parquet file, a folder or ``.zip`` holding one, or a Hub dataset id.
        tokenizer: Tokenizer (object, path or id) for truncation; default: the local backend's.
            Required for an endpoint (LongBench v2 truncates with the model's tokenizer).
        max_length: Prompt budget in tokens (pred.py's ``model2maxlen``: 120,000 for 128k models);
            default :func:`default_max_length` of a local model's ``max_position_embeddings``;
            ``0`` sends prompts untruncated (not LongBench v2's protocol).
        cot: Chain of thought (``0shot_cot`` then ``0shot_cot_ans``, 1,024 then 128 new tokens).
        temperature: pred.py uses 0.1; 0 means greedy.
        limit: Only the first ``limit`` questions.
        batch_size: Local batch size / requests in flight (1 by default).
        device: Device for a model loaded here.
        output_dir: When given, :meth:`V2Report.save` writes the result files there. Each answer is
            appended to ``predictions/<model>.jsonl`` as it arrives; a rerun into the same folder
            reuses the answered questions (same mode, no ``error``) and asks only the others, as
            pred.py's cache does (delete the file to start over after changing settings).
    """

    questions = load_questions(data, limit=limit)  # bad data fails before a model is loaded
    backend, owned = make_model_backend(model_or_backend, tokenizer=tokenizer, batch_size=batch_size, device=device)
    try:
        tok = evaluation_tokenizer(backend, owned, tokenizer)
        if tok is None and max_length != 0:
            raise ValueError(
                "LongBench v2 truncates with the model's tokenizer: pass tokenizer= (object, path or Hub id)"
            )
        if max_length is None:
            window = getattr(getattr(getattr(backend, "model", None), "config", None), "max_position_embeddings", None)
            if window is None:
                raise ValueError("pass max_length (LongBench v2 uses 120000 for 128k-context models)")
            max_length = default_max_length(int(window))
        model_id = str(run_coro(backend.model_id()))

        def ask(
            qs: list[dict[str, Any]], prompts: list[str], max_new: int, desc: str, on_result: Any = None
        ) -> list[Any]:
            requests = [
                GenerationRequest(
                    key=str(q["_id"]),
                    messages=({"role": "user", "content": truncate(p, tok, max_length) if max_length else p},),
                    max_new_tokens=max_new,
                    temperature=temperature,
                    seed=0 if temperature > 0 else None,
                )
                for q, p in zip(qs, prompts)
            ]

            def done(res: Any) -> None:
                bar.update(1)
                if on_result is not None:
                    on_result(res)

            with progress_bar(total=len(requests), desc=desc, unit="question") as bar:
                return run_requests(backend, requests, on_result=done)

        template = TEMPLATE_0SHOT_COT if cot else TEMPLATE_0SHOT
        if max_length == 0:
            logger.warning("LongBench v2: max_length=0, prompts are sent untruncated (not LongBench v2's protocol)")
        pred_path = prediction_path(output_dir, model_id) if output_dir is not None else None
        answered = _answered(pred_path, questions, cot) if pred_path is not None else {}
        todo = [q for q in questions if str(q["_id"]) not in answered]
        if answered:
            logger.info(
                "LongBench v2: resuming, %d of %d questions already answered in %s",
                len(answered), len(questions), pred_path,
            )
        logger.info("LongBench v2: %d questions to ask (cot=%s, max_length=%d)", len(todo), cot, max_length)
        by_id = {str(q["_id"]): q for q in todo}
        cot_by_id: dict[str, str | None] = {}
        new_rows: dict[str, dict[str, Any]] = {}
        fout = None
        if pred_path is not None and todo:
            pred_path.parent.mkdir(parents=True, exist_ok=True)
            fout = open(pred_path, "a", encoding="utf-8")  # noqa: SIM115 - one line per answer as it arrives

        def record(res: Any) -> None:
            row = _row(by_id[res.key], res, cot_by_id.get(res.key), cot)
            new_rows[res.key] = row
            if fout is not None and "error" not in row:  # a failed question is asked again on the next run
                fout.write(json.dumps(row, ensure_ascii=False) + "\n")
                fout.flush()

        try:
            if todo and cot:
                first = ask(todo, [build_prompt(template, q) for q in todo], 1024, "LongBench v2 (reasoning)")
                for res in first:
                    cot_by_id[res.key] = res.text.strip() if res.ok and res.text else None
                    if cot_by_id[res.key] is None:
                        record(res)
                second = [q for q in todo if cot_by_id[str(q["_id"])] is not None]
                prompts = [build_prompt(TEMPLATE_0SHOT_COT_ANS, q, cot=cot_by_id[str(q["_id"])]) for q in second]
                ask(second, prompts, 128, "LongBench v2 (answer)", on_result=record)
            elif todo:
                ask(todo, [build_prompt(template, q) for q in todo], 128, "LongBench v2", on_result=record)
        finally:
            if fout is not None:
                fout.close()
        rows = [answered.get(str(q["_id"])) or new_rows[str(q["_id"])] for q in questions]
        failed = sum("error" in r for r in rows)
        if failed:
            logger.warning("LongBench v2: %d/%d generations failed (scored wrong)", failed, len(rows))
    finally:
        if owned:
            run_coro(backend.aclose())
    report = V2Report(
        model_id=model_id,
        scores=summarize(rows),
        predictions=rows,
        num_failed=failed,
        settings={
            "data": os.fspath(data),
            "max_length": max_length,
            "cot": cot,
            "temperature": temperature,
            "limit": limit,
            "backend": backend.kind,
        },
    )
    logger.info("%s: overall accuracy %s%%", suite_label(len(rows)), report.scores["Overall"])
    if output_dir is not None:
        report.save(output_dir)
    return report
