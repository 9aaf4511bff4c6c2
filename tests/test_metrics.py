"""LongBench metrics on fixed strings; every expected value is worked out by hand in the comments."""

from __future__ import annotations

import pytest

from hf_context_synthesis.metrics import (
    TASK_METRICS,
    f1_score,
    normalize_answer,
    qa_f1_score,
    rouge_score,
    score_example,
    scorer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # lower -> "the cat's  hat, a red one!"; punctuation -> "the cats  hat a red one";
        # articles -> " cats  hat   red one"; whitespace -> "cats hat red one"
        ("The Cat's  hat, a red one!", "cats hat red one"),
        # articles only as whole words: "anna", "banana", "then" survive
        ("Anna and the banana, then AN apple", "anna and banana then apple"),
        # punctuation is removed before articles: "U.S.A." -> "usa"; "a-b" -> "ab"
        ("U.S.A. a-b", "usa ab"),
        ("  \n\t ", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_f1_score_token_lists() -> None:
    # common = {a:1, b:1} -> 2; P = 2/3, R = 2/2 -> F1 = 2*(2/3)*1/(2/3+1) = 0.8
    assert f1_score(["a", "b", "c"], ["a", "b"]) == pytest.approx(0.8)
    assert f1_score(["x"], ["y"]) == 0.0


def test_qa_f1_exact_match_after_normalization() -> None:
    # "The Georgia Peach" -> [georgia, peach] == "Georgia Peach." -> [georgia, peach]
    assert qa_f1_score("The Georgia Peach", "Georgia Peach.") == pytest.approx(1.0)


def test_qa_f1_partial_overlap() -> None:
    # pred "in the year 1820 in Paris" -> [in, year, 1820, in, paris] (5 tokens)
    # gold "Paris, 1820" -> [paris, 1820] (2 tokens); common = 2
    # P = 2/5 = 0.4, R = 2/2 = 1 -> F1 = 2*0.4*1/1.4 = 0.571428...
    assert qa_f1_score("in the year 1820 in Paris", "Paris, 1820") == pytest.approx(0.8 / 1.4)


def test_qa_f1_counts_repeated_tokens_once_per_match() -> None:
    # pred [yes, yes, no], gold [yes]: common = min(2, 1) = 1; P = 1/3, R = 1 -> F1 = (2/3)/(4/3) = 0.5
    assert qa_f1_score("yes yes no", "Yes") == pytest.approx(0.5)


def test_qa_f1_no_overlap_and_empty() -> None:
    assert qa_f1_score("London", "Paris") == 0.0
    assert qa_f1_score("", "Paris") == 0.0
    # only an article: normalizes to nothing
    assert qa_f1_score("the", "the") == 0.0


def test_rouge_l_hand_computed() -> None:
    # tokens (lowercased): [the, cat, sat, on, the, mat] vs [the, cat, lay, on, the, mat]
    # LCS = the cat on the mat = 5 -> P = R = 5/6 -> F = 5/6
    assert rouge_score("The cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # [the, cat] vs [the, cat, sat]: LCS 2, P = 1, R = 2/3 -> F = 2*(2/3)/(5/3) = 0.8
    assert rouge_score("The cat.", "the cat sat") == pytest.approx(0.8)
    # LCS is order-sensitive: [b, a] vs [a, b] -> LCS 1, P = R = 1/2 -> F = 0.5
    assert rouge_score("b a", "a b") == pytest.approx(0.5)


def test_rouge_empty_prediction_is_zero() -> None:
    assert rouge_score("", "the cat sat") == 0.0
    assert rouge_score("   ", "the cat sat") == 0.0


def test_score_example_takes_max_over_ground_truths() -> None:
    # vs "Big Ben": 0; vs "London": pred [london, bridge], gold [london] -> P=1/2, R=1 -> 2/3
    assert score_example("hotpotqa", "London bridge", ["Big Ben", "London"]) == pytest.approx(2 / 3)
    assert score_example("hotpotqa", "anything", []) == 0.0


def test_scorer_mean_times_100_rounded() -> None:
    # ex1: max(F1("Paris","paris")=1, F1("Paris","Lyon")=0) = 1; ex2: 2/3 (see above)
    # mean = (1 + 0.6667)/2 = 0.83333 -> x100 -> 83.33
    score = scorer("hotpotqa", ["Paris", "London bridge"], [["paris", "Lyon"], ["Big Ben", "London"]])
    assert score == 83.33


def test_scorer_uses_rouge_for_summaries() -> None:
    # ROUGE-L F = 5/6 (see test_rouge_l_hand_computed) -> 83.33; with qa_f1 it would be
    # [cat, sat, on, mat] vs [cat, lay, on, mat]: 3 common, P = R = 3/4 -> 75.0
    preds, golds = ["The cat sat on the mat"], [["the cat lay on the mat"]]
    assert scorer("govreport", preds, golds) == 83.33
    assert scorer("hotpotqa", preds, golds) == 75.0


def test_task_metric_map_covers_both_names() -> None:
    qa = {"narrativeqa", "qasper", "hotpotqa", "2wikiqa", "2wikimqa", "musique"}
    summ = {"govreport", "gov_report", "qmsum", "multinews", "multi_news"}
    assert {t for t, m in TASK_METRICS.items() if m is qa_f1_score} == qa
    assert {t for t, m in TASK_METRICS.items() if m is rouge_score} == summ


def test_scorer_errors() -> None:
    with pytest.raises(ValueError, match="no LongBench metric"):
        scorer("trec", ["a"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        scorer("qasper", [], [])
    with pytest.raises(ValueError, match="answer lists"):
        scorer("qasper", ["a"], [])
    with pytest.raises(TypeError):
        score_example("qasper", "a", "a")  # type: ignore[arg-type]
