"""Synthesis scale-out across machines: shards on Ray (this package) or a Slurm array
(``examples/slurm_array.sh``), then one merge (:func:`hf_context_synthesis.sharding.merge_shards`).

``ray`` is an optional extra: ``pip install "hf-context-synthesis[ray]"``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RaySynthesisResult", "synthesize_on_ray", "shard_concurrency"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import ray_shards

        return getattr(ray_shards, name)
    raise AttributeError(name)
