"""Numba kernels for element-wise codes: every FloatFormat and IntFormat (family ``minifloat``).

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.minifloat`):

* ``encode_codes(x, scale, col_block, enc, out, flags)``: float32 ``x[n, K]`` → packed codes
  ``out[n, K*w/8]`` (uint8). ``scale`` is None or float32 ``[n, ceil(K/col_block)]``: element
  ``(r, c)`` is divided by ``scale[r, c // col_block]`` before rounding, and finite values are
  clamped to the format's range. ``flags[0]``/``flags[1]`` are set to 1 when a NaN / an
  out-of-range value met a ``"raise"`` policy (those codes are written as 0).
* ``decode_codes(data, scale, col_block, enc, out)``: the inverse, through the format's value
  table, multiplied by the scale (NaN codes keep their bit pattern).

Each chunk of 8192 elements goes through four passes, the first three written so that LLVM
vectorizes them (no calls, no data-dependent branches):

0. scaled codecs only: ``v = clamp(x / s)`` for finite ``x`` (correctly rounded division);
1. the fast path for every element — a normal-binade result rebiases the float32 exponent and
   rounds with one constant shift; a subnormal result is ``rint(|v| * 2**(M - tmin))`` in
   float64 (exact: a power-of-two product, then round-half-even); lanes the fast path cannot
   settle (NaN, Inf, overflow, refused signs, float32 subnormals in formats reaching below
   2**-126, zero without a zero) get code -1 and are counted;
2. only if that count is not 0: :func:`_quantize`, the general routine that reads like the spec;
3. packing, specialised for 8-, 4-, 2- and 16-bit codes, a bit stream otherwise.

:func:`_quantize` is also the reference for the fast path: the tests run both on every float32
exponent and compare them with ml_dtypes and an independent oracle.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ...numerics import NAN_RAISE, OVF_INF, OVF_NAN, OVF_SATURATE, ElementEncoding
from ..registry import kernel
from ._bits import f32_bits

# Indices into the int64 parameter array (KernelParams field order).
(P_IS_INT, P_MBITS, P_MIN_BINADE, P_ZERO, P_SUBNORMALS, P_SIGNED, P_SIGN_SHIFT, P_MAX_MAG,
 P_NEG_MAX_MAG, P_NAN, P_NEG_NAN, P_INF_MAG, P_NEGZERO_OK, P_OVERFLOW, P_ON_NAN, P_WIDTH,
 P_GROUP_CODES, P_GROUP_BYTES) = range(18)

# Sentinels returned by _quantize for refused values (never valid codes: codes are >= 0).
REFUSED_NAN = -1
REFUSED_RANGE = -2

# Elements per chunk: a multiple of every packing group (1, 2, 4 or 8 codes), small enough that
# a chunk's temporaries stay in L1/L2, large enough to amortise the parallel loop's overhead.
_CHUNK = 8192


@njit(inline="always")
def _too_big(sign, p):
    """Code for a value beyond ±max (or ±Inf) under the overflow policy."""
    ovf = p[P_OVERFLOW]
    if ovf == OVF_SATURATE:
        if p[P_IS_INT]:
            if sign:  # two's complement of the most negative magnitude
                return (1 << (p[P_SIGN_SHIFT] + 1)) - p[P_NEG_MAX_MAG]
            return p[P_MAX_MAG]
        return (sign << p[P_SIGN_SHIFT]) | p[P_MAX_MAG] if p[P_SIGNED] else p[P_MAX_MAG]
    if ovf == OVF_NAN:
        return p[P_NEG_NAN] if sign else p[P_NAN]
    if ovf == OVF_INF:
        return (sign << p[P_SIGN_SHIFT]) | p[P_INF_MAG] if p[P_SIGNED] else p[P_INF_MAG]
    return REFUSED_RANGE


@njit(inline="always")
def _below_range(p):
    """Code for a negative value in an unsigned format, or zero in a format without zero."""
    ovf = p[P_OVERFLOW]
    if ovf == OVF_SATURATE:
        return 0  # +0, or the smallest value when the format has no zero
    if (ovf == OVF_NAN or ovf == OVF_INF) and p[P_NAN] >= 0:
        return p[P_NAN]
    return REFUSED_RANGE


@njit(inline="always")
def _quantize(u, p):
    """Element code of the float32 with bit pattern ``u`` (a sentinel < 0 when refused)."""
    sign = np.int64(u >> 31)
    a = np.int64(u & 0x7FFFFFFF)
    if a > 0x7F800000:  # NaN
        if p[P_ON_NAN] == NAN_RAISE:
            return REFUSED_NAN
        return p[P_NEG_NAN] if sign else p[P_NAN]
    if a == 0x7F800000:  # ±Inf
        if sign and not p[P_SIGNED]:
            return _below_range(p)
        return _too_big(sign, p)
    if sign and a != 0 and not p[P_SIGNED]:
        return _below_range(p)
    if a == 0:
        if not p[P_ZERO]:
            return _below_range(p)
        return (1 << p[P_SIGN_SHIFT]) if (sign and p[P_NEGZERO_OK]) else 0

    # |x| = sig * 2**e with te = floor(log2 |x|)
    e32 = a >> 23
    if e32 == 0:  # float32 subnormal: no implicit bit; te from the highest set bit
        sig = a
        e = np.int64(-149)
        te = np.int64(-150)
        t = a
        while t:
            t >>= 1
            te += 1
    else:
        sig = (a & 0x7FFFFF) | 0x800000
        e = e32 - 150
        te = e32 - 127

    M = p[P_MBITS]
    tmin = p[P_MIN_BINADE]
    if p[P_IS_INT]:
        if te > p[P_SIGN_SHIFT] + 1:  # |x| >= 2**(bits): beyond every integer format's range
            return _too_big(sign, p)
        qe = np.int64(0)
    elif te >= tmin:
        qe = te - M  # spacing of the binade
    elif p[P_SUBNORMALS]:
        qe = tmin - M  # subnormal spacing
    else:
        qe = tmin  # flush to zero: the only values below min normal are 0 and min normal

    # k = round-half-even(|x| / 2**qe): a right shift by sh with the usual bias trick
    sh = qe - e
    if sh <= 0:
        k = sig << (-sh)
    else:
        if sh > 25:
            sh = 25  # |x| < half a step: rounds to 0 (sig < 2**24)
        # add half a step minus one, plus the kept LSB: exact ties go up only from odd k
        k = (sig + ((np.int64(1) << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh

    if p[P_IS_INT]:
        lim = p[P_NEG_MAX_MAG] if sign else p[P_MAX_MAG]
        if k > lim:
            return _too_big(sign, p)
        if sign and k:
            return (1 << (p[P_SIGN_SHIFT] + 1)) - k
        return k

    if te >= tmin:
        # exponent field (te - tmin + zero) and mantissa (k - 2**M); a carry of k into 2**(M+1)
        # moves the value into the next binade by itself
        mag = ((te - tmin + p[P_ZERO]) << M) + k - (1 << M)
    elif p[P_SUBNORMALS]:
        mag = k  # k == 2**M is the smallest normal code
    elif p[P_ZERO]:
        mag = k << M  # flush to zero: k is 0 or 1 (the smallest normal)
    else:
        mag = np.int64(0)  # no zero: everything below the smallest value rounds up to it
    if mag > p[P_MAX_MAG]:
        return _too_big(sign, p)
    if not p[P_SIGNED]:
        return mag
    if mag == 0 and not p[P_NEGZERO_OK]:
        return np.int64(0)
    return (sign << p[P_SIGN_SHIFT]) | mag


@njit(cache=True)
def _quantize_general(u, p):
    """Out-of-line call for the rare inputs (zero, float32 subnormals, Inf, NaN, refused signs)."""
    return _quantize(u, p)


@njit(inline="always")
def _segments(e0, e1, K, col_block):
    """Split the flat element range [e0, e1) into runs that share one scale: rows of (start,
    stop, row, column block). Within a run the scale is a loop constant, so loops vectorize."""
    row = e0 // K
    col = e0 - row * K
    # a run ends at a column-block boundary (all but two are whole blocks), a row end or e1
    seg = np.empty(((e1 - e0) // min(col_block, K) + (e1 - e0) // K + 3, 4), dtype=np.int64)
    n = 0
    e = e0
    while e < e1:
        j = col // col_block
        stop = min(e1, e + min(K - col, (j + 1) * col_block - col))
        seg[n, 0], seg[n, 1], seg[n, 2], seg[n, 3] = e, stop, row, j
        n += 1
        col += stop - e
        e = stop
        if col == K:
            col = 0
            row += 1
    return seg[:n]


@njit(inline="always")
def _scale_chunk(x, e0, e1, K, scale, col_block, vlo, vhi, v):
    """Pass 0: v[e - e0] = clamp(x[e] / s) for finite x[e]; NaN and Inf stay for the policies."""
    seg = _segments(e0, e1, K, col_block)
    for r in range(seg.shape[0]):
        s = scale[seg[r, 2], seg[r, 3]]
        for t in range(seg[r, 0], seg[r, 1]):
            xv = x[t]
            q = np.float32(xv / s)  # correctly rounded
            q = min(max(q, vlo), vhi)
            v[t - e0] = q if xv - xv == 0.0 else xv


@njit(inline="always")
def _fast_float(v, codes, SH, REBIAS, subscale, ksub, tmin, z, small_ok, signed, ss, max_mag, negzero):
    """Pass 1 for float formats; returns the number of lanes left for the general routine."""
    half = (np.int64(1) << (SH - 1)) - 1
    # Ties go to the even multiple of the spacing, i.e. to even k = significand / step. With
    # mantissa bits, k's parity is the kept mantissa LSB; with none (SH == 23), k is the implicit
    # 1, always odd, so ties always go up (1.5 -> 2, 3 -> 4: what ml_dtypes and torch do).
    odd = np.int64(1) if SH == 23 else np.int64(0)
    nslow = 0
    for i in range(v.size):
        u = np.int64(f32_bits(v[i]))
        a = u & 0x7FFFFFFF
        e32 = a >> 23
        sign = u >> 31
        # normal binade: exponent field moved to the format's bias, one RNE shift (a mantissa
        # carry moves into the exponent by itself)
        r = a - REBIAS
        mag_n = (r + half + (((r >> SH) | odd) & 1)) >> SH
        # below the smallest normal: subnormal (or flush) code, exact in float64
        mag_s = np.int64(np.rint(np.float64(abs(v[i])) * subscale)) << ksub
        mag = mag_n if e32 - 127 >= tmin else mag_s * z
        ok = (e32 != 255) & ((e32 != 0) | small_ok) & ((sign == 0) | signed) & (mag <= max_mag)
        codes[i] = (((sign & (negzero | (mag != 0))) << ss) | mag) if ok else -1
        nslow += not ok
    return nslow


@njit(inline="always")
def _fast_int(v, codes, signed, bits, max_mag, neg_lim):
    """Pass 1 for integer formats (round half to even with rint, two's complement)."""
    mask = (np.int64(1) << bits) - 1
    nslow = 0
    for i in range(v.size):
        u = np.int64(f32_bits(v[i]))
        e32 = (u >> 23) & 0xFF
        sign = u >> 31
        k = np.int64(np.rint(np.float64(abs(v[i]))))  # only used when |v| < 2**24 (e32 < 151)
        lim = max_mag ^ ((max_mag ^ neg_lim) & -sign)  # sign ? neg_lim : max_mag
        ok = (e32 < 151) & ((sign == 0) | signed) & (k <= lim)
        codes[i] = (((k ^ -sign) + sign) & mask) if ok else -1  # sign ? -k : k, in `bits` bits
        nslow += not ok
    return nslow


@njit(inline="always")
def _pack(codes, w, out, ob):
    """Pass 3: codes (non-negative) into out[ob:], LSB-first, w bits each."""
    n = codes.size
    if w == 8:
        for i in range(n):
            out[ob + i] = codes[i]
    elif w == 4:  # even element in the low nibble
        for i in range(n // 2):
            out[ob + i] = codes[2 * i] | (codes[2 * i + 1] << 4)
    elif w == 2:
        for i in range(n // 4):
            out[ob + i] = codes[4 * i] | (codes[4 * i + 1] << 2) | (codes[4 * i + 2] << 4) | (codes[4 * i + 3] << 6)
    elif w == 16:  # little-endian
        for i in range(n):
            out[ob + 2 * i] = codes[i] & 0xFF
            out[ob + 2 * i + 1] = codes[i] >> 8
    else:  # a bit stream: fill an accumulator, spill whole bytes
        acc = np.uint64(0)
        nacc = 0
        for i in range(n):
            acc |= np.uint64(codes[i]) << np.uint64(nacc)
            nacc += w
            while nacc >= 8:
                out[ob] = np.uint8(acc & np.uint64(0xFF))
                ob += 1
                acc >>= np.uint64(8)
                nacc -= 8


@njit(inline="always")
def _unpack(data, ib, w, codes):
    """The inverse of _pack: codes[i] for i < codes.size from data[ib:]."""
    n = codes.size
    if w == 8:
        for i in range(n):
            codes[i] = data[ib + i]
    elif w == 4:
        for i in range(n // 2):
            b = np.int32(data[ib + i])
            codes[2 * i] = b & 15
            codes[2 * i + 1] = b >> 4
    elif w == 2:
        for i in range(n // 4):
            b = np.int32(data[ib + i])
            codes[4 * i] = b & 3
            codes[4 * i + 1] = (b >> 2) & 3
            codes[4 * i + 2] = (b >> 4) & 3
            codes[4 * i + 3] = b >> 6
    elif w == 16:
        for i in range(n):
            codes[i] = np.int32(data[ib + 2 * i]) | (np.int32(data[ib + 2 * i + 1]) << 8)
    else:
        mask = np.uint64((1 << w) - 1)
        acc = np.uint64(0)
        nacc = 0
        for i in range(n):
            while nacc < w:
                acc |= np.uint64(data[ib]) << np.uint64(nacc)
                ib += 1
                nacc += 8
            codes[i] = np.int32(acc & mask)
            acc >>= np.uint64(w)
            nacc -= w


@njit(cache=True, parallel=True)
def _encode(x, K, scale, col_block, has_scale, p, fast, vlo, vhi, subscale, out, flags):
    # every parameter is hoisted into a local: Numba cannot prove the stores to `out` leave
    # `p` alone, and reloading it in the loops costs several times the work
    w, g, nb = p[P_WIDTH], p[P_GROUP_CODES], p[P_GROUP_BYTES]
    is_int, signed, ss = p[P_IS_INT], p[P_SIGNED], p[P_SIGN_SHIFT]
    max_mag, neg_lim, negzero = p[P_MAX_MAG], p[P_NEG_MAX_MAG], p[P_NEGZERO_OK]
    SH, REBIAS, ksub, tmin, z, small_ok = fast[0], fast[1], fast[2], fast[3], fast[4], fast[5]
    n = x.size
    for ch in prange((n + _CHUNK - 1) // _CHUNK):
        e0 = ch * _CHUNK
        e1 = min(n, e0 + _CHUNK)
        if has_scale:
            v = np.empty(e1 - e0, dtype=np.float32)
            _scale_chunk(x, e0, e1, K, scale, col_block, vlo, vhi, v)
        else:
            v = x[e0:e1]
        codes = np.empty(e1 - e0, dtype=np.int32)
        if is_int:
            nslow = _fast_int(v, codes, signed, ss + 1, max_mag, neg_lim)
        else:
            nslow = _fast_float(v, codes, SH, REBIAS, subscale, ksub, tmin, z, small_ok, signed, ss, max_mag, negzero)
        if nslow:
            for i in range(codes.size):
                if codes[i] < 0:
                    c = _quantize_general(f32_bits(v[i]), p)
                    if c < 0:
                        flags[-c - 1] = 1
                        c = 0
                    codes[i] = c
        _pack(codes, w, out, e0 // g * nb)


@njit(cache=True, parallel=True)
def _decode(data, K, scale, col_block, has_scale, p, lut, out):
    w, g, nb = p[P_WIDTH], p[P_GROUP_CODES], p[P_GROUP_BYTES]
    n = out.size
    for ch in prange((n + _CHUNK - 1) // _CHUNK):
        e0 = ch * _CHUNK
        e1 = min(n, e0 + _CHUNK)
        codes = np.empty(e1 - e0, dtype=np.int32)
        _unpack(data, e0 // g * nb, w, codes)
        for i in range(codes.size):
            out[e0 + i] = lut[codes[i]]
        if has_scale:
            seg = _segments(e0, e1, K, col_block)
            for r in range(seg.shape[0]):
                s = scale[seg[r, 2], seg[r, 3]]
                for t in range(seg[r, 0], seg[r, 1]):
                    y = out[t]
                    out[t] = np.float32(y * s) if y == y else y  # NaN codes keep their exact bits


@njit(cache=True, parallel=True)
def _absmax(x, col_block, positive_only, out):
    rows, K = x.shape
    for r in prange(rows):
        for j in range(out.shape[1]):
            m = np.float32(0.0)
            for c in range(j * col_block, min(K, (j + 1) * col_block)):
                a = x[r, c] if positive_only else abs(x[r, c])
                if a > m and a - a == 0.0:  # finite values only (NaN and Inf fail one test)
                    m = a
            out[r, j] = m


@kernel("minifloat", "cpu", "absmax")
def absmax(x, col_block: int, positive_only: bool):
    """float32 ``[n, ceil(K/col_block)]``: the largest finite |x| (or x > 0) of each row block."""
    n, K = x.shape
    out = np.zeros((n, -(-K // max(col_block, 1)) if K else 0), dtype=np.float32)
    _absmax(x, max(col_block, 1), positive_only, out)
    return out


def _fast_constants(enc: ElementEncoding) -> tuple[np.ndarray, np.float64]:
    """The fast path's constants (see the module docstring), derived from the format."""
    P = enc.params
    M, tmin, z = P.mbits, P.min_binade, P.zero
    SH = 23 - M
    REBIAS = (127 + tmin - z) << 23  # moves float32's exponent field onto the format's
    ksub = 0 if P.subnormals else M  # flush-to-zero: the only step below min normal is min normal
    subscale = math.ldexp(1.0, (M if P.subnormals else 0) - tmin)
    small_ok = int(bool(z) and tmin > -127)  # zero and float32 subnormals land below tmin
    return np.array([SH, REBIAS, ksub, tmin, z, small_ok], dtype=np.int64), np.float64(subscale)


_NO_SCALE = np.ones((1, 1), dtype=np.float32)


@kernel("minifloat", "cpu", "encode")
def encode_codes(x, scale, col_block, enc: ElementEncoding, out, flags) -> None:
    """Encode float32 ``x[n, K]`` into ``out[n, K*w/8]``; see the module docstring."""
    n, K = x.shape
    vlo, vhi = (np.float32(v) for v in enc.clamp_range)
    fast, subscale = _fast_constants(enc)
    _encode(x.reshape(-1), max(K, 1), _NO_SCALE if scale is None else scale, max(col_block, 1),
            scale is not None, enc.params.as_array(), fast, vlo, vhi, subscale, out.reshape(-1), flags)


@kernel("minifloat", "cpu", "decode")
def decode_codes(data, scale, col_block, enc: ElementEncoding, out) -> None:
    """Decode ``data[n, K*w/8]`` into float32 ``out[n, K]``; see the module docstring."""
    n, K = out.shape
    _decode(data.reshape(-1), max(K, 1), _NO_SCALE if scale is None else scale, max(col_block, 1),
            scale is not None, enc.params.as_array(), enc.lut, out.reshape(-1))
