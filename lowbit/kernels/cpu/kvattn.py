"""Numba kernels of attention on compressed KV (family ``kvattn``): scores q·k and weighted sums
Σ p·v computed from the codes without writing K or V (twins of :mod:`lowbit.kernels.gpu.kvattn`;
results agree with decode-then-matmul within float32 rounding, not bit for bit).

Layouts: queries / weights and outputs are float32 [B, M, ·], codes uint8 [B, N, row_bytes].

* ``inst_scores(q, data, gcol, mult, ccol, W, C, out)``: out[b,m,n] += (mult·f16(γ_n)) ·
  Σ_j q[b,m,j]·C[code_nj] — one TurboQuant instance (or the QJL sketch with C = [1, −1],
  W = 1, mult = √(π/2)/d) on queries already rotated (and sketched) on the host;
* ``inst_wsum(p, data, gcol, mult, ccol, W, C, out)``: out[b,m,j] += Σ_n p[b,m,n]·(mult·γ_n)·C[code_nj];
* ``oct_scores`` / ``oct_wsum``: the same on OCTOPUS slots (q in slot-major layout, see
  :mod:`lowbit.kvcache`); ``bfp_scores`` / ``bfp_wsum``: on BFP blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..registry import kernel
from ._bits import bits_f32
from ._kvcommon import f16_to_f32, field


@njit(cache=True, inline="always")
def _centroids(row, n, ccol, W, C, v, D):
    """v[j] = C[code j] of row n. Code j starts at bit (j·W) & 7 of byte ccol + (j·W) >> 3; for
    W ≤ 8 it spans that byte and at most the next one (read only when sh + W > 8, so never past
    the row): one or two byte loads, a shift and a mask; wider codes use ``field``."""
    if W <= 8:
        mask = (1 << W) - 1
        for j in range(D):
            bit = j * W
            o = ccol + (bit >> 3)
            sh = bit & 7
            w = np.int64(row[n, o])
            if sh + W > 8:
                w |= np.int64(row[n, o + 1]) << 8
            v[j] = C[(w >> sh) & mask]
    else:
        for j in range(D):
            v[j] = C[field(row, n, ccol, j, W)]


@njit(cache=True, inline="always")
def _dot8(q, v, D):
    """Σ_j q[j]·v[j] with 8 interleaved partial sums (lane j % 8), added pairwise at the end:
    independent lanes let LLVM vectorize without fastmath; the order differs from a left-to-right
    sum, which the score kernels do not promise (float32 error bound only)."""
    acc = np.zeros(8, np.float32)
    D8 = D - D % 8
    for j0 in range(0, D8, 8):
        for l in range(8):
            acc[l] += q[j0 + l] * v[j0 + l]
    for j in range(D8, D):
        acc[j - D8] += q[j] * v[j]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@njit(cache=True)
def _inst_scores(q, data, gcol, mult, ccol, W, C, out):
    B, M, D = q.shape
    N = data.shape[1]
    v = np.empty(D, np.float32)
    for b in range(B):
        row = data[b]
        for n in range(N):
            g = mult * f16_to_f32(np.int64(row[n, gcol]) | (np.int64(row[n, gcol + 1]) << 8))
            _centroids(row, n, ccol, W, C, v, D)
            for m in range(M):
                out[b, m, n] += g * _dot8(q[b, m], v, D)


@kernel("kvattn", "cpu", "inst_scores")
def inst_scores(q, data, gcol, mult, ccol, W, C, out):
    _inst_scores(q, data, gcol, np.float32(mult), ccol, W, C, out)


@njit(cache=True)
def _inst_wsum(p, data, gcol, mult, ccol, W, C, out):
    B, M, N = p.shape
    D = out.shape[2]
    v = np.empty(D, np.float32)
    for b in range(B):
        row = data[b]
        for n in range(N):
            g = mult * f16_to_f32(np.int64(row[n, gcol]) | (np.int64(row[n, gcol + 1]) << 8))
            _centroids(row, n, ccol, W, C, v, D)
            for m in range(M):
                c = p[b, m, n] * g
                for j in range(D):
                    out[b, m, j] += c * v[j]


@kernel("kvattn", "cpu", "inst_wsum")
def inst_wsum(p, data, gcol, mult, ccol, W, C, out):
    _inst_wsum(p, data, gcol, np.float32(mult), ccol, W, C, out)


@njit(cache=True)
def _oct_slot_vectors(row, n, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, a):
    """a[k, g]: component k of slot g's reconstruction (slot-major), remainder slot included."""
    NE = 1 << be
    mx = (1 << bx) - 1
    me = (1 << be) - 1
    G = a.shape[1]
    for g in range(G):
        c = field(row, n, 2, g, W)
        ja = c & mx
        if g < G3:
            jb = (c >> bx) & me
            k = 3 * (ja * NE + jb)
            r = Cr[c >> (bx + be)]
            a[0, g] = r * DIR3[k]
            a[1, g] = r * DIR3[k + 1]
            a[2, g] = r * DIR3[k + 2]
        elif rem == 2:
            k = 2 * (2 * ja + ((c >> bx) & 1))
            r = Cr2[c >> (bx + be)]
            a[0, g] = r * DIR2[k]
            a[1, g] = r * DIR2[k + 1]
            a[2, g] = 0.0
        else:
            a[0, g] = C1[ja]
            a[1, g] = 0.0
            a[2, g] = 0.0


@njit(cache=True)
def _oct_scores(q, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out):
    B, M, G3x = q.shape
    G = G3x // 3
    N = data.shape[1]
    a1 = np.empty(3 * G, np.float32)
    a = a1.reshape(3, G)  # a view: a1[k·G + i] = a[k, i], the queries' slot-major order
    for b in range(B):
        row = data[b]
        for n in range(N):
            g = f16_to_f32(np.int64(row[n, 0]) | (np.int64(row[n, 1]) << 8))
            _oct_slot_vectors(row, n, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, a)
            for m in range(M):
                out[b, m, n] = g * _dot8(q[b, m], a1, 3 * G)


@kernel("kvattn", "cpu", "oct_scores")
def oct_scores(q, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out):
    _oct_scores(q, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out)


@njit(cache=True)
def _oct_wsum(p, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out):
    B, M, N = p.shape
    G = out.shape[2] // 3
    a = np.empty((3, G), np.float32)
    for b in range(B):
        row = data[b]
        for n in range(N):
            g = f16_to_f32(np.int64(row[n, 0]) | (np.int64(row[n, 1]) << 8))
            _oct_slot_vectors(row, n, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, a)
            for m in range(M):
                c = p[b, m, n] * g
                for k in range(3):
                    for i in range(G):
                        out[b, m, k * G + i] += c * a[k, i]


@kernel("kvattn", "cpu", "oct_wsum")
def oct_wsum(p, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out):
    _oct_wsum(p, data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, out)


@njit(cache=True)
def _bfp_row(row, n, nblk, blk, m, v):
    half = 1 << (m - 1)
    tsz = 1 + blk * m // 8
    for kb in range(nblk):
        col = kb * tsz
        E = np.int64(row[n, col])
        s = np.float32(np.nan) if (E == 0 or E == 255) else bits_f32(E << 23)  # 2**(E-127)
        for i in range(blk):
            c = field(row, n, col + 1, i, m)
            c = c - 2 * half if c >= half else c
            v[kb * blk + i] = np.float32(c) * s


@njit(cache=True)
def _bfp_scores(q, data, blk, m, out):
    B, M, K = q.shape
    N = data.shape[1]
    v = np.empty(K, np.float32)
    for b in range(B):
        for n in range(N):
            _bfp_row(data[b], n, K // blk, blk, m, v)
            for mm in range(M):
                s = np.float32(0.0)
                for j in range(K):
                    s += q[b, mm, j] * v[j]
                out[b, mm, n] = s


@kernel("kvattn", "cpu", "bfp_scores")
def bfp_scores(q, data, blk, m, out):
    _bfp_scores(q, data, blk, m, out)


@njit(cache=True)
def _bfp_wsum(p, data, blk, m, out):
    B, M, N = p.shape
    K = out.shape[2]
    v = np.empty(K, np.float32)
    for b in range(B):
        for n in range(N):
            _bfp_row(data[b], n, K // blk, blk, m, v)
            for mm in range(M):
                c = p[b, mm, n]
                for j in range(K):
                    out[b, mm, j] += c * v[j]


@kernel("kvattn", "cpu", "bfp_wsum")
def bfp_wsum(p, data, blk, m, out):
    _bfp_wsum(p, data, blk, m, out)
