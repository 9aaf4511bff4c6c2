"""Fail before spending: check what a run needs, and say what it would do (``--dry-run``).

:func:`check_model` proves that a model or tokenizer id resolves (a local folder, or a Hub id whose
``config.json`` can be fetched or is in the local cache) and otherwise raises one
:class:`RunSetupError` line naming the model, the recipe step and the fixes. :func:`check_synthesis_inputs`
applies it, with the seed and output paths, to a :class:`~hf_context_synthesis.config.SynthesisConfig`.
:func:`plan_synthesis` computes what ``synthesize``/``run`` would do: seeds per task, requests to make
vs already cached, an estimate of the tokens in and out, and the files it would write; with an
endpoint it runs the run's own :func:`~hf_context_synthesis.preflight.run_preflight` (reachability,
model id, context window) first.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Rough characters per token for the estimate when no tokenizer is at hand (English text).
CHARS_PER_TOKEN = 4.0
#: Rough tokens per English word (the output estimate from ``context_words``).
TOKENS_PER_WORD = 4 / 3

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class RunSetupError(OSError):
    """Something a run needs is missing or unreachable (a model, a path, a token); found before any
    generation or training. An ``OSError`` like the loading error it replaces: the CLI prints it as one
    ``error:`` line and exits 1 (bad settings exit 2)."""


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


def check_seed_source(source: Any, *, step: str, setting_hint: str, what: str = "seed data") -> None:
    """A local seed/document path must exist; a Hub dataset id is left to ``datasets``."""
    if source is None or not isinstance(source, (str, os.PathLike)):
        return
    text = os.fspath(source)
    if os.path.exists(os.path.expanduser(text)):
        return
    if text.startswith((".", "/", "~")) or text.endswith((".jsonl", ".json", ".parquet", ".csv")) or not _HUB_ID.match(text):
        raise RunSetupError(f"{step}: {what} {text!r} does not exist (working directory {os.getcwd()}); "
                            f"fix the path with {setting_hint}")


def check_synthesis_inputs(config: Any, *, step: str, setting_hint: str, output_dir: str | None = None,
                           setting_prefix: str = "--") -> None:
    """Check the seed/document/distractor paths, the embedded generator and the tokenizer of ``config``
    and that ``output_dir`` can be written, before anything is generated."""

    def flag(name: str) -> str:
        if setting_prefix == "--":
            return f"--{name.replace('_', '-')} ..."
        return f"--set {setting_prefix}{name}=..."

    check_seed_source(config.seed, step=step, setting_hint=flag("seed"))
    check_seed_source(config.documents, step=step, setting_hint=flag("documents"), what="documents")
    check_seed_source(config.distractor_source, step=step, setting_hint=flag("distractor_source"),
                      what="distractor_source")
    if not config.endpoints:
        from .config import DEFAULT_GENERATOR_MODEL

        check_model(config.generator_model or DEFAULT_GENERATOR_MODEL, what="generator model", step=step,
                    setting_hint=setting_hint)
    if config.tokenizer:
        check_model(config.tokenizer, what="tokenizer", step=step, setting_hint=flag("tokenizer"), kind="tokenizer")
    if output_dir is not None:
        _check_writable(output_dir, step)
    if config.generation_cache_dir:
        _check_writable(config.generation_cache_dir, step)


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
