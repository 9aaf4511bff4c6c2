"""PNG figures for Hub cards: the token-length histogram of a dataset and a training loss curve.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``): no GUI backend is touched and the global ``pyplot`` state is left alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..synthesis.output import LENGTH_HISTOGRAM_FILE  # noqa: F401 - re-exported for the card writers

logger = logging.getLogger(__name__)

#: File names used in the repos (and referenced from the cards).
LOSS_CURVE_FILE = "training_loss.png"


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_length_histogram(
    lengths: Sequence[int] | Mapping[str, Sequence[int]],
    path: str | os.PathLike[str],
    *,
    bins: int = 40,
    title: str = "Example length",
    xlabel: str = "tokens per example",
) -> str:
    """Write a histogram of example lengths to ``path`` (PNG) and return the path.

    Args:
        lengths: Token counts, or ``{task: token counts}`` for one stacked histogram per task.
        path: Output PNG file.
        bins: Number of bins (shared by all tasks).
        title / xlabel: Labels of the figure.
    """
    groups: dict[str, list[int]]
    if isinstance(lengths, Mapping):
        groups = {str(k): [int(x) for x in v] for k, v in lengths.items() if len(v)}
    else:
        groups = {"all": [int(x) for x in lengths]}
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    values = [v for vs in groups.values() for v in vs]
    if values:
        lo, hi = min(values), max(values)
        edges = bins if hi > lo else [lo - 0.5, lo + 0.5]
        names = sorted(groups)
        ax.hist([groups[n] for n in names], bins=edges, stacked=True, label=names if len(names) > 1 else None,
                edgecolor="black", linewidth=0.5)  # edges: each bar and stacked task stands apart
        if len(names) > 1:
            ax.legend(fontsize="small", ncol=2)
    else:
        ax.text(0.5, 0.5, "no examples", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5-example ticks on small datasets
    fig.tight_layout()
    out = os.fspath(path)
    fig.savefig(out, format="png")
    logger.debug("wrote length histogram (%d examples) to %s", len(values), out)
    return out


def loss_points(log_history: Sequence[Mapping[str, Any]], key: str = "loss") -> list[tuple[float, float]]:
    """``(step, value)`` pairs of ``key`` from a Trainer ``log_history`` (entries without it skipped)."""
    points = []
    for i, entry in enumerate(log_history):
        if key in entry and isinstance(entry[key], (int, float)):
            points.append((float(entry.get("step", i)), float(entry[key])))
    return points


def plot_loss_curve(
    log_history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "Training loss",
) -> str | None:
    """Plot ``loss`` (and ``eval_loss`` when logged) against the step; return the path, or ``None``
    when ``log_history`` holds no loss at all (nothing is written then)."""
    train = loss_points(log_history, "loss")
    evals = loss_points(log_history, "eval_loss")
    if not train and not evals:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], marker="o" if len(train) < 30 else None,
                label="train loss")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], marker="s", label="eval loss")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = os.fspath(path)
    fig.savefig(out, format="png")
    logger.debug("wrote loss curve (%d points) to %s", len(train) + len(evals), out)
    return out
