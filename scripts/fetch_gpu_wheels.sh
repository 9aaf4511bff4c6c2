#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels scripts/gpu_check.sh installs on the GPU machine.
#
# The device image has python 3.12, torch 2.11 and transformers 5.17 but no trl, datasets or flash-attn,
# and nothing can be fetched there. This project needs transformers >= 5.24, huggingface_hub >= 2.4, trl,
# datasets; each pin below is the version CI's venv runs (pyproject.toml's ranges; tests/test_gpu_check.py
# checks the pins against them), and the list is what the check imports that the image lacks or holds in
# an older version (transformers 5.25 needs kernels and huggingface_hub 2.4, which needs httpx2). torch,
# tokenizers, safetensors, numpy, pyarrow, pandas, jinja2, psutil, pyyaml, xxhash, anyio, h11 and idna are
# the image's own. gpu_check.sh installs them with --no-deps into /tmp/site (put first on PYTHONPATH).
#
# Usage: scripts/fetch_gpu_wheels.sh [DEST]   (default: .whl in the repository root; about 20 MB)
set -euo pipefail

cd "$(dirname "$0")/.."
dest="${1:-.whl}"

WHEELS=(
    transformers==5.25.0
    huggingface_hub==2.4.0
    httpx2==2.17.0
    httpcore2==2.17.0
    truststore==0.10.5
    kernels==0.19.1
    tomlkit==0.15.3
    trl==1.16.0
    datasets==5.2.0
    dill==0.4.1
    multiprocess==0.70.19
    accelerate==1.16.0
    fsspec==2026.9.0
)

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
    platforms+=(--platform "$p")
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# one version of each package: a fresh folder, filled only when every download succeeded
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$tmp" "${WHEELS[@]}"
rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp"/*.whl "$dest"/
ls -1 "$dest"
du -sh "$dest"
