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

__all__ = ["PACKED_SDPA", "packed_sdpa_attention", "register_packed_sdpa", "use_packed_sdpa_on_cpu"]

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
