"""Fine-tune on context-synthesis data with TRL's ``SFTTrainer`` and this library's packing.

The data is packed *before* it reaches TRL (:func:`hf_context_synthesis.training.packing.prepare_packed_dataset`),
so TRL is told to skip its own preparation (``dataset_kwargs={"skip_prepare_dataset": True}``,
``packing=False``, ``remove_unused_columns=False``) and :class:`~hf_context_synthesis.training.packing.PackedDataCollator`
turns packed rows into batches with ``position_ids`` resets and no attention mask (transformers masks the
packed sequences apart on eager, sdpa and flex attention; flash-attention kernels get ``cu_seq_lens``
kwargs with ``return_flash_kwargs``).

Entry points:

* :func:`default_sft_config`: an ``SFTConfig`` with that setup and the paper's hyperparameters.
* :func:`build_trainer`: packs raw rows (``messages``) when needed and returns a
  :class:`ContextSynthesisSFTTrainer` (``loss_weighting="example"`` uses LongAlign's loss).
* :func:`train`: load model, tokenizer and data from a :class:`TrainingJobArguments`, train, save the
  model, the tokenizer and ``context_synthesis_training.json`` (read by the Hub model card).
* ``context-synthesis train`` (:mod:`hf_context_synthesis.cli.train`); every field of
  :class:`TrainingJobArguments` and of TRL's ``SFTConfig`` is a ``--flag`` (``--max_steps`` or
  ``--max-steps``), and ``--config file.yaml`` fills any of them (TRL's ``TrlParser`` conventions:
  keys are field names, an ``env:`` mapping sets environment variables, flags on the command line win).
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import types
from dataclasses import asdict, dataclass, field
from typing import Any

import trl
from transformers import TrainerCallback

from ..utils.packaged_models import materialize_packaged_model
from ..utils.progress import quiet_trainer_output

logger = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_FILE",
    "ContextSynthesisSFTTrainer",
    "TrainingJobArguments",
    "build_trainer",
    "default_sft_config",
    "load_training_dataset",
    "model_load_kwargs",
    "train",
]

#: Written into the output folder at the end of training; the Hub model card reads it.
SUMMARY_FILE = "context_synthesis_training.json"

#: ``SFTConfig`` fields recorded under ``"hyperparameters"`` in :data:`SUMMARY_FILE`.
RECORDED_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "seed",
)


#: ``TrainingJobArguments.master_weights`` values.
MASTER_WEIGHTS = ("fp32", "checkpoint")

_LOW_PRECISION_WARNING = (
    "training with %s master weights (%s): an update smaller than half a unit in the last place is rounded "
    "away (at lr 2e-5 most bf16 weights of a N(0, 0.02) layer do not move) and the optimizer state is %s too. "
    "Load in float32 (master_weights='fp32', the default) unless this is intended."
)


def model_load_kwargs(sft_config: Any, master_weights: str = "fp32") -> dict[str, Any]:
    """``from_pretrained`` keyword arguments of the model to train.

    ``SFTConfig.model_init_kwargs`` plus a dtype: with ``master_weights="fp32"`` and no explicit dtype (or
    ``"auto"``, transformers 5's default, which keeps a bf16 checkpoint in bf16) the weights load in float32
    and ``bf16``/``fp16`` autocast does the low-precision compute, as TRL's own loader does. An explicit
    low-precision dtype, or ``master_weights="checkpoint"``, trains in that dtype, with a warning naming the
    rounding risk.
    """
    import torch

    if master_weights not in MASTER_WEIGHTS:
        raise ValueError(f"master_weights must be one of {MASTER_WEIGHTS}, got {master_weights!r}")
    kwargs = dict(getattr(sft_config, "model_init_kwargs", None) or {})
    key = "torch_dtype" if "torch_dtype" in kwargs and "dtype" not in kwargs else "dtype"
    dtype = kwargs.pop("torch_dtype", None) if key == "torch_dtype" else kwargs.get("dtype")
    explicit = dtype not in (None, "auto")
    if not explicit and master_weights == "fp32":
        dtype = torch.float32
    elif not explicit:
        dtype = "auto"
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        logger.warning(_LOW_PRECISION_WARNING, name, "dtype in SFTConfig.model_init_kwargs", name)
    elif dtype == "auto":
        logger.warning(
            "master_weights='checkpoint': weights keep the checkpoint's dtype; a bf16/fp16 checkpoint trains in pure "
            "low precision (updates below half an ulp are rounded away, at lr 2e-5 most bf16 weights do not move)"
        )
    kwargs["dtype"] = dtype
    return kwargs


def warn_low_precision_master_weights(model: Any) -> bool:
    """Warn when ``model``'s trainable parameters are bf16/fp16 (pure low-precision training); return whether."""
    import torch

    dtypes = {p.dtype for p in model.parameters() if p.requires_grad} if hasattr(model, "parameters") else set()
    low = sorted(str(d).removeprefix("torch.") for d in dtypes & {torch.bfloat16, torch.float16})
    if low:
        logger.warning(_LOW_PRECISION_WARNING, "/".join(low), "model given in that dtype", "/".join(low))
    return bool(low)


@dataclass
class TrainingJobArguments:
    """What to train on and where to write it (the ``SFTConfig`` holds the optimisation settings).

    The packing length is ``SFTConfig.max_length`` (one field for both, as in TRL where it "sets the
    sequence length" when packing; :func:`default_sft_config` makes it 32768).
    """

    model: str | None = field(default=None, metadata={"help": "Base model: local folder or Hub id (required)."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training data (required): a folder written by `context-synthesis synthesize` (data/*.parquet), "
            "a folder saved with Dataset.save_to_disk, a parquet/json(l) file, or a Hub dataset id."
        },
    )
    output: str | None = field(
        default=None, metadata={"help": "Output folder for checkpoints, the final model and tokenizer (required)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to train on (Hub ids and saved DatasetDicts)."})
    dataset_cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder for loading data."})
    loss_weighting: str = field(
        default="token",
        metadata={
            "help": "'token': mean over all loss tokens of the batch (TRL's loss); 'example': LongAlign's loss, "
            "every packed example weighs the same.",
            "choices": ["token", "example"],
        },
    )
    truncation: bool = field(
        default=True,
        metadata={"help": "Examples longer than max_length lose distractor documents first (else they are dropped)."},
    )
    return_flash_kwargs: bool = field(
        default=True,
        metadata={"help": "Add cu_seq_lens/max_length kwargs to batches (flash-attention kernels; ignored by others)."},
    )
    row_order: str = field(
        default="shuffle",
        metadata={
            "help": "'shuffle': packed rows in random order; 'balanced': global steps of rows of similar attention "
            "cost, spread evenly over the ranks (Hierarchical Balance Packing style; sequential sampler).",
            "choices": ["shuffle", "balanced"],
        },
    )
    max_example_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest example kept (truncated beyond); rows hold max_length tokens. None: max_length. "
            "E.g. examples <= 32768 packed into max_length=65536 rows fill rows better."
        },
    )
    shuffle_seed: int | None = field(
        default=0, metadata={"help": "Seed for shuffling examples before packing (None keeps the order)."}
    )
    throughput_metrics: bool = field(
        default=True, metadata={"help": "Log train_tokens_per_second and padding_efficiency (ThroughputCallback)."}
    )
    probe_every_steps: int = field(
        default=0,
        metadata={
            "help": "Every N steps, probe answer accuracy with the relevant document at the beginning, middle and "
            "end of held-out examples (LongContextProbeCallback); 0 disables the probe."
        },
    )
    probe_examples: int = field(
        default=8, metadata={"help": "Rows held out of training for the probe (only when probe_every_steps > 0)."}
    )
    probe_max_new_tokens: int = field(default=16, metadata={"help": "Greedy tokens generated per probe answer."})
    push_to_hub_repo: str | None = field(
        default=None,
        metadata={"help": "Hub repo id to push the model, tokenizer and card to at save/train end (HubPushCallback)."},
    )
    master_weights: str = field(
        default="fp32",
        metadata={
            "help": "'fp32': load the trainable weights in float32 (bf16/fp16 autocast computes in low precision, "
            "as TRL's loader does); 'checkpoint': keep the checkpoint's dtype (pure bf16 training: a 2e-5 update "
            "is rounded away for most bf16 weights). An explicit dtype in SFTConfig.model_init_kwargs wins.",
            "choices": ["fp32", "checkpoint"],
        },
    )

    def __post_init__(self) -> None:
        from ..utils.values import Range, check_dataclass_fields

        # typed and range-checked first: an error names the field, the value and what is allowed
        check_dataclass_fields(self, {"max_example_length": Range(1), "probe_every_steps": Range(0),
                                      "probe_examples": Range(0), "probe_max_new_tokens": Range(1)})
        if self.loss_weighting not in ("token", "example"):
            raise ValueError(f"loss_weighting must be 'token' or 'example', got {self.loss_weighting!r}")
        if self.row_order not in ("shuffle", "balanced"):
            raise ValueError(f"row_order must be 'shuffle' or 'balanced', got {self.row_order!r}")
        if self.probe_every_steps < 0 or self.probe_examples < 0:
            raise ValueError("probe_every_steps and probe_examples must be >= 0")
        if self.master_weights not in MASTER_WEIGHTS:
            raise ValueError(f"master_weights must be one of {MASTER_WEIGHTS}, got {self.master_weights!r}")

    def packing_config(self, max_length: int, num_proc: int | None = None):
        """The :class:`~hf_context_synthesis.training.packing.PackingConfig` of this job (``num_proc``: tokenization
        processes, from ``SFTConfig.dataset_num_proc``)."""
        from .packing import PackingConfig

        return PackingConfig(
            max_length=max_length,
            truncation=self.truncation,
            loss_weighting=self.loss_weighting,
            return_flash_kwargs=self.return_flash_kwargs,
            shuffle_seed=self.shuffle_seed,
            row_order=self.row_order,
            max_example_length=self.max_example_length,
            num_proc=num_proc,
        )


def _bf16_supported() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover - broken CUDA setups
        return False


def _multi_process_without_cuda() -> bool:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or os.environ.get("LOCAL_RANK") is None:
        return False
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def default_sft_config(output_dir: str, **overrides: Any) -> trl.SFTConfig:
    """An ``SFTConfig`` for pre-packed data with the paper's hyperparameters as defaults.

    Fixed for pre-packed data: ``dataset_kwargs={"skip_prepare_dataset": True}``,
    ``remove_unused_columns=False``, ``packing=False``, ``per_device_train_batch_size=1`` (a packed row
    is already ``max_length`` tokens). Defaults: ``learning_rate=2e-5``, ``lr_scheduler_type="cosine"``,
    ``warmup_steps=0.03`` (a ratio: 3% of the steps), ``num_train_epochs=2``, ``max_length=32768``,
    ``bf16`` only when CUDA supports it, ``activation_checkpointing=True`` (TRL's default, under the
    transformers 5 name; ``gradient_checkpointing=`` is accepted as its alias), ``logging_steps=1``,
    ``save_strategy="epoch"``, ``report_to="none"``. Any ``SFTConfig`` field can be overridden by keyword; ``warmup_ratio=`` is
    accepted and mapped to ``warmup_steps``.
    """
    if "warmup_ratio" in overrides:  # transformers 5 folded the ratio into warmup_steps (a float < 1)
        overrides["warmup_steps"] = float(overrides.pop("warmup_ratio"))
    # transformers 5 renamed gradient_checkpointing (TRL defaults it to True) to activation_checkpointing
    legacy = overrides.pop("gradient_checkpointing", None)
    if overrides.get("activation_checkpointing") is None:
        overrides["activation_checkpointing"] = True if legacy is None else bool(legacy)
    overrides["gradient_checkpointing"] = None
    if "use_cpu" not in overrides and _multi_process_without_cuda():
        # accelerate's --multi_gpu on a machine without CUDA starts the processes but each trains alone
        # (DistributedType.NO); use_cpu=True makes them one gloo DDP job
        logger.info("%s processes launched and no CUDA: use_cpu=True (gloo DDP)", os.environ.get("WORLD_SIZE"))
        overrides["use_cpu"] = True
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "remove_unused_columns": False,
        "packing": False,
        "per_device_train_batch_size": 1,
        "learning_rate": 2e-5,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "num_train_epochs": 2,
        "max_length": 32768,
        "bf16": _bf16_supported(),
        "logging_steps": 1,
        "save_strategy": "epoch",
        "report_to": "none",
    }
    kwargs.update(overrides)
    dataset_kwargs = dict(kwargs.get("dataset_kwargs") or {})
    if not dataset_kwargs.get("skip_prepare_dataset", False) or kwargs.get("packing"):
        logger.warning("default_sft_config: data is pre-packed; TRL's dataset preparation/packing should stay off")
    return trl.SFTConfig(**kwargs)


class ContextSynthesisSFTTrainer(trl.SFTTrainer):
    """``SFTTrainer`` for pre-packed context-synthesis batches.

    When a batch carries ``loss_weights`` (``loss_weighting="example"``), the loss is
    :func:`hf_context_synthesis.training.packing.longalign_loss` of the model's logits; otherwise TRL's own loss.
    At the end of training it writes :data:`SUMMARY_FILE` into ``args.output_dir`` (in ``on_train_end``
    of a callback that runs first, so that ``HubPushCallback`` finds the file).
    """

    #: Filled by :func:`build_trainer`: base model id, dataset, packing config and source row count.
    context_synthesis_info: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        train = kwargs.get("train_dataset", args[3] if len(args) > 3 else None)
        if kwargs.get("data_collator") is None and len(args) < 3 and "seq_lengths" in _known_columns(train):
            # packed rows without a collator: ours, not TRL's default (which would add an all-ones attention mask)
            from .packing import PackedDataCollator

            tok = kwargs.get("processing_class")
            pad = getattr(tok, "pad_token_id", None)
            kwargs["data_collator"] = PackedDataCollator(pad_token_id=pad if isinstance(pad, int) else 0)
        super().__init__(*args, **kwargs)
        _refuse_mask_over_packed_rows(self.data_collator, self.train_dataset)
        from .attention import guard_packed_forward

        # any forward of this model on packed rows (training, evaluation, a user loop) with a cache on an
        # attention path that ignores the documents' boundaries raises instead of mixing the documents
        guard_packed_forward(self.model)
        # TRL refuses packing with context parallelism (cp drops the block-diagonal mask, so packed examples
        # would attend to each other); our rows are packed although TRL sees packing=False
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        if parallelism is not None and getattr(parallelism, "cp_enabled", False):
            raise ValueError(
                "packed rows are not compatible with context parallelism (cp_size > 1): it drops the per-example "
                "attention mask, so packed examples would attend to each other. Disable context parallelism."
            )
        self.context_synthesis_info = {}
        self.callback_handler.callbacks.insert(0, _SummaryCallback(self))
        target = self.model.get_base_model() if type(self.model).__name__.startswith("Peft") else self.model
        add_answer_only_head(target)

    #: Train the rows in the dataset's order (set by :func:`build_trainer` for ``row_order="balanced"``).
    sequential_rows: bool = False

    def _get_train_sampler(self, train_dataset: Any | None = None) -> Any:
        if self.sequential_rows:
            import torch

            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
        """With ``loss_weights`` (LongAlign weighting): the examples with answer tokens in the whole global
        batch, summed over the gradient-accumulation micro-batches and gathered over the ranks (LongAlign's
        ``M``, passed on to :meth:`compute_loss` as ``num_items_in_batch``, the way transformers passes its
        token count). Otherwise transformers' own count."""
        if not batch_samples or not isinstance(batch_samples[0], dict) or "loss_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        import torch

        from .packing import count_weighted_sequences

        local = sum(count_weighted_sequences(b["loss_weights"]) for b in batch_samples)
        count = torch.tensor(local, dtype=torch.float32, device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        weights = inputs.pop("loss_weights", None) if isinstance(inputs, dict) else None
        if isinstance(inputs, dict):
            inputs["use_cache"] = False  # with a cache transformers ignores the packed rows' position_ids restarts
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        import torch

        # LongAlign (Eq. 2): L = (1/M) * sum_k (1/N_k) * sum_{answer tokens t of k} CE_t, M = examples in the
        # global batch. TRL's fused LM head gives per-token log-probs from chunked logits (no [tokens, vocab]
        # fp32 tensor) plus the entropy / top-1 figures behind TRL's metrics.
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        w = weights[..., 1:].to(outputs.log_probs.device, torch.float32)
        weighted = -(outputs.log_probs.float() * w).sum()
        if num_items_in_batch is not None and mode == "train":
            loss = weighted / torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=weighted.device).clamp(min=1)
            # M counts every rank's examples and DDP/FSDP/DeepSpeed average the gradients over the ranks
            loss = loss * self.accelerator.num_processes
            # M already spans the accumulation steps: undo the Trainer's division when it will divide
            scaled = self.loss_is_scaled_for_ga
            if scaled is None:
                scaled = self.model_accepts_loss_kwargs or self.compute_loss_func is not None
            if not scaled:
                loss = loss * self.current_gradient_accumulation_steps
        else:  # evaluation: the mean over this batch's examples
            loss = weighted / w.sum().clamp(min=1)
        self._log_fused_metrics(mode, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def _log_fused_metrics(self, mode: str, inputs: dict[str, Any], outputs: Any) -> None:
        """TRL's ``entropy``, ``mean_token_accuracy`` and global ``num_tokens``, gathered over the ranks."""
        import torch

        gather = self.accelerator.gather_for_metrics
        num_valid = gather(outputs.label_mask.sum().reshape(1)).sum()
        if outputs.entropy is not None:
            entropy = gather(outputs.entropy.detach().float().sum().reshape(1)).sum()
            self._metrics[mode]["entropy"].append((entropy / num_valid).item() if num_valid > 0 else 0.0)
        if outputs.is_top1 is not None:
            correct = gather(outputs.is_top1.float().sum().reshape(1)).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            pos = inputs["position_ids"]
            local = torch.tensor([pos.size(-1)], device=pos.device)
            self._total_train_tokens += int(gather(local).sum().item())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def training_summary(self) -> dict[str, Any]:
        """The content of :data:`SUMMARY_FILE` (base model, dataset, packing, stats, hyperparameters)."""
        from .packing import get_packing_stats

        info = dict(getattr(self, "context_synthesis_info", {}) or {})
        # read at the end: a stream's stats fill up as it is consumed
        stats: dict[str, Any] = {"source_rows": info.get("source_rows")}
        found = get_packing_stats(self.train_dataset, (info.get("packing") or {}).get("max_length"))
        if found is not None:
            stats.update(found.to_dict())
        gathered = getattr(self, "_rank_counts", None) or self._count_over_ranks(collective=False)
        stats.update(gathered)
        hyper = {name: getattr(self.args, name, None) for name in RECORDED_HYPERPARAMETERS}
        warmup = hyper.get("warmup_steps")
        hyper["warmup_ratio"] = warmup if isinstance(warmup, float) and warmup < 1 else None
        hyper["global_batch_size"] = (
            self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        )
        hyper["lr_scheduler_type"] = str(getattr(hyper["lr_scheduler_type"], "value", hyper["lr_scheduler_type"]))
        return {
            "base_model": info.get("base_model"),
            "dataset": info.get("dataset"),
            "packing": info.get("packing"),
            "packing_stats": stats,
            "hyperparameters": hyper,
            "global_step": self.state.global_step,
            "train_loss": next((h["train_loss"] for h in reversed(self.state.log_history) if "train_loss" in h), None),
        }

    #: Filled at train end on every rank by :meth:`_count_over_ranks` (the summary is written on rank 0).
    _rank_counts: dict[str, Any] | None = None

    def _count_over_ranks(self, collective: bool = True) -> dict[str, Any]:
        """Token and streaming-packing counts summed over the ranks (one ``all_reduce`` when ``collective``).

        Keys: ``world_size``; ``collated_real_tokens`` / ``collated_batch_tokens`` / ``padding_efficiency``
        (what the collators of all ranks built, a prefetched batch included) with ``rank0_*`` the local
        figures; ``trained_real_tokens`` / ``trained_batch_tokens`` (what the models of all ranks trained
        on, from :class:`~hf_context_synthesis.trainer_callbacks.ThroughputCallback`); for a streaming
        dataset (stats ``scope="rank"``), its packing counts over the ranks (``scope`` becomes
        ``"global"``): summed for a stream split by node, else the maximum (an unsplit stream is read
        whole by rank 0 only, or by every rank).
        """
        from .packing import get_packing_stats
        from ..trainer_callbacks.throughput import ThroughputCallback, sum_over_ranks

        collator = self.data_collator
        real, batch = getattr(collator, "real_tokens", None), getattr(collator, "batch_tokens", None)
        local = [float(real or 0), float(batch or 0)]
        stream = get_packing_stats(self.train_dataset)
        stream_fields = ("num_examples", "num_truncated", "num_dropped", "num_rows", "real_tokens", "row_tokens")
        per_rank_stream = stream is not None and getattr(stream, "scope", "global") == "rank"
        if collective:
            summed, world = sum_over_ranks(local)
        else:
            summed, world = local, 1
        if per_rank_stream:
            # a stream split by node (datasets.distributed.split_dataset_by_node) is packed in parts: sum them.
            # Otherwise accelerate either reads it on rank 0 only and dispatches batches (others count 0) or
            # reads all of it on every rank and keeps its share (each counts it all): the max is the stream.
            split = getattr(self.train_dataset, "_distributed", None) is not None
            counts = [float(getattr(stream, f)) for f in stream_fields]
            if collective:
                counts = sum_over_ranks(counts, op="sum" if split else "max")[0]
            summed = summed + counts
        out: dict[str, Any] = {"world_size": world}
        if isinstance(real, int) and isinstance(batch, int) and summed[1] > 0:
            out.update(
                collated_real_tokens=int(summed[0]),
                collated_batch_tokens=int(summed[1]),
                padding_efficiency=round(summed[0] / summed[1], 6),
                rank0_collated_real_tokens=real,
                rank0_collated_batch_tokens=batch,
            )
        throughput = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, ThroughputCallback)), None)
        if throughput is not None and getattr(throughput, "_global", (0, 0))[1] > 0:
            out.update(trained_real_tokens=int(throughput._global[0]), trained_batch_tokens=int(throughput._global[1]))
        if per_rank_stream:
            out.update({f: int(v) for f, v in zip(stream_fields, summed[2:])})
            out["scope"] = "global" if collective else "rank"
            cap = out["num_rows"] * stream.max_length
            out["efficiency"] = round(out["real_tokens"] / cap, 6) if cap else 0.0
        return out

    def write_training_summary(self, output_dir: str | None = None) -> str:
        """Write :data:`SUMMARY_FILE` into ``output_dir`` (default ``args.output_dir``) and return its path."""
        out = output_dir or self.args.output_dir
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, SUMMARY_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.training_summary(), fh, indent=2, default=str)
        return path


#: Per-token fields :func:`add_answer_only_head` computes (what the trainer logs: entropy, mean_token_accuracy).
ANSWER_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")


def answer_token_log_probs(hidden: Any, lm_head: Any, labels: Any, outputs: tuple[str, ...] = ANSWER_HEAD_OUTPUTS) -> tuple:
    """Per-token ``(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1)`` of ``labels`` (already shifted:
    ``hidden[:, t]`` predicts ``labels[:, t]``), zero where the label is ``-100``.

    Only the positions with a label are gathered and projected through ``lm_head`` (TRL's chunked kernel,
    :class:`trl.kernels.ChunkedLogProbFunction`, tiles of the vocabulary): a packed row of long contexts and
    short answers pays for its answer tokens only, on every device (TRL's fused head compacts on Triton
    devices only and scores every position on CPU).
    """
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    hidden = hidden.to(lm_head.weight.device)
    labels = labels.to(lm_head.weight.device)
    mask = labels != -100
    weight, bias = lm_head.weight, lm_head.bias
    full_tensor = getattr(weight, "full_tensor", None)  # FSDP2 DTensor: gather the head once
    if full_tensor is not None:
        weight = full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    with maybe_gather_lm_head_ctx(weight, bias):
        per_token = ChunkedLogProbFunction.apply(
            hidden[mask], weight, bias, labels[mask], 1.0, _trl_chunk_size(), None, 1.0, outputs
        )
    # masked_scatter keeps an all-masked micro-batch connected to the graph (a differentiable zero)
    return tuple(None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token) + (mask,)


def _trl_chunk_size() -> int:
    try:
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        return int(_CHUNKED_LOGPROB_CHUNK_SIZE)
    except ImportError:  # pragma: no cover - other TRL versions
        return 32768


def add_answer_only_head(model: Any) -> bool:
    """Replace the fused LM head TRL's ``SFTTrainer`` put on ``model`` by one that projects answer tokens only.

    ``model(..., labels=..., fused_lm_head=True)`` then runs the backbone, gathers the positions whose next
    label is not ``-100`` and scores only them (:func:`answer_token_log_probs`); the output is TRL's
    ``FusedCausalLMOutput`` with the same values. Models whose head TRL scales or soft-caps, MoE models and
    pre-shifted ``shift_labels`` (context/sequence parallelism) keep TRL's head. Returns whether it was added.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    config = getattr(model, "config", None)
    if config is None or getattr(model, "_context_synthesis_answer_head", False):
        return bool(getattr(model, "_context_synthesis_answer_head", False))
    text = config.get_text_config()
    scaled = any(getattr(text, k, None) is not None for k in (
        "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    if scaled or getattr(text, "output_router_logits", False) or not hasattr(model, "base_model"):
        return False
    trl_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or labels is None or shift_labels is not None:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        log_probs, entropy, log_sum_sq, mean_logits, is_top1, mask = answer_token_log_probs(
            hidden, self.get_output_embeddings(), labels[:, 1:]
        )
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, log_sum_sq_probs=log_sum_sq,
                                   mean_logits=mean_logits, is_top1=is_top1, label_mask=mask, aux_loss=None)

    model.forward = types.MethodType(forward, model)
    model._context_synthesis_answer_head = True
    return True


def _trains_on_cpu(sft_config: Any) -> bool:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        cuda = False
    return bool(getattr(sft_config, "use_cpu", False)) or not cuda


def _known_columns(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names else []


def _refuse_mask_over_packed_rows(collator: Any, dataset: Any) -> None:
    """Raise when ``collator`` turns a packed row of several examples into a batch whose attention mask is all
    ones: the examples would attend to each other (transformers keeps them apart only from ``position_ids``
    restarts when there is no attention mask)."""
    import copy

    import datasets

    if collator is None or not isinstance(dataset, datasets.Dataset) or "seq_lengths" not in _known_columns(dataset):
        return
    rows = dataset.select(range(min(len(dataset), 32)))
    row = next((r for r in rows if len(r["seq_lengths"] or []) > 1), None)
    if row is None:
        return
    batch = copy.deepcopy(collator)([row])  # a copy: token counters stay untouched
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    if mask is not None and bool(mask.bool().all()):
        raise ValueError(
            f"data_collator {type(collator).__name__} gives packed rows (several examples each, see 'seq_lengths') an "
            "all-ones attention_mask, so the packed examples would attend to each other. Use "
            "hf_context_synthesis.PackedDataCollator (build_trainer and ContextSynthesisSFTTrainer pick it when "
            "data_collator is not given)."
        )


class _SummaryCallback(TrainerCallback):
    """Writes :data:`SUMMARY_FILE` at train end, before callbacks that read it (``HubPushCallback``)."""

    def __init__(self, trainer: ContextSynthesisSFTTrainer) -> None:
        self.trainer = trainer

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # every rank takes part in summing the counts; rank 0 writes
        self.trainer._rank_counts = self.trainer._count_over_ranks()
        if state.is_world_process_zero:
            logger.info("wrote %s", self.trainer.write_training_summary())


def _column_names(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names:
        return list(names)
    first = next(iter(dataset), None)  # IterableDataset without known features
    return list(first) if isinstance(first, dict) else []


def build_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    sft_config: trl.SFTConfig | None = None,
    packing: Any | None = None,
    callbacks: list[Any] | None = None,
    eval_dataset: Any | None = None,
    *,
    base_model: str | None = None,
    dataset_name: str | None = None,
    master_weights: str = "fp32",
) -> ContextSynthesisSFTTrainer:
    """A :class:`ContextSynthesisSFTTrainer` on packed data.

    Args:
        model: A causal LM or a model id/folder (loaded with ``sft_config.model_init_kwargs``).
        tokenizer: Tokenizer with a chat template (used to tokenize raw rows and saved with the model).
        train_dataset: Composed rows (``messages``) or tokenized rows (``input_ids``, ``labels``): packed
            here with :func:`~hf_context_synthesis.training.packing.prepare_packed_dataset`; rows already packed
            (``input_ids`` and ``seq_lengths``) are used as they are. The collator is a
            :class:`~hf_context_synthesis.training.packing.PackedDataCollator` (``pad_to_multiple_of`` from the
            ``SFTConfig`` when it is an integer).
        sft_config: Default :func:`default_sft_config` into ``./context-synthesis-sft``.
        packing: A ``PackingConfig``; default one with ``max_length=sft_config.max_length``.
        callbacks: Extra ``TrainerCallback`` s. ``ThroughputCallback`` and ``LongContextProbeCallback``
            instances are moved ahead of the logging/reporting callbacks so their metrics are printed and
            reported with each log.
        eval_dataset: Optional, raw or packed like ``train_dataset``.
        base_model / dataset_name: Recorded in :data:`SUMMARY_FILE` (default: the model's name_or_path).
        master_weights: How a model id/folder loads (:func:`model_load_kwargs`): ``"fp32"`` weights by
            default, ``"checkpoint"`` keeps its dtype. A model object given in bf16/fp16 is trained as it is,
            with a warning.
    """
    import datasets

    from .packing import PackedDataCollator, PackingConfig, arrange_rows, prepare_packed_dataset

    if sft_config is None:
        sft_config = default_sft_config("context-synthesis-sft")
    if packing is None:
        packing = PackingConfig(max_length=int(sft_config.max_length or PackingConfig().max_length))
    elif sft_config.max_length is not None and sft_config.max_length != packing.max_length:
        logger.warning(
            "PackingConfig.max_length=%d differs from SFTConfig.max_length=%s: rows are packed to %d tokens",
            packing.max_length, sft_config.max_length, packing.max_length,
        )
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM

        base_model = base_model or model
        model = AutoModelForCausalLM.from_pretrained(materialize_packaged_model(model),
                                                     **model_load_kwargs(sft_config, master_weights))
    else:
        warn_low_precision_master_weights(model)
    base_model = base_model or getattr(getattr(model, "config", None), "_name_or_path", None)
    if packing.cpu_packed_attention or not _trains_on_cpu(sft_config):
        from .attention import use_packed_attention

        # sdpa/eager would attend over a dense T x T block-diagonal mask: flash varlen / flex / packed_sdpa
        use_packed_attention(model, "cpu" if _trains_on_cpu(sft_config) else "cuda")

    def pack(dataset: Any, name: str) -> tuple[Any, int | None]:
        columns = _column_names(dataset)
        if "input_ids" in columns and "seq_lengths" in columns:
            return dataset, None  # already packed
        if "messages" not in columns and "input_ids" not in columns:
            raise ValueError(
                f"{name}: expected composed rows ('messages'), tokenized rows ('input_ids', 'labels') or packed "
                f"rows ('input_ids', 'seq_lengths'); got columns {columns}"
            )
        n = len(dataset) if hasattr(dataset, "__len__") else None
        return prepare_packed_dataset(dataset, tokenizer, packing), n

    packed_train, n_rows = pack(train_dataset, "train_dataset")
    packed_eval = pack(eval_dataset, "eval_dataset")[0] if eval_dataset is not None else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    sequential = False
    if isinstance(packed_train, datasets.Dataset) and len(packed_train):
        # whole global steps for this many ranks (padding rows, no loss) so accelerate never re-feeds a row,
        # and the balanced order when asked for (trained in that order: a sequential sampler)
        packed_train = arrange_rows(
            packed_train,
            num_ranks=max(1, int(sft_config.world_size)),
            rows_per_batch=int(sft_config.per_device_train_batch_size),
            gradient_accumulation_steps=int(sft_config.gradient_accumulation_steps),
            row_order=packing.row_order,
            pad_token_id=pad_id,
            attention_length=packing.attention_length,
            seed=packing.shuffle_seed,
        )
        sequential = packing.row_order == "balanced"
    elif packing.row_order == "balanced":
        logger.warning("row_order='balanced' needs a map-style Dataset; a streaming dataset keeps its order")
    multiple = sft_config.pad_to_multiple_of if isinstance(sft_config.pad_to_multiple_of, int) else None
    collator = PackedDataCollator(
        pad_token_id=pad_id,
        return_flash_kwargs=packing.return_flash_kwargs,
        loss_weighting=packing.loss_weighting,
        pad_to_multiple_of=multiple,
    )
    trainer = ContextSynthesisSFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=packed_train,
        eval_dataset=packed_eval,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.sequential_rows = sequential
    trainer.context_synthesis_info = {
        "base_model": base_model,
        "dataset": dataset_name,
        "packing": asdict(packing),
        "source_rows": n_rows,
    }
    _front_load_metric_callbacks(trainer)
    quiet_trainer_output(trainer)  # -q: no bar, no printed step dicts (they go to the log at INFO)
    return trainer


def _front_load_metric_callbacks(trainer: Any) -> None:
    """Put this library's metric callbacks first so printers and reporters see what they add to logs."""
    from ..trainer_callbacks.probe import LongContextProbeCallback
    from ..trainer_callbacks.throughput import ThroughputCallback

    handler = trainer.callback_handler
    kinds = (_SummaryCallback, ThroughputCallback, LongContextProbeCallback)
    ours = [cb for cb in handler.callbacks if isinstance(cb, kinds)]
    rest = [cb for cb in handler.callbacks if cb not in ours]
    handler.callbacks = ours + rest


def load_training_dataset(spec: str, split: str = "train", cache_dir: str | None = None) -> Any:
    """Load training rows from a synthesize output folder, a ``save_to_disk`` folder, a file or a Hub id."""
    import datasets

    if os.path.isdir(spec):
        if os.path.exists(os.path.join(spec, "state.json")) or os.path.exists(os.path.join(spec, "dataset_dict.json")):
            loaded = datasets.load_from_disk(spec)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        for pattern, builder in (("data/*.parquet", "parquet"), ("*.parquet", "parquet"), ("*.jsonl", "json")):
            files = sorted(glob.glob(os.path.join(spec, pattern)))
            of_split = [f for f in files if os.path.basename(f).startswith(f"{split}-")]
            if files:
                return datasets.load_dataset(builder, data_files=of_split or files, split="train", cache_dir=cache_dir)
        raise ValueError(f"dataset folder {spec!r} has no data/*.parquet, *.parquet, *.jsonl or save_to_disk files")
    if os.path.isfile(spec):
        builder = "parquet" if spec.endswith(".parquet") else "json"
        return datasets.load_dataset(builder, data_files=[spec], split="train", cache_dir=cache_dir)
    return datasets.load_dataset(spec, split=split, cache_dir=cache_dir)


def _hub_push_callback(repo_id: str, sft_config: trl.SFTConfig) -> Any:
    from ..trainer_callbacks.push import HubPushCallback

    return HubPushCallback(repo_id=repo_id, token=sft_config.hub_token, private=bool(sft_config.hub_private_repo))


def train(job: TrainingJobArguments, sft_config: trl.SFTConfig | None = None) -> ContextSynthesisSFTTrainer:
    """Run a training job: load, (hold out probe rows,) pack, train, save model, tokenizer and summary.

    ``sft_config.output_dir`` is set to ``job.output``. Returns the trainer after training.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("model", "dataset", "output"):
        if not getattr(job, name):
            raise ValueError(f"train: '{name}' is required (--{name} or a '{name}:' key in --config)")
    if sft_config is None:
        sft_config = default_sft_config(job.output)
    if sft_config.output_dir != job.output:
        logger.info("output_dir %s replaced by the job's output %s", sft_config.output_dir, job.output)
        sft_config.output_dir = job.output
    from ..utils.paths import refuse_links_below

    # the Trainer replaces files and deletes old checkpoint-* folders in the output: never through a link
    refuse_links_below(job.output, what="training output folder")
    # a packaged model (pkg:<package>/<file>, e.g. the registry-shipped SmolLM2) trains from its plain folder;
    # job.model (the name) stays the base model of the card and the summary
    source = materialize_packaged_model(job.model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=sft_config.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load = model_load_kwargs(sft_config, job.master_weights)
    load.setdefault("trust_remote_code", sft_config.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source, **load)
    dataset = load_training_dataset(job.dataset, job.dataset_split, job.dataset_cache_dir)
    callbacks: list[Any] = []
    if job.probe_every_steps > 0 and job.probe_examples > 0:
        from ..trainer_callbacks.probe import LongContextProbeCallback

        if not hasattr(dataset, "select") or "messages" not in _column_names(dataset):
            raise ValueError("probe_every_steps needs raw composed rows (messages, answer, context_spans) in a Dataset")
        if job.probe_examples >= len(dataset):
            raise ValueError(f"probe_examples={job.probe_examples} leaves no training rows out of {len(dataset)}")
        split = dataset.train_test_split(test_size=job.probe_examples, seed=sft_config.seed, shuffle=True)
        dataset, held_out = split["train"], split["test"]
        callbacks.append(
            LongContextProbeCallback(
                held_out,
                tokenizer,
                every_n_steps=job.probe_every_steps,
                max_examples=job.probe_examples,
                max_new_tokens=job.probe_max_new_tokens,
            )
        )
    if job.throughput_metrics:
        from ..trainer_callbacks.throughput import ThroughputCallback

        callbacks.append(ThroughputCallback())
    if job.push_to_hub_repo:
        callbacks.append(_hub_push_callback(job.push_to_hub_repo, sft_config))
    trainer = build_trainer(
        model,
        tokenizer,
        dataset,
        sft_config,
        packing=job.packing_config(int(sft_config.max_length or 32768), sft_config.dataset_num_proc),
        callbacks=callbacks,
        base_model=job.model,
        dataset_name=job.dataset,
        master_weights=job.master_weights,
    )
    trainer.train(resume_from_checkpoint=sft_config.resume_from_checkpoint)
    trainer.save_model(job.output)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(job.output)
        trainer.write_training_summary(job.output)
    logger.info("model, tokenizer and %s saved to %s", SUMMARY_FILE, job.output)
    return trainer


# -- command line --------------------------------------------------------------------------------
