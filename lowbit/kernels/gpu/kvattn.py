"""Triton kernels of attention on compressed KV (family ``kvattn``): the GPU twins of
:mod:`lowbit.kernels.cpu.kvattn` (same entry points; float32 results within rounding of
decode-then-matmul). Scores: one program per (batch, tile of BN keys) decodes the tile into
registers once and reduces it against every query. Weighted sums: one program per
(batch, query) streams the keys in tiles and accumulates Σ p·v in registers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..registry import interpreting, kernel
from ._kvcommon import f16_to_f32, load_field, load_u16


def _bn(n: int) -> int:
    if interpreting():
        return max(2, min(256, triton.next_power_of_2(max(n, 1))))
    return 64


@triton.jit
def _inst_tile(data_ptr, rowbase, kmask, cols, cmask, gcol, mult, ccol, C_ptr, W: tl.constexpr):
    g = mult * f16_to_f32(load_u16(data_ptr, rowbase, gcol, kmask))
    m2 = kmask[:, None] & cmask[None, :]
    code = load_field(data_ptr, rowbase[:, None], ccol, cols[None, :], W, m2)
    return g, tl.load(C_ptr + code, mask=m2, other=0.0)


@triton.jit
def _inst_scores_kernel(q_ptr, data_ptr, gcol, mult, ccol, C_ptr, out_ptr, M, N, D, row_bytes,
                        W: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    keys = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    kmask = keys < N
    cols = tl.arange(0, DP)
    cmask = cols < D
    g, v = _inst_tile(data_ptr, (b * N + keys) * row_bytes, kmask, cols, cmask, gcol, mult, ccol, C_ptr, W)
    for m in range(M):
        qr = tl.load(q_ptr + (b * M + m) * D + cols, mask=cmask, other=0.0)
        s = tl.sum(v * qr[None, :], axis=1) * g
        o = out_ptr + (b * M + m) * N + keys
        tl.store(o, tl.load(o, mask=kmask, other=0.0) + s, mask=kmask)


@kernel("kvattn", "gpu", "inst_scores")
def inst_scores(q, data, gcol, mult, ccol, W, C, out) -> None:
    B, M, D = q.shape
    N = data.shape[1]
    if B * M * N == 0:
        return
    bn = _bn(N)
    _inst_scores_kernel[(B, triton.cdiv(N, bn))](q, data, gcol, float(mult), ccol, C, out, M, N, D, data.shape[2],
                                                 W=W, BN=bn, DP=triton.next_power_of_2(D))


@triton.jit
def _inst_wsum_kernel(p_ptr, data_ptr, gcol, mult, ccol, C_ptr, out_ptr, M, N, D, row_bytes,
                      W: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    m = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, DP)
    cmask = cols < D
    acc = tl.zeros([DP], dtype=tl.float32)
    for n0 in range(0, N, BN):
        keys = n0 + tl.arange(0, BN)
        kmask = keys < N
        g, v = _inst_tile(data_ptr, (b * N + keys) * row_bytes, kmask, cols, cmask, gcol, mult, ccol, C_ptr, W)
        pw = tl.load(p_ptr + (b * M + m) * N + keys, mask=kmask, other=0.0)
        acc += tl.sum((pw * g)[:, None] * v, axis=0)
    o = out_ptr + (b * M + m) * D + cols
    tl.store(o, tl.load(o, mask=cmask, other=0.0) + acc, mask=cmask)


@kernel("kvattn", "gpu", "inst_wsum")
def inst_wsum(p, data, gcol, mult, ccol, W, C, out) -> None:
    B, M, N = p.shape
    D = out.shape[2]
    if B * M * N == 0:
        return
    bn = _bn(N)
    _inst_wsum_kernel[(B, M)](p, data, gcol, float(mult), ccol, C, out, M, N, D, data.shape[2],
                              W=W, BN=bn, DP=triton.next_power_of_2(D))


@triton.jit
def _oct_tile(data_ptr, rowbase, kmask, gi, G, G3, W: tl.constexpr, BX: tl.constexpr, BE: tl.constexpr,
              REM: tl.constexpr, Cr, DIR3, Cr2, DIR2, C1):
    """γ [BN] and the three slot-major components [BN, GP] of the keys' reconstructions."""
    NE: tl.constexpr = 1 << BE
    m2 = kmask[:, None] & (gi < G)[None, :]
    c = load_field(data_ptr, rowbase[:, None], 2, gi[None, :], W, m2)
    ja = c & ((1 << BX) - 1)
    jb = (c >> BX) & (NE - 1)
    jr = c >> (BX + BE)
    full = m2 & (gi < G3)[None, :]
    k = 3 * tl.where(full, ja * NE + jb, 0)
    r = tl.load(Cr + jr, mask=full, other=0.0)
    a0 = r * tl.load(DIR3 + k, mask=full, other=0.0)
    a1 = r * tl.load(DIR3 + k + 1, mask=full, other=0.0)
    a2 = r * tl.load(DIR3 + k + 2, mask=full, other=0.0)
    last = m2 & (gi == G3)[None, :]
    if REM == 2:
        k2 = 2 * tl.where(last, 2 * ja + (jb & 1), 0)
        r2 = tl.load(Cr2 + jr, mask=last, other=0.0)
        a0 = tl.where(last, r2 * tl.load(DIR2 + k2, mask=last, other=0.0), a0)
        a1 = tl.where(last, r2 * tl.load(DIR2 + k2 + 1, mask=last, other=0.0), a1)
    if REM == 1:
        a0 = tl.where(last, tl.load(C1 + ja, mask=last, other=0.0), a0)
    g = f16_to_f32(load_u16(data_ptr, rowbase, 0, kmask))
    return g, a0, a1, a2


@triton.jit
def _oct_scores_kernel(q_ptr, data_ptr, Cr, DIR3, Cr2, DIR2, C1, out_ptr, M, N, G, G3, row_bytes,
                       W: tl.constexpr, BX: tl.constexpr, BE: tl.constexpr, REM: tl.constexpr,
                       BN: tl.constexpr, GP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    keys = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    kmask = keys < N
    gi = tl.arange(0, GP)
    gm = gi < G
    g, a0, a1, a2 = _oct_tile(data_ptr, (b * N + keys) * row_bytes, kmask, gi, G, G3, W, BX, BE, REM,
                              Cr, DIR3, Cr2, DIR2, C1)
    for m in range(M):
        qb = q_ptr + (b * M + m) * 3 * G
        q0 = tl.load(qb + gi, mask=gm, other=0.0)
        q1 = tl.load(qb + G + gi, mask=gm, other=0.0)
        q2 = tl.load(qb + 2 * G + gi, mask=gm, other=0.0)
        s = tl.sum(a0 * q0[None, :] + a1 * q1[None, :] + a2 * q2[None, :], axis=1) * g
        tl.store(out_ptr + (b * M + m) * N + keys, s, mask=kmask)


@kernel("kvattn", "gpu", "oct_scores")
def oct_scores(q, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out) -> None:
    B, M, G3x = q.shape
    N = data.shape[1]
    if B * M * N == 0:
        return
    G = G3x // 3
    bn = _bn(N)
    _oct_scores_kernel[(B, triton.cdiv(N, bn))](q, data, Cr, DIR3, Cr2, DIR2, C1, out, M, N, G, G3, data.shape[2],
                                                W=W, BX=bx, BE=be, REM=rem, BN=bn, GP=triton.next_power_of_2(G))


@triton.jit
def _oct_wsum_kernel(p_ptr, data_ptr, Cr, DIR3, Cr2, DIR2, C1, out_ptr, M, N, G, G3, row_bytes,
                     W: tl.constexpr, BX: tl.constexpr, BE: tl.constexpr, REM: tl.constexpr,
                     BN: tl.constexpr, GP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    m = tl.program_id(1).to(tl.int64)
    gi = tl.arange(0, GP)
    gm = gi < G
    w0 = tl.zeros([GP], dtype=tl.float32)
    w1 = tl.zeros([GP], dtype=tl.float32)
    w2 = tl.zeros([GP], dtype=tl.float32)
    for n0 in range(0, N, BN):
        keys = n0 + tl.arange(0, BN)
        kmask = keys < N
        g, a0, a1, a2 = _oct_tile(data_ptr, (b * N + keys) * row_bytes, kmask, gi, G, G3, W, BX, BE, REM,
                                  Cr, DIR3, Cr2, DIR2, C1)
        c = (tl.load(p_ptr + (b * M + m) * N + keys, mask=kmask, other=0.0) * g)[:, None]
        w0 += tl.sum(c * a0, axis=0)
        w1 += tl.sum(c * a1, axis=0)
        w2 += tl.sum(c * a2, axis=0)
    ob = out_ptr + (b * M + m) * 3 * G
    tl.store(ob + gi, w0, mask=gm)
    tl.store(ob + G + gi, w1, mask=gm)
    tl.store(ob + 2 * G + gi, w2, mask=gm)


@kernel("kvattn", "gpu", "oct_wsum")
def oct_wsum(p, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out) -> None:
    B, M, N = p.shape
    if B * M * N == 0:
        return
    G = out.shape[2] // 3
    bn = _bn(N)
    _oct_wsum_kernel[(B, M)](p, data, Cr, DIR3, Cr2, DIR2, C1, out, M, N, G, G3, data.shape[2],
                             W=W, BX=bx, BE=be, REM=rem, BN=bn, GP=triton.next_power_of_2(G))


@triton.jit
def _bfp_tile(data_ptr, rowbase, kmask, cols, cmask, BLK: tl.constexpr, MB: tl.constexpr):
    """[BN, KP] values code·2**(E−127) of the keys' blocks (NaN for reserved E)."""
    TS: tl.constexpr = 1 + BLK * MB // 8
    kb = cols // BLK
    m2 = kmask[:, None] & cmask[None, :]
    bcol = kb * TS
    E = tl.load(data_ptr + rowbase[:, None] + bcol[None, :], mask=m2, other=1).to(tl.int32)
    c = load_field(data_ptr, rowbase[:, None], bcol[None, :] + 1, (cols - kb * BLK)[None, :], MB, m2)
    c = tl.where(c >= (1 << (MB - 1)), c - (1 << MB), c)
    v = c.to(tl.float32) * (E << 23).to(tl.float32, bitcast=True)
    v = tl.where((E == 0) | (E == 255), float("nan"), v)
    return tl.where(m2, v, 0.0)


@triton.jit
def _bfp_scores_kernel(q_ptr, data_ptr, out_ptr, M, N, K, row_bytes, BLK: tl.constexpr, MB: tl.constexpr,
                       BN: tl.constexpr, KP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    keys = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    kmask = keys < N
    cols = tl.arange(0, KP)
    cmask = cols < K
    v = _bfp_tile(data_ptr, (b * N + keys) * row_bytes, kmask, cols, cmask, BLK, MB)
    for m in range(M):
        qr = tl.load(q_ptr + (b * M + m) * K + cols, mask=cmask, other=0.0)
        tl.store(out_ptr + (b * M + m) * N + keys, tl.sum(v * qr[None, :], axis=1), mask=kmask)


@kernel("kvattn", "gpu", "bfp_scores")
def bfp_scores(q, data, blk, m, out) -> None:
    B, M, K = q.shape
    N = data.shape[1]
    if B * M * N == 0:
        return
    bn = _bn(N)
    _bfp_scores_kernel[(B, triton.cdiv(N, bn))](q, data, out, M, N, K, data.shape[2], BLK=blk, MB=m, BN=bn,
                                                KP=triton.next_power_of_2(K))


@triton.jit
def _bfp_wsum_kernel(p_ptr, data_ptr, out_ptr, M, N, K, row_bytes, BLK: tl.constexpr, MB: tl.constexpr,
                     BN: tl.constexpr, KP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    m = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, KP)
    cmask = cols < K
    acc = tl.zeros([KP], dtype=tl.float32)
    for n0 in range(0, N, BN):
        keys = n0 + tl.arange(0, BN)
        kmask = keys < N
        v = _bfp_tile(data_ptr, (b * N + keys) * row_bytes, kmask, cols, cmask, BLK, MB)
        pw = tl.load(p_ptr + (b * M + m) * N + keys, mask=kmask, other=0.0)
        acc += tl.sum(pw[:, None] * v, axis=0)
    tl.store(out_ptr + (b * M + m) * K + cols, acc, mask=cmask)


@kernel("kvattn", "gpu", "bfp_wsum")
def bfp_wsum(p, data, blk, m, out) -> None:
    B, M, N = p.shape
    K = out.shape[2]
    if B * M * N == 0:
        return
    bn = _bn(N)
    _bfp_wsum_kernel[(B, M)](p, data, out, M, N, K, data.shape[2], BLK=blk, MB=m, BN=bn,
                             KP=triton.next_power_of_2(K))
