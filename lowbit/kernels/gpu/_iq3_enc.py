"""Triton encoders of GGUF IQ3_XXS (ggml type 18) and IQ3_S (21): the GPU twins of
:mod:`lowbit.kernels.cpu._iq3_enc` (ggml's ``quantize_row_iq3_xxs_impl`` /
``quantize_row_iq3_s_impl``), the same bytes, with or without an importance matrix.

Two launches (per chunk of rows):

A. ``_search_kernel``, one lane per 32-element sub-block, running ggml's scalar code for it:
   the weights, signs (IQ3_XXS: the parity flip of the least important element) and ``max``;
   then the scale search with ggml's candidates (is = -15..15 for IQ3_XXS, -9..9 for IQ3_S) on
   the second axis of a ``[lanes, 32]`` tile: every candidate rounds the eight quadruplets,
   looks their keys up in ``kmap`` and, off the grid, walks the key's neighbour list
   (:func:`_quad`); its ``sumqx``/``sumq2`` run element by element in C's order, one tile
   column per candidate, and its eight chosen keys are packed in two int64 tile entries. The
   winner is then picked in ggml's order (strict improvement of ``sumqx**2 / sumq2``, the first
   on ties), its keys read back with an integer masked sum, the off-grid quadruplets re-rounded
   with the winning scale (IQ3_S: all of them) and the least-squares scale recomputed. Out go
   the sub-block's scale (float32) and four int32 words: its eight grid bytes, its sign bits,
   and the ninth grid-index bits (IQ3_S) with the "not all zero" and "ggml would abort" flags.
B. ``_pack_kernel``, one lane per 256-element block: ``max_scale`` over the non-zero sub-blocks
   in C's order, the fp16 ``d`` with ggml's fudge factor, the 4-bit sub-block scales, and the
   block's bytes. IQ3_S moves its ``qs`` / ``signs`` write positions on only past non-zero
   sub-blocks (ggml's quirk, see the CPU module): the slot of a sub-block is the count of
   non-zero sub-blocks before it (an integer ``tl.cumsum``).

Bit-exactness on a GPU: every float operation is C's float32 operation in C's order (``a*b*c``
is ``(a*b)*c``, sums left to right, launched with ``enable_fp_fusion=False``), divisions are
``tl.math.div_rn`` and square roots ``tl.math.sqrt_rn``; ``nearest_int`` is ggml's bit trick;
the candidate axis is never reduced in float (only masked integer sums of bit patterns or
keys, which are exact); the neighbour search keeps C's first strict minimum by walking each
list in order (``j`` from 0 up to the longest list among the program's lanes, shorter lists
masked), starting from ``FLT_MAX`` as C does, so a lane that finds no finite distance is
flagged and :func:`encode` raises :class:`~lowbit.errors.RangeError` where ggml's
``GGML_ASSERT`` aborts. Float constants are the exact float32 values of ggml's ``f`` literals.

On a real GPU the search kernel holds 16 sub-blocks x 32 candidates per program (a few dozen
``[16, 32]`` tiles live); its cost is dominated by the neighbour walks, up to 38 steps per
quadruplet and phase, which a program runs for as long as its longest list. The element,
quadruplet and candidate loops are ``range`` loops, not ``tl.static_range``: unrolled, the kernel
took 130-260 s per variant to compile for sm_90 (Triton 3.9, on 2 loaded cores); as loops it
takes 3-4 s (no ``fma.rn.f32``, only ``div.rn.f32`` / ``sqrt.rn.f32`` in its PTX). In the
interpreter the whole chunk is one program.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from ...errors import RangeError
from ..cpu._iq3_enc import _GRID_SIZE, _IDS
from ..cpu._iq3_maps import iq3_maps
from ._ggml import FP, MAGIC, col, fp32_to_fp16, lut, programs_block, st_u8, st_u16, sumsq

NC: tl.constexpr = tl.constexpr(32)  # the candidate axis (31 or 19 candidates, padded)
FLT_MAX: tl.constexpr = tl.constexpr(3.4028234663852886e38)
EPS_XXS: tl.constexpr = tl.constexpr(9.99999993922529e-09)  # GROUP_MAX_EPS_IQ3_XXS = 1e-8f
C02: tl.constexpr = tl.constexpr(0.20000000298023224)  # 0.2f
FUDGE_XXS: tl.constexpr = tl.constexpr(1.0125000476837158)  # 1.0125f
FUDGE_S: tl.constexpr = tl.constexpr(1.0329999923706055)  # 1.033f

#: sub-blocks per launch (bounds the scratch: 20 bytes per sub-block)
CHUNK_SUB = 1 << 22


@triton.jit
def _elem(xp, qp, i, sigma2, flips, XXS: tl.constexpr, HAS_QW: tl.constexpr):
    """Element ``i`` of each lane's sub-block: (x, xval, weight). xval = |x| as C forms it
    (``x >= 0 ? x : -x``, so -0.0 stays -0.0), negated where IQ3_XXS flipped it (the 4-bit field
    ``i // 8`` of ``flips`` names the flipped position of that group of 8, 15 for none)."""
    xi = tl.load(xp + i)
    xv = tl.where(xi >= 0, xi, -xi)
    if XXS:
        xv = tl.where(((flips >> (4 * (i // 8))) & 15) == (i % 8), -xv, xv)
    if HAS_QW:
        w = tl.load(qp + i) * tl.math.sqrt_rn(sigma2 + xi * xi)  # C: qw[i] * sqrtf(sigma2 + xb[i]*xb[i])
    else:
        w = xi * xi
    return xi, xv, w


@triton.jit
def _quad(x0, x1, x2, x3, a0, a1, a2, a3, idv, sc, act, kmap_ptr, nb_ptr):
    """One quadruplet under inverse scale ``idv`` (a tile; x* and a* = sqrt(weight) broadcast to
    it): the key of the grid point ggml chooses (``l0 | l1 << 3 | l2 << 6 | l3 << 9``), whether
    the rounded key was on the grid, and 1 where ggml's ``iq3_find_best_neighbour`` would abort
    (no neighbour at a distance below FLT_MAX). ``sc`` is the scale the neighbours are measured
    with; lanes with ``act`` = 0 skip the neighbour walk. ``nb_ptr`` holds the neighbour lists
    with each entry's key in place of its grid index."""
    # C: l = nearest_int(0.5f*(id*xval[i]-1)), clamped to 0..kMaxQ-1 (nearest_int inlined)
    l0 = tl.minimum(tl.maximum(((((0.5 * (idv * x0 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 7)
    l1 = tl.minimum(tl.maximum(((((0.5 * (idv * x1 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 7)
    l2 = tl.minimum(tl.maximum(((((0.5 * (idv * x2 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 7)
    l3 = tl.minimum(tl.maximum(((((0.5 * (idv * x3 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 7)
    u = l0 | (l1 << 3) | (l2 << 6) | (l3 << 9)
    g = tl.load(kmap_ptr + u)
    on = g >= 0
    o = tl.where(on, 0, -g - 1)  # the list's start (count, then the entries)
    n = tl.where(on | (act == 0), 0, tl.load(nb_ptr + o))
    best = tl.zeros_like(idv) + FLT_MAX  # C: float best_d2 = FLT_MAX
    bk = n * 0 - 1
    nmax = tl.max(tl.max(n, axis=1), axis=0)
    j = nmax * 0
    while j < nmax:
        valid = j < n
        w = tl.load(nb_ptr + o + 1 + j, mask=valid, other=0)
        # C: float diff = scale*q - xval[i]; d2 += weight[i]*diff*diff; (q = 2l + 1)
        d = sc * ((w & 7) * 2 + 1).to(tl.float32) - x0
        d2 = 0.0 + (a0 * d) * d
        d = sc * (((w >> 3) & 7) * 2 + 1).to(tl.float32) - x1
        d2 = d2 + (a1 * d) * d
        d = sc * (((w >> 6) & 7) * 2 + 1).to(tl.float32) - x2
        d2 = d2 + (a2 * d) * d
        d = sc * (((w >> 9) & 7) * 2 + 1).to(tl.float32) - x3
        d2 = d2 + (a3 * d) * d
        upd = valid & (d2 < best)  # C: if (d2 < best_d2): the first of equal distances stays
        best = tl.where(upd, d2, best)
        bk = tl.where(upd, w, bk)
        j += 1
    bad = (act != 0) & (on == 0) & (bk < 0)
    key = tl.where(on, u, tl.where(bk < 0, 0, bk))
    return key, on.to(tl.int32), bad.to(tl.int32)


@triton.jit
def _field(ka, kb, k):
    """Key of quadruplet ``k`` from the packed pair (keys 0..3 in ``ka``, 4..7 in ``kb``, 12 bits each)."""
    return (tl.where(k < 4, ka, kb) >> (12 * (k & 3))).to(tl.int32) & 0xFFF


@triton.jit
def _put(ka, kb, k, key, do):
    """``_field(ka, kb, k) = key`` where ``do``: adding the difference replaces the field exactly."""
    delta = tl.where(do, key - _field(ka, kb, k), 0).to(tl.int64) << (12 * (k & 3))
    return tl.where(k < 4, ka + delta, ka), tl.where(k < 4, kb, kb + delta)


@triton.jit
def _search_kernel(x_ptr, qw_ptr, ss_ptr, kmap_ptr, nb_ptr, sc_ptr, pk_ptr, n_sub, nsr, K,
                   XXS: tl.constexpr, HAS_QW: tl.constexpr, BLOCK: tl.constexpr):
    NIS: tl.constexpr = 15 if XXS else 9
    NCAND: tl.constexpr = 2 * NIS + 1
    sb = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)[:, None]  # [BLOCK, 1]
    m = sb < n_sub
    sb = tl.where(m, sb, 0)
    row = sb // nsr
    si = sb - row * nsr
    xp = x_ptr + row * K + si * 32
    qp = qw_ptr + si * 32
    fz = tl.zeros([BLOCK, 1], tl.float32)
    iz = tl.zeros([BLOCK, 1], tl.int32)
    sigma2 = fz
    if HAS_QW:
        sigma2 = tl.math.div_rn(tl.load(ss_ptr + sb // 8) * 2.0, fz + 256.0)  # C: 2*sumx2/QK_K

    # ---- signs (IQ3_XXS: an odd count of minus signs flips the least important element) and max
    sgn = iz
    flips = iz + 0xFFFF
    mx = fz
    for g in range(4):  # (loops, not unrolled: the kernel compiles in seconds, not minutes)
        s = iz
        nfl = iz
        imin = iz
        mn = fz
        for i in range(8):
            xi, xv, w = _elem(xp, qp, 8 * g + i, sigma2, flips, False, HAS_QW)
            neg = tl.where(xi >= 0, 0, 1)
            s = s | (neg << i)
            nfl += neg
            if XXS:
                ax = (w * xi) * xi  # C: weight[8*k+i]*xb[8*k+i]*xb[8*k+i]; if (ax < min) from i = 1 on
                lt = (ax < mn) | (i == 0)
                mn = tl.where(lt, ax, mn)
                imin = tl.where(lt, i, imin)
        if XXS:
            odd = (nfl & 1) != 0
            s = tl.where(odd, s ^ ((iz + 1) << imin), s)
            flips = tl.where(odd, (flips & ((iz + 0xFFFF) ^ ((iz + 15) << (4 * g)))) | (imin << (4 * g)), flips)
            sgn = sgn | ((s & 127) << (7 * g))
        else:
            sgn = sgn | (s << (8 * g))
        for i in range(8):
            xi, xv, w = _elem(xp, qp, 8 * g + i, sigma2, flips, XXS, HAS_QW)
            mx = tl.where((8 * g + i != 0) & (mx > xv), mx, xv)  # C: max = xval[0], then MAX(max, xval[i])
    if XXS:
        zero = mx < EPS_XXS
    else:
        zero = mx == 0.0
    act = m & (zero == 0)

    # ---- the candidate scales, one per column: codes, keys and ggml's two sums
    cidx = tl.arange(0, NC)[None, :]
    zt = fz + tl.zeros([1, NC], tl.float32)
    isf = (cidx - NIS).to(tl.float32) + zt
    idv = tl.math.div_rn(isf * C02 + 15.0, mx + zt)  # C: (2*kMaxQ-1+is*0.2f)/max
    tsv = tl.math.div_rn(zt + 1.0, idv)  # C: this_scale = 1/id
    tact = act & (cidx < NCAND)
    sqx = zt
    sq2 = zt
    KA = tl.zeros([BLOCK, NC], tl.int64)
    KB = tl.zeros([BLOCK, NC], tl.int64)
    ON = tl.zeros([BLOCK, NC], tl.int32)
    BAD = tl.zeros([BLOCK, NC], tl.int32)
    for k in range(8):
        _, x0, w0 = _elem(xp, qp, 4 * k, sigma2, flips, XXS, HAS_QW)
        _, x1, w1 = _elem(xp, qp, 4 * k + 1, sigma2, flips, XXS, HAS_QW)
        _, x2, w2 = _elem(xp, qp, 4 * k + 2, sigma2, flips, XXS, HAS_QW)
        _, x3, w3 = _elem(xp, qp, 4 * k + 3, sigma2, flips, XXS, HAS_QW)
        key, on, bd = _quad(x0, x1, x2, x3, tl.math.sqrt_rn(w0), tl.math.sqrt_rn(w1), tl.math.sqrt_rn(w2),
                            tl.math.sqrt_rn(w3), idv, tsv, tact, kmap_ptr, nb_ptr)
        BAD = BAD | bd
        ON = ON | (on << k)
        KA, KB = _put(KA, KB, k, key, tact | (tact == 0))
        # C: float q = 2*Laux[i] + 1; sumqx += w*xval[i]*q; sumq2 += w*q*q;
        q = ((key & 7) * 2 + 1).to(tl.float32)
        sqx += (w0 * x0) * q
        sq2 += (w0 * q) * q
        q = (((key >> 3) & 7) * 2 + 1).to(tl.float32)
        sqx += (w1 * x1) * q
        sq2 += (w1 * q) * q
        q = (((key >> 6) & 7) * 2 + 1).to(tl.float32)
        sqx += (w2 * x2) * q
        sq2 += (w2 * q) * q
        q = (((key >> 9) & 7) * 2 + 1).to(tl.float32)
        sqx += (w3 * x3) * q
        sq2 += (w3 * q) * q
    bad = tl.max(tl.where(tact, BAD, 0), axis=1)[:, None]

    # ---- the choice, in ggml's order
    scale = tl.math.div_rn(mx, fz + 15.0)  # C: max/(2*kMaxQ-1)
    best = fz
    pick = iz - 1
    for c in range(NCAND):
        sx = col(sqx, cidx, c)[:, None]
        s2 = col(sq2, cidx, c)[:, None]
        acc = (s2 > 0) & (sx * sx > best * s2)  # C: sumq2 > 0 && sumqx*sumqx > best*sumq2
        s_new = tl.math.div_rn(sx, s2)
        scale = tl.where(acc, s_new, scale)
        best = tl.where(acc, s_new * sx, best)
        pick = tl.where(acc, c, pick)
    sel = cidx == pick
    ka = tl.sum(tl.where(sel, KA, 0), axis=1)[:, None]  # (no pick: keys 0, ggml's memset L)
    kb = tl.sum(tl.where(sel, KB, 0), axis=1)[:, None]
    on = tl.sum(tl.where(sel, ON, 0), axis=1)[:, None]
    if XXS:
        on = tl.where(pick < 0, 255, on)  # IQ3_XXS starts "all on the grid", IQ3_S "none"

    # ---- the off-grid quadruplets (IQ3_S: all) re-rounded with the winning scale
    refine = act & (on != 255) & (scale > 0)
    idr = tl.math.div_rn(fz + 1.0, scale)  # C: id = 1/scale
    for k in range(8):
        _, x0, w0 = _elem(xp, qp, 4 * k, sigma2, flips, XXS, HAS_QW)
        _, x1, w1 = _elem(xp, qp, 4 * k + 1, sigma2, flips, XXS, HAS_QW)
        _, x2, w2 = _elem(xp, qp, 4 * k + 2, sigma2, flips, XXS, HAS_QW)
        _, x3, w3 = _elem(xp, qp, 4 * k + 3, sigma2, flips, XXS, HAS_QW)
        if XXS:
            do = refine & (((on >> k) & 1) == 0)
        else:
            do = refine
        key, _, bd = _quad(x0, x1, x2, x3, tl.math.sqrt_rn(w0), tl.math.sqrt_rn(w1), tl.math.sqrt_rn(w2),
                           tl.math.sqrt_rn(w3), idr, scale, do, kmap_ptr, nb_ptr)
        bad = bad | bd
        ka, kb = _put(ka, kb, k, key, do)
    sumqx = fz
    sumq2 = fz
    for i in range(32):
        _, xv, w = _elem(xp, qp, i, sigma2, flips, XXS, HAS_QW)
        q = (((_field(ka, kb, i // 4) >> (3 * (i % 4))) & 7) * 2 + 1).to(tl.float32)
        sumqx += (w * xv) * q
        sumq2 += (w * q) * q
    scale = tl.where(refine & (sumq2 > 0), tl.math.div_rn(sumqx, sumq2), scale)

    # ---- ggml's "should never happen": a negative scale flips the signs
    flip = scale < 0
    scale = tl.where(flip, -scale, scale)
    if XXS:
        sgn = tl.where(flip, sgn ^ 0x0FFFFFFF, sgn)
    else:
        sgn = tl.where(flip, sgn ^ -1, sgn)

    wa = iz
    wb = iz
    qh = iz
    for k in range(8):
        gi = tl.load(kmap_ptr + _field(ka, kb, k))  # on the grid by construction
        byte = (gi & 255) << (8 * (k & 3))
        wa = tl.where(k < 4, wa | byte, wa)
        wb = tl.where(k < 4, wb, wb | byte)
        qh = qh | ((gi >> 8) << k)
    keep = act != 0
    tl.store(sc_ptr + sb, tl.where(keep, scale, 0.0), mask=m)
    tl.store(pk_ptr + 4 * sb, tl.where(keep, wa, 0), mask=m)
    tl.store(pk_ptr + 4 * sb + 1, tl.where(keep, wb, 0), mask=m)
    tl.store(pk_ptr + 4 * sb + 2, tl.where(keep, sgn, 0), mask=m)
    flags = tl.where(keep, qh | 256, 0) | tl.where(keep & (bad != 0), 512, 0)
    tl.store(pk_ptr + 4 * sb + 3, flags, mask=m)


@triton.jit
def _pack_kernel(sc_ptr, pk_ptr, out_ptr, n_sb, nb, RB, XXS: tl.constexpr, TS: tl.constexpr,
                 BLOCK: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = blk < n_sb
    blk = tl.where(m, blk, 0)
    row = blk // nb
    ob = out_ptr + row * RB + (blk - row * nb) * TS
    fz = tl.zeros([BLOCK], tl.float32)
    ms = fz
    for ib in tl.static_range(8):  # C: max_scale = MAX(max_scale, scale) over the non-zero sub-blocks
        s = tl.load(sc_ptr + blk * 8 + ib)
        nz = ((tl.load(pk_ptr + (blk * 8 + ib) * 4 + 3) >> 8) & 1) != 0
        ms = tl.where(nz, tl.where(ms > s, ms, s), ms)
    ok = ms != 0.0  # C: if (!max_scale): IQ3_XXS zeroes the block, IQ3_S keeps d = 0 and no scales
    d = tl.math.div_rn(ms, fz + 31.0)  # C: d = max_scale/31
    idd = tl.math.div_rn(fz + 1.0, d)  # C: id = 1/d
    if XXS:
        st_u16(ob, fp32_to_fp16(d * FUDGE_XXS), m & ok)
    else:
        st_u16(ob, fp32_to_fp16(d * FUDGE_S), m & ok)
    j8 = tl.arange(0, 8)[None, :]
    sb = blk[:, None] * 8 + j8
    m2 = m[:, None]
    wa = tl.load(pk_ptr + 4 * sb)
    wb = tl.load(pk_ptr + 4 * sb + 1)
    ws = tl.load(pk_ptr + 4 * sb + 2)
    wf = tl.load(pk_ptr + 4 * sb + 3)
    if XXS:
        # C: l = nearest_int(0.5f*(id*scales[ib]-1)), clamped to 0..15; scales_and_signs[ib] |= l << 28
        sc = tl.load(sc_ptr + sb)
        l = tl.minimum(tl.maximum(((((0.5 * (idd[:, None] * sc - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 15)
        mk = m2 & ok[:, None]
        sas = ws | (l << 28)
        for b in tl.static_range(4):
            st_u8(ob[:, None] + 2 + 8 * j8 + b, wa >> (8 * b), mk)
            st_u8(ob[:, None] + 6 + 8 * j8 + b, wb >> (8 * b), mk)
            st_u8(ob[:, None] + 66 + 4 * j8 + b, sas >> (8 * b), mk)
    else:
        nz = (wf >> 8) & 1
        slot = tl.cumsum(nz, axis=1) - nz  # qs and signs advance past non-zero sub-blocks only
        mq = m2 & (nz != 0)
        for b in tl.static_range(4):
            st_u8(ob[:, None] + 2 + 8 * slot + b, wa >> (8 * b), mq)
            st_u8(ob[:, None] + 6 + 8 * slot + b, wb >> (8 * b), mq)
            st_u8(ob[:, None] + 74 + 4 * slot + b, ws >> (8 * b), mq)
        st_u8(ob[:, None] + 66 + j8, wf, m2)  # qh[ib] stays in place
        j4 = tl.arange(0, 4)[None, :]
        s1 = tl.load(sc_ptr + blk[:, None] * 8 + 2 * j4)
        s2 = tl.load(sc_ptr + blk[:, None] * 8 + 2 * j4 + 1)
        l1 = tl.minimum(tl.maximum(((((0.5 * (idd[:, None] * s1 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 15)
        l2 = tl.minimum(tl.maximum(((((0.5 * (idd[:, None] * s2 - 1.0)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000), 0), 15)
        st_u8(ob[:, None] + 106 + j4, l1 | (l2 << 4), m2 & ok[:, None])


def _nb_keys(grid_size: int) -> np.ndarray:
    """ggml's neighbour lists (count, then entries) with each entry's grid index replaced by the
    point's key, so the walk reads a neighbour's four codes from one word."""
    codes, kmap, nbrs = iq3_maps(grid_size)
    keys = codes[:, 0] | (codes[:, 1] << 3) | (codes[:, 2] << 6) | (codes[:, 3] << 9)
    nb = nbrs.astype(np.int64)
    start = np.zeros(nb.size, dtype=bool)
    start[-kmap[kmap < 0].astype(np.int64) - 1] = True
    return np.where(start, nb, keys[np.minimum(nb, grid_size - 1)]).astype(np.int32)


def _tables(grid_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    kmap = lut(f"iq3_kmap{grid_size}", device, lambda: iq3_maps(grid_size)[1].astype(np.int32))
    nbk = lut(f"iq3_nbkeys{grid_size}", device, lambda: _nb_keys(grid_size))
    return kmap, nbk


def encode(codec_id: str, x: Any, qw: Any, out: Any) -> None:
    """float32 rows ``x`` (rows, K), K a multiple of 256, into ``out`` (rows, row bytes): the bytes
    ``ggml_quantize_chunk`` writes, with ``qw`` the imatrix (K,) or None; the same as
    :func:`lowbit.kernels.cpu._iq3_enc.encode`."""
    t = _IDS[codec_id]
    xxs = t == 0
    rows, K = x.shape
    if not rows or not K:
        return
    x = x.contiguous().float()
    dev = x.device
    has_qw = qw is not None
    qwt = qw.to(device=dev, dtype=torch.float32).contiguous() if has_qw else x
    kmap, nbk = _tables(_GRID_SIZE[t], dev)
    nsr = K // 32
    nb = K // 256
    ts = out.shape[1] // nb
    rows_per = max(1, CHUNK_SUB // nsr)
    out.zero_()
    for r0 in range(0, rows, rows_per):
        r1 = min(rows, r0 + rows_per)
        xc = x[r0:r1]
        oc = out[r0:r1]
        n_sub = (r1 - r0) * nsr
        ss = sumsq(xc, 256) if has_qw else xc
        sc = torch.empty(n_sub, dtype=torch.float32, device=dev)
        pk = torch.empty(4 * n_sub, dtype=torch.int32, device=dev)
        blk = programs_block(n_sub, 16, 1 << 12)
        _search_kernel[(triton.cdiv(n_sub, blk),)](xc, qwt, ss, kmap, nbk, sc, pk, n_sub, nsr, K, XXS=xxs,
                                                   HAS_QW=has_qw, BLOCK=blk, **FP)
        bad = ((pk.view(n_sub, 4)[:, 3] >> 9) & 1).nonzero()
        if bad.numel():
            r = r0 + int(bad[0, 0]) // nsr
            raise RangeError(f"{codec_id}: row {r}: the weights (importance * sqrt(sigma2 + x**2)) overflow float32, "
                             f"so no grid point has a finite distance; ggml aborts here (GGML_ASSERT in "
                             f"iq3_find_best_neighbour)")
        n_sb = (r1 - r0) * nb
        blk = programs_block(n_sb, 64, 1 << 12)
        _pack_kernel[(triton.cdiv(n_sb, blk),)](sc, pk, oc, n_sb, nb, out.shape[1], XXS=xxs, TS=ts, BLOCK=blk, **FP)
