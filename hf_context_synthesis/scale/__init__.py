"""Synthesis scale-out across machines: shards on Ray (this package) or a Slurm array
(``examples/slurm_array.sh``), then one merge (:func:`hf_context_synthesis.scale.sharding.merge_shards`).

``ray`` is an optional extra: ``pip install "hf-context-synthesis[ray]"``.
"""

from __future__ import annotations

from typing import Any

_RAY = ("RaySynthesisResult", "synthesize_on_ray", "shard_concurrency")
_SHARDING = ("export_cache", "synthesize_shard", "merge_shards")
__all__ = [*_RAY, *_SHARDING]


def __getattr__(name: str) -> Any:
    if name in _RAY:  # imports ray (the optional extra) only when used
        from . import ray_shards

        return getattr(ray_shards, name)
    if name in _SHARDING:
        from . import sharding

        return getattr(sharding, name)
    raise AttributeError(name)
