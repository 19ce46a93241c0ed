#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU image lacks, for benchmarks/gpu_check.sh to install
# offline there (the device has no network; .whl/ travels with the repo when a run names it in carry).
#
#   bash benchmarks/fetch_gpu_wheels.sh          # on the development machine, where pip reaches PyPI
#
# What it fetches (wheels for CPython 3.12 on manylinux x86_64, the image's Python, --no-deps: the
# image already has numpy, pyyaml, requests, tqdm, torch, safetensors, huggingface_hub, ninja):
#   gguf            pure Python; lowbit's GGUF reader/writer and tests/test_gguf_gpu.py
#   torchao         3 MiB abi3 wheel; the Python mx_formats casts the bench and one oracle test use
#   optimum-quanto  pure Python; tests/test_formats_hqq_quanto.py (with hqq)
# and the ggml oracle: libggml-base.so built here (GGML.build, or LOWBIT_GGML_CACHE's build) into
# .whl/ggml-oracle/build/bin/ (the 76 MB sdist it is built from does not travel).
# What it does not fetch is written to .whl/MANIFEST.txt as "skipped NAME: reason"; gpu_check
# prints those lines. Total stays under ~20 MiB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${LOWBIT_PYTHON:-python3}
dest=.whl
mkdir -p "$dest"
rm -f "$dest"/*.whl "$dest/MANIFEST.txt"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
manifest="$dest/MANIFEST.txt"
echo "# written by benchmarks/fetch_gpu_wheels.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$manifest"
for spec in gguf==0.19.0 torchao==0.18.0 optimum-quanto==0.2.7; do
  if "$py" -m pip download -q --no-deps "${plat[@]}" -d "$dest" "$spec"; then
    echo "wheel $spec" >>"$manifest"
  else
    echo "skipped $spec: pip found no wheel for CPython 3.12 manylinux x86_64" >>"$manifest"
  fi
done
echo "skipped hqq: published as an sdist only (no wheel to install offline); its tests are deselected there" >>"$manifest"
echo "skipped bitsandbytes: a binary CUDA wheel (tens of MiB, tied to a CUDA build), not pure Python; its peer rows and oracle tests are skipped there" >>"$manifest"
echo "skipped compressed-tensors: needs pydantic-core (binary) and loguru; one oracle test (nvfp4 vs torchao and compressed-tensors) is deselected there" >>"$manifest"

# the ggml oracle, prebuilt (x86-64, glibc of this machine; the image's is newer)
lib=$("$py" - <<'EOF'
from lowbit.tools.ggml_oracle import GGML
print(GGML.build().path.resolve())
EOF
)
mkdir -p "$dest/ggml-oracle/build/bin"
cp -L "$lib" "$dest/ggml-oracle/build/bin/libggml-base.so"
echo "oracle libggml-base.so ($(basename "$lib"))" >>"$manifest"
size=$(du -sk "$dest" | cut -f1)
echo "total ${size} KiB" >>"$manifest"
cat "$manifest"
if [ "$size" -gt 20480 ]; then echo "fetch_gpu_wheels: $dest is over 20 MiB" >&2; exit 1; fi
