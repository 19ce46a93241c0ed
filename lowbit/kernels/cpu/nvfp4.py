"""Numba kernels for NVIDIA's two-level FP4 formats (family ``nvfp4``): NVFP4 and NVINT4.

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.nvfp4`):

* ``tensor_amax(x)``: the largest finite |x| of a float32 ``x[n, K]`` (0.0 when there is none),
  as an integer max over bit patterns;
* ``encode_blocks(x, fmt, g, rg, out, flags)``: float32 ``x[n, K]`` → ``out[n, K/16 * 9]``, each
  block = 1 scale byte (UE4M3 or UE5M3) + 16 four-bit codes, even element in the low nibble.
  ``g`` is the per-tensor global scale in the recipe's convention and ``rg = fl(1/g)`` (used by
  the torchao recipe). ``flags[0]`` is set to 1 when a block holds NaN or ±Inf;
* ``decode_blocks(data, fmt, g, out)``.

The float operations are exactly the producer's, in its order, each correctly rounded in fp32
(divisions included); the rounding to the scale and element grids is the minifloat family's
integer routine. See :mod:`lowbit.codecs.nvfp4` for the formulas.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._bits import bits_f32, f32_bits
from .minifloat import _fast_constants, _fast_float, _fast_int, _pack, _quantize, _quantize_general, _unpack

from ..formats import (  # noqa: F401  (the family's names, re-exported unprefixed)
    NV_TORCHAO as TORCHAO,
    NV_COMPRESSED_TENSORS as COMPRESSED_TENSORS,
    NV_RECIPES as RECIPES,
    NV_BLOCK as BLOCK,
    NV_TYPE_SIZE as TYPE_SIZE,
    NV_CHUNK_BLOCKS as _CHUNK_BLOCKS,
    NAN_BITS,
    NVKernelFormat,
)


@njit(cache=True, parallel=True)
def _amax(x, out):
    n = x.size
    nch = (n + 65535) // 65536
    part = np.zeros(nch, dtype=np.uint32)
    for ch in prange(nch):
        m = np.uint32(0)
        for i in range(ch * 65536, min(n, (ch + 1) * 65536)):
            a = f32_bits(x[i]) & np.uint32(0x7FFFFFFF)
            if a < 0x7F800000:  # finite values only
                m = max(m, a)
        part[ch] = m
    m = np.uint32(0)
    for ch in range(nch):
        m = max(m, part[ch])
    out[0] = bits_f32(m)


@kernel("nvfp4", "cpu", "tensor_amax")
def tensor_amax(x: np.ndarray) -> np.float32:
    """The largest finite |x| (0.0 if none), exactly."""
    out = np.zeros(1, dtype=np.float32)
    _amax(x.reshape(-1), out)
    return out[0]


@njit(inline="always")
def _block_scale(amax, g, recipe, emax_val, smin, smax, sp, slut, zero_code):
    """(scale byte, scale value) of a block with finite amax (the producer's float steps)."""
    bs = np.float32(amax / emax_val)                 # amax_blk / 6, fp32
    if recipe == TORCHAO:
        t = np.float32(bs / g)                       # per_tensor_scale is a multiplier
        t = min(max(t, smin), smax)                  # torch.clamp(min=tiny, max=448)
    else:
        t = np.float32(g * bs)                       # global_scale is a divisor of the scale
        t = min(max(t, -smax), smax)                 # clamp to the fp8 range
    c = _quantize(f32_bits(t), sp)                   # round to the scale grid (RNE, saturating)
    sv = slut[c]
    if zero_code >= 0 and sv == 0.0:                 # compressed-tensors: a zero scale becomes 0.125
        c = zero_code
        sv = slut[c]
    return c, sv


@njit(cache=True, parallel=True)
def _encode(x, nblocks, p, fast, subscale, is_int, sp, slut, recipe, emax_val, smin, smax, zero_code,
            scale_nan, g, rg, out, flags):
    signed, ss, max_mag, neg_lim, negzero = p[5], p[6], p[7], p[8], p[12]
    SH, REBIAS, ksub, tmin, z, small_ok = fast[0], fast[1], fast[2], fast[3], fast[4], fast[5]
    lo = np.float32(-emax_val)
    hi = np.float32(emax_val)
    for ch in prange((nblocks + _CHUNK_BLOCKS - 1) // _CHUNK_BLOCKS):
        b0 = ch * _CHUNK_BLOCKS
        nb = min(nblocks, b0 + _CHUNK_BLOCKS) - b0
        v = np.empty(nb * BLOCK, dtype=np.float32)
        codes = np.empty(nb * BLOCK, dtype=np.int32)
        sbyte = np.empty(nb, dtype=np.int64)
        for b in range(nb):
            e0 = (b0 + b) * BLOCK
            amax = np.uint32(0)
            for i in range(BLOCK):
                amax = max(amax, f32_bits(x[e0 + i]) & np.uint32(0x7FFFFFFF))
            if amax >= 0x7F800000:  # NaN or ±Inf: NaN scale, zero codes
                flags[0] = 1
                sbyte[b] = scale_nan
                for i in range(BLOCK):
                    v[b * BLOCK + i] = 0.0
                continue
            c, sv = _block_scale(bits_f32(amax), g, recipe, emax_val, smin, smax, sp, slut, zero_code)
            sbyte[b] = c
            if recipe == TORCHAO:
                r = np.float32(rg / sv)               # (1 / per_tensor_scale) / block scale
                # TransformerEngine's min(1 / (s * S_dec), FLT_MAX): in a tiny tensor a tiny block
                # would otherwise scale by Inf (torchao then writes +-6 and NaN codes)
                r = min(r, np.float32(3.4028234663852886e38))
                for i in range(BLOCK):
                    v[b * BLOCK + i] = min(max(np.float32(x[e0 + i] * r), lo), hi)
            else:
                d = np.float32(sv / g)                # block scale / global scale
                for i in range(BLOCK):
                    # compressed-tensors adds its zero point (0.0) to the quotient, which turns a
                    # -0.0 quotient into +0.0: a zero quotient takes the +0 code
                    q = np.float32(x[e0 + i] / d)
                    v[b * BLOCK + i] = min(max(q, lo), hi) if q != 0 else np.float32(0.0)
        if is_int:
            nslow = _fast_int(v, codes, signed, ss + 1, max_mag, neg_lim)
        else:
            nslow = _fast_float(v, codes, SH, REBIAS, subscale, ksub, tmin, z, small_ok, signed, ss, max_mag, negzero)
        if nslow:
            for i in range(codes.size):
                if codes[i] < 0:
                    codes[i] = _quantize_general(f32_bits(v[i]), p)  # saturates: never refused
        for b in range(nb):
            ob = (b0 + b) * TYPE_SIZE
            out[ob] = sbyte[b]
            _pack(codes[b * BLOCK:(b + 1) * BLOCK], 4, out, ob + 1)


@njit(cache=True, parallel=True)
def _decode(data, nblocks, elut, slut, recipe, g, out):
    nan = bits_f32(NAN_BITS)
    for ch in prange((nblocks + _CHUNK_BLOCKS - 1) // _CHUNK_BLOCKS):
        b0 = ch * _CHUNK_BLOCKS
        b1 = min(nblocks, b0 + _CHUNK_BLOCKS)
        codes = np.empty(BLOCK, dtype=np.int32)
        for blk in range(b0, b1):
            ib = blk * TYPE_SIZE
            sv = slut[data[ib]]
            e0 = blk * BLOCK
            if sv != sv:
                for i in range(BLOCK):
                    out[e0 + i] = nan
                continue
            # the effective block scale, in the producer's order
            m = np.float32(g * sv) if recipe == TORCHAO else np.float32(sv / g)
            _unpack(data, ib + 1, 4, codes)
            for i in range(BLOCK):
                y = elut[codes[i]] * m
                out[e0 + i] = y if y == y else nan  # 0 * Inf: one NaN pattern on every backend


def _args(fmt: NVKernelFormat):
    enc = fmt.enc
    fast, subscale = _fast_constants(enc)
    return (enc.params.as_array(), fast, subscale, bool(enc.params.is_int), fmt.senc.params.as_array(), fmt.slut,
            fmt.recipe, np.float32(fmt.emax_val), np.float32(fmt.smin), np.float32(fmt.smax), fmt.zero_code,
            fmt.scale_nan)


@kernel("nvfp4", "cpu", "encode")
def encode_blocks(x: np.ndarray, fmt: NVKernelFormat, g: float, rg: float, out: np.ndarray, flags: np.ndarray) -> None:
    """Encode float32 ``x[n, K]`` (K % 16 == 0) into ``out[n, K/16 * 9]``."""
    n, K = x.shape
    _encode(x.reshape(-1), n * K // BLOCK, *_args(fmt), np.float32(g), np.float32(rg), out.reshape(-1), flags)


@kernel("nvfp4", "cpu", "decode")
def decode_blocks(data: np.ndarray, fmt: NVKernelFormat, g: float, out: np.ndarray) -> None:
    """Decode ``data[n, K/16 * 9]`` into float32 ``out[n, K]``."""
    n, K = out.shape
    _decode(data.reshape(-1), n * K // BLOCK, fmt.elut, fmt.slut, fmt.recipe, np.float32(g), out.reshape(-1))
