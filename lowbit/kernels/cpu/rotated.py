"""Numba kernels of the ``rotated`` wrapper (spec/rotated.toml), twins of
:mod:`lowbit.kernels.gpu.rotated`: the in-place fast Walsh–Hadamard transform in its fixed
butterfly order and the dense rotation as sequential float32 sums (no FMA: Numba does not
contract without fastmath). NaN results are written as the canonical 0x7FC00000.

* ``hadamard(x, signs, c, inverse, out)``: forward ``fwht(x * s) * c``; inverse ``fwht(y) * c * s``.
* ``dense(x, Q, inverse, out)``: forward ``out[i] = sum_j x[j] * Q[i, j]``; inverse
  ``out[j] = sum_i x[i] * Q[i, j]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel

_QNAN = np.float32(np.nan)


@njit(cache=True, parallel=True)
def _hadamard(x, s, c, inverse, out):
    rows, K = x.shape
    for r in prange(rows):
        v = np.empty(K, np.float32)
        for j in range(K):
            v[j] = x[r, j] if inverse else np.float32(x[r, j] * s[j])  # a sign flip: exact
        h = 1
        while h < K:  # butterflies: (a, b) -> (a + b, a - b) over pairs h apart
            for i in range(0, K, 2 * h):
                for j in range(i, i + h):
                    a, b = v[j], v[j + h]
                    v[j] = np.float32(a + b)
                    v[j + h] = np.float32(a - b)
            h *= 2
        for j in range(K):
            y = np.float32(v[j] * c)
            if inverse:
                y = np.float32(y * s[j])
            out[r, j] = y if y == y else _QNAN


@njit(cache=True, parallel=True)
def _dense(x, Q, inverse, out):
    rows, K = x.shape
    for r in prange(rows):
        for i in range(K):
            acc = np.float32(0.0)
            for j in range(K):
                acc = np.float32(acc + np.float32(x[r, j] * (Q[j, i] if inverse else Q[i, j])))
            out[r, i] = acc if acc == acc else _QNAN


@kernel("rotated", "cpu", "hadamard")
def hadamard(x, signs, c, inverse: bool, out) -> None:
    _hadamard(x, signs, np.float32(c), inverse, out)


@kernel("rotated", "cpu", "dense")
def dense(x, Q, inverse: bool, out) -> None:
    _dense(x, Q, inverse, out)
