"""Triton kernels of block floating point (family ``bfp``); twins of :mod:`lowbit.kernels.cpu.bfp`
(integer operations on the float32 bits: exact on the GPU and in the interpreter)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import interpreting, kernel
from ._kvcommon import load_field
from ._kvcommon import pack as _pack
from ._ggml import floor_log2 as _floor_log2  # floor(log2 a), 1 <= a < 2**31, by binary search


def _bb(nb: int) -> int:
    if interpreting():
        return max(2, min(256, triton.next_power_of_2(max(nb, 1))))
    return 32




@triton.jit
def _encode_kernel(x_ptr, codes_ptr, out_ptr, nb, N, row_bytes, M: tl.constexpr, BB: tl.constexpr, NP: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BB + tl.arange(0, BB)
    bmask = blk < nb
    cols = tl.arange(0, NP)
    m2 = bmask[:, None] & (cols < N)[None, :]
    u = tl.load(x_ptr + blk[:, None] * N + cols[None, :], mask=m2, other=0.0).to(tl.int32, bitcast=True)
    a = u & 0x7FFFFFFF
    amax = tl.max(a, axis=1)  # finite float32 order = integer order of |bits|
    e32 = amax >> 23
    e = tl.where(e32 == 0, _floor_log2(tl.maximum(amax, 1)) - 149, e32 - 127)
    es = tl.maximum(e - (M - 2), -126)
    E = tl.where(amax == 0, 1, es + 127)
    # code = RNE(|x| / 2**es) by a right shift of the significand, then clamp and sign
    ae = a >> 23
    sig = tl.where(ae == 0, a, (a & 0x7FFFFF) | 0x800000)
    ex = tl.where(ae == 0, -149, ae - 150)
    sh = tl.minimum(tl.maximum((E - 127)[:, None] - ex, 1), 30)
    k = (sig + ((1 << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh
    k = tl.minimum(k, (1 << (M - 1)) - 1)
    k = tl.where(a == 0, 0, k)
    code = tl.where(u < 0, -k, k) & ((1 << M) - 1)
    tl.store(codes_ptr + blk[:, None] * N + cols[None, :], code.to(tl.uint8), mask=m2)
    tl.store(out_ptr + blk * row_bytes, E.to(tl.uint8), mask=bmask)


@kernel("bfp", "gpu", "encode")
def encode(x, n, m, out) -> None:
    nb = x.shape[0]
    if nb == 0:
        return
    codes = torch.empty((nb, n), dtype=torch.uint8, device=x.device)
    bb = _bb(nb)
    _encode_kernel[(triton.cdiv(nb, bb),)](x, codes, out, nb, n, out.stride(0), M=m, BB=bb,
                                           NP=triton.next_power_of_2(n), enable_fp_fusion=False)
    _pack(codes, m, out, 1)


@triton.jit
def _decode_kernel(data_ptr, out_ptr, nb, N, row_bytes, M: tl.constexpr, BB: tl.constexpr, NP: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BB + tl.arange(0, BB)
    bmask = blk < nb
    cols = tl.arange(0, NP)
    m2 = bmask[:, None] & (cols < N)[None, :]
    base = blk * row_bytes
    E = tl.load(data_ptr + base, mask=bmask, other=1).to(tl.int32)
    c = load_field(data_ptr, base[:, None], 1, cols[None, :], M, m2)
    c = tl.where(c >= (1 << (M - 1)), c - (1 << M), c)  # two's complement
    scale = (E << 23).to(tl.float32, bitcast=True)
    v = c.to(tl.float32) * scale[:, None]
    bad = (E == 0) | (E == 255)
    v = tl.where(bad[:, None], float("nan"), v)
    tl.store(out_ptr + blk[:, None] * N + cols[None, :], v, mask=m2)


@kernel("bfp", "gpu", "decode")
def decode(data, n, m, out) -> None:
    nb = data.shape[0]
    if nb == 0:
        return
    bb = _bb(nb)
    _decode_kernel[(triton.cdiv(nb, bb),)](data, out, nb, n, data.stride(0), M=m, BB=bb,
                                           NP=triton.next_power_of_2(n), enable_fp_fusion=False)
