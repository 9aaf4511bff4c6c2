"""LongBench document-level evaluation (the paper's main table) and the ``evaluate`` subcommand.

:func:`evaluate_longbench` runs LongBench's ``pred.py`` protocol on LongBench's test data (a folder of
``<task>.jsonl`` files, ``data.zip`` or a Hub parquet mirror, see
:func:`~hf_context_synthesis.evaluation.longbench_tasks.resolve_data`): fill the task prompt, truncate it in the middle
to ``max_length`` tokens counted with special tokens (BOS included), then the backend applies the
chat template (a model without one gets the raw prompt after its BOS, as ``tokenizer(prompt)``
gives it), generate greedily with the task's ``dataset2maxlen`` new tokens, one request at a time by
default, and score with LongBench's rules (:mod:`hf_context_synthesis.evaluation.metrics`).

``max_length`` is LongBench's prompt budget (``config/model2maxlen.json``): 31,500 for a 32k model,
127,500 for a 128k model (:data:`~hf_context_synthesis.evaluation.longbench_tasks.PROMPT_BUDGETS`); by default it is
derived from the model's context window with the same rule. ``max_length=0`` sends untruncated
prompts (not LongBench's protocol; recorded as such).

Outputs (:meth:`EvalReport.save`): LongBench's prediction files ``<longbench_name>.jsonl`` (one
``{"pred", "answers", "all_classes", "length"}`` line per example) and its flat ``result.json``
(``{"2wikimqa": 31.2, ...}``), so LongBench's ``eval.py`` runs on the folder unchanged and writes the
same numbers; beside them the richer ``results.json``, ``results.md`` and ``predictions/<task>.jsonl``
(per-example diagnostics).

``label`` says what the data is: only a run on LongBench's real test data is called LongBench; the
recipe's held-out synthesized examples are evaluated with ``label="held-out synthesized"`` and appear
as e.g. "held-out synthesized (narrativeqa template)" in logs, ``results.md`` and the model-index.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import GenerationRequest, run_coro, run_requests
from .longbench_tasks import (
    LONGBENCH_NAMES,
    LONGBENCH_TASKS,
    build_prompt,
    canonical_task,
    dataset2maxlen,
    default_max_length,
    load_task,
    middle_truncate,
    resolve_data,
)
from .metrics import METRIC_DISPLAY_NAMES, metric_for_task, score_example, scorer
from ..utils.progress import progress_bar

logger = logging.getLogger(__name__)

from .model import context_window, evaluation_tokenizer, make_model_backend

__all__ = ["HELD_OUT_LABEL", "LONGBENCH_LABEL", "EvalReport", "TaskScore", "evaluate_longbench"]

#: Hub dataset whose test sets the local files hold (goes into the model-index ``dataset.type``).
LONGBENCH_DATASET_ID = "THUDM/LongBench"
#: ``label`` of a run on LongBench's real test data (the only one published as LongBench results).
LONGBENCH_LABEL = "LongBench"
#: ``label`` of the recipe's held-out check on synthesized examples in LongBench's templates.
HELD_OUT_LABEL = "held-out synthesized"


def dataset_display_name(label: str, task: str) -> str:
    """``"LongBench (2wikimqa)"`` for LongBench, ``"held-out synthesized (2wikiqa template)"`` otherwise."""
    if label == LONGBENCH_LABEL:
        return f"LongBench ({LONGBENCH_NAMES[task]})"
    return f"{label} ({task} template)"


@dataclass
class TaskScore:
    """Score of one task.

    Args:
        task: Our task name (``2wikiqa``, ``govreport``, ...).
        metric: Display name of the metric (``"F1"`` or ``"ROUGE-L"``).
        score: LongBench score, 0..100 with 2 decimals.
        num_examples: Examples scored.
        num_failed: Examples whose generation failed (scored 0, as an empty prediction).
        max_new_tokens: Generation length used (LongBench's ``dataset2maxlen``).
        num_truncated: Prompts shortened by middle truncation.
        longbench_score: The score with LongBench's own metric (differs from ``score`` only when
            summarization is scored with the ``rouge-score`` option); what ``result.json`` holds.
    """

    task: str
    metric: str
    score: float
    num_examples: int
    num_failed: int = 0
    max_new_tokens: int = 0
    num_truncated: int = 0
    longbench_score: float | None = None


@dataclass
class EvalReport:
    """Result of :func:`evaluate_longbench`.

    Args:
        model_id: What generated the predictions (the backend's model id).
        tasks: Task name -> :class:`TaskScore`, in table order.
        predictions: Task name -> one dict per example (``id``, ``pred``, ``answers``, ``length``,
            ``score`` (0..1), ``prompt_tokens``, ``truncated``, ``error``), LongBench's ``pred``
            file layout plus diagnostics.
        settings: How the run was configured (data, max length, limit, ``label``, ...).
    """

    model_id: str
    tasks: dict[str, TaskScore]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What was evaluated: ``"LongBench"`` or e.g. ``"held-out synthesized"`` (``settings["label"]``)."""
        return str(self.settings.get("label") or LONGBENCH_LABEL)

    @property
    def is_longbench(self) -> bool:
        """Whether this is a run on LongBench's test data (publishable as LongBench results)."""
        return self.label == LONGBENCH_LABEL

    @property
    def scores(self) -> dict[str, float]:
        """Task -> score (0..100)."""
        return {t: s.score for t, s in self.tasks.items()}

    @property
    def average(self) -> float:
        """Unweighted mean of the task scores, 2 decimals (``nan`` when no task ran)."""
        if not self.tasks:
            return math.nan
        return round(sum(s.score for s in self.tasks.values()) / len(self.tasks), 2)

    def to_markdown(self) -> str:
        """A markdown table: one row per task and an average row."""
        if self.is_longbench:
            title = f"LongBench document-level evaluation of `{self.model_id}` (LongBench test data)"
        else:
            title = (
                f"{self.label[:1].upper()}{self.label[1:]} evaluation of `{self.model_id}`: examples in "
                "LongBench's prompt templates, **not LongBench**"
            )
        lines = [
            title,
            "",
            "| Task | Metric | Score | Examples | Failed | Truncated |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for s in self.tasks.values():
            name = s.task if self.is_longbench else dataset_display_name(self.label, s.task)
            lines.append(
                f"| {name} | {s.metric} | {s.score:.2f} | {s.num_examples} | {s.num_failed} | {s.num_truncated} |"
            )
        lines.append(f"| **Average** | | **{self.average:.2f}** | | | |")
        return "\n".join(lines) + "\n"

    def eval_results(self, dataset_id: str | None = None) -> list[Any]:
        """One ``huggingface_hub.EvalResult`` per task, for ``ModelCardData(eval_results=...)``.

        LongBench runs: dataset ``THUDM/LongBench``, config = LongBench's task name, split ``test``;
        a run with ``limit`` is named a subset ("LongBench (hotpotqa) (subset: first 50 examples)").
        Any other label (held-out synthesized examples): dataset name e.g. "held-out synthesized
        (narrativeqa template)", type ``dataset_id`` (the synthesized dataset's repo, if given) or
        ``"held-out-synthesized"``, split ``"held-out"``: never LongBench.
        """
        from huggingface_hub import EvalResult

        results = []
        for s in self.tasks.values():
            config = LONGBENCH_NAMES[s.task]
            metric_type = next((t for name, t in METRIC_DISPLAY_NAMES.values() if name == s.metric), s.metric)
            if self.is_longbench:
                dataset = {"dataset_type": dataset_id or LONGBENCH_DATASET_ID, "dataset_config": config,
                           "dataset_split": "test"}
            else:
                dataset = {"dataset_type": dataset_id or "held-out-synthesized", "dataset_config": s.task,
                           "dataset_split": "held-out"}
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Long-context understanding",
                    dataset_name=dataset_display_name(self.label, s.task)
                    + (f" (subset: first {s.num_examples} examples)" if self.is_longbench and self.settings.get("limit")
                       else ""),
                    **dataset,
                    metric_type=metric_type,
                    metric_name=s.metric,
                    metric_value=s.score,
                )
            )
        return results

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-example predictions)."""
        return {
            "model": self.model_id,
            "scores": self.scores,
            "average": self.average,
            "tasks": {t: asdict(s) for t, s in self.tasks.items()},
            "settings": self.settings,
        }

    def longbench_result(self) -> dict[str, float]:
        """LongBench's flat ``result.json``: LongBench task name -> score with LongBench's metric."""
        return {
            LONGBENCH_NAMES[t]: s.score if s.longbench_score is None else s.longbench_score
            for t, s in self.tasks.items()
        }

    def save(self, output_dir: str | os.PathLike[str]) -> Path:
        """Write the results to ``output_dir``.

        ``<longbench_name>.jsonl`` (LongBench's pred files: ``pred``, ``answers``, ``all_classes``,
        ``length``) and ``result.json`` (LongBench's flat layout, as its ``eval.py`` writes it), plus
        ``results.json``, ``results.md`` and ``predictions/<task>.jsonl`` (per-example diagnostics).
        Each file is written to a temporary name and renamed, so a crash leaves no half file.
        """
        out = Path(output_dir)
        (out / "predictions").mkdir(parents=True, exist_ok=True)

        def write(path: Path, text: str) -> None:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, "utf-8")
            os.replace(tmp, path)

        for task, rows in self.predictions.items():
            write(out / "predictions" / f"{task}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            write(
                out / f"{LONGBENCH_NAMES[task]}.jsonl",
                "".join(
                    json.dumps({"pred": r["pred"], "answers": r["answers"], "all_classes": r["all_classes"],
                                "length": r["length"]}, ensure_ascii=False) + "\n"
                    for r in rows
                ),
            )
        write(out / "result.json", json.dumps(self.longbench_result(), ensure_ascii=False, indent=4))
        write(out / "results.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        write(out / "results.md", self.to_markdown())
        return out


def evaluate_longbench(
    model_or_backend: Any,
    data_dir: Any,
    tasks: list[str] | tuple[str, ...] | None = None,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    device: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    label: str = LONGBENCH_LABEL,
    summarization_metric: str = "rouge",
) -> EvalReport:
    """Evaluate a model on LongBench's document-level tasks, as LongBench's ``pred.py`` and ``eval.py`` do.

    Args:
        model_or_backend: A :class:`GenerationBackend` (e.g. ``TGIBackend``), a TGI / OpenAI-compatible
            URL, a local model path / Hub id, or a loaded ``transformers`` causal LM (the last two run
            in process with :class:`~hf_context_synthesis.backends.local.TransformersBackend`).
        data_dir: LongBench's test data: a folder of ``<task>.jsonl`` files, ``data.zip``, or a Hub
            dataset id of a parquet mirror (:func:`~hf_context_synthesis.evaluation.longbench_tasks.resolve_data`).
        tasks: Tasks to run (either naming scheme); default: every document-level task with data.
        tokenizer: Tokenizer (object, path or id) for truncation; default: the local backend's.
            Endpoints need one unless ``max_length=0``.
        max_length: LongBench's prompt budget in tokens, BOS included (31,500 for 32k models,
            127,500 for 128k; :data:`~hf_context_synthesis.evaluation.longbench_tasks.PROMPT_BUDGETS`). Default: from
            the model's context window (:func:`~hf_context_synthesis.evaluation.longbench_tasks.default_max_length`);
            ``0`` = no truncation (not LongBench's protocol).
        limit: At most this many examples per task (the first ones of each file).
        batch_size: Local: prompts generated together (default 1, as LongBench; larger batches
            left-pad, which can change greedy outputs). Endpoint: requests in flight (each request
            is generated on its own, outputs unchanged).
        device: Device for a model loaded here.
        output_dir: When given, :meth:`EvalReport.save` writes the results there.
        label: What the data is: ``"LongBench"`` (its real test data, the default) or e.g.
            :data:`HELD_OUT_LABEL` for held-out synthesized examples (never called LongBench).
        summarization_metric: ``"rouge"`` (LongBench's, default) or ``"rouge-score"`` (Google's;
            ``result.json`` keeps LongBench's number).

    Generation is greedy (``temperature=0``) with LongBench's per-task ``dataset2maxlen``.
    """
    data = resolve_data(data_dir)
    if tasks is None:
        tasks = data.tasks
        if not tasks:
            raise FileNotFoundError(
                f"no LongBench task files in {data_dir}; expected <task>.jsonl (or parquet) for tasks "
                f"{list(LONGBENCH_TASKS)}"
                + (f" (found only unsupported ones: {', '.join(data.unsupported)})" if data.unsupported else "")
            )
    task_names = list(dict.fromkeys(canonical_task(t) for t in tasks))
    metric_for_task(task_names[0], summarization_metric)  # an unknown metric name fails now
    # read every file first: bad data fails before any model is loaded
    examples = {task: load_task(data, task, limit=limit) for task in task_names}

    backend, owned = make_model_backend(model_or_backend, tokenizer=tokenizer, batch_size=batch_size, device=device)
    try:
        tok = evaluation_tokenizer(backend, owned, tokenizer)
        window = None
        if max_length is None:
            window = context_window(backend, tokenizer)
            if window is None:
                raise ValueError(
                    "max_length: pass LongBench's prompt budget (e.g. 31500 for a 32k model, 127500 for 128k; "
                    "see PROMPT_BUDGETS), or 0 for no truncation: the model's context window is unknown here"
                )
            max_length = default_max_length(window)
            logger.info("%s: context window %d -> LongBench prompt budget max_length=%d", label, window, max_length)
        if max_length and tok is None:
            raise ValueError(
                "max_length needs a tokenizer for middle truncation: pass tokenizer= (object, path or Hub id)"
            )
        if not max_length:
            logger.warning("max_length=0: prompts are sent untruncated (not LongBench's protocol)")
        model_id = run_coro(backend.model_id())

        scores: dict[str, TaskScore] = {}
        predictions: dict[str, list[dict[str, Any]]] = {}
        for task in task_names:
            max_new = dataset2maxlen[task]
            name = f"LongBench {task}" if label == LONGBENCH_LABEL else dataset_display_name(label, task)
            requests: list[GenerationRequest] = []
            rows: list[dict[str, Any]] = []
            for i, ex in enumerate(examples[task]):
                prompt = build_prompt(task, ex)
                truncated = False
                prompt_tokens = None
                if tok is not None:
                    if max_length:
                        shortened = middle_truncate(prompt, tok, max_length)
                        truncated = shortened != prompt
                        prompt = shortened
                    prompt_tokens = len(tok(prompt)["input_ids"])  # as LongBench counts: special tokens included
                requests.append(
                    GenerationRequest(
                        key=f"{task}/{i}",
                        messages=({"role": "user", "content": prompt},),
                        max_new_tokens=max_new,
                        temperature=0.0,
                    )
                )
                rows.append(
                    {
                        "id": ex.id,
                        "answers": ex.answers,
                        "all_classes": ex.all_classes,
                        "length": ex.length,
                        "prompt_tokens": prompt_tokens,
                        "truncated": truncated,
                    }
                )
            logger.info("%s: generating %d answers (max %d new tokens)", name, len(requests), max_new)
            with progress_bar(total=len(requests), desc=name, unit="answer") as bar:
                results = run_requests(backend, requests, on_result=lambda _res: bar.update(1))
            total = 0.0
            failed = 0
            for row, ex, res in zip(rows, examples[task], results):
                pred = res.text if res.ok else ""
                if not res.ok:
                    failed += 1
                s = score_example(task, pred or "", ex.answers, ex.all_classes, summarization_metric)
                total += s
                row.update(pred=pred or "", score=s, error=res.error)
            metric = metric_for_task(task, summarization_metric)
            metric_name = METRIC_DISPLAY_NAMES[metric.__name__][0]
            scores[task] = TaskScore(
                task=task,
                metric=metric_name,
                score=round(100 * total / len(rows), 2),
                num_examples=len(rows),
                num_failed=failed,
                max_new_tokens=max_new,
                num_truncated=sum(r["truncated"] for r in rows),
            )
            if metric is not metric_for_task(task):
                scores[task].longbench_score = scorer(task, [r["pred"] for r in rows], [r["answers"] for r in rows])
            predictions[task] = rows
            if failed:
                logger.warning("%s: %d/%d generations failed (scored 0)", name, failed, len(rows))
            logger.info("%s: %s %.2f", name, metric_name, scores[task].score)
    finally:
        if owned:
            run_coro(backend.aclose())

    report = EvalReport(
        model_id=str(model_id),
        tasks=scores,
        predictions=predictions,
        settings={
            "label": label,
            "data_dir": data.source,
            "unsupported_files": data.unsupported,
            "tasks": task_names,
            "max_length": max_length,
            "context_window": window,
            "truncation": "LongBench pred.py: head + tail int(max_length/2) tokens, BOS counted"
            if max_length else "none",
            "limit": limit,
            "batch_size": batch_size,
            "summarization_metric": summarization_metric,
            "decoding": "greedy",
            "backend": backend.kind,
        },
    )
    if output_dir is not None:
        report.save(output_dir)
    return report
