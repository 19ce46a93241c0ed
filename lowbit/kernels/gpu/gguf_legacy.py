"""Triton kernels of the 32-element, ternary and non-linear GGUF types (family ``gguf_legacy``):
the GPU twins of :mod:`lowbit.kernels.cpu.gguf_legacy`, same entry points and arguments
(``encode(codec_id, x, qw, out)``, ``decode(codec_id, data, out)``), same bytes and bits.

Decoding runs one lane per output element (the element's block fields are re-read from cache);
encoding one lane per block, each lane running ggml's scalar code for its block (IQ4_NL/IQ4_XS:
one lane per 32-element sub-block for the scale search, then the super-block and code passes).
The float rules of :mod:`lowbit.kernels.gpu._ggml` apply throughout.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..cpu.gguf_legacy import _BS, _IDS, _TS, KVALUES_IQ4NL, KVALUES_MXFP4, log2f_thresholds
from ..registry import kernel
from ._ggml import (FP, GROUP_MAX_EPS, W_IMAT, best_index_int8, bits_f32, c_roundf, c_trunc, canon, col, f32_bits,
                    floor_log2, ld_f16, ld_u8, ld_u16, ld_u32, lut, make_qkx_quants, make_qx_quants, nearest_int,
                    programs_block, qkx_code, qx_code, sext8, signed_absmax, st_f16, st_u8, sumsq, tile_first_min,
                    tile_signed_absmax)

Q4_0: tl.constexpr = tl.constexpr(0)
Q4_1: tl.constexpr = tl.constexpr(1)
Q5_0: tl.constexpr = tl.constexpr(2)
Q5_1: tl.constexpr = tl.constexpr(3)
Q8_0: tl.constexpr = tl.constexpr(4)
Q8_1: tl.constexpr = tl.constexpr(5)
MXFP4: tl.constexpr = tl.constexpr(6)
TQ1_0: tl.constexpr = tl.constexpr(7)
TQ2_0: tl.constexpr = tl.constexpr(8)
IQ4_NL: tl.constexpr = tl.constexpr(9)
IQ4_XS: tl.constexpr = tl.constexpr(10)
Q1_0: tl.constexpr = tl.constexpr(11)
Q2_0: tl.constexpr = tl.constexpr(12)
NVFP4: tl.constexpr = tl.constexpr(13)


# ---- small format helpers --------------------------------------------------------------------

@triton.jit
def e8m0_half(e):
    """GGML_E8M0_TO_FP32_HALF: 2**(e - 128) built from bits (a subnormal 0x00200000 << e for e < 2)."""
    return bits_f32(tl.where(e < 2, 0x00200000 << tl.minimum(e, 1), (e - 1) << 23))


@triton.jit
def ue4m3_half(u):
    """ggml_ue4m3_to_fp32 times 0.5: exponent field ex = bits 3..6 (bit 7 ignored, as in ggml),
    mantissa man = bits 0..2; ex = 0 is man * 2**-10 (exact), else the float32 with exponent
    ex - 7 - 1 and man in the top mantissa bits; the bytes 0 and 0x7F give 0."""
    ex = (u >> 3) & 0xF
    man = u & 7
    sub = man.to(tl.float32) * 0.0009765625
    nrm = bits_f32(((ex - 7 + 127 - 1) << 23) | (man << 20))
    v = tl.where(ex == 0, sub, nrm)
    return tl.where((u == 0) | (u == 0x7F), 0.0, v)


@triton.jit
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3 (NVFP4's sub-block scale): keep 3 mantissa bits and add the next one
    (round half up; a carry out of the mantissa bumps the exponent), saturate at 448 (0x7E);
    below the normal range (int)(x*512 + 0.5f), at most 7; non-positive and NaN give 0."""
    pos = x > 0
    x = tl.where(x > 448.0, 448.0, x)
    bits = f32_bits(x)
    ex = ((bits >> 23) & 0xFF) - 127 + 7
    mans = tl.minimum(c_trunc(x * 512.0 + 0.5), 7)
    rs = tl.where(mans < 1, 0, mans)
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    carry = man > 7
    man = tl.where(carry, 0, man)
    ex2 = tl.where(carry, ex + 1, ex)
    rn = tl.where(ex2 >= 15, 0x7E, (ex2 << 3) | man)
    rn = tl.where(ex >= 15, 0x7E, rn)
    r = tl.where(ex <= 0, rs, rn)
    return tl.where(pos, r, 0)


@triton.jit
def best_index_mxfp4(x, d, kv_ptr):
    """Index of the nearest of the 16 values kv[i]*d (|kv[i]*d - x|, strict <: lowest index wins)."""
    best = tl.zeros_like(f32_bits(x))
    best_err = tl.abs(tl.load(kv_ptr) * d - x)
    for i in tl.static_range(1, 16):
        err = tl.abs(tl.load(kv_ptr + i) * d - x)
        up = err < best_err
        best = tl.where(up, i, best)
        best_err = tl.where(up, err, best_err)
    return best


@triton.jit
def _nib(q, hi):
    """The high nibble of byte q where ``hi``, else the low one."""
    return tl.where(hi, q >> 4, q & 0xF)


@triton.jit
def _pow3(n):
    """3**n for n in 0..4."""
    return tl.where(n == 0, 1, tl.where(n == 1, 3, tl.where(n == 2, 9, tl.where(n == 3, 27, 81))))


# ---- decode: one lane per element -------------------------------------------------------------

@triton.jit
def _decode_kernel(data_ptr, out_ptr, kv_ptr, n, K, RB, T: tl.constexpr, BS: tl.constexpr, TS: tl.constexpr,
                   BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = e < n
    e = tl.where(m, e, 0)
    row = e // K
    col = e - row * K
    blk = col // BS
    j = (col - blk * BS).to(tl.int32)  # position in the block
    b = data_ptr + row * RB + blk * TS  # the block's first byte
    if T == Q4_0:  # element j in the low nibble of qs[j % 16] (j < 16) or the high one; (q - 8) * d
        q = _nib(ld_u8(b + 2 + (j & 15), m), j >= 16)
        y = (q - 8).to(tl.float32) * ld_f16(b, m)
    elif T == Q4_1:  # q * d + m (product, then sum: two roundings)
        q = _nib(ld_u8(b + 4 + (j & 15), m), j >= 16)
        y = q.to(tl.float32) * ld_f16(b, m) + ld_f16(b + 2, m)
    elif T == Q5_0 or T == Q5_1:  # fifth bit j of the little-endian u32 qh
        OH: tl.constexpr = 2 if T == Q5_0 else 4
        qh = ld_u32(b + OH, m)
        q = _nib(ld_u8(b + OH + 4 + (j & 15), m), j >= 16) | (((qh >> j) & 1) << 4)
        if T == Q5_0:
            y = (q - 16).to(tl.float32) * ld_f16(b, m)
        else:
            y = q.to(tl.float32) * ld_f16(b, m) + ld_f16(b + 2, m)
    elif T == Q8_0 or T == Q8_1:
        OQ: tl.constexpr = 2 if T == Q8_0 else 4
        y = sext8(ld_u8(b + OQ + j, m)).to(tl.float32) * ld_f16(b, m)
    elif T == MXFP4:
        q = _nib(ld_u8(b + 1 + (j & 15), m), j >= 16)
        y = tl.load(kv_ptr + q) * e8m0_half(ld_u8(b, m))
    elif T == TQ1_0:
        # bytes 0..31: element 32n + m; bytes 32..47: 160 + 16n + m; qh 48..51: 240 + 4n + m;
        # trit n of byte q is ((q * 3**n mod 256) * 3) >> 8 (the byte is a base-3 fraction)
        j2 = j - 160
        j3 = j - 240
        off = tl.where(j < 160, j & 31, tl.where(j < 240, 32 + (j2 & 15), 48 + (j3 & 3)))
        nn = tl.where(j < 160, j >> 5, tl.where(j < 240, j2 >> 4, j3 >> 2))
        q = (ld_u8(b + off, m) * _pow3(nn)) & 0xFF
        y = (((q * 3) >> 8) - 1).to(tl.float32) * ld_f16(b + 52, m)
    elif T == TQ2_0:  # element 128h + 32n + m in bits 2n of qs[32h + m]
        h = j >> 7
        r = j & 127
        q = (ld_u8(b + 32 * h + (r & 31), m) >> (2 * (r >> 5))) & 3
        y = (q - 1).to(tl.float32) * ld_f16(b + 64, m)
    elif T == IQ4_NL:
        q = _nib(ld_u8(b + 2 + (j & 15), m), j >= 16)
        y = ld_f16(b, m) * tl.load(kv_ptr + q)
    elif T == IQ4_XS:  # 6-bit sub-scale: low nibble in scales_l, 2 high bits in scales_h
        ib = j >> 5
        sh = ld_u16(b + 2, m)
        ls = ((ld_u8(b + 4 + (ib >> 1), m) >> (4 * (ib & 1))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
        dl = ld_f16(b, m) * (ls - 32).to(tl.float32)
        jj = j & 31
        q = _nib(ld_u8(b + 8 + 16 * ib + (jj & 15), m), jj >= 16)
        y = dl * tl.load(kv_ptr + q)
    elif T == Q1_0:  # bit j: set -> +d, clear -> -d
        d = ld_f16(b, m)
        bit = (ld_u8(b + 2 + (j >> 3), m) >> (j & 7)) & 1
        y = tl.where(bit != 0, d, -d)
    elif T == Q2_0:  # element j in bits 2(j%4) of qs[j/4]; (q - 1) * d
        q = (ld_u8(b + 2 + (j >> 2), m) >> (2 * (j & 3))) & 3
        y = (q - 1).to(tl.float32) * ld_f16(b, m)
    else:  # NVFP4: 4 sub-blocks of 16 (UE4M3 scale each); within one, j low nibble, j + 8 high
        s = j >> 4
        jj = j & 15
        q = _nib(ld_u8(b + 4 + 8 * s + (jj & 7), m), jj >= 8)
        y = tl.load(kv_ptr + q) * ue4m3_half(ld_u8(b + s, m))
    tl.store(out_ptr + e, canon(y), mask=m)


# ---- encode: one lane per block ----------------------------------------------------------------

@triton.jit
def _row(p, n: tl.constexpr):
    """Pointers p[:, None] + 0..n-1: a [lanes, n] tile of consecutive elements per lane."""
    return p[:, None] + tl.arange(0, n)[None, :]


@triton.jit
def _q5_qh(L0, L1):
    """Q5_x's qh as two 16-bit halves (lo, hi): bit j of lo is the fifth bit of L0[:, j], bit j of
    hi that of L1[:, j]. The bits are disjoint, so an integer sum is their OR, and each half stays
    below 2**16 (no int32 wrap-around, which the interpreter would not reproduce)."""
    jj = tl.arange(0, 16)[None, :]
    lo = tl.sum(((L0 >> 4) & 1) << jj, axis=1)
    hi = tl.sum(((L1 >> 4) & 1) << jj, axis=1)
    return lo, hi


@triton.jit
def _st_qh(ob, lo, hi, m):
    st_u8(ob, lo, m)
    st_u8(ob + 1, lo >> 8, m)
    st_u8(ob + 2, hi, m)
    st_u8(ob + 3, hi >> 8, m)


@triton.jit
def _encode_kernel(x_ptr, qw_ptr, ss_ptr, out_ptr, kv_ptr, thr_ptr, n_blocks, nb, K, RB, T: tl.constexpr,
                   BS: tl.constexpr, HAS_QW: tl.constexpr, TS: tl.constexpr, BLOCK: tl.constexpr):
    """One lane per block. Element-wise steps run on [lanes, n] tiles of the block's elements;
    float sums stay sequential loops; maxima/minima use the order-free tile reductions of
    :mod:`._ggml` (exact, first element on ties as in C)."""
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_blocks
    blk = tl.where(m, blk, 0)  # masked lanes redo block 0 (in bounds); only stores are masked
    row = blk // nb
    bi = blk - row * nb
    xp = x_ptr + row * K + bi * BS
    qp = qw_ptr + bi * BS
    ob = out_ptr + row * RB + bi * TS
    m2 = m[:, None]
    x0 = tl.load(xp)
    fz = tl.zeros_like(x0)
    j16 = tl.arange(0, 16)[None, :]
    if BS == 32:
        x32 = tl.load(_row(xp, 32))
        xa = tl.load(_row(xp, 16))       # elements 0..15 (the low nibbles)
        xb = tl.load(_row(xp + 16, 16))  # elements 16..31 (the high nibbles)
    if T == Q4_0 or T == Q5_0:
        HALF: tl.constexpr = 8 if T == Q4_0 else 16
        if HAS_QW:  # quantize_row_q{4,5}_0_impl: sigma2 = mean square of the whole row
            sigma2 = tl.math.div_rn(tl.load(ss_ptr + row), fz + K)
            d, pick, off = make_qx_quants(xp, qp, sigma2, 32, HALF, W_IMAT)
            L0 = qx_code(xa, pick[:, None], off[:, None], HALF)
            L1 = qx_code(xb, pick[:, None], off[:, None], HALF)
        else:  # quantize_row_q{4,5}_0_ref: d = max/-HALF, codes MIN(2*HALF-1, (int8_t)(x*id + HALF + 0.5f))
            amax, mx = tile_signed_absmax(x32, tl.arange(0, 32)[None, :], 32)
            d = tl.math.div_rn(mx, fz - HALF)
            idd = tl.where(d != 0, tl.math.div_rn(fz + 1.0, d), 0.0)[:, None]
            L0 = tl.minimum(sext8(c_trunc(xa * idd + (HALF + 0.5))), 2 * HALF - 1)
            L1 = tl.minimum(sext8(c_trunc(xb * idd + (HALF + 0.5))), 2 * HALF - 1)
        st_f16(ob, d, m)
        if T == Q4_0:
            st_u8(_row(ob + 2, 16), L0 | (L1 << 4), m2)
        else:
            st_u8(_row(ob + 6, 16), (L0 & 0x0F) | ((L1 & 0x0F) << 4), m2)
            lo, hi = _q5_qh(L0, L1)
            _st_qh(ob + 2, lo, hi, m)
    elif T == Q4_1 or T == Q5_1:
        NMAX: tl.constexpr = 15 if T == Q4_1 else 31
        OQS: tl.constexpr = 4 if T == Q4_1 else 8
        if HAS_QW:  # quantize_row_q{4,5}_1_impl: make_qkx3_quants with the row's sigma2
            sigma2 = tl.math.div_rn(tl.load(ss_ptr + row), fz + K)
            d, negmin, l_is, l_mn = make_qkx_quants(xp, qp, sigma2, 32, NMAX, W_IMAT, -0.9, 0.05, 36, False, 3, 64)
            st_f16(ob, d, m)
            st_f16(ob + 2, -negmin, m)
            L0 = qkx_code(xa, l_is[:, None], l_mn[:, None], NMAX)
            L1 = qkx_code(xb, l_is[:, None], l_mn[:, None], NMAX)
        else:  # quantize_row_q{4,5}_1_ref
            i32 = tl.arange(0, 32)[None, :]
            mn = tile_first_min(x32, i32, 32)
            mx = tile_first_min(-x32, i32, 32)
            mx = -mx  # (the first maximum; negation is exact)
            d = tl.math.div_rn(mx - mn, fz + NMAX)
            idd = tl.where(d != 0, tl.math.div_rn(fz + 1.0, d), 0.0)[:, None]
            st_f16(ob, d, m)
            st_f16(ob + 2, mn, m)
            va = c_trunc((xa - mn[:, None]) * idd + 0.5)
            vb = c_trunc((xb - mn[:, None]) * idd + 0.5)
            if T == Q4_1:  # MIN(15, (int8_t)(..))
                L0 = tl.minimum(sext8(va), 15)
                L1 = tl.minimum(sext8(vb), 15)
            else:  # (uint8_t)(..), no clamp
                L0 = va & 0xFF
                L1 = vb & 0xFF
        if T == Q4_1:
            st_u8(_row(ob + OQS, 16), (L0 & 0xFF) | (L1 << 4), m2)
        else:
            st_u8(_row(ob + OQS, 16), (L0 & 0x0F) | ((L1 & 0x0F) << 4), m2)
            lo, hi = _q5_qh(L0, L1)
            _st_qh(ob + 4, lo, hi, m)
    elif T == Q8_0 or T == Q8_1:
        amax = tl.max(tl.abs(x32), axis=1)  # C: MAX(amax, fabsf(v)); a maximum of |x| is order-free
        d = tl.math.div_rn(amax, fz + 127.0)
        idd = tl.where(d != 0, tl.math.div_rn(fz + 1.0, d), 0.0)
        st_f16(ob, d, m)
        OQ: tl.constexpr = 2 if T == Q8_0 else 4
        q8 = sext8(c_roundf(x32 * idd[:, None]))  # roundf, then the int8_t store
        st_u8(_row(ob + OQ, 32), q8, m2)
        if T == Q8_1:
            s = tl.sum(q8, axis=1)  # an integer sum (|s| <= 4096): exact in any order
            st_f16(ob + 2, s.to(tl.float32) * d, m)  # s = fp16(sum * d)
    elif T == MXFP4:
        amax = tl.max(tl.abs(x32), axis=1)
        # e = (uint8)(floorf(log2f(amax)) - 2 + 127): floor(log2) from the bits (subnormals from
        # the highest set bit), + 1 where libm's log2f rounds up to the next integer (thresholds)
        a = f32_bits(amax)
        e32 = a >> 23
        E = tl.where(e32 == 0, floor_log2(tl.maximum(a, 1)) - 149, e32 - 127)
        E = tl.where(a >= tl.load(thr_ptr + E + 149), E + 1, E)
        e = tl.where(amax > 0, (E - 2 + 127) & 0xFF, 0)
        d = e8m0_half(e)[:, None]
        st_u8(ob, e, m)
        st_u8(_row(ob + 1, 16), best_index_mxfp4(xa, d, kv_ptr) | (best_index_mxfp4(xb, d, kv_ptr) << 4), m2)
    elif T == TQ1_0 or T == TQ2_0:  # d = amax, trits lroundf(x/d) + 1
        amax = tl.max(tl.abs(tl.load(_row(xp, 256))), axis=1)
        idd = tl.where(amax != 0, tl.math.div_rn(fz + 1.0, amax), 0.0)[:, None]
        if T == TQ2_0:
            st_f16(ob + 64, amax, m)
            for h in tl.static_range(2):  # byte 32h + mm: elements 128h + mm + 32n at bits 2n
                q = tl.zeros([BLOCK, 32], tl.int32)
                for n in tl.static_range(4):
                    t = c_roundf(tl.load(_row(xp + 128 * h + 32 * n, 32)) * idd) + 1
                    q += (t & 3) << (2 * n)
                st_u8(_row(ob + 32 * h, 32), q, m2)
        else:
            st_f16(ob + 52, amax, m)
            # 5 trits per byte, the first most significant (C's uint8_t q*3 + t wraps), stored as
            # the fraction ceil(q * 256 / 243)
            q = tl.zeros([BLOCK, 32], tl.int32)
            for n in tl.static_range(5):  # bytes 0..31: elements mm + 32n
                q = (q * 3 + c_roundf(tl.load(_row(xp + 32 * n, 32)) * idd) + 1) & 0xFF
            st_u8(_row(ob, 32), (q * 256 + 242) // 243, m2)
            q = tl.zeros([BLOCK, 16], tl.int32)
            for n in tl.static_range(5):  # bytes 32..47: elements 160 + mm + 16n
                q = (q * 3 + c_roundf(tl.load(_row(xp + 160 + 16 * n, 16)) * idd) + 1) & 0xFF
            st_u8(_row(ob + 32, 16), (q * 256 + 242) // 243, m2)
            q = tl.zeros([BLOCK, 4], tl.int32)
            for n in tl.static_range(4):  # qh: elements 240 + j + 4n, four trits moved up by one more x3
                q = (q * 3 + c_roundf(tl.load(_row(xp + 240 + 4 * n, 4)) * idd) + 1) & 0xFF
            q = (q * 3) & 0xFF
            st_u8(_row(ob + 48, 4), (q * 256 + 242) // 243, m2)
    elif T == Q1_0:  # d = mean |x| (sequential sum), bit set for x >= 0
        sa = fz
        for j in range(128):
            sa += tl.abs(tl.load(xp + j))
        st_f16(ob, tl.math.div_rn(sa, fz + 128.0), m)
        v = tl.zeros([BLOCK, 16], tl.int32)
        for k in tl.static_range(8):  # byte j: elements 8j + k at bit k
            v |= (tl.load(xp[:, None] + 8 * j16 + k) >= 0).to(tl.int32) << k
        st_u8(_row(ob + 2, 16), v, m2)
    elif T == Q2_0:  # d = amax; q = clamp(roundf(x/d) + 1, 0, 3), four per byte, LSB first
        amax = tl.max(tl.abs(tl.load(_row(xp, 64))), axis=1)
        idd = tl.where(amax > 0, tl.math.div_rn(fz + 1.0, amax), 0.0)[:, None]
        st_f16(ob, amax, m)
        v = tl.zeros([BLOCK, 16], tl.int32)
        for k in tl.static_range(4):  # byte j: elements 4j + k at bits 2k
            q = tl.minimum(tl.maximum(c_roundf(tl.load(xp[:, None] + 4 * j16 + k) * idd) + 1, 0), 3)
            v |= q << (2 * k)
        st_u8(_row(ob + 2, 16), v, m2)
    else:  # NVFP4: per 16 elements a UE4M3 scale of amax/6, E2M1 codes by nearest value
        for s in tl.static_range(4):
            amax = tl.max(tl.abs(tl.load(_row(xp + 16 * s, 16))), axis=1)
            u = fp32_to_ue4m3(tl.math.div_rn(amax, fz + 6.0))
            st_u8(ob + s, u, m)
            d = ue4m3_half(u)[:, None]
            x_lo = best_index_mxfp4(tl.load(_row(xp + 16 * s, 8)), d, kv_ptr)
            x_hi = best_index_mxfp4(tl.load(_row(xp + 16 * s + 8, 8)), d, kv_ptr)
            st_u8(_row(ob + 4 + 8 * s, 8), x_lo | (x_hi << 4), m2)


# ---- IQ4_NL / IQ4_XS (ggml quantize_row_iq4_nl_impl, ntry = 7: the chunk path) -----------------

@triton.jit
def _iq4_codes(xp, ob, idd, kv_ptr, m):
    """16 bytes of codes of 32 elements: element j low nibble, j + 16 high ([lanes, 16] tiles)."""
    lo = best_index_int8(kv_ptr, idd[:, None] * tl.load(_row(xp, 16)))
    hi = best_index_int8(kv_ptr, idd[:, None] * tl.load(_row(xp + 16, 16)))
    st_u8(_row(ob, 16), lo | (hi << 4), m[:, None])


@triton.jit
def _iq4_search_kernel(x_ptr, qw_ptr, ss_ptr, out_ptr, sc_ptr, kv_ptr, n_sub, nsr, K, RB, XS: tl.constexpr,
                       HAS_QW: tl.constexpr, BLOCK: tl.constexpr):
    """One lane per 32-element sub-block: ggml's 15-step scale search. IQ4_NL (one sub-block per
    block) also writes its block; IQ4_XS leaves the scale in sc_ptr for the super-block pass."""
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    row = sb // nsr
    si = sb - row * nsr
    xp = x_ptr + row * K + si * 32
    qp = qw_ptr + si * 32
    fz = tl.zeros_like(tl.load(xp))
    if HAS_QW:  # sigma2 = 2/sbs * sum of x**2 over the super-block (32 or 256 elements)
        SBS: tl.constexpr = 256 if XS else 32
        TWO_OVER_SBS: tl.constexpr = 0.0078125 if XS else 0.0625  # 2/256, 2/32: exact powers of two, as the C's 2.0f/sbs
        sigma2 = tl.load(ss_ptr + (row * K + si * 32) // SBS) * TWO_OVER_SBS
    else:
        sigma2 = fz
    amax, mx = tile_signed_absmax(tl.load(_row(xp, 32)), tl.arange(0, 32)[None, :], 32)
    # the 16 trial scales side by side (see _ggml.col): candidate 0 is 1/d with d = -max/values[0],
    # candidate c = 1..15 is ggml's itry = c - 8: id = (itry + values[0])/max (an int sum, then
    # converted); values[0] = -127
    cidx = tl.arange(0, 16)[None, :]
    zt = fz[:, None] + tl.zeros([1, 16], tl.float32)
    mxt = mx[:, None] + zt
    idt = tl.math.div_rn((cidx - 8 - 127).to(tl.float32) + zt, mxt)
    id0 = tl.math.div_rn(zt + 1.0, tl.math.div_rn(-mxt, zt + tl.load(kv_ptr)))
    idt = tl.where(cidx == 0, id0, idt)
    sumqx = zt
    sumq2 = zt
    for j in range(32):
        xj = tl.load(xp + j)
        if HAS_QW:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
            w = tl.load(qp + j) * tl.math.sqrt_rn(sigma2 + xj * xj)
        else:
            w = xj * xj
        q = tl.load(kv_ptr + best_index_int8(kv_ptr, idt * xj[:, None]))
        sumqx += (w[:, None] * q) * xj[:, None]  # C: sumqx += w*q*xb[j]
        sumq2 += (w[:, None] * q) * q
    sx = col(sumqx, cidx, 0)
    s2 = col(sumq2, cidx, 0)
    d = tl.where(s2 > 0, tl.math.div_rn(sx, s2), 0.0)
    best = d * sx
    for c in tl.static_range(1, 16):  # a strict improvement, in ggml's order
        sx = col(sumqx, cidx, c)
        s2 = col(sumq2, cidx, c)
        acc = (s2 > 0) & (sx * sx > best * s2)
        d_new = tl.math.div_rn(sx, s2)
        d = tl.where(acc, d_new, d)
        best = tl.where(acc, d_new * sx, best)
    d = tl.where(amax < GROUP_MAX_EPS, 0.0, d)
    if XS:
        tl.store(sc_ptr + sb, d, mask=m)
    else:
        ob = out_ptr + row * RB + si * 18
        st_f16(ob, d, m)
        _iq4_codes(xp, ob + 2, tl.where(d != 0, tl.math.div_rn(fz + 1.0, d), 0.0), kv_ptr, m)


@triton.jit
def _iq4xs_super_kernel(sc_ptr, out_ptr, idl_ptr, n_sb, nb, RB, BLOCK: tl.constexpr):
    """One lane per IQ4_XS super-block: d = -max_scale/32 (the sub-scale of largest |.|, first on
    ties), the 6-bit sub-scales l = clamp(nearest_int(scale/d), -32, 31) + 32 (low nibbles in
    scales_l, two high bits each in scales_h), and 1/(d*(l-32)) per sub-block for the codes."""
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    ob = out_ptr + row * RB + (blk - row * nb) * 136
    amax, max_scale = signed_absmax(sc_ptr + blk * 8, 8)
    fz = tl.zeros_like(amax)
    d = tl.math.div_rn(-max_scale, fz + 32.0)
    st_f16(ob, d, m)
    idd = tl.where(d != 0, tl.math.div_rn(fz + 1.0, d), 0.0)
    sh = tl.zeros_like(f32_bits(d))
    low = sh
    for ib in tl.static_range(8):
        l = tl.minimum(tl.maximum(nearest_int(idd * tl.load(sc_ptr + blk * 8 + ib)), -32), 31)
        dl = d * l.to(tl.float32)
        tl.store(idl_ptr + blk * 8 + ib, tl.where(dl != 0, tl.math.div_rn(fz + 1.0, dl), 0.0), mask=m)
        l += 32
        if ib % 2 == 0:
            low = l & 0xF
        else:
            st_u8(ob + 4 + ib // 2, low | ((l & 0xF) << 4), m)
        sh |= (l >> 4) << (2 * ib)
    st_u8(ob + 2, sh, m)
    st_u8(ob + 3, sh >> 8, m)


@triton.jit
def _iq4xs_codes_kernel(x_ptr, idl_ptr, out_ptr, kv_ptr, n_sub, nsr, K, RB, BLOCK: tl.constexpr):
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    row = sb // nsr
    si = sb - row * nsr
    ob = out_ptr + row * RB + (si // 8) * 136 + 8 + 16 * (si % 8)
    _iq4_codes(x_ptr + row * K + si * 32, ob, tl.load(idl_ptr + sb), kv_ptr, m)


# ---- launchers ---------------------------------------------------------------------------------

def _kv(name: str, device: torch.device) -> torch.Tensor:
    table = KVALUES_IQ4NL if name == "iq4nl" else KVALUES_MXFP4
    return lut(f"kv_{name}", device, lambda: table.astype(np.float32))


def _kv_for(t: int, device: torch.device) -> torch.Tensor:
    return _kv("iq4nl" if t in (9, 10) else "mxfp4", device)


@kernel("gguf_legacy", "gpu", "encode")
def encode(codec_id: str, x: torch.Tensor, qw: torch.Tensor | None, out: torch.Tensor) -> None:
    """float32 rows ``x[n, K]`` -> ``out[n, K/bs*type_size]``; see lowbit.kernels.cpu.gguf_legacy."""
    t = _IDS[codec_id]
    rows, K = x.shape
    bs, ts = int(_BS[t]), int(_TS[t])
    x = x.contiguous()
    has_qw = qw is not None and t in (0, 1, 2, 3, 9, 10)  # the others ignore importance, as ggml does
    qwt = qw.to(x.device).contiguous() if has_qw else x
    dev = x.device
    if t in (9, 10):  # IQ4_NL / IQ4_XS
        n_sub = rows * K // 32
        ss = sumsq(x, 256 if t == 10 else 32) if has_qw else x
        sc = torch.empty(n_sub, dtype=torch.float32, device=dev)
        kv = _kv("iq4nl", dev)
        blk = programs_block(n_sub, 64)
        _iq4_search_kernel[(triton.cdiv(n_sub, blk),)](x, qwt, ss, out, sc, kv, n_sub, K // 32, K, out.shape[1],
                                                        XS=t == 10, HAS_QW=has_qw, BLOCK=blk, **FP)
        if t == 10:
            n_sb = n_sub // 8
            idl = torch.empty(n_sub, dtype=torch.float32, device=dev)
            blk = programs_block(n_sb, 128)
            _iq4xs_super_kernel[(triton.cdiv(n_sb, blk),)](sc, out, idl, n_sb, K // 256, out.shape[1], BLOCK=blk, **FP)
            blk = programs_block(n_sub, 128)
            _iq4xs_codes_kernel[(triton.cdiv(n_sub, blk),)](x, idl, out, kv, n_sub, K // 32, K, out.shape[1],
                                                             BLOCK=blk, **FP)
        return
    n_blocks = rows * (K // bs)
    ss = sumsq(x, K) if has_qw else x  # Q4_0..Q5_1 imatrix: the whole row's sum of squares
    thr = lut("mxfp4_log2f", dev, lambda: log2f_thresholds().astype(np.int32))
    blk = programs_block(n_blocks, 16 if has_qw or t in (7, 8) else 64)  # (imatrix searches, TQ: wide tiles)
    _encode_kernel[(triton.cdiv(n_blocks, blk),)](x, qwt, ss, out, _kv_for(t, dev), thr, n_blocks, K // bs, K,
                                                   out.shape[1], T=t, BS=bs, HAS_QW=has_qw, TS=ts, BLOCK=blk, **FP)


@kernel("gguf_legacy", "gpu", "decode")
def decode(codec_id: str, data: torch.Tensor, out: torch.Tensor) -> None:
    """``data[n, row_bytes]`` -> float32 ``out[n, K]``; see lowbit.kernels.cpu.gguf_legacy."""
    t = _IDS[codec_id]
    rows, K = out.shape
    n = rows * K
    blk = programs_block(n, 1024, 1 << 16)
    _decode_kernel[(triton.cdiv(n, blk),)](data.contiguous(), out, _kv_for(t, data.device), n, K, data.shape[1],
                                           T=t, BS=int(_BS[t]), TS=int(_TS[t]), BLOCK=blk, **FP)
