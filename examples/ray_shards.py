"""Scale-out with Ray: one task per shard, retried if its worker dies, then one merge.

    pip install "hf-context-synthesis[ray]"
    python examples/ray_shards.py          # on a node of the Ray cluster (ray.init() joins it)

Shards generate into node-local storage and publish to OUTPUT (a path or fsspec URI every node
sees); the merged dataset lands in OUTPUT/dataset and is identical to a one-machine run.
"""

import ray

from hf_context_synthesis import SynthesisConfig
from hf_context_synthesis.scale import synthesize_on_ray

OUTPUT = "/shared/out"  # or "s3://bucket/context-synthesis" with storage_options
config = SynthesisConfig(seed="seeds/", endpoint=["http://tgi-0:8080", "http://tgi-1:8080"])

if __name__ == "__main__":
    ray.init()
    # 64 requests in flight per endpoint for the whole job, shared by the 8 shards (8 each)
    result = synthesize_on_ray(config, num_shards=8, output=OUTPUT, endpoint_concurrency=64)
    print(result.report.summary())
    if not result.complete:
        raise SystemExit(f"failed shards: {result.failed_shards}; missing: {result.report.missing_shards}")
