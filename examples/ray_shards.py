"""Scale-out with Ray: one task per shard, then a single merge (run `pip install ray` first).

Each task generates a disjoint contiguous block of the seeds into its own cache; `merge_shards`
composes the whole dataset from the union of the caches, identical to a one-machine run.
"""

import ray

from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.sharding import merge_shards, synthesize_shard

NUM_SHARDS = 8
SETTINGS = dict(seed="seeds/", endpoint=["http://tgi-0:8080", "http://tgi-1:8080"])


@ray.remote
def run_shard(index: int) -> str:
    out = f"/shared/out/shard-{index}"
    synthesize_shard(SynthesisConfig(**SETTINGS, num_shards=NUM_SHARDS, shard_index=index, generation_cache_dir=out))
    return f"{out}/generations.sqlite"


if __name__ == "__main__":
    caches = ray.get([run_shard.remote(i) for i in range(NUM_SHARDS)])
    report = merge_shards(SynthesisConfig(**SETTINGS), caches, "/shared/out/merged")
    print(report.summary())
