"""Numba kernels of the ``bitmod`` codec (spec/bitmod.toml).

* ``select(x, group, tables)``: per group, the element type (0…3) and float16-grid scale that
  minimise the squared error, then the same choice made again on the decoded group (so that
  re-encoding reproduces it); runs on the host for both backends (float64 sums in a fixed order);
* ``encode(x, s, typ, group, tables, bits, out)`` / ``decode(data, s, typ, group, tables, bits, out)``:
  the nearest-value assignment and packing, twins of :mod:`lowbit.kernels.gpu.bitmod`.

Assignment (float32): ``t = fl32(x / s)``; the index into the type's sorted values is the number
of midpoints ``< t`` (a tie goes to the lower value, as BitMoD's ``x <= mid`` does); the code is
that value's sign-magnitude code.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..registry import kernel
from .minifloat import _pack, _unpack


@njit(inline="always")
def _rd16(v):
    """Round v > 0 down to the float16 grid, clamped to [2**-24, 65504] (NaN/<=0: the floor)."""
    if not v > 0.0:
        return 2.0**-24
    if v >= 65504.0:
        return 65504.0
    m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    ex = max(e - 1, -14)
    sp = 2.0 ** (ex - 10)
    return max(math.floor(v / sp) * sp, 2.0**-24)


@njit(inline="always")
def _index(t, mids, nm):
    i = 0
    for j in range(nm):
        i += mids[j] < t
    return i


@njit(inline="always")
def _group_select(v, n, vals, mids, pmax, nmax, ntypes, nv):
    """(type, scale) minimising the float64 sum of squared errors over v[:n] (first type wins ties)."""
    lo = 0.0
    hi = 0.0
    for i in range(n):
        a = np.float64(v[i])
        if a - a == 0.0:
            lo = min(lo, a)
            hi = max(hi, a)
    best_t, best_s, best_e = 0, 1.0, np.inf
    for T in range(ntypes):
        s = _rd16(max(hi / pmax[T], -lo / nmax[T]))
        s32 = np.float32(s)
        err = 0.0
        for i in range(n):
            a = np.float32(v[i])
            if a - a != 0.0:
                continue
            t = np.float32(a / s32)
            y = np.float64(vals[T, _index(t, mids[T], nv - 1)]) * s
            err += (y - np.float64(a)) ** 2
        if err < best_e:
            best_t, best_s, best_e = T, s, err
    return best_t, best_s


@njit(cache=True, parallel=True)
def _select(x, G, vals, mids, pmax, nmax, typ1, scale1, typ, scale):
    rows, K = x.shape
    NG = typ.shape[1]
    ntypes, nv = vals.shape
    for r in prange(rows):
        buf = np.empty(G, np.float32)
        for g in range(NG):
            c0 = g * G
            n = min(K, c0 + G) - c0
            for i in range(n):
                buf[i] = x[r, c0 + i]
            T, s = _group_select(buf, n, vals, mids, pmax, nmax, ntypes, nv)
            typ1[r, g] = T
            scale1[r, g] = np.float32(s)
            # the same choice on the decoded group: decoding then re-encoding gives it back
            s32 = np.float32(s)
            for i in range(n):
                a = buf[i]
                if a - a == 0.0:
                    buf[i] = np.float32(vals[T, _index(np.float32(a / s32), mids[T], nv - 1)] * s32)
            T, s = _group_select(buf, n, vals, mids, pmax, nmax, ntypes, nv)
            typ[r, g] = T
            scale[r, g] = np.float32(s)


@njit(cache=True, parallel=True)
def _encode(x, s1, typ1, s, typ, G, vals, mids, codes_of, w, out):
    rows, K = x.shape
    nm = mids.shape[1]
    for r in prange(rows):
        codes = np.empty(K, np.int32)
        for c in range(K):
            g = c // G
            T1 = typ1[r, g] & 3
            T = typ[r, g] & 3
            # the value of the best type (pass 1), then its code under the stored type (pass 2)
            y = np.float32(vals[T1, _index(np.float32(x[r, c] / s1[r, g]), mids[T1], nm)] * s1[r, g])
            codes[c] = codes_of[T, _index(np.float32(y / s[r, g]), mids[T], nm)]
        _pack(codes, w, out[r], 0)


@njit(cache=True, parallel=True)
def _decode(data, s, typ, G, lut, w, out):
    rows, K = out.shape
    for r in prange(rows):
        codes = np.empty(K, np.int32)
        _unpack(data[r], 0, w, codes)
        for c in range(K):
            g = c // G
            y = np.float32(lut[typ[r, g] & 3, codes[c]] * s[r, g])
            out[r, c] = y if y == y else np.float32(np.nan)


@kernel("bitmod", "cpu", "select")
def select(x, G: int, tables) -> tuple[np.ndarray, ...]:
    """(type, scale) of pass 1 (the best for x) and of pass 2 (the stored ones), each (rows, NG)."""
    rows, K = x.shape
    NG = -(-K // G) if K else 0
    out = (np.zeros((rows, NG), np.uint8), np.zeros((rows, NG), np.float32),
           np.zeros((rows, NG), np.uint8), np.zeros((rows, NG), np.float32))
    if rows and K:
        _select(x, G, tables.vals, tables.mids, tables.pmax, tables.nmax, *out)
    return out


@kernel("bitmod", "cpu", "encode")
def encode(x, s1, typ1, s, typ, G: int, tables, bits: int, out) -> None:
    _encode(x, s1, typ1.astype(np.int64), s, typ.astype(np.int64), G, tables.vals, tables.mids, tables.codes_of,
            bits, out)


@kernel("bitmod", "cpu", "decode")
def decode(data, s, typ, G: int, tables, bits: int, out) -> None:
    _decode(data, s, typ.astype(np.int64), G, tables.lut, bits, out)
