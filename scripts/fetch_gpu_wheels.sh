#!/usr/bin/env bash
# Download, into .whl/ at the repository root, the packages that the GPU machine's image lacks
# (Python 3.12, x86-64): omegaconf, PyAV, lpips, scikit-video, vector-quantize-pytorch and what
# they need beyond the image. scripts/gpu_check.sh installs them from there. Run it here, where
# pip reaches the package registry; the device call then carries .whl (see docs/benchmarks.md, GPU).
#
#   bash scripts/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl \
    omegaconf==2.3.0 av==18.1.0 lpips==0.1.4 scikit-video==1.1.11 \
    vector-quantize-pytorch==1.32.0 einx==0.4.3 frozendict==2.4.6 loguru==0.7.3 torch-einops-utils==0.2.0
# antlr4-python3-runtime (omegaconf's parser) is published as a source archive only: build its
# pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -1 .whl
