"""``"packed_sdpa"``: per-example attention for packed rows on devices without a varlen kernel (CPU).

transformers keeps the examples of a packed row apart on ``sdpa`` by building a dense ``[total, total]``
block-diagonal mask from the ``position_ids`` restarts, so a packed row of ``T`` tokens pays for
``T²`` masked attention although only ``Σ len²`` of it is useful: on CPU that made packed
training slower than padded batches. Flash-attention's varlen kernel does not exist on CPU and flex
attention has no backward on CPU (torch 2.13).

:func:`register_packed_sdpa` registers the attention implementation ``"packed_sdpa"`` with transformers'
``AttentionInterface`` (with sdpa's mask function): when a batch carries ``cu_seq_lens_q``
(:class:`~hf_context_synthesis.training.packing.PackedDataCollator` adds them by default), each example runs
through ``torch.nn.functional.scaled_dot_product_attention`` alone with ``is_causal=True``, costing
``Σ len²`` (the mask transformers still builds is ignored); any other batch, such as a padded one or
packed rows without ``cu_seq_lens``, falls back to transformers' ``sdpa`` with its mask. Load a model with
``attn_implementation="packed_sdpa"`` after calling it (``build_trainer`` switches a CPU model on
``sdpa`` or ``eager`` to it, see :func:`use_packed_sdpa_on_cpu`).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PACKED_SDPA",
    "PackedAttentionError",
    "choose_packed_attention",
    "guard_packed_forward",
    "use_packed_attention",
    "packed_rows_unsafe_reason",
    "packed_sdpa_attention",
    "register_packed_sdpa",
    "use_packed_sdpa_on_cpu",
]

PACKED_SDPA = "packed_sdpa"


def packed_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention of a packed batch example by example (``cu_seq_lens_q`` boundaries), else transformers' sdpa."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu.tolist()
    p = dropout if module.training else 0.0
    parts = [
        F.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, dropout_p=p, scale=scaling
        )
        for s, e in zip(bounds[:-1], bounds[1:])
        if e > s
    ]
    out = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
    return out.transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> str:
    """Register ``"packed_sdpa"`` with transformers (idempotent) and return the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    # sdpa's mask, used by the fallback (padded batches, or packed rows without cu_seq_lens); a packed batch
    # with cu_seq_lens ignores it
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def use_packed_sdpa_on_cpu(model: Any) -> bool:
    """Switch ``model`` from ``sdpa``/``eager`` to ``"packed_sdpa"`` when it runs on CPU; return whether it did.

    Outputs are unchanged (same softmax attention per example); only the wasted masked attention goes.
    """
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    device = getattr(model, "device", None)
    if config is None or impl not in ("sdpa", "eager") or getattr(device, "type", "cpu") != "cpu":
        return False
    if not hasattr(model, "set_attn_implementation"):
        return False
    register_packed_sdpa()
    try:
        model.set_attn_implementation(PACKED_SDPA)
    except Exception as err:  # pragma: no cover - models that refuse custom implementations
        logger.info("packed_sdpa not applied (%s); packed rows use %s attention over a dense mask", err, impl)
        return False
    logger.info("CPU: attention switched from %s to packed_sdpa (each packed example attends alone)", impl)
    return True


class PackedAttentionError(ValueError):
    """A forward on packed rows whose attention path would let the packed documents attend to each other."""


def _reads_boundaries(impl: str | None, has_cu_seq_lens: bool) -> bool:
    """Whether ``impl`` keeps packed documents apart from the batch's own boundaries, whatever the mask."""
    name = str(impl or "")
    if "flash" in name:  # flash-attention varlen: cu_seq_lens kwargs or position_ids restarts
        return True
    return name == PACKED_SDPA and has_cu_seq_lens


def packed_rows_unsafe_reason(impl: str | None, use_cache: bool, has_cu_seq_lens: bool) -> str | None:
    """Why a forward of packed rows (no attention mask, ``position_ids`` restarting per document) would mix
    documents on attention implementation ``impl``, or ``None`` when it keeps them apart.

    transformers builds the block-diagonal mask of a packed row from the ``position_ids`` restarts only when
    there is no cache: with ``use_cache=True`` eager/sdpa/flex (and packed_sdpa without ``cu_seq_lens``)
    attend over the whole row causally, so each document sees the ones before it.
    """
    if not use_cache or _reads_boundaries(impl, has_cu_seq_lens):
        return None
    return (
        f"packed rows on attn_implementation={impl!r} with use_cache=True: transformers ignores the position_ids "
        "restarts when a cache is built, so the packed documents would attend to each other. Run the model with "
        "use_cache=False (the trainer does) or use flash-attention varlen / packed_sdpa with cu_seq_lens"
    )


def _position_restarts(position_ids: Any) -> bool:
    pos = position_ids.reshape(-1, position_ids.shape[-1])
    return pos.shape[-1] > 1 and bool(((pos[:, 1:] - pos[:, :-1]) != 1).any())


def _guard_hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    position_ids = kwargs.get("position_ids")
    if position_ids is None or kwargs.get("attention_mask") is not None or kwargs.get("past_key_values") is not None:
        return None  # not a packed row (a mask or a running cache means padded batches / generation steps)
    config = getattr(module, "config", None)
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        use_cache = bool(getattr(config, "use_cache", False))
    impl = getattr(config, "_attn_implementation", None)
    reason = packed_rows_unsafe_reason(impl, bool(use_cache), kwargs.get("cu_seq_lens_q") is not None)
    if reason is not None and _position_restarts(position_ids):
        raise PackedAttentionError(reason)
    return None


def guard_packed_forward(model: Any) -> bool:
    """Make every forward of ``model`` refuse packed rows on a path that would mix their documents
    (:func:`packed_rows_unsafe_reason`); idempotent. Returns whether a guard was installed (``False`` for
    objects without forward hooks)."""
    if getattr(model, "_context_synthesis_packed_guard", None) is not None:
        return True
    if not hasattr(model, "register_forward_pre_hook"):
        return False
    model._context_synthesis_packed_guard = model.register_forward_pre_hook(_guard_hook, with_kwargs=True)
    return True


#: Dense-mask implementations: on packed rows they attend over a ``[T, T]`` mask built from the restarts.
DENSE_MASK_PATHS = ("sdpa", "eager")


def flash_attn_installed() -> bool:
    """Whether the ``flash-attn`` package (flash_attention_2's varlen kernel) is installed."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def flex_attention_available() -> bool:
    """Whether this torch has ``flex_attention`` (document block masks)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except Exception:
        return False
    return True


def packed_attention_for(device_type: str) -> str:
    """:func:`choose_packed_attention` with the kernels installed here, registered when it is
    :data:`PACKED_SDPA`: the implementation to set on a model that trains packed rows on ``device_type``."""
    choice = choose_packed_attention(device_type, flash_attn_installed(), flex_attention_available())
    if choice == PACKED_SDPA:
        register_packed_sdpa()
    return choice


def choose_packed_attention(device_type: str, flash_installed: bool, flex_available: bool) -> str:
    """The attention implementation for packed rows on ``device_type``; never a dense-mask path.

    * CUDA: ``flash_attention_2`` (varlen kernel, reads ``cu_seq_lens``) when ``flash-attn`` is installed, else
      ``flex_attention`` (transformers builds a document block mask from the ``position_ids`` restarts: only
      the blocks inside a document are computed), else :data:`PACKED_SDPA` (one sdpa call per document).
    * Anything else (CPU): :data:`PACKED_SDPA` (no varlen kernel; flex has no CPU backward).
    """
    if device_type == "cuda":
        if flash_installed:
            return "flash_attention_2"
        if flex_available:
            return "flex_attention"
    return PACKED_SDPA


def use_packed_attention(model: Any, device_type: str | None = None) -> str | None:
    """Switch ``model`` from a dense-mask path (``sdpa``/``eager``) to :func:`choose_packed_attention`'s choice
    for its device (``device_type``, default the model's) and log it; return the implementation packed rows
    run on, or ``None`` when the model cannot switch. Implementations chosen on purpose (flash, flex, a
    custom kernel) are kept."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if device_type is None:
        device_type = getattr(getattr(model, "device", None), "type", "cpu")
    if config is None:
        return None
    if impl not in DENSE_MASK_PATHS:
        logger.info("packed rows: attention %s kept (%s)", impl, device_type)
        return impl
    if not hasattr(model, "set_attn_implementation"):
        return None
    choice = packed_attention_for(device_type)
    try:
        model.set_attn_implementation(choice)
    except Exception as err:  # pragma: no cover - models that refuse an implementation
        if choice == PACKED_SDPA:
            logger.warning("packed_sdpa not applied (%s); packed rows use %s over a dense mask", err, impl)
            return None
        logger.warning("%s not applied (%s); trying packed_sdpa", choice, err)
        register_packed_sdpa()
        model.set_attn_implementation(PACKED_SDPA)
        choice = PACKED_SDPA
    logger.info("packed rows on %s: attention switched from %s to %s (documents attend alone, no dense mask)",
                device_type, impl, choice)
    return choice
