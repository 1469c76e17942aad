#!/usr/bin/env bash
# GPU check for headsweep: bf16/fp16 fine-tune examples/s and MFU for GPT-2-small- and
# DistilBERT-sized random-init models, then four stage-B trials sharing one GPU (gpu: 0.25)
# through the orchestrator. Prints one JSON line (last on stdout); under ~5 minutes.
#
#   bash bench/gpu_check.sh                 # from anywhere; runs in the repo root
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# Not part of the CPU suite. Exits 2 with a message when no CUDA device is present.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
LIMIT="${GPU_CHECK_TIMEOUT:-480}"   # seconds; the check itself takes ~2-4 minutes

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check: python interpreter '$PY' not found (set PYTHON=...)" >&2
    exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv,noheader >&2 || true
else
    echo "gpu_check: nvidia-smi not found; asking torch for a CUDA device anyway" >&2
fi

export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
if command -v timeout >/dev/null 2>&1; then
    exec timeout --signal=INT --kill-after=30 "$LIMIT" "$PY" bench/gpu_check.py "$@"
fi
exec "$PY" bench/gpu_check.py "$@"
