"""LongBench's scoring functions for the eight document-level tasks the paper reports.

Definitions follow THUDM/LongBench ``metrics.py`` and ``eval.py``:

* :func:`normalize_answer`: lowercase, drop ASCII punctuation, drop the articles ``a``/``an``/``the``,
  collapse whitespace (SQuAD's normalization).
* :func:`qa_f1_score`: token-level F1 between the normalized prediction and ground truth.
* :func:`rouge_score`: ROUGE-L F-measure.
* :func:`scorer`: for each example the **max** over its ground truths, then the mean over examples,
  times 100, rounded to 2 decimals.

**ROUGE-L difference.** LongBench calls the ``rouge`` package (``Rouge().get_scores``), which splits
both texts into "sentences" on ``.``, tokenizes on whitespace without lowercasing (punctuation stays
attached to words), computes *summary-level* LCS and an F-measure weighted with ``beta = P / R``. We
use Google's ``rouge-score`` (``rouge_scorer.RougeScorer(["rougeL"])``): one LCS over the whole text,
its default tokenizer (lowercase, non-alphanumeric characters as separators, no stemming) and the
plain F1. Both return 0 for an empty prediction. Summarization scores are therefore close to, but not
byte-identical with, LongBench's published numbers; QA scores (F1) are identical.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "METRIC_DISPLAY_NAMES",
    "TASK_METRICS",
    "f1_score",
    "metric_for_task",
    "normalize_answer",
    "qa_f1_score",
    "rouge_score",
    "score_example",
    "scorer",
]

_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lowercase, remove punctuation, remove articles (a/an/the) and collapse whitespace."""
    text = s.lower()
    text = text.translate(_DELETE_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: Sequence[str], ground_truth: Sequence[str], **kwargs: Any) -> float:
    """F1 of two token lists with multiset overlap (0 when nothing overlaps)."""
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction)
    recall = num_same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """Token F1 between the normalized prediction and the normalized ground truth (0..1)."""
    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F-measure with ``rouge-score`` (0..1); see the module docstring for LongBench's variant."""
    if not prediction.strip() or not ground_truth.strip():
        return 0.0
    return float(_rouge_l_scorer().score(ground_truth, prediction)["rougeL"].fmeasure)


#: Task -> metric, under our task names and LongBench's (``2wikimqa``, ``gov_report``, ``multi_news``).
TASK_METRICS: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "hotpotqa": qa_f1_score,
    "2wikiqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "govreport": rouge_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multinews": rouge_score,
    "multi_news": rouge_score,
}

#: Short display names for tables and model cards: metric function name -> (name, model-index type).
METRIC_DISPLAY_NAMES: dict[str, tuple[str, str]] = {
    "qa_f1_score": ("F1", "f1"),
    "rouge_score": ("ROUGE-L", "rougeL"),
}


def metric_for_task(task: str) -> Callable[..., float]:
    """The metric of ``task``; raises ``ValueError`` for tasks outside the eight document-level ones."""
    try:
        return TASK_METRICS[task]
    except KeyError:
        raise ValueError(f"no LongBench metric for task {task!r}; known: {sorted(TASK_METRICS)}") from None


def score_example(
    task: str, prediction: str, ground_truths: Sequence[str], all_classes: Sequence[str] | None = None
) -> float:
    """Best score (0..1) of ``prediction`` against any of ``ground_truths`` (0 when there are none)."""
    if isinstance(ground_truths, str):
        raise TypeError("ground_truths must be a list of strings, not a single string")
    metric = metric_for_task(task)
    score = 0.0
    for ground_truth in ground_truths:
        score = max(score, metric(prediction, ground_truth, all_classes=all_classes))
    return score


def scorer(
    task: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[str] | None = None,
) -> float:
    """LongBench's task score: mean over examples of the best per-example score, x100, 2 decimals."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        raise ValueError(f"no predictions to score for task {task!r}")
    total = sum(score_example(task, p, gts, all_classes) for p, gts in zip(predictions, answers))
    return round(100 * total / len(predictions), 2)
