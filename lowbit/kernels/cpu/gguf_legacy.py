"""Numba kernels of the 32-element and ternary GGUF types (family ``gguf_legacy``): Q4_0, Q4_1,
Q5_0, Q5_1, Q8_0, Q8_1, MXFP4, TQ1_0, TQ2_0, IQ4_NL, IQ4_XS (encode and decode) and Q1_0, Q2_0,
NVFP4 (decode).

Entry points (same on the gpu backend): ``encode(codec_id, x, qw, out)`` and
``decode(codec_id, data, out)``, as in :mod:`lowbit.kernels.cpu.gguf_kquants`. ``qw`` (ggml's
``quant_weights``) switches Q4_0/Q4_1/Q5_0/Q5_1 to ggml's imatrix algorithm and weights IQ4_NL /
IQ4_XS; Q8_0, Q8_1, MXFP4 and TQ* ignore it, as ``ggml_quantize_chunk`` does.

The legacy types round in their own ways (C casts truncate, ``roundf``/``lroundf`` round half
away from zero); each is spelled out where it happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._bits import bits_f32, f32_bits
from ._ggml import (F, GROUP_MAX_EPS, best_index_int8, canon, make_qkx_quants, make_qx_quants, nearest_int,
                    rd_f16, wr_f16)
from ._simd import (vabs, vand, vbits, vcanon, vge, vgt, vhmax, vilane, vilanes, vimin, visplat, vle, vload, vload_i8,
                    vload_u8, vlt, vlut, vmi, vsel, vsext8, vsplat, vstore, vstore_u8, vtof, vtrunc)

#: kvalues_iq4nl (ggml-common.h): the IQ4_NL / IQ4_XS code book
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
#: kvalues_mxfp4: E2M1 values times two (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives)
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)

_IDS = {"q4_0": 0, "q4_1": 1, "q5_0": 2, "q5_1": 3, "q8_0": 4, "q8_1": 5, "mxfp4_ggml": 6, "tq1_0": 7,
        "tq2_0": 8, "iq4_nl": 9, "iq4_xs": 10, "q1_0": 11, "q2_0": 12, "nvfp4_ggml": 13}
_BS = np.array([32, 32, 32, 32, 32, 32, 32, 256, 256, 32, 256, 128, 64, 64])
_TS = np.array([18, 20, 22, 24, 34, 36, 17, 54, 66, 18, 136, 18, 18, 36])


# ---- C rounding helpers ----------------------------------------------------------------------------

@njit(inline="always", error_model="numpy", cache=True)
def c_trunc(v):
    """C's float -> int conversion (truncation toward zero, as x86 cvttss2si; out-of-range gives
    INT_MIN)."""
    if not (v > -2147483648.0 and v < 2147483648.0):
        return np.int64(-2147483648)
    return np.int64(v)


@njit(inline="always", error_model="numpy", cache=True)
def c_roundf(v):
    """C ``roundf``/``lroundf``: to nearest, halves away from zero (exactly: ``v - trunc(v)`` is
    exact for every float32)."""
    if not (abs(v) < F(8388608.0)):  # |v| >= 2**23 is an integer already; Inf/NaN convert as C does
        return c_trunc(v)
    t = c_trunc(v)
    r = v - F(t)
    if r >= F(0.5):
        t += 1
    elif r <= F(-0.5):
        t -= 1
    return t


@njit(inline="always", error_model="numpy", cache=True)
def e8m0_half(e):
    """GGML_E8M0_TO_FP32_HALF: 2**(e - 128) as float32 (subnormal for e < 2)."""
    if e < 2:
        return bits_f32(np.int64(0x00200000) << e)
    return bits_f32(np.int64(e - 1) << 23)


@njit(inline="always", error_model="numpy", cache=True)
def ue4m3_half(u):
    """ggml_ue4m3_to_fp32: the UE4M3 byte's value times 0.5 (0 and 0x7F give 0; the top bit is
    ignored, as in ggml)."""
    if u == 0 or u == 0x7F:
        return F(0.0)
    ex = (u >> 3) & 0xF
    man = u & 7
    if ex == 0:
        return F(man) * F(2.0 ** -10)  # man * 2**-9 * 0.5, exact
    return bits_f32(((ex - 7 + 127 - 1) << 23) | (man << 20))  # (1 + man/8) * 2**(ex-7) * 0.5


# MXFP4's shared exponent is (uint8)(floorf(log2f(amax)) - 2 + 127): it depends on libm's log2f,
# which rounds values just below 2**(E+1) up to E+1 for large E. The threshold where that starts,
# per binade, is found once by bisection on the C library's own log2f (log2f is monotonic).
@functools.lru_cache(maxsize=1)
def log2f_thresholds() -> np.ndarray:
    """int64[277]: for floor-exponent E (index E + 149), the smallest float32 bit pattern in
    [2**E, 2**(E+1)) whose log2f is >= E + 1, or the binade's end when there is none."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.log2f.restype = ctypes.c_float
    libm.log2f.argtypes = [ctypes.c_float]

    def lg(bits: int) -> float:
        return libm.log2f(np.array([bits], np.uint32).view(np.float32)[0])

    out = np.zeros(277, dtype=np.int64)
    for E in range(-149, 128):
        lo = 1 << (E + 149) if E < -126 else (E + 127) << 23   # bit pattern of 2**E
        hi = 1 << (E + 150) if E < -127 else (E + 128) << 23   # of 2**(E+1) (exclusive)
        if lg(hi - 1) < E + 1:
            out[E + 149] = hi
            continue
        a, b = lo, hi - 1  # lg(b) >= E+1, lg(a) = E
        while b - a > 1:
            m = (a + b) // 2
            if lg(m) >= E + 1:
                b = m
            else:
                a = m
        out[E + 149] = b
    return out


@njit(inline="always", error_model="numpy", cache=True)
def mxfp4_exponent(amax, thr):
    """(uint8)(floorf(log2f(amax)) - 2 + 127) for amax > 0, through the libm thresholds."""
    a = np.int64(f32_bits(amax))
    e32 = a >> 23
    if e32 == 0:  # subnormal: floor(log2) from the highest set bit
        E = np.int64(-150)
        t = a
        while t:
            t >>= 1
            E += 1
    else:
        E = e32 - 127
    if a >= thr[E + 149]:
        E += 1
    return (E - 2 + 127) & 0xFF  # C's float -> uint8 conversion keeps the low byte


@njit(inline="always", error_model="numpy", cache=True)
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3 (NVFP4's sub-block scale): truncate to 3 mantissa bits, add the next
    bit (round half up), saturate at 448 (0x7E); subnormals via (int)(x*512 + 0.5f)."""
    if not (x > 0):
        return 0
    if x > F(448.0):
        x = F(448.0)
    bits = np.int64(f32_bits(x))
    ex = ((bits >> 23) & 0xFF) - 127 + 7
    if ex <= 0:
        man = c_trunc(x * F(512.0) + F(0.5))
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if ex >= 15:
        return 0x7E
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    if man > 7:
        man = 0
        ex += 1
        if ex >= 15:
            return 0x7E
    return (ex << 3) | man


@njit(inline="always", error_model="numpy", cache=True)
def best_index_mxfp4(x, d, kv):
    best = 0
    best_err = abs(F(kv[0]) * d - x)
    for i in range(1, 16):
        err = abs(F(kv[i]) * d - x)
        if err < best_err:
            best = i
            best_err = err
    return best


# ---- block encoders -------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy", cache=True)
def _absmax_signed(x, o, n):
    """The value with the largest |x| (first one on ties, C's strict <) and its magnitude."""
    amax = F(0.0)
    mx = F(0.0)
    for j in range(n):
        v = x[o + j]
        if amax < abs(v):
            amax = abs(v)
            mx = v
    return amax, mx


@njit(inline="always", error_model="numpy", cache=True)
def _pack_q5(L, b, oqh, oqs):
    """Q5_x: low nibbles as Q4_0 (element j low, j+16 high), the fifth bits in a LE u32 qh."""
    qh = np.int64(0)
    for j in range(16):
        xi0 = L[j]
        xi1 = L[j + 16]
        b[oqs + j] = ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4)) & 0xFF
        qh |= ((xi0 & 0x10) >> 4) << j
        qh |= ((xi1 & 0x10) >> 4) << (j + 16)
    for k in range(4):
        b[oqh + k] = (qh >> (8 * k)) & 0xFF


@njit(error_model="numpy", cache=True)
def _enc_block(t, x, xo, qw, qo, has_qw, sigma2, b, L, S, w, scales, mins, thr):
    if t == 0 or t == 2:  # Q4_0 / Q5_0
        half = 8 if t == 0 else 16
        if not has_qw:  # quantize_row_q{4,5}_0_ref
            amax, mx = _absmax_signed(x, xo, 32)
            d = mx / F(-half)
            idd = F(1.0) / d if d != 0 else F(0.0)
            wr_f16(b, 0, d)
            for j in range(32):
                # C: MIN(15, (int8_t)(x*id + 8.5f)) (truncation; +16.5f and 31 for Q5_0)
                v = c_trunc(x[xo + j] * idd + F(half + 0.5))
                L[j] = min(2 * half - 1, np.int64(np.int8(v & 0xFF)))
        else:  # quantize_row_q{4,5}_0_impl
            for j in range(32):
                xv = x[xo + j]
                w[j] = qw[qo + j] * np.sqrt(sigma2 + xv * xv)
            d = make_qx_quants(32, half, x, xo, L, 0, w, 0, True, S)
            wr_f16(b, 0, d)
        if t == 0:
            for j in range(16):
                b[2 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF
        else:
            _pack_q5(L, b, 2, 6)
    elif t == 1 or t == 3:  # Q4_1 / Q5_1
        nmax = 15 if t == 1 else 31
        oqs = 4 if t == 1 else 8
        if not has_qw:  # quantize_row_q{4,5}_1_ref
            mn = F(3.4028234663852886e38)
            mx = F(-3.4028234663852886e38)
            for j in range(32):
                v = x[xo + j]
                if v < mn:
                    mn = v
                if v > mx:
                    mx = v
            d = (mx - mn) / F(nmax)
            idd = F(1.0) / d if d != 0 else F(0.0)
            wr_f16(b, 0, d)
            wr_f16(b, 2, mn)
            for j in range(32):
                v = c_trunc((x[xo + j] - mn) * idd + F(0.5))
                if t == 1:
                    L[j] = min(15, np.int64(np.int8(v & 0xFF)))  # MIN(15, (int8_t)(..))
                else:
                    L[j] = v & 0xFF  # (uint8_t)(..), no clamp
        else:  # quantize_row_q{4,5}_1_impl
            for j in range(32):
                xv = x[xo + j]
                w[j] = qw[qo + j] * np.sqrt(sigma2 + xv * xv)
            d = make_qkx_quants(32, nmax, x, xo, w, L, 0, F(-0.9), F(0.05), 36, False, 3, mins, 0, S)
            wr_f16(b, 0, d)
            wr_f16(b, 2, -mins[0])
        if t == 1:
            for j in range(16):
                b[oqs + j] = ((L[j] & 0xFF) | (L[j + 16] << 4)) & 0xFF
        else:
            _pack_q5(L, b, 4, 8)
    elif t == 4 or t == 5:  # Q8_0 / Q8_1
        amax = F(0.0)
        for j in range(32):
            av = abs(x[xo + j])
            amax = amax if amax > av else av  # C: MAX(amax, fabsf(v))
        d = amax / F(127.0)
        idd = F(1.0) / d if d != 0 else F(0.0)
        wr_f16(b, 0, d)
        o = 2 if t == 4 else 4
        s = np.int64(0)
        for j in range(32):
            q = c_roundf(x[xo + j] * idd)  # roundf, then the int8_t store
            q8 = np.int64(np.int8(q & 0xFF))
            b[o + j] = q8 & 0xFF
            s += q8
        if t == 5:
            wr_f16(b, 2, F(s) * d)  # s = fp16(sum * d)
    elif t == 6:  # MXFP4
        amax = F(0.0)
        for j in range(32):
            if amax < abs(x[xo + j]):
                amax = abs(x[xo + j])
        e = mxfp4_exponent(amax, thr) if amax > 0 else 0
        d = e8m0_half(e)
        b[0] = e
        for j in range(16):
            x0 = best_index_mxfp4(x[xo + j], d, KVALUES_MXFP4)
            x1 = best_index_mxfp4(x[xo + 16 + j], d, KVALUES_MXFP4)
            b[1 + j] = x0 | (x1 << 4)
    elif t == 7 or t == 8:  # TQ1_0 / TQ2_0: d = amax, trits lroundf(x/d) + 1
        amax = F(0.0)
        for j in range(256):
            av = abs(x[xo + j])
            amax = amax if amax > av else av
        d = amax
        idd = F(1.0) / d if d != 0 else F(0.0)
        if t == 8:
            wr_f16(b, 64, d)
            for j in range(0, 64, 32):
                for m in range(32):
                    q = 0
                    for n in range(4):
                        xi = c_roundf(x[xo + 4 * j + m + 32 * n] * idd) + 1
                        q += (xi & 3) << (2 * n)
                    b[j + m] = q & 0xFF
        else:
            wr_f16(b, 52, d)
            # bytes 0..31: elements m + 32n (n = 0..4, the first trit most significant)
            for m in range(32):
                q = 0
                for n in range(5):
                    q = (q * 3 + c_roundf(x[xo + m + 32 * n] * idd) + 1) & 0xFF
                b[m] = ((q * 256 + 242) // 243) & 0xFF  # ceil(q * 256 / 243): trits as a fraction
            # bytes 32..47: elements 160 + m + 16n
            for m in range(16):
                q = 0
                for n in range(5):
                    q = (q * 3 + c_roundf(x[xo + 160 + m + 16 * n] * idd) + 1) & 0xFF
                b[32 + m] = ((q * 256 + 242) // 243) & 0xFF
            # qh: elements 240 + j + 4m, four trits shifted up by one more factor of 3
            for j in range(4):
                q = 0
                for m in range(4):
                    q = (q * 3 + c_roundf(x[xo + 240 + j + 4 * m] * idd) + 1) & 0xFF
                q = (q * 3) & 0xFF
                b[48 + j] = ((q * 256 + 242) // 243) & 0xFF
    elif t == 9 or t == 10:  # IQ4_NL (one block of 32) / IQ4_XS (8 sub-blocks of 32)
        _iq4_block(t == 10, x, xo, qw, qo, has_qw, b, L, w, scales)
    elif t == 11:  # Q1_0: d = mean |x| (sequential sum), one sign bit per element (x >= 0 -> 1)
        sa = F(0.0)
        for j in range(128):
            sa += abs(x[xo + j])
        wr_f16(b, 0, sa / F(128.0))
        for j in range(16):
            v = 0
            for k in range(8):
                if x[xo + 8 * j + k] >= 0:
                    v |= 1 << k
            b[2 + j] = v
    elif t == 12:  # Q2_0: d = amax; q = clamp(roundf(x/d) + 1, 0, 3), four per byte, LSB first
        amax = F(0.0)
        for j in range(64):
            av = abs(x[xo + j])
            if av > amax:
                amax = av
        idd = F(1.0) / amax if amax > 0 else F(0.0)
        wr_f16(b, 0, amax)
        for j in range(16):
            v = 0
            for k in range(4):
                q = max(0, min(3, c_roundf(x[xo + 4 * j + k] * idd) + 1))
                v |= q << (2 * k)
            b[2 + j] = v
    else:  # NVFP4 (type 40): per 16 elements a UE4M3 scale of amax/6, E2M1 codes by nearest value
        for s in range(4):
            o = xo + 16 * s
            amax = F(0.0)
            for j in range(16):
                if amax < abs(x[o + j]):
                    amax = abs(x[o + j])
            u = fp32_to_ue4m3(amax / F(6.0))
            b[s] = u
            d = ue4m3_half(u)
            for j in range(8):
                x0 = best_index_mxfp4(x[o + j], d, KVALUES_MXFP4)
                x1 = best_index_mxfp4(x[o + 8 + j], d, KVALUES_MXFP4)
                b[4 + 8 * s + j] = x0 | (x1 << 4)


@njit(error_model="numpy", cache=True)
def _iq4_block(xs, x, xo, qw, qo, has_qw, b, L, weight, scales):
    """ggml ``quantize_row_iq4_nl_impl`` with ntry = 7 (the chunk path, what files hold)."""
    sbs = 256 if xs else 32
    nsub = sbs // 32
    kv = KVALUES_IQ4NL
    sigma2 = F(0.0)
    for j in range(sbs):
        sigma2 += x[xo + j] * x[xo + j]
    sigma2 *= F(2.0) / F(sbs)
    max_scale = F(0.0)
    amax_scale = F(0.0)
    for ib in range(nsub):
        o = xo + 32 * ib
        for j in range(32):
            xv = x[o + j]
            weight[j] = qw[qo + 32 * ib + j] * np.sqrt(sigma2 + xv * xv) if has_qw else xv * xv
        amax = F(0.0)
        mx = F(0.0)
        for j in range(32):
            ax = abs(x[o + j])
            if ax > amax:
                amax = ax
                mx = x[o + j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = F(0.0)
            continue  # (ggml leaves this sub-block's codes unset; both paths below rewrite them)
        d = -mx / F(kv[0])
        idd = F(1.0) / d
        sumqx = F(0.0)
        sumq2 = F(0.0)
        for j in range(32):
            l = best_index_int8(16, kv, idd * x[o + j])
            L[32 * ib + j] = l
            q = F(kv[l])
            ww = weight[j]
            sumqx += (ww * q) * x[o + j]
            sumq2 += (ww * q) * q
        d = sumqx / sumq2 if sumq2 > 0 else F(0.0)
        best = d * sumqx
        for itry in range(-7, 8):
            idd = F(itry + kv[0]) / mx
            sumqx = F(0.0)
            sumq2 = F(0.0)
            for j in range(32):
                l = best_index_int8(16, kv, idd * x[o + j])
                q = F(kv[l])
                ww = weight[j]
                sumqx += (ww * q) * x[o + j]
                sumq2 += (ww * q) * q
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        ad = abs(d)
        if ad > amax_scale:
            amax_scale = ad
            max_scale = d
    if xs:
        for k in range(8):
            b[k] = 0
        d = -max_scale / F(32.0)
        wr_f16(b, 0, d)
        idd = F(1.0) / d if d != 0 else F(0.0)
        sh = np.int64(0)
        for ib in range(8):
            l = nearest_int(idd * scales[ib])
            l = max(-32, min(31, l))
            dl = d * F(l)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            for j in range(32):
                L[32 * ib + j] = best_index_int8(16, kv, idl * x[xo + 32 * ib + j])
            l += 32
            if ib % 2 == 0:
                b[4 + ib // 2] = l & 0xF
            else:
                b[4 + ib // 2] = (np.int64(b[4 + ib // 2]) | ((l & 0xF) << 4)) & 0xFF
            sh |= (l >> 4) << (2 * ib)
        b[2] = sh & 0xFF
        b[3] = (sh >> 8) & 0xFF
        oq = 8
    else:
        wr_f16(b, 0, scales[0])
        idd = F(1.0) / scales[0] if scales[0] != 0 else F(0.0)
        for j in range(32):
            L[j] = best_index_int8(16, kv, idd * x[xo + j])
        oq = 2
    for i in range(nsub):
        for j in range(16):
            b[oq + 16 * i + j] = (L[32 * i + j] | (L[32 * i + 16 + j] << 4)) & 0xFF


# ---- Q4_0..Q8_1 without imatrix: eight elements per step ------------------------------------------
# Each lane runs the scalar reference's expression for its element (same float operations in the
# same order, C's truncating / roundf conversions emulated exactly by vtrunc and _vroundf), so the
# bytes are those of _enc_block; the branchy per-block dispatch is gone (one loop per type).

@njit(inline="always", error_model="numpy", cache=True)
def _vamax(x, o):
    """max |x[o:o+32]| (lane-wise max, then across lanes; the inputs are finite, so order is moot)."""
    m = vabs(vload(x, o))
    for k in range(8, 32, 8):
        a = vabs(vload(x, o + k))
        m = vsel(vgt(a, m), a, m)
    return vhmax(m)


@njit(inline="always", error_model="numpy", cache=True)
def _vroundf(v):
    """c_roundf per lane: truncate, then step away from zero when the exact remainder is >= 0.5
    (only where |v| < 2**23; larger values, Inf and NaN convert as C's truncation does)."""
    t = vtrunc(v)
    r = v - vtof(t)
    small = vlt(vabs(v), vsplat(F(8388608.0)))
    return t + vmi(vand(small, vge(r, vsplat(F(0.5))))) - vmi(vand(small, vle(r, vsplat(F(-0.5)))))


@njit(inline="always", error_model="numpy", cache=True)
def _vpack_q5(L0, L1, b, oqh, oqs, l0, qh):
    """Eight elements of _pack_q5 (elements l0.. and l0+16..): nibbles stored, fifth bits ORed into qh."""
    vstore_u8(b, oqs + l0, (L0 & visplat(15)) | ((L1 & visplat(15)) << 4))
    h0 = vbits(vgt(vtof((L0 >> 4) & visplat(1)), vsplat(F(0.5))))  # bit k = fifth bit of lane k
    h1 = vbits(vgt(vtof((L1 >> 4) & visplat(1)), vsplat(F(0.5))))
    return qh | (h0 << l0) | (h1 << (l0 + 16))


@njit(inline="always", error_model="numpy", cache=True)
def _enc_fast(t, x, xo, b, o):
    if t == 0 or t == 2:  # quantize_row_q{4,5}_0_ref
        half = 8 if t == 0 else 16
        amax = _vamax(x, xo)
        mx = F(0.0)  # C keeps the first element with the largest |x| (0 when all are zero)
        if amax > 0:
            for j in range(32):
                if abs(x[xo + j]) == amax:
                    mx = x[xo + j]
                    break
        d = mx / F(-half)
        idd = F(1.0) / d if d != 0 else F(0.0)
        wr_f16(b, o, d)
        vid = vsplat(idd)
        off = vsplat(F(half + 0.5))
        qh = np.int64(0)
        for l0 in range(0, 16, 8):
            # C: MIN(15, (int8_t)(x*id + 8.5f)) (truncation; +16.5f and 31 for Q5_0)
            L0 = vimin(vsext8(vtrunc(vload(x, xo + l0) * vid + off)), 2 * half - 1)
            L1 = vimin(vsext8(vtrunc(vload(x, xo + 16 + l0) * vid + off)), 2 * half - 1)
            if t == 0:
                vstore_u8(b, o + 2 + l0, L0 | (L1 << 4))
            else:
                qh = _vpack_q5(L0, L1, b, o + 2, o + 6, l0, qh)
        if t == 2:
            for k in range(4):
                b[o + 2 + k] = (qh >> (8 * k)) & 0xFF
    elif t == 1 or t == 3:  # quantize_row_q{4,5}_1_ref
        nmax = 15 if t == 1 else 31
        mn = F(3.4028234663852886e38)
        mx = F(-3.4028234663852886e38)
        for j in range(32):  # scalar: C keeps the first of equal values (-0.0 vs 0.0 matters for m)
            v = x[xo + j]
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        d = (mx - mn) / F(nmax)
        idd = F(1.0) / d if d != 0 else F(0.0)
        wr_f16(b, o, d)
        wr_f16(b, o + 2, mn)
        vid = vsplat(idd)
        vmn = vsplat(mn)
        half = vsplat(F(0.5))
        qh = np.int64(0)
        for l0 in range(0, 16, 8):
            v0 = vtrunc((vload(x, xo + l0) - vmn) * vid + half)  # C: (x - min) * id + 0.5f
            v1 = vtrunc((vload(x, xo + 16 + l0) - vmn) * vid + half)
            if t == 1:  # MIN(15, (int8_t)(..)), stored as (L0 & 0xFF) | L1 << 4
                L0 = vimin(vsext8(v0), 15)
                L1 = vimin(vsext8(v1), 15)
                vstore_u8(b, o + 4 + l0, (L0 & visplat(0xFF)) | (L1 << 4))
            else:  # (uint8_t)(..), no clamp
                qh = _vpack_q5(v0 & visplat(0xFF), v1 & visplat(0xFF), b, o + 4, o + 8, l0, qh)
        if t == 3:
            for k in range(4):
                b[o + 4 + k] = (qh >> (8 * k)) & 0xFF
    else:  # quantize_row_q8_{0,1}_ref
        amax = _vamax(x, xo)
        d = amax / F(127.0)
        idd = F(1.0) / d if d != 0 else F(0.0)
        wr_f16(b, o, d)
        oq = o + (2 if t == 4 else 4)
        vid = vsplat(idd)
        sv = visplat(0)
        for j in range(0, 32, 8):
            q8 = vsext8(_vroundf(vload(x, xo + j) * vid))  # roundf, then the int8_t store
            vstore_u8(b, oq + j, q8)
            sv = sv + q8
        if t == 5:
            s = np.int64(0)
            for k in range(8):
                s += vilane(sv, k)
            wr_f16(b, o + 2, F(s) * d)  # s = fp16(sum * d)


@njit(error_model="numpy", cache=True)
def _enc_row_fast(t, x, b, nb):
    # one loop per type with a constant type number (see _dec_row)
    if t == 0:
        for i in range(nb):
            _enc_fast(0, x, 32 * i, b, 18 * i)
    elif t == 1:
        for i in range(nb):
            _enc_fast(1, x, 32 * i, b, 20 * i)
    elif t == 2:
        for i in range(nb):
            _enc_fast(2, x, 32 * i, b, 22 * i)
    elif t == 3:
        for i in range(nb):
            _enc_fast(3, x, 32 * i, b, 24 * i)
    elif t == 4:
        for i in range(nb):
            _enc_fast(4, x, 32 * i, b, 34 * i)
    else:
        for i in range(nb):
            _enc_fast(5, x, 32 * i, b, 36 * i)


@njit(error_model="numpy", cache=True)
def _encode_rows(t, x, qw, has_qw, out, thr):
    rows, K = x.shape
    bs = _BS[t]
    ts = _TS[t]
    nb = K // bs
    if t <= 5 and not has_qw:
        for r in range(rows):
            _enc_row_fast(t, x[r], out[r], nb)
        return
    L = np.zeros(256, dtype=np.int64)
    S = np.zeros((8, 256), dtype=np.float32)
    w = np.zeros(32, dtype=np.float32)
    scales = np.zeros(8, dtype=np.float32)
    mins = np.zeros(1, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        sigma2 = F(0.0)
        if has_qw and t <= 3:  # the Q4_0..Q5_1 imatrix paths weight by the whole row's mean square
            s = F(0.0)
            for j in range(K):
                s += xr[j] * xr[j]
            sigma2 = s / F(K)
        for i in range(nb):
            _enc_block(t, xr, i * bs, qw, i * bs, has_qw, sigma2, out[r, i * ts:(i + 1) * ts], L, S, w, scales, mins, thr)


# ---- decoders: eight elements per step (int lanes -> float, C's float order; see _simd) ------------
# _dec_block(t, b, o, y, yo) decodes the block at byte o of the row's bytes b into y[yo:yo+bs]. Each
# lane computes exactly the scalar C expression of its element (same operands, same order, no FMA),
# so the floats are ggml's bit for bit; NaN lanes are canonicalized as everywhere in lowbit.

_KF_IQ4NL = KVALUES_IQ4NL.astype(np.float32)  # the code books as float32 (int8 -> float is exact)
_KF_MXFP4 = KVALUES_MXFP4.astype(np.float32)


@njit(inline="always", error_model="numpy", cache=True)
def _put8(y, yo, v):
    vstore(y, yo, vcanon(v))


@njit(inline="always", error_model="numpy", cache=True)
def _u32(b, o):
    return np.int64(b[o]) | (np.int64(b[o + 1]) << 8) | (np.int64(b[o + 2]) << 16) | (np.int64(b[o + 3]) << 24)


@njit(inline="always", error_model="numpy", cache=True)
def _dec_block(t, b, o, y, yo):
    lo4 = visplat(15)
    if t <= 3:  # Q4_0 / Q4_1 / Q5_0 / Q5_1: element j in the low nibble of qs[j], j + 16 in the high one
        d = vsplat(rd_f16(b, o))
        m = vsplat(rd_f16(b, o + 2)) if (t == 1 or t == 3) else vsplat(F(0.0))
        oq = o + 2 + 2 * t  # qs after d (Q4_0), d, m (Q4_1), d, qh (Q5_0), d, m, qh (Q5_1)
        # Q5_*: the fifth bit of element j is bit j of the little-endian u32 qh (just before qs)
        qh = visplat(_u32(b, oq - 4)) if t >= 2 else visplat(0)
        one = visplat(1)
        for l0 in range(0, 16, 8):
            q = vload_u8(b, oq + l0)
            q0 = q & lo4
            q1 = q >> 4
            if t >= 2:
                sh = vilanes() + visplat(l0)  # lane k: element l0 + k
                q0 = q0 | (((qh >> sh) & one) << 4)
                q1 = q1 | (((qh >> (sh + visplat(16))) & one) << 4)
            if t == 0:  # C: (q - 8) * d
                _put8(y, yo + l0, vtof(q0 - visplat(8)) * d)
                _put8(y, yo + l0 + 16, vtof(q1 - visplat(8)) * d)
            elif t == 2:  # C: (q - 16) * d
                _put8(y, yo + l0, vtof(q0 - visplat(16)) * d)
                _put8(y, yo + l0 + 16, vtof(q1 - visplat(16)) * d)
            else:  # C: q * d + m
                _put8(y, yo + l0, vtof(q0) * d + m)
                _put8(y, yo + l0 + 16, vtof(q1) * d + m)
    elif t == 4 or t == 5:  # Q8_0 / Q8_1 (s is not needed to decode): int8 * d
        d = vsplat(rd_f16(b, o))
        oq = o + (2 if t == 4 else 4)
        for j in range(0, 32, 8):
            _put8(y, yo + j, vtof(vload_i8(b, oq + j)) * d)
    elif t == 6:  # MXFP4: code book value * 2**(e - 128)
        d = vsplat(e8m0_half(np.int64(b[o])))
        for l0 in range(0, 16, 8):
            q = vload_u8(b, o + 1 + l0)
            _put8(y, yo + l0, vlut(_KF_MXFP4, q & lo4) * d)
            _put8(y, yo + l0 + 16, vlut(_KF_MXFP4, q >> 4) * d)
    elif t == 7:  # TQ1_0: trit n of byte q is ((q * 3**n mod 256) * 3) >> 8
        dd = rd_f16(b, o + 52)
        d = vsplat(dd)
        ff = visplat(0xFF)
        for n in range(5):
            p3 = visplat(3 ** n)
            for m in range(0, 48, 8):  # qs[0:32] -> y[32n + m], qs[32:48] -> y[160 + 16n + (m - 32)]
                q = (vload_u8(b, o + m) * p3) & ff
                e = yo + 32 * n + m if m < 32 else yo + 160 + 16 * n + m - 32
                _put8(y, e, vtof(((q * visplat(3)) >> 8) - visplat(1)) * d)
        for n in range(4):  # qh[0:4]: 16 elements, scalar
            p3 = 3 ** n
            for j in range(4):
                q = (np.int64(b[o + 48 + j]) * p3) & 0xFF
                y[yo + 240 + 4 * n + j] = canon(F(((q * 3) >> 8) - 1) * dd)
    elif t == 8:  # TQ2_0: element 128h + 32n + m in bits 2n of qs[32h + m]; (q - 1) * d
        d = vsplat(rd_f16(b, o + 64))
        three = visplat(3)
        for h in range(2):
            for n in range(4):
                for m in range(0, 32, 8):
                    q = (vload_u8(b, o + 32 * h + m) >> (2 * n)) & three
                    _put8(y, yo + 128 * h + 32 * n + m, vtof(q - visplat(1)) * d)
    elif t == 9:  # IQ4_NL: C: d * kvalues[q]
        d = vsplat(rd_f16(b, o))
        for l0 in range(0, 16, 8):
            q = vload_u8(b, o + 2 + l0)
            _put8(y, yo + l0, d * vlut(_KF_IQ4NL, q & lo4))
            _put8(y, yo + l0 + 16, d * vlut(_KF_IQ4NL, q >> 4))
    elif t == 10:  # IQ4_XS: 6-bit sub-scales (low nibble in scales_l, 2 high bits in scales_h)
        d = rd_f16(b, o)
        sh = np.int64(b[o + 2]) | (np.int64(b[o + 3]) << 8)
        for ib in range(8):
            ls = ((np.int64(b[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
            dl = vsplat(d * F(ls - 32))  # C: dl = d * (ls - 32); y = dl * kvalues[q]
            for l0 in range(0, 16, 8):
                q = vload_u8(b, o + 8 + 16 * ib + l0)
                _put8(y, yo + 32 * ib + l0, dl * vlut(_KF_IQ4NL, q & lo4))
                _put8(y, yo + 32 * ib + l0 + 16, dl * vlut(_KF_IQ4NL, q >> 4))
    elif t == 11:  # Q1_0: bit j set -> +d, clear -> -d
        dd = rd_f16(b, o)
        d = vsplat(dd)
        nd = vsplat(-dd)
        for k in range(16):  # byte k holds elements 8k .. 8k + 7, element 8k + i in bit i
            bit = (visplat(np.int64(b[o + 2 + k])) >> vilanes()) & visplat(1)
            _put8(y, yo + 8 * k, vsel(vgt(vtof(bit), vsplat(F(0.5))), d, nd))
    elif t == 12:  # Q2_0: 2-bit codes, element j in bits 2(j%4) of qs[j/4]; (q - 1) * d
        d = rd_f16(b, o)
        for j in range(64):
            q = (np.int64(b[o + 2 + j // 4]) >> (2 * (j % 4))) & 3
            y[yo + j] = canon(F(q - 1) * d)
    else:  # NVFP4 (ggml type 40): 4 sub-blocks of 16, UE4M3 scales (x0.5), E2M1 codes
        for sb in range(4):
            d = vsplat(ue4m3_half(np.int64(b[o + sb])))
            q = vload_u8(b, o + 4 + 8 * sb)
            _put8(y, yo + 16 * sb, vlut(_KF_MXFP4, q & lo4) * d)
            _put8(y, yo + 16 * sb + 8, vlut(_KF_MXFP4, q >> 4) * d)


@njit(error_model="numpy", cache=True)
def _dec_row(t, b, y, nb, ts, bs):
    # one loop per type with a constant type number: _dec_block is inlined and its type dispatch
    # folds away, so each loop body is straight-line SIMD code (a 32-element block is too short to
    # pay for a call and a 14-way branch)
    if t == 0:
        for i in range(nb):
            _dec_block(0, b, i * ts, y, i * bs)
    elif t == 1:
        for i in range(nb):
            _dec_block(1, b, i * ts, y, i * bs)
    elif t == 2:
        for i in range(nb):
            _dec_block(2, b, i * ts, y, i * bs)
    elif t == 3:
        for i in range(nb):
            _dec_block(3, b, i * ts, y, i * bs)
    elif t == 4:
        for i in range(nb):
            _dec_block(4, b, i * ts, y, i * bs)
    elif t == 5:
        for i in range(nb):
            _dec_block(5, b, i * ts, y, i * bs)
    elif t == 6:
        for i in range(nb):
            _dec_block(6, b, i * ts, y, i * bs)
    elif t == 7:
        for i in range(nb):
            _dec_block(7, b, i * ts, y, i * bs)
    elif t == 8:
        for i in range(nb):
            _dec_block(8, b, i * ts, y, i * bs)
    elif t == 9:
        for i in range(nb):
            _dec_block(9, b, i * ts, y, i * bs)
    elif t == 10:
        for i in range(nb):
            _dec_block(10, b, i * ts, y, i * bs)
    elif t == 11:
        for i in range(nb):
            _dec_block(11, b, i * ts, y, i * bs)
    elif t == 12:
        for i in range(nb):
            _dec_block(12, b, i * ts, y, i * bs)
    else:
        for i in range(nb):
            _dec_block(13, b, i * ts, y, i * bs)


@njit(error_model="numpy", cache=True, parallel=True)
def _decode_rows(t, data, out):
    rows, K = out.shape
    bs = _BS[t]
    ts = _TS[t]
    for r in prange(rows):
        _dec_row(t, data[r], out[r], K // bs, ts, bs)


_NO_QW = np.zeros(1, dtype=np.float32)


@kernel("gguf_legacy", "cpu", "encode")
def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    _encode_rows(_IDS[codec_id], x, _NO_QW if qw is None else qw, qw is not None, out, log2f_thresholds())


@kernel("gguf_legacy", "cpu", "decode")
def decode(codec_id: str, data: np.ndarray, out: np.ndarray) -> None:
    _decode_rows(_IDS[codec_id], np.ascontiguousarray(data), out)
