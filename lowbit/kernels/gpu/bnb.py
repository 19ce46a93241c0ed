"""Triton kernels for bitsandbytes NF4 / FP4 (family ``bnb``): the GPU twins of
:mod:`lowbit.kernels.cpu.bnb`, same entry points, same bytes.

One program handles ``BPP`` blocks as a ``[BPP, bs]`` tile. The bucketize is a sum of 15
comparisons against the midpoints (the number of midpoints strictly below v), the reciprocal a
``div_rn``; the nested absmax codes use bitsandbytes' 65536-entry table, gathered with
``tl.load``. Launched with ``enable_fp_fusion=False`` (``(v + 1) * 0.5 * 65535 + 0.5`` must not
become an FMA).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from ..formats import BNB_NESTED_BLOCK as NESTED_BLOCK, NAN_BITS, BnbKernelFormat
from ..registry import interpreting, kernel

_NAN_BITS: tl.constexpr = tl.constexpr(NAN_BITS)


@triton.jit
def _encode_kernel(x_ptr, bounds_ptr, order_ptr, out_ptr, absmax_ptr, flag_ptr, n_blocks,
                   BS: tl.constexpr, ASIZE: tl.constexpr, BPP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    j = tl.arange(0, BS)
    x = tl.load(x_ptr + blk[:, None] * BS + j[None, :], mask=bm[:, None], other=0.0)
    amb = tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1)   # integer max of |x|'s bits
    bad = amb >= 0x7F800000
    am = tl.where(bad, 0, amb).to(tl.float32, bitcast=True)
    tl.store(absmax_ptr + blk, am, mask=bm)
    r = tl.math.div_rn(tl.zeros_like(am) + 1.0, tl.maximum(am, 1e-38))
    v = tl.minimum(tl.maximum(x * r[:, None], -1.0), 1.0)
    cnt = tl.zeros([BPP, BS], dtype=tl.int32)
    for k in tl.static_range(15):
        cnt += (v > tl.load(bounds_ptr + k)).to(tl.int32)   # midpoints strictly below v
    code = tl.load(order_ptr + cnt)
    base = out_ptr + blk * (ASIZE + BS // 2)
    if ASIZE == 4:  # the float32 absmax, little-endian
        u = am.to(tl.int32, bitcast=True)
        for k in tl.static_range(4):
            tl.store(base + k, ((u >> (8 * k)) & 0xFF).to(tl.uint8), mask=bm)
    hi, lo = tl.split(tl.reshape(code, [BPP, BS // 2, 2]))   # first element in the high nibble
    i = tl.arange(0, BS // 2)
    tl.store(base[:, None] + ASIZE + i[None, :], ((hi << 4) | lo).to(tl.uint8), mask=bm[:, None])
    zero = tl.zeros([BPP], dtype=tl.int32)
    tl.store(flag_ptr + zero, zero + 1, mask=bm & bad)


@triton.jit
def _nested_kernel(absmax_ptr, lut_ptr, out_ptr, nabs_ptr, n, offset, TS: tl.constexpr, NPP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    nb = pid * NPP + tl.arange(0, NPP)
    b = nb[:, None] * 256 + tl.arange(0, 256)[None, :]
    m = b < n
    a = tl.where(m, tl.load(absmax_ptr + b, mask=m, other=0.0) - offset, 0.0)
    mx = tl.max(tl.abs(a), axis=1)
    tl.store(nabs_ptr + nb, mx, mask=nb * 256 < n)
    inv = tl.math.div_rn(tl.zeros_like(mx) + 1.0, tl.where(mx == 0.0, 1.0, mx))
    v = tl.minimum(tl.maximum(a * inv[:, None], -1.0), 1.0)
    t = ((v + 1.0) * 0.5) * 65535.0 + 0.5      # norm_to_lut_index, each step in fp32
    # float -> int truncates, as the C cast does; NaN (0 * Inf from a subnormal nested max) takes
    # code 0 as bitsandbytes writes, and the index is clamped into the table
    idx = tl.where(t == t, t, 0.0).to(tl.int32)
    code = tl.load(lut_ptr + tl.minimum(tl.maximum(idx, 0), 65535))
    code = tl.where((mx == 0.0)[:, None], 0, code)
    tl.store(out_ptr + b * TS, code, mask=m)


@triton.jit
def _decode_kernel(data_ptr, table_ptr, dyn_ptr, nabs_ptr, out_ptr, n_blocks, offset,
                   BS: tl.constexpr, ASIZE: tl.constexpr, NESTED: tl.constexpr, BPP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    base = data_ptr + blk * (ASIZE + BS // 2)
    if NESTED:
        q = tl.load(base, mask=bm, other=0).to(tl.int32)
        am = tl.load(dyn_ptr + q) * tl.load(nabs_ptr + blk // 256, mask=bm, other=0.0) + offset
    else:
        u = tl.zeros([BPP], dtype=tl.int32)
        for k in tl.static_range(4):
            u = u | (tl.load(base + k, mask=bm, other=0).to(tl.int32) << (8 * k))
        am = u.to(tl.float32, bitcast=True)
    i = tl.arange(0, BS // 2)
    b = tl.load(base[:, None] + ASIZE + i[None, :], mask=bm[:, None], other=0).to(tl.int32)
    code = tl.reshape(tl.join(b >> 4, b & 15), [BPP, BS])
    y = tl.load(table_ptr + code) * am[:, None]
    y = tl.where(y == y, y, (tl.zeros_like(code) + _NAN_BITS).to(tl.float32, bitcast=True))
    j = tl.arange(0, BS)
    tl.store(out_ptr + blk[:, None] * BS + j[None, :], y, mask=bm[:, None])


def _bpp(n_blocks: int, bs: int) -> int:
    target = (1 << 16 if interpreting() else 4096) // bs
    return max(1, min(triton.next_power_of_2(max(1, target)), triton.next_power_of_2(max(1, n_blocks))))


@functools.lru_cache(maxsize=64)
def _table(raw: bytes, dtype: str, device: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy()).to(device)


def _t(a: np.ndarray, device: str) -> torch.Tensor:
    return _table(np.ascontiguousarray(a).tobytes(), a.dtype.name, device)


@kernel("bnb", "gpu", "encode")
def encode_blocks(x: torch.Tensor, fmt: BnbKernelFormat, out: torch.Tensor, absmax: torch.Tensor,
                  flags: torch.Tensor) -> None:
    n, K = x.shape
    nb = n * K // fmt.bs
    bpp = _bpp(nb, fmt.bs)
    dev = str(x.device)
    _encode_kernel[(triton.cdiv(nb, bpp),)](
        x, _t(fmt.bounds, dev), _t(fmt.order.astype(np.int32), dev), out, absmax, flags, nb,
        BS=fmt.bs, ASIZE=fmt.asize, BPP=bpp, enable_fp_fusion=False)


@kernel("bnb", "gpu", "encode_nested")
def encode_nested(absmax: torch.Tensor, offset: float, lut: np.ndarray, out: torch.Tensor, ts: int,
                  nested_absmax: torch.Tensor) -> None:
    n = absmax.numel()
    nn = -(-n // NESTED_BLOCK)
    npp = max(1, min(64 if interpreting() else 4, triton.next_power_of_2(nn)))
    _nested_kernel[(triton.cdiv(nn, npp),)](
        absmax, _t(lut, str(absmax.device)), out, nested_absmax, n, float(offset), TS=ts, NPP=npp,
        enable_fp_fusion=False)


@kernel("bnb", "gpu", "decode")
def decode_blocks(data: torch.Tensor, fmt: BnbKernelFormat, nested_absmax, offset, out: torch.Tensor) -> None:
    n, K = out.shape
    nb = n * K // fmt.bs
    bpp = _bpp(nb, fmt.bs)
    dev = str(data.device)
    nested = nested_absmax is not None
    nabs = nested_absmax if nested else out
    _decode_kernel[(triton.cdiv(nb, bpp),)](
        data, _t(fmt.table, dev), _t(fmt.dyn, dev), nabs, out, nb, float(offset) if nested else 0.0,
        BS=fmt.bs, ASIZE=fmt.asize, NESTED=nested, BPP=bpp, enable_fp_fusion=False)
