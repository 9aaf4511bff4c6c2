"""Real-token throughput and padding efficiency of long-context training, in the Trainer's logs.

:class:`ThroughputCallback` adds, to every training log of ``transformers.Trainer`` / TRL's
``SFTTrainer`` (so they appear in ``trainer.state.log_history`` and in every reporting integration
that runs after it):

* ``train_tokens_per_second``: real (non-padding) tokens per second of wall time since the previous log;
* ``padding_efficiency``: real tokens / all tokens in the batches since the previous log (``1.0`` means
  no padding at all; packed batches of one row are 1.0 by construction);
* ``train_real_tokens`` / ``train_batch_tokens``: cumulative counts since training began.

With ``logging_steps=1`` these are per-step values; otherwise they cover the logging window.

**Where the counts come from** (``callback.source`` after ``on_train_begin``):

1. ``"attention_mask"``: a forward pre-hook on the model sees every training batch actually consumed;
   when the batches carry a 2-D ``attention_mask``, real tokens are its sum and batch tokens
   ``input_ids.numel()``. Exact and aligned with the step.
2. ``"collator"``: packed batches have no attention mask, so the counts come from a collator with
   cumulative integer counters ``real_tokens`` and ``batch_tokens``
   (:class:`hf_context_synthesis.packing.PackedDataCollator`): pass it as ``collator=`` or let the callback
   find it on the train dataloader (through ``collate_fn`` and ``data_collator`` wrappers such as the
   Trainer's column-removing collator). Accelerate's dataloader collates one batch ahead of the one
   being trained on, so a window's counts are shifted by one batch (the first log includes the
   prefetched second batch; a window in which nothing new was collated, such as the last step,
   logs only the cumulative counts). Totals are exact once the epoch's data is consumed.
3. ``"pad_token"``: no mask and no counting collator (or its counters stay at zero because batches
   are collated in ``dataloader_num_workers`` worker processes): real tokens are those different from
   the model's ``pad_token_id`` (an over-estimate of padding when the pad token doubles as EOS).
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


class ThroughputCallback(TrainerCallback):
    """Logs ``train_tokens_per_second``, ``padding_efficiency`` and cumulative token counts.

    Args:
        collator: A data collator with cumulative ``real_tokens`` and ``batch_tokens`` counters. When
            ``None`` it is discovered on the train dataloader (see the module docstring for the order in
            which token sources are used).
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
        self._hook_real = 0
        self._hook_batch = 0
        self._hook_pad_real = 0
        self._hook_all_masked = True
        self._pad_token_id: int | None = None
        self._start_real = 0
        self._start_batch = 0
        self._last_real = 0
        self._last_batch = 0
        self._last_time = 0.0
        self.source = "none"

    # -- token sources -------------------------------------------------------------------------
    def _counts(self) -> tuple[int, int]:
        """Cumulative (real, batch) tokens since training began, from the best available source."""
        if self._hook_batch > 0 and self._hook_all_masked:
            self.source = "attention_mask"
            return self._hook_real, self._hook_batch
        if self.collator is not None:
            real = self.collator.real_tokens - self._start_real
            batch = self.collator.batch_tokens - self._start_batch
            if batch > 0 or self._hook_batch == 0:
                self.source = "collator"
                return real, batch
            logger.info("ThroughputCallback: collator counters stay at 0 (dataloader workers?); counting pad tokens")
            self.collator = None
        self.source = "pad_token"
        return self._hook_pad_real, self._hook_batch

    def _forward_pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not getattr(module, "training", False):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or not hasattr(input_ids, "numel"):
            return
        batch = int(input_ids.numel())
        mask = kwargs.get("attention_mask")
        if mask is not None and hasattr(mask, "dim") and mask.dim() == 2:
            self._hook_real += int(mask.sum().item())
        else:
            self._hook_all_masked = False
        if self._pad_token_id is not None:
            self._hook_pad_real += int((input_ids != self._pad_token_id).sum().item())
        else:
            self._hook_pad_real += batch
        self._hook_batch += batch

    def _install_hook(self, model: Any) -> None:
        if model is None or not hasattr(model, "register_forward_pre_hook"):
            return
        config = getattr(model, "config", None)
        pad = getattr(config, "pad_token_id", None)
        self._pad_token_id = pad if isinstance(pad, int) else None
        self._hook = model.register_forward_pre_hook(self._forward_pre_hook, with_kwargs=True)

    # -- callback events -----------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Find the token source and start the clock."""
        if self.collator is None:
            self.collator = find_counting_collator(kwargs.get("train_dataloader"))
        self._hook_real = self._hook_batch = self._hook_pad_real = 0
        self._hook_all_masked = True
        self._install_hook(kwargs.get("model"))
        self.source = "pending"
        if self.collator is not None:
            self._start_real = self.collator.real_tokens
            self._start_batch = self.collator.batch_tokens
        self._last_real = self._last_batch = 0
        self._last_time = time.perf_counter()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add the metrics to training logs (and to the matching ``state.log_history`` entry)."""
        if logs is None or any(k.startswith("eval_") for k in logs) or self.source == "none":
            return
        now = time.perf_counter()
        real, batch = self._counts()
        d_real, d_batch = real - self._last_real, batch - self._last_batch
        elapsed = now - self._last_time
        metrics: dict[str, float] = {
            f"{self.prefix}train_real_tokens": float(real),
            f"{self.prefix}train_batch_tokens": float(batch),
        }
        if d_batch > 0:
            metrics[f"{self.prefix}padding_efficiency"] = d_real / d_batch
            if elapsed > 0:
                metrics[f"{self.prefix}train_tokens_per_second"] = d_real / elapsed
        self._last_real, self._last_batch, self._last_time = real, batch, now
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
