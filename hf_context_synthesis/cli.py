"""The ``context-synthesis`` command line.

Subcommands: ``synthesize`` and ``merge`` (here), ``train``, ``push-dataset``, ``push-model``,
``evaluate``, ``run`` (a whole recipe) and ``demo`` (the offline demo recipe); each other module
provides an ``add_cli_arguments``/``run_cli`` pair.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cli_args import add_dataclass_arguments, did_you_mean, parse_bool

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Long-context instruction data from short instruction-answer pairs by context synthesis
(arXiv 2502.15592): an LLM writes the missing background document of every seed pair, each
example hides it among distractor documents, and fine-tuning trains on the answers with
long-sequence packing.

Start with 'context-synthesis demo' (offline, under a minute on a CPU), then
'context-synthesis run RECIPE.yaml --dry-run'. Every subcommand has --help."""

#: subcommand -> (module, add-arguments function, run function, help)
SUBCOMMANDS = {
    "train": ("training", "add_cli_arguments", "run_cli", "Fine-tune with packing (TRL SFTTrainer)."),
    "push-dataset": ("hub", "add_push_dataset_arguments", "run_push_dataset", "Publish a dataset to the Hub."),
    "push-model": ("hub", "add_push_model_arguments", "run_push_model", "Publish a tuned model to the Hub."),
    "evaluate": ("evaluation", "add_cli_arguments", "run_cli", "LongBench document-level evaluation."),
    "run": ("recipe", "add_cli_arguments", "run_cli", "Run a recipe: synthesize -> train -> evaluate -> push."),
    "demo": ("testing.demo", "add_cli_arguments", "run_cli", "The offline demo recipe (tiny model, loopback server)."),
}
LOCAL_SUBCOMMANDS = ("synthesize", "merge")

# kept for callers of the old private name
_parse_bool = parse_bool


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and shows each option's default when its help does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text
            and default not in (None, False, argparse.SUPPRESS, [], "")
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._CountAction))
        ):
            text += " [default: %(default)s]"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with this CLI's formatter and no abbreviated flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # a typo is an error with a suggestion, not a silent prefix match
        super().__init__(*args, **kwargs)
        self.before_help: Callable[[], None] | None = None

    def format_help(self) -> str:
        if self.before_help is not None:
            hook, self.before_help = self.before_help, None
            hook()
        return super().format_help()


def add_verbosity_arguments(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``/``-q`` (repeatable) on the top-level parser and on every subcommand."""
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="More log output (-v: debug lines of this package, -vv: of every library).")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="Less log output (-q: warnings and errors only, -qq: errors only).")


def add_synthesize_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`SynthesisConfig` field (help from its field docs), plus ``--output``
    and ``--dry-run``."""
    from .config import SynthesisConfig

    parser.add_argument("--output", required=True, help="Folder for the parquet shards, dataset card, report and settings.")
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

    from .config import SynthesisConfig

    fields = {f.name for f in dataclasses.fields(SynthesisConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if isinstance(values.get("endpoint"), list) and len(values["endpoint"]) == 1:
        values["endpoint"] = values["endpoint"][0]
    return SynthesisConfig(**values)


def _remove_empty_dirs(path: Path) -> None:
    """Remove ``path`` when nothing worth keeping lives below it (see
    :func:`~hf_context_synthesis.artifacts.remove_if_nothing_kept`)."""
    from .artifacts import remove_if_nothing_kept

    remove_if_nothing_kept(path)


def exit_code(report: Any, *, fail_on_failures: bool = False) -> int:
    """The one exit-code rule of every command that synthesizes (``synthesize``, shards, ``merge``, ``run``).

    0 when the run completed: every seed is accounted for in the report, failures included (a
    near-duplicate drop or a server error on some seeds does not stop a pipeline). 1 when it could not
    complete: nothing was synthesized although seeds needed it, shards were missing from a merge,
    or (with ``--fail-on-failures``) any seed failed.
    """
    if getattr(report, "missing_shards", None):
        return 1
    if getattr(report, "requested", 0) > 0 and getattr(report, "synthesized", 0) == 0:
        return 1
    if fail_on_failures and getattr(report, "failed", 0) > 0:
        return 1
    return 0


def keep_no_empty_folder(path: str | os.PathLike[str], action: Callable[[], Any]) -> Any:
    """Run ``action``; if it fails and ``path`` did not exist before, remove what is left of it when
    it holds no file (a failed first run leaves no empty output folder behind)."""
    target = Path(path)
    existed = target.exists()
    try:
        return action()
    except BaseException:
        if not existed:
            _remove_empty_dirs(target)
        raise


def run_synthesize(args: argparse.Namespace) -> int:
    from .dry_run import check_synthesis_inputs, dry_run_synthesis

    config = config_from_args(args)
    hint = "--generator-model NAME_OR_PATH"
    if args.dry_run:  # every input check and the plan; all problems at once
        print(dry_run_synthesis(config, args.output, step="synthesize", setting_hint=hint).to_text())
        return 0
    check_synthesis_inputs(config, step="synthesize", setting_hint=hint, output_dir=args.output)
    if config.num_shards > 1:
        from .sharding import synthesize_shard

        if not config.generation_cache_dir:
            config.generation_cache_dir = args.output
        report = keep_no_empty_folder(args.output, lambda: synthesize_shard(config))
        print(f"shard {config.shard_index}/{config.num_shards}: {report.summary(include_examples=False)}")
        return exit_code(report, fail_on_failures=args.fail_on_failures)
    from .artifacts import write_dataset_card
    from .output import synthesize_to_directory

    report = keep_no_empty_folder(args.output, lambda: synthesize_to_directory(config, args.output))
    if report.examples > 0:
        write_dataset_card(args.output)
    print(report.summary())
    return exit_code(report, fail_on_failures=args.fail_on_failures)


def run_merge(args: argparse.Namespace) -> int:
    from .artifacts import write_dataset_card
    from .sharding import merge_shards

    config = config_from_args(args)
    report = keep_no_empty_folder(args.output, lambda: merge_shards(config, args.shard_cache, args.output))
    if getattr(report, "examples", 0):
        write_dataset_card(args.output)
    print(report.summary())
    if report.missing_shards:
        print(f"error: shards missing from the merge: {', '.join(map(str, report.missing_shards))} "
              f"(re-run them with --shard-index, then merge again)", file=sys.stderr)
    return exit_code(report, fail_on_failures=args.fail_on_failures)


def _version() -> str:
    from . import __version__

    return f"context-synthesis (hf-context-synthesis) {__version__}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``context-synthesis`` parser; ``only`` imports just that subcommand's module (fast start)."""
    parser = ArgumentParser(prog="context-synthesis", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    add_verbosity_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    syn = sub.add_parser("synthesize", help="Synthesize contexts and write a dataset folder.",
                         description="Synthesize contexts for seed pairs and write a dataset folder (parquet shards, "
                                     "dataset card, report).")
    add_synthesize_arguments(syn)
    add_verbosity_arguments(syn)
    syn.set_defaults(_run=run_synthesize)
    merge = sub.add_parser("merge", help="Merge shard caches (synthesize --num-shards N) into one dataset.",
                           description="Merge the generation caches of shards into one dataset folder (no request).")
    add_synthesize_arguments(merge)
    merge.add_argument("--shard-cache", nargs="+", required=True, help="generations.sqlite of every shard.")
    add_verbosity_arguments(merge)
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
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        add_verbosity_arguments(p)
        if name == "train":
            _show_train_defaults(p)
            run = _with_train_preflight(run)
        elif name == "evaluate":
            run = _with_evaluate_preflight(run)
        p.set_defaults(_run=run)
    return parser


def _show_train_defaults(parser: argparse.ArgumentParser) -> None:
    """``train``'s flags keep no argparse default (they are layered over ``--config``); when help is
    printed, show the effective defaults (``default_sft_config``'s ``SFTConfig`` and the
    ``TrainingJobArguments`` defaults) in each flag's help instead."""

    def annotate() -> None:
        import dataclasses

        from .cli_args import field_default
        from .training import TrainingJobArguments, default_sft_config

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


def _with_train_preflight(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``train`` checks its base model and dataset path before loading anything."""

    def run_train(args: argparse.Namespace) -> int:
        from .dry_run import SetupProblems, check_model, check_seed_source

        problems = SetupProblems("train")
        for attr in ("model_name_or_path", "model"):
            model = getattr(args, attr, None)
            if isinstance(model, str) and model:
                with problems.check(f"--{attr.replace('_', '-')}"):
                    check_model(model, what="base model", step="train", setting_hint=f"--{attr} NAME_OR_PATH")
                break
        for attr in ("dataset_name", "dataset"):
            data = getattr(args, attr, None)
            if isinstance(data, str) and data:
                with problems.check(f"--{attr.replace('_', '-')}"):
                    check_seed_source(data, step="train", setting_hint=f"--{attr} FOLDER_OR_ID", what="training data",
                                      probe_hub=False)
                break
        problems.raise_if_any()
        return run(args)

    return run_train


def _with_evaluate_preflight(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``evaluate`` checks the model, tokenizer and data folder before loading anything."""

    def run_evaluate(args: argparse.Namespace) -> int:
        from .dry_run import RunSetupError, SetupProblems, check_model

        problems = SetupProblems("evaluate")
        data_dir = getattr(args, "data_dir", None)
        hub_id = isinstance(data_dir, str) and re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", data_dir)
        if isinstance(data_dir, str) and not os.path.exists(data_dir) and not hub_id:
            problems.add("--data-dir", (
                f"evaluate: --data-dir {data_dir!r} is not a folder of LongBench <task>.jsonl files, a data.zip "
                "or a Hub dataset id (see the README: Seeds and LongBench data)"
            ))
        elif isinstance(data_dir, str) and getattr(args, "suite", "longbench") == "longbench":
            from .longbench import probe_data

            with problems.check("--data-dir"):
                try:  # the folder / archive / Hub dataset holds the requested tasks
                    probe_data(data_dir, getattr(args, "tasks", None))
                except OSError as err:
                    raise RunSetupError(f"evaluate: {err}") from None
        model = getattr(args, "model", None)
        if isinstance(model, str) and model:
            with problems.check("--model"):
                check_model(model, what="model", step="evaluate", setting_hint="--model NAME_OR_PATH")
        tokenizer = getattr(args, "tokenizer", None)
        if isinstance(tokenizer, str) and tokenizer:
            with problems.check("--tokenizer"):
                check_model(tokenizer, what="tokenizer", step="evaluate", setting_hint="--tokenizer NAME_OR_PATH",
                            kind="tokenizer")
        problems.raise_if_any()
        return run(args)

    return run_evaluate


def configure_logging(args: argparse.Namespace) -> None:
    """Root logging from ``-v``/``-q``/``--log-level``; third-party chatter kept down.

    Default: INFO for this package, WARNING for other libraries; httpx/httpcore request lines only
    with ``-vv``. huggingface_hub's and datasets' own handlers stop propagating so each of their
    warnings is printed once, not twice.
    """
    verbose, quiet = int(getattr(args, "verbose", 0) or 0), int(getattr(args, "quiet", 0) or 0)
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING if quiet == 1 else logging.ERROR
    explicit = str(getattr(args, "log_level", "INFO") or "INFO").upper()
    if explicit != "INFO":
        level = getattr(logging, explicit, level)
    root_level = logging.WARNING if level < logging.WARNING and verbose < 2 else level
    root = logging.getLogger()
    if not root.handlers:  # keep handlers the host process installed (e.g. pytest's)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(root_level)
    logging.getLogger("hf_context_synthesis").setLevel(level)
    noisy_level = logging.DEBUG if verbose >= 2 else max(level, logging.WARNING)
    for name in ("httpx", "httpcore", "urllib3", "filelock", "asyncio", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(noisy_level)
    for name in ("huggingface_hub", "datasets"):
        lib = logging.getLogger(name)
        if lib.handlers:
            lib.propagate = False
        lib.setLevel(max(level, logging.WARNING) if verbose < 2 else logging.DEBUG)


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _unknown_arguments_error(parser: argparse.ArgumentParser, command: str | None, extras: list[str]) -> None:
    target = _subparser(parser, command)
    options = [s for a in target._actions for s in a.option_strings]
    parts = []
    for item in extras:
        flag = item.split("=", 1)[0]
        parts.append(item + (did_you_mean(flag, options) if flag.startswith("-") else ""))
    target.error("unrecognized arguments: " + " ".join(parts))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # import only the module of the subcommand at hand (synthesize/merge/--help import none)
    parser = build_parser(only=command if command in SUBCOMMANDS else "")
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_arguments_error(parser, command, extras)
    configure_logging(args)
    if command in ("train", "evaluate", "run", "demo") or getattr(args, "endpoint", "") is None:
        _never_prompt_for_remote_code()  # these load models with transformers
    try:
        return int(args._run(args) or 0)
    except Exception as err:  # clear one-line errors for the failures a user can act on
        expected = _expected_failure(err, args)
        if expected is None:
            raise  # a bug: keep the traceback
        from .secrecy import redact

        message, code = expected
        print(f"error: {redact(message)}", file=sys.stderr)
        return code


def _never_prompt_for_remote_code() -> None:
    """A model with custom code is refused unless ``trust_remote_code`` is set: transformers' interactive
    "Do you wish to run the custom code? [y/N]" prompt (where a shared recipe's model could be run with
    one keystroke) is turned off for this process, so loading fails at once with one error line."""
    try:
        import transformers.dynamic_module_utils as dynamic
    except ImportError:  # pragma: no cover - transformers missing: nothing loads models
        return
    dynamic.TIME_OUT_REMOTE_CODE = 0


def _expected_failure(err: Exception, args: argparse.Namespace) -> tuple[str, int] | None:
    """``(message, exit code)`` of a failure a user can act on (2: bad settings, 1: the run could not
    go on), or ``None`` for anything else. Library errors known to span lines (refused pickles and
    remote code, YAML errors, full or read-only disks) become one line naming what to do."""
    import errno
    import pickle
    import sqlite3

    text = str(err)
    model = next((v for v in (getattr(args, "model", None), getattr(args, "model_name_or_path", None))
                  if isinstance(v, str) and v), None)
    if type(err).__module__.startswith("yaml"):
        from .values import yaml_error_message

        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        return yaml_error_message(getattr(mark, "name", None) or "YAML input", err), 2
    if isinstance(err, pickle.UnpicklingError):
        detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        return (f"refused to load pickled weights{f' of {model}' if model else ''} (torch.load with "
                f"weights_only=True{': ' + detail if detail else ''}): a .bin/.pt checkpoint can run code when it "
                f"is loaded; use its safetensors weights (model.safetensors), or convert a copy you trust", 1)
    if isinstance(err, ValueError) and "trust_remote_code" in text:
        found = re.search(r"The repository (\S+) ", text)
        repo = found.group(1) if found else model or "the model"
        return (f"{repo} contains custom code that loading it would run; refused (trust_remote_code is off): use a "
                f"model whose architecture transformers ships, or set trust_remote_code only for code you have read "
                f"and trust", 1)
    if isinstance(err, (ValueError, TypeError)):
        return text, 2
    if isinstance(err, sqlite3.Error):
        from .cache import write_error_for

        cache_error = write_error_for(err, None)
        return (cache_error.strerror, 1) if cache_error is not None else None
    if isinstance(err, OSError):
        if type(err).__module__ != "builtins" or err.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES):
            return text, 1
        where = f": {err.filename}" if err.filename else ""
        if err.errno == errno.ENOSPC:
            hint = ("free space on the disk of the output folder, the generation cache or HF_HOME and rerun "
                    "(finished generations are reused)")
        else:
            hint = "choose a writable output folder, generation_cache_dir or HF_HOME (read-only file system or no permission)"
        return f"{err.strerror or text}{where}: {hint}", 1
    from .backends.fleet import NoHealthyEndpointError
    from .pipeline import SynthesisError

    if isinstance(err, (NoHealthyEndpointError, SynthesisError)):
        return text, 1
    return None


if __name__ == "__main__":
    sys.exit(main())
