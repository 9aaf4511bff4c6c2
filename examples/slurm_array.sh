#!/usr/bin/env bash
# Scale-out with a Slurm job array: N nodes each synthesize one shard against their own TGI replica(s),
# then one job merges the shard caches into a single dataset (and one Hub commit).
#
#   sbatch --array=0-7 examples/slurm_array.sh           # 8 shards
#   sbatch --dependency=afterok:<array job id> --wrap \
#     "context-synthesis merge --seed seeds/ --endpoint http://tgi:8080 \
#        --shard-cache out/shard-*/generations.sqlite --output out/merged && \
#      context-synthesis push-dataset out/merged you/context-synthesis-1.6k"
#SBATCH --job-name=context-synthesis
#SBATCH --time=12:00:00
set -euo pipefail
NUM_SHARDS=${SLURM_ARRAY_TASK_COUNT:-8}
SHARD=${SLURM_ARRAY_TASK_ID:-0}
ENDPOINT=${TGI_ENDPOINT:-http://localhost:8080}   # a TGI replica reachable from this node
context-synthesis synthesize \
  --seed seeds/ \
  --endpoint "$ENDPOINT" \
  --num-shards "$NUM_SHARDS" --shard-index "$SHARD" \
  --output "out/shard-$SHARD"
