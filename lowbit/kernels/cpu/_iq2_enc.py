"""Numba encoders of IQ2_XXS, IQ2_XS and IQ2_S: ggml's ``quantize_iq2_xxs``, ``quantize_iq2_xs``
and ``quantize_iq2_s``, byte for byte (reached through :func:`.gguf_iq.encode`).

All three quantize groups of eight magnitudes onto an 8-wide grid of levels {1, 3, 5} (times a
sub-block scale) and keep the eight signs apart. Per sub-block (32 values for IQ2_XXS, 16 for
the others) ggml tries a list of scales; for each it rounds every value to a level 0..2, packs
the group's eight levels into a key and looks the key up in ``kmap``: a grid row, or an off-grid
key whose nearest rows ggml listed in advance (:mod:`._iq2_maps`), of which the one with the
smallest weighted squared error wins (``iq2_find_best_neighbour``). The scale whose levels fit
best (``sumqx^2 / sumq2``) is kept, refined once, and the sub-block scales are stored as 4-bit
multiples of a per-256 fp16 scale ``d``.

Float order: ggml's reference quantizers are sequential float32 C (-O3, no -ffast-math, no FMA
in the baseline build of libggml-base), so every statement here is C's, in C's order: ``a*b*c``
is ``(a*b)*c``, sums run element by element, ``sqrtf`` is the correctly rounded float32 square
root, int operands are converted to float where C converts them. Comments quote the C where
that order matters.

Speed: ggml scores a neighbour list one row at a time, eight sequential multiply-adds each.
Here the lists are stored transposed in blocks of eight rows (``_Tables.tgrid``: element i of
rows 8b..8b+7 side by side), so one pass of eight vector steps scores eight rows at once, each
lane doing exactly C's eight operations in C's order; the winner is the first row of the
smallest score, as C's strict ``<`` scan finds it. And ggml's loop over candidate scales only
decides at the end of each candidate whether to keep it, while the candidates' levels and sums
do not depend on that: all candidates are computed first (independent work that the CPU
overlaps) and then chosen in ggml's order.

Where ggml aborts (float32 error sums overflowing to inf/NaN under importance weights near
FLT_MAX), :func:`encode` raises RangeError.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ...errors import RangeError
from ._ggml import F, GROUP_MAX_EPS, make_qp_quants, nearest_int, wr_f16
from ._iq2_maps import iq2_maps
from ._simd import vbits, vgt, vhmax, vlanes, vle, vload, vload_u8, vlt, vnint_clamp, vsel, vsplat, vstore, vtof

QK_K = 256
GROUP_MAX_EPS_IQ2_S = F(1e-8)
FLT_MAX = F(3.4028234663852886e38)

_IDS = {"iq2_xxs": 0, "iq2_xs": 1, "iq2_s": 2}


class _Tables(NamedTuple):
    """One grid's search tables in the shape the kernels read."""

    kmap: np.ndarray  # int32 per key: grid row, or < 0 off the grid (ggml's kmap)
    lblk: np.ndarray  # int32 per key: first 8-row block of its neighbour list in tgrid/trow
    lcnt: np.ndarray  # int32 per key: length of its neighbour list (0 on the grid)
    tgrid: np.ndarray  # uint8 [blocks*64]: block b, element i, lane j = grid value (1/3/5) of row 8b+j
    trow: np.ndarray  # int32 [blocks*8]: the grid row of each lane (-1 for padding)
    glev: np.ndarray  # float32 [rows*8]: the levels (0..2) of each grid row, (pg[i] - 1)/2


@functools.lru_cache(maxsize=None)
def tables(kind: str) -> _Tables:
    """The neighbour lists of :func:`._iq2_maps.iq2_maps` regrouped into transposed 8-row blocks."""
    grid, kmap, nb = iq2_maps(kind)
    off = np.flatnonzero(kmap < 0)
    start = -kmap[off].astype(np.int64) - 1
    cnt = nb[start].astype(np.int64)
    nblk = (cnt + 7) // 8
    blk0 = np.concatenate([[0], np.cumsum(nblk)[:-1]])
    total = int(nblk.sum())
    trow = np.full(total * 8, -1, dtype=np.int32)
    # list entry r of key k goes to lane r % 8 of block blk0[k] + r // 8
    key_of = np.repeat(np.arange(off.size), cnt)
    rank = np.arange(key_of.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    src = np.repeat(start + 1, cnt) + rank
    trow[blk0[key_of] * 8 + rank] = nb[src]
    rows = np.where(trow >= 0, trow, 0)
    g = grid[rows].reshape(total, 8, 8)  # block, lane, element
    tgrid = np.ascontiguousarray(g.transpose(0, 2, 1)).reshape(-1).astype(np.uint8)
    lblk = np.zeros(kmap.size, dtype=np.int32)
    lcnt = np.zeros(kmap.size, dtype=np.int32)
    lblk[off] = blk0
    lcnt[off] = cnt
    glev = ((grid.astype(np.float32) - 1) / 2).reshape(-1)
    return _Tables(np.ascontiguousarray(kmap), lblk, lcnt, tgrid, trow, np.ascontiguousarray(glev, dtype=np.float32))


#: SPREAD[m] puts bit j of the byte m at bit 2j: a group's key is SPREAD[l >= 1] + SPREAD[l >= 2]
SPREAD = np.array([sum(((m >> j) & 1) << (2 * j) for j in range(8)) for m in range(256)], dtype=np.int64)


# ---- one group of eight ----------------------------------------------------------------------------

@njit(inline="always", error_model="numpy", cache=True)
def _levels(id_, xval, o):
    """Lanes MAX(0, MIN(2, nearest_int(0.5f*(id*xval[o+i] - 1)))) as float32, and their key."""
    lf = vnint_clamp(vsplat(F(0.5)) * (vsplat(id_) * vload(xval, o) - vsplat(F(1.0))), 0, 2)
    return lf, SPREAD[vbits(vgt(lf, vsplat(F(0.5))))] + SPREAD[vbits(vgt(lf, vsplat(F(1.5))))]


@njit(inline="always", error_model="numpy", cache=True)
def _best_neighbour(key, xval, waux, o, scale, T):
    """ggml ``iq2_find_best_neighbour``: the row of ``key``'s list with the smallest
    sum_i waux[i]*diff*diff, diff = scale*grid[i] - xval[i], the first such row in list order;
    -1 if none is below FLT_MAX (ggml asserts there).

    C scans the list keeping ``d2 < best_d2``: the first position of the smallest value. Here
    lane j keeps the smallest value of positions j, j+8, j+16, ... under the same strict ``<``
    (so its first position of it); the answer is the smallest value over the lanes, and among
    lanes holding it the smallest position."""
    kmap, lblk, lcnt, tgrid, trow, glev = T
    n = lcnt[key]
    b0 = lblk[key]
    sv = vsplat(scale)
    bestv = vsplat(FLT_MAX)
    posv = vsplat(F(-1.0))
    inf = vsplat(F(np.inf))
    lanes = vlanes()
    nv = vsplat(F(n))
    for b in range((n + 7) // 8):
        base = (b0 + b) * 64
        d2 = vsplat(F(0.0))
        for i in range(8):  # C: float diff = scale*q - xval[i]; d2 += weight[i]*diff*diff;
            diff = sv * vtof(vload_u8(tgrid, base + 8 * i)) - vsplat(xval[o + i])
            d2 = d2 + (vsplat(waux[o + i]) * diff) * diff
        pos = lanes + vsplat(F(8 * b))
        d2 = vsel(vlt(pos, nv), d2, inf)  # padding lanes never win
        better = vlt(d2, bestv)  # C: if (d2 < best_d2): ordered, so NaN never wins
        bestv = vsel(better, d2, bestv)
        posv = vsel(better, pos, posv)
    # lanes hold no NaN (only values < FLT_MAX are taken), so the order of the compares is free
    zero = vsplat(F(0.0))
    m = -vhmax(zero - bestv)  # the smallest value
    if not m < FLT_MAX:
        return -1
    p = -vhmax(zero - vsel(vle(bestv, vsplat(m)), posv, inf))  # its first position
    return trow[b0 * 8 + np.int64(p)]


@njit(inline="always", error_model="numpy", cache=True)
def _group(id_, scale, xval, waux, o, L, lo, T):
    """Levels of group ``xval[o:o+8]`` at ``id_`` (= 1/scale) into ``L[lo:lo+8]``, snapped to the
    grid through the neighbour list when off it. Returns (on the grid as rounded, row or -1)."""
    lf, key = _levels(id_, xval, o)
    gi = T[0][key]
    if gi >= 0:
        vstore(L, lo, lf)
        return True, gi
    gi = _best_neighbour(key, xval, waux, o, scale, T)
    if gi >= 0:
        vstore(L, lo, vload(T[5], 8 * gi))
    return False, gi


@njit(inline="always", error_model="numpy", cache=True)
def _fit(n, weight, xval, L, lo):
    """C: for i: w = weight[i]; q = 2*L[i] + 1; sumqx += w*xval[i]*q; sumq2 += w*q*q."""
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for i in range(n):
        w = weight[i]
        q = F(2.0) * L[lo + i] + F(1.0)  # exact: C computes 2*L+1 in int, then converts
        sumqx += (w * xval[i]) * q
        sumq2 += (w * q) * q
    return sumqx, sumq2


@njit(inline="always", error_model="numpy", cache=True)
def _pick(nc, fits, best):
    """The candidate ggml's loop keeps: it takes candidate c when sumq2 > 0 and
    sumqx*sumqx > best*sumq2, then best = (sumqx/sumq2)*sumqx; -1 if none (the candidates'
    levels and sums do not depend on the choices, so they are all computed first)."""
    pick = -1
    for c in range(nc):
        sumqx = fits[2 * c]
        sumq2 = fits[2 * c + 1]
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            best = (sumqx / sumq2) * sumqx
            pick = c
    return pick


@njit(inline="always", error_model="numpy", cache=True)
def _key(L, o):
    u = 0
    for i in range(8):
        u |= np.int64(L[o + i]) << (2 * i)
    return u


@njit(inline="always", error_model="numpy", cache=True)
def _signs(x, xo, weight, xval, o, parity):
    """xval = |x| with the sign bits; with ``parity`` (IQ2_XXS/XS store 7 sign bits, the 8th is
    their parity) an odd count of negatives flips back the element of least weight*x*x."""
    s = 0
    nflip = 0
    for i in range(8):
        v = x[xo + i]
        if v >= 0:
            xval[o + i] = v
        else:
            xval[o + i] = -v
            nflip += 1
            s |= 1 << i
    if parity and nflip % 2:
        imin = 0
        mn = (weight[o] * x[xo]) * x[xo]  # C: weight[8*k+imin]*xb[8*k+imin]*xb[8*k+imin]
        for i in range(1, 8):
            ax = (weight[o + i] * x[xo + i]) * x[xo + i]
            if ax < mn:
                mn = ax
                imin = i
        xval[o + imin] = -xval[o + imin]
        s ^= 1 << imin
    return s & 127 if parity else s


@njit(inline="always", error_model="numpy", cache=True)
def _weights(n, x, xo, qw, qo, has_qw, sigma2, weight, waux):
    for i in range(n):
        v = x[xo + i]
        if has_qw:  # C: weight[i] = qw[i] * sqrtf(sigma2 + xb[i]*xb[i]);
            weight[i] = qw[qo + i] * np.sqrt(sigma2 + v * v)
        else:  # IQ2_S only: weight[i] = 0.25f*sigma2 + xb[i]*xb[i];
            weight[i] = F(0.25) * sigma2 + v * v
    for i in range(n):
        waux[i] = np.sqrt(weight[i])


@njit(inline="always", error_model="numpy", cache=True)
def _vmax(n, xval):
    m = xval[0]
    for i in range(1, n):
        m = m if m > xval[i] else xval[i]  # C's MAX(max, xval[i])
    return m


# ---- IQ2_XXS: 8 sub-blocks of 32, 4-bit scales, grid bytes + 7-bit signs in two u32 per 32 -------

@njit(error_model="numpy", cache=True)
def _iq2_xxs_block(x, xo, qw, qo, b, T, weight, waux, xval, L, Laux, Lq, scales, sg, gidx, fits):
    """quantize_row_iq2_xxs_impl for the 256 values at ``x[xo:]`` into the 66 bytes ``b``; False
    where ggml would abort (no neighbour below FLT_MAX, or a NaN scale: absurd weights only)."""
    ok = True
    sumx2 = F(0.0)
    for i in range(QK_K):
        sumx2 += x[xo + i] * x[xo + i]
    sigma2 = sumx2 / F(QK_K)
    max_scale = F(0.0)
    for ib in range(8):
        xb = xo + 32 * ib
        scales[ib] = F(0.0)
        for k in range(4):
            gidx[4 * ib + k] = 0
        _weights(32, x, xb, qw, qo + 32 * ib, True, sigma2, weight, waux)
        for k in range(4):
            sg[4 * ib + k] = _signs(x, xb + 8 * k, weight, xval, 8 * k, True)
        # an empty sub-block leaves its q2 words 0 (signs too) and its scale 0
        if _vmax(32, xval) < GROUP_MAX_EPS:
            for k in range(4):
                sg[4 * ib + k] = 0
            continue
        scale = make_qp_quants(32, 4, xval, Lq, weight)  # C: make_qp_quants(32, kMaxQ+1, ...)
        eff_max = scale * F(3.0)
        if eff_max <= 0:
            for k in range(4):
                sg[4 * ib + k] = 0
            continue
        for c in range(13):  # is = -6 .. 6; candidate c's levels at Laux[32c:32c+32]
            id_ = (F(5.0) + F(c - 6) * F(0.1)) / eff_max  # C: (2*kMaxQ-1+is*0.1f)/eff_max
            this_scale = F(1.0) / id_
            for k in range(4):
                on, gi = _group(id_, this_scale, xval, waux, 8 * k, Laux, 32 * c + 8 * k, T)
                if gi < 0:
                    ok = False
            fits[2 * c], fits[2 * c + 1] = _fit(32, weight, xval, Laux, 32 * c)
        pick = _pick(13, fits, F(0.0))
        if pick >= 0:
            scale = fits[2 * pick] / fits[2 * pick + 1]
            for i in range(32):
                L[i] = Laux[32 * pick + i]
        if scale > 0:
            id_ = F(1.0) / scale
            for k in range(4):
                on, gi = _group(id_, scale, xval, waux, 8 * k, L, 8 * k, T)
                if gi < 0:
                    ok = False
            sumqx, sumq2 = _fit(32, weight, xval, L, 0)
            if sumq2 > 0:
                scale = sumqx / sumq2
        if scale < 0:  # C: "should never happen": flip the scale and the signs
            scale = -scale
            for k in range(4):
                sg[4 * ib + k] = (~sg[4 * ib + k]) & 127
        for k in range(4):
            gidx[4 * ib + k] = T[0][_key(L, 8 * k)]
        if not scale >= 0:  # GGML_ASSERT(scale >= 0)
            ok = False
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    for i in range(b.size):
        b[i] = 0
    if max_scale == 0:
        return ok
    d = max_scale / F(31.0)
    wr_f16(b, 0, d)
    id_ = F(1.0) / d
    for ib in range(8):
        l = max(0, min(15, nearest_int(F(0.5) * (id_ * scales[ib] - F(1.0)))))
        o = 2 + 8 * ib
        for k in range(4):  # q2[2*ib+0]: the four grid bytes
            b[o + k] = gidx[4 * ib + k] & 0xFF
        a = (sg[4 * ib] | (sg[4 * ib + 1] << 7) | (sg[4 * ib + 2] << 14) | (sg[4 * ib + 3] << 21)) | (l << 28)
        for k in range(4):  # q2[2*ib+1]: 4 x 7 sign bits, the scale in the top nibble
            b[o + 4 + k] = (a >> (8 * k)) & 0xFF
    return ok


# ---- IQ2_XS / IQ2_S: 16 sub-blocks of 16 ------------------------------------------------------------

@njit(error_model="numpy", cache=True)
def _iq2_xs_s_block(t, x, xo, qw, qo, has_qw, b, T, weight, waux, xval, L, Laux, scales, sg, gidx, fits, onv):
    """quantize_row_iq2_xs_impl (t == 1: 74 bytes, needs qw) or quantize_row_iq2_s_impl (t == 2:
    82 bytes, qw optional) for the 256 values at ``x[xo:]``. The two differ in sigma2, the weights
    without qw, the sign parity trick, the empty-group threshold, d's 0.9875 and the packing."""
    ok = True
    is_s = t == 2
    sumx2 = F(0.0)
    for i in range(QK_K):
        sumx2 += x[xo + i] * x[xo + i]
    sigma2 = (F(2.0) * sumx2) / F(QK_K) if is_s else sumx2 / F(QK_K)  # IQ2_S: 2*sumx2/QK_K
    eps = GROUP_MAX_EPS_IQ2_S if is_s else GROUP_MAX_EPS
    max_scale = F(0.0)
    on0 = True
    on1 = True
    nbytes = b.size
    for i in range(nbytes):
        b[i] = 0
    for ib in range(16):
        xb = xo + 16 * ib
        scales[ib] = F(0.0)
        _weights(16, x, xb, qw, qo + 16 * ib, has_qw, sigma2, weight, waux)
        for k in range(2):
            sg[2 * ib + k] = _signs(x, xb + 8 * k, weight, xval, 8 * k, not is_s)
            gidx[2 * ib + k] = 0
        for i in range(16):
            L[i] = F(0.0)
        mx = _vmax(16, xval)
        if mx < eps:  # an empty sub-block: its q2 words stay 0 (signs too), its scale 0
            for k in range(2):
                sg[2 * ib + k] = 0
            continue
        best = F(0.0)
        scale = mx / F(5.0)  # C: max/(2*kMaxQ-1)
        on0 = True
        on1 = True
        for c in range(19):  # is = -9 .. 9; candidate c's levels at Laux[16c:16c+16]
            id_ = (F(5.0) + F(c - 9) * F(0.1)) / mx
            this_scale = F(1.0) / id_
            a0, g0 = _group(id_, this_scale, xval, waux, 0, Laux, 16 * c, T)
            a1, g1 = _group(id_, this_scale, xval, waux, 8, Laux, 16 * c + 8, T)
            if g0 < 0 or g1 < 0:
                ok = False
            onv[2 * c] = a0
            onv[2 * c + 1] = a1
            fits[2 * c], fits[2 * c + 1] = _fit(16, weight, xval, Laux, 16 * c)
        pick = _pick(19, fits, best)
        if pick >= 0:
            scale = fits[2 * pick] / fits[2 * pick + 1]
            for i in range(16):
                L[i] = Laux[16 * pick + i]
            on0 = onv[2 * pick]
            on1 = onv[2 * pick + 1]
        if (not on0 or not on1) and scale > 0:
            id_ = F(1.0) / scale
            if not on0:
                a0, g0 = _group(id_, scale, xval, waux, 0, L, 0, T)
                if g0 < 0:
                    ok = False
            if not on1:
                a1, g1 = _group(id_, scale, xval, waux, 8, L, 8, T)
                if g1 < 0:
                    ok = False
            sumqx, sumq2 = _fit(16, weight, xval, L, 0)
            if sumq2 > 0:
                scale = sumqx / sumq2
        if scale < 0:
            scale = -scale
            for k in range(2):
                sg[2 * ib + k] = (~sg[2 * ib + k]) & (255 if is_s else 127)
        for k in range(2):
            gi = T[0][_key(L, 8 * k)]
            gidx[2 * ib + k] = gi
            i8 = 2 * ib + k
            if is_s:  # qs[i8] = low byte, qh[i8/4] |= high 2 bits, qs[32 + i8] = the 8 signs
                b[2 + i8] = gi & 255
                b[66 + i8 // 4] |= ((gi >> 8) << (2 * (i8 % 4))) & 0xFF
                b[2 + 32 + i8] = sg[i8]
        if not scale >= 0:
            ok = False
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == 0:
        if not is_s:  # IQ2_XS zeroes qs; IQ2_S keeps what its sub-blocks wrote
            for i in range(nbytes):
                b[i] = 0
        return ok
    d = max_scale / F(31.0)
    wr_f16(b, 0, d * F(0.9875) if is_s else d)
    id_ = F(1.0) / d
    so = 74 if is_s else 66
    for ib in range(16):
        l = max(0, min(15, nearest_int(F(0.5) * (id_ * scales[ib] - F(1.0)))))
        if ib % 2 == 0:
            b[so + ib // 2] = l
        else:
            b[so + ib // 2] |= l << 4
    if not is_s:  # q2[2*ib+k] = grid_index | signs << 9, little-endian u16
        for i8 in range(32):
            v = gidx[i8] | (sg[i8] << 9)
            b[2 + 2 * i8] = v & 0xFF
            b[3 + 2 * i8] = (v >> 8) & 0xFF
    return ok


# ---- driver -------------------------------------------------------------------------------------------

@njit(error_model="numpy", cache=True, parallel=True)
def _encode_rows(t, x, qw, has_qw, out, kmap, lblk, lcnt, tgrid, trow, glev, bad):
    rows, K = x.shape
    nb = K // QK_K
    ts = out.shape[1] // nb if nb else 0  # the type size, from the caller's row bytes (the codec layout)
    T = (kmap, lblk, lcnt, tgrid, trow, glev)
    for r in prange(rows):
        weight = np.zeros(32, dtype=np.float32)
        waux = np.zeros(32, dtype=np.float32)
        xval = np.zeros(32, dtype=np.float32)
        L = np.zeros(32, dtype=np.float32)
        Laux = np.zeros(19 * 32, dtype=np.float32)  # every candidate's levels (13 x 32 or 19 x 16)
        fits = np.zeros(2 * 19, dtype=np.float32)  # and its sumqx, sumq2
        onv = np.zeros(2 * 19, dtype=np.bool_)  # and whether each group was on the grid as rounded
        Lq = np.zeros(32, dtype=np.uint8)
        scales = np.zeros(16, dtype=np.float32)
        sg = np.zeros(32, dtype=np.int64)
        gidx = np.zeros(32, dtype=np.int64)
        xr = x[r]
        orow = out[r]
        for i in range(nb):
            blk = orow[i * ts:(i + 1) * ts]
            if t == 0:
                ok = _iq2_xxs_block(xr, i * QK_K, qw, i * QK_K, blk, T, weight, waux, xval, L, Laux, Lq, scales, sg, gidx,
                                    fits)
            else:
                ok = _iq2_xs_s_block(t, xr, i * QK_K, qw, i * QK_K, has_qw, blk, T, weight, waux, xval, L, Laux,
                                     scales, sg, gidx, fits, onv)
            if not ok:
                bad[r] = 1


_NO_QW = np.zeros(1, dtype=np.float32)


def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    """float32 rows ``x[n, K]`` (K a multiple of 256) -> ``out[n, K/256*type_size]``, ggml's bytes;
    ``qw`` the float32 imatrix ``[K]`` (required by ggml for IQ2_XXS and IQ2_XS) or None."""
    t = _IDS[codec_id]
    if qw is None and t != 2:
        raise ValueError(f"{codec_id}: ggml quantizes this type only with quant_weights (an imatrix)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = np.zeros(x.shape[0], dtype=np.uint8)
    _encode_rows(t, x, _NO_QW if qw is None else np.ascontiguousarray(qw, dtype=np.float32), qw is not None, out,
                 *tables(codec_id), bad)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise RangeError(f"{codec_id}: row {r}: the importance weights are too large for float32 error sums "
                         f"(they overflow to inf/NaN and ggml aborts on this input); nothing was encoded")
