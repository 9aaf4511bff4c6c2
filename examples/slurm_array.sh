#!/usr/bin/env bash
# Scale-out with a Slurm job array: each array task synthesizes one shard against its TGI replica(s)
# into node-local storage, then publishes it (a closed, self-contained generations.sqlite plus
# shard.json and shard_report.json) to a folder every node sees. One job then merges the shards.
#
#   NUM_SHARDS=8 sbatch --array=0-7 --export=ALL examples/slurm_array.sh      # 8 shards
#   NUM_SHARDS=8 sbatch --array=3 --export=ALL examples/slurm_array.sh        # re-run shard 3 alone
#   sbatch --dependency=afterok:<array job id> --wrap \
#     "context-synthesis merge --seed seeds/ --shard-cache out/shard-*/generations.sqlite --output out/merged && \
#      context-synthesis push-dataset out/merged you/context-synthesis-1.6k"
#
# The shard count is a parameter (NUM_SHARDS), never the size of the current array: re-running one
# failed shard keeps the split. A shard whose seeds partly failed exits 0 (the failures are in its
# report), so `afterok` dependencies still run; export FAIL_ON_FAILURES=1 to make any failed seed fail.
# Shards sharing endpoints: ENDPOINT_BUDGET=64 (with PARALLEL_SHARDS = tasks running at once, default
# NUM_SHARDS) gives each shard --max-concurrency ENDPOINT_BUDGET/PARALLEL_SHARDS per endpoint.
#SBATCH --job-name=context-synthesis
#SBATCH --time=12:00:00
set -euo pipefail
: "${NUM_SHARDS:?set NUM_SHARDS, the total number of shards (not the size of this array)}"
SHARD=${SLURM_ARRAY_TASK_ID:?run as a job array task (SLURM_ARRAY_TASK_ID)}
SEEDS=${SEEDS:-seeds/}
OUT=${OUT:-out}                                     # shared folder every node sees
ENDPOINT=${TGI_ENDPOINT:-http://localhost:8080}     # TGI / OpenAI-compatible replica(s), space-separated
LOCAL=${LOCAL_DIR:-${TMPDIR:-/tmp}/context-synthesis-${USER:-$(id -u)}}/shard-$SHARD   # node-local: SQLite WAL stays off NFS
PYTHON=${PYTHON:-python}                            # the Python that has hf-context-synthesis installed
EXTRA=()
if [[ "${FAIL_ON_FAILURES:-0}" == "1" ]]; then EXTRA+=(--fail-on-failures); fi
# ENDPOINT_BUDGET: requests in flight per endpoint for the whole array, shared by the shards running at
# once (PARALLEL_SHARDS, default NUM_SHARDS; match a `--array=0-7%4` throttle): each shard gets its share.
if [[ -n "${ENDPOINT_BUDGET:-}" ]]; then
  SHARE=$(( ENDPOINT_BUDGET / ${PARALLEL_SHARDS:-$NUM_SHARDS} ))
  EXTRA+=(--max-concurrency "$(( SHARE > 0 ? SHARE : 1 ))")
fi
# shellcheck disable=SC2086
context-synthesis synthesize \
  --seed "$SEEDS" \
  --endpoint $ENDPOINT \
  --num-shards "$NUM_SHARDS" --shard-index "$SHARD" \
  --output "$LOCAL" ${EXTRA[@]+"${EXTRA[@]}"} ${SYNTHESIS_ARGS:-}
# publish: write to a temporary name, then rename, so a merge never reads half a shard. The cache is
# exported with SQLite's backup API: one self-contained file in rollback-journal mode (no WAL on NFS).
mkdir -p "$OUT"
rm -rf "$OUT/.shard-$SHARD.partial"
mkdir -p "$OUT/.shard-$SHARD.partial"
"$PYTHON" -c 'import sys; from hf_context_synthesis.scale import export_cache; export_cache(*sys.argv[1:])' \
  "$LOCAL/generations.sqlite" "$OUT/.shard-$SHARD.partial/generations.sqlite"
cp "$LOCAL/shard.json" "$LOCAL/shard_report.json" "$OUT/.shard-$SHARD.partial/"
rm -rf "$OUT/shard-$SHARD"
mv "$OUT/.shard-$SHARD.partial" "$OUT/shard-$SHARD"
