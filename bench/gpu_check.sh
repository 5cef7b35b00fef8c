#!/usr/bin/env bash
# One scripted GPU check of at most 6 minutes (see bench/gpu_check.py): the GPU's bf16 matmul
# rate, then DistilBERT-size training throughput at 128 and 512 tokens, fp32 against bf16; a
# Qwen2-0.5B-size decoder classifier trained in full against LoRA (samples/s, peak memory);
# then DistilBERT under torch.compile. Needs only python with torch, transformers and peft; no network.
# Writes the table to stdout and the figures to $OUT/gpu_check.json (or reports/gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-reports}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# The script stops starting new configurations after 300 s; the timeout is the hard stop.
timeout 350 "${PYTHON:-python3}" bench/gpu_check.py --budget 300 --out "$out/gpu_check.json"
