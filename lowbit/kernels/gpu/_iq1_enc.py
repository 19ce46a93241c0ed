"""Triton encoders of GGUF IQ1_S (ggml type 19) and IQ1_M (29): the GPU twins of
:mod:`lowbit.kernels.cpu._iq1_enc` (ggml's ``quantize_row_iq1_s_impl`` /
``quantize_row_iq1_m_impl``), the same bytes.

Two launches:

A. ``_search_kernel``, one lane per sub-block (32 values for IQ1_S, 16 for IQ1_M), running
   ggml's scalar code for it on ``[lanes, N]`` tiles: the weights and ``max``; the rank of
   every value in ggml's sort (ascending, equal values in index order as glibc's merge sort
   leaves them: ``#{j < i: x_j <= x_i} + #{j > i: x_j < x_i}``); the prefix sums of ``w*x`` and
   ``w`` in sorted order (IQ1_M: per half of the block), run one sorted position at a time in
   C's order, each term read from the tile bit for bit (:func:`~._ggml.col`); then ggml's
   exhaustive split search, every candidate in ggml's order (i1, then i2 >= i1, then the delta
   signs) with its own float expressions and ggml's acceptance test (``sumq2 > 0 &&
   sumqx*sumqx > best*sumq2``, first one on ties). The levels of the winning split are looked
   up in ``kmap`` per group of eight; off the grid, the key's neighbour list is walked in order
   (``iq1_find_best_neighbour2``: strict ``<`` from FLT_MAX, each distance summed lane by lane)
   and, where every neighbour's distance overflowed, ggml's all-grid fallback runs as written
   (it reads ``x`` at the grid row's offset; past the input it is flagged, as the CPU does).
   The scale is refitted to the chosen rows. Out go the scale, the grid indices, the delta
   sign(s) and the error flags.
B. ``_pack_s_kernel`` / ``_pack_m_kernel``, one lane per 256-value block: ``max_scale`` in C's
   order, the fp16 ``d`` with ggml's fudge factor, the 3-bit block scales and the bytes; IQ1_M
   refits ``d`` over the 256 values (in C's order) before storing it in the scales' top nibbles.

Bit-exactness on a GPU: every float operation is C's float32 operation in C's order, launched
with ``enable_fp_fusion=False``; divisions are ``tl.math.div_rn`` and square roots
``tl.math.sqrt_rn``; ``nearest_int`` is ggml's bit trick. No float is reduced across a tile
axis: single entries are read as masked integer sums of bit patterns, ``max|x|`` is a max (exact)
and keys and counts are integer sums.

The cost on a GPU is the split search (561 candidates x 2 signs for IQ1_S, 153 x 4 for IQ1_M,
sequential per lane) and the neighbour walks (lists of up to 205 rows, walked for as long as a
program's longest list). In the interpreter the whole input is one program.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from ...errors import ConfigError, RangeError
from ..cpu._iq1_enc import _IDS, _WHY, DELTA, EPS_M, EPS_S
from ..cpu._iq2_maps import iq2_maps
from ._ggml import FP, MAGIC, col, fp32_to_fp16, lut, programs_block, st_u8, st_u16, sumsq

FLT_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)
_D = float(DELTA)
# the three quant values for a positive (P) and a negative (M) delta (float32 as in C: all exact)
P0: tl.constexpr = tl.constexpr(float(np.float32(-1 + DELTA)))
P1: tl.constexpr = tl.constexpr(float(np.float32(DELTA)))
P2: tl.constexpr = tl.constexpr(float(np.float32(1 + DELTA)))
M0: tl.constexpr = tl.constexpr(float(np.float32(-1 - DELTA)))
M1: tl.constexpr = tl.constexpr(float(np.float32(-DELTA)))
M2: tl.constexpr = tl.constexpr(float(np.float32(1 - DELTA)))
# IQ1_M's level-step coefficients (x_p[0]^2 - x_p[1]^2 etc., float32 as C computes them)
_XP = np.array([-1 + DELTA, DELTA, 1 + DELTA], dtype=np.float32)
_XM = np.array([-1 - DELTA, -DELTA, 1 - DELTA], dtype=np.float32)
CP1: tl.constexpr = tl.constexpr(float(_XP[0] * _XP[0] - _XP[1] * _XP[1]))
CP2: tl.constexpr = tl.constexpr(float(_XP[1] * _XP[1] - _XP[2] * _XP[2]))
CM1: tl.constexpr = tl.constexpr(float(_XM[0] * _XM[0] - _XM[1] * _XM[1]))
CM2: tl.constexpr = tl.constexpr(float(_XM[1] * _XM[1] - _XM[2] * _XM[2]))
EPS1S: tl.constexpr = tl.constexpr(float(EPS_S))  # GROUP_MAX_EPS_IQ1_S = 1e-12f
EPS1M: tl.constexpr = tl.constexpr(float(EPS_M))  # GROUP_MAX_EPS_IQ1_M = 1e-7f
FUDGE_S: tl.constexpr = tl.constexpr(1.125)  # 1.125f
FUDGE_M: tl.constexpr = tl.constexpr(float(np.float32(1.1125)))  # 1.1125f
NGRID: tl.constexpr = tl.constexpr(2048)


@triton.jit
def _q(lv, q0, q1, q2):
    """The quant value of level ``lv`` (0, 1, 2)."""
    return tl.where(lv == 0, q0, tl.where(lv == 1, q1, q2))


@triton.jit
def _d2(key, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7, sc, q0, q1, q2):
    """C: ``float d2 = 0; for i: diff = scale*q - xval[i]; d2 += w*diff*diff`` for the grid row of
    packed levels ``key`` (level of lane i at bits 2i)."""
    d = sc * _q(key & 3, q0, q1, q2) - x0
    d2 = 0.0 + (w0 * d) * d
    d = sc * _q((key >> 2) & 3, q0, q1, q2) - x1
    d2 = d2 + (w1 * d) * d
    d = sc * _q((key >> 4) & 3, q0, q1, q2) - x2
    d2 = d2 + (w2 * d) * d
    d = sc * _q((key >> 6) & 3, q0, q1, q2) - x3
    d2 = d2 + (w3 * d) * d
    d = sc * _q((key >> 8) & 3, q0, q1, q2) - x4
    d2 = d2 + (w4 * d) * d
    d = sc * _q((key >> 10) & 3, q0, q1, q2) - x5
    d2 = d2 + (w5 * d) * d
    d = sc * _q((key >> 12) & 3, q0, q1, q2) - x6
    d2 = d2 + (w6 * d) * d
    d = sc * _q((key >> 14) & 3, q0, q1, q2) - x7
    d2 = d2 + (w7 * d) * d
    return d2


@triton.jit
def _wt(x_ptr, qw_ptr, xo, qo, i, sigma2, HAS_QW: tl.constexpr):
    """(x, weight) of element ``i``: C's ``qw[i] * sqrtf(sigma2 + x[i]*x[i])``, or ``x[i]*x[i]``
    (IQ1_M without an imatrix)."""
    xi = tl.load(x_ptr + xo + i)
    if HAS_QW:
        w = tl.load(qw_ptr + qo + i) * tl.math.sqrt_rn(sigma2 + xi * xi)
    else:
        w = xi * xi
    return xi, w


@triton.jit
def _group(x_ptr, qw_ptr, xo, qo, k: tl.constexpr, sigma2, u, sc, q0, q1, q2, act, total, kmap_ptr, nb_ptr, gk_ptr,
           HAS_QW: tl.constexpr):
    """Group ``k`` (values 8k..8k+7) with levels key ``u``: (key, grid row, on the grid, error) of
    the row ggml picks: ``kmap[u]`` or the best of its neighbours (``iq1_find_best_neighbour2``,
    with its all-grid fallback); error 1 where no row has a finite distance, 2 where the
    fallback would read past the input. ``nb_ptr`` holds the neighbour lists with each entry as
    its row's key | row << 16; ``gk_ptr`` the key of every grid row."""
    x0, w0 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k, sigma2, HAS_QW)
    x1, w1 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 1, sigma2, HAS_QW)
    x2, w2 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 2, sigma2, HAS_QW)
    x3, w3 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 3, sigma2, HAS_QW)
    x4, w4 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 4, sigma2, HAS_QW)
    x5, w5 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 5, sigma2, HAS_QW)
    x6, w6 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 6, sigma2, HAS_QW)
    x7, w7 = _wt(x_ptr, qw_ptr, xo, qo, 8 * k + 7, sigma2, HAS_QW)
    g = tl.load(kmap_ptr + u)
    on = g >= 0
    o = tl.where(on, 0, -g - 1)  # the list's start (count, then the entries)
    n = tl.where(on | (act == 0), 0, tl.load(nb_ptr + o))
    best = tl.zeros_like(sc) + FLT_MAX  # C: float best_score = FLT_MAX
    bk = n * 0 - 1
    nmax = tl.max(tl.max(n, axis=1), axis=0)
    j = nmax * 0
    while j < nmax:
        valid = j < n
        ent = tl.load(nb_ptr + o + 1 + j, mask=valid, other=0)
        d2 = _d2(ent, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7, sc, q0, q1, q2)
        upd = valid & (d2 < best)  # C: if (d2 < best_score): the first of equal distances stays
        best = tl.where(upd, d2, best)
        bk = tl.where(upd, ent, bk)
        j += 1
    # ggml's fallback over the whole grid (every neighbour's distance overflowed); its C reads
    # xval[i], i the grid row, for every lane of the row
    need = (act != 0) & (on == 0) & (bk < 0)
    xg = xo + 8 * k
    oob = need & (xg + NGRID > total)
    do = need & (oob == 0)
    nfb = tl.where(tl.max(tl.max(do.to(tl.int32), axis=1), axis=0) > 0, NGRID, 0)
    i = nfb * 0
    while i < nfb:
        xi = tl.load(x_ptr + xg + i, mask=do, other=0.0)
        gk = tl.load(gk_ptr + i)
        d2 = _d2(gk, xi, xi, xi, xi, xi, xi, xi, xi, w0, w1, w2, w3, w4, w5, w6, w7, sc, q0, q1, q2)
        upd = do & (d2 < best)
        best = tl.where(upd, d2, best)
        bk = tl.where(upd, gk | (i << 16), bk)
        i += 1
    err = tl.where(oob, 2, tl.where(need & (bk < 0), 1, 0))
    key = tl.where(on, u, tl.where(bk < 0, 0, bk & 0xFFFF))
    row = tl.where(on, g, tl.where(bk < 0, 0, bk >> 16))
    # the refit's terms of this group (C: sumqx += w*q*xb[j]; sumq2 += w*q*q, j in order)
    return key, row, on.to(tl.int32), err, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7


@triton.jit
def _refit(sqx, sq2, key, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7, q0, q1, q2):
    q = _q(key & 3, q0, q1, q2)
    sqx += (w0 * q) * x0
    sq2 += (w0 * q) * q
    q = _q((key >> 2) & 3, q0, q1, q2)
    sqx += (w1 * q) * x1
    sq2 += (w1 * q) * q
    q = _q((key >> 4) & 3, q0, q1, q2)
    sqx += (w2 * q) * x2
    sq2 += (w2 * q) * q
    q = _q((key >> 6) & 3, q0, q1, q2)
    sqx += (w3 * q) * x3
    sq2 += (w3 * q) * q
    q = _q((key >> 8) & 3, q0, q1, q2)
    sqx += (w4 * q) * x4
    sq2 += (w4 * q) * q
    q = _q((key >> 10) & 3, q0, q1, q2)
    sqx += (w5 * q) * x5
    sq2 += (w5 * q) * q
    q = _q((key >> 12) & 3, q0, q1, q2)
    sqx += (w6 * q) * x6
    sq2 += (w6 * q) * q
    q = _q((key >> 14) & 3, q0, q1, q2)
    sqx += (w7 * q) * x7
    sq2 += (w7 * q) * q
    return sqx, sq2


@triton.jit
def _search_kernel(x_ptr, qw_ptr, ss_ptr, kmap_ptr, nb_ptr, gk_ptr, sc_ptr, pk_ptr, n_sub, nsr, K, total,
                   S: tl.constexpr, HAS_QW: tl.constexpr, BLOCK: tl.constexpr):
    N: tl.constexpr = 32 if S else 16  # values per sub-block
    NP: tl.constexpr = 64 if S else 32  # prefix-sum columns (N + 1 used)
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)[:, None]  # [BLOCK, 1]
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    row = sb // nsr
    si = sb - row * nsr
    xo = row * K + si * N
    qo = si * N
    fz = tl.zeros([BLOCK, 1], tl.float32)
    iz = tl.zeros([BLOCK, 1], tl.int32)
    sigma2 = tl.math.div_rn(tl.load(ss_ptr + sb // (256 // N)) * 2.0, fz + 256.0)  # C: 2*sumx2/QK_K

    # ---- weights, max|x|, ranks in ggml's sort, prefix sums in sorted order
    c = tl.arange(0, N)[None, :]
    X = tl.load(x_ptr + xo + c)  # [BLOCK, N]
    if HAS_QW:
        W = tl.load(qw_ptr + qo + c) * tl.math.sqrt_rn(sigma2 + X * X)
    else:
        W = X * X
    mx = tl.max(tl.where(X >= 0, X, -X), axis=1)[:, None]
    if S:
        act = m & ((mx < EPS1S) == 0)
    else:
        act = m & ((mx < EPS1M) == 0)
    R = tl.zeros([BLOCK, N], tl.int32)
    for j in tl.static_range(N):
        xj = tl.load(x_ptr + xo + j)
        R += tl.where(c > j, (xj <= X).to(tl.int32), tl.where(c < j, (xj < X).to(tl.int32), 0))
    WX = W * X  # C: w[i]*x[i]
    cp = tl.arange(0, NP)[None, :]
    zt = fz + tl.zeros([1, NP], tl.float32)
    if S:
        SX = zt
        SW = zt
        s = fz
        sw = fz
        for j in tl.static_range(N):
            s = s + col(WX, R, j)[:, None]  # C: sumx[j+1] = sumx[j] + weight[i]*xb[i], i = idx[j]
            sw = sw + col(W, R, j)[:, None]
            SX = tl.where(cp == j + 1, s, SX)
            SW = tl.where(cp == j + 1, sw, SW)
    else:
        HX0 = zt
        HX1 = zt
        HW0 = zt
        HW1 = zt
        s0 = fz
        s1 = fz
        v0 = fz
        v1 = fz
        for j in tl.static_range(N):
            sel = R == j
            h = tl.sum(tl.where(sel & (c >= 8), 1, 0), axis=1)[:, None]  # the half element idx[j] lies in
            a = col(WX, R, j)[:, None]
            b = col(W, R, j)[:, None]
            s0 = tl.where(h == 0, s0 + a, s0)
            s1 = tl.where(h == 0, s1, s1 + a)
            v0 = tl.where(h == 0, v0 + b, v0)
            v1 = tl.where(h == 0, v1, v1 + b)
            HX0 = tl.where(cp == j + 1, s0, HX0)
            HX1 = tl.where(cp == j + 1, s1, HX1)
            HW0 = tl.where(cp == j + 1, v0, HW0)
            HW1 = tl.where(cp == j + 1, v1, HW1)

    # ---- the exhaustive split search, every candidate in ggml's order
    best = fz - FLT_MAX
    scale = mx
    b1 = iz - 1
    b2 = iz - 1
    shift = iz  # IQ1_S: 1 or -1 (0: none); IQ1_M: the sign pair 0..3 (-1: none)
    if S:
        sx0 = col(SX, cp, 0)[:, None]
        sw0 = col(SW, cp, 0)[:, None]
        sxn = col(SX, cp, N)[:, None]
        swn = col(SW, cp, N)[:, None]
        for i1 in range(0, N + 1):
            t1 = col(SX, cp, i1)[:, None]
            u1 = col(SW, cp, i1)[:, None]
            a1 = t1 - sx0
            c1 = u1 - sw0
            a1p = a1 * P0
            a1m = a1 * M0
            c1p = (c1 * P0) * P0
            c1m = (c1 * M0) * M0
            for i2 in range(i1, N + 1):
                t2 = col(SX, cp, i2)[:, None]
                u2 = col(SW, cp, i2)[:, None]
                a2 = t2 - t1
                c2 = u2 - u1
                a3 = sxn - t2
                c3 = swn - u2
                # C: sumqx = (sumx[i1]-sumx[0])*x_p[0] + (sumx[i2]-sumx[i1])*x_p[1] + (sumx[N]-sumx[i2])*x_p[2]
                qx = (a1p + a2 * P1) + a3 * P2
                q2 = (c1p + (c2 * P1) * P1) + (c3 * P2) * P2
                acc = (q2 > 0) & (qx * qx > best * q2)
                sn = tl.math.div_rn(qx, q2)
                scale = tl.where(acc, sn, scale)
                best = tl.where(acc, sn * qx, best)
                b1 = tl.where(acc, i1, b1)
                b2 = tl.where(acc, i2, b2)
                shift = tl.where(acc, 1, shift)
                qx = (a1m + a2 * M1) + a3 * M2
                q2 = (c1m + (c2 * M1) * M1) + (c3 * M2) * M2
                acc = (q2 > 0) & (qx * qx > best * q2)
                sn = tl.math.div_rn(qx, q2)
                scale = tl.where(acc, sn, scale)
                best = tl.where(acc, sn * qx, best)
                b1 = tl.where(acc, i1, b1)
                b2 = tl.where(acc, i2, b2)
                shift = tl.where(acc, -1, shift)
        ok = act & (b1 >= 0) & (b2 >= 0) & (shift != 0)
    else:
        shift = iz - 1
        tx0 = col(HX0, cp, N)[:, None]
        tx1 = col(HX1, cp, N)[:, None]
        tw0 = col(HW0, cp, N)[:, None]
        tw1 = col(HW1, cp, N)[:, None]
        for i1 in range(0, N + 1):
            x0i = col(HX0, cp, i1)[:, None]
            x1i = col(HX1, cp, i1)[:, None]
            w0i = col(HW0, cp, i1)[:, None]
            w1i = col(HW1, cp, i1)[:, None]
            for i2 in range(i1, N + 1):
                sx = x0i + col(HX0, cp, i2)[:, None]
                qxp0 = tx0 * P2 - sx
                qxm0 = tx0 * M2 - sx
                w2 = col(HW0, cp, i2)[:, None]
                q2p0 = ((tw0 * P2) * P2 + w0i * CP1) + w2 * CP2
                q2m0 = ((tw0 * M2) * M2 + w0i * CM1) + w2 * CM2
                sx = x1i + col(HX1, cp, i2)[:, None]
                qxp1 = tx1 * P2 - sx
                qxm1 = tx1 * M2 - sx
                w2 = col(HW1, cp, i2)[:, None]
                q2p1 = ((tw1 * P2) * P2 + w1i * CP1) + w2 * CP2
                q2m1 = ((tw1 * M2) * M2 + w1i * CM1) + w2 * CM2
                for k in tl.static_range(4):
                    if k == 0:
                        qx = qxp0 + qxp1
                        q2 = q2p0 + q2p1
                    elif k == 1:
                        qx = qxp0 + qxm1
                        q2 = q2p0 + q2m1
                    elif k == 2:
                        qx = qxm0 + qxp1
                        q2 = q2m0 + q2p1
                    else:
                        qx = qxm0 + qxm1
                        q2 = q2m0 + q2m1
                    acc = (q2 > 0) & (qx * qx > best * q2)
                    sn = tl.math.div_rn(qx, q2)
                    scale = tl.where(acc, sn, scale)
                    best = tl.where(acc, sn * qx, best)
                    b1 = tl.where(acc, i1, b1)
                    b2 = tl.where(acc, i2, b2)
                    shift = tl.where(acc, k, shift)
        ok = act & (b1 >= 0) & (b2 >= 0) & (shift >= 0)

    # ---- the levels, ggml's "should not happen" sign flip, the grid rows and the refit
    L = tl.where(R < b1, 0, tl.where(R < b2, 1, 2))
    neg = scale < 0
    L = tl.where(neg, 2 - L, L)
    scale = tl.where(neg, -scale, scale)
    if S:
        shift = tl.where(neg, -shift, shift)
    else:
        shift = tl.where(neg, 3 - shift, shift)
    lanec = c % 8
    grp = c // 8
    sqx = fz
    sq2 = fz
    allon = iz + 1
    err = iz
    wa = iz
    wb = iz
    for k in tl.static_range(N // 8):
        if S:
            pos = shift == 1
        elif k == 0:
            pos = shift < 2
        else:
            pos = (shift % 2) == 0
        q0 = tl.where(pos, P0, M0) + fz
        q1 = tl.where(pos, P1, M1) + fz
        q2 = tl.where(pos, P2, M2) + fz
        u = tl.sum(tl.where(grp == k, L << (2 * lanec), 0), axis=1)[:, None]
        key, gi, on, er, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7 = _group(
            x_ptr, qw_ptr, xo, qo, k, sigma2, u, scale, q0, q1, q2, ok, total, kmap_ptr, nb_ptr, gk_ptr, HAS_QW)
        allon = allon & on
        err = tl.where(err == 0, er, err)
        sqx, sq2 = _refit(sqx, sq2, key, x0, x1, x2, x3, x4, x5, x6, x7, w0, w1, w2, w3, w4, w5, w6, w7, q0, q1, q2)
        if k == 0:
            wa = gi
        elif k == 1:
            wa = wa | (gi << 16)
        elif k == 2:
            wb = gi
        else:
            wb = wb | (gi << 16)
    scale = tl.where((allon == 0) & (sqx > 0) & (sq2 > 0), tl.math.div_rn(sqx, sq2), scale)
    err = tl.where(ok & (err == 0) & ((scale >= 0) == 0), 3, err)  # C: GGML_ASSERT(scale >= 0)
    if S:
        sh = tl.where(ok, tl.where(shift == -1, 1, 0), 0)
    else:
        sh = tl.where(ok, shift, 0)
    tl.store(sc_ptr + sb, tl.where(ok, scale, 0.0), mask=m)
    tl.store(pk_ptr + 4 * sb, tl.where(ok, wa, 0), mask=m)
    tl.store(pk_ptr + 4 * sb + 1, tl.where(ok, wb, 0), mask=m)
    tl.store(pk_ptr + 4 * sb + 2, sh, mask=m)
    tl.store(pk_ptr + 4 * sb + 3, tl.where(ok, err, 0), mask=m)


@triton.jit
def _level(inv, s):
    """C: l = nearest_int(0.5f*(id*scales[ib]-1)), clamped to 0..7."""
    return tl.minimum(tl.maximum(((((0.5 * (inv * s - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 7)


@triton.jit
def _pack_s_kernel(sc_ptr, pk_ptr, out_ptr, n_sb, nb, RB, TS: tl.constexpr, BLOCK: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    ob = out_ptr + row * RB + (blk - row * nb) * TS
    fz = tl.zeros([BLOCK], tl.float32)
    ms = fz
    for ib in tl.static_range(8):  # C: max_scale = MAX(max_scale, scale)
        s = tl.load(sc_ptr + blk * 8 + ib)
        ms = tl.where(ms > s, ms, s)
    ok = ms != 0.0  # C: if (!max_scale) the block keeps d = 0 and no scales
    d = tl.math.div_rn(ms, fz + 15.0)  # C: d = max_scale/15
    st_u16(ob, fp32_to_fp16(d * FUDGE_S), m & ok)
    inv = tl.math.div_rn(fz + 1.0, d)  # C: id = 1/d
    for ib in tl.static_range(8):
        sb = blk * 8 + ib
        wa = tl.load(pk_ptr + 4 * sb)
        wb = tl.load(pk_ptr + 4 * sb + 1)
        sh = tl.load(pk_ptr + 4 * sb + 2)
        g0 = wa & 0xFFFF
        g1 = wa >> 16
        g2 = wb & 0xFFFF
        g3 = wb >> 16
        st_u8(ob + 2 + 4 * ib, g0, m)
        st_u8(ob + 3 + 4 * ib, g1, m)
        st_u8(ob + 4 + 4 * ib, g2, m)
        st_u8(ob + 5 + 4 * ib, g3, m)
        l = _level(inv, tl.load(sc_ptr + sb)) | (sh << 3)
        h = (g0 >> 8) | ((g1 >> 8) << 3) | ((g2 >> 8) << 6) | ((g3 >> 8) << 9) | tl.where(ok, l << 12, 0)
        st_u16(ob + 34 + 2 * ib, h, m)


@triton.jit
def _pack_m_kernel(x_ptr, qw_ptr, ss_ptr, gk_ptr, sc_ptr, pk_ptr, out_ptr, n_sb, nb, K, RB, TS: tl.constexpr,
                   HAS_QW: tl.constexpr, BLOCK: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    bi = blk - row * nb
    ob = out_ptr + row * RB + bi * TS
    xb = row * K + bi * 256
    fz = tl.zeros([BLOCK], tl.float32)
    iz = tl.zeros([BLOCK], tl.int32)
    sigma2 = tl.math.div_rn(tl.load(ss_ptr + blk) * 2.0, fz + 256.0)
    ms = fz
    for ib in tl.static_range(16):
        s = tl.load(sc_ptr + blk * 16 + ib)
        ms = tl.where(ms > s, ms, s)
    ok = ms != 0.0
    d = tl.math.div_rn(ms, fz + 15.0)
    inv = tl.math.div_rn(fz + 1.0, d)
    sqx = fz
    sq2 = fz
    sw0 = iz
    sw1 = iz
    sw2 = iz
    sw3 = iz
    for ib in range(0, 16):
        sb = blk * 16 + ib
        wa = tl.load(pk_ptr + 4 * sb)
        sh = tl.load(pk_ptr + 4 * sb + 2)
        g0 = wa & 0xFFFF
        g1 = wa >> 16
        st_u8(ob + 2 * ib, g0, m)
        st_u8(ob + 2 * ib + 1, g1, m)
        qh = (g0 >> 8) | ((g1 >> 8) << 4) | tl.where(ok, ((sh & 1) << 7) | ((sh >> 1) << 3), 0)
        st_u8(ob + 32 + ib, qh, m)
        l = _level(inv, tl.load(sc_ptr + sb))
        v = tl.where(ok, l << (3 * (ib % 4)), 0)
        sw0 = tl.where(ib // 4 == 0, sw0 | v, sw0)
        sw1 = tl.where(ib // 4 == 1, sw1 | v, sw1)
        sw2 = tl.where(ib // 4 == 2, sw2 | v, sw2)
        sw3 = tl.where(ib // 4 == 3, sw3 | v, sw3)
        # C: the refit of d over the super-block with the stored rows, shifts and block scales
        fl = (2 * l + 1).to(tl.float32)
        for k in tl.static_range(2):
            if k == 0:
                pos = sh < 2
                key = tl.load(gk_ptr + g0)
            else:
                pos = (sh % 2) == 0
                key = tl.load(gk_ptr + g1)
            q0 = tl.where(pos, P0, M0)
            q1 = tl.where(pos, P1, M1)
            q2 = tl.where(pos, P2, M2)
            for j in tl.static_range(8):
                xi = tl.load(x_ptr + xb + 16 * ib + 8 * k + j)
                if HAS_QW:
                    w = tl.load(qw_ptr + bi * 256 + 16 * ib + 8 * k + j) * tl.math.sqrt_rn(sigma2 + xi * xi)
                else:
                    w = xi * xi
                q = _q((key >> (2 * j)) & 3, q0, q1, q2) * fl
                sqx += (w * q) * xi
                sq2 += (w * q) * q
    d = tl.where(sq2 > 0, tl.math.div_rn(sqx, sq2), d)
    h = fp32_to_fp16(d * FUDGE_M)
    # the fp16 bits go to the top nibbles of scales u16[0..3], low nibble first
    st_u16(ob + 48, sw0 | tl.where(ok, (h & 0x000F) << 12, 0), m)
    st_u16(ob + 50, sw1 | tl.where(ok, (h & 0x00F0) << 8, 0), m)
    st_u16(ob + 52, sw2 | tl.where(ok, (h & 0x0F00) << 4, 0), m)
    st_u16(ob + 54, sw3 | tl.where(ok, h & 0xF000, 0), m)


def _nb_keys() -> np.ndarray:
    """ggml's neighbour lists (count, then entries) with each entry replaced by its grid row's key
    (level of lane i at bits 2i) | row << 16, so the walk reads a neighbour's eight levels and
    its row from one word."""
    grid, kmap, nbrs = iq2_maps("iq1_s")
    keys = _grid_keys()
    nb = nbrs.astype(np.int64)
    start = np.zeros(nb.size, dtype=bool)
    start[-kmap[kmap < 0].astype(np.int64) - 1] = True
    rows = np.minimum(nb, 2047)
    return np.where(start, nb, keys[rows].astype(np.int64) | (rows << 16)).astype(np.int32)


def _grid_keys() -> np.ndarray:
    grid = iq2_maps("iq1_s")[0]  # 2*level + 1
    lev = ((grid.astype(np.int64) - 1) // 2).reshape(2048, 8)
    return (lev << (2 * np.arange(8))).sum(axis=1).astype(np.int32)


def encode(codec_id: str, x: Any, qw: Any, out: Any) -> None:
    """float32 rows ``x`` (rows, K), K a multiple of 256, into ``out`` (rows, row bytes): the bytes
    ``ggml_quantize_chunk`` writes, with ``qw`` the imatrix (K,) or None (IQ1_S needs one); the
    same as :func:`lowbit.kernels.cpu._iq1_enc.encode`."""
    t = _IDS[codec_id]
    s_type = t == 0
    if qw is None and s_type:
        raise ConfigError("iq1_s: needs importance= (ggml refuses IQ1_S without an imatrix)")
    rows, K = x.shape
    if not rows or not K:
        return
    x = x.contiguous().float()
    dev = x.device
    has_qw = qw is not None
    qwt = qw.to(device=dev, dtype=torch.float32).contiguous() if has_qw else x
    kmap = lut("iq1_kmap", dev, lambda: iq2_maps("iq1_s")[1].astype(np.int32))
    nbk = lut("iq1_nbkeys", dev, _nb_keys)
    gk = lut("iq1_gridkeys", dev, _grid_keys)
    n_per = 32 if s_type else 16
    nsr = K // n_per
    nb = K // 256
    ts = out.shape[1] // nb
    n_sub = rows * nsr
    ss = sumsq(x, 256)
    sc = torch.empty(n_sub, dtype=torch.float32, device=dev)
    pk = torch.empty(4 * n_sub, dtype=torch.int32, device=dev)
    blk = programs_block(n_sub, 16, 1 << 12)
    _search_kernel[(triton.cdiv(n_sub, blk),)](x, qwt, ss, kmap, nbk, gk, sc, pk, n_sub, nsr, K, rows * K, S=s_type,
                                               HAS_QW=has_qw, BLOCK=blk, **FP)
    err = pk.view(n_sub, 4)[:, 3]
    bad = err.nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        r = i // nsr
        raise RangeError(f"{codec_id}: row {r}: {_WHY[int(err[i])]}; the importance weights are too large for "
                         f"float32 sums (nothing usable was encoded)")
    out.zero_()
    n_sb = rows * nb
    blk = programs_block(n_sb, 64, 1 << 12)
    if s_type:
        _pack_s_kernel[(triton.cdiv(n_sb, blk),)](sc, pk, out, n_sb, nb, out.shape[1], TS=ts, BLOCK=blk, **FP)
    else:
        _pack_m_kernel[(triton.cdiv(n_sb, blk),)](x, qwt, ss, gk, sc, pk, out, n_sb, nb, K, out.shape[1], TS=ts,
                                                  HAS_QW=has_qw, BLOCK=blk, **FP)
