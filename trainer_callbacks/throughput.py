"""Real-token throughput and padding efficiency of long-context training, in the Trainer's logs.

:class:`ThroughputCallback` adds, to every training log of ``transformers.Trainer`` / TRL's
``SFTTrainer`` (so they appear in ``trainer.state.log_history`` and in every reporting integration
that runs after it):

* ``train_tokens_per_second``: real (non-padding) tokens trained per second of wall time since the
  previous log, **summed over all ranks** (global);
* ``train_tokens_per_second_per_rank``: the same divided by the number of ranks (mean per rank);
* ``padding_efficiency``: real tokens / all tokens in the batches since the previous log, all ranks
  (``1.0`` means no padding at all);
* ``train_real_tokens`` / ``train_batch_tokens``: cumulative counts since training began, all ranks;
* ``train_world_size``: the number of ranks the figures are summed over.

With ``logging_steps=1`` these are per-step values; otherwise they cover the logging window. At
every epoch end an entry with ``train_epoch_real_tokens``, ``train_epoch_tokens_per_second`` and
``train_epoch_padding_efficiency`` (all ranks, that epoch only) is appended to ``state.log_history``
and kept in :attr:`ThroughputCallback.epochs`. :attr:`ThroughputCallback.local` holds this rank's own
cumulative counts.

**Only tokens actually trained are counted**: a forward pre-hook on the model sees every training
batch when the model runs on it (a dataloader that collates a batch ahead is not counted ahead), and
evaluation forwards (``model.training`` false) are skipped. Real tokens are (``callback.source``):

1. ``"attention_mask"``: the sum of a 2-D ``attention_mask``;
2. ``"position_ids"``: padding-free batches (no mask; examples start where ``position_ids`` is 0):
   every token except segments made only of pad tokens (``PackedDataCollator``'s
   ``pad_to_multiple_of`` tail and the padding rows that even out ranks);
3. ``"pad_token"``: otherwise, the tokens different from the pad token id (an over-estimate of
   padding when the pad token doubles as EOS).

The pad token id comes from a collator with a ``pad_token_id`` (passed as ``collator=`` or found on
the train dataloader) or the model config. When ``torch.distributed`` is initialised, the window
counts are summed over the ranks with one ``all_reduce`` per log (every rank logs at the same steps).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

__all__ = ["ThroughputCallback", "find_counting_collator"]


def _has_counters(obj: Any) -> bool:
    return isinstance(getattr(obj, "real_tokens", None), int) and isinstance(getattr(obj, "batch_tokens", None), int)


def find_counting_collator(obj: Any, max_depth: int = 6) -> Any | None:
    """The first object with integer ``real_tokens``/``batch_tokens`` counters reachable from ``obj``.

    ``obj`` may be the collator itself or a dataloader; wrappers are followed through their
    ``collate_fn``, ``data_collator``, ``base_dataloader`` and ``dataloader`` attributes.
    """
    seen: set[int] = set()
    frontier = [obj]
    for _ in range(max_depth):
        nxt = []
        for item in frontier:
            if item is None or id(item) in seen:
                continue
            seen.add(id(item))
            if _has_counters(item):
                return item
            for attr in ("collate_fn", "data_collator", "base_dataloader", "dataloader"):
                child = getattr(item, attr, None)
                if child is not None:
                    nxt.append(child)
        frontier = nxt
    return None


def sum_over_ranks(values: list[float], op: str = "sum") -> tuple[list[float], int]:
    """``values`` reduced over the ranks (``all_reduce``, ``op`` ``"sum"`` or ``"max"``), and the number of ranks."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return values, 1
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, 1
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist(), dist.get_world_size()


class ThroughputCallback(TrainerCallback):
    """Logs global and per-rank ``train_tokens_per_second``, ``padding_efficiency`` and token counts.

    Args:
        collator: The data collator (its ``pad_token_id`` tells padding apart; a collator with
            ``real_tokens``/``batch_tokens`` counters such as ``PackedDataCollator``). When ``None`` it
            is discovered on the train dataloader.
        prefix: Prefix of the logged keys (default none: ``train_tokens_per_second`` ...).
    """

    def __init__(self, collator: Any | None = None, prefix: str = "") -> None:
        if collator is not None and not _has_counters(collator):
            raise TypeError(
                f"collator {type(collator).__name__} has no integer real_tokens/batch_tokens counters; "
                "pass a PackedDataCollator or leave collator=None"
            )
        self.collator = collator
        self.prefix = prefix
        self._hook: Any = None
        self._pad_token_id: int | None = None
        self.local = {"real_tokens": 0, "batch_tokens": 0}
        self._last = (0.0, 0.0, 0.0)  # global real, batch, time at the previous log
        self._epoch_start = (0.0, 0.0, 0.0)
        self._global = (0.0, 0.0)
        self.epochs: list[dict[str, float]] = []
        self.world_size = 1
        self.source = "none"

    # -- counting --------------------------------------------------------------------------------
    def _real_tokens(self, input_ids: Any, kwargs: dict) -> int:
        mask = kwargs.get("attention_mask")
        if mask is not None and hasattr(mask, "dim") and mask.dim() == 2:
            self.source = "attention_mask"
            return int(mask.sum().item())
        pad = self._pad_token_id
        pos = kwargs.get("position_ids")
        if pos is not None and hasattr(pos, "dim") and pos.shape == input_ids.shape:
            self.source = "position_ids"
            if pad is None:
                return int(input_ids.numel())
            import torch

            flat_pos, flat_ids = pos.reshape(-1), input_ids.reshape(-1)
            seg = torch.cumsum((flat_pos == 0).to(torch.int64), 0)
            not_pad = torch.zeros(int(seg.max().item()) + 1, dtype=torch.int64, device=seg.device)
            not_pad.index_add_(0, seg, (flat_ids != pad).to(torch.int64))
            real_seg = not_pad[seg] > 0
            return int(real_seg.sum().item())
        self.source = "pad_token"
        if pad is None:
            return int(input_ids.numel())
        return int((input_ids != pad).sum().item())

    def _forward_pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not getattr(module, "training", False):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or not hasattr(input_ids, "numel"):
            return
        self.local["batch_tokens"] += int(input_ids.numel())
        self.local["real_tokens"] += self._real_tokens(input_ids, kwargs)

    def _install_hook(self, model: Any) -> None:
        if model is None or not hasattr(model, "register_forward_pre_hook"):
            return
        pad = getattr(self.collator, "pad_token_id", None)
        if not isinstance(pad, int):
            pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        self._pad_token_id = pad if isinstance(pad, int) else None
        self._hook = model.register_forward_pre_hook(self._forward_pre_hook, with_kwargs=True)

    def _global_counts(self) -> tuple[float, float]:
        (real, batch), self.world_size = sum_over_ranks(
            [float(self.local["real_tokens"]), float(self.local["batch_tokens"])]
        )
        self._global = (real, batch)
        return real, batch

    # -- callback events -----------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Find the pad token id, install the forward hook and start the clock."""
        if self.collator is None:
            self.collator = find_counting_collator(kwargs.get("train_dataloader"))
        if self.collator is None:
            loader = kwargs.get("train_dataloader")
            self.collator = getattr(loader, "collate_fn", None)
        self.local = {"real_tokens": 0, "batch_tokens": 0}
        self._install_hook(kwargs.get("model"))
        self.source = "pending"
        now = time.perf_counter()
        self._last = self._epoch_start = (0.0, 0.0, now)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Start the epoch's window."""
        real, batch = self._global
        self._epoch_start = (real, batch, time.perf_counter())

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Append the epoch's figures (all ranks) to ``state.log_history`` and :attr:`epochs`."""
        if self._hook is None:
            return
        real, batch = self._global_counts()
        r0, b0, t0 = self._epoch_start
        elapsed = time.perf_counter() - t0
        p = self.prefix
        entry: dict[str, float] = {
            "epoch": float(state.epoch or 0.0),
            "step": state.global_step,
            f"{p}train_epoch_real_tokens": real - r0,
            f"{p}train_epoch_batch_tokens": batch - b0,
            f"{p}train_world_size": float(self.world_size),
        }
        if batch - b0 > 0:
            entry[f"{p}train_epoch_padding_efficiency"] = (real - r0) / (batch - b0)
        if elapsed > 0:
            entry[f"{p}train_epoch_tokens_per_second"] = (real - r0) / elapsed
        self.epochs.append(entry)
        state.log_history.append(dict(entry))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add the metrics to training logs (and to the matching ``state.log_history`` entry)."""
        if logs is None or any(k.startswith("eval_") for k in logs) or self._hook is None:
            return
        now = time.perf_counter()
        real, batch = self._global_counts()
        last_real, last_batch, last_time = self._last
        d_real, d_batch, elapsed = real - last_real, batch - last_batch, now - last_time
        p = self.prefix
        metrics: dict[str, float] = {
            f"{p}train_real_tokens": real,
            f"{p}train_batch_tokens": batch,
            f"{p}train_world_size": float(self.world_size),
        }
        if d_batch > 0:
            metrics[f"{p}padding_efficiency"] = d_real / d_batch
            if elapsed > 0:
                metrics[f"{p}train_tokens_per_second"] = d_real / elapsed
                metrics[f"{p}train_tokens_per_second_per_rank"] = d_real / elapsed / self.world_size
        self._last = (real, batch, now)
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Remove the forward hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
