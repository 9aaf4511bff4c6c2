"""The whole method in one run: synthesize -> train with packing -> evaluate -> push.

A recipe is a YAML file with one section per step (see ``examples/configs/``)::

    output_dir: runs/smoke
    synthesis:   {...}   # SynthesisConfig fields
    training:    {...}   # TrainingJobArguments fields (model, max_length, ...) and SFTConfig fields
    evaluation:  {...}   # data_dir (LongBench-format jsonl) and/or holdout_per_task; tasks, limit, max_length
    hub:         {...}   # dataset_repo_id, model_repo_id, private (omit the section to skip pushing)

``context-synthesis run RECIPE.yaml`` runs it; ``--steps`` picks steps, ``--set section.key=value``
overrides single settings (e.g. ``--set synthesis.endpoint=http://tgi:8080``). Every step writes
into ``output_dir`` (``dataset/``, ``model/``, ``eval/``) and a later step reads what an earlier one
wrote, so steps can be re-run one at a time; synthesis resumes from its generation cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STEPS: tuple[str, ...] = ("synthesize", "train", "evaluate", "push")


@dataclass
class RecipeConfig:
    """An end-to-end run.

    Args:
        output_dir: Folder for everything the run writes: ``dataset/`` (parquet shards, report),
            ``model/`` (the tuned model), ``eval/`` (results, predictions), ``holdout/`` (held-out
            examples in LongBench format), ``generations/`` (the generation cache, unless
            ``synthesis.generation_cache_dir`` is set).
        synthesis: :class:`~hf_context_synthesis.config.SynthesisConfig` fields.
        training: ``TrainingJobArguments`` fields (``model``, ``max_length``, ``loss_weighting``, ...) and
            ``trl.SFTConfig`` fields (``learning_rate``, ``num_train_epochs``, ...) in one mapping.
        evaluation: ``data_dir`` (LongBench-format ``<task>.jsonl`` files) for the LongBench evaluation;
            ``holdout_per_task`` (N > 0) keeps N synthesized examples per task out of training and
            evaluates on them in LongBench format (a smoke check, not LongBench); ``tasks``, ``limit``,
            ``max_length``, ``batch_size`` as in ``context-synthesis evaluate``. Empty = skip.
        hub: ``dataset_repo_id`` / ``model_repo_id`` / ``private`` / ``token``; empty = skip pushing.
    """

    output_dir: str
    synthesis: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> Path:
        return Path(self.output_dir) / "dataset"

    @property
    def train_dir(self) -> Path:
        return Path(self.output_dir) / "train_data"

    @property
    def holdout_dir(self) -> Path:
        return Path(self.output_dir) / "holdout"

    @property
    def model_dir(self) -> Path:
        return Path(self.output_dir) / "model"

    @property
    def eval_dir(self) -> Path:
        return Path(self.output_dir) / "eval"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Read a recipe YAML; ``overrides`` are ``section.key=value`` strings (values parsed as YAML)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping with sections synthesis/training/evaluation/hub")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(value))
    unknown = set(data) - {"output_dir", "synthesis", "training", "evaluation", "hub"}
    if unknown:
        raise ValueError(f"{path}: unknown recipe sections {sorted(unknown)}")
    if "output_dir" not in data:
        raise ValueError(f"{path}: output_dir is required")
    return RecipeConfig(**{k: (v if v is not None else {}) for k, v in data.items()})


@dataclass
class RecipeResult:
    """What a recipe run produced (paths, the synthesis report, eval scores, pushed commits)."""

    dataset_dir: str | None = None
    model_dir: str | None = None
    eval_scores: dict[str, float] = field(default_factory=dict)
    eval_results: list[Any] = field(default_factory=list)
    dataset_commit: str | None = None
    model_commit: str | None = None
    synthesis_report: dict[str, Any] = field(default_factory=dict)


def synthesis_config(recipe: RecipeConfig):
    """The :class:`SynthesisConfig` of ``recipe`` (generation cache inside ``output_dir`` by default)."""
    from .config import SynthesisConfig

    values = dict(recipe.synthesis)
    values.setdefault("generation_cache_dir", str(Path(recipe.output_dir) / "generations"))
    return SynthesisConfig(**values)


def split_holdout(dataset_dir: Path, per_task: int, random_seed: int, train_dir: Path, holdout_dir: Path) -> int:
    """Keep ``per_task`` examples of every task out of training (chosen by ``random_seed``).

    Writes the training rows to ``train_dir/data/train-00000-of-00001.parquet`` and the held-out
    ones to ``holdout_dir/<task>.jsonl`` in LongBench's format (``input``, ``context``, ``answers``,
    ``length``, ``all_classes``), so ``evaluate_longbench`` scores them. Returns the held-out count.
    """
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "*.parquet"), split="train")
    rng = random.Random(random_seed)
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(ds["task"]):
        by_task.setdefault(task, []).append(i)
    held: set[int] = set()
    for task in sorted(by_task):
        idx = by_task[task]
        held.update(rng.sample(idx, min(per_task, max(len(idx) - 1, 0))))
    holdout_dir.mkdir(parents=True, exist_ok=True)
    for stale in holdout_dir.glob("*.jsonl"):
        stale.unlink()
    for i in sorted(held):
        row = ds[i]
        spans = row["context_spans"]
        prompt = row["messages"][0]["content"]
        context = prompt[spans[0][0] : spans[-1][1]] if spans else row["relevant_context"]
        record = {
            "input": row["instruction"],
            "context": context,
            "answers": [row["answer"]],
            "length": len(context.split()),
            "all_classes": None,
            "_id": row["seed_id"],
        }
        with open(holdout_dir / f"{row['task']}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    train = ds.select([i for i in range(len(ds)) if i not in held])
    (train_dir / "data").mkdir(parents=True, exist_ok=True)
    train.to_parquet(str(train_dir / "data" / "train-00000-of-00001.parquet"))
    return len(held)


def run_synthesize(recipe: RecipeConfig, result: RecipeResult) -> None:
    from .output import synthesize_to_directory

    report = synthesize_to_directory(synthesis_config(recipe), recipe.dataset_dir)
    result.dataset_dir = str(recipe.dataset_dir)
    result.synthesis_report = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
    logger.info("synthesis: %s", report.summary())
    if report.examples == 0:
        raise RuntimeError(f"synthesis produced no examples (see {recipe.dataset_dir}/synthesis_report.json)")


def _training_data(recipe: RecipeConfig) -> Path:
    holdout = int(recipe.evaluation.get("holdout_per_task") or 0)
    if holdout <= 0:
        return recipe.dataset_dir
    seed = int(recipe.synthesis.get("random_seed", 42))
    n = split_holdout(recipe.dataset_dir, holdout, seed, recipe.train_dir, recipe.holdout_dir)
    logger.info("held out %d synthesized examples for evaluation (%s)", n, recipe.holdout_dir)
    return recipe.train_dir


def training_job(recipe: RecipeConfig, dataset: str) -> tuple[Any, Any]:
    """``(TrainingJobArguments, SFTConfig)`` from the recipe's ``training`` mapping (keys of either)."""
    import dataclasses

    import trl

    from .training import TrainingJobArguments, default_sft_config

    job_fields = {f.name for f in dataclasses.fields(TrainingJobArguments)}
    sft_fields = {f.name for f in dataclasses.fields(trl.SFTConfig) if f.init} | {"warmup_ratio"}  # mapped by default_sft_config
    values = dict(recipe.training)
    unknown = sorted(set(values) - job_fields - sft_fields)
    if unknown:
        raise ValueError(f"recipe training: unknown settings {unknown}")
    values.pop("output_dir", None)
    job = TrainingJobArguments(
        **{k: v for k, v in values.items() if k in job_fields}, dataset=dataset, output=str(recipe.model_dir)
    )
    sft = default_sft_config(str(recipe.model_dir), **{k: v for k, v in values.items() if k not in job_fields})
    return job, sft


def run_train(recipe: RecipeConfig, result: RecipeResult) -> None:
    from .training import train

    values = {k: v for k, v in recipe.training.items() if k not in ("dataset", "output")}
    if len(values) != len(recipe.training):
        logger.warning("recipe training: dataset/output are set by the recipe (output_dir/model)")
    recipe = RecipeConfig(**{**vars(recipe), "training": values})
    job, sft = training_job(recipe, str(_training_data(recipe)))
    trainer = train(job, sft)
    result.model_dir = str(recipe.model_dir)
    logger.info("trained %d steps -> %s", trainer.state.global_step, recipe.model_dir)


def run_evaluate(recipe: RecipeConfig, result: RecipeResult) -> None:
    from .evaluation import evaluate_longbench

    ev = dict(recipe.evaluation)
    sources: list[tuple[str, Path]] = []
    if ev.get("data_dir"):
        sources.append(("longbench", Path(ev["data_dir"])))
    if int(ev.get("holdout_per_task") or 0) > 0:
        sources.append(("holdout", recipe.holdout_dir))
    if not sources:
        logger.info("evaluation: nothing configured (evaluation.data_dir / holdout_per_task), skipped")
        return
    model = ev.get("endpoint") or str(recipe.model_dir)
    for name, data_dir in sources:
        report = evaluate_longbench(
            model,
            data_dir,
            tasks=ev.get("tasks"),
            tokenizer=ev.get("tokenizer") or (str(recipe.model_dir) if ev.get("endpoint") else None),
            max_length=ev.get("max_length"),
            limit=ev.get("limit"),
            batch_size=int(ev.get("batch_size", 8)),
            device=ev.get("device"),
            output_dir=recipe.eval_dir / name,
        )
        logger.info("evaluation on %s:\n%s", name, report.to_markdown())
        result.eval_scores.update({f"{name}/{task}": score for task, score in report.scores.items()})
        if name == "longbench":  # model-index entries only for the real benchmark
            result.eval_results.extend(report.eval_results())


def run_push(recipe: RecipeConfig, result: RecipeResult) -> None:
    hub = dict(recipe.hub)
    if not hub.get("dataset_repo_id") and not hub.get("model_repo_id"):
        logger.info("push: no hub.dataset_repo_id / hub.model_repo_id, skipped")
        return
    from .hub import push_dataset_to_hub, push_model_to_hub

    common = {"token": hub.get("token"), "private": bool(hub.get("private", False))}
    if hub.get("dataset_repo_id"):
        info = push_dataset_to_hub(str(recipe.dataset_dir), hub["dataset_repo_id"], **common)
        result.dataset_commit = getattr(info, "oid", None)
    if hub.get("model_repo_id") and recipe.model_dir.exists():
        info = push_model_to_hub(
            str(recipe.model_dir),
            hub["model_repo_id"],
            dataset_repo_id=hub.get("dataset_repo_id"),
            eval_results=result.eval_results or None,
            **common,
        )
        result.model_commit = getattr(info, "oid", None)


_RUNNERS = {"synthesize": run_synthesize, "train": run_train, "evaluate": run_evaluate, "push": run_push}


def run_recipe(recipe: RecipeConfig, steps: list[str] | tuple[str, ...] = STEPS) -> RecipeResult:
    """Run ``steps`` of ``recipe`` in the fixed order synthesize -> train -> evaluate -> push."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; steps are {list(STEPS)}")
    Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
    result = RecipeResult()
    for step in STEPS:
        if step in steps:
            logger.info("recipe step: %s", step)
            _RUNNERS[step](recipe, result)
    summary = {k: v for k, v in vars(result).items() if k != "eval_results"}
    (Path(recipe.output_dir) / "recipe_result.json").write_text(json.dumps(summary, indent=2, default=str))
    return result


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``context-synthesis run``."""
    parser.add_argument("recipe", help="Recipe YAML (see examples/configs/).")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="Steps to run.")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="Override one setting, e.g. --set synthesis.endpoint=http://tgi:8080 (repeatable).",
    )
    parser.add_argument("--log-level", default="INFO")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``context-synthesis run``; prints where things went and the scores."""
    recipe = load_recipe(args.recipe, args.overrides)
    result = run_recipe(recipe, args.steps)
    print(f"outputs in {recipe.output_dir}")
    for key, score in sorted(result.eval_scores.items()):
        print(f"  {key}: {score:.2f}")
    return 0
