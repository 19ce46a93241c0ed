"""Triton kernels of the ``bitmod`` codec: nearest-value assignment + packing and the table
decode, twins of :mod:`lowbit.kernels.cpu.bitmod` (the per-group type choice runs on the host
with the CPU kernel for both backends). Float work: correctly rounded divisions (``div_rn``),
exact products of small values and float16-grid scales, comparisons.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel
from .int import _block, _gc_gb, _load_code


@triton.jit
def _index(t, mids_ptr, T, m, NM: tl.constexpr):
    i = tl.zeros_like(T)
    for j in tl.static_range(NM):
        mid = tl.load(mids_ptr + T * NM + j, mask=m, other=0.0)
        i += (mid < t).to(tl.int32)
    return i


@triton.jit
def _encode_kernel(x_ptr, s1_ptr, t1_ptr, s_ptr, t_ptr, vals_ptr, mids_ptr, codes_ptr, out_ptr, n_groups, K, G, NG,
                   NV: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    for j in tl.static_range(GB):
        byte = tl.zeros([BLOCK], dtype=tl.int32)
        for i in tl.static_range(GC):
            if (i * W < 8 * j + 8) and (i * W + W > 8 * j):
                e = grp * GC + i
                r = e // K
                g = r * NG + (e - r * K) // G
                x = tl.load(x_ptr + e, mask=m, other=0.0)
                s1 = tl.load(s1_ptr + g, mask=m, other=1.0)
                T1 = tl.load(t1_ptr + g, mask=m, other=0).to(tl.int32) & 3
                s = tl.load(s_ptr + g, mask=m, other=1.0)
                T = tl.load(t_ptr + g, mask=m, other=0).to(tl.int32) & 3
                i1 = _index(tl.math.div_rn(x, s1), mids_ptr, T1, m, NV - 1)
                y = tl.load(vals_ptr + T1 * NV + i1, mask=m, other=0.0) * s1
                i2 = _index(tl.math.div_rn(y, s), mids_ptr, T, m, NV - 1)
                k = tl.load(codes_ptr + T * NV + i2, mask=m, other=0)
                if 8 * j >= i * W:
                    byte = byte | ((k >> (8 * j - i * W)) & 0xFF)
                else:
                    byte = byte | ((k << (i * W - 8 * j)) & 0xFF)
        tl.store(out_ptr + grp * GB + j, byte.to(tl.uint8), mask=m)


@triton.jit
def _decode_kernel(data_ptr, s_ptr, t_ptr, lut_ptr, out_ptr, n_groups, K, G, NG,
                   NV: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    qnan = tl.full([BLOCK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    for i in tl.static_range(GC):
        code = _load_code(data_ptr, grp, m, i, W, GB, BLOCK)
        e = grp * GC + i
        r = e // K
        g = r * NG + (e - r * K) // G
        s = tl.load(s_ptr + g, mask=m, other=1.0)
        T = tl.load(t_ptr + g, mask=m, other=0).to(tl.int32) & 3
        y = tl.load(lut_ptr + T * NV + code, mask=m, other=0.0) * s
        y = tl.where(y != y, qnan, y)
        tl.store(out_ptr + e, y, mask=m)


def _t(a, device):
    return torch.from_numpy(a).to(device).contiguous()


@kernel("bitmod", "gpu", "encode")
def encode(x, s1, typ1, s, typ, G: int, tables, bits: int, out) -> None:
    gc, gb = _gc_gb(bits)
    n_groups = x.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    d = x.device
    _encode_kernel[(triton.cdiv(n_groups, block),)](
        x, s1.contiguous(), typ1.to(torch.int32).contiguous(), s.contiguous(), typ.to(torch.int32).contiguous(),
        _t(tables.vals, d), _t(tables.mids, d), _t(tables.codes_of.astype("int32"), d), out, n_groups, x.shape[1], G,
        s.shape[1], NV=tables.vals.shape[1], W=bits, GC=gc, GB=gb, BLOCK=block, enable_fp_fusion=False)


@kernel("bitmod", "gpu", "decode")
def decode(data, s, typ, G: int, tables, bits: int, out) -> None:
    gc, gb = _gc_gb(bits)
    n_groups = out.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    _decode_kernel[(triton.cdiv(n_groups, block),)](
        data, s.contiguous(), typ.to(torch.int32).contiguous(), _t(tables.lut, data.device), out, n_groups,
        out.shape[1], G, s.shape[1], NV=tables.lut.shape[1], W=bits, GC=gc, GB=gb, BLOCK=block,
        enable_fp_fusion=False)
