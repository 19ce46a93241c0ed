"""Triton kernels of the ``nonuniform`` codec: nearest-entry assignment + packing and the table
lookup, twins of :mod:`lowbit.kernels.cpu.nonuniform` (the table fitting itself runs on the host
with the CPU kernel for both backends, see there). Float work: one float32 subtraction and
``abs`` per candidate entry, exact IEEE on both backends.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel
from .int import _block, _gc_gb, _group, _load_code


@triton.jit
def _nearest(x, lut_ptr, base, m, K_LUT: tl.constexpr, LOGK: tl.constexpr):
    pos = tl.zeros_like(base)
    for i in tl.static_range(LOGK):
        s = K_LUT >> (i + 1)
        v = tl.load(lut_ptr + base + pos + s - 1, mask=m, other=0.0)
        pos = tl.where(v < x, pos + s, pos)
    v = tl.load(lut_ptr + base + pos, mask=m, other=0.0)
    p = tl.where(v < x, pos + 1, pos)
    hi_i = tl.minimum(p, K_LUT - 1)
    lo_i = tl.maximum(p - 1, 0)
    d_hi = tl.abs(x - tl.load(lut_ptr + base + hi_i, mask=m, other=0.0))
    d_lo = tl.abs(x - tl.load(lut_ptr + base + lo_i, mask=m, other=0.0))
    take_hi = (p < K_LUT) & ((p == 0) | (d_hi < d_lo))
    return tl.where(take_hi, p, p - 1)


@triton.jit
def _encode_kernel(x_ptr, lut_ptr, gcol_ptr, out_ptr, n_groups, K, M, Gr, NGr, NGc,
                   K_LUT: tl.constexpr, LOGK: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr,
                   BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    for j in tl.static_range(GB):
        byte = tl.zeros([BLOCK], dtype=tl.int32)
        for i in tl.static_range(GC):
            if (i * W < 8 * j + 8) and (i * W + W > 8 * j):
                e = grp * GC + i
                x = tl.load(x_ptr + e, mask=m, other=0.0)
                g = _group(e, K, M, Gr, NGr, NGc, gcol_ptr, m)
                k = _nearest(x, lut_ptr, g * K_LUT, m, K_LUT, LOGK).to(tl.int32)
                if 8 * j >= i * W:
                    byte = byte | ((k >> (8 * j - i * W)) & 0xFF)
                else:
                    byte = byte | ((k << (i * W - 8 * j)) & 0xFF)
        tl.store(out_ptr + grp * GB + j, byte.to(tl.uint8), mask=m)


@triton.jit
def _decode_kernel(data_ptr, lut_ptr, gcol_ptr, out_ptr, n_groups, K, M, Gr, NGr, NGc,
                   K_LUT: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    qnan = tl.full([BLOCK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    for i in tl.static_range(GC):
        code = _load_code(data_ptr, grp, m, i, W, GB, BLOCK)
        e = grp * GC + i
        g = _group(e, K, M, Gr, NGr, NGc, gcol_ptr, m)
        y = tl.load(lut_ptr + g * K_LUT + code, mask=m, other=0.0)
        y = tl.where(y != y, qnan, y)
        tl.store(out_ptr + e, y, mask=m)


@kernel("nonuniform", "gpu", "encode")
def encode(x: torch.Tensor, lut: torch.Tensor, geo, gcol: torch.Tensor, bits: int, out: torch.Tensor) -> None:
    gc, gb = _gc_gb(bits)
    n_groups = x.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    _encode_kernel[(triton.cdiv(n_groups, block),)](
        x, lut.reshape(-1).contiguous(), gcol.to(torch.int32).contiguous(), out, n_groups, geo.K, geo.M, geo.Gr,
        geo.NGr, geo.NGc, K_LUT=1 << bits, LOGK=bits, W=bits, GC=gc, GB=gb, BLOCK=block, enable_fp_fusion=False)


@kernel("nonuniform", "gpu", "decode")
def decode(data: torch.Tensor, lut: torch.Tensor, geo, gcol: torch.Tensor, bits: int, out: torch.Tensor) -> None:
    gc, gb = _gc_gb(bits)
    n_groups = out.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    _decode_kernel[(triton.cdiv(n_groups, block),)](
        data, lut.reshape(-1).contiguous(), gcol.to(torch.int32).contiguous(), out, n_groups, geo.K, geo.M, geo.Gr,
        geo.NGr, geo.NGc, K_LUT=1 << bits, W=bits, GC=gc, GB=gb, BLOCK=block, enable_fp_fusion=False)
