"""The ``synthesize`` subcommand: one ``--flag`` per SynthesisConfig field; writes a dataset folder."""

from __future__ import annotations

import argparse

from ..synthesis.report import exit_code
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


def config_from_args(args: argparse.Namespace):
    """A :class:`SynthesisConfig` from the parsed ``--flags`` (unset flags keep their defaults)."""
    import dataclasses

    from ..synthesis.config import SynthesisConfig

    fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if isinstance(values.get("endpoint"), list) and len(values["endpoint"]) == 1:
        values["endpoint"] = values["endpoint"][0]
    return SynthesisConfig(**values)


def run(args: argparse.Namespace) -> int:
    from ..synthesis.plan import check_synthesis_inputs, dry_run_synthesis

    config = config_from_args(args)
    hint = "--generator-model NAME_OR_PATH"
    if args.dry_run:  # every input check and the plan; all problems at once
        print(dry_run_synthesis(config, args.output, step="synthesize", setting_hint=hint).to_text())
        return 0
    check_synthesis_inputs(config, step="synthesize", setting_hint=hint, output_dir=args.output)
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
