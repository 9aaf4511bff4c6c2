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

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STEPS: tuple[str, ...] = ("synthesize", "train", "evaluate", "push")
#: Top-level keys of a recipe file.
SECTIONS: tuple[str, ...] = ("output_dir", "synthesis", "training", "evaluation", "hub")
#: Keys of the ``evaluation`` section next to ``evaluate_longbench``'s keyword arguments.
EVALUATION_KEYS: tuple[str, ...] = (
    "data_dir", "holdout_per_task", "endpoint", "tasks", "tokenizer", "max_length", "limit", "batch_size", "device",
)
#: Keys of the ``hub`` section.
HUB_KEYS: tuple[str, ...] = ("dataset_repo_id", "model_repo_id", "private", "token")
RESULT_FILE = "recipe_result.json"


@dataclass
class RecipeConfig:
    """An end-to-end run.

    Args:
        output_dir: Folder for everything the run writes: ``dataset/`` (parquet shards, report),
            ``model/`` (the tuned model), ``eval/`` (results, predictions), ``holdout/`` (held-out
            examples in LongBench format), ``generations/`` (the generation cache, unless
            ``synthesis.generation_cache_dir`` is set).
        synthesis: :class:`~hf_context_synthesis.synthesis.config.SynthesisConfig` fields.
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

    from .utils.values import yaml_error_message

    with open(path, encoding="utf-8") as fh:
        try:  # safe_load only: a python/object tag in a shared recipe is refused, never constructed
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ValueError(yaml_error_message(str(path), err)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping with sections synthesis/training/evaluation/hub")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(yaml_error_message(f"--set {item!r}", err, lines=False)) from None
        _set_dotted(data, key.strip(), parsed)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        from .utils.fields import did_you_mean

        named = ", ".join(f"{k!r}{did_you_mean(k, SECTIONS)}" for k in unknown)
        raise ValueError(f"{path}: unknown recipe sections {named}; sections are {list(SECTIONS)}")
    for section in SECTIONS[1:]:
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ValueError(f"{path}: section {section!r} must be a mapping, got {type(data[section]).__name__}")
    if "output_dir" not in data:
        raise ValueError(f"{path}: output_dir is required")
    from .utils.values import check_str

    data["output_dir"] = check_str(f"{path}: output_dir", data["output_dir"])
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
    from .synthesis.config import SynthesisConfig

    values = dict(recipe.synthesis)
    values.setdefault("generation_cache_dir", str(Path(recipe.output_dir) / "generations"))
    return SynthesisConfig(**values)


#: Written into ``holdout/`` by :func:`split_holdout`: the ``<task>.jsonl`` files it wrote (only those
#: are ever deleted by a rerun).
HOLDOUT_MARKER = ".context_synthesis_holdout.json"
_TRAIN_SHARD = "train-00000-of-00001.parquet"


def _stale_holdout_files(holdout_dir: Path) -> list[Path]:
    """The ``*.jsonl`` files of ``holdout_dir`` a previous :func:`split_holdout` wrote (listed in its
    :data:`HOLDOUT_MARKER`); a ``.jsonl`` it did not write is refused (it would be evaluated)."""
    from .utils.paths import refuse_links

    marker = holdout_dir / HOLDOUT_MARKER
    refuse_links(marker, what="holdout marker")
    listed: set[str] = set()
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text(encoding="utf-8")).get("files", []))
        except (OSError, ValueError, AttributeError):
            listed = set()
    stale = sorted(holdout_dir.glob("*.jsonl"))
    for path in stale:
        refuse_links(path, what="holdout file")
        if path.name not in listed or not path.is_file():
            raise FileExistsError(
                f"{path} was not written by the recipe's holdout split (not listed in {marker}): it is left as "
                "it is; move it away or choose another output_dir"
            )
    return stale


def split_holdout(dataset_dir: Path, per_task: int, random_seed: int, train_dir: Path, holdout_dir: Path) -> int:
    """Keep ``per_task`` examples of every task out of training (chosen by ``random_seed``).

    Writes the training rows to ``train_dir/data/train-00000-of-00001.parquet`` and the held-out
    ones to ``holdout_dir/<task>.jsonl`` in LongBench's format (``input``, ``context``, ``answers``,
    ``length``, ``all_classes``), so ``evaluate_longbench`` scores them. Returns the held-out count.

    Task names come from data: each is checked to be a plain file name that stays inside
    ``holdout_dir``. Neither folder may be a symbolic link; a rerun deletes only the ``.jsonl`` files
    the previous split listed in :data:`HOLDOUT_MARKER`, and refuses other ones.
    """
    import datasets

    from .utils.folders import atomic_write
    from .utils.paths import check_name, path_inside, refuse_links

    refuse_links(train_dir, train_dir / "data", train_dir / "data" / _TRAIN_SHARD, what="recipe training-data path")
    refuse_links(holdout_dir, what="recipe holdout folder")
    ds = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "*.parquet"), split="train")
    rng = random.Random(random_seed)
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(ds["task"]):
        check_name(task, what="task", where=f"{dataset_dir}: row {i}")
        by_task.setdefault(task, []).append(i)
    held: set[int] = set()
    for task in sorted(by_task):
        idx = by_task[task]
        held.update(rng.sample(idx, min(per_task, max(len(idx) - 1, 0))))
    records: dict[str, list[str]] = {}
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
        records.setdefault(row["task"], []).append(json.dumps(record, ensure_ascii=False) + "\n")
    holdout_dir.mkdir(parents=True, exist_ok=True)
    refuse_links(holdout_dir, what="recipe holdout folder")
    targets = {task: path_inside(holdout_dir, f"{task}.jsonl", what="holdout file") for task in records}
    for stale in _stale_holdout_files(holdout_dir):
        stale.unlink()
    marker = {"files": sorted(p.name for p in targets.values())}
    atomic_write(str(holdout_dir / HOLDOUT_MARKER), json.dumps(marker, indent=2))  # before the files: a crash leaves them listed
    for task, path in targets.items():
        atomic_write(str(path), "".join(records[task]))
    train = ds.select([i for i in range(len(ds)) if i not in held])
    (train_dir / "data").mkdir(parents=True, exist_ok=True)
    refuse_links(train_dir, train_dir / "data", what="recipe training-data folder")
    tmp = train_dir / "data" / f".{_TRAIN_SHARD}.tmp"
    train.to_parquet(str(tmp))
    os.replace(tmp, train_dir / "data" / _TRAIN_SHARD)
    return len(held)


def run_synthesize(recipe: RecipeConfig, result: RecipeResult) -> None:
    from .synthesis.output import synthesize_to_directory
    from .utils.paths import refuse_links

    config = synthesis_config(recipe)
    refuse_links(recipe.dataset_dir, what="recipe dataset folder")
    if "generation_cache_dir" not in recipe.synthesis:  # the recipe's own generations/ (a cache the user names may be shared)
        refuse_links(config.generation_cache_dir, what="recipe generation cache folder")
    report = synthesize_to_directory(config, recipe.dataset_dir)
    result.dataset_dir = str(recipe.dataset_dir)
    if report.examples > 0:
        from .hub.artifacts import write_dataset_card

        write_dataset_card(recipe.dataset_dir, repo_id=recipe.hub.get("dataset_repo_id"))
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

    from .training.trainer import TrainingJobArguments, default_sft_config

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
    from .training.trainer import train

    values = {k: v for k, v in recipe.training.items() if k not in ("dataset", "output")}
    if len(values) != len(recipe.training):
        logger.warning("recipe training: dataset/output are set by the recipe (output_dir/model)")
    resume = values.pop("resume_from_checkpoint", None)
    recipe = RecipeConfig(**{**vars(recipe), "training": values})
    from .utils.paths import refuse_links

    # the recipe's own model folder: never written (checkpoints rotated, files replaced) through a link
    refuse_links(recipe.model_dir, what="recipe model folder")
    job, sft = training_job(recipe, str(_training_data(recipe)))
    sft.resume_from_checkpoint = resolve_checkpoint(recipe.model_dir, resume)
    trainer = train(job, sft)
    result.model_dir = str(recipe.model_dir)
    from .hub.artifacts import write_training_artifacts

    write_training_artifacts(
        trainer, recipe.model_dir, repo_id=recipe.hub.get("model_repo_id"),
        dataset_repo_id=recipe.hub.get("dataset_repo_id"),
    )
    logger.info("trained %d steps -> %s", trainer.state.global_step, recipe.model_dir)


def resolve_checkpoint(model_dir: Path, resume: Any) -> str | None:
    """``resume_from_checkpoint`` of a recipe: ``None``/``false`` = start fresh; ``true``/``"last"`` = the
    newest ``checkpoint-*`` folder of ``model_dir`` (fresh start, logged, when there is none); a path = it."""
    if resume in (None, False, "", "false", "no"):
        return None
    if resume in (True, "true", "last", "yes"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(model_dir)) if model_dir.is_dir() else None
        if last is None:
            logger.info("resume: no checkpoint-* in %s, training from the start", model_dir)
        else:
            logger.info("resume: continuing from %s", last)
        return last
    if not Path(str(resume)).is_dir():
        raise ValueError(f"training.resume_from_checkpoint: {resume!r} is not a checkpoint folder")
    return str(resume)


def run_evaluate(recipe: RecipeConfig, result: RecipeResult) -> None:
    from .evaluation.longbench_v1 import evaluate_longbench

    ev = dict(recipe.evaluation)
    sources: list[tuple[str, Path]] = []
    if ev.get("data_dir"):
        sources.append(("longbench", Path(ev["data_dir"])))
    if int(ev.get("holdout_per_task") or 0) > 0:
        sources.append(("holdout", recipe.holdout_dir))
    if not sources:
        logger.info("evaluation: nothing configured (evaluation.data_dir / holdout_per_task), skipped")
        return
    from .utils.paths import refuse_links

    refuse_links(recipe.eval_dir, what="recipe evaluation folder")
    model = ev.get("endpoint") or str(recipe.model_dir)
    for name, data_dir in sources:
        report = evaluate_longbench(
            model,
            data_dir,
            tasks=ev.get("tasks"),
            tokenizer=ev.get("tokenizer") or (str(recipe.model_dir) if ev.get("endpoint") else None),
            max_length=ev.get("max_length"),
            limit=ev.get("limit"),
            batch_size=int(ev.get("batch_size", 1)),
            device=ev.get("device"),
            output_dir=recipe.eval_dir / name,
            label="LongBench" if name == "longbench" else "held-out synthesized",
        )
        logger.info("evaluation on %s:\n%s", "LongBench" if name == "longbench" else "held-out synthesized examples (not LongBench)", report.to_markdown())
        result.eval_scores.update({f"{name}/{task}": score for task, score in report.scores.items()})
        if name == "longbench":  # model-index entries only for the real benchmark
            result.eval_results.extend(report.eval_results())
    if not ev.get("endpoint"):  # the model card shows the results found beside the model
        from .hub.artifacts import refresh_model_card

        refresh_model_card(recipe.model_dir, repo_id=recipe.hub.get("model_repo_id"),
                           dataset_repo_id=recipe.hub.get("dataset_repo_id"))


def run_push(recipe: RecipeConfig, result: RecipeResult) -> None:
    hub = dict(recipe.hub)
    if not hub.get("dataset_repo_id") and not hub.get("model_repo_id"):
        logger.info("push: no hub.dataset_repo_id / hub.model_repo_id, skipped")
        return
    from .hub.publish import push_dataset_to_hub, push_model_to_hub

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


def _known_training_keys() -> set[str]:
    import dataclasses

    import trl

    from .training.trainer import TrainingJobArguments

    return (
        {f.name for f in dataclasses.fields(TrainingJobArguments)}
        | {f.name for f in dataclasses.fields(trl.SFTConfig) if f.init}
        | {"warmup_ratio"}
    )


def validate_recipe(recipe: RecipeConfig) -> None:
    """Raise ``ValueError`` on unknown keys (with a "did you mean" suggestion) or invalid synthesis
    settings, before anything is written."""
    import dataclasses
    import inspect

    from .utils.fields import unknown_names_message
    from .synthesis.config import SynthesisConfig
    from .utils.values import InvalidSettingError

    def check(section: str, values: dict[str, Any], known: set[str] | tuple[str, ...]) -> None:
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(unknown_names_message(f"recipe {section}", unknown, sorted(known), prefix=f"{section}."))

    check("synthesis", recipe.synthesis, {f.name for f in dataclasses.fields(SynthesisConfig)})
    if recipe.training:
        check("training", recipe.training, _known_training_keys() | {"dataset", "output"})
    eval_keys = set(EVALUATION_KEYS)
    if set(recipe.evaluation) - eval_keys:
        from .evaluation.longbench_v1 import evaluate_longbench

        eval_keys |= set(inspect.signature(evaluate_longbench).parameters) - {"model_or_backend", "output_dir"}
    check("evaluation", recipe.evaluation, eval_keys)
    check("hub", recipe.hub, HUB_KEYS)
    _check_recipe_value_types(recipe)
    try:
        synthesis_config(recipe)  # the settings' own validation (types and ranges included)
    except InvalidSettingError as err:
        raise err.with_prefix("recipe synthesis.") from None


#: Types of the ``evaluation`` and ``hub`` keys, checked like dataclass fields (see :mod:`.values`).
_EVALUATION_TYPES: dict[str, Any] = {
    "data_dir": str | None, "holdout_per_task": int | None, "endpoint": str | None, "tasks": list[str] | None,
    "tokenizer": str | None, "max_length": int | None, "limit": int | None, "batch_size": int | None,
    "device": str | None,
}
_HUB_TYPES: dict[str, Any] = {
    "dataset_repo_id": str | None, "model_repo_id": str | None, "private": bool | None, "token": str | None,
}


def _check_recipe_value_types(recipe: RecipeConfig) -> None:
    """Type- and range-check the ``training``, ``evaluation`` and ``hub`` values (numeric strings such
    as YAML's ``1e-5`` become numbers in place); an error names ``section.key``, the value and what
    is allowed."""
    from .utils.values import Range, check_value, check_values

    if recipe.training:
        import trl

        from .training.trainer import TrainingJobArguments

        values = check_values(TrainingJobArguments, recipe.training, prefix="recipe training.")
        values = check_values(trl.SFTConfig, values, {"learning_rate": Range(0), "num_train_epochs": Range(0)},
                              prefix="recipe training.")
        if "warmup_ratio" in values:
            values["warmup_ratio"] = check_value("recipe training.warmup_ratio", float, values["warmup_ratio"],
                                                 Range(0, 1))
        recipe.training.update(values)
    ranges = {"holdout_per_task": Range(0), "max_length": Range(1), "limit": Range(1), "batch_size": Range(1)}
    for section, types, values in (("evaluation", _EVALUATION_TYPES, recipe.evaluation),
                                   ("hub", _HUB_TYPES, recipe.hub)):
        for key in list(values):
            if key in types:
                values[key] = check_value(f"recipe {section}.{key}", types[key], values[key], ranges.get(key))


def preflight(
    recipe: RecipeConfig, steps: list[str] | tuple[str, ...] = STEPS, *, problems: Any = None,
    context: str = "recipe",
) -> None:
    """Check every input the chosen ``steps`` need before anything is generated or trained: seed data
    (exists, readable; a Hub id exists), the generator (endpoints answer and name their model, or the
    embedded model resolves), tokenizers, the base model, datasets from earlier steps, LongBench data
    (the folder, archive or Hub dataset is probed for the requested tasks), Hub repo settings and a
    token for push, and that the output folders can be written.

    Every problem is collected (each naming its setting) and all are raised together as one
    :class:`~hf_context_synthesis.synthesis.plan.RunSetupError` (one line per problem; see
    :class:`~hf_context_synthesis.synthesis.plan.SetupProblems`), or recorded in ``problems`` when given.
    Unknown keys and invalid values (:func:`validate_recipe`) are refused first, as a ``ValueError``."""
    from .synthesis.plan import SetupProblems, check_output_writable, check_synthesis_inputs

    validate_recipe(recipe)
    collector = problems if problems is not None else SetupProblems(context)
    with collector.check("output_dir"):
        check_output_writable(recipe.output_dir, "recipe")
    if "synthesize" in steps:
        check_synthesis_inputs(
            synthesis_config(recipe), step="recipe step synthesize",
            setting_hint="--set synthesis.generator_model=NAME_OR_PATH", setting_prefix="synthesis.",
            problems=collector,
        )
        with collector.check("output_dir"):
            check_output_writable(recipe.dataset_dir, "recipe step synthesize")
    elif any(s in steps for s in ("train", "push")) and not list(recipe.dataset_dir.glob("data/*.parquet")):
        if "train" in steps or recipe.hub.get("dataset_repo_id"):
            collector.add("--steps", f"recipe: no synthesized data in {recipe.dataset_dir} (run --steps synthesize first)")
    if "train" in steps:
        _preflight_train(recipe, collector)
    if "evaluate" in steps:
        _preflight_evaluate(recipe, steps, collector)
    if "push" in steps:
        _preflight_push(recipe, collector)
    if problems is None:
        collector.raise_if_any()


def _preflight_train(recipe: RecipeConfig, problems: Any) -> None:
    """``train``: the base model resolves, a resume checkpoint exists, the model folder can be written."""
    from .synthesis.plan import check_output_writable, check_model

    model = recipe.training.get("model")
    if not model:
        problems.add("training.model", "recipe step train: training.model is required "
                                       "(--set training.model=NAME_OR_PATH)")
    elif not isinstance(model, (str, os.PathLike)):
        problems.add("training.model", f"expected a model folder or Hub id, got {model!r}", bad_value=True)
    else:
        with problems.check("training.model"):
            check_model(os.fspath(model), what="base model", step="recipe step train",
                        setting_hint="--set training.model=NAME_OR_PATH")
    resume = recipe.training.get("resume_from_checkpoint")
    if resume not in (None, False, True, "", "false", "no", "true", "last", "yes") and not Path(str(resume)).is_dir():
        problems.add("training.resume_from_checkpoint", f"{resume!r} is not a checkpoint folder "
                                                        "(or use true / last for the newest checkpoint-*)")
    with problems.check("output_dir"):
        check_output_writable(recipe.model_dir, "recipe step train")


def _preflight_evaluate(recipe: RecipeConfig, steps: list[str] | tuple[str, ...], problems: Any) -> None:
    """``evaluate``: something to evaluate is configured, the LongBench data holds the requested tasks,
    the model to evaluate exists (trained earlier or an endpoint), the tokenizer resolves."""
    from .synthesis.plan import check_output_writable, check_model

    ev = recipe.evaluation
    data_dir = ev.get("data_dir")
    holdout = ev.get("holdout_per_task") or 0
    holdout = holdout if isinstance(holdout, int) and not isinstance(holdout, bool) and holdout > 0 else 0
    if not data_dir and not holdout:
        problems.add("evaluation.data_dir", (
            "recipe step evaluate has nothing to evaluate: set evaluation.data_dir (LongBench data: a folder of "
            "<task>.jsonl files, a data.zip or a Hub dataset id) or evaluation.holdout_per_task, or leave the "
            "step out (--steps " + " ".join(s for s in STEPS if s in steps and s != "evaluate") + ")"
        ))
    tasks = ev.get("tasks")
    if tasks is not None:
        from .evaluation.longbench_tasks import canonical_task

        with problems.check("evaluation.tasks"):
            if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
                raise ValueError(f"expected a list of LongBench task names, got {tasks!r}")
            for task in tasks:
                canonical_task(task)
    if data_dir:
        from .evaluation.longbench_tasks import probe_data

        with problems.check("evaluation.data_dir"):
            if not isinstance(data_dir, (str, os.PathLike)):
                raise ValueError(f"expected a folder, a data.zip or a Hub dataset id, got {data_dir!r}")
            try:
                probe_data(data_dir, None if problems.about("evaluation.tasks") else tasks)
            except OSError as err:
                from .synthesis.plan import RunSetupError

                raise RunSetupError(f"recipe step evaluate: {err}") from None
    if holdout and "train" not in steps and not list(recipe.holdout_dir.glob("*.jsonl")):
        problems.add("evaluation.holdout_per_task", f"recipe step evaluate: no held-out examples in {recipe.holdout_dir} "
                                                    "(the train step writes them: run --steps train evaluate)")
    if "train" not in steps and not ev.get("endpoint") and (data_dir or holdout):
        if not (recipe.model_dir / "config.json").is_file():
            problems.add("--steps", f"recipe step evaluate: no trained model in {recipe.model_dir} (run --steps train first)")
    if ev.get("tokenizer"):
        with problems.check("evaluation.tokenizer"):
            check_model(ev["tokenizer"], what="tokenizer", step="recipe step evaluate",
                        setting_hint="--set evaluation.tokenizer=NAME_OR_PATH", kind="tokenizer")
    with problems.check("output_dir"):
        check_output_writable(recipe.eval_dir, "recipe step evaluate")


def _preflight_push(recipe: RecipeConfig, problems: Any) -> None:
    """``push``: well-formed repo ids, a boolean ``private``, a string token, and a token at all."""
    hub = recipe.hub
    repos = [k for k in ("dataset_repo_id", "model_repo_id") if hub.get(k) is not None]
    for key in repos:
        value = hub[key]
        with problems.check(f"hub.{key}"):
            if not isinstance(value, str):
                raise ValueError(f"expected a Hub repo id like you/name, got {value!r}")
            from huggingface_hub.utils import validate_repo_id

            validate_repo_id(value)
    if hub.get("private") is not None and not isinstance(hub["private"], bool):
        problems.add("hub.private", f"expected true or false, got {hub['private']!r}", bad_value=True)
    if hub.get("token") is not None and not isinstance(hub["token"], str):
        problems.add("hub.token", f"expected a string, got a {type(hub['token']).__name__}", bad_value=True)
    if any(hub.get(k) for k in repos):
        from huggingface_hub import get_token

        if not (hub.get("token") or get_token()):
            problems.add("hub.token", "recipe step push: no Hub token (set HF_TOKEN, run `hf auth login`, or set "
                                      "hub.token); or drop the push with --steps synthesize train evaluate")


def dry_run(recipe: RecipeConfig, steps: list[str] | tuple[str, ...] = STEPS) -> str:
    """``run --dry-run``: every check of :func:`preflight` and, when the synthesis inputs passed, the
    synthesis plan (every seed row read, the endpoint's context window); all problems are raised
    together (:class:`~hf_context_synthesis.synthesis.plan.RunSetupError`). Returns :func:`plan`'s text.
    Sends no generation request and writes nothing."""
    from .synthesis.plan import SetupProblems, plan_synthesis

    problems = SetupProblems("recipe --dry-run")
    preflight(recipe, steps, problems=problems)
    synthesis_plan = None
    if "synthesize" in steps and not any(p.setting.startswith("synthesis.") for p in problems.problems):
        with problems.check("synthesis"):
            synthesis_plan = plan_synthesis(synthesis_config(recipe), recipe.dataset_dir)
    problems.raise_if_any()
    return plan(recipe, steps, synthesis_plan=synthesis_plan)


def plan(recipe: RecipeConfig, steps: list[str] | tuple[str, ...] = STEPS, *, synthesis_plan: Any = None) -> str:
    """The ``--dry-run`` text of a recipe: the synthesis plan (``synthesis_plan``, computed here when not
    given) and what every later step would write."""
    from .synthesis.plan import plan_synthesis

    lines = [f"recipe {recipe.output_dir}: steps {', '.join(s for s in STEPS if s in steps)}"]
    if "synthesize" in steps:
        if synthesis_plan is None:
            synthesis_plan = plan_synthesis(synthesis_config(recipe), recipe.dataset_dir)
        lines.append(synthesis_plan.to_text())
    out = Path(recipe.output_dir)
    holdout = int(recipe.evaluation.get("holdout_per_task") or 0)
    if "train" in steps:
        lines.append(f"train: {recipe.training.get('model')} -> {recipe.model_dir}/ (model, tokenizer, "
                     "context_synthesis_training.json, trainer_state.json, README.md model card, training_loss.png)")
        if holdout:
            lines.append(f"  holds out {holdout} example(s) per task: {recipe.train_dir}/, {recipe.holdout_dir}/<task>.jsonl")
    if "evaluate" in steps:
        sources = [name for name, on in (("longbench", recipe.evaluation.get("data_dir")), ("holdout", holdout)) if on]
        lines.append(f"evaluate: {', '.join(sources) or 'nothing configured'}"
                     + "".join(f" -> {recipe.eval_dir / s}/" for s in sources))
    if "push" in steps:
        repos = [r for r in (recipe.hub.get("dataset_repo_id"), recipe.hub.get("model_repo_id")) if r]
        lines.append(f"push: {', '.join(repos) or 'nothing configured (hub.dataset_repo_id / hub.model_repo_id)'}")
    lines.append(f"summary: {out / RESULT_FILE}")
    return "\n".join(lines)


def _load_previous_result(path: Path) -> RecipeResult:
    import dataclasses

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RecipeResult()
    names = {f.name for f in dataclasses.fields(RecipeResult)}
    return RecipeResult(**{k: v for k, v in data.items() if k in names})


def run_recipe(
    recipe: RecipeConfig, steps: list[str] | tuple[str, ...] = STEPS, *, check: bool = True
) -> RecipeResult:
    """Run ``steps`` of ``recipe`` in the fixed order synthesize -> train -> evaluate -> push.

    Everything the steps need is checked first (:func:`preflight`; ``check=False`` skips it). The
    summary ``recipe_result.json`` accumulates: a run with some ``steps`` keeps what earlier runs
    recorded for the other steps. A first run that fails leaves no empty ``output_dir`` behind.
    """
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; steps are {list(STEPS)}")
    if check:
        preflight(recipe, steps)
    out = Path(recipe.output_dir)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / RESULT_FILE
    result = _load_previous_result(result_path)
    result.eval_results = []
    if "evaluate" in steps:
        result.eval_scores = {}
    try:
        for step in STEPS:
            if step in steps:
                logger.info("recipe step: %s", step)
                _RUNNERS[step](recipe, result)
    except BaseException:
        if not existed:
            from .utils.folders import remove_if_nothing_kept

            remove_if_nothing_kept(out)
        raise
    summary = {k: v for k, v in vars(result).items() if k != "eval_results"}
    result_path.write_text(json.dumps(summary, indent=2, default=str))
    return result
