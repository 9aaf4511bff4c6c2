"""LongBench (v1) document-level tasks: prompts, generation lengths, data files, middle truncation.

The prompts (:data:`dataset2prompt`) and maximum generation lengths (:data:`dataset2maxlen`) are
LongBench's ``config/dataset2prompt.json`` / ``config/dataset2maxlen.json`` entries for the eight
English document-level tasks the paper evaluates, including LongBench's ``asconcisely`` typo in the
narrativeqa prompt (so scores stay comparable with published ones). Both are keyed by our task names
(``2wikiqa``, ``govreport``, ``multinews``) *and* LongBench's (``2wikimqa``, ``gov_report``,
``multi_news``); :func:`canonical_task` maps either to ours.

Data (:func:`resolve_data`): LongBench's test sets as

* a **folder** of LongBench-format JSON-lines files, one per task (``input``, ``context``, ``answers``
  (list of strings), ``length``, ``all_classes``, ``_id``), named after either task name
  (``2wikimqa.jsonl`` or ``2wikiqa.jsonl``), directly in the folder or in its ``data/`` subfolder;
* LongBench's **archive** ``data.zip`` (``THUDM/LongBench`` on the Hub: ``data/<task>.jsonl``), read
  in place;
* a **Hub dataset id** (``owner/name`` or ``owner/name@revision``) of a parquet mirror (files such as
  ``<task>/test/0000.parquet`` or ``data/<task>-00000-of-00001.parquet``; also the ``refs/convert/parquet``
  branch of ``THUDM/LongBench``) or of a repo holding ``data.zip``; the files are fetched with
  ``huggingface_hub.snapshot_download`` (``datasets`` >= 4 no longer runs LongBench's loading script).

A file of a LongBench task outside the eight (``trec.jsonl``, ``qasper_e.jsonl``, ...) is reported
(:attr:`LongBenchData.unsupported`, a warning), never silently skipped.

Truncation (:func:`middle_truncate`) is ``pred.py``'s: the raw prompt is tokenized *with* the
tokenizer's special tokens (BOS counts, as in LongBench), and when it has more than ``max_length``
tokens the first and last ``int(max_length / 2)`` tokens are decoded separately (special tokens
skipped) and joined.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..synthesis.task_templates import LONGBENCH_TEMPLATES

logger = logging.getLogger(__name__)

__all__ = [
    "LONGBENCH_NAMES",
    "LONGBENCH_TASKS",
    "LONGBENCH_ALL_TASKS",
    "LongBenchData",
    "LongBenchExample",
    "PROMPT_BUDGETS",
    "available_tasks",
    "default_max_length",
    "build_prompt",
    "canonical_task",
    "dataset2maxlen",
    "dataset2prompt",
    "find_task_file",
    "load_task",
    "middle_truncate",
    "middle_truncate_ids",
    "probe_data",
    "resolve_data",
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

#: Every LongBench v1 dataset name (``pred.py``); files of the ones outside the eight are reported.
LONGBENCH_ALL_TASKS: tuple[str, ...] = (
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
    "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
    "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p",
)  # fmt: skip

#: LongBench's prompt budgets (``config/model2maxlen.json``): context window -> ``max_length``
#: (prompt tokens, BOS included; the answer's ``dataset2maxlen`` tokens and the chat template fit in
#: the ~500 tokens left). 64k and 128k follow the same rule (window in k x 1000 - 500).
PROMPT_BUDGETS: dict[str, int] = {
    "4k": 3500, "8k": 7500, "16k": 15500, "32k": 31500, "64k": 63500, "128k": 127500,
}  # fmt: skip

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


_SHARD = re.compile(r"(-\d{5}-of-\d{5}|-\d+)$")
_SPLITS = {"test", "data", "train", "validation"}


def _task_of(rel_path: str) -> str | None:
    """LongBench dataset name a data file belongs to (``data/2wikimqa.jsonl``, ``qasper/test/0000.parquet``,
    ``data/hotpotqa-00000-of-00001.parquet``, ``test/gov_report_e.parquet``), else ``None``."""
    parts = rel_path.replace("\\", "/").split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    for part in [*parts[:-1], stem, _SHARD.sub("", stem)]:
        name = part[:-2] if part.endswith("_e") else part
        if name in LONGBENCH_ALL_TASKS or name in _ALIASES:
            return part
    return None


@dataclass
class LongBenchData:
    """LongBench test files found in a folder, a ``data.zip`` or a Hub parquet mirror.

    Attributes:
        source: What was given (folder, archive path or Hub id).
        files: Our task name -> where its rows are (a path, ``archive.zip:member`` or parquet paths).
        unsupported: LongBench files present that are not one of the eight tasks (e.g. ``trec``).
    """

    source: str
    files: dict[str, list[str]] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    _zip: str | None = None

    @property
    def tasks(self) -> list[str]:
        """The document-level tasks present, in table order."""
        return [t for t in LONGBENCH_TASKS if t in self.files]

    def iter_rows(self, task: str) -> Iterator[tuple[str, Any]]:
        """``(where, row)`` for each row of ``task``: ``row`` is a JSON line (str) or a dict (parquet)."""
        name = canonical_task(task)
        if name not in self.files:
            raise FileNotFoundError(
                f"no data file for task {name!r} in {self.source} (looked for {LONGBENCH_NAMES[name]}.jsonl, "
                f"{name}.jsonl or a parquet file named after the task; found tasks: {self.tasks})"
            )
        for location in self.files[name]:
            if location.endswith(".parquet"):
                import pyarrow.parquet as pq

                for i, row in enumerate(pq.read_table(location).to_pylist(), start=1):
                    yield f"{location}:{i}", row
            elif self._zip is not None:
                with zipfile.ZipFile(self._zip) as zf, zf.open(location) as raw:
                    for i, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
                        yield f"{self._zip}:{location}:{i}", line
            else:
                with open(location, encoding="utf-8") as f:
                    for i, line in enumerate(f, start=1):
                        yield f"{location}:{i}", line


def _collect(data: LongBenchData, names: list[tuple[str, str]]) -> LongBenchData:
    """Fill ``data`` from ``(relative name, location)`` pairs; the first file of a jsonl task wins."""
    for rel, location in sorted(names, key=lambda p: (p[0].count("/"), p[0])):
        part = _task_of(rel)
        if part is None:
            continue
        if part in _ALIASES:
            task = _ALIASES[part]
            if location.endswith(".parquet"):
                data.files.setdefault(task, []).append(location)  # shards of one split
            else:
                data.files.setdefault(task, [location])
        elif rel not in data.unsupported:
            data.unsupported.append(rel)
    if data.unsupported:
        logger.warning(
            "LongBench data %s: %d file(s) of tasks outside the eight document-level ones are not evaluated: %s",
            data.source, len(data.unsupported), ", ".join(data.unsupported),
        )
    return data


def resolve_data(source: str | os.PathLike[str] | LongBenchData) -> LongBenchData:
    """Find LongBench's test files in a folder, a ``data.zip`` archive or a Hub dataset id (see the module doc)."""
    if isinstance(source, LongBenchData):
        return source
    text = os.fspath(source)
    path = Path(text)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.endswith(".jsonl") and "__MACOSX" not in m]
        data = LongBenchData(source=text, _zip=str(path))
        return _collect(data, [(m, m) for m in members])
    if path.is_dir():
        pairs = []
        for folder in (path, path / "data"):
            if folder.is_dir():
                pairs += [(str(f.relative_to(path)), str(f)) for f in folder.glob("*.jsonl")]
        if not any(_task_of(rel) in _ALIASES for rel, _ in pairs):
            parquet = [(str(f.relative_to(path)), str(f)) for f in sorted(path.rglob("*.parquet"))]
            zips = sorted(path.rglob("data.zip"))
            if not parquet and zips:
                return resolve_data(zips[0])
            pairs += parquet
        return _collect(LongBenchData(source=text), pairs)
    if re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", text) and not path.exists():
        from huggingface_hub import snapshot_download

        repo_id, _, revision = text.partition("@")
        try:
            local = snapshot_download(
                repo_id, repo_type="dataset", revision=revision or None,
                allow_patterns=["*.parquet", "*.jsonl", "data.zip"],
            )
        except Exception as err:  # noqa: BLE001 - one clear line: neither a local path nor a readable Hub dataset
            raise FileNotFoundError(
                f"LongBench data {text!r}: no such local folder or file, and not readable as a Hub dataset id "
                f"({type(err).__name__}: {err})"
            ) from err
        data = resolve_data(local)
        data.source = text
        return data
    raise FileNotFoundError(
        f"LongBench data {text!r}: not a folder of <task>.jsonl files, a data.zip archive or a Hub dataset id "
        "(see the README: LongBench data)"
    )


def probe_data(source: str | os.PathLike[str], tasks: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Check, without reading any row or downloading anything, that ``source`` (a folder, a ``data.zip``
    or a Hub dataset id, as :func:`resolve_data` takes) holds data for ``tasks`` (default: at least one
    document-level task). Returns the tasks found (table order). Raises ``FileNotFoundError`` naming
    the source and the missing tasks; a Hub id is looked up with ``HfApi().dataset_info`` at
    ``HF_ENDPOINT`` (the local cache when ``HF_HUB_OFFLINE`` is set)."""
    text = os.fspath(source)
    wanted = list(dict.fromkeys(canonical_task(t) for t in tasks)) if tasks else []
    path = Path(text).expanduser()
    if path.is_file() and not zipfile.is_zipfile(path):
        raise FileNotFoundError(f"LongBench data {text!r} is a file but not a zip archive (data.zip) that opens")
    if path.exists():
        try:
            found = resolve_data(path).tasks
        except (OSError, zipfile.BadZipFile) as err:
            raise FileNotFoundError(f"LongBench data {text!r} cannot be read ({type(err).__name__}: {err})") from None
        where = "archive" if path.is_file() else "folder"
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", text):
        from ..synthesis.plan import check_hub_dataset

        repo_id, _, revision = text.partition("@")
        try:
            names = check_hub_dataset(repo_id, step="LongBench data", what="dataset", revision=revision or None)
        except OSError as err:
            reason = str(err).split(": ", 1)[-1]
            raise FileNotFoundError(
                f"LongBench data {text!r} is not a folder of LongBench <task>.jsonl files or a data.zip here "
                f"(working directory {os.getcwd()}), nor a Hub dataset id that can be read: {reason}"
            ) from None
        data = _collect(LongBenchData(source=text), [(n, n) for n in names if n.endswith((".jsonl", ".parquet"))])
        found = data.tasks
        if not found and any(n.rsplit("/", 1)[-1] == "data.zip" for n in names):
            return wanted or list(LONGBENCH_TASKS)  # an archive on the Hub: its members are listed once downloaded
        where = "Hub dataset"
    else:
        raise FileNotFoundError(
            f"LongBench data {text!r} is not a folder of LongBench <task>.jsonl files, a data.zip or a Hub "
            "dataset id (see docs/synthesis.md: Seeds and LongBench data)"
        )
    missing = [t for t in wanted if t not in found]
    if missing or not found:
        lacking = ", ".join(f"{LONGBENCH_NAMES[t]}.jsonl" for t in missing) if missing else "any task file"
        raise FileNotFoundError(
            f"LongBench data {text!r} ({where}) has no {lacking} (tasks found: {found or 'none'}; "
            f"document-level tasks: {list(LONGBENCH_TASKS)})"
        )
    return found


def find_task_file(data_dir: str | os.PathLike[str], task: str) -> Path:
    """The jsonl file of ``task`` in the folder ``data_dir`` (either naming scheme, also under ``data/``)."""
    data = resolve_data(data_dir)
    name = canonical_task(task)
    if name not in data.files:
        raise FileNotFoundError(
            f"no data file for task {name!r} in {data_dir}: looked for {LONGBENCH_NAMES[name]}.jsonl / {name}.jsonl "
            "(also under data/)"
        )
    return Path(data.files[name][0])


def available_tasks(data_dir: str | os.PathLike[str] | LongBenchData) -> list[str]:
    """The document-level tasks that have data in ``data_dir`` (folder, archive or Hub id), in table order."""
    return resolve_data(data_dir).tasks


def load_task(
    data_dir: str | os.PathLike[str] | LongBenchData, task: str, limit: int | None = None
) -> list[LongBenchExample]:
    """Read ``task``'s examples from LongBench-format data (first ``limit`` rows if given).

    Raises ``ValueError`` naming the file and line for malformed rows (bad JSON, missing
    ``context``/``answers``, ``answers`` not a list of strings).
    """
    name = canonical_task(task)
    data = resolve_data(data_dir)
    examples: list[LongBenchExample] = []
    for where, raw in data.iter_rows(name):
        if limit is not None and len(examples) >= limit:
            break
        lineno = int(where.rsplit(":", 1)[1])
        if isinstance(raw, str):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        else:
            row = raw
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
        raise ValueError(f"{data.files[name][0]}: no examples")
    return examples


def default_max_length(context_window: int) -> int:
    """LongBench's prompt budget for a model with ``context_window`` tokens (:data:`PROMPT_BUDGETS`' rule).

    ``k x 1000 - 500`` for a window of ``k`` x 1024 tokens (32,768 -> 31,500; 131,072 -> 127,500);
    windows under 2,048 tokens keep half the window for the prompt.
    """
    if context_window < 2048:
        return max(1, context_window // 2)
    return (context_window // 1024) * 1000 - 500


def middle_truncate_ids(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the first and last halves of ``ids`` so at most ``max_tokens`` remain."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if len(ids) <= max_tokens:
        return list(ids)
    head = max_tokens // 2
    tail = max_tokens - head
    return list(ids[:head]) + list(ids[len(ids) - tail :])


def middle_truncate(prompt: str, tokenizer: Any, max_length: int, *, add_special_tokens: bool = True) -> str:
    """LongBench's ``pred.py`` truncation: when ``prompt`` has more than ``max_length`` tokens, keep its head and tail.

    Tokens are counted as LongBench counts them: ``tokenizer(prompt)`` *with* special tokens (a BOS
    counts). Over budget, the first and last ``int(max_length / 2)`` tokens are decoded separately
    (special tokens skipped) and concatenated; the instructions at both ends survive, the middle of
    the context goes.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    ids = list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    if len(ids) <= max_length:
        return prompt
    half = int(max_length / 2)
    return tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(
        ids[-half:], skip_special_tokens=True
    )
