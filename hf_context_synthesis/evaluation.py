"""LongBench document-level evaluation (the paper's main table) and the ``evaluate`` subcommand.

:func:`evaluate_longbench` runs LongBench's protocol on local LongBench-format jsonl files (see
:mod:`hf_context_synthesis.longbench`): fill the task prompt, middle-truncate it, generate greedily
with the task's maximum generation length through any
:class:`~hf_context_synthesis.backends.base.GenerationBackend` (a TGI endpoint or an in-process
``transformers`` model), score with :mod:`hf_context_synthesis.metrics`, and return an
:class:`EvalReport` with per-task scores, a markdown table and ``huggingface_hub.EvalResult`` entries
for a model card.

Prompt handling matches LongBench's ``pred.py``: the *raw* prompt (before the chat template) is
truncated in the middle, then the backend applies the chat template (chat models, all eight tasks are
chat tasks in LongBench). One deliberate difference: LongBench truncates to the model's
``model2maxlen`` entry, which already leaves room for the answer; here the token budget is
``max_length - max_new_tokens - <chat-template tokens>`` where ``max_length`` is the model's context
window, so the full conversation always fits.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .backends.base import GenerationBackend, GenerationRequest, _run_coro, run_requests
from .longbench import (
    LONGBENCH_NAMES,
    LONGBENCH_TASKS,
    available_tasks,
    build_prompt,
    canonical_task,
    dataset2maxlen,
    load_task,
    middle_truncate,
)
from .metrics import METRIC_DISPLAY_NAMES, metric_for_task, score_example
from .progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["EvalReport", "TaskScore", "add_cli_arguments", "evaluate_longbench", "run_cli"]

#: Hub dataset whose test sets the local files hold (goes into the model-index ``dataset.type``).
LONGBENCH_DATASET_ID = "THUDM/LongBench"


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
    """

    task: str
    metric: str
    score: float
    num_examples: int
    num_failed: int = 0
    max_new_tokens: int = 0
    num_truncated: int = 0


@dataclass
class EvalReport:
    """Result of :func:`evaluate_longbench`.

    Args:
        model_id: What generated the predictions (the backend's model id).
        tasks: Task name -> :class:`TaskScore`, in table order.
        predictions: Task name -> one dict per example (``id``, ``pred``, ``answers``, ``length``,
            ``score`` (0..1), ``prompt_tokens``, ``truncated``, ``error``), LongBench's ``pred``
            file layout plus diagnostics.
        settings: How the run was configured (data folder, max length, limit, ...).
    """

    model_id: str
    tasks: dict[str, TaskScore]
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

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
        lines = [
            f"LongBench document-level evaluation of `{self.model_id}`",
            "",
            "| Task | Metric | Score | Examples | Failed | Truncated |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for s in self.tasks.values():
            lines.append(
                f"| {s.task} | {s.metric} | {s.score:.2f} | {s.num_examples} | {s.num_failed} | {s.num_truncated} |"
            )
        lines.append(f"| **Average** | | **{self.average:.2f}** | | | |")
        return "\n".join(lines) + "\n"

    def eval_results(self, dataset_id: str = LONGBENCH_DATASET_ID) -> list[Any]:
        """One ``huggingface_hub.EvalResult`` per task, for ``ModelCardData(eval_results=...)``."""
        from huggingface_hub import EvalResult

        results = []
        for s in self.tasks.values():
            config = LONGBENCH_NAMES[s.task]
            metric_type = next((t for name, t in METRIC_DISPLAY_NAMES.values() if name == s.metric), s.metric)
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Long-context understanding",
                    dataset_type=dataset_id,
                    dataset_name=f"LongBench ({config})",
                    dataset_config=config,
                    dataset_split="test",
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

    def save(self, output_dir: str | os.PathLike[str]) -> Path:
        """Write ``results.json``, ``results.md`` and ``predictions/<task>.jsonl`` to ``output_dir``."""
        out = Path(output_dir)
        (out / "predictions").mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        (out / "results.md").write_text(self.to_markdown(), "utf-8")
        for task, rows in self.predictions.items():
            with open(out / "predictions" / f"{task}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return out


def _load_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(tokenizer))


def _make_backend(
    model_or_backend: Any, *, tokenizer: Any, batch_size: int, device: str | None
) -> tuple[GenerationBackend, bool]:
    """A backend for ``model_or_backend`` and whether we created it (and must close it)."""
    if isinstance(model_or_backend, GenerationBackend):
        return model_or_backend, False
    if isinstance(model_or_backend, str) and model_or_backend.startswith(("http://", "https://")):
        from .backends.tgi import TGIBackend, TGIBackendConfig

        return TGIBackend(TGIBackendConfig(endpoint=model_or_backend, max_concurrency=batch_size)), True
    from .backends.local import TransformersBackend

    model = os.fspath(model_or_backend) if isinstance(model_or_backend, os.PathLike) else model_or_backend
    return TransformersBackend(model, tokenizer=tokenizer, batch_size=batch_size, device=device), True


def _chat_overhead(tokenizer: Any) -> int:
    """Tokens the chat template adds around an empty user turn (0 without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return 0
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - templates that reject an empty turn: count nothing
        return 0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def evaluate_longbench(
    model_or_backend: Any,
    data_dir: str | os.PathLike[str],
    tasks: list[str] | tuple[str, ...] | None = None,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> EvalReport:
    """Evaluate a model on LongBench's document-level tasks from local jsonl files.

    Args:
        model_or_backend: A :class:`GenerationBackend` (e.g. ``TGIBackend``), a TGI URL, a local
            model path / Hub id, or a loaded ``transformers`` causal LM (the last two run in process
            with :class:`~hf_context_synthesis.backends.local.TransformersBackend`).
        data_dir: Folder with LongBench-format ``<task>.jsonl`` files.
        tasks: Tasks to run (either naming scheme); default: every document-level task with a file.
        tokenizer: Tokenizer (object, path or id) for middle truncation; default: the local
            backend's tokenizer. Remote backends need one when ``max_length`` is set.
        max_length: Context window in tokens; prompts are middle-truncated to ``max_length -
            max_new_tokens - chat-template tokens``. Default: a local model's
            ``max_position_embeddings``; no truncation for a remote backend.
        limit: At most this many examples per task (the first ones of each file).
        batch_size: Requests generated together (local) or in flight (TGI URL).
        device: Device for a model loaded here.
        output_dir: When given, :meth:`EvalReport.save` writes the results there.

    Generation is greedy (``temperature=0``) with LongBench's per-task ``dataset2maxlen``.
    """
    if tasks is None:
        tasks = available_tasks(data_dir)
        if not tasks:
            raise FileNotFoundError(
                f"no LongBench task files in {data_dir}; expected <task>.jsonl for tasks {list(LONGBENCH_TASKS)}"
            )
    task_names = list(dict.fromkeys(canonical_task(t) for t in tasks))
    # read every file first: bad data fails before any model is loaded
    data = {task: load_task(data_dir, task, limit=limit) for task in task_names}

    backend, owned = _make_backend(model_or_backend, tokenizer=tokenizer, batch_size=batch_size, device=device)
    try:
        backend_tokenizer = getattr(backend, "tokenizer", None)
        if owned and backend_tokenizer is not None:  # already loaded from `tokenizer` by the backend
            tok = backend_tokenizer
        else:
            tok = _load_tokenizer(tokenizer) or backend_tokenizer
        if max_length is None:
            model_config = getattr(getattr(backend, "model", None), "config", None)
            max_length = getattr(model_config, "max_position_embeddings", None)
        if max_length is not None and tok is None:
            raise ValueError(
                "max_length needs a tokenizer for middle truncation: pass tokenizer= (object, path or Hub id)"
            )
        if max_length is None:
            logger.warning("No max_length: prompts are sent untruncated (the server may reject long ones)")
        overhead = _chat_overhead(tok) if tok is not None else 0
        model_id = _run_coro(backend.model_id())

        scores: dict[str, TaskScore] = {}
        predictions: dict[str, list[dict[str, Any]]] = {}
        for task in task_names:
            max_new = dataset2maxlen[task]
            requests: list[GenerationRequest] = []
            rows: list[dict[str, Any]] = []
            for i, ex in enumerate(data[task]):
                prompt = build_prompt(task, ex)
                truncated = False
                prompt_tokens = None
                if tok is not None:
                    if max_length is not None:
                        budget = max_length - max_new - overhead
                        if budget <= 0:
                            raise ValueError(
                                f"max_length={max_length} leaves no room for a prompt on {task} "
                                f"(max_new_tokens={max_new}, chat template={overhead} tokens)"
                            )
                        shortened = middle_truncate(prompt, tok, budget)
                        truncated = shortened != prompt
                        prompt = shortened
                    prompt_tokens = len(tok(prompt, add_special_tokens=False)["input_ids"])
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
            logger.info("LongBench %s: generating %d answers (max %d new tokens)", task, len(requests), max_new)
            with progress_bar(total=len(requests), desc=f"LongBench {task}", unit="answer") as bar:
                results = run_requests(backend, requests, on_result=lambda _res: bar.update(1))
            total = 0.0
            failed = 0
            for row, ex, res in zip(rows, data[task], results):
                pred = res.text if res.ok else ""
                if not res.ok:
                    failed += 1
                s = score_example(task, pred or "", ex.answers, ex.all_classes)
                total += s
                row.update(pred=pred, score=s, error=res.error)
            metric_name = METRIC_DISPLAY_NAMES[metric_for_task(task).__name__][0]
            scores[task] = TaskScore(
                task=task,
                metric=metric_name,
                score=round(100 * total / len(rows), 2),
                num_examples=len(rows),
                num_failed=failed,
                max_new_tokens=max_new,
                num_truncated=sum(r["truncated"] for r in rows),
            )
            predictions[task] = rows
            if failed:
                logger.warning("LongBench %s: %d/%d generations failed (scored 0)", task, failed, len(rows))
            logger.info("LongBench %s: %s %.2f", task, metric_name, scores[task].score)
    finally:
        if owned:
            _run_coro(backend.aclose())

    report = EvalReport(
        model_id=str(model_id),
        tasks=scores,
        predictions=predictions,
        settings={
            "data_dir": os.fspath(data_dir),
            "tasks": task_names,
            "max_length": max_length,
            "limit": limit,
            "chat_template_tokens": overhead,
            "decoding": "greedy",
            "backend": backend.kind,
        },
    )
    if output_dir is not None:
        report.save(output_dir)
    return report


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``context-synthesis evaluate``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Local model folder or Hub id, generated in process with transformers.")
    source.add_argument("--endpoint", help="TGI / Inference Endpoint URL to generate with.")
    parser.add_argument("--data-dir", required=True, help="Folder with LongBench-format <task>.jsonl files.")
    parser.add_argument("--output-dir", required=True, help="Where results.json, results.md, predictions/ go.")
    parser.add_argument(
        "--tasks", nargs="+", default=None, help=f"Tasks to run (default: all with a file): {' '.join(LONGBENCH_TASKS)}."
    )
    parser.add_argument("--tokenizer", default=None, help="Tokenizer for truncation (default: the model's).")
    parser.add_argument("--max-length", type=int, default=None, help="Context window in tokens (see docs).")
    parser.add_argument("--limit", type=int, default=None, help="At most N examples per task.")
    parser.add_argument("--batch-size", type=int, default=8, help="Local batch size / TGI requests in flight.")
    parser.add_argument("--device", default=None, help="Device for a local model (default: cuda if available).")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``context-synthesis evaluate``; prints the table, returns 1 if any generation failed."""
    report = evaluate_longbench(
        args.endpoint or args.model,
        args.data_dir,
        tasks=args.tasks,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        output_dir=args.output_dir,
    )
    print(report.to_markdown())
    print(f"Results written to {args.output_dir}")
    return 1 if any(s.num_failed for s in report.tasks.values()) else 0
