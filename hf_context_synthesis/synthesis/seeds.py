"""Seed instruction-answer pairs: load from a Hub id, a file, a folder or a ``Dataset``; map columns; validate."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..utils.paths import UnsafeNameError, check_name

logger = logging.getLogger(__name__)

SEED_FILE_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class SeedExample:
    """One validated seed pair. ``seed_id`` is ``"<task>/<row>"`` (row = 0-based index in its source)."""

    task: str
    instruction: str
    answer: str
    seed_id: str


class SeedError(ValueError):
    """A seed row or source is unusable; the message names the source, row and field."""


class UnsafeSeedNameError(SeedError, UnsafeNameError):
    """A seed's task name would not be a plain file name (path separators, ``..``, control
    characters, empty); the message names the source, row and value."""


@dataclass
class SeedLoadResult:
    """Validated seeds plus what was rejected (``on_bad_row="skip"``)."""

    examples: list[SeedExample]
    total_rows: int
    rejected: dict[str, int]  # reason -> count

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())


def list_seed_files(folder: str) -> list[str]:
    """Seed files of a folder (one task per file), sorted by name."""
    files = [
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if name.lower().endswith(SEED_FILE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    ]
    if not files:
        raise SeedError(f"Seed folder {folder!r} holds no {'/'.join(SEED_FILE_EXTENSIONS)} files")
    return files


# ---------------------------------------------------------------------------- column mapping
def _first_turn(messages: Any, role: str) -> Any:
    if not isinstance(messages, list):
        return None
    for m in messages:
        if isinstance(m, dict) and m.get("role") == role:
            return m.get("content")
    return None


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str) and b.strip():
        return f"{a}\n\n{b}"
    return a


def detect_layout(column_names: Iterable[str]) -> str:
    """Name of the detected layout: ``messages``, ``alpaca``, ``dolly``, ``instruction_answer``,
    ``prompt_completion`` or ``question_answer``."""
    cols = set(column_names)
    if {"instruction", "answer"} <= cols:
        return "instruction_answer"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"instruction", "response"} <= cols:
        return "dolly"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if {"question", "answer"} <= cols:
        return "question_answer"
    if "messages" in cols:
        return "messages"
    raise SeedError(
        f"Cannot tell which columns hold the instruction and the answer (columns: {sorted(cols)}). "
        "Known layouts: instruction/answer, instruction/input/output (Alpaca), instruction/context/response "
        "(Dolly), prompt/completion, question/answer, messages. Pass columns={'instruction': ..., 'answer': ...}."
    )


def map_row(row: dict[str, Any], layout: str, columns: dict[str, str] | None) -> tuple[Any, Any, Any]:
    """Return ``(instruction, answer, task_or_None)`` of one raw row.

    Alpaca's ``input`` and Dolly's ``context`` are appended to the instruction after a blank line.
    """
    if columns:
        task_col = columns.get("task")
        return row.get(columns["instruction"]), row.get(columns["answer"]), row.get(task_col) if task_col else None
    task = row.get("task")
    if layout == "instruction_answer":
        return row.get("instruction"), row.get("answer"), task
    if layout == "alpaca":
        return _join(row.get("instruction"), row.get("input")), row.get("output"), task
    if layout == "dolly":
        return _join(row.get("instruction"), row.get("context")), row.get("response"), task
    if layout == "prompt_completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list):  # conversational prompt/completion
            prompt = _first_turn(prompt, "user")
        if isinstance(completion, list):
            completion = _first_turn(completion, "assistant")
        return prompt, completion, task
    if layout == "question_answer":
        return row.get("question"), row.get("answer"), task
    if layout == "messages":
        msgs = row.get("messages")
        return _first_turn(msgs, "user"), _first_turn(msgs, "assistant"), task
    raise SeedError(f"unknown layout {layout!r}")


# ---------------------------------------------------------------------------- readers
class _LineRow(dict):
    """A row read from a text file, with the line number it came from (for error messages)."""

    line: int = 0


def _at_line(value: Any, line: int) -> Any:
    if isinstance(value, dict):
        value = _LineRow(value)
        value.line = line
    return value


@dataclass(frozen=True)
class _BadRow:
    """A row that could not be read (bad bytes, bad JSON): rejected or raised by ``on_bad_row``."""

    reason: str
    message: str


def _not_utf8(path: str, lineno: int, err: UnicodeDecodeError, line: bytes | None = None) -> _BadRow:
    where = f" (byte {line[max(0, err.start - 8):err.end + 8]!r})" if line is not None else ""
    return _BadRow("not valid UTF-8", f"{path}: line {lineno} is not valid UTF-8{where}; re-encode the file as UTF-8")


def _iter_file(path: str) -> Iterator[dict[str, Any] | _BadRow]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl" or (ext == ".json" and _looks_like_jsonl(path)):
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield _not_utf8(path, lineno, err, raw)
                    continue
                if not line.strip():
                    continue
                try:
                    yield _at_line(json.loads(line), lineno)
                except json.JSONDecodeError as err:
                    yield _BadRow("not valid JSON", f"{path}: line {lineno} is not valid JSON ({err.msg})")
    elif ext == ".json":
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise SeedError(f"{path}: line {line} is not valid UTF-8; re-encode the file as UTF-8") from None
        data = json.loads(text)
        if isinstance(data, dict):  # {"data": [...]} or column-oriented
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]) else [data]
        yield from data
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif ext == ".csv":
        import csv

        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                bad = next((v for v in row.values() if isinstance(v, str) and _has_surrogates(v)), None)
                if bad is not None:
                    yield _BadRow("not valid UTF-8", f"{path}: line {reader.line_num} is not valid UTF-8; re-encode the file as UTF-8")
                else:
                    yield _at_line(row, reader.line_num)
    else:
        raise SeedError(f"{path}: unsupported seed file type {ext!r} (use {', '.join(SEED_FILE_EXTENSIONS)})")


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _looks_like_jsonl(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = fh.read(1).lstrip()
        if head != "{":
            return False
        fh.seek(0)
        first = fh.readline()
    try:
        json.loads(first)
        return True
    except json.JSONDecodeError:
        return False


def iter_sources(
    seed: Any, config: Any, what: str = "seed"
) -> Iterator[tuple[str, str | None, Iterable[dict[str, Any]], list[str] | None]]:
    """Yield ``(source_name, default_task, rows, column_names)`` for a Hub id, file, folder or Dataset.

    ``config`` supplies ``task``, ``seed_split`` and ``seed_revision``; ``what`` names the argument
    in error messages.
    """
    if seed is None:
        raise SeedError(f"No {what} data given: pass {what}=<Hub id | file | folder | Dataset>")
    if isinstance(seed, (bool, int)):
        raise TypeError(
            f"`seed` names the seed data, not a random number: got {seed!r}. Use `random_seed=` for the RNG seed."
        )
    if isinstance(seed, str):
        if os.path.isdir(seed):
            for path in list_seed_files(seed):
                stem = os.path.splitext(os.path.basename(path))[0]
                yield path, stem, _iter_file(path), None
            return
        if os.path.isfile(seed):
            stem = os.path.splitext(os.path.basename(seed))[0]
            yield seed, config.task or stem, _iter_file(seed), None
            return
        if seed.lower().endswith(SEED_FILE_EXTENSIONS) or seed.startswith((".", "/", "~")):
            raise SeedError(f"{what.capitalize()} file or folder {seed!r} does not exist")
        import datasets

        ds = datasets.load_dataset(seed, split=config.seed_split, revision=config.seed_revision)
        yield seed, config.task, ds, ds.column_names
        return
    import datasets

    if isinstance(seed, datasets.DatasetDict):
        if config.seed_split not in seed:
            raise SeedError(f"Seed DatasetDict has no split {config.seed_split!r} (splits: {list(seed)})")
        seed = seed[config.seed_split]
    if isinstance(seed, (datasets.Dataset, datasets.IterableDataset)):
        yield "<Dataset>", config.task, seed, list(seed.column_names or [])
        return
    if isinstance(seed, list):
        yield "<list>", config.task, seed, None
        return
    raise TypeError(f"Unsupported seed of type {type(seed).__name__}: pass a Hub id, a path or a datasets.Dataset")


def _problem(value: Any) -> str | None:
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value.strip():
        return "empty"
    return None


def _where(source: str, row: Any, index: int) -> str:
    """``"<file>: line N"`` for a row of a text file, else ``"<source>: row I"`` (0-based)."""
    return f"{source}: line {row.line}" if isinstance(row, _LineRow) else f"{source}: row {index}"


def _task_name(value: Any, default_task: str | None, where: str) -> str:
    """The row's task (its own ``task`` value, else the source's), checked to be a safe file name.

    The task becomes part of file names (the recipe's ``holdout/<task>.jsonl``) and a Hub seed
    dataset controls that column, so an unsafe name stops the load (also with ``on_bad_row="skip"``:
    it is not a damaged row to drop quietly but data that must not reach the file system).
    """
    try:
        if value is None:
            return check_name(default_task or "default", what="task (from the file name or the task setting)",
                              where=where)
        return check_name(value if isinstance(value, str) else str(value), what="task", where=where)
    except UnsafeNameError as err:
        raise UnsafeSeedNameError(f"{err}; unsafe task names are refused, also with on_bad_row='skip'") from None


def load_seeds(config: Any) -> SeedLoadResult:
    """Read and validate the seed rows of ``config`` (a :class:`~hf_context_synthesis.SynthesisConfig`).

    Raises :class:`SeedError` naming source, row and field on a bad row unless ``on_bad_row="skip"``.
    """
    examples: list[SeedExample] = []
    rejected: dict[str, int] = {}
    total = 0
    per_task: dict[str, int] = {}
    for source, default_task, rows, column_names in iter_sources(config.seed, config):
        layout = None
        if config.columns is None and column_names is not None:
            layout = detect_layout(column_names)
        for index, row in enumerate(rows):
            total += 1
            if isinstance(row, _BadRow):
                if config.on_bad_row == "skip":
                    rejected[row.reason] = rejected.get(row.reason, 0) + 1
                    logger.warning("Skipping a seed row: %s", row.message)
                    continue
                raise SeedError(f"{row.message}. Fix the row or pass on_bad_row='skip'.")
            if not isinstance(row, dict):
                raise SeedError(f"{source}: row {index} is not an object/record: {str(row)[:80]!r}")
            if layout is None and config.columns is None:
                layout = detect_layout(row.keys())
            if config.columns is not None:
                missing = [c for k, c in config.columns.items() if k in ("instruction", "answer") and c not in row]
                if missing:
                    raise SeedError(f"{source}: row {index} has no column {missing[0]!r} named in columns=")
            instruction, answer, task = map_row(row, layout or "", config.columns)
            task = _task_name(task, default_task, _where(source, row, index))
            for field_name, value in (("instruction", instruction), ("answer", answer)):
                problem = _problem(value)
                if problem:
                    reason = f"{field_name} {problem}"
                    if config.on_bad_row == "skip":
                        rejected[reason] = rejected.get(reason, 0) + 1
                        logger.debug("Skipping %s row %d: %s", source, index, reason)
                        break
                    raise SeedError(
                        f"{source}: row {index}: field {field_name!r} is {problem}"
                        f" (value: {str(value)[:60]!r}). Fix the row or pass on_bad_row='skip'."
                    )
            else:
                if config.max_seeds is not None and per_task.get(task, 0) >= config.max_seeds:
                    continue
                per_task[task] = per_task.get(task, 0) + 1
                examples.append(
                    SeedExample(task=task, instruction=instruction.strip(), answer=answer.strip(), seed_id=f"{task}/{index}")
                )
    if not examples:
        raise SeedError(f"No usable seed rows in {describe(config.seed)} ({total} read, {sum(rejected.values())} rejected)")
    ids = [e.seed_id for e in examples]
    if len(set(ids)) != len(ids):  # two sources with the same task name
        examples = [
            SeedExample(e.task, e.instruction, e.answer, f"{e.seed_id}#{i}") for i, e in enumerate(examples)
        ]
    logger.info("Loaded %d seed pairs (%d rows read, %d rejected)", len(examples), total, sum(rejected.values()))
    return SeedLoadResult(examples=examples, total_rows=total, rejected=rejected)


def describe(seed: Any) -> str:
    return seed if isinstance(seed, str) else f"<{type(seed).__name__}>"
