"""The ``synthesize`` subcommand: one ``--flag`` per SynthesisConfig field; writes a dataset folder."""

from __future__ import annotations

import argparse
from typing import Any

from ..synthesis.report import exit_code
from ..utils.checks import SetupProblems
from ..utils.fields import add_dataclass_arguments
from ..utils.folders import keep_no_empty_folder

DESCRIPTION = "Synthesize contexts for seed pairs and write a dataset folder (parquet shards, dataset card, report)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`SynthesisConfig` field (help from its field docs), plus ``--output``
    and ``--dry-run``."""
    from ..synthesis.config import SynthesisConfig

    parser.add_argument("--output", "--output-dir", dest="output", required=True, metavar="DIR",
                        help="Folder for the parquet shards, dataset card, report and settings.")
    parser.add_argument("--dry-run", action="store_true",
                        help="Check ids and paths, then print seeds per task, requests to make vs cached, "
                             "estimated tokens and the output layout; generate nothing.")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")
    parser.add_argument("--fail-on-failures", action="store_true",
                        help="Exit 1 when any seed failed (by default a run that completed exits 0 and its "
                             "failures are accounted for in the report).")
    group = parser.add_argument_group("synthesis settings (docs/settings.md)")
    add_dataclass_arguments(group, SynthesisConfig, overrides={"seed": {"required": True}})


def config_from_args(args: argparse.Namespace, problems: SetupProblems | None = None):
    """A :class:`SynthesisConfig` from the parsed ``--flags`` (unset flags keep their defaults).

    With ``problems``, every bad value is recorded there (one problem per flag, not only the first
    the settings' validation meets) and the config of the values that passed is returned, so that the
    other checks of the command still run; ``None`` when not even that config can be built.
    """
    import dataclasses

    from ..synthesis.config import SynthesisConfig

    fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if isinstance(values.get("endpoint"), list) and len(values["endpoint"]) == 1:
        values["endpoint"] = values["endpoint"][0]
    if problems is None:
        return SynthesisConfig(**values)
    try:
        return SynthesisConfig(**values)
    except (ValueError, TypeError):
        pass
    kept: dict[str, Any] = {}
    ordered = sorted(values.items(), key=lambda item: item[0] != "seed")  # the seed first: others may need it
    for name, value in ordered:  # one flag at a time over those that passed: every bad one is named
        with problems.check(name):  # the settings' own name: their messages start with it
            SynthesisConfig(**{**kept, name: value})
            kept[name] = value
    try:
        return SynthesisConfig(**kept)
    except (ValueError, TypeError):
        return None


def run(args: argparse.Namespace) -> int:
    from ..synthesis.plan import check_synthesis_inputs, dry_run_synthesis

    problems = SetupProblems(f"synthesize{' --dry-run' if args.dry_run else ''}")
    config = config_from_args(args, problems)
    hint = "--generator-model NAME_OR_PATH"
    if args.dry_run:  # every input check and the plan; all problems at once
        plan = dry_run_synthesis(config, args.output, step="synthesize", setting_hint=hint, problems=problems) \
            if config is not None else None
        problems.raise_if_any()
        print(plan.to_text())  # type: ignore[union-attr]
        return 0
    if config is not None:  # the bad values and every input problem together
        check_synthesis_inputs(config, step="synthesize", setting_hint=hint, output_dir=args.output, problems=problems)
    problems.raise_if_any()
    if config.num_shards > 1:
        from ..scale.sharding import synthesize_shard

        if not config.generation_cache_dir:
            config.generation_cache_dir = args.output
        report = keep_no_empty_folder(args.output, lambda: synthesize_shard(config))
        print(f"shard {config.shard_index}/{config.num_shards}: {report.summary(include_examples=False)}")
        return exit_code(report, fail_on_failures=args.fail_on_failures)
    from ..hub.artifacts import write_dataset_card
    from ..synthesis.output import synthesize_to_directory

    report = keep_no_empty_folder(args.output, lambda: synthesize_to_directory(config, args.output))
    if report.examples > 0:
        write_dataset_card(args.output)
    print(report.summary())
    return exit_code(report, fail_on_failures=args.fail_on_failures)
