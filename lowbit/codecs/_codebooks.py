"""Lloyd–Max scalar codebooks for the rotated KV codecs, from the exact marginals.

Every codebook here is a 1-D continuous k-means (Lloyd–Max) solution for a known density:

* ``fd``: one coordinate of a uniformly random unit vector in dimension ``d`` (TurboQuant),
  ``f_d(x) ∝ (1 − x²)^((d−3)/2)`` on [−1, 1]  (research/kvcodecs.md §1.3);
* ``oct``: one octahedral coordinate ξ (or η) of a uniformly random direction in R³ under the
  standard octahedral map — it does not depend on d (OCTOPUS, §3.3/§3.4);
* ``circle``: the octahedral coordinate u of a uniformly random direction in the plane
  (OCTOPUS' remainder pair), ``p(u) = 1 / (π (u² + (1 − |u|)²))``;
* ``rho3`` / ``rho2``: the norm of a triplet / pair of coordinates of a random unit vector,
  ``ρ² ~ Beta(3/2, (d−3)/2)`` / ``Beta(1, (d−2)/2)``.

Symmetric densities get symmetric codebooks (solved on the positive half with 0 as a
boundary); the norms are one-sided. The solver is float64 numpy only: Gauss–Legendre quadrature
per cell, Lloyd iterations to a fixed point (|Δc| < 1e-14 in units of the density's scale).
:func:`codebook` returns float32 centroids (codes in increasing order) and float32 boundaries
``fl32((c_k + c_{k+1}) / 2)`` computed from the float64 centroids. The encoders pick the code
``#{k : y > boundary_k}`` (ties go to the lower cell), so the tables *are* the format: the ones
in :mod:`._codebook_tables` (written by ``python -m lowbit.tools.gen_codebooks``) are used when
present, anything else is computed on first use and cached.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

__all__ = ["codebook", "solve", "KINDS", "density"]

KINDS = ("fd", "oct", "circle", "rho3", "rho2")

_GL_X, _GL_W = np.polynomial.legendre.leggauss(64)


def density(kind: str, d: int) -> tuple[Callable[[np.ndarray], np.ndarray], float, float, bool]:
    """(unnormalised pdf, support start, support end, symmetric) in the *scaled* variable.

    ``fd``, ``rho3``, ``rho2`` are solved in units of ``1/sqrt(d)`` (t = x·√d), so their tables
    are well conditioned at every d; ``oct`` and ``circle`` live on [−1, 1]."""
    if kind == "fd":
        a = (d - 3) / 2

        def pdf(t: np.ndarray) -> np.ndarray:
            return np.exp(a * np.log1p(-np.minimum(t * t / d, 1.0 - 1e-300)))
        return pdf, 0.0, math.sqrt(d), True
    if kind == "rho3":
        a = (d - 5) / 2

        def pdf(t: np.ndarray) -> np.ndarray:
            return t * t * np.exp(a * np.log1p(-np.minimum(t * t / d, 1.0 - 1e-300)))
        return pdf, 0.0, math.sqrt(d), False
    if kind == "rho2":
        a = (d - 4) / 2

        def pdf(t: np.ndarray) -> np.ndarray:
            return t * np.exp(a * np.log1p(-np.minimum(t * t / d, 1.0 - 1e-300)))
        return pdf, 0.0, math.sqrt(d), False
    if kind == "circle":
        def pdf(u: np.ndarray) -> np.ndarray:
            a = np.abs(u)
            return 1.0 / (np.pi * (a * a + (1.0 - a) ** 2))
        return pdf, 0.0, 1.0, True
    if kind == "oct":
        return _oct_marginal, 0.0, 1.0, True
    raise ValueError(f"unknown codebook kind {kind!r}")


def _oct_marginal(u: np.ndarray) -> np.ndarray:
    """Marginal density of ξ for a uniform direction on S² under the standard octahedral map.

    On the unfolded square the density is 1 / (4π r³), r the Euclidean length of the octahedron
    point (|x|+|y|+|z| = 1) above (u, v): the solid angle of an area element dA of the face is
    dA cos θ / r² with cos θ = 1/(√3 r), and the face projects onto the (u, v) plane with factor
    √3. Inner diamond (|u|+|v| ≤ 1, upper hemisphere): r² = u² + v² + (1−|u|−|v|)²; outer
    triangles (lower hemisphere, folded): r² = (1−|v|)² + (1−|u|)² + (|u|+|v|−1)². Both are
    quadratics Q(v) = A v² + B v + C in v ≥ 0, whose integral of Q^(−3/2) is
    2(2Av + B) / ((4AC − B²) √Q(v)).
    """
    a = np.abs(np.asarray(u, dtype=np.float64))
    w = 1.0 - a

    def prim(A: float, B: np.ndarray, C: np.ndarray, v: np.ndarray) -> np.ndarray:
        Q = A * v * v + B * v + C
        return 2.0 * (2.0 * A * v + B) / ((4.0 * A * C - B * B) * np.sqrt(Q))

    # inner: 2v² − 2(1−a) v + a² + (1−a)², v ∈ [0, 1−a]
    Bi, Ci = -2.0 * w, a * a + w * w
    inner = prim(2.0, Bi, Ci, w) - prim(2.0, Bi, Ci, np.zeros_like(a))
    # outer: (1−v)² + (1−a)² + (a+v−1)² = 2v² + (2a − 4) v + 1 + 2(1−a)², v ∈ [1−a, 1]
    Bo, Co = 2.0 * a - 4.0, 1.0 + 2.0 * w * w
    outer = prim(2.0, Bo, Co, np.ones_like(a)) - prim(2.0, Bo, Co, w)
    return 2.0 * (inner + outer) / (4.0 * np.pi)  # v < 0 mirrors v > 0


def _cell_moments(pdf: Callable[[np.ndarray], np.ndarray], edges: np.ndarray, panels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """∫ pdf and ∫ t·pdf over each cell [edges[k], edges[k+1]] (Gauss–Legendre, ``panels`` panels)."""
    lo, hi = edges[:-1], edges[1:]
    m0 = np.zeros(lo.size)
    m1 = np.zeros(lo.size)
    for p in range(panels):
        a = lo + (hi - lo) * (p / panels)
        b = lo + (hi - lo) * ((p + 1) / panels)
        half = (b - a)[:, None] / 2
        t = (a + b)[:, None] / 2 + half * _GL_X[None, :]
        f = pdf(t) * _GL_W[None, :] * half
        m0 += f.sum(axis=1)
        m1 += (f * t).sum(axis=1)
    return m0, m1


def solve(kind: str, d: int, bits: int, *, tol: float = 1e-14, max_iter: int = 200_000) -> np.ndarray:
    """float64 Lloyd–Max centroids (all 2**bits of them, increasing) in the scaled variable."""
    pdf, lo, hi, sym = density(kind, d)
    n = 1 << bits
    k = n // 2 if sym else n
    if k == 0:  # a symmetric 0-bit codebook does not exist
        raise ValueError(f"{kind}: a symmetric codebook needs at least 1 bit")
    # start from equal-probability cells of a fine grid
    grid = np.linspace(lo, hi, 20001)
    m0, _ = _cell_moments(pdf, grid, panels=1)
    cdf = np.concatenate([[0.0], np.cumsum(m0)])
    cdf /= cdf[-1]
    edges = np.interp((np.arange(k + 1)) / k, cdf, grid)
    edges[0], edges[-1] = lo, hi
    c = np.empty(k)
    for it in range(max_iter):
        m0, m1 = _cell_moments(pdf, edges)
        new = np.where(m0 > 0, m1 / np.where(m0 > 0, m0, 1.0), (edges[:-1] + edges[1:]) / 2)
        done = it > 0 and np.max(np.abs(new - c)) < tol
        c = new
        edges = np.concatenate([[lo], (c[:-1] + c[1:]) / 2, [hi]])
        if done:
            break
    return np.concatenate([-c[::-1], c]) if sym else c


def scale_of(kind: str, d: int) -> float:
    """Multiply a scaled centroid by this to get the value in the codec's units."""
    return 1.0 / math.sqrt(d) if kind in ("fd", "rho3", "rho2") else 1.0


@functools.cache
def codebook(kind: str, d: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float32 [2**bits], boundaries float32 [2**bits − 1]) in the codec's units.

    ``oct`` and ``circle`` do not depend on ``d`` (pass any). A 0-bit one-sided codebook has
    one centroid and no boundary."""
    from . import _codebook_tables as T

    key = (kind, 0 if kind in ("oct", "circle") else int(d), int(bits))
    hit = T.TABLES.get(key)
    if hit is not None:
        c = np.array([float.fromhex(v) for v in hit[0]], dtype=np.float32)
        t = np.array([float.fromhex(v) for v in hit[1]], dtype=np.float32)
        return _frozen(c), _frozen(t)
    c64 = solve(kind, d, bits) * scale_of(kind, d)
    return _frozen(c64.astype(np.float32)), _frozen(((c64[:-1] + c64[1:]) / 2).astype(np.float32))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def table_entry(kind: str, d: int, bits: int) -> tuple[list[str], list[str]]:
    """The exact float32 values as hex strings (what ``gen_codebooks`` writes)."""
    c64 = solve(kind, d, bits) * scale_of(kind, d)
    c = [float(v).hex() for v in c64.astype(np.float32)]
    t = [float(v).hex() for v in ((c64[:-1] + c64[1:]) / 2).astype(np.float32)]
    return c, t
