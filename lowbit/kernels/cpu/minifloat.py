"""Numba kernels for element-wise codes: every FloatFormat and IntFormat (family ``minifloat``).

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.minifloat`):

* ``encode_codes(x, scale, col_block, enc, out, flags)``: float32 ``x[n, K]`` → packed codes
  ``out[n, K*w/8]`` (uint8). ``scale`` is None or float32 ``[n, ceil(K/col_block)]``: element
  ``(r, c)`` is divided by ``scale[r, c // col_block]`` before rounding, and finite values are
  clamped to the format's range. ``flags[0]``/``flags[1]`` are set to 1 when a NaN / an
  out-of-range value met a ``"raise"`` policy (those codes are written as 0).
* ``decode_codes(data, scale, col_block, enc, out)``: the inverse, through the format's value
  table, multiplied by the scale (NaN codes keep their bit pattern).

Rounding is done on the float32 bit pattern with integers only, as the spec describes
(round to nearest, ties to even *in units of the destination's spacing*), so the Triton
kernels can do exactly the same steps.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...numerics import NAN_RAISE, OVF_INF, OVF_NAN, OVF_SATURATE, ElementEncoding
from ..registry import kernel
from ._bits import bits_f32, f32_bits

# Indices into the int64 parameter array (KernelParams field order).
(P_IS_INT, P_MBITS, P_MIN_BINADE, P_ZERO, P_SUBNORMALS, P_SIGNED, P_SIGN_SHIFT, P_MAX_MAG,
 P_NEG_MAX_MAG, P_NAN, P_NEG_NAN, P_INF_MAG, P_NEGZERO_OK, P_OVERFLOW, P_ON_NAN, P_WIDTH,
 P_GROUP_CODES, P_GROUP_BYTES) = range(18)

# Sentinels returned by _quantize for refused values (never valid codes: codes are >= 0).
REFUSED_NAN = -1
REFUSED_RANGE = -2

# Groups per parallel chunk: big enough that thread start-up is amortised.
_CHUNK = 1 << 15


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


@njit(cache=True, parallel=True)
def _encode_flat(xbits, scale, K, col_block, has_scale, p, tab, vlo, vhi, out, flags):
    # Hoist every parameter into a local: Numba cannot prove the stores to `out` leave `p`
    # alone, and reloading it each element costs 4x.
    w = p[P_WIDTH]
    g = p[P_GROUP_CODES]
    nb = p[P_GROUP_BYTES]
    signed = p[P_SIGNED]
    is_int = p[P_IS_INT]
    max_mag = p[P_MAX_MAG]
    neg_lim = p[P_NEG_MAX_MAG]
    negzero = p[P_NEGZERO_OK]
    ss = p[P_SIGN_SHIFT]
    mask = (np.int64(1) << (ss + 1)) - 1  # all code bits, for two's complement integers
    ngroups = xbits.size // g
    nchunks = (ngroups + _CHUNK - 1) // _CHUNK
    for ch in prange(nchunks):
        g0 = ch * _CHUNK
        # scale cursor: row, column, column block j and position in it, advanced per element
        row = (g0 * g) // K
        col = g0 * g - row * K
        j = col // col_block
        cin = col - j * col_block
        for grp in range(g0, min(ngroups, g0 + _CHUNK)):
            acc = np.uint64(0)  # LSB-first bit stream of the group
            nacc = 0
            ob = grp * nb
            base = grp * g
            for i in range(g):
                u = xbits[base + i]
                if has_scale:
                    v = bits_f32(u)
                    if v - v == 0.0:  # finite: scale (correctly rounded division), then clamp
                        v = np.float32(v / scale[row, j])
                        v = min(max(v, vlo), vhi)
                        u = f32_bits(np.float32(v))
                    col += 1
                    cin += 1
                    if cin == col_block:
                        cin = 0
                        j += 1
                    if col == K:
                        col = cin = j = 0
                        row += 1
                # fast path: a finite normal float32 through the exponent tables. Everything
                # here is branch-free in the sign: a sign branch mispredicts half the time.
                c = np.int64(-3)
                e32 = (u >> 23) & 0xFF
                sign = np.int64(u >> 31)
                if e32 != 0 and e32 != 255 and ((sign ^ 1) | signed) != 0:
                    sig = np.int64((u & 0x7FFFFF) | 0x800000)
                    sh = np.int64(tab[e32, 0])
                    # round half to even: add half a step minus one, plus the kept LSB
                    k = (sig + ((np.int64(1) << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh
                    mag = np.int64(tab[e32, 1]) + (k << np.int64(tab[e32, 2]))
                    lim = max_mag ^ ((max_mag ^ neg_lim) & -sign)  # sign ? neg_lim : max_mag
                    if mag <= lim:
                        if is_int:
                            c = ((mag ^ -sign) + sign) & mask  # sign ? -mag : mag, in `bits` bits
                        else:
                            # the sign bit, except -0 in formats without negative zero
                            c = ((sign & (negzero | (mag != 0))) << ss) | mag
                if c == -3:
                    c = _quantize_general(u, p)
                if c < 0:
                    flags[-c - 1] = 1
                    c = 0
                acc |= np.uint64(c) << np.uint64(nacc)
                nacc += w
                while nacc >= 8:
                    out[ob] = np.uint8(acc & np.uint64(0xFF))
                    ob += 1
                    acc >>= np.uint64(8)
                    nacc -= 8


@njit(cache=True, parallel=True)
def _decode_flat(data, scale, K, col_block, has_scale, p, lut, out):
    w = p[P_WIDTH]
    g = p[P_GROUP_CODES]
    nb = p[P_GROUP_BYTES]
    mask = np.uint64((1 << w) - 1)
    ngroups = out.size // g
    nchunks = (ngroups + _CHUNK - 1) // _CHUNK
    for ch in prange(nchunks):
        g0 = ch * _CHUNK
        row = (g0 * g) // K  # the scale cursor, as in _encode_flat
        col = g0 * g - row * K
        j = col // col_block
        cin = col - j * col_block
        for grp in range(g0, min(ngroups, g0 + _CHUNK)):
            acc = np.uint64(0)
            nacc = 0
            ib = grp * nb
            base = grp * g
            for i in range(g):
                while nacc < w:
                    acc |= np.uint64(data[ib]) << np.uint64(nacc)
                    ib += 1
                    nacc += 8
                v = lut[acc & mask]
                acc >>= np.uint64(w)
                nacc -= w
                if has_scale:
                    if v == v:  # NaN codes keep their exact bits
                        v = np.float32(v * scale[row, j])
                    col += 1
                    cin += 1
                    if cin == col_block:
                        cin = 0
                        j += 1
                    if col == K:
                        col = cin = j = 0
                        row += 1
                out[base + i] = v


_NO_SCALE = np.ones((1, 1), dtype=np.float32)


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


@kernel("minifloat", "cpu", "encode")
def encode_codes(x, scale, col_block, enc: ElementEncoding, out, flags) -> None:
    """Encode float32 ``x[n, K]`` into ``out[n, K*w/8]``; see the module docstring."""
    n, K = x.shape
    vlo, vhi = (np.float32(v) for v in enc.clamp_range)
    s = _NO_SCALE if scale is None else scale
    _encode_flat(x.reshape(-1).view(np.uint32), s, max(K, 1), max(col_block, 1), scale is not None,
                 enc.params.as_array(), enc.exponent_tables, vlo, vhi, out.reshape(-1), flags)


@kernel("minifloat", "cpu", "decode")
def decode_codes(data, scale, col_block, enc: ElementEncoding, out) -> None:
    """Decode ``data[n, K*w/8]`` into float32 ``out[n, K]``; see the module docstring."""
    n, K = out.shape
    s = _NO_SCALE if scale is None else scale
    _decode_flat(data.reshape(-1), s, max(K, 1), max(col_block, 1), scale is not None,
                 enc.params.as_array(), enc.lut, out.reshape(-1))
