"""LongBench metrics: hand-worked values, and equality with LongBench's own scoring code
(``tests/longbench_reference.py``, vendored from THUDM/LongBench) on a fixed set of pairs per task."""

from __future__ import annotations

import pytest

from hf_context_synthesis.evaluation.metrics import (
    TASK_METRICS,
    f1_score,
    normalize_answer,
    qa_f1_score,
    rouge_score,
    rouge_score_google,
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


def test_rouge_score_google_hand_computed() -> None:
    rouge_score = rouge_score_google  # Google's rouge-score, the option (not LongBench's number)
    # tokens (lowercased): [the, cat, sat, on, the, mat] vs [the, cat, lay, on, the, mat]
    # LCS = the cat on the mat = 5 -> P = R = 5/6 -> F = 5/6
    assert rouge_score("The cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # [the, cat] vs [the, cat, sat]: LCS 2, P = 1, R = 2/3 -> F = 2*(2/3)/(5/3) = 0.8
    assert rouge_score("The cat.", "the cat sat") == pytest.approx(0.8)
    # LCS is order-sensitive: [b, a] vs [a, b] -> LCS 1, P = R = 1/2 -> F = 0.5
    assert rouge_score("b a", "a b") == pytest.approx(0.5)


def test_rouge_empty_prediction_is_zero() -> None:
    for metric in (rouge_score, rouge_score_google):
        assert metric("", "the cat sat") == 0.0
        assert metric("   ", "the cat sat") == 0.0
    assert rouge_score("...", "the cat sat") == 0.0  # rouge raises "Hypothesis is empty" -> 0


def test_rouge_is_longbench_rouge_package_with_its_quirks() -> None:
    from rouge import Rouge

    # case and attached punctuation count: "The" != "the", "mat." != "mat"
    assert rouge_score("The cat sat on the mat.", "the cat sat on the mat") < 1.0
    assert rouge_score_google("The cat sat on the mat.", "the cat sat on the mat") == pytest.approx(1.0)
    pred, gold = "the cat sat. the dog ran.", "the dog ran. the cat sat."
    assert rouge_score(pred, gold) == Rouge().get_scores([pred], [gold], avg=True)["rouge-l"]["f"]


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
    # rouge-score ROUGE-L F = 5/6 (see test_rouge_score_google_hand_computed) -> 83.33; with qa_f1 it
    # would be [cat, sat, on, mat] vs [cat, lay, on, mat]: 3 common, P = R = 3/4 -> 75.0
    preds, golds = ["The cat sat on the mat"], [["the cat lay on the mat"]]
    assert scorer("govreport", preds, golds, summarization_metric="rouge-score") == 83.33
    assert scorer("govreport", preds, golds) == round(100 * rouge_score(preds[0], golds[0][0]), 2) != 83.33
    assert scorer("hotpotqa", preds, golds) == 75.0
    with pytest.raises(ValueError, match="summarization_metric"):
        scorer("qmsum", preds, golds, summarization_metric="bleu")


def test_task_metric_map_covers_both_names() -> None:
    qa = {"narrativeqa", "qasper", "hotpotqa", "2wikiqa", "2wikimqa", "musique"}
    summ = {"govreport", "gov_report", "qmsum", "multinews", "multi_news"}
    assert {t for t, m in TASK_METRICS.items() if m is qa_f1_score} == qa
    assert {t for t, m in TASK_METRICS.items() if m is rouge_score} == summ


# ----------------------------------------------------------------------------- equality with LongBench's code

_SENTENCES = [
    "The Government Accountability Office reviewed the agency's spending on information technology.",
    "It found that 12 of the 24 major projects were over budget, some by more than 40 percent.",
    "Officials said the delays were caused by changing requirements and staff turnover.",
    "The committee asked whether the new oversight board would meet before the end of the year.",
    "Dr. Smith, the project manager, disagreed: she argued that the U.S. contracts were well run!",
    "Meanwhile, the marketing team presented a remote control design with a rubber case.",
    "Analysts expect revenue to grow, although costs (mainly fuel) rose sharply in 2019.",
    "The meeting ended with a decision to test the prototype on the users next week.",
]


def _pairs(rng) -> list[tuple[str, list[str]]]:
    """Prediction / answers pairs covering the cases LongBench's rouge package treats specially."""
    gold = " ".join(_SENTENCES)
    shuffled = _SENTENCES[:]
    rng.shuffle(shuffled)
    long_pred = " ".join(rng.choice(_SENTENCES) for _ in range(40))  # a long (repetitive) summary
    words = gold.split()
    return [
        (gold, [gold]),  # identical
        (" ".join(shuffled), [gold]),  # shuffled sentences
        (" ".join(_SENTENCES[:3] * 4), [gold]),  # repeated sentences
        (gold.upper(), [gold]),  # case
        (gold.replace(".", "").replace(",", ""), [gold]),  # punctuation removed (one "sentence")
        (gold.replace(" ", "  ").replace(".", " ."), [gold]),  # spacing / detached punctuation
        (long_pred, [gold, " ".join(shuffled[:2])]),  # long prediction, several answers
        (" ".join(rng.sample(words, len(words) // 2)), [gold]),  # shuffled words
        ("", [gold]),  # empty prediction
        ("   \n ", [gold]),  # whitespace only
        ("...", [gold]),  # punctuation only
        ("The U.S.", ["the US", "United States"]),  # short QA-style answers
        ("In 2019, fuel costs rose.", ["fuel (costs) rose in 2019"]),
        ("Dr. Smith", ["Smith"]),
        ("an answer", ["the answer", "An Answer!"]),
        ("yes yes yes", ["yes"]),
    ]


@pytest.mark.parametrize(
    "longbench_name", ["narrativeqa", "qasper", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum", "multi_news"]
)
def test_scores_equal_longbench_code(longbench_name: str) -> None:
    """Per pair and per task average, our score == LongBench's metrics.py/eval.py, to 2 decimals."""
    import random

    import longbench_reference as ref

    from hf_context_synthesis.evaluation.longbench_tasks import canonical_task

    pairs = _pairs(random.Random(longbench_name))
    ours_task = canonical_task(longbench_name)
    for pred, answers in pairs:
        expected = max([0.0] + [ref.dataset2metric[longbench_name](pred, a, all_classes=None) for a in answers])
        got = score_example(ours_task, pred, answers)
        assert round(100 * got, 2) == round(100 * expected, 2), (pred[:60], answers[0][:60])
    preds, golds = [p for p, _ in pairs], [a for _, a in pairs]
    assert scorer(ours_task, preds, golds) == ref.scorer(longbench_name, preds, golds, None)
    assert scorer(longbench_name, preds, golds) == ref.scorer(longbench_name, preds, golds, None)


def test_rouge_score_option_differs_from_longbench() -> None:
    """The rouge-score option is really another number on these pairs (why it is not the default)."""
    import random

    import longbench_reference as ref

    pairs = _pairs(random.Random(0))
    preds, golds = [p for p, _ in pairs], [a for _, a in pairs]
    assert scorer("qmsum", preds, golds, summarization_metric="rouge-score") != ref.scorer("qmsum", preds, golds, None)


def test_scorer_errors() -> None:
    with pytest.raises(ValueError, match="no LongBench metric"):
        scorer("trec", ["a"], [["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        scorer("qasper", [], [])
    with pytest.raises(ValueError, match="answer lists"):
        scorer("qasper", ["a"], [])
    with pytest.raises(TypeError):
        score_example("qasper", "a", "a")  # type: ignore[arg-type]
