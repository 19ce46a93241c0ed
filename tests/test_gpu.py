"""Real-CUDA tier: large tensors on the device, every codec configuration, bytes equal to the CPU's.
Skipped cleanly without CUDA (the interpreter tier in test_codecs.py runs the same kernels on CPU)."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit

from .harness import assert_same_bits, assert_same_bytes

pytestmark = pytest.mark.gpu

CONFIGS = [(cid, cfg) for cid in lowbit.list_codecs() for cfg in lowbit.codec_class(cid).examples()]


@pytest.mark.parametrize("cid,cfg", CONFIGS, ids=[f"{c}-{'-'.join(map(str, g.values())) or 'default'}" for c, g in CONFIGS])
def test_large_tensor_cuda_equals_cpu(cid: str, cfg: dict) -> None:
    import torch

    codec = lowbit.get_codec(cid, **cfg)
    rng = np.random.default_rng(0)
    K = codec.block_size * (512 if codec.block_size <= 32 else 64)  # (GGUF super-blocks: 16K columns)
    x = (rng.standard_normal((3, 1024, K)) * np.exp2(rng.integers(-20, 20, (3, 1024, 1)))).astype(np.float32)
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
