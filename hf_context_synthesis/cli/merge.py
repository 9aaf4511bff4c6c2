"""The ``merge`` subcommand: merge the generation caches of shards into one dataset folder (no request)."""

from __future__ import annotations

import argparse
import sys

from ..synthesis.report import exit_code
from ..utils.folders import keep_no_empty_folder
from .synthesize import add_arguments as add_synthesize_arguments
from .synthesize import config_from_args

DESCRIPTION = "Merge the generation caches of shards into one dataset folder (no request)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthesis settings of the shards, and ``--shard-cache`` (every shard's generations.sqlite)."""
    add_synthesize_arguments(parser)
    parser.add_argument("--shard-cache", nargs="+", required=True, help="generations.sqlite of every shard.")


def preflight(args: argparse.Namespace):
    """Every bad setting, missing shard cache and unwritable output folder at once; the settings."""
    import os

    from ..utils.checks import SetupProblems, check_output_writable

    problems = SetupProblems("merge")
    config = config_from_args(args, problems)
    for path in args.shard_cache:
        if not os.path.isfile(path):
            problems.add("--shard-cache", f"shard cache {path!r} does not exist (each shard's "
                         f"generations.sqlite, written by synthesize --num-shards N --shard-index I)")
    with problems.check("--output"):
        check_output_writable(args.output, "merge")
    problems.raise_if_any()
    return config


def run(args: argparse.Namespace) -> int:
    from ..hub.artifacts import write_dataset_card
    from ..scale.sharding import merge_shards

    config = preflight(args)
    report = keep_no_empty_folder(args.output, lambda: merge_shards(config, args.shard_cache, args.output))
    if report.examples:
        write_dataset_card(args.output)
    print(report.summary())
    if report.missing_shards:
        print(f"error: shards missing from the merge: {', '.join(map(str, report.missing_shards))} "
              f"(re-run them with --shard-index, then merge again)", file=sys.stderr)
    return exit_code(report, fail_on_failures=args.fail_on_failures)
