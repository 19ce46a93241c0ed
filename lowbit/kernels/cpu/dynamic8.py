"""Numba kernels of the ``dynamic8`` codec (bitsandbytes' blockwise 8-bit dynamic map;
spec/dynamic8.toml).

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.dynamic8`):

* ``encode(x, code_map, lut, bs, out, absmax)``: float32 ``x[rows, K]`` (finite) → uint8 codes
  ``out[rows, K]`` and float32 ``absmax[rows, ceil(K/bs)]``, each float step rounded to float32
  once, in bitsandbytes' CPU order (no fused multiply-add: Numba does not contract without
  fastmath).
* ``decode(data, code_map, absmax, bs, out)``: ``out = fl32(code_map[data] * absmax[block])``,
  NaN written as the canonical 0x7FC00000.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel

_QNAN = np.float32(np.nan)  # 0x7FC00000
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_GRID = np.float32(65535.0)  # LUT_SIZE - 1


@njit(cache=True, parallel=True)
def _encode(x, lut, bs, out, absmax):
    rows, K = x.shape
    nb = absmax.shape[1]
    for t in prange(rows * nb):
        r = t // nb
        b = t - r * nb
        lo = b * bs
        hi = min(lo + bs, K)
        am = np.float32(0.0)
        for c in range(lo, hi):
            am = max(am, abs(x[r, c]))
        absmax[r, b] = am
        if am == 0:
            for c in range(lo, hi):
                out[r, c] = 0
            continue
        inv = np.float32(_ONE / am)  # one float32 division (Inf when am < 2**-128)
        for c in range(lo, hi):
            v = np.float32(x[r, c] * inv)
            if v != v:  # 0 * Inf: bitsandbytes' vector max(v, -1) returns -1 for NaN
                v = -_ONE
            v = min(max(v, -_ONE), _ONE)
            g = np.float32(np.float32(np.float32(v + _ONE) * _HALF) * _GRID)
            g = np.float32(g + _HALF)
            out[r, c] = lut[np.int64(g)]  # truncation toward zero; g is in [0.5, 65535.5]


@njit(cache=True, parallel=True)
def _decode(data, code_map, absmax, bs, out):
    rows, K = out.shape
    for r in prange(rows):
        for c in range(K):
            y = np.float32(code_map[data[r, c]] * absmax[r, c // bs])
            out[r, c] = y if y == y else _QNAN


@kernel("dynamic8", "cpu", "encode")
def encode(x, code_map, lut, bs: int, out, absmax) -> None:
    """Codes and block absmax of float32 ``x[rows, K]``; see the module docstring."""
    _encode(x, lut, bs, out, absmax)


@kernel("dynamic8", "cpu", "decode")
def decode(data, code_map, absmax, bs: int, out) -> None:
    """float32 values of the codes in ``data``; see the module docstring."""
    _decode(data, code_map, absmax, bs, out)
