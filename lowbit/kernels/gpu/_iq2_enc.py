"""Triton encoders of GGUF IQ2_XXS (ggml type 16), IQ2_XS (17) and IQ2_S (22): the GPU twins of
:mod:`lowbit.kernels.cpu._iq2_enc` (ggml's ``quantize_row_iq2_xxs_impl`` /
``quantize_row_iq2_xs_impl`` / ``quantize_row_iq2_s_impl``), the same bytes, reached through
:func:`lowbit.kernels.gpu.gguf_iq.encode`.

Three launches per chunk of blocks (after :func:`._ggml.sumsq`, the per-256 ``sumx2`` in C's
order):

A. ``_prep_kernel``, one lane per group of eight elements: ggml's weights
   (``qw[i]*sqrtf(sigma2 + x*x)``, or IQ2_S without an imatrix ``0.25f*sigma2 + x*x``), their
   square roots ``waux``, the magnitudes ``xval`` and the sign byte; IQ2_XXS/XS, which store
   7 signs, flip back the element of least ``weight*x*x`` (the first such one) when the count
   of negatives is odd. Out go ``xval``, ``weight``, ``waux`` (float32 per element) and the
   signs (per group), so the search below reads them instead of recomputing them.
B. ``_search_kernel``, one lane per sub-block (32 elements for IQ2_XXS, 16 otherwise), ggml's
   scalar code for it: the empty test on ``max``; IQ2_XXS's ``make_qp_quants(32, 4, ...)``
   (:func:`_qp32`, its uint8 codes in a ``[lanes, 32]`` integer tile); then the candidate scales
   (13 for IQ2_XXS, 19 for the others) on the second axis of a ``[lanes, NC]`` tile. Per group
   of eight, every candidate rounds its eight levels, packs the key and looks it up in ``kmap``;
   off the grid it walks the key's neighbour list (:func:`_snap`, ggml's
   ``iq2_find_best_neighbour``). Its ``sumqx``/``sumq2`` run element by element in C's order
   over the grid values of the chosen rows. The winner is picked in ggml's order (strict
   improvement of ``sumqx**2/sumq2``), its rows read back with an integer masked sum, the
   groups re-rounded at the winning scale (IQ2_XXS: all four; IQ2_XS/S: those off the grid as
   rounded) and the scale refitted. Out go the scale, the grid row and sign byte of each group,
   and a flag where ggml would abort.
C. ``_pack_kernel``, one lane per 256-element block: ``max_scale`` in C's order, the fp16 ``d``
   (IQ2_S: ``d*0.9875f``), the 4-bit sub-block scales and the block's bytes.

Bit-exactness on a GPU: every float operation is C's float32 operation in C's order (``a*b*c``
is ``(a*b)*c``, sums left to right, launched with ``enable_fp_fusion=False``); divisions are
``tl.math.div_rn`` and square roots ``tl.math.sqrt_rn``; ``nearest_int`` is ggml's bit trick;
the candidate axis is never reduced in float (only masked integer sums of bit patterns or rows,
which are exact); float constants are the exact float32 values of ggml's ``f`` literals. The
neighbour search walks each list in ggml's order from ``FLT_MAX`` with C's strict ``<`` (the
first smallest distance wins), ``j`` running to the longest list among the program's live
entries with shorter lists masked; an entry that finds no distance below ``FLT_MAX`` (weights
overflowing to inf/NaN) is flagged, as is a final scale that is not ``>= 0``, and
:func:`encode` raises :class:`~lowbit.errors.RangeError` where ggml's ``GGML_ASSERT`` aborts.

On a real GPU the search kernel holds 16 sub-blocks x NC candidates per program (NC = 16 or
32: tiles of 256 or 512 entries, 8 warps; compiled for sm_90 it needs 126-128 registers and
no spills); its cost is the neighbour walks, which a program runs for as long as its longest
list (ggml's lists hold up to 150 / 292 / 70 rows for IQ2_XXS / XS / S, 18 / 30 / 8 on
average), eight multiply-adds per step. The tables (``kmap`` 171 KiB, the lists, the grid as
float32) are read through the caches. The loops over groups and over a group's eight elements
are real loops, not unrolled: unrolled, the many loads they make slow Triton's coalescing pass
to minutes per kernel. In the interpreter each launch is one program over the whole chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from ...errors import RangeError
from ..cpu._iq2_enc import _IDS
from ..cpu._iq2_maps import iq2_maps
from ._ggml import FP, MAGIC, col, fp32_to_fp16, lut, programs_block, st_u8, st_u16, sumsq

IQ2_XXS: tl.constexpr = tl.constexpr(0)
IQ2_XS: tl.constexpr = tl.constexpr(1)
IQ2_S: tl.constexpr = tl.constexpr(2)

FLT_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)
C01: tl.constexpr = tl.constexpr(0.10000000149011612)  # 0.1f
EPS: tl.constexpr = tl.constexpr(1.0000000036274937e-15)  # GROUP_MAX_EPS = 1e-15f
EPS_S: tl.constexpr = tl.constexpr(9.99999993922529e-09)  # GROUP_MAX_EPS_IQ2_S = 1e-8f
FUDGE_S: tl.constexpr = tl.constexpr(0.987500011920929)  # 0.9875f

#: bytes per block of each type
_TS = {0: 66, 1: 74, 2: 82}
#: blocks per launch (bounds the scratch: 12 bytes per element, 4 per group, 16 per sub-block)
CHUNK_BLOCKS = 1 << 14


@triton.jit
def _prep_kernel(x_ptr, qw_ptr, ss_ptr, xv_ptr, w_ptr, wa_ptr, sg_ptr, n_grp, g0, nb,
                 T: tl.constexpr, HAS_QW: tl.constexpr, BLOCK: tl.constexpr):
    lg = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # group within the chunk
    m = lg < n_grp
    lg = tl.where(m, lg, 0)
    g = g0 + lg  # group in the tensor: 32 per 256-block
    blk = g >> 5
    xp = x_ptr + g * 8
    qp = qw_ptr + (blk % nb) * 256 + (g & 31) * 8
    ss = tl.load(ss_ptr + blk)
    if T == IQ2_S:
        sigma2 = tl.math.div_rn(ss * 2.0, tl.zeros_like(ss) + 256.0)  # C: 2*sumx2/QK_K
    else:
        sigma2 = tl.math.div_rn(ss, tl.zeros_like(ss) + 256.0)  # C: sumx2/QK_K
    s = tl.zeros([BLOCK], tl.int32)
    nflip = tl.zeros([BLOCK], tl.int32)
    imin = tl.zeros([BLOCK], tl.int32)
    mn = tl.zeros([BLOCK], tl.float32)
    for i in tl.static_range(8):
        xi = tl.load(xp + i)
        neg = xi < 0
        s = s | tl.where(neg, 1 << i, 0)
        nflip += neg.to(tl.int32)
        if T != IQ2_S:  # the element of least weight*x*x, the first on ties (C's strict <)
            if HAS_QW:
                wi = tl.load(qp + i) * tl.math.sqrt_rn(sigma2 + xi * xi)
            else:
                wi = sigma2 * 0.25 + xi * xi
            ax = (wi * xi) * xi  # C: weight[8*k+i]*xb[8*k+i]*xb[8*k+i]
            if i == 0:
                mn = ax
            else:
                up = ax < mn
                mn = tl.where(up, ax, mn)
                imin = tl.where(up, i, imin)
    if T != IQ2_S:
        odd = (nflip & 1) != 0
        flip = tl.where(odd, imin, 8)  # 8: none
        s = tl.where(odd, s ^ (1 << imin), s) & 127
    else:  # IQ2_S keeps all eight signs
        flip = imin * 0 + 8
    op = lg * 8
    for i in tl.static_range(8):
        xi = tl.load(xp + i)
        if HAS_QW:  # C: weight[i] = qw[i] * sqrtf(sigma2 + xb[i]*xb[i])
            wi = tl.load(qp + i) * tl.math.sqrt_rn(sigma2 + xi * xi)
        else:  # IQ2_S only: weight[i] = 0.25f*sigma2 + xb[i]*xb[i]
            wi = sigma2 * 0.25 + xi * xi
        xv = tl.where(xi >= 0, xi, -xi)  # C's branch: -0.0 stays -0.0
        xv = tl.where(flip == i, -xv, xv)
        tl.store(xv_ptr + op + i, xv, mask=m)
        tl.store(w_ptr + op + i, wi, mask=m)
        tl.store(wa_ptr + op + i, tl.math.sqrt_rn(wi), mask=m)
    tl.store(sg_ptr + lg, s, mask=m)


@triton.jit
def _qp32(xp, wp, zero_lane, N: tl.constexpr, NMAX: tl.constexpr):
    """ggml ``make_qp_quants(N, NMAX, xval, (uint8_t*)L, weight)``, its scale only (what
    IQ2_XXS keeps). The codes are C's ``uint8_t L[]`` (a negative code wraps: the magnitude
    that IQ2_XXS's parity trick negated), held in a ``[lanes, N]`` integer tile; the sums after
    the final rounding use C's int ``l``, the passes the stored uint8. The element loops are
    real loops, not unrolled (32 unrolled elements per pass and candidate take the compiler
    minutes)."""
    x0 = tl.load(xp)
    fz = tl.zeros_like(x0)
    idx = tl.arange(0, N)[None, :]
    mx = fz
    for i in range(N):
        xi = tl.load(xp + i)
        mx = tl.where(mx > xi, mx, xi)  # C: MAX(max, x[i])
    zero = mx < EPS
    iscale = tl.math.div_rn(fz + NMAX, mx)
    scale = tl.math.div_rn(fz + 1.0, iscale)
    best_mse = fz
    for i in range(N):
        xi = tl.load(xp + i)
        L = ((((iscale * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000) & 0xFF  # C: L[i] = nearest_int(iscale*x[i])
        diff = xi - scale * L.to(tl.float32)
        best_mse += (tl.load(wp + i) * diff) * diff
    for isv in tl.static_range(-4, 5):
        if isv != 0:
            iscale_is = tl.math.div_rn((fz + C01) * isv + NMAX, mx)  # C: (0.1f*is + nmax)/max
            scale_is = tl.math.div_rn(fz + 1.0, iscale_is)
            mse = fz
            for i in range(N):
                xi = tl.load(xp + i)
                l = tl.minimum((((iscale_is * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX)
                diff = xi - scale_is * l.to(tl.float32)
                mse += (tl.load(wp + i) * diff) * diff
            better = mse < best_mse
            best_mse = tl.where(better, mse, best_mse)
            iscale = tl.where(better, iscale_is, iscale)
    Lt = tl.zeros([x0.shape[0], N], tl.int32)
    sumlx = fz
    suml2 = fz
    for i in range(N):
        xi = tl.load(xp + i)
        qi = tl.load(wp + i)
        l = tl.minimum((((iscale * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX)
        Lt = tl.where(idx == i, (l & 0xFF)[:, None], Lt)
        fl = l.to(tl.float32)  # C sums the int l, not the uint8 L[i]
        sumlx += (qi * xi) * fl
        suml2 += (qi * fl) * fl
    # up to 5 passes; ggml stops after a pass that changes nothing, and such a pass would change
    # nothing again (same state), so quiet lanes may keep sweeping while others still change
    npass = tl.where(zero | zero_lane, 5, 0)
    chg = npass * 0 + 1
    while tl.max(tl.where(npass < 5, chg, 0), axis=0) > 0:
        live = npass < 5
        chg = npass * 0
        for i in range(N):
            xi = tl.load(xp + i)
            qi = tl.load(wp + i)
            Lo = tl.sum(tl.where(idx == i, Lt, 0), axis=1)
            Li = Lo.to(tl.float32)
            slx = sumlx - (qi * xi) * Li  # C: sumlx - w*x[i]*L[i]
            sl2 = suml2 - (qi * Li) * Li
            new_l = tl.minimum((((tl.math.div_rn(xi * sl2, slx)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX)
            fn = new_l.to(tl.float32)
            slx2 = slx + (qi * xi) * fn
            sl22 = sl2 + (qi * fn) * fn
            ok = live & (slx > 0) & (sl2 > 0) & (new_l != Lo) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            chg = chg | ok.to(tl.int32)
            Lt = tl.where((idx == i) & ok[:, None], (new_l & 0xFF)[:, None], Lt)
            sumlx = tl.where(ok, slx2, sumlx)
            suml2 = tl.where(ok, sl22, suml2)
        npass += 1
    scale = tl.where(suml2 > 0, tl.math.div_rn(sumlx, suml2), 0.0)
    return tl.where(zero, 0.0, scale)


@triton.jit
def _snap(xp, ap, idv, sc, live, kmap_ptr, nb_ptr, grid_ptr):
    """One group of eight (its xval at ``xp``, waux at ``ap``, per lane) at the inverse scales
    ``idv`` and scales ``sc`` (tiles, one entry per candidate): the levels
    ``MAX(0, MIN(2, nearest_int(0.5f*(id*xval - 1))))``, their key's grid row, or off the grid
    the row of the key's neighbour list with the smallest ``sum waux*diff*diff``
    (``diff = sc*grid - xval``), the first such one (ggml ``iq2_find_best_neighbour``); -1 where
    none is below FLT_MAX. Lists are walked only where ``live``. Returns (row, on the grid)."""
    key = tl.zeros(idv.shape, tl.int32)
    for i in range(8):
        xv = tl.load(xp + i)[:, None]
        f = (idv * xv - 1.0) * 0.5
        l = (((f + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000)
        l = tl.maximum(0, tl.minimum(2, l))
        key = key | (l << (2 * i))
    km = tl.load(kmap_ptr + key)
    on = km >= 0
    o = tl.where(on, 0, -km - 1)  # the list: its count at nb[o], its rows after it
    cnt = tl.where(live & ~on, tl.load(nb_ptr + o), 0)
    best = tl.zeros(idv.shape, tl.float32) + FLT_MAX
    row = tl.zeros(idv.shape, tl.int32) - 1
    jmax = tl.max(tl.max(cnt, axis=1), axis=0)
    for j in range(0, jmax):
        lj = j < cnt
        r = tl.load(nb_ptr + o + 1 + j, mask=lj, other=0)
        d2 = tl.zeros(idv.shape, tl.float32)
        for i in range(8):  # C: float diff = scale*q - xval[i]; d2 += weight[i]*diff*diff;
            diff = sc * tl.load(grid_ptr + r * 8 + i) - tl.load(xp + i)[:, None]
            d2 = d2 + (tl.load(ap + i)[:, None] * diff) * diff
        better = lj & (d2 < best)  # C: if (d2 < best_d2): ordered, NaN never wins
        best = tl.where(better, d2, best)
        row = tl.where(better, r, row)
    return tl.where(on, km, row), on


@triton.jit
def _fit(xp, wp, gi, grid_ptr, sumqx, sumq2):
    """C: for i: w = weight[i]; q = 2*L[i] + 1; sumqx += w*xval[i]*q; sumq2 += w*q*q, over one
    group whose levels are grid row ``gi`` (q = the row's value 1, 3 or 5)."""
    for i in range(8):
        w = tl.load(wp + i)
        q = tl.load(grid_ptr + gi * 8 + i)
        sumqx += (w * tl.load(xp + i))[:, None] * q
        sumq2 += (w[:, None] * q) * q
    return sumqx, sumq2


@triton.jit
def _search_kernel(xv_ptr, w_ptr, wa_ptr, sgi_ptr, sc_ptr, gi_ptr, sgo_ptr, bad_ptr, kmap_ptr, nb_ptr, grid_ptr,
                   n_sub, T: tl.constexpr, BLOCK: tl.constexpr):
    SB: tl.constexpr = 32 if T == IQ2_XXS else 16  # elements per sub-block
    NCAND: tl.constexpr = 13 if T == IQ2_XXS else 19  # is = -6 .. 6 or -9 .. 9
    NC: tl.constexpr = 16 if T == IQ2_XXS else 32  # the candidate axis, padded
    IS0: tl.constexpr = 6 if T == IQ2_XXS else 9
    NG: tl.constexpr = SB // 8
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    xp = xv_ptr + sb * SB
    wp = w_ptr + sb * SB
    ap = wa_ptr + sb * SB
    mx = tl.load(xp)
    for i in range(1, SB):
        v = tl.load(xp + i)
        mx = tl.where(mx > v, mx, v)  # C: MAX(max, xval[i])
    fz = tl.zeros_like(mx)
    if T == IQ2_S:
        valid = m & ~(mx < EPS_S)
    else:
        valid = m & ~(mx < EPS)
    cidx = tl.arange(0, NC)[None, :]
    zt = fz[:, None] + tl.zeros([1, NC], tl.float32)
    if T == IQ2_XXS:
        scale = _qp32(xp, wp, ~valid, 32, 4)  # C: make_qp_quants(32, kMaxQ+1, xval, L, weight)
        eff_max = scale * 3.0
        valid = valid & ~(eff_max <= 0)
        den = eff_max
    else:
        scale = tl.math.div_rn(mx, fz + 5.0)  # C: max/(2*kMaxQ-1)
        den = mx
    # C: id = (2*kMaxQ-1+is*0.1f)/den, this_scale = 1/id
    idc = tl.math.div_rn(((cidx - IS0).to(tl.float32) + zt) * C01 + 5.0, den[:, None] + zt)
    tsc = tl.math.div_rn(zt + 1.0, idc)
    vt = valid[:, None] & (cidx < NCAND)
    sumqx = zt
    sumq2 = zt
    gpack = tl.zeros([BLOCK, NC], tl.int64)  # each candidate's rows, 16 bits per group
    onpack = tl.zeros([BLOCK, NC], tl.int32)  # and which groups were on the grid as rounded
    bad = tl.zeros([BLOCK], tl.int32)
    for k in range(NG):
        gk, on = _snap(xp + 8 * k, ap + 8 * k, idc, tsc, vt, kmap_ptr, nb_ptr, grid_ptr)
        bad = bad | tl.max((vt & (gk < 0)).to(tl.int32), axis=1)
        gk = tl.maximum(gk, 0)
        sumqx, sumq2 = _fit(xp + 8 * k, wp + 8 * k, gk, grid_ptr, sumqx, sumq2)
        gpack = gpack | (gk.to(tl.int64) << (16 * k))
        onpack = onpack | (on.to(tl.int32) << k)
    # the candidate ggml keeps: a strict improvement of sumqx^2/sumq2, in ggml's order
    best = fz
    pick = tl.zeros([BLOCK], tl.int32) - 1
    for c in tl.static_range(NCAND):
        sx = col(sumqx, cidx, c)
        s2 = col(sumq2, cidx, c)
        acc = (s2 > 0) & (sx * sx > best * s2)
        snew = tl.math.div_rn(sx, s2)
        scale = tl.where(acc, snew, scale)  # C: scale = sumqx/sumq2; best = scale*sumqx
        best = tl.where(acc, snew * sx, best)
        pick = tl.where(acc, c, pick)
    sel = cidx == pick[:, None]
    gp = tl.sum(tl.where(sel, gpack, 0), axis=1)  # no pick: rows 0 (IQ2_XS/S's L = 0 is row 0)
    onp = tl.where(pick >= 0, tl.sum(tl.where(sel, onpack, 0), axis=1), (1 << NG) - 1)
    if T == IQ2_XXS:
        refine = valid & (scale > 0)  # every group, at the winning scale
    else:
        refine = valid & (scale > 0) & (onp != (1 << NG) - 1)  # the groups off the grid as rounded
    idr = tl.math.div_rn(fz + 1.0, scale)[:, None]
    scr = scale[:, None]
    rqx = fz[:, None]
    rq2 = fz[:, None]
    gfin = tl.zeros([BLOCK], tl.int64)
    for k in range(NG):
        gk_p = ((gp >> (16 * k)) & 0xFFFF).to(tl.int32)
        if T == IQ2_XXS:
            need = refine
        else:
            need = refine & (((onp >> k) & 1) == 0)
        gk, on = _snap(xp + 8 * k, ap + 8 * k, idr, scr, need[:, None], kmap_ptr, nb_ptr, grid_ptr)
        gk = tl.sum(gk, axis=1)
        bad = bad | (need & (gk < 0)).to(tl.int32)
        gk = tl.where(need, tl.maximum(gk, 0), gk_p)
        rqx, rq2 = _fit(xp + 8 * k, wp + 8 * k, gk[:, None], grid_ptr, rqx, rq2)
        gfin = gfin | (gk.to(tl.int64) << (16 * k))
    rqx = tl.sum(rqx, axis=1)  # (one column: the sum of a single entry, exact)
    rq2 = tl.sum(rq2, axis=1)
    scale = tl.where(refine & (rq2 > 0), tl.math.div_rn(rqx, rq2), scale)
    neg = scale < 0  # C: "should never happen": flip the scale and the signs
    scale = tl.where(neg, -scale, scale)
    bad = bad | (valid & ~(scale >= 0)).to(tl.int32)  # GGML_ASSERT(scale >= 0)
    tl.store(sc_ptr + sb, tl.where(valid, scale, 0.0), mask=m)
    tl.store(bad_ptr + sb, bad, mask=m)
    for k in range(NG):
        s = tl.load(sgi_ptr + sb * NG + k)
        if T == IQ2_S:
            s = tl.where(neg, ~s & 255, s)
        else:
            s = tl.where(neg, ~s & 127, s)
        tl.store(sgo_ptr + sb * NG + k, tl.where(valid, s, 0), mask=m)
        tl.store(gi_ptr + sb * NG + k, tl.where(valid, ((gfin >> (16 * k)) & 0xFFFF).to(tl.int32), 0), mask=m)


@triton.jit
def _pack_kernel(sc_ptr, gi_ptr, sg_ptr, out_ptr, n_blk, b0, nb, RB, T: tl.constexpr, TS: tl.constexpr,
                 BLOCK: tl.constexpr):
    NS: tl.constexpr = 8 if T == IQ2_XXS else 16  # sub-blocks per block
    lb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = lb < n_blk
    lb = tl.where(m, lb, 0)
    blk = b0 + lb
    row = blk // nb
    ob = out_ptr + row * RB + (blk - row * nb) * TS
    m2 = m[:, None]
    scp = sc_ptr + lb * NS
    ms = tl.zeros([BLOCK], tl.float32)
    for ib in tl.static_range(NS):
        s = tl.load(scp + ib)
        ms = tl.where(ms > s, ms, s)  # C: MAX(max_scale, scale)
    nz = ms != 0  # C: if (!max_scale)
    d = tl.math.div_rn(ms, tl.zeros_like(ms) + 31.0)
    idd = tl.math.div_rn(tl.zeros_like(ms) + 1.0, d)[:, None]
    if T == IQ2_S:
        st_u16(ob, tl.where(nz, fp32_to_fp16(d * FUDGE_S), 0), m)
    else:
        st_u16(ob, tl.where(nz, fp32_to_fp16(d), 0), m)
    jn = tl.arange(0, NS)[None, :]
    ls = ((((idd * tl.load(scp[:, None] + jn) - 1.0) * 0.5 + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000)
    ls = tl.where(nz[:, None], tl.maximum(0, tl.minimum(15, ls)), 0)  # C: nearest_int(0.5f*(id*scales[ib]-1))
    gp = gi_ptr + lb * 32  # 32 groups of eight per block
    sp = sg_ptr + lb * 32
    if T == IQ2_XXS:  # per 32: four grid bytes, then a u32 of 4 x 7 sign bits and the scale on top
        j4 = tl.arange(0, 4)[None, :]
        for ib in tl.static_range(8):
            g = tl.load(gp[:, None] + 4 * ib + j4)
            st_u8(ob[:, None] + 2 + 8 * ib + j4, tl.where(nz[:, None], g, 0), m2)
            a = tl.sum(tl.load(sp[:, None] + 4 * ib + j4) << (7 * j4), axis=1)  # disjoint bits: an exact integer sum
            a = a | (tl.sum(tl.where(jn == ib, ls, 0), axis=1) << 28)
            a = tl.where(nz, a, 0)
            for q in tl.static_range(4):
                st_u8(ob + 2 + 8 * ib + 4 + q, a >> (8 * q), m)
    else:
        j32 = tl.arange(0, 32)[None, :]
        g = tl.load(gp[:, None] + j32)
        s = tl.load(sp[:, None] + j32)
        j8 = tl.arange(0, 8)[None, :]
        lo = tl.zeros([BLOCK, 8], tl.int32)
        hi = tl.zeros([BLOCK, 8], tl.int32)
        for ib in tl.static_range(NS):  # scale nibbles: sub-block 2p low, 2p + 1 high of byte p
            l = tl.sum(tl.where(jn == ib, ls, 0), axis=1)[:, None]
            if ib % 2 == 0:
                lo = tl.where(j8 == ib // 2, l, lo)
            else:
                hi = tl.where(j8 == ib // 2, l << 4, hi)
        if T == IQ2_XS:  # u16 per group: 9-bit grid row | 7 sign bits << 9; scales at 66
            v = tl.where(nz[:, None], g | (s << 9), 0)
            st_u16(ob[:, None] + 2 + 2 * j32, v, m2)
            st_u8(ob[:, None] + 66 + j8, lo | hi, m2)
        else:  # qs: low bytes of the rows, then the sign bytes; qh: two bits per row; scales at 74
            st_u8(ob[:, None] + 2 + j32, g, m2)
            st_u8(ob[:, None] + 34 + j32, s, m2)
            qh = tl.zeros([BLOCK, 8], tl.int32)
            for q in tl.static_range(4):
                qh = qh | ((tl.load(gp[:, None] + 4 * j8 + q) >> 8) << (2 * q))
            st_u8(ob[:, None] + 66 + j8, qh, m2)
            st_u8(ob[:, None] + 74 + j8, lo | hi, m2)


def _tables(t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kind = ("iq2_xxs", "iq2_xs", "iq2_s")[t]
    kmap = lut(f"iq2enc_kmap{t}", device, lambda: iq2_maps(kind)[1].astype(np.int32))
    nb = lut(f"iq2enc_nb{t}", device, lambda: iq2_maps(kind)[2].astype(np.int32))
    grid = lut(f"iq2enc_grid{t}", device, lambda: iq2_maps(kind)[0].astype(np.float32).reshape(-1))
    return kmap, nb, grid


def encode(codec_id: str, x: torch.Tensor, qw: torch.Tensor | None, out: torch.Tensor) -> None:
    """float32 rows ``x[n, K]`` (K a multiple of 256) -> ``out[n, K/256*type_size]``, ggml's bytes;
    ``qw`` the float32 imatrix ``[K]`` (required by ggml for IQ2_XXS and IQ2_XS) or None."""
    t = _IDS[codec_id]
    if qw is None and t != 2:
        raise ValueError(f"{codec_id}: ggml quantizes this type only with quant_weights (an imatrix)")
    rows, K = x.shape
    nb = K // 256
    n_blk = rows * nb
    if not n_blk:
        return
    dev = x.device
    x = x.to(torch.float32).contiguous()
    has_qw = qw is not None
    qwt = torch.as_tensor(qw).to(device=dev, dtype=torch.float32).contiguous() if has_qw else x
    kmap, nbr, grid = _tables(t, dev)
    ss = sumsq(x, 256)
    sb_per = 8 if t == 0 else 16  # sub-blocks per block
    ts = _TS[t]
    RB = out.shape[1]
    cb = min(CHUNK_BLOCKS, n_blk)
    xv = torch.empty(cb * 256, dtype=torch.float32, device=dev)
    w = torch.empty_like(xv)
    wa = torch.empty_like(xv)
    sgi = torch.empty(cb * 32, dtype=torch.int32, device=dev)
    sgo = torch.empty_like(sgi)
    gi = torch.empty_like(sgi)
    sc = torch.empty(cb * sb_per, dtype=torch.float32, device=dev)
    bad = torch.empty(cb * sb_per, dtype=torch.int32, device=dev)
    for b0 in range(0, n_blk, cb):
        nblk = min(cb, n_blk - b0)
        n_grp = nblk * 32
        blk = programs_block(n_grp, 128)
        _prep_kernel[(triton.cdiv(n_grp, blk),)](x, qwt, ss, xv, w, wa, sgi, n_grp, b0 * 32, nb, T=t, HAS_QW=has_qw,
                                                 BLOCK=blk, **FP)
        n_sub = nblk * sb_per
        blk = programs_block(n_sub, 16)
        _search_kernel[(triton.cdiv(n_sub, blk),)](xv, w, wa, sgi, sc, gi, sgo, bad, kmap, nbr, grid, n_sub, T=t,
                                                   BLOCK=blk, num_warps=8, **FP)
        if bool(bad[:n_sub].any()):
            first = int(torch.nonzero(bad[:n_sub])[0, 0])
            r = (b0 + first // sb_per) // nb
            raise RangeError(f"{codec_id}: row {r}: the importance weights are too large for float32 error sums "
                             f"(they overflow to inf/NaN and ggml aborts on this input); nothing was encoded")
        blk = programs_block(nblk, 64)
        _pack_kernel[(triton.cdiv(nblk, blk),)](sc, gi, sgo, out, nblk, b0, nb, RB, T=t, TS=ts, BLOCK=blk,
                                                num_warps=8, **FP)
