"""The ``train`` subcommand: fine-tune with packing (TRL SFTTrainer); TRL's flag names, layered over ``--config``."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import typing
from typing import Any



def _cli_sources() -> tuple[type, ...]:
    """The dataclasses whose fields are ``train``'s flags (ours first, then TRL's ``SFTConfig``)."""
    import trl

    from ..training.trainer import TrainingJobArguments

    return (TrainingJobArguments, trl.SFTConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per field of :class:`TrainingJobArguments` and ``SFTConfig``.

    Flags are built by ``transformers.HfArgumentParser`` (the parser behind ``trl.TrlParser``), so they
    read exactly like TRL's scripts: ``--max_steps 5`` or ``--max-steps 5``, booleans as ``--bf16`` /
    ``--bf16 false``. Only flags given on the command line are kept (their default is suppressed) so
    that :func:`train_from_args` can layer them over ``--config`` and :func:`default_sft_config`.
    """
    from transformers import HfArgumentParser

    parser.add_argument("--config", default=None, help="YAML file whose keys are any of the flags below (flags win).")
    before = len(parser._actions)
    for dtype in _cli_sources():
        group = parser.add_argument_group(f"{dtype.__name__} fields")
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if not f.init or f.name.startswith("_"):
                continue
            f = copy.copy(f)  # HfArgumentParser narrows field.type in place
            f.type = hints[f.name]
            HfArgumentParser._parse_dataclass_field(group, f)
    trl_names = parser.add_argument_group("TRL script names (aliases)")
    trl_names.add_argument(
        "--model_name_or_path", "--model-name-or-path", dest="model_name_or_path", help="TRL's name for --model."
    )
    trl_names.add_argument("--dataset_name", "--dataset-name", dest="dataset_name", help="TRL's name for --dataset.")
    for action in parser._actions[before:]:
        action.default = argparse.SUPPRESS
        action.required = False
    for action in parser._actions:
        if action.dest == "output_dir":
            action.help = "TRL's name for --output (output folder)."
        elif action.dest == "dataset_num_proc":
            action.help = "Processes for tokenizing the data before packing (PackingConfig.num_proc)."
    show_train_defaults(parser)


#: ``SFTConfig`` settings that would turn TRL's own preparation/packing on over pre-packed rows:
#: name -> (refused when the value is this, why).
_PACKING_CONFLICTS: dict[str, tuple[Any, str]] = {
    "packing": (True, "rows are packed by hf_context_synthesis (best-fit decreasing, truncation keeping the answer); "
                "TRL's packing would pack them again and refuses the custom collator"),
    "padding_free": (True, "PackedDataCollator is already padding-free; TRL's padding-free collator would replace it"),
    "eval_packing": (True, "evaluation rows are packed by hf_context_synthesis too"),
    "remove_unused_columns": (True, "the packed rows' seq_lengths/position_ids columns must reach the collator"),
}


def _refuse_packing_conflicts(sft_values: dict[str, Any], problems: Any = None) -> None:
    """Refuse settings that would pack or prepare the rows again (:data:`_PACKING_CONFLICTS`); with
    ``problems`` (a :class:`~hf_context_synthesis.utils.checks.SetupProblems`) each one is recorded there."""
    if problems is not None:
        for name in [*_PACKING_CONFLICTS, "dataset_kwargs"]:
            with problems.check(f"--{name}"):
                _refuse_packing_conflicts({name: sft_values[name]} if name in sft_values else {})
        return
    from ..utils.fields import parse_bool

    for name, (bad, why) in _PACKING_CONFLICTS.items():
        if name not in sft_values:
            continue
        value = sft_values[name]
        if isinstance(value, str):
            try:
                value = parse_bool(value)
            except Exception:
                pass
        if value == bad:
            raise ValueError(f"train: --{name} {str(value).lower()} conflicts with the packing path: {why}")
    kwargs = sft_values.get("dataset_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("skip_prepare_dataset") is False:
        raise ValueError("train: dataset_kwargs skip_prepare_dataset=false conflicts with the packing path: rows are "
                         "already tokenized and packed, TRL must not prepare them again")


def _cli_values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TrainingJobArguments values, SFTConfig values)`` from ``--config`` and the flags given (flags win)."""
    import trl

    from ..training.trainer import TrainingJobArguments

    job_fields = {f.name for f in dataclasses.fields(TrainingJobArguments)}
    sft_fields = {f.name for f in dataclasses.fields(trl.SFTConfig) if f.init}
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
        if not isinstance(config, dict):
            raise ValueError(f"config file {args.config} must contain a YAML mapping")
        env = config.pop("env", {}) or {}
        if not isinstance(env, dict):
            raise ValueError(f"config file {args.config}: 'env' must be a mapping")
        for key, value in env.items():
            os.environ[str(key)] = str(value)
        unknown = sorted(
            k for k in config if k not in job_fields and k not in sft_fields and k not in ("model_name_or_path", "dataset_name")
        )
        if unknown:
            from ..utils.fields import unknown_names_message

            raise ValueError(unknown_names_message(f"config file {args.config}", unknown, sorted(job_fields | sft_fields)))
        values.update(config)
    values.update({k: v for k, v in vars(args).items() if k in job_fields or k in sft_fields})
    for alias, name in (("model_name_or_path", "model"), ("dataset_name", "dataset"), ("output_dir", "output")):
        given = getattr(args, alias, None) if alias != "output_dir" else values.get("output_dir")
        if given is None and alias in values and alias != "output_dir":
            given = values.pop(alias)
        if given is None:
            continue
        if values.get(name) not in (None, given):
            raise ValueError(f"train: --{alias} {given} and --{name} {values[name]} disagree; give one of them")
        values[name] = given
    job = {k: v for k, v in values.items() if k in job_fields}
    sft = {k: v for k, v in values.items() if k in sft_fields and k not in job_fields}
    return job, sft


def train_from_args(args: argparse.Namespace) -> int:
    """Run ``context-synthesis train``: merge ``--config`` and flags, train, report where it saved."""
    from ..training.trainer import SUMMARY_FILE, TrainingJobArguments, default_sft_config, train

    job_values, sft_values = _cli_values(args)
    _refuse_packing_conflicts(sft_values)
    job = TrainingJobArguments(**job_values)
    args.run_folder = job.output  # where the log file goes
    for name in ("model", "dataset", "output"):
        if not getattr(job, name):
            raise ValueError(f"train: --{name} is required (flag or '{name}:' key in --config)")
    sft_values.pop("output_dir", None)  # --output_dir is TRL's name for --output (_cli_values)
    sft_config = default_sft_config(job.output, **sft_values)
    trainer = train(job, sft_config)
    from ..hub.artifacts import write_training_artifacts  # trainer_state.json, model card, loss curve

    write_training_artifacts(trainer, job.output)
    print(f"Trained {trainer.state.global_step} steps; model and {SUMMARY_FILE} saved to {job.output}")
    return 0


def show_train_defaults(parser: argparse.ArgumentParser) -> None:
    """``train``'s flags keep no argparse default (they are layered over ``--config``); when help is
    printed, show the effective defaults (``default_sft_config``'s ``SFTConfig`` and the
    ``TrainingJobArguments`` defaults) in each flag's help instead."""

    def annotate() -> None:
        import dataclasses

        from ..utils.fields import field_default
        from ..training.trainer import TrainingJobArguments, default_sft_config

        defaults: dict[str, Any] = {}
        for f in dataclasses.fields(TrainingJobArguments):
            value = field_default(f)
            if value is not dataclasses.MISSING:
                defaults[f.name] = value
        sft = default_sft_config("OUTPUT")
        for f in dataclasses.fields(sft):
            if f.init and f.name not in defaults:
                defaults[f.name] = getattr(sft, f.name)
        defaults["bf16"] = "true where CUDA supports bf16, else false"
        for action in parser._actions:
            if not action.option_strings or action.dest not in defaults:
                continue
            text = action.help or action.dest.replace("_", " ")
            if "[default:" not in text:
                value = defaults[action.dest]
                value = getattr(value, "value", value)
                text = f"{text} [default: {str(value).replace('%', '%%')}]"
            action.help = text

    parser.before_help = annotate  # type: ignore[attr-defined]


def preflight(args: argparse.Namespace) -> None:
    """``train`` checks its settings (``--config``, settings that conflict with the packing path, the
    required model, dataset and output) and its base model and dataset path before loading anything; all
    problems at once."""
    from ..synthesis.plan import SetupProblems, check_model, check_seed_source

    problems = SetupProblems("train")
    values: tuple[dict[str, Any], dict[str, Any]] | None = None
    with problems.check("--config"):
        values = _cli_values(args)
    if values is not None:
        job_values, sft_values = values
        _refuse_packing_conflicts(sft_values, problems)
        for name in ("model", "dataset", "output"):
            if not job_values.get(name):
                problems.add(f"--{name}", f"train: --{name} is required (flag or '{name}:' key in --config)",
                             bad_value=True)
    merged = values[0] if values is not None else {}  # the flags over --config, TRL's names resolved

    def given(attr: str) -> Any:
        return getattr(args, attr, None) or (merged.get(attr) if attr in ("model", "dataset") else None)

    for attr in ("model_name_or_path", "model"):
        model = given(attr)
        if isinstance(model, str) and model:
            with problems.check(f"--{attr.replace('_', '-')}"):
                check_model(model, what="base model", step="train", setting_hint=f"--{attr} NAME_OR_PATH")
            break
    for attr in ("dataset_name", "dataset"):
        data = given(attr)
        if isinstance(data, str) and data:
            with problems.check(f"--{attr.replace('_', '-')}"):
                check_seed_source(data, step="train", setting_hint=f"--{attr} FOLDER_OR_ID", what="training data",
                                  probe_hub=False)
            break
    problems.raise_if_any()


def planned_folder(args: argparse.Namespace) -> str | None:
    """The training output (``--output``/``--output_dir`` or the ``--config`` key): where the log file goes."""
    return _cli_values(args)[0].get("output") or getattr(args, "output_dir", None)


def run(args: argparse.Namespace) -> int:
    """``context-synthesis train``: the preflight, then training."""
    preflight(args)
    return train_from_args(args)
