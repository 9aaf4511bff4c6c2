"""Dataset and model cards (README.md) for the Hub, rendered offline from jinja templates.

:func:`render_dataset_card` fills ``templates/dataset_card.md`` through ``huggingface_hub.DatasetCard``:
YAML metadata (license, language, task categories, size category, tags, ``configs`` so that
``load_dataset(repo_id)`` finds the parquet shards), synthesis provenance, statistics, the synthesis
report, the length histogram, a usage snippet and the paper's citation.

:func:`render_model_card` fills ``templates/model_card.md`` through ``huggingface_hub.ModelCard``:
``base_model``, ``datasets``, ``library_name``, ``pipeline_tag``, tags, training hyperparameters, packing
settings, the loss curve and, when given, ``eval_results`` (written as ``model-index``).

Nothing secret reaches a card: :func:`scrub_secrets` drops token/header/password-like keys and strips
credentials and query strings from every URL (see :func:`~hf_context_synthesis.utils.urls.sanitize_url`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from .plots import LENGTH_HISTOGRAM_FILE, LOSS_CURVE_FILE
from ..synthesis.report import excerpt
from ..utils.urls import sanitize_url

PAPER_ARXIV_ID = "2502.15592"
#: Where the cards' "made with" line points: the project's package page.
PROJECT_URL = "https://pypi.org/project/hf-context-synthesis/"
PAPER_TITLE = "Generalizing From Short to Long: Effective Data Synthesis for Long-Context Instruction Tuning"
PAPER_CITATION = """@article{zhu2025generalizing,
  title={Generalizing From Short to Long: Effective Data Synthesis for Long-Context Instruction Tuning},
  author={Zhu, Wenhao and others},
  journal={arXiv preprint arXiv:2502.15592},
  year={2025}
}"""

#: Tags every synthesized dataset carries (plus the user's ``tags``).
DATASET_TAGS = ("synthetic", "long-context", "context-synthesis", "instruction-tuning", f"arxiv:{PAPER_ARXIV_ID}")
#: Tags every tuned model carries (plus the user's ``tags``).
MODEL_TAGS = ("long-context", "context-synthesis", "sft", f"arxiv:{PAPER_ARXIV_ID}")

#: Key names whose values never reach a card.
_SECRET_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|authorization|headers?|cookie)$", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`|)]+")
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")

_GENERATION_KEYS = (
    "api", "context_words", "temperature", "top_p", "max_new_tokens", "max_generation_attempts",
    "require_context_marker", "chunk_words",
)
_COMPOSITION_KEYS = (
    "num_distractors", "target_tokens", "distractor_pool", "relevant_position", "separator",
    "expose_instruction", "task_templates", "tokenizer",
)
_REPORT_KEYS = (
    "seeds", "rejected_rows", "requested", "cached", "generated", "requests", "attempts", "transport_retries",
    "regenerated", "retried", "filtered", "failed", "synthesized", "examples", "tokens_in", "tokens_out",
    "wall_time_s", "requests_per_s",
)
_HYPERPARAMETER_KEYS = (
    "learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "total_train_batch_size", "max_length", "seed",
    "optim", "weight_decay", "bf16", "fp16", "gradient_checkpointing",
)


# ---------------------------------------------------------------------------------------------- secrets
def scrub_text(text: str) -> str:
    """``text`` with every URL sanitized (no ``user:password@``, query or fragment) and ``hf_...`` tokens masked."""
    text = _URL.sub(lambda m: sanitize_url(m.group(0)), text)
    return _TOKEN_LIKE.sub("hf_***", text)


def scrub_secrets(value: Any) -> Any:
    """A copy of ``value`` (nested dicts/lists/strings) safe to publish.

    Keys that name credentials (``token``, ``headers``, ``password``, ``api_key``, ...) are dropped,
    ``endpoint`` values are reduced to their kind, and URLs in strings lose credentials and query strings.
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = str(k)
            if _SECRET_KEY.search(key):
                continue
            if key in ("endpoint", "endpoints"):
                urls = [v] if isinstance(v, str) else list(v or [])
                out[key] = [sanitize_url(u) for u in urls] if urls else None
                continue
            out[key] = scrub_secrets(v)
        return out
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


# ---------------------------------------------------------------------------------------------- statistics
def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1T" if n > 10**12 else "1B<n<10B"


def percentiles(values: Sequence[float], qs: Iterable[int] = (0, 10, 25, 50, 75, 90, 99, 100)) -> dict[str, float]:
    """``{"p50": ...}`` nearest-rank-interpolated percentiles (numpy ``linear``); empty input -> ``{}``."""
    import numpy as np

    if len(values) == 0:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {f"p{q}": float(np.percentile(arr, q)) for q in qs}
    out["mean"] = float(arr.mean())
    return out


def dataset_statistics(ds: Any) -> dict[str, Any]:
    """Counts and length statistics of a synthesized ``datasets.Dataset`` (or a ``{column: list}`` dict).

    Returns ``num_examples``, ``examples_per_task``, ``num_tokens`` percentiles (``p0`` .. ``p100``, ``mean``),
    ``total_tokens``, ``documents_per_example`` and ``generators``; missing columns are skipped.
    """
    columns = set(ds.column_names if hasattr(ds, "column_names") else ds.keys())
    n = len(ds) if hasattr(ds, "column_names") else len(next(iter(ds.values()), []))
    stats: dict[str, Any] = {"num_examples": int(n)}
    if "task" in columns:
        stats["examples_per_task"] = dict(sorted(Counter(ds["task"]).items()))
    if "num_tokens" in columns:
        tokens = [int(t) for t in ds["num_tokens"]]
        stats["num_tokens"] = percentiles(tokens)
        stats["total_tokens"] = int(sum(tokens))
        if "task" in columns:
            per: dict[str, list[int]] = {}
            for task, t in zip(ds["task"], tokens):
                per.setdefault(task, []).append(t)
            stats["num_tokens_per_task"] = {k: percentiles(v, (50,)) for k, v in sorted(per.items())}
    if "num_documents" in columns:
        stats["documents_per_example"] = dict(sorted(Counter(int(d) for d in ds["num_documents"]).items()))
    if "generator" in columns:
        stats["generators"] = sorted({scrub_text(str(g)) for g in ds["generator"]})
    if "context_words" in columns or "relevant_context" in columns:
        words = (
            [int(w) for w in ds["context_words"]]
            if "context_words" in columns
            else [len(str(c or "").split()) for c in ds["relevant_context"]]
        )
        stats["context_words"] = percentiles(words, (0, 50, 100))
    return stats


# ---------------------------------------------------------------------------------------------- helpers
def _template(name: str) -> str:
    return resources.files("hf_context_synthesis").joinpath("templates", name).read_text(encoding="utf-8")


def _fmt(value: Any) -> str:
    """A value for a markdown table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)[1:-1] if any(c in value for c in "\n\t") else value
    else:
        text = str(value)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`" if text else "`\"\"`"


def _rows(d: Mapping[str, Any], keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
    keys = list(keys) if keys is not None else list(d)
    return [(k, _fmt(d[k])) for k in keys if k in d]


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _public_source(source: Any) -> Any:
    """A seed/distractor source as shown in a card: local paths reduced to their last component."""
    if isinstance(source, str) and (source.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", source)):
        return "local: " + re.split(r"[\\/]", source.rstrip("/\\"))[-1]
    return source


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return scrub_secrets(dict(config))


# ---------------------------------------------------------------------------------------------- dataset card
def dataset_card_data(
    *,
    num_examples: int,
    license: str = "other",
    language: str | Sequence[str] = "en",
    pretty_name: str | None = None,
    tags: Sequence[str] = (),
    task_categories: Sequence[str] = ("text-generation", "question-answering"),
    splits: Sequence[str] = ("train",),
    source_datasets: Sequence[str] | None = None,
):
    """The card's YAML metadata as ``huggingface_hub.DatasetCardData``."""
    from huggingface_hub import DatasetCardData

    all_tags = list(dict.fromkeys([*DATASET_TAGS, *tags]))
    return DatasetCardData(
        license=license,
        language=_as_list(language),
        pretty_name=pretty_name,
        task_categories=list(task_categories),
        size_categories=[size_category(num_examples)],
        source_datasets=list(source_datasets) if source_datasets else None,
        tags=all_tags,
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}
        ],
    )


def _md_inline(text: str) -> str:
    """``text`` safe inside a Markdown table cell: Markdown and HTML punctuation backslash-escaped."""
    return re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", text)


def render_dataset_card(
    *,
    repo_id: str,
    statistics: Mapping[str, Any],
    config: Any = None,
    report: Any = None,
    histogram_file: str | None = LENGTH_HISTOGRAM_FILE,
    license: str = "other",
    language: str | Sequence[str] = "en",
    pretty_name: str | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    splits: Sequence[str] = ("train",),
    template_path: str | None = None,
) -> str:
    """Render the dataset card (README.md text) of a synthesized dataset, offline.

    Args:
        repo_id: The dataset's Hub id (used in the usage snippet and title).
        statistics: :func:`dataset_statistics` of the data.
        config: The :class:`~hf_context_synthesis.synthesis.config.SynthesisConfig` (or its ``to_dict()``) used to
            synthesize; secrets are scrubbed either way.
        report: The :class:`~hf_context_synthesis.synthesis.report.SynthesisReport` (or its dict).
        histogram_file: Repo-relative path of the length histogram PNG (``None`` = no figure).
        license / language / pretty_name / tags: Card metadata (tags are added to :data:`DATASET_TAGS`).
        description: A paragraph of your own, shown under the title.
        splits: Splits stored as ``data/<split>-*.parquet`` (the card's ``configs``).
        template_path: A jinja template to use instead of ``templates/dataset_card.md``.
    """
    from huggingface_hub import DatasetCard

    cfg = _config_dict(config)
    rep = scrub_secrets(report.to_dict() if hasattr(report, "to_dict") else dict(report or {}))
    n = int(statistics.get("num_examples", 0))
    seed = cfg.get("seed")
    seed_revision = cfg.get("seed_revision")
    source_datasets = None
    if isinstance(seed, str) and seed and not seed.startswith(("/", ".", "<")) and re.fullmatch(r"[\w.\-]+/[\w.\-]+(@\S+)?", seed):
        source_datasets = [seed.split("@", 1)[0]]
    card_data = dataset_card_data(
        num_examples=n, license=license, language=language, pretty_name=pretty_name or repo_id.split("/")[-1],
        tags=tags, source_datasets=source_datasets, splits=splits,
    )
    tokens = dict(statistics.get("num_tokens") or {})
    token_rows = [(k, _fmt(round(v, 1))) for k, v in tokens.items()]
    prompt_template = str(cfg.get("prompt_template") or "")
    system_prompt = cfg.get("system_prompt")
    generator = cfg.get("generator")
    if statistics.get("generators"):  # what the rows record: the served model, not an endpoint URL
        generator = ", ".join(statistics["generators"])
    provenance = {
        "mode": cfg.get("mode"),
        "seed data": _public_source(seed),
        "seed revision": seed_revision,
        "generator model": generator,
        "generator backend": cfg.get("endpoint_kind"),
        "endpoints": cfg.get("num_endpoints"),
        "random seed": cfg.get("random_seed"),
        "hf-context-synthesis version": cfg.get("package_version"),
    }
    card = _render(
        DatasetCard,
        card_data,
        *_read_template(template_path, "dataset_card.md"),
        repo_id=repo_id,
        splits=list(splits),
        title=pretty_name or repo_id.split("/")[-1],
        description=scrub_text(description) if description else None,
        paper_id=PAPER_ARXIV_ID,
        paper_title=PAPER_TITLE,
        citation=PAPER_CITATION,
        has_config=bool(cfg),
        provenance_rows=[(k, _fmt(v)) for k, v in provenance.items() if v is not None],
        generation_rows=_rows(cfg, _GENERATION_KEYS),
        composition_rows=[
            *_rows(cfg, _COMPOSITION_KEYS[:3]),
            *([("distractor_source", _fmt(_public_source(cfg["distractor_source"])))] if "distractor_source" in cfg else []),
            *_rows(cfg, _COMPOSITION_KEYS[3:]),
        ],
        prompt_template=prompt_template,
        prompt_fence=_fence(prompt_template),
        system_prompt=system_prompt,
        system_fence=_fence(system_prompt or ""),
        num_examples=n,
        total_tokens=statistics.get("total_tokens"),
        task_rows=[(t, _fmt(c)) for t, c in (statistics.get("examples_per_task") or {}).items()],
        token_rows=token_rows,
        per_task_median=[(t, _fmt(round(v.get("p50", 0.0), 1))) for t, v in (statistics.get("num_tokens_per_task") or {}).items()],
        documents_rows=[(str(k), _fmt(v)) for k, v in (statistics.get("documents_per_example") or {}).items()],
        generators=statistics.get("generators") or [],
        report_rows=_rows(rep, _REPORT_KEYS),
        failure_reasons=sorted((rep.get("failure_reasons") or {}).items()),
        filter_reasons=sorted((rep.get("filter_reasons") or {}).items()),
        filter_examples=[
            (reason, count, _md_inline(excerpt((rep.get("filter_examples") or {}).get(reason, ""))))
            for reason, count in sorted((rep.get("filter_reasons") or {}).items())
            if (rep.get("filter_examples") or {}).get(reason)
        ],
        rejected_reasons=sorted((rep.get("rejected_reasons") or {}).items()),
        histogram_file=histogram_file,
        project_url=PROJECT_URL,
        configured_context_words=cfg.get("context_words"),
        measured_context_words=statistics.get("context_words") or {},
    )
    return scrub_text(str(card))


def _render(card_class: Any, card_data: Any, template: str, setting: str = "card template", **kwargs: Any) -> Any:
    """Render ``template`` like ``RepoCard.from_template`` (``card_data`` = the YAML text, the card data's
    fields as variables) but with ``trim_blocks``/``lstrip_blocks`` so block tags leave no blank lines.

    The template renders in jinja2's sandbox without a loader (:mod:`hf_context_synthesis.utils.templates`): an
    unsafe construct or a syntax error raises :class:`~hf_context_synthesis.utils.templates.PromptTemplateError`
    naming ``setting`` (the template file)."""
    from ..utils.templates import PromptTemplateError, compile_template, refuse_private_attributes, render_error, render_template

    variables = card_data.to_dict().copy()
    variables.update(kwargs)
    variables["card_data"] = card_data.to_yaml()
    compiled = compile_template(template, setting, strict=False, trim_blocks=True)
    try:
        content = render_template(compiled, variables, setting)
    except PromptTemplateError:
        raise
    except Exception as err:  # noqa: BLE001 - a failing user template, in one line naming its file
        raise render_error(setting, err) from None
    refuse_private_attributes(template, setting, strict=False, trim_blocks=True)
    return card_class(content)


def _read_template(template_path: str | None, default_name: str) -> tuple[str, str]:
    """``(template text, setting name for errors)``: the file at ``template_path`` or the packaged default."""
    if template_path is not None:
        with open(template_path, encoding="utf-8") as fh:
            return fh.read(), f"template_path {os.fspath(template_path)!r}"
    return _template(default_name), f"card template {default_name}"


# ---------------------------------------------------------------------------------------------- model card
#: What each token / row total of a training run counts (``packing_stats`` of
#: ``context_synthesis_training.json``), in the order the model card shows them.
TOKEN_TOTALS: dict[str, str] = {
    "source_rows": "rows of the training data read",
    "num_examples": "examples given to packing",
    "num_truncated": "examples shortened to fit max_length (distractor documents dropped or cut; the answer, "
                     "instruction and relevant document kept)",
    "num_dropped": "examples that could not fit max_length and were not trained on",
    "drop_reasons": "dropped examples per reason",
    "num_rows": "packed rows: several examples share one row of at most max_length tokens",
    "max_length": "tokens per packed row (the row budget)",
    "real_tokens": "all tokens of the kept examples: prompt, documents and answer (what the model reads)",
    "answer_tokens": "tokens of the answers: the loss is computed on these only (prompts and documents are input)",
    "row_tokens": "tokens of the packed rows (rows are not padded: equal to real_tokens)",
    "efficiency": "real_tokens / (num_rows x max_length): how full the rows are",
    "num_padding_rows": "rows of one pad token and no loss, added so every rank gets whole steps",
    "trained_real_tokens": "tokens that went through the model during training, over all steps and epochs",
    "trained_batch_tokens": "trained tokens including the padding a batch needed (padding-free batches: no padding)",
    "padding_efficiency": "collated real tokens / collated batch tokens (1.0 = no padding)",
    "collated_real_tokens": "tokens the data collator built into batches (a prefetched batch included)",
    "collated_batch_tokens": "collated tokens including padding",
    "rank0_collated_real_tokens": "collated_real_tokens of the first rank alone",
    "rank0_collated_batch_tokens": "collated_batch_tokens of the first rank alone",
    "world_size": "processes (ranks) that trained",
    "num_ranks": "ranks the rows were arranged for (0: not arranged)",
    "balance_ratio": "mean / max attention cost per rank and step (1.0 = evenly spread)",
    "scope": "global: counts over the whole dataset; rank: what one process of a stream packed",
}


def token_total_rows(packing_stats: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """``(statistic, value, what it counts)`` rows of a run's packing statistics: the totals of
    :data:`TOKEN_TOTALS` first, in that order, then any other statistic (without an explanation)."""
    stats = dict(packing_stats or {})
    rows = []
    for key in [k for k in TOKEN_TOTALS if k in stats] + sorted(k for k in stats if k not in TOKEN_TOTALS):
        value = stats[key]
        if key == "drop_reasons":
            if not value:
                continue
            shown = ", ".join(f"{reason}: {count:,}" for reason, count in sorted(value.items()))
        else:
            shown = _fmt(value)
        rows.append((key, shown, TOKEN_TOTALS.get(key, "")))
    return rows


def training_data_rows(
    dataset: Any,
    packing_stats: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """``(what, value)`` rows describing a model's training data: where it came from (the dataset's Hub
    id, or the last component of a local path), how many rows and examples were trained on, and, from the
    dataset's ``synthesis_report.json`` / ``synthesis_config.json`` when known, the seeds behind it."""
    stats = dict(packing_stats or {})
    rows: list[tuple[str, str]] = []
    if dataset:
        rows.append(("dataset", _fmt(_public_source(str(dataset)))))
    if stats.get("source_rows") is not None:
        rows.append(("rows read", _fmt(stats["source_rows"])))
    if stats.get("num_examples") is not None:
        kept = int(stats["num_examples"]) - int(stats.get("num_dropped") or 0)
        rows.append(("examples trained on", f"{kept:,} of {int(stats['num_examples']):,} "
                                           f"({int(stats.get('num_truncated') or 0):,} truncated to fit)"))
    if stats.get("num_rows") is not None:
        rows.append(("packed rows", _fmt(stats["num_rows"])))
    config, report = dict(config or {}), dict(report or {})
    if config.get("seed") is not None:
        rows.append(("seed data", _fmt(_public_source(config["seed"]))))
    if report.get("seeds") is not None:
        rows.append(("seed pairs", f"{int(report['seeds']):,} read, {int(report.get('synthesized') or 0):,} with a "
                                   f"synthesized context, {int(report.get('failed') or 0):,} failed"))
    if report.get("examples") is not None:
        rows.append(("synthesized examples", _fmt(report["examples"])))
    if config.get("generator_model") or report.get("generator"):
        rows.append(("context generator", _fmt(scrub_text(str(config.get("generator_model") or report.get("generator"))))))
    return rows


def model_card_data(
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    license: str | None = None,
    language: str | Sequence[str] | None = "en",
    tags: Sequence[str] = (),
    eval_results: Sequence[Any] | None = None,
):
    """The card's YAML metadata as ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=_as_list(datasets) or None,
        license=license,
        language=_as_list(language) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*MODEL_TAGS, *tags])),
        eval_results=list(eval_results) if eval_results else None,
    )


def render_model_card(
    *,
    repo_id: str,
    base_model: str | None = None,
    dataset_repo_id: str | Sequence[str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    packing: Mapping[str, Any] | None = None,
    packing_stats: Mapping[str, Any] | None = None,
    eval_results: Sequence[Any] | None = None,
    loss_curve_file: str | None = LOSS_CURVE_FILE,
    final_loss: float | None = None,
    train_steps: int | None = None,
    license: str | None = None,
    language: str | Sequence[str] | None = "en",
    tags: Sequence[str] = (),
    description: str | None = None,
    framework_versions: Mapping[str, str] | None = None,
    template_path: str | None = None,
    training_data: Sequence[tuple[str, str]] | None = None,
    other_eval_results: Sequence[Any] | None = None,
) -> str:
    """Render the model card (README.md text) of a model tuned on synthesized data, offline.

    Args:
        repo_id: The model's Hub id (``model_name`` and usage snippet).
        base_model: Hub id of the model that was fine-tuned.
        dataset_repo_id: Hub id(s) of the synthesized training data (YAML ``datasets``).
        hyperparameters: Training hyperparameters (learning rate, schedule, batch sizes, ...).
        packing / packing_stats: Packing settings and the measured packing statistics (shown with what
            each total counts, :data:`TOKEN_TOTALS`).
        eval_results: ``huggingface_hub.EvalResult`` list (written as ``model-index``), e.g.
            :meth:`~hf_context_synthesis.evaluation.longbench_v1.EvalReport.eval_results`.
        loss_curve_file: Repo-relative path of the loss PNG (``None`` = no figure).
        final_loss / train_steps: Shown in the training summary when known.
        license / language / tags: Card metadata (tags are added to :data:`MODEL_TAGS`).
        description: A paragraph of your own, shown under the title.
        framework_versions: ``{library: version}`` (default: the installed transformers, trl, torch,
            datasets, huggingface_hub and hf-context-synthesis).
        template_path: A jinja template to use instead of ``templates/model_card.md``.
        training_data: ``(what, value)`` rows about the training data (:func:`training_data_rows`).
        other_eval_results: ``EvalResult`` list shown in the card's evaluation table but kept out of the
            ``model-index`` metadata (checks on held-out synthesized examples, not a benchmark).
    """
    from huggingface_hub import ModelCard

    model_name = repo_id.split("/")[-1]
    card_data = model_card_data(
        model_name=model_name, base_model=base_model, datasets=dataset_repo_id, license=license,
        language=language, tags=tags, eval_results=eval_results,
    )
    hp = scrub_secrets(dict(hyperparameters or {}))
    ordered = [k for k in _HYPERPARAMETER_KEYS if k in hp] + sorted(k for k in hp if k not in _HYPERPARAMETER_KEYS)
    shown_results = [*(eval_results or []), *(other_eval_results or [])]  # the card's table: both kinds
    eval_rows = [
        (
            _fmt(r.dataset_name), _fmt(r.metric_name or r.metric_type),
            _fmt(float(r.metric_value) if isinstance(r.metric_value, (int, float)) else r.metric_value),
        )
        for r in shown_results
    ]
    card = _render(
        ModelCard,
        card_data,
        *_read_template(template_path, "model_card.md"),
        repo_id=repo_id,
        title=model_name,
        description=scrub_text(description) if description else None,
        base_model_id=base_model,
        dataset_ids=_as_list(dataset_repo_id),
        project_url=PROJECT_URL,
        paper_id=PAPER_ARXIV_ID,
        paper_title=PAPER_TITLE,
        citation=PAPER_CITATION,
        hyperparameter_rows=[(k, _fmt(hp[k])) for k in ordered],
        packing_rows=_rows(scrub_secrets(dict(packing or {}))),
        packing_stats_rows=token_total_rows(scrub_secrets(dict(packing_stats or {}))),
        training_data_rows=[(k, scrub_text(v)) for k, v in (training_data or [])],
        eval_rows=eval_rows,
        eval_not_longbench=any(not str(r.dataset_name).startswith("LongBench") for r in shown_results),
        loss_curve_file=loss_curve_file,
        final_loss=_fmt(final_loss) if final_loss is not None else None,
        train_steps=train_steps,
        framework_rows=sorted((framework_versions if framework_versions is not None else _framework_versions()).items()),
    )
    return scrub_text(str(card))


def _framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hf-context-synthesis", "transformers", "trl", "torch", "datasets", "huggingface_hub"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
