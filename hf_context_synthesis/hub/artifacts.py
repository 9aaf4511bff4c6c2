"""Local artefacts next to the outputs: the dataset card and its plot beside the data, the model
card, ``trainer_state.json`` and the loss curve beside the model.

What ``push-dataset``/``push-model`` would upload is visible before any push: the same cards, rendered
offline with :func:`~hf_context_synthesis.hub.cards.render_dataset_card` /
:func:`~hf_context_synthesis.hub.cards.render_model_card`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The Trainer's state file (log history = the loss curve's data).
TRAINER_STATE_FILE = "trainer_state.json"


def write_dataset_card(directory: str | os.PathLike[str], *, repo_id: str | None = None, **card_kwargs: Any) -> Path:
    """Write ``README.md`` (the dataset card) and ``length_histogram.png`` into a folder written by
    :func:`~hf_context_synthesis.synthesis.output.synthesize_to_directory`; returns the card's path.

    ``repo_id`` (default: the folder's path, which ``load_dataset`` reads through the card's ``configs``)
    is used in the card's usage snippet; the title defaults to the folder name (with its parent's name
    for a recipe's ``dataset/`` folder).
    """
    from .cards import dataset_statistics, render_dataset_card
    from ..utils.folders import read_json
    from .publish import Columns, parquet_columns
    from ..synthesis.output import CONFIG_FILE, REPORT_FILE
    from .plots import LENGTH_HISTOGRAM_FILE, plot_length_histogram
    from ..utils.paths import refuse_links

    out = Path(directory)
    refuse_links(out / "data", what="dataset folder")
    refuse_links(out / "README.md", out / LENGTH_HISTOGRAM_FILE, what="dataset card file")
    files = sorted(p for p in (out / "data").glob("*.parquet") if not p.is_symlink())
    columns = Columns(parquet_columns(files)) if files else Columns()
    _add_context_words(files, columns)
    stats = dataset_statistics(columns)
    histogram = None
    if columns.get("num_tokens"):
        groups: dict[str, list[int]] = {}
        for task, n in zip(columns.get("task", ["all"] * len(columns["num_tokens"])), columns["num_tokens"]):
            groups.setdefault(str(task), []).append(int(n))
        histogram = plot_length_histogram(groups, out / LENGTH_HISTOGRAM_FILE, title="Tokens per example")
    splits = sorted({f.name.split("-")[0] for f in files}) or ["train"]
    name = out.resolve().name
    if name == "dataset":  # a recipe's OUTPUT_DIR/dataset: name it after the run
        name = f"{out.resolve().parent.name}-{name}"
    card_kwargs.setdefault("pretty_name", name)
    card = render_dataset_card(
        repo_id=repo_id or out.as_posix(),
        statistics=stats,
        config=read_json(out / CONFIG_FILE),
        report=read_json(out / REPORT_FILE),
        histogram_file=LENGTH_HISTOGRAM_FILE if histogram else None,
        splits=splits,
        **card_kwargs,
    )
    path = out / "README.md"
    _write_text(path, card)
    logger.info("wrote the dataset card %s", path)
    return path


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: a link at ``path`` is replaced, never
    written through."""
    from ..utils.folders import atomic_write

    atomic_write(str(path), text)


def _add_context_words(files: list[Path], columns: dict[str, list[Any]]) -> None:
    """Add ``context_words`` (words of each relevant context) to ``columns`` for the card."""
    import pyarrow.parquet as pq

    words: list[int] = []
    for f in files:
        pf = pq.ParquetFile(f)
        if "relevant_context" not in pf.schema_arrow.names:
            return
        for batch in pf.iter_batches(columns=["relevant_context"], batch_size=256):
            words.extend(len(str(t or "").split()) for t in batch.column(0).to_pylist())
    if words:
        columns["context_words"] = words


def write_trainer_state(trainer: Any, output_dir: str | os.PathLike[str]) -> Path:
    """Save ``trainer.state`` (``log_history``: loss per logging step) as ``trainer_state.json``."""
    from ..utils.paths import refuse_links

    path = Path(output_dir) / TRAINER_STATE_FILE
    refuse_links(path, what="training output file")
    trainer.state.save_to_json(str(path))
    return path


def write_model_card(output_dir: str | os.PathLike[str], *, repo_id: str | None = None, **card_kwargs: Any) -> Path:
    """Write ``README.md`` (the model card) and ``training_loss.png`` into a training output folder,
    from its ``context_synthesis_training.json`` and ``trainer_state.json``; returns the card's path."""
    from .publish import prepare_model_folder
    from .plots import LOSS_CURVE_FILE
    from ..utils.paths import refuse_links

    out = Path(output_dir)
    refuse_links(out / "README.md", out / LOSS_CURVE_FILE, what="model card file")
    # default repo id: the folder itself, so the card's from_pretrained(...) usage snippet runs as written
    prepare_model_folder(out, out, repo_id=repo_id or out.as_posix(), **card_kwargs)
    logger.info("wrote the model card %s", out / "README.md")
    return out / "README.md"


def refresh_model_card(model_dir: str | os.PathLike[str], **card_kwargs: Any) -> Path | None:
    """After an evaluation: write the card of a training folder again (it now finds the evaluation
    results beside the model, or takes ``eval_results``). Folders this package did not train (no
    ``context_synthesis_training.json``) are left alone; a card that cannot be written is a warning."""
    from .publish import TRAINING_SUMMARY_FILE

    if not (Path(model_dir) / TRAINING_SUMMARY_FILE).is_file():
        return None
    try:
        return write_model_card(model_dir, **card_kwargs)
    except Exception as err:  # noqa: BLE001 - the evaluation's results stand without the card
        logger.warning("model card not updated with the evaluation: %s", err)
        return None


def write_training_artifacts(trainer: Any, output_dir: str | os.PathLike[str], **card_kwargs: Any) -> Path | None:
    """After training: ``trainer_state.json``, the model card and the loss curve in ``output_dir``
    (main process only). Returns the card's path."""
    if hasattr(trainer, "is_world_process_zero") and not trainer.is_world_process_zero():
        return None
    write_trainer_state(trainer, output_dir)
    try:
        return write_model_card(output_dir, **card_kwargs)
    except Exception as err:  # noqa: BLE001 - a card must never cost the trained model
        logger.warning("model card not written: %s", err)
        return None
