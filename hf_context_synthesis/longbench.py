"""LongBench (v1) document-level tasks: prompts, generation lengths, data files, middle truncation.

The prompts (:data:`dataset2prompt`) and maximum generation lengths (:data:`dataset2maxlen`) are
LongBench's ``config/dataset2prompt.json`` / ``config/dataset2maxlen.json`` entries for the eight
English document-level tasks the paper evaluates, including LongBench's ``asconcisely`` typo in the
narrativeqa prompt (so scores stay comparable with published ones). Both are keyed by our task names
(``2wikiqa``, ``govreport``, ``multinews``) *and* LongBench's (``2wikimqa``, ``gov_report``,
``multi_news``); :func:`canonical_task` maps either to ours.

Data: one LongBench-format JSON-lines file per task (as in ``THUDM/LongBench``'s ``data.zip``) with
fields ``input``, ``context``, ``answers`` (list of strings), ``length`` and ``all_classes``, named
after either task name (``2wikimqa.jsonl`` or ``2wikiqa.jsonl``), directly in the data folder or in
its ``data/`` subfolder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .task_templates import LONGBENCH_TEMPLATES

logger = logging.getLogger(__name__)

__all__ = [
    "LONGBENCH_NAMES",
    "LONGBENCH_TASKS",
    "LongBenchExample",
    "available_tasks",
    "build_prompt",
    "canonical_task",
    "dataset2maxlen",
    "dataset2prompt",
    "find_task_file",
    "load_task",
    "middle_truncate",
    "middle_truncate_ids",
]

#: The eight document-level tasks, under this project's names, in the paper's table order.
LONGBENCH_TASKS: tuple[str, ...] = (
    "narrativeqa",
    "qasper",
    "hotpotqa",
    "2wikiqa",
    "musique",
    "govreport",
    "qmsum",
    "multinews",
)

#: Our task name -> LongBench's dataset name (also its file name and ``dataset_config``).
LONGBENCH_NAMES: dict[str, str] = {
    "narrativeqa": "narrativeqa",
    "qasper": "qasper",
    "hotpotqa": "hotpotqa",
    "2wikiqa": "2wikimqa",
    "musique": "musique",
    "govreport": "gov_report",
    "qmsum": "qmsum",
    "multinews": "multi_news",
}

_ALIASES: dict[str, str] = {**{v: k for k, v in LONGBENCH_NAMES.items()}, **{k: k for k in LONGBENCH_NAMES}}

# One source for LongBench's prompts: the training templates are the evaluation prompts.
_PROMPTS: dict[str, str] = {task: LONGBENCH_TEMPLATES[task] for task in LONGBENCH_TASKS}

_MAXLEN: dict[str, int] = {
    "narrativeqa": 128,
    "qasper": 128,
    "hotpotqa": 32,
    "2wikiqa": 32,
    "musique": 32,
    "govreport": 512,
    "qmsum": 512,
    "multinews": 512,
}

#: Task -> LongBench prompt (``str.format`` with ``context`` and ``input``), under both naming schemes.
dataset2prompt: dict[str, str] = {**_PROMPTS, **{LONGBENCH_NAMES[k]: v for k, v in _PROMPTS.items()}}
#: Task -> maximum new tokens LongBench generates, under both naming schemes.
dataset2maxlen: dict[str, int] = {**_MAXLEN, **{LONGBENCH_NAMES[k]: v for k, v in _MAXLEN.items()}}


def canonical_task(task: str) -> str:
    """Our name for ``task`` (``"2wikimqa"`` -> ``"2wikiqa"``); ``ValueError`` for unknown tasks."""
    try:
        return _ALIASES[task]
    except KeyError:
        raise ValueError(
            f"unknown LongBench task {task!r}; document-level tasks are {list(LONGBENCH_TASKS)} "
            f"(LongBench names {sorted(set(LONGBENCH_NAMES.values()))} are accepted too)"
        ) from None


@dataclass
class LongBenchExample:
    """One LongBench test example.

    Args:
        task: Our task name.
        input: The question / query (empty for summarization tasks).
        context: The long document(s).
        answers: Reference answers; the score is the max over them.
        length: LongBench's word count of the context.
        all_classes: Label set of classification tasks (``None`` here).
        id: LongBench's ``_id`` when present, else ``"<task>/<line>"``.
    """

    task: str
    input: str
    context: str
    answers: list[str]
    length: int = 0
    all_classes: list[str] | None = None
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def build_prompt(task: str, example: LongBenchExample | dict[str, Any]) -> str:
    """Fill ``task``'s LongBench prompt with the example's ``context`` and ``input``."""
    template = dataset2prompt[canonical_task(task)]
    if isinstance(example, LongBenchExample):
        context, question = example.context, example.input
    else:
        context, question = example.get("context", ""), example.get("input", "")
    return template.format(context=context, input=question)


def find_task_file(data_dir: str | os.PathLike[str], task: str) -> Path:
    """The jsonl file of ``task`` in ``data_dir`` (either naming scheme, also under ``data/``)."""
    name = canonical_task(task)
    root = Path(data_dir)
    candidates = []
    for folder in (root, root / "data"):
        for stem in dict.fromkeys((LONGBENCH_NAMES[name], name)):
            candidates.append(folder / f"{stem}.jsonl")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no data file for task {name!r} in {root}: looked for " + ", ".join(str(p.relative_to(root)) for p in candidates)
    )


def available_tasks(data_dir: str | os.PathLike[str]) -> list[str]:
    """The document-level tasks that have a data file in ``data_dir``, in table order."""
    found = []
    for task in LONGBENCH_TASKS:
        try:
            find_task_file(data_dir, task)
        except FileNotFoundError:
            continue
        found.append(task)
    return found


def load_task(data_dir: str | os.PathLike[str], task: str, limit: int | None = None) -> list[LongBenchExample]:
    """Read ``task``'s examples from its LongBench-format jsonl file (first ``limit`` rows if given).

    Raises ``ValueError`` naming the file and line for malformed rows (bad JSON, missing
    ``context``/``answers``, ``answers`` not a list of strings).
    """
    name = canonical_task(task)
    path = find_task_file(data_dir, name)
    examples: list[LongBenchExample] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for key in ("context", "answers"):
                if key not in row:
                    raise ValueError(f"{where}: missing field {key!r} (LongBench rows have input, context, answers)")
            answers = row["answers"]
            if isinstance(answers, str):
                answers = [answers]
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise ValueError(f"{where}: 'answers' must be a list of strings")
            if not isinstance(row["context"], str):
                raise ValueError(f"{where}: 'context' must be a string")
            length = row.get("length")
            examples.append(
                LongBenchExample(
                    task=name,
                    input=str(row.get("input") or ""),
                    context=row["context"],
                    answers=answers,
                    length=int(length) if isinstance(length, (int, float)) else len(row["context"].split()),
                    all_classes=row.get("all_classes"),
                    id=str(row.get("_id") or f"{name}/{lineno}"),
                )
            )
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def middle_truncate_ids(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the first and last halves of ``ids`` so at most ``max_tokens`` remain."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if len(ids) <= max_tokens:
        return list(ids)
    head = max_tokens // 2
    tail = max_tokens - head
    return list(ids[:head]) + list(ids[len(ids) - tail :])


def middle_truncate(prompt: str, tokenizer: Any, max_tokens: int) -> str:
    """LongBench's truncation: when ``prompt`` exceeds ``max_tokens`` tokens, keep its head and tail.

    The instructions at both ends of the prompt survive; the middle of the context is dropped. The
    two halves are decoded separately and concatenated, as LongBench's ``pred.py`` does.
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt
    kept = middle_truncate_ids(ids, max_tokens)
    head = max_tokens // 2
    return tokenizer.decode(kept[:head], skip_special_tokens=True) + tokenizer.decode(
        kept[head:], skip_special_tokens=True
    )
