"""Composed rows for tests and benchmarks without a generator: real seeds, stand-in contexts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..synthesis.composition import compose_examples
from ..synthesis.config import SynthesisConfig
from ..synthesis.seeds import SeedExample


def read_seed_examples(seeds_dir: str | os.PathLike[str], tasks: Sequence[str], per_task: int) -> list[SeedExample]:
    """The first ``per_task`` pairs of each ``<task>.jsonl`` in ``seeds_dir`` (ids ``"<task>/<row>"``)."""
    seeds = []
    for task in tasks:
        lines = (Path(seeds_dir) / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()[:per_task]
        for j, line in enumerate(lines):
            rec = json.loads(line)
            seeds.append(SeedExample(task=task, instruction=rec["instruction"], answer=rec["answer"], seed_id=f"{task}/{j}"))
    return seeds


def answer_stating_context(index: int, seed: SeedExample) -> str:
    """A short stand-in context that states the answer."""
    return f"Document {index}. The answer is {seed.answer[:80]}."


def composed_rows(
    seeds_dir: str | os.PathLike[str],
    tasks: Sequence[str] = ("hotpotqa", "musique"),
    per_task: int = 6,
    num_distractors: int = 3,
    context: Callable[[int, SeedExample], str] = answer_stating_context,
    **config: Any,
) -> list[dict[str, Any]]:
    """Rows composed as the pipeline composes them, with ``context(i, seed)`` as seed ``i``'s context.

    ``config`` holds further :class:`SynthesisConfig` fields (``distractor_pool``, ``relevant_position``...).
    """
    seeds = read_seed_examples(seeds_dir, tasks, per_task)
    texts = {i: context(i, s) for i, s in enumerate(seeds)}
    settings = SynthesisConfig(seed="unused", num_distractors=num_distractors, **config)
    return list(compose_examples(seeds, texts.__getitem__, sorted(texts), settings, generator="test"))
