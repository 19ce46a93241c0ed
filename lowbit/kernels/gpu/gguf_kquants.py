"""Triton kernels of the GGUF k-quants (family ``gguf_kquants``): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
Q8_K; the GPU twins of :mod:`lowbit.kernels.cpu.gguf_kquants`, same entry points and arguments
(``encode(codec_id, x, qw, out)``, ``decode(codec_id, data, out)``), same bytes and bits.

Decoding runs one lane per output element: the lane reads the super-block's fp16 scale(s), its
sub-block's packed scale and its own code bits, and does ggml's ``dequantize_row_*`` products in
ggml's order (launched without FMA contraction).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..cpu.gguf_kquants import _IDS, _TS
from ..registry import kernel
from ._ggml import (FP, GROUP_MAX_EPS, W_ABS, W_AVX, W_IMAT, W_RAW, W_X2, _get8, bits_f32, canon, f32_bits,
                    fp32_to_fp16, ld_f16, ld_u8, ld_u32, make_q3_quants, make_qkx_quants, make_qp_quants,
                    make_qx_quants, nearest_int, programs_block, qkx_code, qx_code, sext8, signed_absmax, st_f16,
                    st_u8, st_u16, sumsq, tile_signed_absmax, weight)

Q2_K: tl.constexpr = tl.constexpr(0)
Q3_K: tl.constexpr = tl.constexpr(1)
Q4_K: tl.constexpr = tl.constexpr(2)
Q5_K: tl.constexpr = tl.constexpr(3)
Q6_K: tl.constexpr = tl.constexpr(4)
Q8_K: tl.constexpr = tl.constexpr(5)


@triton.jit
def scale_min_k4(b, j, m):
    """ggml ``get_scale_min_k4(j, scales)`` over the 12 scale bytes at ``b``: sub-blocks 0..3 keep
    the low 6 bits of bytes j and j + 4; 4..7 take a nibble of byte j + 4 and the top two bits
    of bytes j - 4 (scale) and j (min) as their bits 4..5."""
    lo = j < 4
    jh = tl.where(lo, j, j - 4)  # (clamped index for the lanes that do not use it)
    b_j = ld_u8(b + j, m)
    b_j4 = ld_u8(b + j + 4, m)
    b_jm4 = ld_u8(b + jh, m)
    sc = tl.where(lo, b_j & 63, (b_j4 & 0xF) | ((b_jm4 >> 6) << 4))
    mn = tl.where(lo, b_j4 & 63, (b_j4 >> 4) | ((b_j >> 6) << 4))
    return sc, mn


@triton.jit
def q3_scale(b, s, m):
    """Q3_K's signed 6-bit scale ``s`` (0..15) from the 12 scale bytes at ``b``: the low nibble
    of byte s (s < 8) or the high nibble of byte s - 8, two high bits at 2*(s/4) of byte 8 + s%4;
    minus 32."""
    lo = tl.where(s < 8, ld_u8(b + (s & 7), m) & 0xF, ld_u8(b + (s & 7), m) >> 4)
    hi = (ld_u8(b + 8 + (s & 3), m) >> (2 * (s >> 2))) & 3
    return (lo | (hi << 4)) - 32


@triton.jit
def _decode_kernel(data_ptr, out_ptr, n, K, RB, T: tl.constexpr, TS: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = e < n
    e = tl.where(m, e, 0)
    row = e // K
    col = e - row * K
    blk = col // 256
    j = (col - blk * 256).to(tl.int32)
    b = data_ptr + row * RB + blk * TS  # the super-block's first byte
    if T == Q2_K:  # element 128h + 32s + l: bits 2s of qs[32h + l]; scale byte j/16 = min << 4 | scale
        h = j >> 7
        s = (j >> 5) & 3
        l = j & 31
        q = (ld_u8(b + 16 + 32 * h + l, m) >> (2 * s)) & 3
        sc = ld_u8(b + (j >> 4), m)
        dl = ld_f16(b + 80, m) * (sc & 0xF).to(tl.float32)
        ml = ld_f16(b + 82, m) * (sc >> 4).to(tl.float32)
        y = dl * q.to(tl.float32) - ml
    elif T == Q3_K:  # low 2 bits as Q2_K (qs at 32); the high bit (4h + s) of hmask[l] set means +0, clear -4
        h = j >> 7
        s = (j >> 5) & 3
        l = j & 31
        low = (ld_u8(b + 32 + 32 * h + l, m) >> (2 * s)) & 3
        hb = (ld_u8(b + l, m) >> (4 * h + s)) & 1
        q = low - tl.where(hb != 0, 0, 4)
        dl = ld_f16(b + 108, m) * q3_scale(b + 96, j >> 4, m).to(tl.float32)
        y = dl * q.to(tl.float32)
    elif T == Q4_K or T == Q5_K:  # 4 chunks of 64: byte l of a chunk holds element l (low) and l + 32 (high)
        c = j >> 6
        r = j & 63
        l = r & 31
        hi = r >= 32
        sc, mn = scale_min_k4(b + 4, 2 * c + (r >> 5), m)
        if T == Q4_K:
            qb = ld_u8(b + 16 + 32 * c + l, m)
            q = tl.where(hi, qb >> 4, qb & 0xF)
        else:  # the fifth bit of element 64c + l (+ 32) is bit 2c (2c + 1) of qh[l]
            qb = ld_u8(b + 48 + 32 * c + l, m)
            q = tl.where(hi, qb >> 4, qb & 0xF) + (((ld_u8(b + 16 + l, m) >> (2 * c + (r >> 5))) & 1) << 4)
        d1 = ld_f16(b, m) * sc.to(tl.float32)
        m1 = ld_f16(b + 2, m) * mn.to(tl.float32)
        y = d1 * q.to(tl.float32) - m1
    elif T == Q6_K:
        # element 128h + 32t + l (t = 0..3): low nibble of ql[64h + 32(t&1) + l] (t < 2) or its high
        # nibble (t >= 2), two high bits at 2t of qh[32h + l]; minus 32; int8 scale 8h + l/16 + 2t
        h = j >> 7
        t = (j >> 5) & 3
        l = j & 31
        qlb = ld_u8(b + 64 * h + 32 * (t & 1) + l, m)
        low = tl.where(t >= 2, qlb >> 4, qlb & 0xF)
        q = (low | (((ld_u8(b + 128 + 32 * h + l, m) >> (2 * t)) & 3) << 4)) - 32
        isc = sext8(ld_u8(b + 192 + 8 * h + (l >> 4) + 2 * t, m))
        y = (ld_f16(b + 208, m) * isc.to(tl.float32)) * q.to(tl.float32)
    else:  # Q8_K: float32 d, int8 codes
        d = bits_f32(ld_u32(b, m))
        y = d * sext8(ld_u8(b + 4 + j, m)).to(tl.float32)
    tl.store(out_ptr + e, canon(y), mask=m)


@kernel("gguf_kquants", "gpu", "decode")
def decode(codec_id: str, data: torch.Tensor, out: torch.Tensor) -> None:
    """``data[n, row_bytes]`` -> float32 ``out[n, K]``; see lowbit.kernels.cpu.gguf_kquants."""
    t = _IDS[codec_id]
    rows, K = out.shape
    n = rows * K
    blk = programs_block(n, 1024, 1 << 16)
    _decode_kernel[(triton.cdiv(n, blk),)](data.contiguous(), out, n, K, data.shape[1], T=t, TS=int(_TS[t]),
                                           BLOCK=blk, **FP)


# ---- encode ------------------------------------------------------------------------------------
# Three launches, each lane running ggml's scalar code for its part:
#   A. one lane per sub-block: the scale search (make_qkx / make_qx / make_q3), writing the
#      sub-block's scale, min, weight sum and the parameters that reproduce the search's codes
#      to a scratch table (ggml keeps those codes where the quantized sub-block scale is 0);
#   B. one lane per super-block: the sub-block scales quantized to 4/6/8 bits (make_qp for the
#      imatrix paths), packed, and the fp16 super-block scale(s) stored;
#   C. one lane per super-block: every code requantized with the stored scales (ggml's second
#      pass), the bits packed; Q8_K entirely here.
# Scratch rows (float32, n_sub each): 0 scale, 1 -min, 2 sum of weights, 3 and 4 the search's code
# parameters (make_qkx: l_is, l_mn; make_qx: pick, off); make_q3's codes go to an int64 table.

SC: tl.constexpr = tl.constexpr(0)
MN: tl.constexpr = tl.constexpr(1)
SW: tl.constexpr = tl.constexpr(2)
PA: tl.constexpr = tl.constexpr(3)
PB: tl.constexpr = tl.constexpr(4)


@triton.jit
def _search_kernel(x_ptr, qw_ptr, ss_ptr, scr_ptr, lp_ptr, n_sub, nsr, K, T: tl.constexpr, HAS_QW: tl.constexpr,
                   SB: tl.constexpr, BLOCK: tl.constexpr):
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    row = sb // nsr
    si = sb - row * nsr
    xp = x_ptr + row * K + si * SB
    qp = qw_ptr + si * SB
    fz = tl.zeros_like(tl.load(xp))
    sw = fz
    sigma2 = fz
    if HAS_QW:  # ggml: weights qw * sqrt(sigma2 + x*x), sigma2 from the super-block's sum of squares
        s2 = tl.load(ss_ptr + (row * K + si * SB) // 256)
        if T == Q2_K:
            sigma2 = tl.math.div_rn(s2, fz + 256.0)  # C: sumx2/QK_K
        else:
            sigma2 = tl.math.div_rn(s2 * 2.0, fz + 256.0)  # C: 2*sumx2/QK_K
        if T != Q6_K:
            for i in range(SB):  # C: sw[j] = sum of the sub-block's weights, in order
                sw += weight(W_IMAT, tl.load(xp + i), qp, i, sigma2)
    pa = fz
    pb = fz
    mn = fz
    if T == Q2_K:
        if HAS_QW:
            sc, mn, pa, pb = make_qkx_quants(xp, qp, sigma2, 16, 3, W_IMAT, -0.9, 0.05, 36, False, 3, 64)
        else:
            sc, mn, pa, pb = make_qkx_quants(xp, qp, fz, 16, 3, W_ABS, -0.5, 0.1, 15, True, 2, 16)
    elif T == Q3_K:
        if HAS_QW:
            sc, pa, off = make_qx_quants(xp, qp, sigma2, 16, 4, W_IMAT)
            pb = off.to(tl.float32)
        else:
            sc, Lp = make_q3_quants(xp, 16, 4)
            tl.store(lp_ptr + sb, Lp, mask=m)
    elif T == Q4_K or T == Q5_K:
        NMAX: tl.constexpr = 15 if T == Q4_K else 31
        if HAS_QW:
            sc, mn, pa, pb = make_qkx_quants(xp, qp, sigma2, 32, NMAX, W_IMAT, -0.9, 0.05, 36, False, 3, 64)
        else:  # weights av_x + |x|, av_x = sqrtf(sum_x2/32)
            sum_x2 = fz
            for i in range(32):
                xi = tl.load(xp + i)
                sum_x2 += xi * xi
            av_x = tl.math.sqrt_rn(tl.math.div_rn(sum_x2, fz + 32.0))
            if T == Q4_K:
                sc, mn, pa, pb = make_qkx_quants(xp, qp, av_x, 32, 15, W_AVX, -1.0, 0.1, 20, False, 2, 32)
            else:
                sc, mn, pa, pb = make_qkx_quants(xp, qp, av_x, 32, 31, W_AVX, -0.5, 0.1, 15, False, 2, 16)
    else:  # Q6_K: make_qx_quants with the raw importance as weights (x*x without)
        if HAS_QW:
            sc, pa, off = make_qx_quants(xp, qp, fz, 16, 32, W_RAW)
        else:
            sc, pa, off = make_qx_quants(xp, qp, fz, 16, 32, W_X2)
        pb = off.to(tl.float32)
    tl.store(scr_ptr + SC * n_sub + sb, sc, mask=m)
    tl.store(scr_ptr + MN * n_sub + sb, mn, mask=m)
    tl.store(scr_ptr + SW * n_sub + sb, sw, mask=m)
    tl.store(scr_ptr + PA * n_sub + sb, pa, mask=m)
    tl.store(scr_ptr + PB * n_sub + sb, pb, mask=m)


@triton.jit
def _max_pos(p, N: tl.constexpr):
    """C's ``if (v > mx) mx = v`` from mx = 0 over the N floats at ``p``."""
    mx = tl.zeros_like(tl.load(p))
    for i in range(N):
        v = tl.load(p + i)
        mx = tl.where(v > mx, v, mx)
    return mx


@triton.jit
def _q3_l(s, iscale, ok, pick, off, HAS_QW: tl.constexpr):
    """Q3_K's stored 6-bit scale of sub-block scale ``s``: ref: (int8_t)nearest_int(-32/max*s)
    clamped to -32..31, + 32 (0 when the block's max scale is 0: nothing is written); imatrix:
    make_qx_quants' code."""
    if HAS_QW:
        return qx_code(s, pick, off, 32)
    else:
        l = tl.minimum(tl.maximum(sext8(nearest_int(iscale * s)), -32), 31) + 32
        return tl.where(ok, l, 0)


@triton.jit
def _scales_kernel(scr_ptr, out_ptr, n_sb, n_sub, nb, RB, T: tl.constexpr, HAS_QW: tl.constexpr, TS: tl.constexpr,
                   NS: tl.constexpr, BLOCK: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    ob = out_ptr + row * RB + (blk - row * nb) * TS
    m2 = m[:, None]
    scp = scr_ptr + SC * n_sub + blk * NS  # this super-block's NS sub-block scales
    mnp = scr_ptr + MN * n_sub + blk * NS
    swp = scr_ptr + SW * n_sub + blk * NS
    fz = tl.zeros_like(tl.load(scp))
    if T == Q2_K:  # bytes 0..15: scale code | min code << 4; d at 80, dmin at 82
        if HAS_QW:  # make_qp_quants(16, 15, scales | mins, sw)
            dm, s0, s1 = make_qp_quants(scp, swp, 16, 15)
            mm, m0, m1 = make_qp_quants(mnp, swp, 16, 15)
            st_f16(ob + 80, dm, m)
            st_f16(ob + 82, mm, m)
            for j in tl.static_range(16):
                st_u8(ob + j, _get8(s0, s1, j) | (_get8(m0, m1, j) << 4), m)
        else:
            max_scale = _max_pos(scp, 16)
            max_min = _max_pos(mnp, 16)
            j16 = tl.arange(0, 16)[None, :]
            okd = max_scale > 0
            okm = max_min > 0
            lo = tl.where(okd[:, None], nearest_int(tl.math.div_rn(fz + 15.0, max_scale)[:, None] * tl.load(scp[:, None] + j16)) & 0xFF, 0)
            hi = tl.where(okm[:, None], nearest_int(tl.math.div_rn(fz + 15.0, max_min)[:, None] * tl.load(mnp[:, None] + j16)) << 4, 0)
            st_u8(ob[:, None] + j16, lo | hi, m2)
            st_u16(ob + 80, tl.where(okd, fp32_to_fp16(tl.math.div_rn(max_scale, fz + 15.0)), 0), m)
            st_u16(ob + 82, tl.where(okm, fp32_to_fp16(tl.math.div_rn(max_min, fz + 15.0)), 0), m)
    elif T == Q3_K:  # 16 6-bit scales in 12 bytes at 96; d at 108
        if HAS_QW:  # make_qx_quants(16, 32, scales, sw)
            d, pick, off = make_qx_quants(scp, swp, fz, 16, 32, W_RAW)
            st_f16(ob + 108, d, m)
            iscale = fz
            ok = m
        else:
            amax, max_scale = signed_absmax(scp, 16)
            ok = max_scale != 0
            iscale = tl.math.div_rn(fz - 32.0, max_scale)
            st_u16(ob + 108, tl.where(ok, fp32_to_fp16(tl.math.div_rn(fz + 1.0, iscale)), 0), m)
            pick = fz
            off = pick.to(tl.int32)
        k8 = tl.arange(0, 8)[None, :]  # byte 96 + k: scale k low nibble, scale k + 8 high nibble
        l_lo = _q3_l(tl.load(scp[:, None] + k8), iscale[:, None], ok[:, None], pick[:, None], off[:, None], HAS_QW)
        l_hi = _q3_l(tl.load(scp[:, None] + k8 + 8), iscale[:, None], ok[:, None], pick[:, None], off[:, None], HAS_QW)
        st_u8(ob[:, None] + 96 + k8, (l_lo & 0xF) | ((l_hi & 0xF) << 4), m2)
        r4 = tl.arange(0, 4)[None, :]  # byte 104 + r: the top two bits of scale 4q + r at bits 2q
        hb = tl.zeros([BLOCK, 4], tl.int32)
        for q in tl.static_range(4):
            l = _q3_l(tl.load(scp[:, None] + 4 * q + r4), iscale[:, None], ok[:, None], pick[:, None], off[:, None], HAS_QW)
            hb |= (l >> 4) << (2 * q)
        st_u8(ob[:, None] + 104 + r4, hb, m2)
    elif T == Q4_K or T == Q5_K:  # d, dmin at 0, 2; 8 6-bit scales and mins in 12 bytes at 4
        k4 = tl.arange(0, 4)[None, :]
        if HAS_QW:  # make_qp_quants(8, 63, scales | mins, sw); Q5_K clamps the codes to 63, Q4_K not
            d, s0, s1 = make_qp_quants(scp, swp, 8, 63)
            dm, m0, m1 = make_qp_quants(mnp, swp, 8, 63)
            st_f16(ob, d, m)
            st_f16(ob + 2, dm, m)
            for k in tl.static_range(4):
                ls_a = _get8(s0, s1, k)
                ls_b = _get8(s0, s1, k + 4)
                lm_a = _get8(m0, m1, k)
                lm_b = _get8(m0, m1, k + 4)
                if T == Q5_K:
                    ls_a = tl.minimum(ls_a, 63)
                    ls_b = tl.minimum(ls_b, 63)
                    lm_a = tl.minimum(lm_a, 63)
                    lm_b = tl.minimum(lm_b, 63)
                # get_scale_min_k4's layout: sub-blocks k and k + 4 share bytes 4+k, 8+k, 12+k
                st_u8(ob + 4 + k, ls_a | ((ls_b >> 4) << 6), m)
                st_u8(ob + 8 + k, lm_a | ((lm_b >> 4) << 6), m)
                st_u8(ob + 12 + k, (ls_b & 0xF) | ((lm_b & 0xF) << 4), m)
        else:
            max_scale = _max_pos(scp, 8)
            max_min = _max_pos(mnp, 8)
            inv_s = tl.where(max_scale > 0, tl.math.div_rn(fz + 63.0, max_scale), 0.0)[:, None]
            inv_m = tl.where(max_min > 0, tl.math.div_rn(fz + 63.0, max_min), 0.0)[:, None]
            # C: uint8_t ls = nearest_int(inv_scale*scales[j]); ls = MIN(63, ls)
            ls_a = tl.minimum(nearest_int(inv_s * tl.load(scp[:, None] + k4)) & 0xFF, 63)
            ls_b = tl.minimum(nearest_int(inv_s * tl.load(scp[:, None] + k4 + 4)) & 0xFF, 63)
            lm_a = tl.minimum(nearest_int(inv_m * tl.load(mnp[:, None] + k4)) & 0xFF, 63)
            lm_b = tl.minimum(nearest_int(inv_m * tl.load(mnp[:, None] + k4 + 4)) & 0xFF, 63)
            st_u8(ob[:, None] + 4 + k4, ls_a | ((ls_b >> 4) << 6), m2)
            st_u8(ob[:, None] + 8 + k4, lm_a | ((lm_b >> 4) << 6), m2)
            st_u8(ob[:, None] + 12 + k4, (ls_b & 0xF) | ((lm_b & 0xF) << 4), m2)
            st_f16(ob, tl.math.div_rn(max_scale, fz + 63.0), m)
            st_f16(ob + 2, tl.math.div_rn(max_min, fz + 63.0), m)
    else:  # Q6_K: int8 scales at 192, d at 208; a block whose scales are all ~0 stays all zero
        amax, max_scale = signed_absmax(scp, 16)
        ok = amax >= GROUP_MAX_EPS
        iscale = tl.math.div_rn(fz - 128.0, max_scale)
        st_f16(ob + 208, tl.math.div_rn(fz + 1.0, iscale), m & ok)
        j16 = tl.arange(0, 16)[None, :]
        st_u8(ob[:, None] + 192 + j16, tl.minimum(nearest_int(iscale[:, None] * tl.load(scp[:, None] + j16)), 127),
              m2 & ok[:, None])


@triton.jit
def _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, e, dd, dmin, m2, T: tl.constexpr, HAS_QW: tl.constexpr):
    """ggml's requantized code of element ``e`` ([1, n] tile) of each lane's super-block with the
    stored scales; the search's own code where the sub-block's scale d is 0 (ggml skips those)."""
    x = tl.load(xp[:, None] + e)
    if T == Q4_K or T == Q5_K:
        j = e >> 5
    else:
        j = e >> 4
    pa = tl.load(scr_ptr + PA * n_sub + sub0[:, None] + j)
    pb = tl.load(scr_ptr + PB * n_sub + sub0[:, None] + j)
    if T == Q2_K:
        sc = ld_u8(ob[:, None] + j, m2)
        d = dd[:, None] * (sc & 0xF).to(tl.float32)
        dm = dmin[:, None] * (sc >> 4).to(tl.float32)
        l = tl.minimum(tl.maximum(nearest_int(tl.math.div_rn(x + dm, d)), 0), 3)
        s = qkx_code(x, pa, pb, 3)
    elif T == Q3_K:
        d = dd[:, None] * q3_scale(ob[:, None] + 96, j, m2).to(tl.float32)
        l = tl.minimum(tl.maximum(nearest_int(tl.math.div_rn(x, d)), -4), 3) + 4
        if HAS_QW:
            s = qx_code(x, pa, pb.to(tl.int32), 4)
        else:  # make_q3_quants' codes: 4-bit field e % 16 of the sub-block's int64
            Lp = tl.load(lp_ptr + sub0[:, None] + j)
            s = ((Lp >> (4 * (e & 15)).to(tl.int64)) & 15).to(tl.int32)
    elif T == Q4_K or T == Q5_K:
        NMAX: tl.constexpr = 15 if T == Q4_K else 31
        sc, mn = scale_min_k4(ob[:, None] + 4, j, m2)
        d = dd[:, None] * sc.to(tl.float32)
        dm = dmin[:, None] * mn.to(tl.float32)
        l = tl.minimum(tl.maximum(nearest_int(tl.math.div_rn(x + dm, d)), 0), NMAX)
        s = qkx_code(x, pa, pb, NMAX)
    else:  # Q6_K
        d = dd[:, None] * sext8(ld_u8(ob[:, None] + 192 + j, m2)).to(tl.float32)
        l = tl.minimum(tl.maximum(nearest_int(tl.math.div_rn(x, d)), -32), 31) + 32
        s = qx_code(x, pa, pb.to(tl.int32), 32)
    return tl.where(d == 0, s, l)


@triton.jit
def _codes_kernel(x_ptr, scr_ptr, lp_ptr, out_ptr, n_sb, n_sub, nb, K, RB, T: tl.constexpr, HAS_QW: tl.constexpr,
                  TS: tl.constexpr, NS: tl.constexpr, BLOCK: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    bi = blk - row * nb
    xp = x_ptr + row * K + bi * 256
    ob = out_ptr + row * RB + bi * TS
    m2 = m[:, None]
    sub0 = blk * NS
    l32 = tl.arange(0, 32)[None, :]
    fz = tl.zeros_like(tl.load(xp))
    if T == Q8_K:  # d = 1/iscale (float32), codes MIN(127, nearest_int(-127/max * x)), int16 sums per 16
        amax, mx = tile_signed_absmax(tl.load(xp[:, None] + tl.arange(0, 256)[None, :]),
                                      tl.arange(0, 256)[None, :], 256)
        ok = amax != 0  # an all-zero block stays all zero
        iscale = tl.math.div_rn(fz - 127.0, mx)
        ok2 = m2 & ok[:, None]
        j16 = tl.arange(0, 16)[None, :]
        for g in tl.static_range(16):
            q = tl.minimum(nearest_int(iscale[:, None] * tl.load(xp[:, None] + 16 * g + j16)), 127)
            st_u8(ob[:, None] + 4 + 16 * g + j16, q, ok2)
            s = tl.sum(sext8(q), axis=1)  # an integer sum (|s| <= 2048): exact in any order
            st_u16(ob + 260 + 2 * g, s, m & ok)
        d = f32_bits(tl.math.div_rn(fz + 1.0, iscale))
        for k in tl.static_range(4):
            st_u8(ob + k, d >> (8 * k), m & ok)
    else:
        if T == Q2_K:
            dd = ld_f16(ob + 80, m)
            dmin = ld_f16(ob + 82, m)
        elif T == Q3_K:
            dd = ld_f16(ob + 108, m)
            dmin = fz
        elif T == Q6_K:
            dd = ld_f16(ob + 208, m)
            dmin = fz
        else:
            dd = ld_f16(ob, m)
            dmin = ld_f16(ob + 2, m)
        if T == Q2_K:  # byte 16 + 32h + l: elements 128h + 32s + l at bits 2s
            for h in tl.static_range(2):
                q = tl.zeros([BLOCK, 32], tl.int32)
                for s in tl.static_range(4):
                    q |= _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 128 * h + 32 * s + l32, dd, dmin, m2, T, HAS_QW) << (2 * s)
                st_u8(ob[:, None] + 16 + 32 * h + l32, q, m2)
        elif T == Q3_K:  # hmask[l]: bit k = high bit of element 32k + l; low 2 bits as Q2_K at 32
            hm = tl.zeros([BLOCK, 32], tl.int32)
            q0 = tl.zeros([BLOCK, 32], tl.int32)
            q1 = tl.zeros([BLOCK, 32], tl.int32)
            for k in tl.static_range(8):
                c = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 32 * k + l32, dd, dmin, m2, T, HAS_QW)
                hm |= (c >> 2) << k  # codes 0..7: c > 3 is bit 2, and c - 4 is c & 3
                if k < 4:
                    q0 |= (c & 3) << (2 * k)
                else:
                    q1 |= (c & 3) << (2 * (k - 4))
            st_u8(ob[:, None] + l32, hm, m2)
            st_u8(ob[:, None] + 32 + l32, q0, m2)
            st_u8(ob[:, None] + 64 + l32, q1, m2)
        elif T == Q4_K:  # byte 16 + 32c + l: element 64c + l low nibble, 64c + 32 + l high
            for c in tl.static_range(4):
                lo = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 64 * c + l32, dd, dmin, m2, T, HAS_QW)
                hi = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 64 * c + 32 + l32, dd, dmin, m2, T, HAS_QW)
                st_u8(ob[:, None] + 16 + 32 * c + l32, lo | (hi << 4), m2)
        elif T == Q5_K:  # low nibbles as Q4_K at 48; the fifth bits at 2c, 2c + 1 of qh[l] (at 16)
            qh = tl.zeros([BLOCK, 32], tl.int32)
            for c in tl.static_range(4):
                lo = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 64 * c + l32, dd, dmin, m2, T, HAS_QW)
                hi = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 64 * c + 32 + l32, dd, dmin, m2, T, HAS_QW)
                qh |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1))
                st_u8(ob[:, None] + 48 + 32 * c + l32, (lo & 0xF) | ((hi & 0xF) << 4), m2)
            st_u8(ob[:, None] + 16 + l32, qh, m2)
        else:  # Q6_K: element 128h + 32t + l: low nibble in ql[64h + 32(t&1) + l] (high half for t >= 2),
            # two high bits at 2t of qh[32h + l]; nothing is written for an all-zero block
            amax, max_scale = signed_absmax(scr_ptr + SC * n_sub + sub0, 16)
            okm = m2 & (amax >= GROUP_MAX_EPS)[:, None]
            for h in tl.static_range(2):
                c0 = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 128 * h + l32, dd, dmin, m2, T, HAS_QW)
                c1 = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 128 * h + 32 + l32, dd, dmin, m2, T, HAS_QW)
                c2 = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 128 * h + 64 + l32, dd, dmin, m2, T, HAS_QW)
                c3 = _code(xp, ob, scr_ptr, lp_ptr, n_sub, sub0, 128 * h + 96 + l32, dd, dmin, m2, T, HAS_QW)
                st_u8(ob[:, None] + 64 * h + l32, (c0 & 0xF) | ((c2 & 0xF) << 4), okm)
                st_u8(ob[:, None] + 64 * h + 32 + l32, (c1 & 0xF) | ((c3 & 0xF) << 4), okm)
                st_u8(ob[:, None] + 128 + 32 * h + l32, (c0 >> 4) | ((c1 >> 4) << 2) | ((c2 >> 4) << 4) | ((c3 >> 4) << 6), okm)


@kernel("gguf_kquants", "gpu", "encode")
def encode(codec_id: str, x: torch.Tensor, qw: torch.Tensor | None, out: torch.Tensor) -> None:
    """float32 rows ``x[n, K]`` -> ``out[n, K/256*type_size]``; see lowbit.kernels.cpu.gguf_kquants."""
    t = _IDS[codec_id]
    rows, K = x.shape
    ts = int(_TS[t])
    x = x.contiguous()
    has_qw = qw is not None and t != 5  # Q8_K ignores importance, as ggml does
    qwt = qw.to(x.device).contiguous() if has_qw else x
    dev = x.device
    nb = K // 256
    n_sb = rows * nb
    RB = out.shape[1]
    if t != 5:
        sbs = 32 if t in (2, 3) else 16
        ns = 256 // sbs
        n_sub = n_sb * ns
        ss = sumsq(x, 256) if has_qw else x
        scr = torch.zeros((5, n_sub), dtype=torch.float32, device=dev)
        lp = torch.zeros(n_sub if t == 1 and not has_qw else 1, dtype=torch.int64, device=dev)
        blk = programs_block(n_sub, 16)  # (a lane's candidate tiles are up to 64 wide: few lanes per program)
        _search_kernel[(triton.cdiv(n_sub, blk),)](x, qwt, ss, scr, lp, n_sub, K // sbs, K, T=t, HAS_QW=has_qw,
                                                    SB=sbs, BLOCK=blk, **FP)
        blk = programs_block(n_sb, 64)
        _scales_kernel[(triton.cdiv(n_sb, blk),)](scr, out, n_sb, n_sub, nb, RB, T=t, HAS_QW=has_qw, TS=ts, NS=ns,
                                                   BLOCK=blk, **FP)
    else:
        scr = x
        lp = x
        n_sub = 0
        ns = 1
    blk = programs_block(n_sb, 16 if t == 5 else 32)  # (Q8_K holds a [lanes, 256] tile)
    _codes_kernel[(triton.cdiv(n_sb, blk),)](x, scr, lp, out, n_sb, n_sub, nb, K, RB, T=t, HAS_QW=has_qw, TS=ts,
                                              NS=ns, BLOCK=blk, **FP)
