"""Numba building blocks shared by the rotated KV codecs (turboquant, octopus).

The float32 operation order here *is* the spec (lowbit/spec/turboquant_mse.toml, [order]);
:mod:`lowbit.kernels.gpu._kvcommon` does the same operations in the same order:

* ``tree_sumsq`` / ``tree_sum``: a pairwise tree over the vector padded with zeros to a power
  of two, adjacent pairs first: ((v0+v1)+(v2+v3))+… ;
* ``rotate``: dense ``y_j = Σ_i Π[j,i]·x_i`` summed left to right over i (each product rounded,
  then added: no FMA); RHT ``y = fwht(s ⊙ x) · r`` with the butterfly stages h = 1, 2, 4, …
  and (a, b) → (a + b, a − b) on the pair (i, i+h), r = fl32(1/√d);
* ``unrotate``: the transpose: dense ``x_i = Σ_j Π[j,i]·w_j`` left to right over j; RHT
  ``x = s ⊙ (fwht(w) · r)``;
* float32 → float16 rounding (RNE, by integer operations) and back.

No ``fastmath`` anywhere: LLVM must neither reassociate nor contract a*b+c into an FMA.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._bits import bits_f32, f32_bits

F16_OVERFLOW = 0x7C00  # returned by f32_to_f16 for values that round beyond 65504


@njit(cache=True, inline="always")
def next_pow2(n):
    p = 1
    while p < n:
        p *= 2
    return p


@njit(cache=True)
def tree_sum(v, n, buf):
    """Pairwise tree sum of v[0:n] padded with zeros to a power of two (buf: scratch, ≥ that size)."""
    p = next_pow2(n)
    for i in range(p):
        buf[i] = v[i] if i < n else np.float32(0.0)
    while p > 1:
        p //= 2
        for k in range(p):
            buf[k] = buf[2 * k] + buf[2 * k + 1]
    return buf[0]


@njit(cache=True)
def tree_sumsq(v, n, buf):
    """Pairwise tree sum of v[i]*v[i] (each square rounded to float32 first)."""
    p = next_pow2(n)
    for i in range(p):
        buf[i] = v[i] * v[i] if i < n else np.float32(0.0)
    while p > 1:
        p //= 2
        for k in range(p):
            buf[k] = buf[2 * k] + buf[2 * k + 1]
    return buf[0]


@njit(cache=True)
def fwht(v, d):
    """In-place unnormalised Walsh–Hadamard transform of v[0:d] (d a power of two)."""
    h = 1
    while h < d:
        for blk in range(0, d, 2 * h):
            for i in range(blk, blk + h):
                a = v[i]
                b = v[i + h]
                v[i] = a + b
                v[i + h] = a - b
        h *= 2


@njit(cache=True)
def rotate(x, PT, signs, rht, rscale, y):
    """y = Π x (dense; PT = Πᵀ, i.e. PT[i, j] = P[j, i], C-contiguous so the inner loop over j
    is contiguous and vectorizes) or fwht(s ⊙ x)·rscale (rht); float32, the spec's order."""
    d = x.shape[0]
    if rht:
        for i in range(d):
            y[i] = x[i] * signs[i]
        fwht(y, d)
        for i in range(d):
            y[i] = y[i] * rscale
    else:
        for j in range(d):
            y[j] = np.float32(0.0)
        for i in range(d):  # i outer: every y[j] is summed left to right over i
            xi = x[i]
            for j in range(d):
                y[j] = y[j] + PT[i, j] * xi


@njit(cache=True)
def unrotate(w, P, signs, rht, rscale, x):
    """x = Πᵀ w (dense) or s ⊙ (fwht(w)·rscale) (rht)."""
    d = w.shape[0]
    if rht:
        for i in range(d):
            x[i] = w[i]
        fwht(x, d)
        for i in range(d):
            x[i] = (x[i] * rscale) * signs[i]
    else:
        for i in range(d):
            x[i] = np.float32(0.0)
        for j in range(d):  # j outer: every x[i] is summed left to right over j
            wj = w[j]
            for i in range(d):
                x[i] = x[i] + P[j, i] * wj


@njit(cache=True)
def f32_to_f16(g):
    """float16 bits of a float32 g >= 0 (round half to even); F16_OVERFLOW past 65504 or Inf/NaN."""
    u = np.int64(f32_bits(np.float32(g))) & 0x7FFFFFFF
    if u >= 0x477FF000:  # >= 65520 (rounds to Inf), Inf or NaN
        return F16_OVERFLOW
    e = u >> 23
    if e >= 113:  # a normal half: rebias the exponent, round 13 mantissa bits away
        # adding 0xFFF plus the kept LSB rounds half to even; a carry moves into the exponent
        return ((u - (112 << 23)) + 0xFFF + ((u >> 13) & 1)) >> 13
    if e < 102:  # below 2**-25: rounds to 0
        return 0
    # a subnormal half: value = sig * 2**(e - 150); units of 2**-24 → shift right by 126 - e
    sig = (u & 0x7FFFFF) | 0x800000
    sh = 126 - e
    return (sig + ((1 << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh


@njit(cache=True)
def f16_to_f32(h):
    """float32 value of float16 bits h (the sign bit is honoured; Inf/NaN are returned as is)."""
    h = np.int64(h) & 0xFFFF
    s = (h >> 15) << 31
    e = (h >> 10) & 31
    m = h & 1023
    if e == 0:  # zero or subnormal: m * 2**-24, exact in float32
        v = np.float32(m) * np.float32(5.9604644775390625e-08)
        return -v if s else v
    if e == 31:
        return bits_f32(s | 0x7F800000 | (m << 13))
    return bits_f32(s | ((e + 112) << 23) | (m << 13))


@njit(cache=True)
def pack_fields(codes, width, out, col):
    """Pack codes[v, g] (each < 2**width, width <= 24) LSB-first into out[v, col:col + ceil(G*width/8)]."""
    n, G = codes.shape
    nb = (G * width + 7) // 8
    for v in range(n):
        acc = np.int64(0)
        nacc = 0
        o = col
        for g in range(G):
            acc |= np.int64(codes[v, g]) << nacc
            nacc += width
            while nacc >= 8:
                out[v, o] = np.uint8(acc & 0xFF)
                o += 1
                acc >>= 8
                nacc -= 8
        if nacc > 0:
            out[v, o] = np.uint8(acc & 0xFF)
            o += 1
        for k in range(o, col + nb):
            out[v, k] = 0


@njit(cache=True, inline="always")
def field(data, v, col, idx, width):
    """Code ``idx`` (``width`` bits, LSB-first) of the bit field starting at byte ``col`` of row v."""
    bit = idx * width
    b = col + (bit >> 3)
    sh = bit & 7
    word = np.int64(0)
    need = (sh + width + 7) // 8
    for k in range(need):
        word |= np.int64(data[v, b + k]) << (8 * k)
    return (word >> sh) & ((1 << width) - 1)
