#!/usr/bin/env bash
# The speed table (benchmarks/speed.py) in bfloat16 on a CUDA GPU: both sides on the GPU,
# MFU against the GPU's dense bf16 peak (speed.py's table by device name; --peak_tflops X
# overrides, and an unknown GPU falls back to the measured matmul peak).
#
#   benchmarks/gpu.sh [speed.py flags, e.g. --quick --json results.json --peak_tflops 312]
#
# Needs jax with CUDA (pip install "jax[cuda12]") and a CUDA build of torch. Never run in
# CI: with no NVIDIA GPU (no nvidia-smi) it says so and exits 1 without running anything.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "benchmarks/gpu.sh: no NVIDIA GPU on this machine (nvidia-smi is missing or finds" \
       "no device); nothing was run. On a CPU, run: python benchmarks/speed.py" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cd "$(dirname "$0")/.."
exec python benchmarks/speed.py --device gpu --dtype bfloat16 "$@"
