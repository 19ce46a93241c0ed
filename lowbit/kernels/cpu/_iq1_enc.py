"""Numba encoders of GGUF IQ1_S and IQ1_M: ggml's ``quantize_iq1_s`` / ``quantize_iq1_m``, byte for byte.

Both types code groups of eight weights as one row of the 2048-entry ternary grid (``iq1s_grid``:
entries -1, 0, 1, i.e. levels 0, 1, 2) shifted by ±delta (0.125), with a 3-bit scale per block of
32 (IQ1_S) or 16 (IQ1_M) weights and one fp16 super-block scale per 256.

The search per block (ggml's ``quantize_row_iq1_{s,m}_impl``), in words:

1. Weights ``w_i = qw_i * sqrt(sigma2 + x_i^2)`` with ``sigma2 = 2 * mean(x^2)`` over the 256 (IQ1_M
   without an imatrix: ``w_i = x_i^2``).
2. Sort the block's values (ggml: ``qsort`` of (x, index) pairs comparing x only; glibc's qsort is
   a stable merge sort at this size, so equal values keep index order: that is the order here).
3. Every split of the sorted values into three runs (levels 0 | 1 | 2) is scored with prefix
   sums of ``w*x`` and ``w``, for both signs of the delta (IQ1_M: for each half of the block
   separately, four sign combinations): the split maximising ``sumqx^2 / sumq2`` wins, compared
   as ggml does (``sumqx*sumqx > best*sumq2``, first one wins ties).
4. Each group of eight levels is looked up in ``kmap``; one that is not a grid row takes the
   nearest of its ``neighbours`` (``iq1_find_best_neighbour2``: least weighted squared error at
   the block's scale), and the scale is then refitted to the chosen rows.
5. The super-block scale ``d = max_scale / 15`` is stored (times ggml's fudge factors 1.125 and
   1.1125; IQ1_M refits d over all 256 weights first) with each block's 3-bit ``l`` and delta sign.

Every float operation is ggml's float32 operation in C's order (ggml builds without FMA and
without -ffast-math); the sums of a candidate are never reassociated. The grid's ``kmap`` and
``neighbours`` tables are ggml's ``iq2xs_init_impl(GGML_TYPE_IQ1_S)``, from :mod:`._iq2_maps`.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from ._ggml import F, fp32_to_fp16, nearest_int, wr_f16
from ._simd import vand, vbits, vgt, vilane, visplat, vlane, vlanes, vle, vload, vlt, vmi, vsel, vsplat, vtof, vtrunc

QK_K = 256
NGRID = 2048
DELTA = F(0.125)  # IQ1S_DELTA == IQ1M_DELTA
EPS_S = F(1e-12)  # GROUP_MAX_EPS_IQ1_S
EPS_M = F(1e-7)  # GROUP_MAX_EPS_IQ1_M
FLT_MAX = F(3.4028234663852886e38)
# the three quant values for a positive (x_p) and a negative (x_m) delta, float32 as in C
XP = np.array([-1 + DELTA, DELTA, 1 + DELTA], dtype=np.float32)
XM = np.array([-1 - DELTA, -DELTA, 1 - DELTA], dtype=np.float32)

# error codes of a row (0: fine): where ggml would abort or read past its input
ERR_NO_GRID = 1  # no grid point found (GGML_ASSERT(grid_index >= 0)): d2 overflowed for every row
ERR_OOB = 2  # iq1_find_best_neighbour2's all-grid fallback would read past the input (its C indexes xval by grid row)
ERR_SCALE = 3  # GGML_ASSERT(scale >= 0) fails (a NaN scale from overflowed sums)


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(levels, nbk, kmap, neighbours): the grid as levels 0..2 (uint8, row g at [8g:8g+8]); per
    entry p of the neighbour lists the packed key (level of lane i at bits 2i) of grid row
    ``neighbours[p]`` as float32, padded by 8 (for :func:`_best_neighbour`'s vector loads);
    ggml's kmap (int32, key -> row or -(neighbour list offset) - 1) and neighbour lists (uint16)."""
    from ._iq2_maps import iq2_maps

    grid, kmap, nb = iq2_maps("iq1_s")  # grid holds 2*l + 1
    lev = ((grid.astype(np.int64) - 1) // 2).reshape(NGRID, 8)
    key = (lev << (2 * np.arange(8))).sum(axis=1)
    nbk = np.zeros(nb.size + 8, dtype=np.float32)
    nbk[:nb.size] = key[nb.astype(np.int64) % NGRID]  # the count entries get a harmless row
    return (np.ascontiguousarray(lev.astype(np.uint8).reshape(-1)), nbk, np.ascontiguousarray(kmap),
            np.ascontiguousarray(nb))


@njit(inline="always", error_model="numpy", cache=True)
def _sort_idx(x, xo, n, idx):
    """idx[0:n] = the indices of x[xo:xo+n] (n a multiple of 8) in ascending order of value, equal
    values in index order: the order glibc's qsort (a stable merge sort at this size) leaves
    ggml's (x, index) pairs in, as ggml compares x only (-0.0 and 0.0 are equal there too).

    Value i goes to rank #{j: x_j < x_i} + #{j < i: x_j == x_i} = #{j < i: x_j <= x_i} +
    #{j > i: x_j < x_i}, counted eight i at a time (lanes) over every j."""
    lanes = vlanes()
    for b in range(0, n, 8):
        X = vload(x, xo + b)
        cnt = visplat(0)
        for j in range(b):
            cnt = cnt + vmi(vle(vsplat(x[xo + j]), X))
        for j in range(b, b + 8):
            xj = vsplat(x[xo + j])
            jl = vsplat(F(j - b))
            cnt = cnt + vmi(vand(vle(xj, X), vlt(jl, lanes))) + vmi(vand(vlt(xj, X), vgt(jl, lanes)))
        for j in range(b + 8, n):
            cnt = cnt + vmi(vlt(vsplat(x[xo + j]), X))
        for k in range(8):
            idx[vilane(cnt, k)] = b + k


@njit(error_model="numpy", cache=True)
def _best_neighbour(nb, nbk, no, lev, x, xo, w, wo, scale, xx, e):
    """ggml's ``iq1_find_best_neighbour2``: the grid row of the neighbour list at ``nb[no]`` with the
    least ``d2 = sum w*(scale*xx[level] - x)^2`` over the eight values x[xo:xo+8] (first one on ties).
    Returns the row, or -ERR_NO_GRID / -ERR_OOB where ggml aborts or reads past its input.

    A term of d2 depends only on the lane and its level, so the 24 possible terms are computed
    once (each as C computes it: ``diff = scale*q - x; w*diff*diff``) into ``e[8*level + lane]``.
    Eight neighbours are then summed at once, one per vector lane: ``nbk[p]`` is the packed key
    (2 bits per lane) of grid row ``nb[p]``, as float32, so lane n adds its row's eight terms in
    lane order from 0, as C does, and gets C's float. A group of eight where some lane beats the
    best so far is replayed in list order (strict <: the first of equal distances wins)."""
    for l in range(3):
        q = xx[l]
        for i in range(8):
            diff = scale * q - x[xo + i]
            e[8 * l + i] = (w[wo + i] * diff) * diff
    n = np.int64(nb[no])
    best = FLT_MAX
    gi = -1
    lanes = vlanes()
    HALF = vsplat(F(0.5))
    ONEH = vsplat(F(1.5))
    THREE = visplat(3)
    for j0 in range(1, n + 1, 8):
        keys = vtrunc(vload(nbk, no + j0))
        d2 = vsplat(F(0.0))
        for i in range(8):
            lv = vtof((keys >> (2 * i)) & THREE)
            d2 = d2 + vsel(vlt(lv, HALF), vsplat(e[i]), vsel(vlt(lv, ONEH), vsplat(e[8 + i]), vsplat(e[16 + i])))
        left = n + 1 - j0
        if vbits(vand(vlt(d2, vsplat(best)), vlt(lanes, vsplat(F(left))))) == 0:
            continue
        for k in range(min(8, left)):
            v = vlane(d2, k)
            if v < best:
                best = v
                gi = np.int64(nb[no + j0 + k])
    if gi < 0:
        # ggml's fallback over the whole grid; its C reads xval[i] (i the grid row) for every lane
        # (kept as written: it only runs when every neighbour's distance overflowed)
        if xo + NGRID > x.size:
            return -ERR_OOB
        for i in range(NGRID):
            d2 = F(0.0)
            for j in range(8):
                q = xx[lev[8 * i + j]]
                diff = scale * q - x[xo + i]
                d2 += (w[wo + j] * diff) * diff
            if d2 < best:
                best = d2
                gi = i
        if gi < 0:
            return -ERR_NO_GRID
    return gi


@njit(inline="always", error_model="numpy", cache=True)
def _s_cand(sumx, sumw, i1, i2, v0, v1, v2):
    """sumqx and sumq2 of the split (i1, i2) with the quant values v (ggml's expressions)."""
    a1 = sumx[i1] - sumx[0]
    c1 = sumw[i1] - sumw[0]
    sqx = a1 * v0 + (sumx[i2] - sumx[i1]) * v1 + (sumx[32] - sumx[i2]) * v2
    sq2 = (c1 * v0) * v0 + ((sumw[i2] - sumw[i1]) * v1) * v1 + ((sumw[32] - sumw[i2]) * v2) * v2
    return sqx, sq2


@njit(error_model="numpy", cache=True)
def _iq1_s_split(sumx, sumw, mx, T):
    """ggml's exhaustive split search of IQ1_S: (scale, i1, i2, shift) of the best of the 561 splits
    x 2 delta signs, visited in ggml's order (i1, then i2 >= i1, then +delta before -delta).

    Eight i2 at a time are scored in vector lanes (each lane is C's float expression for its i2)
    and tested against the current best; only a group where some lane would win is replayed
    one candidate at a time in C's order, so the choice (and every float) is ggml's. ``sumx`` and
    ``sumw`` hold NaN past index 32, so lanes past the end fail every comparison. The terms of
    the third run depend on i2 alone and are computed once into ``T`` (float32 (4, 48))."""
    best = -FLT_MAX
    scale = mx
    b1 = -1
    b2 = -1
    shift = 0
    p0, p1, p2 = XP[0], XP[1], XP[2]
    m0, m1, m2 = XM[0], XM[1], XM[2]
    sxn = sumx[32]
    swn = sumw[32]
    a3p = T[0]
    a3m = T[1]
    c3p = T[2]
    c3m = T[3]
    for i2 in range(41):
        a3 = sxn - sumx[i2]
        c3 = swn - sumw[i2]
        a3p[i2] = a3 * p2
        a3m[i2] = a3 * m2
        c3p[i2] = (c3 * p2) * p2
        c3m[i2] = (c3 * m2) * m2
    P1, M1 = vsplat(p1), vsplat(m1)
    ZERO = vsplat(F(0.0))
    for i1 in range(33):
        a1 = sumx[i1] - sumx[0]
        c1 = sumw[i1] - sumw[0]
        A1P = vsplat(a1 * p0)
        A1M = vsplat(a1 * m0)
        C1P = vsplat((c1 * p0) * p0)
        C1M = vsplat((c1 * m0) * m0)
        S1 = vsplat(sumx[i1])
        W1 = vsplat(sumw[i1])
        for i2s in range(i1, 33, 8):
            a2 = vload(sumx, i2s) - S1
            c2 = vload(sumw, i2s) - W1
            # C: (a1*v0 + a2*v1) + a3*v2 and ((c1*v0)*v0 + (c2*v1)*v1) + (c3*v2)*v2
            qxp = (A1P + a2 * P1) + vload(a3p, i2s)
            q2p = (C1P + (c2 * P1) * P1) + vload(c3p, i2s)
            qxm = (A1M + a2 * M1) + vload(a3m, i2s)
            q2m = (C1M + (c2 * M1) * M1) + vload(c3m, i2s)
            bv = vsplat(best)
            hit = vbits(vand(vgt(q2p, ZERO), vgt(qxp * qxp, bv * q2p)))
            hit |= vbits(vand(vgt(q2m, ZERO), vgt(qxm * qxm, bv * q2m)))
            if hit == 0:
                continue
            for i2 in range(i2s, min(i2s + 8, 33)):
                sqx, sq2 = _s_cand(sumx, sumw, i1, i2, p0, p1, p2)
                if sq2 > 0 and sqx * sqx > best * sq2:
                    scale = sqx / sq2
                    best = scale * sqx
                    b1 = i1
                    b2 = i2
                    shift = 1
                sqx, sq2 = _s_cand(sumx, sumw, i1, i2, m0, m1, m2)
                if sq2 > 0 and sqx * sqx > best * sq2:
                    scale = sqx / sq2
                    best = scale * sqx
                    b1 = i1
                    b2 = i2
                    shift = -1
    return scale, b1, b2, shift


# ---- IQ1_S: block_iq1_s = fp16 d | qs[32] | qh u16[8] (3 high index bits x 4, 3-bit scale, delta sign)

@njit(error_model="numpy", cache=True)
def _iq1_s_superblock(x, xo, qw, qo, b, o, ts, lev, nbk, kmap, nb, e, w, idx, L, sumx, sumw, T, scales, shifts, index):
    for i in range(ts):
        b[o + i] = 0
    sumx2 = F(0.0)
    for i in range(QK_K):
        v = x[xo + i]
        sumx2 += v * v
    sigma2 = F(2.0) * sumx2 / F(QK_K)
    max_scale = F(0.0)
    for ib in range(8):
        xb = xo + 32 * ib
        for i in range(32):
            v = x[xb + i]
            w[i] = qw[qo + 32 * ib + i] * np.sqrt(sigma2 + v * v)
        mx = abs(x[xb])
        for i in range(1, 32):
            mx = max(mx, abs(x[xb + i]))
        if mx < EPS_S:
            scales[ib] = F(0.0)
            shifts[ib] = 1
            continue
        # exhaustive search of the two boundaries splitting the sorted values into levels 0 | 1 | 2
        _sort_idx(x, xb, 32, idx)
        sumx[0] = F(0.0)
        sumw[0] = F(0.0)
        for j in range(32):
            i = idx[j]
            sumx[j + 1] = sumx[j] + w[i] * x[xb + i]
            sumw[j + 1] = sumw[j] + w[i]
        scale, b1, b2, shift = _iq1_s_split(sumx, sumw, mx, T)
        if b1 < 0 or b2 < 0 or shift == 0:
            scales[ib] = F(0.0)
            shifts[ib] = 1
            continue
        for j in range(32):
            L[idx[j]] = 0 if j < b1 else (1 if j < b2 else 2)
        if scale < 0:
            for j in range(32):
                L[j] = 2 - L[j]
            scale = -scale
            shift = -shift
        xx = XP if shift == 1 else XM
        all_on_grid = True
        for k in range(4):
            u = 0
            for j in range(8):
                u |= L[8 * k + j] << (2 * j)
            gi = np.int64(kmap[u])
            if gi < 0:
                all_on_grid = False
                gi = _best_neighbour(nb, nbk, -gi - 1, lev, x, xb + 8 * k, w, 8 * k, scale, xx, e)
                if gi < 0:
                    return -gi
            index[k] = gi
        if not all_on_grid:
            sqx = F(0.0)
            sq2 = F(0.0)
            for k in range(4):
                g = index[k]
                for j in range(8):
                    wj = w[8 * k + j]
                    q = xx[lev[8 * g + j]]
                    sqx += (wj * q) * x[xb + 8 * k + j]
                    sq2 += (wj * q) * q
            if sqx > 0 and sq2 > 0:
                scale = sqx / sq2
        h = 0
        for k in range(4):
            b[o + 2 + 4 * ib + k] = index[k] & 255
            h |= (index[k] >> 8) << (3 * k)
        b[o + 34 + 2 * ib] = h & 255
        b[o + 35 + 2 * ib] = h >> 8
        if not scale >= 0:
            return ERR_SCALE
        scales[ib] = scale
        shifts[ib] = shift
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == 0:
        return 0
    d = max_scale / F(15.0)
    wr_f16(b, o, d * F(1.125))  # ggml: "1.125f is another fudge factor"
    inv = F(1.0) / d
    for ib in range(8):
        l = nearest_int(F(0.5) * (inv * scales[ib] - F(1.0)))
        l = max(0, min(7, l))
        if shifts[ib] == -1:
            l |= 8
        b[o + 35 + 2 * ib] |= l << 4  # qh bits 12-15
    return 0


# ---- IQ1_M: block_iq1_m = qs[32] | qh[16] (3 high index bits + delta sign per group of 8) | scales u16[4]
# (four 3-bit block scales each, and the top nibbles together hold the fp16 super-block scale)

@njit(error_model="numpy", cache=True)
def _iq1_m_weights(x, xb, qw, qi, has_qw, sigma2, w):
    if has_qw:
        for i in range(16):
            v = x[xb + i]
            w[i] = qw[qi + i] * np.sqrt(sigma2 + v * v)
    else:
        for i in range(16):
            v = x[xb + i]
            w[i] = v * v


@njit(error_model="numpy", cache=True)
def _iq1_m_split(px, pw, mx):
    """ggml's split search of IQ1_M: (scale, i1, i2, k) of the best of the 153 splits x 4 delta sign
    pairs k (0: +,+  1: +,-  2: -,+  3: -,- for the two halves), in ggml's order (i1, i2, k).

    ``px[h, j]``/``pw[h, j]``: sums of w*x and w over the first j sorted values lying in half h.
    ggml collapses each half's 3-run sums to ``T*v2 - px[i1] - px[i2]`` (the level steps are 1);
    its expressions are kept. Vector lanes score eight i2 at once, as in :func:`_iq1_s_split`
    (``px``/``pw`` hold NaN past index 16)."""
    best = -FLT_MAX
    scale = mx
    b1 = -1
    b2 = -1
    bk = -1
    p2 = XP[2]
    m2 = XM[2]
    cp1 = XP[0] * XP[0] - XP[1] * XP[1]
    cp2 = XP[1] * XP[1] - XP[2] * XP[2]
    cm1 = XM[0] * XM[0] - XM[1] * XM[1]
    cm2 = XM[1] * XM[1] - XM[2] * XM[2]
    tx0 = px[0, 16]
    tx1 = px[1, 16]
    tw0 = pw[0, 16]
    tw1 = pw[1, 16]
    px0 = px[0]
    px1 = px[1]
    pw0 = pw[0]
    pw1 = pw[1]
    TXP0, TXM0, TXP1, TXM1 = vsplat(tx0 * p2), vsplat(tx0 * m2), vsplat(tx1 * p2), vsplat(tx1 * m2)
    TWP0, TWM0 = vsplat((tw0 * p2) * p2), vsplat((tw0 * m2) * m2)
    TWP1, TWM1 = vsplat((tw1 * p2) * p2), vsplat((tw1 * m2) * m2)
    CP2, CM2 = vsplat(cp2), vsplat(cm2)
    ZERO = vsplat(F(0.0))
    for i1 in range(17):
        X0 = vsplat(px0[i1])
        X1 = vsplat(px1[i1])
        QP0 = TWP0 + vsplat(pw0[i1] * cp1)
        QM0 = TWM0 + vsplat(pw0[i1] * cm1)
        QP1 = TWP1 + vsplat(pw1[i1] * cp1)
        QM1 = TWM1 + vsplat(pw1[i1] * cm1)
        for i2s in range(i1, 17, 8):
            vsx = X0 + vload(px0, i2s)
            qxp0 = TXP0 - vsx
            qxm0 = TXM0 - vsx
            w2 = vload(pw0, i2s)
            q2p0 = QP0 + w2 * CP2
            q2m0 = QM0 + w2 * CM2
            vsx = X1 + vload(px1, i2s)
            qxp1 = TXP1 - vsx
            qxm1 = TXM1 - vsx
            w2 = vload(pw1, i2s)
            q2p1 = QP1 + w2 * CP2
            q2m1 = QM1 + w2 * CM2
            bv = vsplat(best)
            hit = 0
            for k in range(4):
                if k == 0:
                    vqx = qxp0 + qxp1
                    vq2 = q2p0 + q2p1
                elif k == 1:
                    vqx = qxp0 + qxm1
                    vq2 = q2p0 + q2m1
                elif k == 2:
                    vqx = qxm0 + qxp1
                    vq2 = q2m0 + q2p1
                else:
                    vqx = qxm0 + qxm1
                    vq2 = q2m0 + q2m1
                hit |= vbits(vand(vgt(vq2, ZERO), vgt(vqx * vqx, bv * vq2)))
            if hit == 0:
                continue
            for i2 in range(i2s, min(i2s + 8, 17)):
                sx = px0[i1] + px0[i2]
                qxp0s = tx0 * p2 - sx
                qxm0s = tx0 * m2 - sx
                q2p0s = (tw0 * p2) * p2 + pw0[i1] * cp1 + pw0[i2] * cp2
                q2m0s = (tw0 * m2) * m2 + pw0[i1] * cm1 + pw0[i2] * cm2
                sx = px1[i1] + px1[i2]
                qxp1s = tx1 * p2 - sx
                qxm1s = tx1 * m2 - sx
                q2p1s = (tw1 * p2) * p2 + pw1[i1] * cp1 + pw1[i2] * cp2
                q2m1s = (tw1 * m2) * m2 + pw1[i1] * cm1 + pw1[i2] * cm2
                for k in range(4):
                    if k == 0:
                        sqx = qxp0s + qxp1s
                        sq2 = q2p0s + q2p1s
                    elif k == 1:
                        sqx = qxp0s + qxm1s
                        sq2 = q2p0s + q2m1s
                    elif k == 2:
                        sqx = qxm0s + qxp1s
                        sq2 = q2m0s + q2p1s
                    else:
                        sqx = qxm0s + qxm1s
                        sq2 = q2m0s + q2m1s
                    if sq2 > 0 and sqx * sqx > best * sq2:
                        scale = sqx / sq2
                        best = scale * sqx
                        b1 = i1
                        b2 = i2
                        bk = k
    return scale, b1, b2, bk


@njit(error_model="numpy", cache=True)
def _iq1_m_superblock(x, xo, qw, qo, has_qw, b, o, ts, lev, nbk, kmap, nb, e, w, idx, L, px, pw, scales, shifts, index):
    for i in range(ts):
        b[o + i] = 0
    sumx2 = F(0.0)
    for i in range(QK_K):
        v = x[xo + i]
        sumx2 += v * v
    sigma2 = F(2.0) * sumx2 / F(QK_K)
    max_scale = F(0.0)
    for ib in range(16):
        xb = xo + 16 * ib
        _iq1_m_weights(x, xb, qw, qo + 16 * ib, has_qw, sigma2, w)
        mx = abs(x[xb])
        for i in range(1, 16):
            mx = max(mx, abs(x[xb + i]))
        if mx < EPS_M:
            scales[ib] = F(0.0)
            shifts[ib] = 0
            continue
        _sort_idx(x, xb, 16, idx)
        # prefix sums per half (px[h, j], pw[h, j]: the first j sorted values that lie in half h)
        px[0, 0] = F(0.0)
        px[1, 0] = F(0.0)
        pw[0, 0] = F(0.0)
        pw[1, 0] = F(0.0)
        for j in range(16):
            i = idx[j]
            h = 0 if i < 8 else 1
            px[h, j + 1] = px[h, j] + w[i] * x[xb + i]
            px[1 - h, j + 1] = px[1 - h, j]
            pw[h, j + 1] = pw[h, j] + w[i]
            pw[1 - h, j + 1] = pw[1 - h, j]
        scale, b1, b2, bk = _iq1_m_split(px, pw, mx)
        if b1 < 0 or b2 < 0 or bk < 0:
            scales[ib] = F(0.0)
            shifts[ib] = 0
            continue
        for j in range(16):
            L[idx[j]] = 0 if j < b1 else (1 if j < b2 else 2)
        if scale < 0:
            for j in range(16):
                L[j] = 2 - L[j]
            scale = -scale
            bk = 3 - bk
        all_on_grid = True
        for k in range(2):
            xx = XP if (bk < 2 if k == 0 else bk % 2 == 0) else XM
            u = 0
            for j in range(8):
                u |= L[8 * k + j] << (2 * j)
            gi = np.int64(kmap[u])
            if gi < 0:
                all_on_grid = False
                gi = _best_neighbour(nb, nbk, -gi - 1, lev, x, xb + 8 * k, w, 8 * k, scale, xx, e)
                if gi < 0:
                    return -gi
            index[k] = gi
        if not all_on_grid:
            sqx = F(0.0)
            sq2 = F(0.0)
            for k in range(2):
                xx = XP if (bk < 2 if k == 0 else bk % 2 == 0) else XM
                g = index[k]
                for j in range(8):
                    wj = w[8 * k + j]
                    q = xx[lev[8 * g + j]]
                    sqx += (wj * q) * x[xb + 8 * k + j]
                    sq2 += (wj * q) * q
            if sqx > 0 and sq2 > 0:
                scale = sqx / sq2
        b[o + 2 * ib] = index[0] & 255
        b[o + 2 * ib + 1] = index[1] & 255
        b[o + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
        if not scale >= 0:
            return ERR_SCALE
        scales[ib] = scale
        shifts[ib] = bk
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == 0:
        return 0
    d = max_scale / F(15.0)
    inv = F(1.0) / d
    sqx = F(0.0)
    sq2 = F(0.0)
    for ib in range(16):
        l = nearest_int(F(0.5) * (inv * scales[ib] - F(1.0)))
        l = max(0, min(7, l))
        s = o + 48 + 2 * (ib // 4)  # scales u16[ib / 4], bits 3*(ib % 4)
        v = (np.int64(b[s]) | (np.int64(b[s + 1]) << 8)) | (l << (3 * (ib % 4)))
        b[s] = v & 255
        b[s + 1] = v >> 8
        sh = shifts[ib]
        b[o + 32 + ib] |= (0x00, 0x80, 0x08, 0x88)[sh]
        # refit d over the whole super-block with the stored levels and block scales
        xb = xo + 16 * ib
        _iq1_m_weights(x, xb, qw, qo + 16 * ib, has_qw, sigma2, w)
        qh = np.int64(b[o + 32 + ib])
        fl = F(2 * l + 1)
        for k in range(2):
            xx = XP if (sh < 2 if k == 0 else sh % 2 == 0) else XM
            g = np.int64(b[o + 2 * ib + k]) + ((qh << (8 - 4 * k)) & 0x700)
            for j in range(8):
                wj = w[8 * k + j]
                q = xx[lev[8 * g + j]] * fl
                sqx += (wj * q) * x[xb + 8 * k + j]
                sq2 += (wj * q) * q
    if sq2 > 0:
        d = sqx / sq2
    h = fp32_to_fp16(d * F(1.1125))  # ggml: "1.1125f is another fudge factor"
    # the fp16 bits go to the top nibbles of scales u16[0..3], low nibble first
    b[o + 49] |= (h & 0x000F) << 4
    b[o + 51] |= h & 0x00F0
    b[o + 53] |= ((h & 0x0F00) >> 8) << 4
    b[o + 55] |= (h & 0xF000) >> 8
    return 0


# ---- drivers ---------------------------------------------------------------------------------------

@njit(error_model="numpy", cache=True, parallel=True)
def _encode_rows(t, x, K, qw, has_qw, out, lev, nbk, kmap, nb, err):
    rows = out.shape[0]
    nbl = K // QK_K
    ts = out.shape[1] // nbl  # the type size, from the row bytes the codec's layout gives
    for r in prange(rows):
        w = np.zeros(32, dtype=np.float32)
        e = np.zeros(24, dtype=np.float32)
        idx = np.zeros(32, dtype=np.int64)
        L = np.zeros(32, dtype=np.int64)
        # prefix sums: 33 (IQ1_S) or 2 x 17 (IQ1_M) used; vector loads read up to 8 past the end,
        # where NaN fails every comparison
        sumx = np.full(48, np.nan, dtype=np.float32)
        sumw = np.full(48, np.nan, dtype=np.float32)
        T = np.zeros((4, 48), dtype=np.float32)
        pxy = np.full((2, 32), np.nan, dtype=np.float32)
        pwy = np.full((2, 32), np.nan, dtype=np.float32)
        scales = np.zeros(16, dtype=np.float32)
        shifts = np.zeros(16, dtype=np.int64)
        index = np.zeros(4, dtype=np.int64)
        b = out[r]
        for ibl in range(nbl):
            xo = r * K + QK_K * ibl
            if t == 0:
                rc = _iq1_s_superblock(x, xo, qw, QK_K * ibl, b, ts * ibl, ts, lev, nbk, kmap, nb, e, w, idx, L, sumx, sumw, T,
                                      scales, shifts, index)
            else:
                rc = _iq1_m_superblock(x, xo, qw, QK_K * ibl, has_qw, b, ts * ibl, ts, lev, nbk, kmap, nb, e, w, idx, L, pxy, pwy,
                                      scales, shifts, index)
            if rc != 0:
                err[r] = rc
                break


_IDS = {"iq1_s": 0, "iq1_m": 1}
_NO_QW = np.zeros(1, dtype=np.float32)
_WHY = {ERR_NO_GRID: "no grid point has a finite distance (ggml aborts: GGML_ASSERT(grid_index >= 0))",
        ERR_OOB: "ggml's grid fallback would read past the input (undefined behaviour in ggml)",
        ERR_SCALE: "a block scale is NaN (ggml aborts: GGML_ASSERT(scale >= 0))"}


def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    """ggml's ``quantize_iq1_s`` / ``quantize_iq1_m`` of float32 rows ``x`` (rows, K) into ``out``
    (uint8 (rows, row_bytes)); ``qw`` the (K,) imatrix or None (IQ1_S needs one, as in ggml)."""
    from ...errors import ConfigError, RangeError

    t = _IDS[codec_id]
    if qw is None and t == 0:
        raise ConfigError("iq1_s: needs importance= (ggml refuses IQ1_S without an imatrix)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, K = x.shape
    err = np.zeros(rows, dtype=np.int64)
    lev, nbk, kmap, nb = _tables()
    _encode_rows(t, x.reshape(-1), K, _NO_QW if qw is None else np.ascontiguousarray(qw, dtype=np.float32),
                 qw is not None, out, lev, nbk, kmap, nb, err)
    bad = np.flatnonzero(err)
    if bad.size:
        r = int(bad[0])
        raise RangeError(f"{codec_id}: row {r}: {_WHY[int(err[r])]}; the importance weights are too large for "
                         f"float32 sums (nothing usable was encoded)")
