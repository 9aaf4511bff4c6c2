"""Dataset/model cards and plots, offline: YAML round trips, statistics, provenance, secret scrubbing."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest

from hf_context_synthesis.hub.cards import (
    dataset_card_data,
    dataset_statistics,
    percentiles,
    render_dataset_card,
    render_model_card,
    scrub_secrets,
    size_category,
)

TOKEN = "hf_" + secrets.token_hex(16)
PASSWORD = "pw" + secrets.token_hex(6)
KEY = "k" + secrets.token_hex(6)
ENDPOINT = f"https://user:{PASSWORD}@tgi.example.org:8443/generate?key={KEY}#frag"


def _rows(n_per_task: dict[str, int], seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    tasks = [t for t, n in n_per_task.items() for _ in range(n)]
    return {
        "task": tasks,
        "num_tokens": [int(x) for x in rng.integers(500, 30_000, size=len(tasks))],
        "num_documents": [10] * (len(tasks) - 1) + [4],
        "generator": ["org/gen-model"] * len(tasks),
    }


def _dataset(n_per_task: dict[str, int]):
    import datasets

    return datasets.Dataset.from_dict(_rows(n_per_task))


def test_statistics_match_numpy():
    ds = _dataset({"hotpotqa": 7, "qasper": 5})
    stats = dataset_statistics(ds)
    assert stats["num_examples"] == 12
    assert stats["examples_per_task"] == {"hotpotqa": 7, "qasper": 5}
    tokens = np.array(ds["num_tokens"])
    assert stats["num_tokens"]["p50"] == pytest.approx(np.percentile(tokens, 50))
    assert stats["num_tokens"]["p90"] == pytest.approx(np.percentile(tokens, 90))
    assert stats["num_tokens"]["p0"] == tokens.min() and stats["num_tokens"]["p100"] == tokens.max()
    assert stats["total_tokens"] == tokens.sum()
    assert stats["documents_per_example"] == {4: 1, 10: 11}
    assert stats["num_tokens_per_task"]["qasper"]["p50"] == pytest.approx(np.median(tokens[7:]))
    assert percentiles([]) == {}


@pytest.mark.parametrize(("n", "category"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (54_321, "10K<n<100K"),
                                             (2_000_000, "1M<n<10M")])
def test_size_categories(n, category):
    assert size_category(n) == category


def _card(**kwargs) -> str:
    from hf_context_synthesis import SynthesisConfig, SynthesisReport

    # the endpoint's bearer token (``endpoint_token``; ``token`` before issue 9 renamed it)
    secret = {"endpoint_token" if "endpoint_token" in SynthesisConfig.__dataclass_fields__ else "token": TOKEN}
    config = kwargs.pop("config", None) or SynthesisConfig(
        seed="THUDM/LongBench", seed_revision="v1.0", endpoint=ENDPOINT, **secret,
        headers={"Authorization": f"Bearer {TOKEN}"}, random_seed=1234, num_distractors=5,
    )
    report = SynthesisReport(seeds=12, requested=12, generated=11, cached=1, retried=3, failed=1, synthesized=11,
                             examples=11, failure_reasons={"http_503": 1}, filter_reasons={"missing_context_marker": 2})
    stats = dataset_statistics(_dataset({"hotpotqa": 7, "qasper": 5}))
    return render_dataset_card(repo_id="org/ctx-data", statistics=stats, config=config, report=report, **kwargs)


def test_dataset_card_yaml_round_trips_through_dataset_card_data():
    from huggingface_hub import DatasetCard, DatasetCardData

    text = _card(license="apache-2.0", language=["en", "de"], tags=["demo"])
    card = DatasetCard(text)
    expected = dataset_card_data(num_examples=12, license="apache-2.0", language=["en", "de"], tags=["demo"],
                                 pretty_name="ctx-data", source_datasets=["THUDM/LongBench"])
    assert card.data.to_dict() == expected.to_dict()
    again = DatasetCardData(**card.data.to_dict())
    assert again.to_dict() == card.data.to_dict()
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert {"synthetic", "long-context", "demo"} <= set(card.data.tags)
    assert card.data.task_categories == ["text-generation", "question-answering"]


def test_dataset_card_body_holds_provenance_statistics_report_and_citation():
    from hf_context_synthesis import __version__
    from hf_context_synthesis.synthesis.prompts import DEFAULT_PROMPT_TEMPLATE

    text = _card()
    assert "| seed data | `THUDM/LongBench@v1.0` |" in text and "| seed revision | `v1.0` |" in text
    assert "| generator model | `org/gen-model` |" in text and "| generator backend | `tgi` |" in text
    assert "| random seed | 1,234 |" in text and f"| hf-context-synthesis version | `{__version__}` |" in text
    assert "| num_distractors | 5 |" in text and "| temperature | 0.8 |" in text
    assert DEFAULT_PROMPT_TEMPLATE.strip() in text
    assert "| hotpotqa | 7 |" in text and "| qasper | 5 |" in text and "| p90 |" in text
    assert "| retried | 3 |" in text and "| failed | 1 |" in text and "`http_503` 1" in text
    assert "`missing_context_marker` 2" in text
    assert "![Example length histogram](length_histogram.png)" in text
    assert "arXiv:2502.15592" in text and "zhu2025generalizing" in text
    assert 'load_dataset("org/ctx-data", split="train")' in text


def test_dataset_card_shows_an_excerpt_of_a_rejected_output_per_reason():
    from hf_context_synthesis import SynthesisReport
    from hf_context_synthesis.utils.secrecy import register_secret

    register_secret(TOKEN)
    report = SynthesisReport(seeds=3, requested=3, generated=5, synthesized=2, failed=1, examples=2)
    report.note_filtered("missing_context_marker", "Context: [MISSING] Question: who? | Answer: `x` <b>", (0, 0))
    report.note_filtered("repetitive", "A. " * 300 + TOKEN, (1, 0))
    report.note_filtered("repetitive", "A. A.", (2, 0))
    stats = dataset_statistics(_dataset({"hotpotqa": 2}))
    from hf_context_synthesis import SynthesisConfig

    text = render_dataset_card(repo_id="org/ctx-data", statistics=stats, config=SynthesisConfig(seed="s"), report=report)
    assert "| Reason | Outputs | Example of a rejected output |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `missing_context_marker`") or line.startswith("| `repetitive`")]
    assert len(rows) == 2, rows
    marker_row, repetitive_row = sorted(rows)
    # Markdown/HTML punctuation escaped, so the row stays one table row of three cells
    assert marker_row == r"| `missing_context_marker` | 1 | Context: \[MISSING\] Question: who? \| Answer: \`x\` \<b\> |"
    assert repetitive_row.startswith("| `repetitive` | 2 | A. A. A.") and TOKEN not in text
    assert len(repetitive_row) < 260


def test_dataset_card_never_shows_credentials_or_the_endpoint():
    text = _card(description=f"Made with {ENDPOINT} and {TOKEN}.")
    for secret in (TOKEN, PASSWORD, KEY, "#frag", "tgi.example.org:8443/generate?"):
        assert secret not in text
    # the free-text URL is kept, without credentials or query
    assert "Made with https://tgi.example.org:8443/generate and hf_***." in text


def test_scrub_secrets_drops_credential_keys_and_sanitizes_urls():
    out = scrub_secrets({"token": TOKEN, "api_key": KEY, "headers": {"a": "b"}, "endpoint": ENDPOINT,
                         "nested": [{"url": ENDPOINT, "hub_token": TOKEN}], "note": f"token {TOKEN}"})
    assert out == {"endpoint": ["https://tgi.example.org:8443/generate"],
                   "nested": [{"url": "https://tgi.example.org:8443/generate"}], "note": "token hf_***"}


def test_custom_prompt_with_backticks_gets_a_longer_fence_and_local_seed_paths_are_shortened():
    from hf_context_synthesis import SynthesisConfig

    template = "Write ```code``` context for {{ instruction }} -> {{ answer }}"
    config = SynthesisConfig(seed="/home/alice/private/seeds", prompt_template=template)
    text = _card(config=config)
    assert f"````jinja\n{template}\n````" in text
    assert "/home/alice" not in text and "| seed data | `local: seeds` |" in text
    assert "| generator backend | `transformers` |" in text


def test_dataset_card_lists_every_split_and_honours_a_custom_template(tmp_path):
    from huggingface_hub import DatasetCard

    custom = tmp_path / "t.md"
    custom.write_text("---\n{{ card_data }}\n---\n\nRows: {{ num_examples }} in {{ splits | join('+') }}\n")
    text = _card(splits=["train", "test"], template_path=str(custom))
    card = DatasetCard(text)
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                 {"split": "test", "path": "data/test-*"}]
    assert card.text.strip() == "Rows: 12 in train+test"


def test_model_card_metadata_and_eval_results_round_trip():
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    results = [
        EvalResult(task_type="text-generation", task_name="Long-context understanding", dataset_type="THUDM/LongBench",
                   dataset_name=f"LongBench ({cfg})", dataset_config=cfg, dataset_split="test", metric_type=mt,
                   metric_name=mn, metric_value=v)
        for cfg, mt, mn, v in [("hotpotqa", "f1", "F1", 41.25), ("gov_report", "rouge", "ROUGE-L", 22.5)]
    ]
    text = render_model_card(
        repo_id="org/llama-long", base_model="meta-llama/Llama-3.2-1B-Instruct", dataset_repo_id="org/ctx-data",
        hyperparameters={"learning_rate": 1e-5, "num_train_epochs": 2, "token": TOKEN, "seed": 7},
        packing={"packing_strategy": "bfd", "max_length": 32768}, packing_stats={"efficiency": 0.981},
        eval_results=results, final_loss=1.5, train_steps=40, license="llama3.2", tags=["demo"],
        framework_versions={"transformers": "5.24.0"},
    )
    card = ModelCard(text)
    data = card.data
    assert data.base_model == "meta-llama/Llama-3.2-1B-Instruct" and data.datasets == ["org/ctx-data"]
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert {"long-context", "demo"} <= set(data.tags) and data.license == "llama3.2"
    name, back = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "llama-long" and back == results
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()
    body = card.text
    assert "| learning_rate | 1e-05 |" in body and "| num_train_epochs | 2 |" in body and "| seed | 7 |" in body
    assert TOKEN not in text and "| packing_strategy | `bfd` |" in body and "| max_length | 32,768 |" in body
    assert "| `LongBench (hotpotqa)` | `F1` | 41.25 |" in body and "![Training loss](training_loss.png)" in body
    assert "Optimizer steps: 40." in body and "- transformers 5.24.0" in body
    assert 'AutoModelForCausalLM.from_pretrained("org/llama-long")' in body


def test_model_card_without_optional_parts():
    from huggingface_hub import ModelCard

    text = render_model_card(repo_id="org/m", loss_curve_file=None, framework_versions={})
    card = ModelCard(text)
    assert card.data.base_model is None and card.data.to_dict().get("model-index") is None
    assert "Training loss" not in card.text and "Not recorded." in card.text and "## Evaluation" not in card.text


def test_plots_write_pngs(tmp_path):
    import matplotlib.image

    from hf_context_synthesis.hub.plots import loss_points, plot_length_histogram, plot_loss_curve

    hist = plot_length_histogram({"a": [100, 200, 300], "b": [150]}, tmp_path / "h.png")
    single = plot_length_histogram([42, 42], tmp_path / "s.png")  # one distinct value
    empty = plot_length_histogram([], tmp_path / "e.png")
    for path in (hist, single, empty):
        image = matplotlib.image.imread(path)
        assert image.shape[0] == 400 and image.shape[1] == 700
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "learning_rate": 1e-4}, {"step": 2, "loss": 2.0},
               {"step": 2, "eval_loss": 2.5}, {"train_loss": 2.5, "step": 2}]
    assert loss_points(history) == [(1.0, 3.0), (2.0, 2.0)]
    assert plot_loss_curve(history, tmp_path / "l.png") == str(tmp_path / "l.png")
    assert (tmp_path / "l.png").read_bytes().startswith(b"\x89PNG")
    assert plot_loss_curve([{"step": 1, "learning_rate": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_cards_link_the_project_and_state_context_length_measured_and_configured():
    from hf_context_synthesis.hub.cards import PROJECT_URL, dataset_statistics, render_dataset_card, render_model_card

    stats = dataset_statistics({"relevant_context": ["word " * 120, "word " * 80, "word " * 100], "task": ["a", "a", "b"]})
    assert stats["context_words"]["p50"] == 100.0
    card = render_dataset_card(repo_id="you/d", statistics=stats, config={"context_words": 150})
    assert "150 words asked for (`context_words`); 100 words measured (median; 80-120)" in card
    assert "two thousand" not in card and f"Made with [hf-context-synthesis]({PROJECT_URL})" in card
    assert f"Made with [hf-context-synthesis]({PROJECT_URL})" in render_model_card(repo_id="you/m")


def test_model_card_records_the_training_data_and_explains_the_token_totals():
    from hf_context_synthesis.hub.cards import TOKEN_TOTALS, training_data_rows

    stats = {"source_rows": 120, "num_examples": 118, "num_truncated": 9, "num_dropped": 3,
             "drop_reasons": {"core_too_long": 3}, "num_rows": 20, "real_tokens": 61234, "answer_tokens": 2345,
             "max_length": 4096, "efficiency": 0.747, "made_up_total": 5}
    rows = training_data_rows("/home/me/runs/x/dataset", stats,
                              report={"seeds": 120, "synthesized": 117, "failed": 3, "examples": 118},
                              config={"seed": "/data/seeds", "generator_model": "org/generator"})
    text = render_model_card(repo_id="org/m", packing_stats=stats, training_data=rows, framework_versions={})
    # where the data came from (a local path only by its last component), how much of it, and its seeds
    assert "| dataset | `local: dataset` |" in text and "/home/me" not in text
    assert "| examples trained on | 115 of 118 (9 truncated to fit) |" in text
    assert "| seed pairs | 120 read, 117 with a synthesized context, 3 failed |" in text
    assert "| seed data | `local: seeds` |" in text and "| context generator | `org/generator` |" in text
    # every total with what it counts: answer tokens (the loss) vs all tokens, packed rows, padding
    assert f"| answer_tokens | 2,345 | {TOKEN_TOTALS['answer_tokens']} |" in text
    assert f"| real_tokens | 61,234 | {TOKEN_TOTALS['real_tokens']} |" in text
    assert f"| num_rows | 20 | {TOKEN_TOTALS['num_rows']} |" in text
    assert "| drop_reasons | core_too_long: 3 |" in text and "| made_up_total | 5 |  |" in text
    assert text.index("| source_rows |") < text.index("| real_tokens |") < text.index("| made_up_total |")
    assert "loss is computed on the answer tokens only" in text and "Not recorded." not in text


def _training_folder(folder: Path, tiny: str) -> Path:
    import shutil

    shutil.copytree(tiny, folder)
    (folder / "context_synthesis_training.json").write_text(json.dumps({
        "base_model": "org/base", "dataset": str(folder.parent / "train_data"),
        "packing_stats": {"source_rows": 4, "num_examples": 4, "num_dropped": 0, "num_rows": 2,
                          "real_tokens": 900, "answer_tokens": 40}}))
    return folder


def test_the_card_of_a_trained_folder_shows_the_evaluation_of_that_model_found_beside_it(tmp_path, tiny_model_dir):
    from hf_context_synthesis.evaluation.longbench_v1 import EvalReport, TaskScore
    from hf_context_synthesis.hub.artifacts import refresh_model_card, write_model_card

    run = tmp_path / "run"
    model = _training_folder(run / "model", tiny_model_dir)
    assert "## Evaluation" not in write_model_card(model).read_text()
    ours = EvalReport(model_id=str(model), tasks={"hotpotqa": TaskScore(task="hotpotqa", metric="F1", score=12.5,
                                                                         num_examples=4)},
                      settings={"label": "held-out synthesized"})
    ours.save(run / "eval" / "holdout")
    other = EvalReport(model_id=str(tmp_path / "another-model"),
                       tasks={"qasper": TaskScore(task="qasper", metric="F1", score=99.0, num_examples=4)}, settings={})
    other.save(run / "eval" / "other")
    card = refresh_model_card(model).read_text()
    assert "## Evaluation" in card and "| 12.5 |" in card and "hotpotqa" in card
    # a check on held-out synthesized examples is shown, but never published as benchmark metadata
    assert "model-index" not in card.split("---")[1] and "not LongBench results" in card
    assert "99" not in card  # results of another model are not this model's
    assert refresh_model_card(tmp_path / "not-ours") is None  # a folder we did not train is left alone


def test_length_histogram_bars_have_edges(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    from hf_context_synthesis.hub.plots import plot_length_histogram

    seen, yticks = [], []
    save = Figure.savefig

    def spy(self, *args, **kwargs):
        seen.extend(p for ax in self.axes for p in ax.patches)
        yticks.extend(t for ax in self.axes for t in ax.get_yticks())
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    plot_length_histogram({"a": [100, 200, 300], "b": [150, 160]}, tmp_path / "h.png")
    assert yticks and all(float(t).is_integer() for t in yticks)  # counts of examples: whole numbers only
    bars = [p for p in seen if p.get_height() > 0]
    assert bars and all(p.get_linewidth() > 0 and p.get_edgecolor() != p.get_facecolor() for p in bars)
    assert all(to_rgba(p.get_edgecolor())[3] > 0 for p in bars)  # a visible edge, not a transparent one
