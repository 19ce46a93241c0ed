#!/usr/bin/env bash
# One prepared GPU check (issue 22): installs the carried wheels offline, runs every GPU test
# (CUDA bytes == Numba bytes), times encode/decode against the device copy, writes JSON + markdown.
#
#   bash benchmarks/gpu_check.sh                  # on a CUDA machine: the real check, <= 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run        # the same steps on the CPU (Triton interpreter, tiny sizes)
#   bash benchmarks/gpu_check.sh --out DIR        # where results go (default out/gpu-check-<UTC time>)
#   bash benchmarks/gpu_check.sh --help           # every option (budgets, planted mismatch for the tests)
#
# Exit status: 0 all passed; 1 a byte mismatch, a failed test or a step that did not finish;
# 2 the check cannot run here (no CUDA device without --dry-run). docs/gpu-check.md explains the output.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
py=${LOWBIT_PYTHON:-python3}
command -v "$py" >/dev/null 2>&1 || { echo "gpu_check: no $py on PATH (set LOWBIT_PYTHON)" >&2; exit 2; }
PYTHONUNBUFFERED=1 exec "$py" benchmarks/gpu_check.py "$@"
