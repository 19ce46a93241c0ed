"""Numba kernels of the ``nonuniform`` codec (per-group lookup tables; spec/nonuniform.toml).

* ``fit(x, w, geo, gcol, k, iters) -> (cent float64 [groups, k], n float64... )``: the
  sensitivity-weighted 1-D k-means of every group (runs on the host for both backends: sums in
  one fixed sequential order are what make the tables identical everywhere);
* ``canon(x, lut, geo, gcol, k)``: turn rounded centroids into the canonical table: sorted,
  duplicates and entries no element chooses removed, the rest padded with +Inf;
* ``encode(x, lut, geo, gcol, bits, out)`` / ``decode(data, lut, geo, gcol, bits, out)``: the
  nearest-entry rule and packing, twins of :mod:`lowbit.kernels.gpu.nonuniform`.

The nearest-entry rule (float32): with the table ``L`` sorted ascending, ``p`` = number of entries
``< x``; the code is ``p`` if ``p < k`` and (``p == 0`` or ``|x - L[p]| < |x - L[p-1]|``), else
``p - 1``: the lowest index among the nearest entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from .minifloat import _pack, _unpack


@njit(inline="always")
def _nearest(x, lut, base, k):
    # p = number of entries < x, by binary lifting over the sorted table
    pos = 0
    s = k >> 1
    while s > 0:
        if lut[base + pos + s - 1] < x:
            pos += s
        s >>= 1
    if lut[base + pos] < x:
        pos += 1
    if pos < k:
        if pos == 0:
            return 0
        d_hi = abs(np.float32(x - lut[base + pos]))
        d_lo = abs(np.float32(x - lut[base + pos - 1]))
        return pos if d_hi < d_lo else pos - 1
    return k - 1


@njit(inline="always")
def _group_of(r, c, M, Gr, NGr, NGc, gcol):
    return ((r // M) * NGr + (r % M) // Gr) * NGc + gcol[c]


@njit(cache=True)
def _members(rows, K, M, Gr, NGr, NGc, gcol, ngroups):
    """CSR of the elements of every group: (start [ngroups+1], flat element index)."""
    cnt = np.zeros(ngroups + 1, np.int64)
    for r in range(rows):
        for c in range(K):
            cnt[_group_of(r, c, M, Gr, NGr, NGc, gcol) + 1] += 1
    for g in range(ngroups):
        cnt[g + 1] += cnt[g]
    fill = cnt[:-1].copy()
    idx = np.empty(rows * K, np.int64)
    for r in range(rows):
        for c in range(K):
            g = _group_of(r, c, M, Gr, NGr, NGc, gcol)
            idx[fill[g]] = r * K + c
            fill[g] += 1
    return cnt, idx


@njit(cache=True, parallel=True)
def _fit(xf, wf, start, idx, k, iters, cent, ncent):
    ng = start.size - 1
    for g in prange(ng):
        a, b = start[g], start[g + 1]
        v = np.empty(b - a, np.float64)
        w = np.empty(b - a, np.float64)
        n = 0
        for t in range(a, b):
            xv = xf[idx[t]]
            if xv - xv == 0.0:  # finite
                v[n] = xv
                w[n] = wf[idx[t]]
                n += 1
        if n == 0:
            cent[g, 0] = 0.0
            ncent[g] = 1
            continue
        order = np.argsort(v[:n], kind="mergesort")
        vs = v[:n][order]
        ws = w[:n][order]
        # distinct values: at most k of them are represented exactly
        nd = 1
        for t in range(1, n):
            if vs[t] != vs[t - 1]:
                nd += 1
        if nd <= k:
            cent[g, 0] = vs[0]
            j = 1
            for t in range(1, n):
                if vs[t] != vs[t - 1]:
                    cent[g, j] = vs[t]
                    j += 1
            ncent[g] = nd
            continue
        wsum = 0.0
        for t in range(n):
            wsum += ws[t]
        if not wsum > 0.0:  # all weights zero: plain k-means
            for t in range(n):
                ws[t] = 1.0
        lo, hi = vs[0], vs[n - 1]
        c = np.empty(k, np.float64)
        for j in range(k):  # fixed init: evenly spaced over [min, max]
            c[j] = lo + (hi - lo) * (j / (k - 1))
        sw = np.empty(k, np.float64)
        swv = np.empty(k, np.float64)
        for _ in range(iters):  # Lloyd steps; the values are sorted, so clusters are runs
            sw[:] = 0.0
            swv[:] = 0.0
            j = 0
            for t in range(n):
                while j + 1 < k and abs(vs[t] - c[j + 1]) < abs(vs[t] - c[j]):
                    j += 1
                sw[j] += ws[t]
                swv[j] += ws[t] * vs[t]
            for j in range(k):
                if sw[j] > 0.0:
                    c[j] = swv[j] / sw[j]
        for j in range(k):
            cent[g, j] = c[j]
        ncent[g] = k


@njit(cache=True, parallel=True)
def _canon(xf, start, idx, k, lut_in, nin, lut):
    ng = start.size - 1
    for g in prange(ng):
        m = nin[g]
        cand = np.sort(lut_in[g, :m])
        u = np.empty(k, np.float32)  # distinct, ascending, +Inf padded
        nu = 0
        for j in range(m):
            if nu == 0 or cand[j] != u[nu - 1]:
                u[nu] = cand[j]
                nu += 1
        for j in range(nu, k):
            u[j] = np.inf
        used = np.zeros(k, np.bool_)
        for t in range(start[g], start[g + 1]):
            used[_nearest(xf[idx[t]], u, 0, k)] = True
        j = 0
        for i in range(k):
            if used[i] and u[i] < np.inf:
                lut[g * k + j] = u[i]
                j += 1
        if j == 0:  # nothing chose a finite entry (an all-Inf group): keep the first one
            lut[g * k] = u[0] if u[0] < np.inf else np.float32(0.0)
            j = 1
        for i in range(j, k):
            lut[g * k + i] = np.inf


@njit(cache=True, parallel=True)
def _encode(x, lut, k, M, Gr, NGr, NGc, gcol, w, out):
    rows, K = x.shape
    for r in prange(rows):
        codes = np.empty(K, np.int32)
        for c in range(K):
            codes[c] = _nearest(x[r, c], lut, _group_of(r, c, M, Gr, NGr, NGc, gcol) * k, k)
        _pack(codes, w, out[r], 0)


@njit(cache=True, parallel=True)
def _decode(data, lut, k, M, Gr, NGr, NGc, gcol, w, out):
    rows, K = out.shape
    for r in prange(rows):
        codes = np.empty(K, np.int32)
        _unpack(data[r], 0, w, codes)
        for c in range(K):
            y = lut[_group_of(r, c, M, Gr, NGr, NGc, gcol) * k + (codes[c] & (k - 1))]
            out[r, c] = y if y == y else np.float32(np.nan)


@kernel("nonuniform", "cpu", "fit")
def fit(x, w, geo, gcol, k: int, iters: int, round_lut):
    """Canonical float32 tables ``[groups * k]`` for float32 ``x[rows, K]`` and weights ``w``
    (same shape); ``round_lut`` maps float64 centroids to the stored precision (float32 values)."""
    ng = geo.n_param_rows * geo.NGc
    start, idx = _members(geo.rows, geo.K, geo.M, geo.Gr, geo.NGr, geo.NGc, gcol, ng)
    cent = np.zeros((ng, k), np.float64)
    ncent = np.zeros(ng, np.int64)
    xf, wf = x.reshape(-1), w.reshape(-1).astype(np.float64)
    _fit(xf, wf, start, idx, k, iters, cent, ncent)
    lut = np.empty(ng * k, np.float32)
    _canon(xf, start, idx, k, round_lut(cent), ncent, lut)
    return lut


@kernel("nonuniform", "cpu", "encode")
def encode(x, lut, geo, gcol, bits: int, out) -> None:
    _encode(x, lut.reshape(-1), 1 << bits, geo.M, geo.Gr, geo.NGr, geo.NGc, gcol, bits, out)


@kernel("nonuniform", "cpu", "decode")
def decode(data, lut, geo, gcol, bits: int, out) -> None:
    _decode(data, lut.reshape(-1), 1 << bits, geo.M, geo.Gr, geo.NGr, geo.NGc, gcol, bits, out)
