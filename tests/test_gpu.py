"""Real-CUDA tier: large tensors on the device, every codec configuration, bytes equal to the CPU's.
Skipped cleanly without CUDA (the interpreter tier in test_codecs.py runs the same kernels on CPU).

The tensor is up to 3 x 1024 rows of K = 512 blocks (64 super-blocks for GGUF k-quants), as many
rows as the CPU (Numba) reference encodes in ``LOWBIT_GPU_TEST_SECONDS`` (default 1.5 s, measured
first on a few rows) and never fewer than 24: at full size a few codecs (QJL projections, Q2_K's scale
search, table fitting) take minutes on one core, which does not fit the GPU check's window
(benchmarks/gpu_check.sh); raise the variable for a longer run.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import lowbit

from .harness import assert_same_bits, assert_same_bytes, driven

pytestmark = pytest.mark.gpu

CONFIGS = [(cid, cfg) for cid in lowbit.list_codecs() for cfg in lowbit.codec_class(cid).examples()]


SECONDS = float(os.environ.get("LOWBIT_GPU_TEST_SECONDS", "1.5"))


def rows_per_slab(codec: lowbit.Codec, K: int) -> int:
    """Rows per slab (of 3) so that the CPU encode of all 3 slabs takes about SECONDS: 8 to 1024.
    Measured on 4, 16, 64, ... rows until one encode takes >= 50 ms (so call overhead does not
    count as per-row cost)."""
    rng = np.random.default_rng(1)
    codec.encode(rng.standard_normal((1, K)).astype(np.float32), backend="cpu")  # JIT compile first
    n = 4
    while True:
        probe = rng.standard_normal((n, K)).astype(np.float32)
        t0 = time.perf_counter()
        codec.encode(probe, backend="cpu")
        dt = time.perf_counter() - t0
        if dt >= 0.05 or n >= 3 * 1024:
            break
        n *= 4
    return int(min(1024, max(8, SECONDS * n / max(dt, 1e-9) / 3)))


@pytest.mark.parametrize("cid,cfg", CONFIGS, ids=[f"{c}-{'-'.join(map(str, g.values())) or 'default'}" for c, g in CONFIGS])
def test_large_tensor_cuda_equals_cpu(cid: str, cfg: dict) -> None:
    import torch

    codec = driven(lowbit.get_codec(cid, **cfg))  # (IQ2_XXS/XS: the uniform imatrix, as ggml needs one)
    rng = np.random.default_rng(0)
    K = codec.block_size * (512 if codec.block_size <= 32 else 64)  # (GGUF super-blocks: 16K columns)
    per = rows_per_slab(codec, K)
    x = (rng.standard_normal((3, per, K)) * np.exp2(rng.integers(-20, 20, (3, per, 1)))).astype(np.float32)
    if codec.input_policy()["overflow"] == "raise" and codec.interesting_values().size:  # stay in range (GGUF)
        lim = np.abs(codec.interesting_values()).max()
        x = np.clip(x, -lim, lim)
    if codec.input_policy()["nan"] != "raise":
        x[0, 0, :8] = np.nan
    qc = codec.encode(x, backend="cpu")
    xt = torch.from_numpy(x).cuda()
    qg = codec.encode(xt)  # auto -> gpu for CUDA tensors
    assert qg.data.is_cuda and all(a.is_cuda for a in qg.aux.values())
    assert_same_bytes(qc.data, qg.data, codec, "encode cpu vs cuda")
    for k in qc.aux:
        assert_same_bits(qc.aux[k], qg.aux[k], codec, f"aux {k}")
    yg = codec.decode(qg)
    assert yg.is_cuda and yg.dtype == torch.float32
    assert_same_bits(codec.decode(qc), yg, codec, "decode cpu vs cuda")
    assert codec.decode(qg, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_numpy_in_gpu_backend_out_numpy() -> None:
    x = np.linspace(-3, 3, 4096, dtype=np.float32).reshape(4, -1)
    q = lowbit.encode(x, "fp8_e4m3", backend="gpu")
    assert isinstance(q.data, np.ndarray)
    assert np.array_equal(q.data, lowbit.encode(x, "fp8_e4m3", backend="cpu").data)
