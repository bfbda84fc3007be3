#!/usr/bin/env bash
# The CUDA checks in one go: tests/test_gpu.py (bf16 fusion vs PEFT cat, mixed batch, same-seed rows,
# concurrent requests), then the benchmark on the GPU, saved with the GPU's name.
# Without CUDA the tests skip and the benchmark says so; nothing else here needs a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
export HF_HUB_OFFLINE=1
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
rc=$?
"$PY" -m dlp bench --device cuda --no-cold --save "${BENCH_OUT:-assets/eval/bench_gpu.json}" || rc=$?
exit $rc
