"""Numba encoders of GGUF IQ3_XXS (ggml type 18) and IQ3_S (21): ggml's ``quantize_iq3_xxs`` and
``quantize_iq3_s`` (``quantize_row_iq3_xxs_impl`` / ``quantize_row_iq3_s_impl``), byte for byte,
with or without an importance matrix (ggml accepts both types without one).

The algorithm, per 256-element block and per 32-element sub-block:

1. weights ``w = x**2``, or with an imatrix ``qw * sqrt(sigma2 + x**2)`` where ``sigma2 = 2 *
   sum(x**2) / 256`` over the block; the neighbour search weighs by ``sqrt(w)``.
2. magnitudes ``|x|`` and one sign bit per element, eight per byte. IQ3_XXS keeps 7 sign bits
   per 8 elements (the eighth is implied: an even number of minus signs), so a byte with an odd
   count flips the element of least ``w * x**2`` (its magnitude becomes negative).
3. scale search: for each candidate ``id = (15 + 0.2 * is) / max`` (is = -15..15 for IQ3_XXS,
   -9..9 for IQ3_S) every four magnitudes round to codes ``l = nearest_int(0.5 * (id*|x| - 1))``
   in 0..7; a key off the grid takes the best of its neighbours (:mod:`._iq3_maps`) under
   ``this_scale = 1/id``. The candidate maximising ``sumqx**2 / sumq2`` (q = 2l + 1) wins.
4. a refinement pass re-rounds the off-grid quadruplets (IQ3_XXS; IQ3_S all of them) with the
   winning scale, and the least-squares scale is recomputed.
5. the block's fp16 ``d = max_scale / 31`` times a fudge factor (1.0125, 1.033) and 4-bit
   sub-block scales ``nearest_int((scale / d - 1) / 2)``.

Every float is float32 in C's order (``a*b*c`` is ``(a*b)*c``, sums left to right, no FMA),
as ggml compiles it (-O3, no -ffast-math). Comments quote the C where the order matters.

Speed: the scale candidates of step 3 are independent until the choice, so eight run at once,
one per SIMD lane (:mod:`._simd`), and the neighbour search measures eight neighbours at once;
each lane does C's operations for its own candidate or neighbour, and every choice (the best
candidate, the first nearest neighbour) is then made in C's order. Rows run in parallel.

Two quirks of ggml are kept because the bytes depend on them: IQ3_S advances its ``qs`` and
``signs`` write positions only for sub-blocks that are not all zero, so a zero sub-block shifts
the following sub-blocks' codes forward (its ``qh`` bits and scale stay in place); and both types
abort (``GGML_ASSERT``) when no neighbour gets a finite distance, which needs weights so large
that ``w * diff**2`` overflows: :func:`encode` raises :class:`~lowbit.errors.RangeError` there.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from ...errors import RangeError
from ._ggml import F, nearest_int, wr_f16
from ._simd import (vbits, vhmax, vilane, vlane, vlanes, vle, vload, vload_u8, vlt, vnint_clamp, vsel, vsplat,
                    vstore, vtof, vtrunc)
from ._iq3_maps import iq3_maps

QK_K = 256
FLT_MAX = F(3.4028234663852886e38)
GROUP_MAX_EPS_IQ3_XXS = F(1e-8)
KMAX_Q = 8

_IDS = {"iq3_xxs": 0, "iq3_s": 1}
_GRID_SIZE = (256, 512)


@njit(inline="always", error_model="numpy", cache=True)
def _best_neighbour(nb, o, P0, P1, P2, P3, xval, waux, xo, scale, D2):
    """ggml ``iq3_find_best_neighbour``: of the grid points listed at ``nb[o]`` (count, then the
    indices), the first with the least ``sum(waux * (scale*q - xval)**2)``: its grid index (the
    caller takes its codes), or -1 where ggml's assert fires (no finite distance).

    ``P0..P3[p]`` are the magnitudes q of the grid point ``nb[p]`` (position 0..3 of the
    quadruplet), so eight neighbours' distances are computed at once, one per lane, each with
    C's operations in C's order (``d2 = 0; d2 += w*diff*diff`` four times: the first addition to
    zero is exact, as every term is >= +0 or NaN); the first minimum is then found in C's order."""
    n = np.int64(nb[o])
    vs = vsplat(scale)
    x0 = vsplat(xval[xo])
    x1 = vsplat(xval[xo + 1])
    x2 = vsplat(xval[xo + 2])
    x3 = vsplat(xval[xo + 3])
    w0 = vsplat(waux[xo])
    w1 = vsplat(waux[xo + 1])
    w2 = vsplat(waux[xo + 2])
    w3 = vsplat(waux[xo + 3])
    inf = vsplat(F(np.inf))
    mv = inf
    for j0 in range(0, n, 8):
        p = o + 1 + j0
        d = vs * vtof(vload_u8(P0, p)) - x0  # C: float diff = scale*q - xval[i];
        d2 = (w0 * d) * d                     # C: d2 += weight[i]*diff*diff;
        d = vs * vtof(vload_u8(P1, p)) - x1
        d2 = d2 + (w1 * d) * d
        d = vs * vtof(vload_u8(P2, p)) - x2
        d2 = d2 + (w2 * d) * d
        d = vs * vtof(vload_u8(P3, p)) - x3
        d2 = d2 + (w3 * d) * d
        vstore(D2, j0, d2)
        d2 = vsel(vlt(vlanes(), vsplat(F(n - j0))), d2, inf)  # lanes past the list's end never win
        mv = vsel(vlt(d2, mv), d2, mv)  # lane-wise least distance (a NaN never enters)
    m = -vhmax(vsplat(F(-1.0)) * mv)
    if not m < FLT_MAX:  # C: best_d2 starts at FLT_MAX and only d2 < best_d2 replaces it
        return -1
    # C keeps the first of equal distances: the first list entry whose distance is m
    vm = vsplat(m)
    jb = 0
    for j0 in range(0, n, 8):
        bits = vbits(vle(vload(D2, j0), vm))  # <= m is == m: m is the least (and NaN compares false)
        if n - j0 < 8:
            bits &= (1 << (n - j0)) - 1
        if bits:
            jb = j0 + trailing_zeros(bits)
            break
    return np.int64(nb[o + 1 + jb])


@njit(error_model="numpy", cache=True)
def _encode_block(t, x, xo, qw, has_qw, b, kmap, nb, P0, P1, P2, P3, gcode,
                  weight, waux, xval, wx, L, LA, scales, on, ONA, bsg, D2):
    """One 256-element block of type ``t`` (0 IQ3_XXS, 1 IQ3_S) into ``b`` (the block's bytes).
    Returns False where ggml would abort."""
    xxs = t == 0
    nis = 15 if xxs else 9
    for j in range(b.size):
        b[j] = 0
    # IQ3_XXS: qs[0:64] grid indices, then u32 scales_and_signs[8] at 64; IQ3_S: qs at 0, qh at 64,
    # signs at 72, scales at 104 (offsets within b[2:], after d)
    qs_o = 2       # IQ3_S: where the next sub-block's grid bytes go (advances past non-zero ones only)
    sg_o = 2 + 72  # IQ3_S: the same for its sign bytes

    sumx2 = F(0.0)
    for i in range(QK_K):
        sumx2 += x[xo + i] * x[xo + i]
    sigma2 = (F(2.0) * sumx2) / F(QK_K)  # C: float sigma2 = 2*sumx2/QK_K;
    max_scale = F(0.0)

    for ib in range(QK_K // 32):
        xb = xo + 32 * ib
        if has_qw:
            for i in range(32):
                weight[i] = qw[xb + i] * np.sqrt(sigma2 + x[xb + i] * x[xb + i])
        else:
            for i in range(32):
                weight[i] = x[xb + i] * x[xb + i]
        for i in range(32):
            waux[i] = np.sqrt(weight[i])
        for k in range(4):
            nflip = 0
            s = 0
            for i in range(8):
                v = x[xb + 8 * k + i]
                if v >= F(0.0):
                    xval[8 * k + i] = v
                else:
                    xval[8 * k + i] = -v
                    nflip += 1
                    s |= 1 << i
            if xxs and nflip % 2:
                # an odd number of minus signs: flip the element that matters least
                imin = 0
                mn = (weight[8 * k] * x[xb + 8 * k]) * x[xb + 8 * k]
                for i in range(1, 8):
                    ax = (weight[8 * k + i] * x[xb + 8 * k + i]) * x[xb + 8 * k + i]
                    if ax < mn:
                        mn = ax
                        imin = i
                xval[8 * k + imin] = -xval[8 * k + imin]
                s ^= 1 << imin
            bsg[k] = s & 127 if xxs else s
        for i in range(32):
            wx[i] = weight[i] * xval[i]  # the candidates' common first product (C: w*xval[i]*q)
        mx = xval[0]
        for i in range(1, 32):
            mx = mx if mx > xval[i] else xval[i]  # C: MAX(max, xval[i])
        for i in range(32):
            L[i] = 0
        if (xxs and mx < GROUP_MAX_EPS_IQ3_XXS) or (not xxs and mx == F(0.0)):
            scales[ib] = F(0.0)
            continue
        best = F(0.0)
        scale = mx / F(2 * KMAX_Q - 1)
        for k in range(8):
            on[k] = xxs  # IQ3_XXS starts "all on the grid", IQ3_S "none"
        # the candidates are independent until the choice, so eight of them run at once, one per
        # lane (LA[8e + c]: code of element e under candidate c0 + c); each lane's floats are C's
        # for its candidate, and the choice then walks the candidates in C's order
        ncand = 2 * nis + 1
        vmx = vsplat(mx)
        half = vsplat(F(0.5))
        one = vsplat(F(1.0))
        for c0 in range(0, ncand, 8):
            nl = min(8, ncand - c0)
            isv = vsplat(F(c0 - nis)) + vlanes()
            vid = (vsplat(F(2 * KMAX_Q - 1)) + isv * vsplat(F(0.2))) / vmx  # C: (2*kMaxQ-1+is*0.2f)/max
            vts = one / vid                                                 # C: this_scale = 1/id
            for k in range(8):
                e = 4 * k
                # C: l = nearest_int(0.5f*(id*xval[i]-1)), clamped to 0..kMaxQ-1
                l0 = vnint_clamp(half * (vid * vsplat(xval[e]) - one), 0, KMAX_Q - 1)
                l1 = vnint_clamp(half * (vid * vsplat(xval[e + 1]) - one), 0, KMAX_Q - 1)
                l2 = vnint_clamp(half * (vid * vsplat(xval[e + 2]) - one), 0, KMAX_Q - 1)
                l3 = vnint_clamp(half * (vid * vsplat(xval[e + 3]) - one), 0, KMAX_Q - 1)
                vstore(LA, 8 * e, l0)
                vstore(LA, 8 * e + 8, l1)
                vstore(LA, 8 * e + 16, l2)
                vstore(LA, 8 * e + 24, l3)
                U = vtrunc(l0 + vsplat(F(8.0)) * l1 + vsplat(F(64.0)) * l2 + vsplat(F(512.0)) * l3)  # exact
                for c in range(nl):
                    gi = np.int64(kmap[vilane(U, c)])
                    ONA[8 * k + c] = gi >= 0
                    if gi < 0:
                        gi = _best_neighbour(nb, -gi - 1, P0, P1, P2, P3, xval, waux, e, vlane(vts, c), D2)
                        if gi < 0:
                            return False
                        for i in range(4):
                            LA[8 * (e + i) + c] = F(gcode[4 * gi + i])
            sqx = vsplat(F(0.0))
            sq2 = vsplat(F(0.0))
            for e in range(32):
                q = vsplat(F(2.0)) * vload(LA, 8 * e) + one  # C: float q = 2*Laux[i] + 1 (exact)
                sqx = sqx + vsplat(wx[e]) * q                # C: sumqx += w*xval[i]*q;
                sq2 = sq2 + (vsplat(weight[e]) * q) * q      # C: sumq2 += w*q*q;
            for c in range(nl):
                sumqx = vlane(sqx, c)
                sumq2 = vlane(sq2, c)
                if sumq2 > F(0.0) and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    for e in range(32):
                        L[e] = np.int64(LA[8 * e + c])
                    for k in range(8):
                        on[k] = ONA[8 * k + c]
        n_not_ongrid = 0
        for k in range(8):
            if not on[k]:
                n_not_ongrid += 1
        if n_not_ongrid > 0 and scale > F(0.0):
            id_ = F(1.0) / scale
            for k in range(8):
                if xxs and on[k]:
                    continue  # (IQ3_S re-rounds every quadruplet)
                u = 0
                for i in range(4):
                    l = nearest_int(F(0.5) * (id_ * xval[4 * k + i] - F(1.0)))
                    u |= max(0, min(KMAX_Q - 1, l)) << (3 * i)
                gi = np.int64(kmap[u])
                if gi < 0:
                    gi = _best_neighbour(nb, -gi - 1, P0, P1, P2, P3, xval, waux, 4 * k, scale, D2)
                    if gi < 0:
                        return False
                for i in range(4):
                    L[4 * k + i] = gcode[4 * gi + i]
            sumqx = F(0.0)
            sumq2 = F(0.0)
            for i in range(32):
                w = weight[i]
                q = F(2 * L[i] + 1)
                sumqx += (w * xval[i]) * q
                sumq2 += (w * q) * q
            if sumq2 > F(0.0):
                scale = sumqx / sumq2
        if scale < F(0.0):
            # ggml: "should never happen": a positive scale with the signs flipped
            scale = -scale
            for k in range(4):
                bsg[k] = (~bsg[k]) & (127 if xxs else 255)
        for k in range(8):
            u = L[4 * k] | (L[4 * k + 1] << 3) | (L[4 * k + 2] << 6) | (L[4 * k + 3] << 9)
            gi = np.int64(kmap[u])  # on the grid by construction (ggml aborts otherwise)
            if xxs:
                b[2 + 8 * ib + k] = gi
            else:
                b[qs_o + k] = gi & 255
                b[2 + 64 + ib] |= (gi >> 8) << k
        if xxs:
            sas = bsg[0] | (bsg[1] << 7) | (bsg[2] << 14) | (bsg[3] << 21)
            for j in range(4):
                b[2 + 64 + 4 * ib + j] = (sas >> (8 * j)) & 255
        else:
            qs_o += 8
            for k in range(4):
                b[sg_o + k] = bsg[k]
            sg_o += 4
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale  # C: MAX(max_scale, scale)

    if max_scale == F(0.0):  # C: if (!max_scale): IQ3_XXS zeroes the block; IQ3_S keeps d = 0
        if xxs:
            for j in range(b.size):
                b[j] = 0
        return True
    d = max_scale / F(31.0)
    wr_f16(b, 0, d * (F(1.0125) if xxs else F(1.033)))  # ggml's fudge factors
    id_ = F(1.0) / d
    for ib in range(QK_K // 32):
        l = nearest_int(F(0.5) * (id_ * scales[ib] - F(1.0)))
        l = max(0, min(15, l))
        if xxs:
            b[2 + 64 + 4 * ib + 3] |= l << 4  # C: scales_and_signs[ib] |= l << 28
        else:
            b[2 + 104 + ib // 2] |= l << (4 * (ib % 2))
    return True


@njit(error_model="numpy", cache=True, parallel=True)
def _encode_rows(t, x, qw, has_qw, out, kmap, nb, P0, P1, P2, P3, gcode, ok):
    rows, K = x.shape
    nbl = K // QK_K
    ts = out.shape[1] // nbl
    for r in prange(rows):
        weight = np.empty(32, dtype=np.float32)
        waux = np.empty(32, dtype=np.float32)
        xval = np.empty(32, dtype=np.float32)
        L = np.empty(32, dtype=np.int64)
        wx = np.empty(32, dtype=np.float32)
        LA = np.empty(32 * 8, dtype=np.float32)
        scales = np.empty(8, dtype=np.float32)
        on = np.empty(8, dtype=np.bool_)
        ONA = np.empty(64, dtype=np.bool_)
        bsg = np.empty(4, dtype=np.int64)
        D2 = np.empty(48, dtype=np.float32)  # the longest neighbour list (38) rounded up to 8
        xr = x[r]
        good = True
        for i in range(nbl):
            b = out[r, i * ts:(i + 1) * ts]
            good &= _encode_block(t, xr, i * QK_K, qw, has_qw, b, kmap, nb, P0, P1, P2, P3, gcode,
                                  weight, waux, xval, wx, L, LA, scales, on, ONA, bsg, D2)
        ok[r] = good


_NO_QW = np.zeros(1, dtype=np.float32)
_TABLES: dict[int, tuple[np.ndarray, ...]] = {}


def _tables(grid_size: int) -> tuple[np.ndarray, ...]:
    """kmap, neighbours, P0..P3 (uint8, aligned with neighbours: the magnitudes 2l+1 of the grid
    point each list entry names, by position; 8 bytes of padding so a vector load past the last
    list stays in bounds) and the grid's codes l (int64, flat)."""
    if grid_size not in _TABLES:
        codes, kmap, nbrs = iq3_maps(grid_size)
        pos = (2 * codes + 1).astype(np.uint8)
        P = np.zeros((4, nbrs.size + 8), dtype=np.uint8)
        P[:, :nbrs.size] = pos[nbrs.astype(np.int64)].T  # count entries get a (never read) value too
        if int(nbrs[-kmap[kmap < 0].astype(np.int64) - 1].max()) > 40:
            raise AssertionError("IQ3 neighbour list longer than the kernel's scratch")
        _TABLES[grid_size] = (kmap, nbrs, *(np.ascontiguousarray(P[i]) for i in range(4)),
                              np.ascontiguousarray(codes.reshape(-1).astype(np.int64)))
    return _TABLES[grid_size]


def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    """float32 rows ``x`` (rows, K), K a multiple of 256, into ``out`` (rows, row bytes): the bytes
    ``ggml_quantize_chunk`` writes, with ``qw`` the imatrix (K,) or None."""
    t = _IDS[codec_id]
    x = np.ascontiguousarray(x, dtype=np.float32)
    ok = np.ones(x.shape[0], dtype=np.bool_)
    _encode_rows(t, x, _NO_QW if qw is None else qw, qw is not None, out, *_tables(_GRID_SIZE[t]), ok)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise RangeError(f"{codec_id}: row {r}: the weights (importance * sqrt(sigma2 + x**2)) overflow float32, "
                         f"so no grid point has a finite distance; ggml aborts here (GGML_ASSERT in "
                         f"iq3_find_best_neighbour)")
