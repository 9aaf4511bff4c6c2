"""The ``context-synthesis`` command line.

The parser, the verbosity flags, logging set-up and the error mapping. Each subcommand lives in its own
module of this package (``synthesize``, ``merge``, ``train``, ``push_dataset``, ``push_model``, ``evaluate``,
``run``, ``demo``, ``cache``) exposing ``add_arguments(parser)`` and ``run(args) -> int``; only the module of the
command at hand is imported.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ..utils.fields import closest_name

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Long-context instruction data from short instruction-answer pairs by context synthesis
(arXiv 2502.15592): an LLM writes the missing background document of every seed pair, each
example hides it among distractor documents, and fine-tuning trains on the answers with
long-sequence packing.

Start with 'context-synthesis demo' (offline, under a minute on a CPU), then
'context-synthesis run RECIPE.yaml --dry-run'. Every subcommand has --help."""

#: subcommand -> (module of hf_context_synthesis.cli with ``add_arguments(parser)`` and ``run(args)``, help)
COMMANDS = {
    "synthesize": ("synthesize", "Synthesize contexts and write a dataset folder."),
    "merge": ("merge", "Merge shard caches (synthesize --num-shards N) into one dataset."),
    "train": ("train", "Fine-tune with packing (TRL SFTTrainer)."),
    "push-dataset": ("push_dataset", "Publish a dataset to the Hub."),
    "push-model": ("push_model", "Publish a tuned model to the Hub."),
    "evaluate": ("evaluate", "LongBench document-level evaluation."),
    "run": ("run", "Run a recipe: synthesize -> train -> evaluate -> push."),
    "demo": ("demo", "The offline demo recipe (tiny model, loopback server)."),
    "cache": ("cache", "Rebuild a damaged generation cache (--rebuild PATH), keeping what can be read."),
}
#: built in full even when another command was asked for (light: they import only the settings)
ALWAYS_BUILT = ("synthesize", "merge")


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

    def error(self, message: str) -> typing.NoReturn:
        """A short error: one ``error: ...`` line and where the flags are documented (``--help``), not the
        whole usage text (argparse's default prints every flag of the command first)."""
        self.exit(2, f"error: {message}\n{help_pointer(self.prog)}\n")


def help_pointer(prog: str) -> str:
    """The line after an argument error: where every flag is documented."""
    return f"(see '{prog} --help' for every flag)"


def add_spelling_aliases(parser: argparse.ArgumentParser) -> None:
    """Accept ``--max-seeds`` and ``--max_seeds`` alike for every long flag of ``parser`` (TRL's scripts use
    underscores, this CLI dashes). The other spelling is a hidden alias: ``--help`` lists the flag once."""
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            name = option[2:]
            for other in ("--" + name.replace("-", "_"), "--" + name.replace("_", "-")):
                if other not in parser._option_string_actions:
                    parser._option_string_actions[other] = action


def unknown_flags(parser: argparse.ArgumentParser, command: str | None, argv: Sequence[str]) -> list[str]:
    """The flags of ``argv`` that neither the top-level parser nor ``command``'s subparser knows, each with
    a "did you mean" suggestion when one is close (``"--outpt; did you mean --output?"``). Checked before
    parsing so that a typo is reported first, not after a "required" error it caused."""
    known = dict(parser._option_string_actions)
    target = _subparser(parser, command)
    known.update(target._option_string_actions)
    visible = [s for a in target._actions for s in a.option_strings]
    found = []
    for item in argv:
        if item == "--":
            break
        if not item.startswith("-") or re.fullmatch(r"-\d[\d.e+-]*", item) or item == "-":
            continue
        flag = item.split("=", 1)[0]
        if flag in known or (not flag.startswith("--") and all(f"-{c}" in known for c in flag[1:])):
            continue  # a known flag, or short flags together (-vv, -qv)
        hint = closest_name(flag, visible)
        found.append(flag + (f"; did you mean {hint}?" if hint else ""))
    return found


def add_verbosity_arguments(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``/``-q`` (repeatable) on the top-level parser and on every subcommand."""
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="More log output (-v: debug lines of this package, -vv: of every library).")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="Less log output (-q: warnings and errors only, -qq: errors only).")


def _version() -> str:
    from .._version import __version__

    return f"context-synthesis (hf-context-synthesis) {__version__}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``context-synthesis`` parser; ``only`` imports just that subcommand's module (fast start)."""
    parser = ArgumentParser(prog="context-synthesis", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_version())
    add_verbosity_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only and name not in ALWAYS_BUILT:
            sub.add_parser(name, help=help_text)  # listed in --help; its module is not imported
            continue
        command = importlib.import_module(f"{__package__}.{module}")
        p = sub.add_parser(name, help=help_text, description=getattr(command, "DESCRIPTION", help_text))
        command.add_arguments(p)
        add_verbosity_arguments(p)
        add_spelling_aliases(p)
        p.set_defaults(_run=command.run)
    return parser


def configure_logging(args: argparse.Namespace, *, file_level: int | None = None) -> None:
    """Root logging from ``-v``/``-q``/``--log-level``; third-party chatter kept down.

    Default: INFO for this package, WARNING for other libraries; httpx/httpcore request lines only
    with ``-vv``. huggingface_hub's and datasets' own handlers stop propagating so each of their
    warnings is printed once, not twice. ``file_level`` (the run's log file, :class:`RunLog`) keeps this
    package's records down to that level flowing while the console handler shows only the console level
    (``-q``: warnings on the console, INFO in the file).
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
        logging.basicConfig(format=LOG_FORMAT)
        root.handlers[0]._context_synthesis_console = True  # type: ignore[attr-defined]
    for handler in root.handlers:
        if getattr(handler, "_context_synthesis_console", False):
            handler.setLevel(level)  # the console shows the -v/-q level whatever the log file takes
    root.setLevel(root_level)
    logging.getLogger("hf_context_synthesis").setLevel(level if file_level is None else min(level, file_level))
    noisy_level = logging.DEBUG if verbose >= 2 else max(level, logging.WARNING)
    for name in ("httpx", "httpcore", "urllib3", "filelock", "asyncio", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(noisy_level)
    for name in ("huggingface_hub", "datasets"):
        lib = logging.getLogger(name)
        if lib.handlers:
            lib.propagate = False
        lib.setLevel(max(level, logging.WARNING) if verbose < 2 else logging.DEBUG)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The log file every run writes into its folder (:class:`RunLog`).
LOG_FILE = "context-synthesis.log"
#: Subcommands with a run folder, which gets :data:`LOG_FILE`.
LOGGED_COMMANDS = ("synthesize", "merge", "train", "evaluate", "run", "demo")


class RunLog:
    """The log file of one command, ``<run folder>/context-synthesis.log``.

    Records go to a temporary file from the start (this package's at INFO, or DEBUG with ``-v``; other
    libraries' warnings), whatever ``-q`` does to the console; tokens are redacted as on the console
    (:class:`~hf_context_synthesis.utils.secrecy.SecretFilter`). :meth:`finish` appends them to the log
    file of the run folder (a rerun adds to it below a header line) when the run wrote something there:
    a run refused at its checks leaves the folder exactly as it was, a failed first run that leaves no
    folder behind leaves no log file either, and ``--dry-run`` writes none.

    Args:
        level: The file's level.
        argv: The command line (its first line, redacted).
        folder: The run folder when it is known at the start (its contents are compared at the end).
    """

    def __init__(self, level: int, argv: Sequence[str], folder: str | None = None) -> None:
        import os
        import tempfile

        from ..utils.secrecy import SecretFilter, redact

        self.folder, self.before = folder, folder_state(folder)

        fd, self.path = tempfile.mkstemp(prefix="context-synthesis-", suffix=".log")
        os.close(fd)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setLevel(level)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.addFilter(SecretFilter())
        logging.getLogger().addHandler(self.handler)
        self.note(logging.INFO, redact(f"{_version()}: context-synthesis {' '.join(argv)}"))

    def note(self, level: int, message: str, exc_info: Any = None) -> None:
        """Write one line into this log only (the console has already shown it, or should not)."""
        record = logging.LogRecord("hf_context_synthesis.cli", level, __file__, 0, message, None, exc_info)
        self.handler.handle(record)

    def finish(self, folder: str | None) -> str | None:
        """Stop logging; append the records to ``folder``'s :data:`LOG_FILE` (when ``folder`` exists).
        Returns the log file's path, or ``None`` when there was no folder to write into."""
        import os
        import shutil

        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        changed = folder != self.folder or folder_state(folder) != self.before
        target = os.path.join(folder, LOG_FILE) if folder and os.path.isdir(folder) and changed else None
        try:
            if target is not None:
                with open(self.path, "rb") as src, open(target, "ab") as dst:
                    shutil.copyfileobj(src, dst)
        except OSError as err:  # a full or read-only disk: the run's outcome stands, say where the log is not
            print(f"warning: could not write {target}: {err.strerror or err}", file=sys.stderr)
            target = None
        finally:
            os.unlink(self.path)
        return target


def folder_state(folder: str | None) -> frozenset[tuple[str, int, int]] | None:
    """What a run could have changed in ``folder``: name, mtime and size of each entry (hidden entries
    such as lock files and the log itself left out); ``None`` when it does not exist."""
    import os

    if not folder or not os.path.isdir(folder):
        return None
    state = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == LOG_FILE or entry.name.startswith("."):
                continue
            info = entry.stat(follow_symlinks=False)
            state.add((entry.name, info.st_mtime_ns, info.st_size))
    return frozenset(state)


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _unknown_arguments_error(parser: argparse.ArgumentParser, command: str | None, extras: Sequence[str],
                             flags: list[str] | None = None) -> None:
    """Exit with the unknown ``flags`` (default: those of ``extras``), else with ``extras`` unrecognized."""
    target = _subparser(parser, command)
    flags = unknown_flags(parser, command, extras) if flags is None else flags
    if flags:
        target.error(f"unknown flag{'s' if len(flags) > 1 else ''} " + ", ".join(flags))
    target.error("unrecognized arguments: " + " ".join(extras))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # import only the module of the subcommand at hand (--help imports none)
    parser = build_parser(only=command if command in COMMANDS else "")
    if command in COMMANDS and "-h" not in argv and "--help" not in argv:
        typos = unknown_flags(parser, command, argv)
        if typos:  # before parsing: a mistyped --output is reported as such, not as "--output is required"
            _unknown_arguments_error(parser, command, argv, typos)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_arguments_error(parser, command, extras)
    verbose = int(getattr(args, "verbose", 0) or 0)
    logged = command in LOGGED_COMMANDS and not getattr(args, "dry_run", False)
    file_level = logging.DEBUG if verbose else logging.INFO
    configure_logging(args, file_level=file_level if logged else None)
    run_log = RunLog(file_level, argv, _planned_folder(args)) if logged else None
    restore_console = None
    if int(getattr(args, "quiet", 0) or 0) and not verbose:
        from ..utils.progress import quiet_console

        restore_console = quiet_console()  # no progress bars, no printed Trainer step dicts
    if command in ("train", "evaluate", "run", "demo") or getattr(args, "endpoint", "") is None:
        _never_prompt_for_remote_code()  # these load models with transformers
    try:
        return int(args._run(args) or 0)
    except Exception as err:  # clear one-line errors for the failures a user can act on
        expected = _expected_failure(err, args)
        if expected is None:
            if run_log is not None:
                run_log.note(logging.ERROR, "failed with an unexpected error", exc_info=sys.exc_info())
            raise  # a bug: keep the traceback
        from ..utils.secrecy import redact

        message, code = expected
        print(f"error: {redact(message)}", file=sys.stderr)
        if run_log is not None:
            run_log.note(logging.ERROR, f"error: {redact(message)}")
        return code
    finally:
        if restore_console is not None:
            restore_console()
        if run_log is not None:
            run_log.finish(run_folder(args))


def _planned_folder(args: argparse.Namespace) -> str | None:
    """The run folder as known before the command runs: its module's ``planned_folder(args)`` (``run``,
    ``demo``, ``train``: from the recipe or ``--config``) or :func:`run_folder`; ``None`` when unknown."""
    module = sys.modules.get(getattr(getattr(args, "_run", None), "__module__", ""))
    planned = getattr(module, "planned_folder", None)
    if planned is None:
        return run_folder(args)
    try:
        return planned(args)
    except Exception:  # a bad recipe or config: the command itself reports it
        return None


def run_folder(args: argparse.Namespace) -> str | None:
    """The folder a command writes into (where :data:`LOG_FILE` goes): what the subcommand recorded in
    ``args.run_folder`` once it knew it (``run``/``demo``: the recipe's ``output_dir``; ``train``: its
    output, which may come from ``--config``), else ``--output``."""
    for name in ("run_folder", "output", "output_dir"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            return value
    return None


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
        from ..utils.values import yaml_error_message

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
        from ..synthesis.cache import write_error_for

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
    from ..backends.fleet import NoHealthyEndpointError
    from ..synthesis.report import SynthesisError

    if isinstance(err, (NoHealthyEndpointError, SynthesisError)):
        return text, 1
    return None


if __name__ == "__main__":
    sys.exit(main())
