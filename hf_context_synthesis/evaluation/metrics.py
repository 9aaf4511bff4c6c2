"""LongBench's scoring functions for the eight document-level tasks the paper reports.

Definitions follow THUDM/LongBench ``LongBench/metrics.py`` and ``LongBench/eval.py`` exactly:

* :func:`normalize_answer`: lowercase, drop ASCII punctuation, drop the articles ``a``/``an``/``the``,
  collapse whitespace (SQuAD's normalization).
* :func:`qa_f1_score`: token-level F1 between the normalized prediction and ground truth.
* :func:`rouge_score` (default for govreport, qmsum, multinews): what LongBench calls, the pip package
  ``rouge``: ``Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"]`` and 0.0
  when it raises (an empty or punctuation-only prediction raises ``Hypothesis is empty``). Its
  behaviour, quirks included: no lowercasing, words split on spaces with punctuation attached
  (``"cat."`` differs from ``"cat"``), "sentences" split on ``.`` and a *summary-level* ROUGE-L
  (union LCS over the sentence pairs, each reference word counted once), F with ``beta = P / R``.
* :func:`rouge_score_google`: Google's ``rouge-score`` ROUGE-L F (one LCS over the whole text,
  lowercased, non-alphanumeric characters as separators, plain F1). **Not** LongBench's number; an
  option (``summarization_metric="rouge-score"``) for comparisons with other papers; its numbers
  are not comparable with LongBench's.
* :func:`scorer`: for each example the **max** over its ground truths, then the mean over examples,
  times 100, rounded to 2 decimals (``eval.py``'s ``scorer``; none of the eight tasks takes only
  the first line of the prediction).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..utils.text import normalize_answer

__all__ = [
    "METRIC_DISPLAY_NAMES",
    "TASK_METRICS",
    "f1_score",
    "metric_for_task",
    "normalize_answer",
    "qa_f1_score",
    "rouge_score",
    "rouge_score_google",
    "SUMMARIZATION_METRICS",
    "score_example",
    "scorer",
]


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


def rouge_score(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """LongBench's ROUGE-L: ``rouge`` package, ``get_scores(...)["rouge-l"]["f"]``, 0.0 on any exception."""
    from rouge import Rouge

    rouge = Rouge()
    try:
        scores = rouge.get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # noqa: BLE001 - LongBench scores 0 on any error (empty hypothesis, ...)
        return 0.0
    return float(scores["rouge-l"]["f"])


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_score_google(prediction: str, ground_truth: str, **kwargs: Any) -> float:
    """ROUGE-L F with Google's ``rouge-score`` (0..1); *not* LongBench's number (see the module docstring)."""
    if not prediction.strip() or not ground_truth.strip():
        return 0.0
    return float(_rouge_l_scorer().score(ground_truth, prediction)["rougeL"].fmeasure)


#: ``summarization_metric`` choices: LongBench's (``"rouge"``, default) or Google's ``rouge-score``.
SUMMARIZATION_METRICS: dict[str, Callable[..., float]] = {"rouge": rouge_score, "rouge-score": rouge_score_google}

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
    "rouge_score_google": ("ROUGE-L (rouge-score)", "rougeL"),
}


def metric_for_task(task: str, summarization_metric: str = "rouge") -> Callable[..., float]:
    """The metric of ``task``; ``summarization_metric`` picks ``"rouge"`` (LongBench's) or ``"rouge-score"``.

    Raises ``ValueError`` for tasks outside the eight document-level ones or an unknown metric name.
    """
    try:
        metric = TASK_METRICS[task]
    except KeyError:
        raise ValueError(f"no LongBench metric for task {task!r}; known: {sorted(TASK_METRICS)}") from None
    if metric is rouge_score:
        try:
            metric = SUMMARIZATION_METRICS[summarization_metric]
        except KeyError:
            raise ValueError(
                f"unknown summarization_metric {summarization_metric!r}; choose from {sorted(SUMMARIZATION_METRICS)}"
            ) from None
    return metric


def score_example(
    task: str,
    prediction: str,
    ground_truths: Sequence[str],
    all_classes: Sequence[str] | None = None,
    summarization_metric: str = "rouge",
) -> float:
    """Best score (0..1) of ``prediction`` against any of ``ground_truths`` (0 when there are none)."""
    if isinstance(ground_truths, str):
        raise TypeError("ground_truths must be a list of strings, not a single string")
    metric = metric_for_task(task, summarization_metric)
    score = 0.0
    for ground_truth in ground_truths:
        score = max(score, metric(prediction, ground_truth, all_classes=all_classes))
    return score


def scorer(
    task: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[str] | None = None,
    summarization_metric: str = "rouge",
) -> float:
    """LongBench's task score: mean over examples of the best per-example score, x100, 2 decimals."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        raise ValueError(f"no predictions to score for task {task!r}")
    total = sum(score_example(task, p, gts, all_classes, summarization_metric) for p, gts in zip(predictions, answers))
    return round(100 * total / len(predictions), 2)
