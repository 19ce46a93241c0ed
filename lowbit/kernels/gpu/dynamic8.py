"""Triton kernels of the ``dynamic8`` codec, twins of :mod:`lowbit.kernels.cpu.dynamic8`: one
program per block of ``bs`` elements (a power of two, ≤ 4096). Float work: the absmax (exact),
one correctly rounded division (``div_rn``), and products/sums each rounded once
(``enable_fp_fusion=False``, so nothing becomes an FMA) — the same IEEE float32 steps on the GPU
and in the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel


@triton.jit
def _encode_kernel(x_ptr, lut_ptr, out_ptr, am_ptr, K, nb, BS: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    r = t // nb
    b = t - r * nb
    col = b * BS + tl.arange(0, BS)
    m = col < K
    x = tl.load(x_ptr + r * K + col, mask=m, other=0.0)
    am = tl.max(tl.abs(x), axis=0)
    tl.store(am_ptr + t, am)
    inv = tl.math.div_rn(tl.full([BS], 1.0, tl.float32), tl.zeros([BS], tl.float32) + am)
    v = x * inv
    v = tl.where(v != v, -1.0, v)  # 0 * Inf: bitsandbytes' vector max(v, -1) gives -1
    v = tl.minimum(tl.maximum(v, -1.0), 1.0)
    g = ((v + 1.0) * 0.5) * 65535.0
    g = g + 0.5
    idx = g.to(tl.int32)  # truncation toward zero (g >= 0.5)
    code = tl.load(lut_ptr + idx, mask=m, other=0).to(tl.int32)
    code = tl.where(am == 0.0, 0, code)
    tl.store(out_ptr + r * K + col, code.to(tl.uint8), mask=m)


@triton.jit
def _decode_kernel(data_ptr, map_ptr, am_ptr, out_ptr, n, K, nb, bs, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    e = pid * BLOCK + tl.arange(0, BLOCK)
    m = e < n
    r = e // K
    c = e - r * K
    code = tl.load(data_ptr + e, mask=m, other=0).to(tl.int32)
    v = tl.load(map_ptr + code, mask=m, other=0.0)
    s = tl.load(am_ptr + r * nb + c // bs, mask=m, other=1.0)
    y = v * s
    qnan = tl.full([BLOCK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    tl.store(out_ptr + e, tl.where(y != y, qnan, y), mask=m)


@kernel("dynamic8", "gpu", "encode")
def encode(x: torch.Tensor, code_map: torch.Tensor, lut: torch.Tensor, bs: int, out: torch.Tensor,
           absmax: torch.Tensor) -> None:
    """Codes and block absmax of float32 ``x[rows, K]``; see lowbit.kernels.cpu.dynamic8."""
    rows, K = x.shape
    nb = absmax.shape[1]
    if rows * nb:
        _encode_kernel[(rows * nb,)](x.contiguous(), lut, out, absmax, K, nb, BS=bs, enable_fp_fusion=False)


@kernel("dynamic8", "gpu", "decode")
def decode(data: torch.Tensor, code_map: torch.Tensor, absmax: torch.Tensor, bs: int, out: torch.Tensor) -> None:
    """float32 values of the codes in ``data``; see lowbit.kernels.cpu.dynamic8."""
    rows, K = out.shape
    n = rows * K
    if n:
        block = 1024
        _decode_kernel[(triton.cdiv(n, block),)](data.contiguous(), code_map, absmax.contiguous(), out, n, K,
                                                 absmax.shape[1], bs, BLOCK=block, enable_fp_fusion=False)
