#!/usr/bin/env bash
# Prepared GPU check of the training path (issue 20, item 5), one command of at most 8 minutes.
#
#   here, once:       scripts/fetch_gpu_wheels.sh            (wheels into .whl/, git-ignored)
#   on the GPU:       bash scripts/gpu_check.sh              (the device tool: carry .whl, timeout_s 540)
#   CPU smoke (CI):   bash scripts/gpu_check.sh --cpu-smoke --out /tmp/gpu_check.json
#
# It installs the carried wheels with --no-deps into /tmp/site (first on PYTHONPATH: the image's older
# transformers stays unused), puts a copy of this working tree's package there (laid out as pyproject.toml
# maps it: dataset_scripts/ and trainer_callbacks/ become subpackages), then runs scripts/gpu_check.py,
# which writes every figure to one JSON file ($OUT/gpu_check.json by default, or --out PATH). Exit status:
# 0 when every check passed, 1 when one failed, 2 when the setup failed, 124 when the time ran out.
# The CPU smoke form skips the wheels (they are built for the GPU machine's python 3.12).
set -uo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS
limit="${GPU_CHECK_SECONDS:-470}"   # the whole command, setup included (the device tool's call: 540)
python="${PYTHON:-python3}"
site="${GPU_CHECK_SITE:-/tmp/site}"

smoke=0
for arg in "$@"; do
    [ "$arg" = "--cpu-smoke" ] && smoke=1
done

if [ "$smoke" = 0 ]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .whl/*.whl || { echo "gpu_check.sh: installing .whl/*.whl failed" >&2; exit 2; }
    else
        echo "gpu_check.sh: no .whl/ folder: run scripts/fetch_gpu_wheels.sh here and carry .whl" >&2
    fi
fi

# this working tree's package, as an install would lay it out (no build step, nothing fetched)
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r hf_context_synthesis "$src/" && cp -r dataset_scripts "$src/hf_context_synthesis/dataset_scripts" \
    && cp -r trainer_callbacks "$src/hf_context_synthesis/trainer_callbacks" \
    || { echo "gpu_check.sh: copying the package failed" >&2; exit 2; }
export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HOME="${HF_HOME:-$src/hf-home}"

"$python" -c "import torch, transformers, trl, datasets, hf_context_synthesis" \
    || { echo "gpu_check.sh: the packages do not import (see above)" >&2; exit 2; }

left=$(( limit - (SECONDS - start) - 15 ))
timeout -k 10 $(( left + 10 )) "$python" scripts/gpu_check.py --budget-s "$left" "$@"
