"""Numba kernels for bitsandbytes 4-bit formats (family ``bnb``): NF4 and bnb's FP4.

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.bnb`):

* ``encode_blocks(x, fmt, out, absmax, flags)``: float32 ``x[n, K]`` → ``out[n, K/bs * ts]``; each block
  is its absmax field (``fmt.asize`` bytes: the float32 absmax, little-endian, or one byte left
  for the nested code) + bs/2 code bytes, the **first** element in the **high** nibble. The
  float32 absmax of every block also goes to ``absmax[nblocks]``.
* ``encode_nested(absmax, offset, lut, out, ts, nested_absmax)``: double quantization of the
  absmax values: ``absmax - offset`` in blocks of 256 with bitsandbytes' 8-bit dynamic code,
  through its 65536-entry lookup table, one code byte into byte 0 of each block.
* ``decode_blocks(data, fmt, nested_absmax, offset, out)`` (``nested_absmax`` None when the
  absmax is stored as float32).

The arithmetic is bitsandbytes 0.50's CPU path, step by step: ``v = clamp(x * fl(1/max(absmax,
1e-38)), -1, 1)``, code = the number of midpoints strictly below v (``torch.bucketize``; a value
on a midpoint takes the lower code), mapped through the sort order for FP4; decoding is
``table[code] * absmax`` (nested: ``absmax = dyn[q] * nested_absmax + offset``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._bits import bits_f32, f32_bits

from ..formats import (  # noqa: F401  (the family's names, re-exported unprefixed)
    BNB_NESTED_BLOCK as NESTED_BLOCK,
    BNB_LUT_SIZE as LUT_SIZE,
    BNB_CHUNK as _CHUNK,
    NAN_BITS,
    BnbKernelFormat,
)


@njit(cache=True, parallel=True)
def _encode(x, nblocks, bs, asize, bounds, order, out, absmax_out, flags):
    ts = asize + bs // 2
    per = max(1, _CHUNK // bs)
    tiny = np.float32(1e-38)  # torch.clamp(min=1e-38) in float32
    nb_ = bounds.size
    for ch in prange((nblocks + per - 1) // per):
        codes = np.empty(bs, dtype=np.int64)
        v = np.empty(bs, dtype=np.float32)
        cnt = np.empty(bs, dtype=np.int32)
        for blk in range(ch * per, min(nblocks, (ch + 1) * per)):
            e0 = blk * bs
            # absmax as the integer max of |x|'s bit patterns; >= 0x7F800000 means NaN or Inf
            amb = np.uint32(0)
            for i in range(bs):
                amb = max(amb, f32_bits(x[e0 + i]) & np.uint32(0x7FFFFFFF))
            if amb >= 0x7F800000:
                flags[0] = 1
                amb = np.uint32(0)
            am = bits_f32(amb)
            absmax_out[blk] = am
            r = np.float32(np.float32(1.0) / max(am, tiny))
            for i in range(bs):
                v[i] = min(max(np.float32(x[e0 + i] * r), np.float32(-1.0)), np.float32(1.0))
                cnt[i] = 0
            # bucketize(right=False): the number of midpoints strictly below v, counted with one
            # branch-free compare per midpoint (the inner loop vectorizes across the block)
            for j in range(nb_):
                b = bounds[j]
                for i in range(bs):
                    cnt[i] += np.int32(v[i] > b)
            for i in range(bs):
                codes[i] = order[cnt[i]]
            ob = blk * ts
            if asize == 4:  # the float32 absmax, little-endian
                u = f32_bits(am)
                out[ob] = u & 0xFF
                out[ob + 1] = (u >> 8) & 0xFF
                out[ob + 2] = (u >> 16) & 0xFF
                out[ob + 3] = u >> 24
            for i in range(bs // 2):  # first element in the high nibble
                out[ob + asize + i] = (codes[2 * i] << 4) | codes[2 * i + 1]


@njit(cache=True, parallel=True)
def _nested(absmax, offset, lut, out, ts, nested_absmax):
    n = absmax.size
    for j in prange((n + NESTED_BLOCK - 1) // NESTED_BLOCK):
        b0 = j * NESTED_BLOCK
        b1 = min(n, b0 + NESTED_BLOCK)
        m = np.float32(0.0)
        for b in range(b0, b1):
            m = max(m, abs(np.float32(absmax[b] - offset)))
        nested_absmax[j] = m
        if m == 0.0:
            for b in range(b0, b1):
                out[b * ts] = 0
            continue
        inv = np.float32(np.float32(1.0) / m)
        for b in range(b0, b1):
            v = np.float32(np.float32(absmax[b] - offset) * inv)
            v = min(max(v, np.float32(-1.0)), np.float32(1.0))
            # norm_to_lut_index: (v + 1) * 0.5 * 65535 + 0.5, each step in float32, truncated
            t = np.float32(np.float32(np.float32(v + np.float32(1.0)) * np.float32(0.5)) * np.float32(LUT_SIZE - 1))
            t = np.float32(t + np.float32(0.5))
            # a subnormal nested max overflows 1/m to Inf, and 0 * Inf is NaN: bitsandbytes then
            # writes code 0; clamp too, so no value can index outside the table
            idx = np.int64(t) if t == t else np.int64(0)
            out[b * ts] = lut[min(max(idx, np.int64(0)), np.int64(LUT_SIZE - 1))]


@njit(cache=True, parallel=True)
def _decode(data, nblocks, bs, asize, table, dyn, nested_absmax, offset, nested, out):
    ts = asize + bs // 2
    per = max(1, _CHUNK // bs)
    nan = bits_f32(NAN_BITS)
    for ch in prange((nblocks + per - 1) // per):
        for blk in range(ch * per, min(nblocks, (ch + 1) * per)):
            ib = blk * ts
            if nested:  # dequantize_blockwise, then + offset
                am = np.float32(np.float32(dyn[data[ib]] * nested_absmax[blk // NESTED_BLOCK]) + offset)
            else:
                am = bits_f32(np.uint32(data[ib]) | (np.uint32(data[ib + 1]) << 8)
                              | (np.uint32(data[ib + 2]) << 16) | (np.uint32(data[ib + 3]) << 24))
            e0 = blk * bs
            for i in range(bs // 2):
                b = data[ib + asize + i]
                y0 = table[b >> 4] * am
                y1 = table[b & 15] * am
                out[e0 + 2 * i] = y0 if y0 == y0 else nan  # 0 * Inf: one NaN on every backend
                out[e0 + 2 * i + 1] = y1 if y1 == y1 else nan


@kernel("bnb", "cpu", "encode")
def encode_blocks(x: np.ndarray, fmt: BnbKernelFormat, out: np.ndarray, absmax: np.ndarray, flags: np.ndarray) -> None:
    """Encode float32 ``x[n, K]`` (K % bs == 0) into ``out[n, K/bs * ts]``; absmax per block;
    ``flags[0] = 1`` when a block holds NaN or Inf (the caller refuses the input)."""
    n, K = x.shape
    _encode(x.reshape(-1), n * K // fmt.bs, fmt.bs, fmt.asize, fmt.bounds, fmt.order, out.reshape(-1), absmax, flags)


@kernel("bnb", "cpu", "encode_nested")
def encode_nested(absmax: np.ndarray, offset: float, lut: np.ndarray, out: np.ndarray, ts: int,
                  nested_absmax: np.ndarray) -> None:
    """Nested 8-bit codes of ``absmax - offset`` into byte 0 of each block of ``out``."""
    _nested(absmax, np.float32(offset), lut, out.reshape(-1), ts, nested_absmax)


@kernel("bnb", "cpu", "decode")
def decode_blocks(data: np.ndarray, fmt: BnbKernelFormat, nested_absmax, offset, out: np.ndarray) -> None:
    """Decode ``data[n, K/bs * ts]`` into float32 ``out[n, K]``."""
    n, K = out.shape
    nested = nested_absmax is not None
    nabs = nested_absmax if nested else np.zeros(1, np.float32)
    _decode(data.reshape(-1), n * K // fmt.bs, fmt.bs, fmt.asize, fmt.table, fmt.dyn, nabs,
            np.float32(offset if nested else 0.0), nested, out.reshape(-1))
