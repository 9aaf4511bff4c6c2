"""Fail before spending: check what a run needs, and say what it would do (``--dry-run``).

:func:`check_model` proves that a model or tokenizer id resolves (a local folder, or a Hub id whose
``config.json`` can be fetched or is in the local cache) and otherwise raises one
:class:`RunSetupError` line naming the model, the recipe step and the fixes. :func:`check_synthesis_inputs`
applies it, with the seed and output paths, to a :class:`~hf_context_synthesis.synthesis.config.SynthesisConfig`.
:func:`plan_synthesis` computes what ``synthesize``/``run`` would do: seeds per task, requests to make
vs already cached, an estimate of the tokens in and out, and the files it would write; with an
endpoint it runs the run's own :func:`~hf_context_synthesis.synthesis.preflight.run_preflight` (reachability,
model id, context window) first.

Problems are collected, not raised one by one: :class:`SetupProblems` gathers every problem the
checks find (each naming its setting) and raises them together as one :class:`RunSetupError` whose
message has one line per problem, so a ``--dry-run`` lists everything to fix in one go.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.checks import (  # noqa: F401 - Problem, SetupValueError: re-exported with the checks
    HUB_ID,
    Problem,
    RunSetupError,
    SetupProblems,
    SetupValueError,
    check_hub_dataset,
    check_model,
    check_output_writable,
    setting_name,
    short_error,
)

logger = logging.getLogger(__name__)

#: Rough characters per token for the estimate when no tokenizer is at hand (English text).
CHARS_PER_TOKEN = 4.0
#: Rough tokens per English word (the output estimate from ``context_words``).
TOKENS_PER_WORD = 4 / 3


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
        raise RunSetupError(f"{step}: {what} {path!r} cannot be read ({err.strerror or short_error(err)})") from None


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
    if text.startswith((".", "/", "~")) or text.endswith((".jsonl", ".json", ".parquet", ".csv")) or not HUB_ID.match(text):
        raise RunSetupError(f"{step}: {what} {text!r} does not exist (working directory {os.getcwd()}); "
                            f"fix the path with {setting_hint}")
    if probe_hub:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # ``datasets`` loads it from its own cache, or says it cannot
            logger.debug("%s %r: offline, left to datasets' cache", what, text)
            return
        check_hub_dataset(text, step=step, what=what, revision=revision)


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
        from .config import embedded_generator_model

        with collector.check(setting_name("generator_model", setting_prefix)):
            check_model(embedded_generator_model(config.generator_model), what="generator model", step=step,
                        setting_hint=setting_hint)
    if config.tokenizer:
        with collector.check(setting_name("tokenizer", setting_prefix)):
            check_model(config.tokenizer, what="tokenizer", step=step, setting_hint=flag("tokenizer"), kind="tokenizer")
    if output_dir is not None:
        with collector.check("--output" if setting_prefix == "--" else "output_dir"):
            check_output_writable(output_dir, step)
    if config.generation_cache_dir:
        with collector.check(setting_name("generation_cache_dir", setting_prefix)):
            check_output_writable(config.generation_cache_dir, step)
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
    from .output import LENGTH_HISTOGRAM_FILE

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
    from .backend import make_backend
    from ..backends.base import run_coro
    from .cache import GenerationCache, request_key
    from .prompts import DEFAULT_SYSTEM_PROMPT, render_synthesis_messages
    from .seeds import load_seeds
    from .generation import default_cache_path, sampling_seed

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

    max_new_tokens = config.resolved_max_new_tokens
    warnings: list[str] = []
    if config.endpoints:  # the run's own preflight: endpoint reachable, model id, context window
        from .preflight import run_preflight

        backend = make_backend(config)
        try:
            checked = run_coro(
                run_preflight(config, backend, lambda: ((s.seed_id, messages_of(s)) for s in seeds))
            )
        finally:
            run_coro(backend.aclose())
        model_id, max_new_tokens, warnings = checked.model_id, int(checked.max_new_tokens), list(checked.warnings)
    else:  # the embedded backend's id is the configured name: no need to load the model
        from .config import embedded_generator_model

        model_id = embedded_generator_model(config.generator_model)
    cache_path = default_cache_path(config, datasets_cache_dir)
    cache = GenerationCache(cache_path) if os.path.exists(cache_path) else None
    settings = {"api": config.api, "max_new_tokens": max_new_tokens, "temperature": config.temperature,
                "top_p": config.top_p}
    if not config.endpoints:  # the embedded backend's repetition guards are part of its request keys
        from ..backends.local import DEFAULT_NO_REPEAT_NGRAM_SIZE, DEFAULT_REPETITION_PENALTY

        settings.update(repetition_penalty=DEFAULT_REPETITION_PENALTY, no_repeat_ngram_size=DEFAULT_NO_REPEAT_NGRAM_SIZE)
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
