#!/usr/bin/env bash
# GPU check in under 5 minutes on one H100/H200: the CUDA tests, the training utilization of the
# demo models, then inference and training benchmarks of the published model. Prints tables; writes
# JSON into ${OUT:-gpu_check_out}/. Each step has its own time limit, cut to what is left of the
# 5 minutes (GPU_CHECK_SECONDS, default 290), so the whole check ends in time whatever hangs.
#
#   bash scripts/gpu_check.sh            # on the GPU machine, from the repository root
#
# Record the printed tables, naming the card, in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu_check_out}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-290}))
limit() {  # seconds for the next step: its own limit $1, or what is left before the deadline
    local left=$((DEADLINE - SECONDS))
    if ((left < $1)); then echo $((left > 1 ? left : 1)); else echo "$1"; fi
}

# The GPU image lacks omegaconf, PyAV, lpips, scikit-video and vector-quantize-pytorch:
# scripts/fetch_gpu_wheels.sh puts them into .whl/ beforehand, and the device call carries .whl.
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== CUDA tests (parity, bf16, flash-attn when installed)"
timeout "$(limit 120)" python3 -m pytest -q tests/test_gpu.py tests/test_model_parity.py 2>&1 | tail -5 || status=1

# Short: the quick-start autoencoder, the generator and the world model on synthetic data, at the
# precision vidtwin train's precision: auto picks; FLOPs per update and the share of a bf16 matmul.
echo "== training utilization, demo models, precision auto"
timeout "$(limit 75)" python3 -m scripts.benchmark_train --demos --device cuda --precision auto --steps 10 \
    --warmup 3 --output "$OUT_DIR/benchmark_train_utilization.json" 2>&1 | tail -8 || status=1

echo "== inference throughput, published model, 16x224x224"
timeout "$(limit 240)" python3 -m scripts.benchmark --config configs/vidtwin.yaml --device cuda \
    --dtypes fp32 bf16 --batch-sizes 1 8 16 --attention sdpa flash --compile off \
    --warmup 2 --iters 5 --json "$OUT_DIR/benchmark_inference.json" 2>&1 | tail -30 || status=1

echo "== training step, published model, batch 2, bf16-mixed"
timeout "$(limit 150)" python3 -m scripts.benchmark_train --base configs/vidtwin.yaml --device cuda \
    --precision bf16-mixed --batch-size 2 --steps 5 --warmup 2 \
    model.params.loss.params.perceptual_weight=0 --output "$OUT_DIR/benchmark_train.json" 2>&1 | tail -15 || status=1

exit $status
