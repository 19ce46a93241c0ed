"""Numba kernels for OCP MX block formats (family ``mx``): MXFP8/6/4 and MXINT8.

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.mx`):

* ``encode_blocks(x, fmt, out, flags)``: float32 ``x[n, K]`` → ``out[n, K/32 * type_size]``, each
  block = 1 E8M0 scale byte + the 32 element codes packed LSB-first (spec/mx*.toml).
  ``flags[0]`` is set to 1 when a block holds NaN or ±Inf (the caller raises when its policy is
  ``"raise"``; with ``"nan"`` the block is written as scale 0xFF and all-zero codes).
* ``decode_blocks(data, fmt, out)``: the inverse; scale 0xFF decodes the whole block to NaN.

``fmt`` is an :class:`MXKernelFormat` (the element encoding plus the scale rule as integers).

Every step is an integer operation on float32 bit patterns or an exact float32 product:

* the block amax is the integer max of ``bits & 0x7FFFFFFF`` (a non-negative float's bit pattern
  orders like its value; NaN and Inf patterns are >= 0x7F800000, so one compare finds them);
* the scale exponent comes from the exponent field of amax (FLOOR/CEIL/EVEN) or of the
  correctly rounded quotient ``amax / max_elem`` (RCEIL), see :func:`scale_exponent`;
* elements are ``x * 2**(shift - s)``, built from two normal powers of two so that no factor is an
  fp32 subnormal (exact unless the result is below 2**-126, where every MX element rounds to ±0
  anyway), then rounded to nearest-even with saturation by the minifloat routines;
* decoding multiplies the element value by ``2**s`` (exact: every product has at most 8
  significant bits and stays above 2**-149); for ``s = -127`` by ``0.5`` and then ``2**-126``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._bits import bits_f32, f32_bits
from .minifloat import _fast_constants, _fast_float, _fast_int, _pack, _quantize_general, _unpack

from ..formats import (  # noqa: F401  (the family's names, re-exported unprefixed)
    MX_FLOOR as FLOOR,
    MX_CEIL as CEIL,
    MX_EVEN as EVEN,
    MX_RCEIL as RCEIL,
    MX_SCALE_RULES as SCALE_RULES,
    MX_BLOCK as BLOCK,
    MX_CHUNK_BLOCKS as _CHUNK_BLOCKS,
    NAN_BITS,
    MXKernelFormat,
)


@njit(inline="always")
def scale_exponent(amax_bits, rule, emax, round_add, vmax):
    """Unbiased E8M0 exponent s in [-127, 127] of a block whose (finite) amax has bit pattern
    ``amax_bits``:

    * FLOOR: ``floor(log2 amax) - emax`` (OCP MX v1.0 §6.3): the exponent field minus the bias
      (fp32 subnormals give -127, and so does every result after the clamp);
    * CEIL:  ``ceil(log2 amax) - emax``: one more when the mantissa field is not zero (for an
      fp32 subnormal amax: when it exceeds 2**-127);
    * EVEN:  FLOOR of amax rounded half-up at the element's mantissa width (adding half an ulp
      of that width to the bit pattern carries into the exponent field exactly when amax would
      round up to the next power of two);
    * RCEIL: ``ceil(log2(amax / vmax))`` with the quotient correctly rounded in fp32, rounded up
      to a power of two on its bits as NVIDIA's ``cvt.rp.satfinite.ue8m0`` does (exponent field
      + 1 when the mantissa is not zero; quotients <= 2**-127 give 2**-127, the top byte 0xFE
      saturates).
    Results are clamped to E8M0's range [-127, 127].
    """
    if rule == RCEIL:
        d = f32_bits(np.float32(bits_f32(amax_bits) / vmax))  # correctly rounded fp32 division
        e = np.int64(d >> 23)
        m = np.int64(d & 0x7FFFFF)
        up = (m != 0) & (e != 0xFE) & ~((e == 0) & (m <= 0x400000))
        s = e + up - 127
    else:
        a = np.int64(amax_bits)
        if rule == EVEN:
            a = (a + round_add) & 0x7F800000
        field = a >> 23
        s = field - 127 - emax
        if rule == CEIL:
            # +1 unless a is a power of two; for an fp32 subnormal a (field 0), log2 a > -127
            # exactly when the mantissa exceeds 2**22 (a > 2**-127)
            m = a & 0x7FFFFF
            s += ((field != 0) & (m != 0)) | ((field == 0) & (m > 0x400000))
    return min(max(s, -127), 127)


@njit(inline="always")
def pow2(e):
    """2**e as float32 for a normal exponent e in [-126, 127] (exponent field e + 127)."""
    return bits_f32(np.int64(e + 127) << 23)


@njit(cache=True, parallel=True)
def _encode(x, nblocks, w, ts, p, fast, subscale, is_int, rule, emax, round_add, vmax, shift, out, flags):
    # parameters are hoisted into locals (Numba cannot prove the stores leave `p` alone)
    signed, ss, max_mag, neg_lim, negzero = p[5], p[6], p[7], p[8], p[12]
    SH, REBIAS, ksub, tmin, z, small_ok = fast[0], fast[1], fast[2], fast[3], fast[4], fast[5]
    nchunks = (nblocks + _CHUNK_BLOCKS - 1) // _CHUNK_BLOCKS
    for ch in prange(nchunks):
        b0 = ch * _CHUNK_BLOCKS
        b1 = min(nblocks, b0 + _CHUNK_BLOCKS)
        nb = b1 - b0
        v = np.empty(nb * BLOCK, dtype=np.float32)
        codes = np.empty(nb * BLOCK, dtype=np.int32)
        sbyte = np.empty(nb, dtype=np.int64)
        for b in range(nb):
            e0 = (b0 + b) * BLOCK
            amax = np.uint32(0)
            for i in range(BLOCK):
                amax = max(amax, f32_bits(x[e0 + i]) & np.uint32(0x7FFFFFFF))
            if amax >= 0x7F800000:  # NaN or ±Inf in the block: NaN scale, zero codes
                flags[0] = 1
                sbyte[b] = 0xFF
                for i in range(BLOCK):
                    v[b * BLOCK + i] = 0.0
                continue
            s = scale_exponent(amax, rule, emax, round_add, vmax)
            sbyte[b] = s + 127
            # x * 2**(shift - s) as two exact products by normal powers of two
            t = shift - s
            t1 = min(max(t, -126), 127)
            m1 = pow2(t1)
            m2 = pow2(t - t1)
            for i in range(BLOCK):
                v[b * BLOCK + i] = (x[e0 + i] * m1) * m2
        # element codes: the vectorizable fast path, then the general routine for the rest
        if is_int:
            nslow = _fast_int(v, codes, signed, ss + 1, max_mag, neg_lim)
        else:
            nslow = _fast_float(v, codes, SH, REBIAS, subscale, ksub, tmin, z, small_ok, signed, ss, max_mag, negzero)
        if nslow:
            for i in range(codes.size):
                if codes[i] < 0:
                    codes[i] = _quantize_general(f32_bits(v[i]), p)  # saturates: never refused
        for b in range(nb):
            ob = (b0 + b) * ts
            out[ob] = sbyte[b]
            _pack(codes[b * BLOCK:(b + 1) * BLOCK], w, out, ob + 1)


@njit(cache=True, parallel=True)
def _decode(data, nblocks, w, ts, lut, out):
    for ch in prange((nblocks + _CHUNK_BLOCKS - 1) // _CHUNK_BLOCKS):
        b0 = ch * _CHUNK_BLOCKS
        b1 = min(nblocks, b0 + _CHUNK_BLOCKS)
        codes = np.empty(BLOCK, dtype=np.int32)
        nan = bits_f32(NAN_BITS)
        for blk in range(b0, b1):
            ib = blk * ts
            sb = np.int64(data[ib])
            e0 = blk * BLOCK
            if sb == 0xFF:
                for i in range(BLOCK):
                    out[e0 + i] = nan
                continue
            _unpack(data, ib + 1, w, codes)
            s = sb - 127
            # 2**s: one normal power of two, or 0.5 * 2**-126 for s = -127 (no subnormal factor)
            pre = np.float32(1.0) if s >= -126 else np.float32(0.5)
            m = pow2(max(s, -126))
            for i in range(BLOCK):
                y = lut[codes[i]]
                out[e0 + i] = (y * pre) * m if y == y else y  # NaN codes keep their bits


def _args(fmt: MXKernelFormat):
    enc = fmt.enc
    fast, subscale = _fast_constants(enc)
    P = enc.params
    return (enc.storage_bits, fmt.type_size, P.as_array(), fast, subscale, bool(P.is_int), fmt.rule, fmt.emax,
            fmt.round_add, np.float32(fmt.vmax), fmt.shift)


@kernel("mx", "cpu", "encode")
def encode_blocks(x: np.ndarray, fmt: MXKernelFormat, out: np.ndarray, flags: np.ndarray) -> None:
    """Encode float32 ``x[n, K]`` (K % 32 == 0) into ``out[n, K/32 * type_size]``."""
    n, K = x.shape
    w, ts, p, fast, subscale, is_int, rule, emax, radd, vmax, shift = _args(fmt)
    _encode(x.reshape(-1), n * K // BLOCK, w, ts, p, fast, subscale, is_int, rule, emax, radd, vmax, shift,
            out.reshape(-1), flags)


@kernel("mx", "cpu", "decode")
def decode_blocks(data: np.ndarray, fmt: MXKernelFormat, out: np.ndarray) -> None:
    """Decode ``data[n, K/32 * type_size]`` into float32 ``out[n, K]``."""
    n, K = out.shape
    _decode(data.reshape(-1), n * K // BLOCK, fmt.enc.storage_bits, fmt.type_size, fmt.lut, out.reshape(-1))
