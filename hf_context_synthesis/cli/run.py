"""The ``run`` subcommand: a whole recipe (synthesize -> train -> evaluate -> push) from one YAML file."""

from __future__ import annotations

import argparse
import json

from ..recipe import STEPS, dry_run, load_recipe, run_recipe
from ..synthesis.report import SynthesisReport, exit_code



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``context-synthesis run``."""
    parser.add_argument("recipe", help="Recipe YAML (see examples/configs/ and docs/settings.md).")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="Steps to run, in the fixed order synthesize -> train -> evaluate -> push.")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="Override one setting, e.g. --set synthesis.endpoint=http://tgi:8080 (repeatable; values are YAML).",
    )
    parser.add_argument("--output", "--output-dir", dest="output_dir", default=None, metavar="DIR",
                        help="Where the run writes (same as --set output_dir=DIR) [default: the recipe's output_dir].")
    parser.add_argument("--dry-run", action="store_true",
                        help="Check every id and path, print seeds per task, requests to make vs cached, estimated "
                             "tokens and the output layout; generate and train nothing.")
    parser.add_argument("--resume", action="store_true",
                        help="Resume training from the newest checkpoint-* in OUTPUT_DIR/model "
                             "(same as --set training.resume_from_checkpoint=last).")
    parser.add_argument("--fail-on-failures", action="store_true",
                        help="Exit 1 when any seed failed in the synthesize step (by default a run that completed "
                             "exits 0 and its failures are accounted for in the synthesis report).")
    parser.add_argument("--log-level", default="INFO", help="Logging level (overrides -v/-q), e.g. DEBUG.")


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if getattr(args, "output_dir", None):
        overrides.insert(0, f"output_dir={json.dumps(args.output_dir)}")  # quoted: values are YAML
    if getattr(args, "resume", False):
        overrides.append("training.resume_from_checkpoint=last")
    return overrides


def planned_folder(args: argparse.Namespace) -> str:
    """The recipe's ``output_dir`` (after ``--output`` and ``--set``): where the log file goes."""
    return str(load_recipe(args.recipe, _overrides(args)).output_dir)


def run(args: argparse.Namespace) -> int:
    """Run ``context-synthesis run``; prints where things went and the scores."""
    recipe = load_recipe(args.recipe, _overrides(args))
    args.run_folder = str(recipe.output_dir)  # where the log file goes
    if getattr(args, "dry_run", False):
        print(dry_run(recipe, args.steps))
        return 0
    result = run_recipe(recipe, args.steps)
    print(f"outputs in {recipe.output_dir}")
    for key, score in sorted(result.eval_scores.items()):
        print(f"  {key}: {score:.2f}")
    if "synthesize" in args.steps and result.synthesis_report:
        # the one exit-code rule of every command that synthesizes
        return exit_code(SynthesisReport.from_dict(result.synthesis_report),
                         fail_on_failures=getattr(args, "fail_on_failures", False))
    return 0
