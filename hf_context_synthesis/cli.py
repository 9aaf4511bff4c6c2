"""``context-synthesis``: the command-line entry point.

Subcommands: ``synthesize`` and ``merge`` (here), ``train``, ``push-dataset``, ``push-model``,
``evaluate`` and ``run`` (a whole recipe)
(each implemented by its module's ``add_cli_arguments``/``run_cli`` pair).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import typing
from collections.abc import Sequence

logger = logging.getLogger(__name__)

#: subcommand -> (module, add-arguments function, run function, help)
SUBCOMMANDS = {
    "train": ("training", "add_cli_arguments", "run_cli", "Fine-tune with packing (TRL SFTTrainer)."),
    "push-dataset": ("hub", "add_push_dataset_arguments", "run_push_dataset", "Publish a dataset to the Hub."),
    "push-model": ("hub", "add_push_model_arguments", "run_push_model", "Publish a tuned model to the Hub."),
    "evaluate": ("evaluation", "add_cli_arguments", "run_cli", "LongBench document-level evaluation."),
    "run": ("recipe", "add_cli_arguments", "run_cli", "Run a recipe: synthesize -> train -> evaluate -> push."),
}


def _parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def add_synthesize_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`SynthesisConfig` field (dicts as JSON, ``--endpoint`` repeatable)."""
    from .config import SynthesisConfig

    hints = typing.get_type_hints(SynthesisConfig)
    parser.add_argument("--output", required=True, help="Folder for parquet shards, report and settings.")
    parser.add_argument("--log-level", default="INFO")
    for f in dataclasses.fields(SynthesisConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = str(hints[f.name])
        kwargs: dict = {"dest": f.name, "default": None}
        if f.name == "endpoint":
            kwargs.update(nargs="+", help="TGI base URL(s); omit for the embedded transformers backend.")
        elif f.name == "seed":
            kwargs.update(required=True, help="Seed data: Hub id, file or folder.")
        elif "dict" in hint:
            kwargs.update(type=json.loads, help=f"{f.name} as JSON.")
        elif "bool" in hint:
            kwargs.update(type=_parse_bool, help=f"{f.name} (true/false).")
        elif "int" in hint and "float" not in hint:
            kwargs.update(type=int)
        elif "float" in hint:
            kwargs.update(type=float)
        parser.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace):
    """A :class:`SynthesisConfig` from the parsed ``--flags`` (unset flags keep their defaults)."""
    from .config import SynthesisConfig

    fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if isinstance(values.get("endpoint"), list) and len(values["endpoint"]) == 1:
        values["endpoint"] = values["endpoint"][0]
    return SynthesisConfig(**values)


def run_synthesize(args: argparse.Namespace) -> int:
    from .output import synthesize_to_directory

    config = config_from_args(args)
    if config.num_shards > 1:
        from .sharding import synthesize_shard

        if not config.generation_cache_dir:
            config.generation_cache_dir = args.output
        report = synthesize_shard(config)
        print(f"shard {config.shard_index}/{config.num_shards}: {report.summary()}")
        return 0 if report.failed == 0 else 1
    report = synthesize_to_directory(config, args.output)
    print(report.summary())
    return 0 if report.examples > 0 else 1


def run_merge(args: argparse.Namespace) -> int:
    from .sharding import merge_shards

    config = config_from_args(args)
    report = merge_shards(config, args.shard_cache, args.output)
    print(report.summary())
    return 0 if report.failed == 0 else 1


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``context-synthesis`` parser; ``only`` imports just that subcommand's module (fast start)."""
    parser = argparse.ArgumentParser(prog="context-synthesis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthesize", help="Synthesize contexts and write a dataset folder.")
    add_synthesize_arguments(syn)
    syn.set_defaults(_run=run_synthesize)
    merge = sub.add_parser("merge", help="Merge shard caches (synthesize --num-shards N) into one dataset.")
    add_synthesize_arguments(merge)
    merge.add_argument("--shard-cache", nargs="+", required=True, help="generations.sqlite of every shard.")
    merge.set_defaults(_run=run_merge)
    for name, (module, add_fn, run_fn, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(f"hf_context_synthesis.{module}")
            add, run = getattr(mod, add_fn), getattr(mod, run_fn)
        except (ImportError, AttributeError) as err:  # pragma: no cover - optional part missing
            logger.debug("subcommand %s unavailable: %s", name, err)
            continue
        p = sub.add_parser(name, help=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # clear one-line errors for the failures a user can act on
        from .backends.fleet import NoHealthyEndpointError
        from .pipeline import SynthesisError

        if isinstance(err, (NoHealthyEndpointError, SynthesisError, OSError)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
