"""Numba kernels of the GGUF k-quants (family ``gguf_kquants``): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.

Entry points (same on the gpu backend):

* ``encode(codec_id, x, qw, out)``: float32 rows ``x[n, K]`` → ``out[n, K/256*type_size]``,
  byte for byte what ``ggml_quantize_chunk`` writes. ``qw`` is None (ggml's ``quantize_row_*_ref``)
  or the float32 importance vector ``[K]`` (ggml's ``quant_weights``: ``quantize_row_*_impl``, a
  different algorithm).
* ``decode(codec_id, data, out)``: ``dequantize_row_*``, NaN canonicalised.

Each block function is a line-by-line port of ggml-quants.c; the shared search routines live in
:mod:`lowbit.kernels.cpu._ggml`. Comments name the C statement where the float order matters.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._bits import bits_f32, f32_bits
from ._ggml import (F, GROUP_MAX_EPS, make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants,
                    nearest_int, rd_f16, wr_f16)
from ._simd import (vabs, vcanon, vgt, vhmax, vilane, vimin, visplat, vload, vload_i8, vload_u8, vnint, vnint_clamp, vsel,
                    vsext8, vsplat, vstore, vstore_u8, vtof, vtrunc)

QK_K = 256
TYPE_SIZE = {"q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210, "q8_k": 292}


# ---- shared packing ------------------------------------------------------------------------------

@njit(inline="always", error_model="numpy", cache=True)
def _get_scale_min_k4(j, b, o):
    """ggml ``get_scale_min_k4``: 6-bit scale and min of sub-block j from the 12 bytes at b[o]."""
    if j < 4:
        return np.int64(np.int64(b[o + j]) & 63), np.int64(np.int64(b[o + j + 4]) & 63)
    sc = (np.int64(b[o + j + 4]) & 0xF) | ((np.int64(b[o + j - 4]) >> 6) << 4)
    m = (np.int64(b[o + j + 4]) >> 4) | ((np.int64(b[o + j]) >> 6) << 4)
    return np.int64(sc), np.int64(m)


@njit(inline="always", error_model="numpy", cache=True)
def _put_scale_min_k4(j, ls, lm, b, o):
    """The inverse packing of Q4_K/Q5_K's 12 scale bytes (C: the ``if (j < 4) ... else`` store)."""
    if j < 4:
        b[o + j] = ls & 0xFF
        b[o + j + 4] = lm & 0xFF
    else:
        b[o + j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
        b[o + j - 4] = (np.int64(b[o + j - 4]) | ((ls >> 4) << 6)) & 0xFF
        b[o + j] = (np.int64(b[o + j]) | ((lm >> 4) << 6)) & 0xFF


@njit(inline="always", error_model="numpy", cache=True)
def _pack_2bit(L, b, o):
    """qs[j/4 + l] = L[j+l] | L[j+l+32] << 2 | L[j+l+64] << 4 | L[j+l+96] << 6, j = 0, 128."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            b[o + j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6)) & 0xFF


# ---- Q2_K: 16 sub-blocks of 16, 4-bit scale and min, 2-bit codes ---------------------------------

@njit(error_model="numpy", cache=True)
def _q2_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    for k in range(84):
        b[k] = 0
    if not has_qw:  # quantize_row_q2_K_ref
        max_scale = F(0.0)
        max_min = F(0.0)
        for j in range(16):
            for l in range(16):
                w[l] = abs(x[xo + 16 * j + l])
            scales[j] = make_qkx_quants(16, 3, x, xo + 16 * j, w, L, 16 * j, F(-0.5), F(0.1), 15, True, 2, mins, j, S)
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > 0:
            iscale = F(15.0) / max_scale
            for j in range(16):
                b[j] = nearest_int(iscale * scales[j]) & 0xFF
            wr_f16(b, 80, max_scale / F(15.0))
        if max_min > 0:
            iscale = F(15.0) / max_min
            for j in range(16):
                b[j] = (np.int64(b[j]) | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            wr_f16(b, 82, max_min / F(15.0))
    else:  # quantize_row_q2_K_impl
        sumx2 = F(0.0)
        for j in range(QK_K):
            sumx2 += x[xo + j] * x[xo + j]
        sigma2 = sumx2 / F(QK_K)
        for j in range(16):
            s = F(0.0)
            for l in range(16):
                xv = x[xo + 16 * j + l]
                w[l] = qw[qo + 16 * j + l] * np.sqrt(sigma2 + xv * xv)
            for l in range(16):
                s += w[l]
            sw[j] = s
            scales[j] = make_qkx_quants(16, 3, x, xo + 16 * j, w, L, 16 * j, F(-0.9), F(0.05), 36, False, 3, mins, j, S)
        dm = make_qp_quants(16, 15, scales, Ls, sw)
        mm = make_qp_quants(16, 15, mins, Lm, sw)
        wr_f16(b, 80, dm)
        wr_f16(b, 82, mm)
        for j in range(16):
            b[j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
    # requantize with the stored fp16 d and dmin
    dd = rd_f16(b, 80)
    dmin = rd_f16(b, 82)
    for j in range(16):
        d = dd * F(np.int64(b[j]) & 0xF)
        if d == 0:
            continue
        dm = dmin * F(np.int64(b[j]) >> 4)
        for ii in range(16):
            l = nearest_int((x[xo + 16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))
    _pack_2bit(L, b, 16)


# ---- Q3_K: 16 sub-blocks of 16, signed 6-bit scales, 3-bit codes (high bit in hmask) --------------

@njit(error_model="numpy", cache=True)
def _q3_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    for k in range(110):
        b[k] = 0
    if not has_qw:  # quantize_row_q3_K_ref
        max_scale = F(0.0)
        amax = F(0.0)
        for j in range(16):
            scales[j] = make_q3_quants(16, 4, x, xo + 16 * j, L, 16 * j, S)
            sc = abs(scales[j])
            if sc > amax:
                amax = sc
                max_scale = scales[j]
        if max_scale != 0:
            iscale = F(-32.0) / max_scale
            for j in range(16):
                l = np.int64(np.int8(nearest_int(iscale * scales[j]) & 0xFF))  # C: int8_t l = nearest_int(..)
                l = max(-32, min(31, l)) + 32
                _put_q3_scale(j, l, b)
            wr_f16(b, 108, F(1.0) / iscale)
    else:  # quantize_row_q3_K_impl
        sumx2 = F(0.0)
        for j in range(QK_K):
            sumx2 += x[xo + j] * x[xo + j]
        sigma2 = F(2.0) * sumx2 / F(QK_K)
        for j in range(16):
            for l in range(16):
                xv = x[xo + 16 * j + l]
                w[l] = qw[qo + 16 * j + l] * np.sqrt(sigma2 + xv * xv)
            s = F(0.0)
            for l in range(16):
                s += w[l]
            sw[j] = s
            scales[j] = make_qx_quants(16, 4, x, xo + 16 * j, L, 16 * j, w, 0, True, S)
        d_block = make_qx_quants(16, 32, scales, 0, Ls, 0, sw, 0, True, S)
        for j in range(16):
            _put_q3_scale(j, np.int64(Ls[j]), b)
        wr_f16(b, 108, d_block)
    # the final codes 0..7 as float32 in C = S[2], eight per step: nearest_int(x / d) clamped to
    # -4..3, plus 4 (C: l = nearest_int(x[16*j + ii] / d); L = MAX(-4, MIN(3, l)) + 4); a sub-block
    # whose d is 0 keeps make_q3_quants' codes (C: if (!d) continue;)
    C = S[2]
    dd = rd_f16(b, 108)
    for j in range(16):
        d = dd * F(_get_q3_scale(j, b, 0))
        if d == 0:
            for ii in range(16):
                C[16 * j + ii] = F(L[16 * j + ii])
            continue
        vd = vsplat(d)
        for ii in range(0, 16, 8):
            vstore(C, 16 * j + ii, vnint_clamp(vload(x, xo + 16 * j + ii) / vd, -4, 3) + vsplat(F(4.0)))
    # hmask: bit k of hmask[m] is the high bit (code > 3) of code 32k + m; the low two bits go to
    # qs[32h + l] at bit 2n for code 128h + 32n + l (_pack_2bit)
    for m0 in range(0, 32, 8):
        h = visplat(0)
        for k in range(8):
            h = h | ((vtrunc(vload(C, 32 * k + m0)) >> 2) << k)  # codes are 0..7: >> 2 is the high bit
        vstore_u8(b, m0, h)
    three = visplat(3)
    for hh in range(2):
        for l0 in range(0, 32, 8):
            e = 128 * hh + l0
            q = (vtrunc(vload(C, e)) & three) | ((vtrunc(vload(C, e + 32)) & three) << 2)
            q = q | ((vtrunc(vload(C, e + 64)) & three) << 4) | ((vtrunc(vload(C, e + 96)) & three) << 6)
            vstore_u8(b, 32 + 32 * hh + l0, q)


@njit(inline="always", error_model="numpy", cache=True)
def _put_q3_scale(j, l, b):
    """Scale j (0..63): low nibble in scales[j] (j < 8) or the high nibble of scales[j-8]; its top
    two bits in scales[8 + j%4] at bit 2*(j/4)."""
    if j < 8:
        b[96 + j] = l & 0xF
    else:
        b[96 + j - 8] = (np.int64(b[96 + j - 8]) | ((l & 0xF) << 4)) & 0xFF
    b[96 + 8 + j % 4] = (np.int64(b[96 + 8 + j % 4]) | ((l >> 4) << (2 * (j // 4)))) & 0xFF


# ---- Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scale and min ----------------------------------------

@njit(error_model="numpy", cache=True)
def _q45_k_block(nmax, x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    """Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fills d, dmin, scales[12] at bytes 0..15 and
    the codes 0..nmax in L; the caller packs the codes."""
    for k in range(16):
        b[k] = 0
    if not has_qw:  # quantize_row_q{4,5}_K_ref
        max_scale = F(0.0)
        max_min = F(0.0)
        for j in range(8):
            sum_x2 = F(0.0)
            for l in range(32):
                sum_x2 += x[xo + 32 * j + l] * x[xo + 32 * j + l]
            av_x = np.sqrt(sum_x2 / F(32.0))
            for l in range(32):
                w[l] = av_x + abs(x[xo + 32 * j + l])
            if nmax == 15:
                scales[j] = make_qkx_quants(32, 15, x, xo + 32 * j, w, L, 32 * j, F(-1.0), F(0.1), 20, False, 2, mins, j, S)
            else:
                scales[j] = make_qkx_quants(32, 31, x, xo + 32 * j, w, L, 32 * j, F(-0.5), F(0.1), 15, False, 2, mins, j, S)
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        inv_scale = F(63.0) / max_scale if max_scale > 0 else F(0.0)
        inv_min = F(63.0) / max_min if max_min > 0 else F(0.0)
        for j in range(8):
            ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)  # C: uint8_t ls = nearest_int(..)
            lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
            _put_scale_min_k4(j, ls, lm, b, 4)
        wr_f16(b, 0, max_scale / F(63.0))
        wr_f16(b, 2, max_min / F(63.0))
    else:  # quantize_row_q{4,5}_K_impl with quant_weights
        sum_x2 = F(0.0)
        for l in range(QK_K):
            sum_x2 += x[xo + l] * x[xo + l]
        sigma2 = F(2.0) * sum_x2 / F(QK_K)
        for j in range(8):
            for l in range(32):
                xv = x[xo + 32 * j + l]
                w[l] = qw[qo + 32 * j + l] * np.sqrt(sigma2 + xv * xv)
            s = F(0.0)
            for l in range(32):
                s += w[l]
            sw[j] = s
            scales[j] = make_qkx_quants(32, nmax, x, xo + 32 * j, w, L, 32 * j, F(-0.9), F(0.05), 36, False, 3, mins, j, S)
        d_block = make_qp_quants(8, 63, scales, Ls, sw)
        m_block = make_qp_quants(8, 63, mins, Lm, sw)
        for j in range(8):
            ls = np.int64(Ls[j])
            lm = np.int64(Lm[j])
            if nmax == 31:  # Q5_K clamps to 63 here, Q4_K does not (C: ls = MIN(63, ls) in q5 only)
                ls = min(63, ls)
                lm = min(63, lm)
            _put_scale_min_k4(j, ls, lm, b, 4)
        wr_f16(b, 0, d_block)
        wr_f16(b, 2, m_block)
    dd = rd_f16(b, 0)
    dmin = rd_f16(b, 2)
    for j in range(8):
        sc, m = _get_scale_min_k4(j, b, 4)
        d = dd * F(sc)
        if d == 0:
            continue  # ggml keeps the codes of the search for this sub-block
        dm = dmin * F(m)
        for ii in range(32):
            l = nearest_int((x[xo + 32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))


@njit(error_model="numpy", cache=True)
def _q4_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    _q45_k_block(15, x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
    # qs: 4 chunks of 64 elements; byte l holds element l (low nibble) and l + 32 (high)
    for c in range(4):
        for l in range(32):
            b[16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + l + 32] << 4)


@njit(error_model="numpy", cache=True)
def _q5_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    _q45_k_block(31, x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
    for k in range(16, 48):
        b[k] = 0
    # the 5th bit of element 64c + l (+32) goes to bit 2c (2c + 1) of qh[l]
    for c in range(4):
        for l in range(32):
            l1 = L[64 * c + l]
            l2 = L[64 * c + l + 32]
            if l1 > 15:
                l1 -= 16
                b[16 + l] = np.int64(b[16 + l]) | (1 << (2 * c))
            if l2 > 15:
                l2 -= 16
                b[16 + l] = np.int64(b[16 + l]) | (2 << (2 * c))
            b[48 + 32 * c + l] = l1 | (l2 << 4)


# ---- Q6_K: 16 sub-blocks of 16, int8 scales, 6-bit codes -----------------------------------------

@njit(error_model="numpy", cache=True)
def _q6_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    for k in range(210):
        b[k] = 0
    max_scale = F(0.0)
    max_abs_scale = F(0.0)
    for ib in range(16):
        # the imatrix path uses the raw importance as weights (no sigma2 term)
        scale = make_qx_quants(16, 32, x, xo + 16 * ib, L, 16 * ib, qw, qo + 16 * ib, has_qw, S)
        scales[ib] = scale
        a = abs(scale)
        if a > max_abs_scale:
            max_abs_scale = a
            max_scale = scale
    if max_abs_scale < GROUP_MAX_EPS:
        return  # an all-zero block
    iscale = F(-128.0) / max_scale
    wr_f16(b, 208, F(1.0) / iscale)
    for ib in range(16):
        b[192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF  # int8_t
    dd = rd_f16(b, 208)
    for j in range(16):
        d = dd * F(np.int8((b[192 + j])))
        if d == 0:
            continue
        for ii in range(16):
            l = nearest_int(x[xo + 16 * j + ii] / d)
            L[16 * j + ii] = max(-32, min(31, l)) + 32
    for h in range(2):
        for l in range(32):
            e = 128 * h + l
            b[64 * h + l] = (L[e] & 0xF) | ((L[e + 64] & 0xF) << 4)
            b[64 * h + 32 + l] = (L[e + 32] & 0xF) | ((L[e + 96] & 0xF) << 4)
            b[128 + 32 * h + l] = ((L[e] >> 4) | ((L[e + 32] >> 4) << 2) | ((L[e + 64] >> 4) << 4)
                                   | ((L[e + 96] >> 4) << 6)) & 0xFF


# ---- Q8_K: float32 d, 256 int8 codes, 16 int16 sums (ggml's dot-product operand) ------------------

@njit(error_model="numpy", cache=True)
def _q8_k_block(x, xo, qw, qo, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm):
    for k in range(292):
        b[k] = 0  # (ggml leaves bsums of an all-zero block unwritten; lowbit writes zeros)
    # amax: lane-wise max of |x|, then across lanes (finite inputs: order is moot); mx is the first
    # element with that magnitude, as C's strict > keeps
    m = vabs(vload(x, xo))
    for j in range(8, QK_K, 8):
        a = vabs(vload(x, xo + j))
        m = vsel(vgt(a, m), a, m)
    amax = vhmax(m)
    if amax == 0:
        return
    mx = F(0.0)
    for j in range(QK_K):
        if abs(x[xo + j]) == amax:
            mx = x[xo + j]
            break
    iscale = F(-127.0) / mx
    vis = vsplat(iscale)
    for j in range(16):  # C: qs = MIN(127, nearest_int(iscale * x)); bsums[j] = sum of 16 qs (int8)
        q0 = vimin(vnint(vis * vload(x, xo + 16 * j)), 127)
        q1 = vimin(vnint(vis * vload(x, xo + 16 * j + 8)), 127)
        vstore_u8(b, 4 + 16 * j, q0)
        vstore_u8(b, 4 + 16 * j + 8, q1)
        sv = vsext8(q0) + vsext8(q1)
        s = 0
        for k in range(8):
            s += vilane(sv, k)
        b[260 + 2 * j] = s & 0xFF
        b[260 + 2 * j + 1] = (s >> 8) & 0xFF
    d = f32_bits(F(1.0) / iscale)  # float32 d, little-endian
    for k in range(4):
        b[k] = (d >> (8 * k)) & 0xFF


# ---- decoders: dequantize_row_*, eight elements per step (int lanes -> float, C's float order) ------
# Each takes the row's bytes ``b`` with the block at ``o`` and writes 256 floats to y[yo:].

@njit(inline="always", error_model="numpy", cache=True)
def _put8(y, yo, v):
    vstore(y, yo, vcanon(v))


@njit(error_model="numpy", cache=True)
def _dec_q2_k(b, o, y, yo):
    d = rd_f16(b, o + 80)
    mn = rd_f16(b, o + 82)
    for h in range(2):
        for j in range(4):
            for half in range(2):  # sub-block 8h + 2j + half: elements 128h + 32j + 16*half ..
                sc = np.int64(b[o + 8 * h + 2 * j + half])
                dl = vsplat(d * F(sc & 0xF))  # C: dl = d * (sc & 0xF); ml = min * (sc >> 4);
                ml = vsplat(mn * F(sc >> 4))
                for l0 in range(16 * half, 16 * half + 16, 8):
                    q = (vload_u8(b, o + 16 + 32 * h + l0) >> (2 * j)) & visplat(3)
                    _put8(y, yo + 128 * h + 32 * j + l0, dl * vtof(q) - ml)


@njit(inline="always", error_model="numpy", cache=True)
def _get_q3_scale(j, b, o):
    """Signed 6-bit scale j of a Q3_K block at b[o] (scales[12] at byte 96)."""
    lo = (np.int64(b[o + 96 + j]) & 0xF) if j < 8 else (np.int64(b[o + 96 + j - 8]) >> 4)
    return np.int64(lo | (((np.int64(b[o + 104 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(error_model="numpy", cache=True)
def _dec_q3_k(b, o, y, yo):
    d = rd_f16(b, o + 108)
    three = visplat(3)
    one = visplat(1)
    four = visplat(4)
    for h in range(2):
        for j in range(4):
            for half in range(2):
                dl = vsplat(d * F(_get_q3_scale(8 * h + 2 * j + half, b, o)))  # C: dl = d_all * (scale - 32)
                for l0 in range(16 * half, 16 * half + 16, 8):
                    low = (vload_u8(b, o + 32 + 32 * h + l0) >> (2 * j)) & three
                    hb = (vload_u8(b, o + l0) >> (4 * h + j)) & one
                    # C: (int8_t)((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4)
                    _put8(y, yo + 128 * h + 32 * j + l0, dl * vtof(low + (hb << 2) - four))


@njit(error_model="numpy", cache=True)
def _dec_q4_k(b, o, y, yo):
    d = rd_f16(b, o)
    mn = rd_f16(b, o + 2)
    lo4 = visplat(15)
    for c in range(4):
        sc, m = _get_scale_min_k4(2 * c, b, o + 4)
        d1 = vsplat(d * F(sc))
        m1 = vsplat(mn * F(m))
        sc, m = _get_scale_min_k4(2 * c + 1, b, o + 4)
        d2 = vsplat(d * F(sc))
        m2 = vsplat(mn * F(m))
        for l0 in range(0, 32, 8):
            q = vload_u8(b, o + 16 + 32 * c + l0)
            _put8(y, yo + 64 * c + l0, d1 * vtof(q & lo4) - m1)
            _put8(y, yo + 64 * c + 32 + l0, d2 * vtof(q >> 4) - m2)


@njit(error_model="numpy", cache=True)
def _dec_q5_k(b, o, y, yo):
    d = rd_f16(b, o)
    mn = rd_f16(b, o + 2)
    lo4 = visplat(15)
    one = visplat(1)
    for c in range(4):
        sc, m = _get_scale_min_k4(2 * c, b, o + 4)
        d1 = vsplat(d * F(sc))
        m1 = vsplat(mn * F(m))
        sc, m = _get_scale_min_k4(2 * c + 1, b, o + 4)
        d2 = vsplat(d * F(sc))
        m2 = vsplat(mn * F(m))
        for l0 in range(0, 32, 8):
            q = vload_u8(b, o + 48 + 32 * c + l0)
            qh = vload_u8(b, o + 16 + l0)
            q1 = (q & lo4) + (((qh >> (2 * c)) & one) << 4)
            q2 = (q >> 4) + (((qh >> (2 * c + 1)) & one) << 4)
            _put8(y, yo + 64 * c + l0, d1 * vtof(q1) - m1)
            _put8(y, yo + 64 * c + 32 + l0, d2 * vtof(q2) - m2)


@njit(error_model="numpy", cache=True)
def _dec_q6_k(b, o, y, yo):
    d = rd_f16(b, o + 208)
    lo4 = visplat(15)
    three = visplat(3)
    off = visplat(32)
    for h in range(2):
        for l0 in range(0, 32, 8):
            isc = o + 192 + 8 * h + l0 // 16
            # C: y[l] = d * sc[is] * q1: (d * sc) * q
            s1 = vsplat(d * F(np.int8(b[isc])))
            s2 = vsplat(d * F(np.int8(b[isc + 2])))
            s3 = vsplat(d * F(np.int8(b[isc + 4])))
            s4 = vsplat(d * F(np.int8(b[isc + 6])))
            qh = vload_u8(b, o + 128 + 32 * h + l0)
            ql0 = vload_u8(b, o + 64 * h + l0)
            ql1 = vload_u8(b, o + 64 * h + 32 + l0)
            e = yo + 128 * h + l0
            _put8(y, e, s1 * vtof(((ql0 & lo4) | ((qh & three) << 4)) - off))
            _put8(y, e + 32, s2 * vtof(((ql1 & lo4) | (((qh >> 2) & three) << 4)) - off))
            _put8(y, e + 64, s3 * vtof(((ql0 >> 4) | (((qh >> 4) & three) << 4)) - off))
            _put8(y, e + 96, s4 * vtof(((ql1 >> 4) | ((qh >> 6) << 4)) - off))


@njit(error_model="numpy", cache=True)
def _dec_q8_k(b, o, y, yo):
    d = vsplat(bits_f32(np.int64(b[o]) | (np.int64(b[o + 1]) << 8) | (np.int64(b[o + 2]) << 16)
                        | (np.int64(b[o + 3]) << 24)))
    for j in range(0, QK_K, 8):
        _put8(y, yo + j, d * vtof(vload_i8(b, o + 4 + j)))


# ---- drivers ---------------------------------------------------------------------------------------

_IDS = {"q2_k": 0, "q3_k": 1, "q4_k": 2, "q5_k": 3, "q6_k": 4, "q8_k": 5}
_TS = np.array([84, 110, 144, 176, 210, 292])


@njit(error_model="numpy", cache=True)
def _encode_rows(t, x, qw, has_qw, out):
    rows, K = x.shape
    nb = K // QK_K
    ts = _TS[t]
    L = np.zeros(QK_K, dtype=np.int64)
    S = np.zeros((8, 256), dtype=np.float32)
    w = np.zeros(32, dtype=np.float32)
    scales = np.zeros(16, dtype=np.float32)
    mins = np.zeros(16, dtype=np.float32)
    sw = np.zeros(16, dtype=np.float32)
    Ls = np.zeros(16, dtype=np.uint8)
    Lm = np.zeros(16, dtype=np.uint8)
    for r in range(rows):
        xr = x[r]
        for i in range(nb):
            b = out[r, i * ts:(i + 1) * ts]
            if t == 0:
                _q2_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
            elif t == 1:
                _q3_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
            elif t == 2:
                _q4_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
            elif t == 3:
                _q5_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
            elif t == 4:
                _q6_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)
            else:
                _q8_k_block(xr, i * QK_K, qw, i * QK_K, has_qw, b, L, S, w, scales, mins, sw, Ls, Lm)


@njit(error_model="numpy", cache=True, parallel=True)
def _decode_rows(t, data, out):
    rows, K = out.shape
    nb = K // QK_K
    ts = _TS[t]
    for r in prange(rows):
        b = data[r]
        y = out[r]
        for i in range(nb):
            if t == 0:
                _dec_q2_k(b, i * ts, y, i * QK_K)
            elif t == 1:
                _dec_q3_k(b, i * ts, y, i * QK_K)
            elif t == 2:
                _dec_q4_k(b, i * ts, y, i * QK_K)
            elif t == 3:
                _dec_q5_k(b, i * ts, y, i * QK_K)
            elif t == 4:
                _dec_q6_k(b, i * ts, y, i * QK_K)
            else:
                _dec_q8_k(b, i * ts, y, i * QK_K)


_NO_QW = np.zeros(1, dtype=np.float32)


@kernel("gguf_kquants", "cpu", "encode")
def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    _encode_rows(_IDS[codec_id], x, _NO_QW if qw is None else qw, qw is not None, out)


@kernel("gguf_kquants", "cpu", "decode")
def decode(codec_id: str, data: np.ndarray, out: np.ndarray) -> None:
    _decode_rows(_IDS[codec_id], np.ascontiguousarray(data), out)
