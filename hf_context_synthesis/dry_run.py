"""Fail before spending: check what a run needs, and say what it would do (``--dry-run``).

:func:`check_model` proves that a model or tokenizer id resolves (a local folder, or a Hub id whose
``config.json`` can be fetched or is in the local cache) and otherwise raises one
:class:`RunSetupError` line naming the model, the recipe step and the fixes. :func:`check_synthesis_inputs`
applies it, with the seed and output paths, to a :class:`~hf_context_synthesis.config.SynthesisConfig`.
:func:`plan_synthesis` computes what ``synthesize``/``run`` would do: seeds per task, requests to make
vs already cached, an estimate of the tokens in and out, and the files it would write; with an
endpoint it runs the run's own :func:`~hf_context_synthesis.preflight.run_preflight` (reachability,
model id, context window) first.

Problems are collected, not raised one by one: :class:`SetupProblems` gathers every problem the
checks find (each naming its setting) and raises them together as one :class:`RunSetupError` whose
message has one line per problem, so a ``--dry-run`` lists everything to fix in one go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Rough characters per token for the estimate when no tokenizer is at hand (English text).
CHARS_PER_TOKEN = 4.0
#: Rough tokens per English word (the output estimate from ``context_words``).
TOKENS_PER_WORD = 4 / 3

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class Problem:
    """One thing a run needs that is missing, unreachable or wrong.

    Args:
        setting: The setting or flag it concerns (``synthesis.seed``, ``evaluation.data_dir``, ``--seed``).
        message: What is wrong and how to fix it (one line).
        bad_value: ``True`` for a value that is invalid in itself (a settings error, exit 2); ``False`` for
            something missing or unreachable (a file, a model, an endpoint, a token; exit 1).
    """

    setting: str
    message: str
    bad_value: bool = False

    def line(self) -> str:
        """``"<setting>: <message>"`` (the message alone when it already starts with the setting)."""
        if not self.setting or self.message.startswith(f"{self.setting}:"):
            return self.message
        return f"{self.setting}: {self.message}"


def _problems_message(context: str, problems: Sequence[Problem]) -> str:
    if len(problems) == 1:
        return problems[0].line()
    return f"{context} found {len(problems)} problems:\n" + "\n".join(f"  - {p.line()}" for p in problems)


class RunSetupError(OSError):
    """Something a run needs is missing or unreachable (a model, a path, a token); found before any
    generation or training. An ``OSError`` like the loading error it replaces: the CLI prints it as an
    ``error:`` message and exits 1 (bad settings exit 2).

    :attr:`problems` lists every :class:`Problem` found (empty when raised with a plain message); the
    message then has one line per problem (see :class:`SetupProblems`).
    """

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class SetupValueError(ValueError):
    """Like :class:`RunSetupError`, when every problem found is an invalid value (the CLI exits 2)."""

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class SetupProblems:
    """Collects the problems of many checks and raises them together.

    Each check runs inside :meth:`check` (``with problems.check("synthesis.seed"): ...``): a
    :class:`RunSetupError`, another ``OSError`` (unreachable endpoint, permission), or a ``ValueError`` /
    ``TypeError`` (a bad value) raised inside is recorded as a :class:`Problem` of that setting and the
    next check runs. :meth:`raise_if_any` then raises one :class:`RunSetupError` listing all of them
    (``"<context> found N problems:"`` followed by ``"  - <setting>: <message>"`` lines; a single
    problem is its one line), or a :class:`SetupValueError` when every problem is a bad value.

    Args:
        context: What was checked, for the first line (``"recipe --dry-run"``, ``"synthesize"``).
    """

    def __init__(self, context: str) -> None:
        self.context = context
        self.problems: list[Problem] = []

    def __bool__(self) -> bool:
        return bool(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def add(self, setting: str, message: str, *, bad_value: bool = False) -> None:
        """Record one problem (``message``: one line naming the value and the fix)."""
        text = re.sub(r"\s*\n\s*", " ", str(message).strip()) or "failed"
        problem = Problem(setting, text, bad_value)
        if problem not in self.problems:
            self.problems.append(problem)
            logger.debug("setup problem: %s", problem.line())

    def about(self, *settings: str) -> bool:
        """Whether a problem of any of ``settings`` was recorded."""
        return any(p.setting in settings for p in self.problems)

    @contextlib.contextmanager
    def check(self, setting: str) -> Iterator[None]:
        """Run the ``with`` block; record what it raises as a problem of ``setting`` (see the class doc)."""
        try:
            yield
        except (RunSetupError, SetupValueError) as err:
            if err.problems:
                for p in err.problems:
                    self.add(p.setting, p.message, bad_value=p.bad_value)
            else:
                self.add(setting, str(err), bad_value=isinstance(err, ValueError))
        except (ValueError, TypeError) as err:
            self.add(setting, str(err) or type(err).__name__, bad_value=True)
        except OSError as err:
            self.add(setting, str(err) or type(err).__name__)

    def error(self) -> Exception | None:
        """The exception listing every problem, or ``None`` when there is none."""
        if not self.problems:
            return None
        message = _problems_message(self.context, self.problems)
        if all(p.bad_value for p in self.problems):
            return SetupValueError(message, self.problems)
        return RunSetupError(message, self.problems)

    def raise_if_any(self) -> None:
        """Raise :meth:`error` when any problem was recorded."""
        err = self.error()
        if err is not None:
            raise err


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = re.sub(r"\s+", " ", text)[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_model(name: str, *, what: str, step: str, setting_hint: str, kind: str = "model") -> str:
    """Raise :class:`RunSetupError` unless ``name`` loads: a local folder with a config/tokenizer file,
    or a Hub id whose ``config.json`` (``tokenizer_config.json`` for ``kind="tokenizer"``) can be had
    from the Hub or the local cache (``HF_HUB_OFFLINE=1`` uses the cache only). Returns the kind of
    source found (``"local"`` or ``"hub"``)."""
    expanded = os.path.expanduser(str(name))
    wanted = ("tokenizer_config.json", "tokenizer.json", "config.json") if kind == "tokenizer" else ("config.json",)
    fix = (
        f"Fix: download it once with network access and set HF_HUB_OFFLINE=1, pass a local folder "
        f"(save_pretrained output), or choose another with {setting_hint}"
    )
    if os.path.isdir(expanded):
        if not any(os.path.isfile(os.path.join(expanded, w)) for w in wanted):
            raise RunSetupError(f"{step}: {what} {name!r} is a folder without {wanted[0]}. {fix}")
        return "local"
    looks_local = expanded.startswith((".", "/", "~")) or os.sep in expanded.strip("/").replace("/", "", 1) \
        or not _HUB_ID.match(expanded)
    if looks_local:
        raise RunSetupError(f"{step}: {what} {name!r} is not a folder on this machine. {fix}")
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    for filename in wanted:  # the local cache first: no network needed
        if isinstance(try_to_load_from_cache(str(name), filename), str):
            return "cache"
    if constants.HF_HUB_OFFLINE:
        raise RunSetupError(f"{step}: {what} {name!r} is not in the local Hub cache and HF_HUB_OFFLINE is set. {fix}")
    reason = "not found"
    for filename in wanted:  # one HEAD request, no retries: a machine without network fails in seconds
        try:
            get_hf_file_metadata(hf_hub_url(str(name), filename), timeout=10)
            return "hub"
        except Exception as err:  # noqa: BLE001 - any failure means "cannot load"; the reason is shown
            kind = type(err).__name__
            if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                reason = f"the repository has no {filename}"
                continue  # the repo exists but lacks this file: try the next one
            reason = _REASONS.get(kind) or _short(err)
            if kind not in _REASONS and not getattr(err, "response", None):
                reason = f"the Hub cannot be reached and it is not in the local cache ({_short(err)})"
            break
    raise RunSetupError(f"{step}: cannot load {what} {name!r}: {reason}. {fix}")


_REASONS = {
    "RepositoryNotFoundError": "no such model repository on the Hub (or it is private: log in with `hf auth login`)",
    "GatedRepoError": "the repository is gated: accept its conditions on the Hub and log in with `hf auth login`",
    "LocalEntryNotFoundError": "the Hub cannot be reached and it is not in the local cache",
    "OfflineModeIsEnabled": "it is not in the local cache and HF_HUB_OFFLINE is set",
}


def _check_writable(path: str | os.PathLike[str], step: str) -> None:
    target = Path(path).resolve()
    parent = target
    while not parent.exists():
        parent = parent.parent
    if target.exists() and not target.is_dir():
        raise RunSetupError(f"{step}: output {str(path)!r} exists and is not a folder")
    if not os.access(parent, os.W_OK):
        raise RunSetupError(f"{step}: cannot write under {str(parent)!r} (output {str(path)!r})")


def _check_readable(path: str, *, step: str, what: str) -> None:
    """A local file can be opened, a local folder listed (a seed folder must hold seed files)."""
    try:
        if os.path.isdir(path):
            names = os.listdir(path)
            if what == "seed data":
                from .seeds import list_seed_files

                files = list_seed_files(path)
            else:
                files = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
            unreadable = [f for f in files if not os.access(f, os.R_OK)]
            if unreadable:
                raise RunSetupError(f"{step}: {what} file {unreadable[0]!r} cannot be read (permission denied)")
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except RunSetupError:
        raise
    except ValueError as err:  # a seed folder without seed files
        raise RunSetupError(f"{step}: {err}") from None
    except OSError as err:
        raise RunSetupError(f"{step}: {what} {path!r} cannot be read ({err.strerror or _short(err)})") from None


def check_hub_dataset(repo_id: str, *, step: str, what: str, revision: str | None = None,
                      token: str | bool | None = None) -> list[str]:
    """Raise :class:`RunSetupError` unless the Hub (``HF_ENDPOINT``) has the dataset ``repo_id`` at
    ``revision``; returns its file names. Offline (``HF_HUB_OFFLINE=1``) the local Hub cache is asked
    instead (a snapshot downloaded before); nothing is downloaded."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached, whatever the library calls it
            raise RunSetupError(
                f"{step}: {what} {repo_id!r} is not in the local Hub cache and HF_HUB_OFFLINE is set; "
                "download it once with network access or pass a local folder"
            ) from None
        return [str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file()]
    try:
        info = HfApi(endpoint=constants.ENDPOINT).dataset_info(repo_id, revision=revision, token=token, timeout=10)
    except Exception as err:  # noqa: BLE001 - any failure means "cannot read it"; the reason is shown
        kind = type(err).__name__
        reasons = {
            "RepositoryNotFoundError": "no such dataset repository on the Hub (or it is private: log in with "
                                       "`hf auth login`)",
            "RevisionNotFoundError": f"the dataset has no revision {revision!r}",
            "GatedRepoError": "the dataset is gated: accept its conditions on the Hub and log in",
            "HFValidationError": "not a valid Hub dataset id",
        }
        reason = reasons.get(kind) or f"the Hub ({constants.ENDPOINT}) cannot be reached ({_short(err)})"
        raise RunSetupError(f"{step}: cannot read {what} {repo_id!r} from the Hub: {reason}") from None
    return [s.rfilename for s in (info.siblings or [])]


def check_seed_source(source: Any, *, step: str, setting_hint: str, what: str = "seed data",
                      revision: str | None = None, probe_hub: bool = True) -> None:
    """A local seed/document path must exist and be readable; a Hub dataset id must exist on the Hub
    (``probe_hub``, when online; see :func:`check_hub_dataset`)."""
    if source is None or not isinstance(source, (str, os.PathLike)):
        return
    text = os.fspath(source)
    if os.path.exists(os.path.expanduser(text)):
        _check_readable(os.path.expanduser(text), step=step, what=what)
        return
    if text.startswith((".", "/", "~")) or text.endswith((".jsonl", ".json", ".parquet", ".csv")) or not _HUB_ID.match(text):
        raise RunSetupError(f"{step}: {what} {text!r} does not exist (working directory {os.getcwd()}); "
                            f"fix the path with {setting_hint}")
    if probe_hub:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # ``datasets`` loads it from its own cache, or says it cannot
            logger.debug("%s %r: offline, left to datasets' cache", what, text)
            return
        check_hub_dataset(text, step=step, what=what, revision=revision)


def setting_name(name: str, setting_prefix: str = "--") -> str:
    """How the user sets field ``name``: ``--seed-revision`` (CLI flags) or ``synthesis.seed_revision``."""
    return f"--{name.replace('_', '-')}" if setting_prefix == "--" else f"{setting_prefix}{name}"


def check_synthesis_inputs(config: Any, *, step: str, setting_hint: str, output_dir: str | None = None,
                           setting_prefix: str = "--", problems: SetupProblems | None = None) -> None:
    """Check the seed/document/distractor sources, the generator (the endpoints answer and name their
    model, or the embedded model resolves), the tokenizer, and that ``output_dir`` and the generation
    cache folder can be written, before anything is generated.

    Every problem is recorded in ``problems`` when given; otherwise all of them are raised together
    (:class:`SetupProblems`)."""
    collector = problems if problems is not None else SetupProblems(step)

    def flag(name: str) -> str:
        if setting_prefix == "--":
            return f"--{name.replace('_', '-')} ..."
        return f"--set {setting_prefix}{name}=..."

    for name, what in (("seed", "seed data"), ("documents", "documents"), ("distractor_source", "distractor_source")):
        with collector.check(setting_name(name, setting_prefix)):
            check_seed_source(getattr(config, name, None), step=step, setting_hint=flag(name), what=what,
                              revision=getattr(config, "seed_revision", None) if name == "seed" else None)
    if config.endpoints:
        with collector.check(setting_name("endpoint", setting_prefix)):
            from .preflight import check_endpoints

            check_endpoints(config, step=step)
    else:
        from .config import DEFAULT_GENERATOR_MODEL

        with collector.check(setting_name("generator_model", setting_prefix)):
            check_model(config.generator_model or DEFAULT_GENERATOR_MODEL, what="generator model", step=step,
                        setting_hint=setting_hint)
    if config.tokenizer:
        with collector.check(setting_name("tokenizer", setting_prefix)):
            check_model(config.tokenizer, what="tokenizer", step=step, setting_hint=flag("tokenizer"), kind="tokenizer")
    if output_dir is not None:
        with collector.check("--output" if setting_prefix == "--" else "output_dir"):
            _check_writable(output_dir, step)
    if config.generation_cache_dir:
        with collector.check(setting_name("generation_cache_dir", setting_prefix)):
            _check_writable(config.generation_cache_dir, step)
    if problems is None:
        collector.raise_if_any()


def dry_run_synthesis(config: Any, output_dir: str | os.PathLike[str], *, step: str = "synthesize",
                      setting_hint: str = "--generator-model NAME_OR_PATH", setting_prefix: str = "--",
                      problems: SetupProblems | None = None) -> SynthesisPlan | None:
    """``--dry-run`` of a synthesis: every input check (:func:`check_synthesis_inputs`), then, when the
    seeds and the generator passed, :func:`plan_synthesis` itself (it reads every seed row and asks the
    endpoint for its context window). All problems found are raised together, or recorded in
    ``problems`` when given (then ``None`` is returned if there is any). Writes nothing."""
    collector = problems if problems is not None else SetupProblems(f"{step} --dry-run")
    check_synthesis_inputs(config, step=step, setting_hint=setting_hint,
                           output_dir=os.fspath(output_dir) if setting_prefix == "--" else None,
                           setting_prefix=setting_prefix, problems=collector)
    plan = None
    inputs = [setting_name(n, setting_prefix) for n in ("seed", "documents", "distractor_source", "endpoint",
                                                        "generator_model", "tokenizer")]
    if not collector.about(*inputs):
        with collector.check(setting_name("seed", "--") if setting_prefix == "--" else setting_prefix.rstrip(".")):
            plan = plan_synthesis(config, output_dir)
    if problems is None:
        collector.raise_if_any()
    return None if collector else plan


@dataclass
class SynthesisPlan:
    """What a synthesis run would do (see :func:`plan_synthesis`)."""

    output_dir: str
    generator: str
    backend: str
    cache_path: str
    seeds_per_task: dict[str, int] = field(default_factory=dict)
    rejected_rows: int = 0
    requests_to_make: int = 0
    cached: int = 0
    shared: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    layout: list[tuple[str, str]] = field(default_factory=list)
    note: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        return sum(self.seeds_per_task.values())

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "seeds": self.seeds}

    def to_text(self) -> str:
        """The human-readable plan that ``--dry-run`` prints."""
        lines = [f"dry run: nothing generated, nothing written; generator {self.generator} ({self.backend})"]
        lines.extend(f"warning: {w}" for w in self.warnings)
        if self.note:
            lines.append(self.note)
        else:
            lines.extend(self._counts())
        lines.append(f"output layout ({self.output_dir}):")
        width = max((len(p) for p, _ in self.layout), default=4)
        for path, what in self.layout:
            lines.append(f"  {path:<{width}}  {what}")
        return "\n".join(lines)

    def _counts(self) -> list[str]:
        lines = []
        lines.append(f"seeds: {self.seeds} valid" + (f", {self.rejected_rows} rejected rows" if self.rejected_rows else ""))
        width = max((len(t) for t in self.seeds_per_task), default=4)
        for task, n in sorted(self.seeds_per_task.items()):
            lines.append(f"  {task:<{width}}  {n}")
        lines.append(
            f"requests: {self.requests_to_make} to make, {self.cached} already cached"
            + (f", {self.shared} identical seeds sharing a request" if self.shared else "")
            + f" (cache {self.cache_path})"
        )
        lines.append(
            f"estimated tokens for the requests to make: ~{self.tokens_in:,} in, up to ~{self.tokens_out:,} out "
            "(first attempts only; retries of unusable outputs add more)"
        )
        return lines


def dataset_layout(output_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Files a synthesis run writes into ``output_dir``."""
    from .output import CONFIG_FILE, REPORT_FILE
    from .plots import LENGTH_HISTOGRAM_FILE

    out = Path(output_dir)
    return [
        (str(out / "data" / "train-XXXXX-of-YYYYY.parquet"), "composed examples"),
        (str(out / "README.md"), "dataset card"),
        (str(out / LENGTH_HISTOGRAM_FILE), "token-length histogram"),
        (str(out / REPORT_FILE), "synthesis report"),
        (str(out / CONFIG_FILE), "settings"),
    ]


def plan_synthesis(config: Any, output_dir: str | os.PathLike[str], *, datasets_cache_dir: str | None = None) -> SynthesisPlan:
    """Seeds per task, requests to make vs cached, token estimates and the output layout of ``config``.

    Reads the seeds and, when it exists, the generation cache; with an endpoint it asks the server for
    its model id (as the run would). Writes nothing.
    """
    from .backends import make_backend
    from .backends.base import _run_coro
    from .cache import GenerationCache, request_key
    from .prompts import DEFAULT_SYSTEM_PROMPT, render_synthesis_messages
    from .seeds import load_seeds
    from .synthesis import default_cache_path, sampling_seed

    if config.mode != "context_synthesis":  # instruction synthesis: one request per document chunk
        return SynthesisPlan(
            output_dir=os.fspath(output_dir), generator=config.generator_label(), backend=config.backend_kind,
            cache_path=default_cache_path(config, datasets_cache_dir), layout=dataset_layout(output_dir),
            note=f"mode={config.mode}: one request per document of {config.documents!r}; counts not estimated",
        )
    loaded = load_seeds(config)
    seeds = loaded.examples
    system_prompt = config.system_prompt if config.system_prompt is not None else DEFAULT_SYSTEM_PROMPT

    def messages_of(seed: Any) -> tuple[dict[str, str], ...]:
        return render_synthesis_messages(
            seed.instruction, seed.answer, task=seed.task, context_words=config.context_words,
            template=config.prompt_template, system_prompt=system_prompt,
        )

    max_new_tokens = int(config.max_new_tokens)
    warnings: list[str] = []
    if config.endpoints:  # the run's own preflight: endpoint reachable, model id, context window
        from .preflight import run_preflight

        backend = make_backend(config)
        try:
            checked = _run_coro(
                run_preflight(config, backend, lambda: ((s.seed_id, messages_of(s)) for s in seeds))
            )
        finally:
            _run_coro(backend.aclose())
        model_id, max_new_tokens, warnings = checked.model_id, int(checked.max_new_tokens), list(checked.warnings)
    else:  # the embedded backend's id is the configured name: no need to load the model
        from .config import DEFAULT_GENERATOR_MODEL

        model_id = config.generator_model or DEFAULT_GENERATOR_MODEL
    cache_path = default_cache_path(config, datasets_cache_dir)
    cache = GenerationCache(cache_path) if os.path.exists(cache_path) else None
    settings = {"api": config.api, "max_new_tokens": max_new_tokens, "temperature": config.temperature,
                "top_p": config.top_p}
    plan = SynthesisPlan(
        output_dir=os.fspath(output_dir), generator=model_id, backend=config.backend_kind, cache_path=cache_path,
        seeds_per_task=dict(Counter(s.task for s in seeds)), rejected_rows=loaded.rejected_rows,
        layout=dataset_layout(output_dir) if config.num_shards == 1 else [], warnings=warnings,
    )
    out_per_request = min(max_new_tokens, int(round(config.context_words * TOKENS_PER_WORD)))
    seen: set[str] = set()
    for seed in seeds:
        messages = messages_of(seed)
        key = request_key(messages, model_id, {**settings, "seed": sampling_seed(config.random_seed, messages, 0)})
        if key in seen:
            plan.shared += 1
            continue
        seen.add(key)
        if cache is not None and cache.get(key) is not None:
            plan.cached += 1
            continue
        plan.requests_to_make += 1
        plan.tokens_in += int(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN) + 8 * len(messages)
        plan.tokens_out += out_per_request
    if cache is not None:
        cache.close() if hasattr(cache, "close") else None
    if config.num_shards > 1:
        plan.layout = [(cache_path, f"shard {config.shard_index}/{config.num_shards} generation cache")]
    return plan
