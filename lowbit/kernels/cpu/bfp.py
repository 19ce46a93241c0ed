"""Numba kernels of block floating point (family ``bfp``); twins of :mod:`lowbit.kernels.gpu.bfp`.

* ``encode(x, n, m, out)``: rows of ``x[nb, n]`` (one block each) → ``out[nb, 1 + n*m/8]``:
  byte 0 the biased scale exponent E, then n two's-complement m-bit codes LSB-first.
  ``e = floor(log2 amax)``, ``E = max(e − (m − 2), −126) + 127``; ``code = RNE(x / 2**(E−127))``
  clamped to ±(2**(m−1) − 1); all by integer operations on the float32 bits.
* ``decode(data, n, m, out)``: ``code · 2**(E−127)``; E = 0 or 255 (never written) → NaN block.
* ``scores`` / ``weighted_sum``: attention on the codes (see :mod:`lowbit.kvcache`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..registry import kernel
from ._bits import bits_f32, f32_bits
from ._kvcommon import field


@njit(cache=True, inline="always")
def block_exponent(amax_bits, m):
    """The biased scale exponent E of a block whose largest |x| has bit pattern amax_bits."""
    a = np.int64(amax_bits)
    if a == 0:
        return 1
    e32 = a >> 23
    if e32 == 0:  # float32 subnormal: floor(log2) from the highest set bit
        e = np.int64(-150)
        t = a
        while t:
            t >>= 1
            e += 1
    else:
        e = e32 - 127
    es = e - (m - 2)
    if es < -126:
        es = -126
    return es + 127


@njit(cache=True, inline="always")
def block_code(u, E, m):
    """Two's-complement m-bit code of the float32 with bits u under scale 2**(E−127)."""
    sign = np.int64(u) >> 31
    a = np.int64(u) & 0x7FFFFFFF
    if a == 0:
        return 0
    e32 = a >> 23
    if e32 == 0:
        sig = a
        ex = np.int64(-149)
    else:
        sig = (a & 0x7FFFFF) | 0x800000
        ex = e32 - 150
    sh = (E - 127) - ex  # |x| / 2**es = sig / 2**sh, sh >= 16 for every x of the block
    if sh > 30:
        sh = 30
    # round half to even: add half a step minus one, plus the kept LSB, then shift
    k = (sig + ((np.int64(1) << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh
    lim = (1 << (m - 1)) - 1
    if k > lim:
        k = lim
    if sign:
        k = -k
    return k & ((1 << m) - 1)


@njit(cache=True)
def _encode(x, n, m, out):
    nb = x.shape[0]
    for b in range(nb):
        amax = np.int64(0)
        for i in range(n):
            a = np.int64(f32_bits(x[b, i])) & 0x7FFFFFFF
            if a > amax:  # finite float32 order = integer order of |bits|
                amax = a
        E = block_exponent(amax, m)
        out[b, 0] = E
        acc = np.int64(0)
        nacc = 0
        o = 1
        for i in range(n):
            acc |= block_code(f32_bits(x[b, i]), E, m) << nacc
            nacc += m
            while nacc >= 8:
                out[b, o] = np.uint8(acc & 0xFF)
                o += 1
                acc >>= 8
                nacc -= 8


@kernel("bfp", "cpu", "encode")
def encode(x, n, m, out):
    _encode(x, n, m, out)


@njit(cache=True)
def _decode(data, n, m, out):
    nb = data.shape[0]
    half = 1 << (m - 1)
    for b in range(nb):
        E = np.int64(data[b, 0])
        bad = E == 0 or E == 255
        scale = bits_f32(E << 23)
        for i in range(n):
            c = field(data, b, 1, i, m)
            c = c - 2 * half if c >= half else c  # two's complement
            out[b, i] = np.float32(np.nan) if bad else np.float32(c) * scale


@kernel("bfp", "cpu", "decode")
def decode(data, n, m, out):
    _decode(data, n, m, out)
