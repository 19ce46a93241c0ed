"""Numba kernels of the ``qjl`` codec (1-bit JL key sketches; spec/qjl.toml). Every sum runs
sequentially in float32 with each product and sum rounded once (no FMA: Numba does not contract
without fastmath), the order the Triton twins in :mod:`lowbit.kernels.gpu.qjl` use.

* ``encode(x, S, out, norm)``: sign bits of ``S @ x[r]`` packed LSB-first into ``out[r]``,
  ``norm[r] = sqrt(sum x^2)``.
* ``decode(data, S, norm, c, out)``: ``out[r, j] = fl(c*norm[r]) * sum_i ±S[i, j]``.
* ``project(q, S, out)``: ``out[r, i] = sum_j S[i, j] * q[r, j]`` (float32, the sign's input).
* ``score(p, data, norm, c, out)``: ``out[a, t] = fl(c*norm[t]) * sum_i ±p[a, i]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel


@njit(inline="always")
def _dot(S, i, x, r):
    acc = np.float32(0.0)
    for j in range(S.shape[1]):
        acc = np.float32(acc + np.float32(S[i, j] * x[r, j]))
    return acc


@njit(cache=True, parallel=True)
def _encode(x, S, out, norm):
    rows, d = x.shape
    m = S.shape[0]
    for r in prange(rows):
        nsq = np.float32(0.0)
        for j in range(d):
            nsq = np.float32(nsq + np.float32(x[r, j] * x[r, j]))
        norm[r] = np.sqrt(nsq)  # float32 sqrt: correctly rounded
        for b in range(m // 8):
            byte = 0
            for k in range(8):
                if _dot(S, b * 8 + k, x, r) >= 0:  # +0 and -0 both count as non-negative
                    byte |= 1 << k  # projection 8b+k -> bit k (LSB first)
            out[r, b] = byte


@njit(cache=True, parallel=True)
def _decode(data, S, norm, c, out):
    rows, d = out.shape
    m = S.shape[0]
    for r in prange(rows):
        sc = np.float32(c * norm[r])
        for j in range(d):
            acc = np.float32(0.0)
            for i in range(m):
                s = S[i, j]
                acc = np.float32(acc + (s if (data[r, i >> 3] >> (i & 7)) & 1 else -s))  # i>>3: byte, i&7: bit
            out[r, j] = np.float32(sc * acc)


@njit(cache=True, parallel=True)
def _project(q, S, out):
    for r in prange(q.shape[0]):
        for i in range(S.shape[0]):
            out[r, i] = _dot(S, i, q, r)


@njit(cache=True, parallel=True)
def _score(p, data, norm, c, out):
    nq, m = p.shape
    T = data.shape[0]
    for a in prange(nq):
        for t in range(T):
            acc = np.float32(0.0)
            for i in range(m):
                v = p[a, i]
                acc = np.float32(acc + (v if (data[t, i >> 3] >> (i & 7)) & 1 else -v))
            out[a, t] = np.float32(np.float32(c * norm[t]) * acc)


@kernel("qjl", "cpu", "encode")
def encode(x, S, out, norm) -> None:
    _encode(x, S, out, norm)


@kernel("qjl", "cpu", "decode")
def decode(data, S, norm, c, out) -> None:
    _decode(data, S, norm, np.float32(c), out)


@kernel("qjl", "cpu", "project")
def project(q, S, out) -> None:
    _project(q, S, out)


@kernel("qjl", "cpu", "score")
def score(p, data, norm, c, out) -> None:
    _score(p, data, norm, np.float32(c), out)
