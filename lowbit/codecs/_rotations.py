"""Seeded random matrices of the rotated KV codecs, reproducible bit for bit from the spec.

* :func:`gaussians` — counter-based SplitMix64 → 53-bit uniforms in (0, 1) → Box–Muller
  (Python's ``math.log/cos/sin``, i.e. the platform's libm, one call per value).
* :func:`haar` — the Q factor (positive diagonal of R) of the d×d Gaussian matrix, by two
  passes of modified Gram–Schmidt whose dot products are ``math.fsum`` (correctly rounded, so
  no BLAS or summation order enters), rounded to float32. Haar-distributed (research/kvcodecs.md §1.2).
* :func:`signs` — ±1 per coordinate from the low bit of the SplitMix64 stream (the RHT's D).
* :func:`gaussian_matrix` — the d×d i.i.d. N(0,1) matrix S of the QJL sketch, float32.

Streams: SplitMix64 state ``seed * 0x9E3779B97F4A7C15 + tag`` (mod 2**64), output k is
``mix(state + (k+1) * 0x9E3779B97F4A7C15)``. Tags name the use (rotation, signs, sketch) and
the instance (a codec with an outlier split has two independent instances). Matrices are
cached per (d, seed, tag) and returned read-only.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["splitmix64", "uniforms", "gaussians", "haar", "signs", "gaussian_matrix",
           "TAG_ROTATION", "TAG_SIGNS", "TAG_SKETCH"]

_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
TAG_ROTATION = 1
TAG_SIGNS = 2
TAG_SKETCH = 3


def splitmix64(seed: int, tag: int, n: int) -> np.ndarray:
    """n uint64 outputs of the SplitMix64 stream of (seed, tag)."""
    state = (int(seed) * _GOLDEN + int(tag)) & _M64
    k = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(state) + k * np.uint64(_GOLDEN)  # wraps mod 2**64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniforms(seed: int, tag: int, n: int) -> np.ndarray:
    """float64 uniforms ((z >> 11) + 0.5) · 2**-53 in (0, 1): exact, never 0 or 1."""
    return ((splitmix64(seed, tag, n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def gaussians(seed: int, tag: int, n: int) -> np.ndarray:
    """n standard normals by Box–Muller on consecutive uniform pairs (u1, u2):
    sqrt(−2 ln u1)·cos(2π u2), sqrt(−2 ln u1)·sin(2π u2)."""
    m = (n + 1) // 2
    u = uniforms(seed, tag, 2 * m).tolist()
    out = []
    two_pi = 2.0 * math.pi
    for i in range(m):
        r = math.sqrt(-2.0 * math.log(u[2 * i]))
        a = two_pi * u[2 * i + 1]
        out.append(r * math.cos(a))
        out.append(r * math.sin(a))
    return np.array(out[:n], dtype=np.float64)


@functools.cache
def haar(d: int, seed: int, tag: int = TAG_ROTATION) -> np.ndarray:
    """float32 d×d orthogonal matrix Π (y = Π x), Haar-distributed; see the module docstring."""
    G = gaussians(seed, tag, d * d).reshape(d, d)  # row-major: G[i, j] is value i*d + j
    Q = np.zeros((d, d), dtype=np.float64)
    for k in range(d):
        v = G[:, k].copy()
        for _ in range(2):  # MGS, twice: orthogonal to float64 precision
            for j in range(k):
                q = Q[:, j]
                r = math.fsum((q * v).tolist())
                v = v - r * q
        nrm = math.sqrt(math.fsum((v * v).tolist()))
        Q[:, k] = v / nrm
    out = Q.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.cache
def signs(d: int, seed: int, tag: int = TAG_SIGNS) -> np.ndarray:
    """float32 ±1 vector: −1 where the stream's output has its low bit set."""
    s = np.where((splitmix64(seed, tag, d) & np.uint64(1)) == 1, -1.0, 1.0).astype(np.float32)
    s.setflags(write=False)
    return s


@functools.cache
def gaussian_matrix(rows: int, cols: int, seed: int, tag: int = TAG_SKETCH) -> np.ndarray:
    """float32 rows×cols matrix of i.i.d. N(0, 1) (the QJL sketch S), row-major from the stream."""
    S = gaussians(seed, tag, rows * cols).reshape(rows, cols).astype(np.float32)
    S.setflags(write=False)
    return S


def hadamard(d: int) -> np.ndarray:
    """The Sylvester Hadamard matrix H (entries ±1, H[i, j] = (−1)^popcount(i & j)), float64."""
    # Sylvester doubling [[H, H], [H, −H]]: the new top bit of i and j is set in both only in
    # the lower-right quarter, which flips the sign exactly when popcount(i & j) gains one
    H = np.ones((1, 1))
    while H.shape[0] < d:
        H = np.block([[H, H], [H, -H]])
    return H
