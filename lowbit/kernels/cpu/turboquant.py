"""Numba kernels of the TurboQuant codecs (family ``turboquant``): the CPU twins of
:mod:`lowbit.kernels.gpu.turboquant`, same entry points and arguments.

One *instance* is (dimension D, rotation, codebook): ``turboquant_mse`` has one (two with an
outlier split), ``turboquant_prod`` one MSE instance plus a QJL sketch. Entry points:

* ``encode_instance(x, P, signs, rht, rscale, C, T, zero_code, has_mse, nc, codes, gam, resid, rnorm, flags)``:
  for every row of ``x[n, D]``: ``nrm = sqrt(tree_sumsq(x))``, ``y = rotate(x) / nrm`` (0 if
  nrm = 0), ``code_j = #{k : y_j > T[k]}``, ``γ = f16(nrm / sqrt(tree_sumsq(C[code])))`` (norm correction, ``nc``, after
  up to NC_ROUNDS rounds of ``code = Q(C[code] / ‖C[code]‖)`` so that re-encoding the decoded
  vector reproduces the codes; else ``f16(nrm)``); a γ
  that rounds to 0 resets the codes to ``zero_code`` (what y = 0 gives), one past 65504 sets
  ``flags[0]``. With ``resid`` non-empty also the residual ``r = y − C[code]·fl(γ/nrm)`` and
  ``rnorm = f16(nrm · sqrt(tree_sumsq(r)))`` for the QJL stage; ``has_mse=False`` (1-bit prod)
  skips the codebook: r = y.
* ``sketch_signs(r, S, bits)``: ``bits[v, i] = 1`` where ``Σ_j S[i,j]·r_j < 0`` (left to right over j).
* ``pack(codes, width, out, col)`` / ``decode_instance(...)`` / ``decode_prod(...)``: see each.
* ``scores`` / ``weighted_sum``: attention on the codes (see :mod:`lowbit.kvcache`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..registry import kernel
from ._kvcommon import (F16_OVERFLOW, f16_to_f32, f32_to_f16, field, pack_fields, rotate, tree_sumsq,
                        unrotate)

NAN32 = np.float32(np.nan)
NC_ROUNDS = 16  # norm-correction fixed-point rounds (spec: [algorithm] fixed_point)


@njit(cache=True)
def _encode_instance(x, P, signs, rht, rscale, C, T, zero_code, has_mse, nc, codes, gam, resid, rnorm, flags):
    n, D = x.shape
    PT = np.ascontiguousarray(P.T)  # Πᵀ row-major: rotate's inner loop runs along memory
    want_r = resid.shape[0] > 0
    y = np.empty(D, np.float32)
    c = np.empty(D, np.float32)
    buf = np.empty(2 * D + 2, np.float32)
    nb = T.shape[0]
    for v in range(n):
        xv = x[v]
        nrm = np.float32(math.sqrt(tree_sumsq(xv, D, buf)))
        rotate(xv, PT, signs, rht, rscale, y)
        for j in range(D):
            y[j] = y[j] / nrm if nrm > 0 else np.float32(0.0)
        g16 = 0
        a = np.float32(0.0)
        if has_mse:
            for j in range(D):
                k = 0
                for t in range(nb):  # code = how many boundaries lie strictly below y_j
                    k += y[j] > T[t]
                codes[v, j] = k
                c[j] = C[k]
            cn = np.float32(math.sqrt(tree_sumsq(c, D, buf)))
            if nc:
                # Decoding gives the direction c/‖c‖, which re-encoding quantizes; make the codes
                # a fixed point of code ↦ Q(C[code] / ‖C[code]‖) so that encode∘decode is the
                # identity. Up to NC_ROUNDS rounds; once a round changes nothing the codes stay
                # put, so stopping early equals running all rounds (the GPU kernel does that).
                for _ in range(NC_ROUNDS):
                    moved = False
                    for j in range(D):
                        u = c[j] / cn
                        k = 0
                        for t in range(nb):
                            k += u > T[t]
                        if k != codes[v, j]:
                            moved = True
                        codes[v, j] = k
                    if not moved:
                        break
                    for j in range(D):
                        c[j] = C[codes[v, j]]
                    cn = np.float32(math.sqrt(tree_sumsq(c, D, buf)))
            g16 = f32_to_f16(nrm / cn if nc else nrm)
            if g16 == F16_OVERFLOW:
                flags[0] = 1
                g16 = 0
            if g16 == 0:  # the norm underflows: store what a zero vector stores
                for j in range(D):
                    codes[v, j] = zero_code
                    c[j] = C[zero_code]
            gam[v] = g16
            a = f16_to_f32(g16) / nrm if nrm > 0 else np.float32(0.0)
        if want_r:
            for j in range(D):
                resid[v, j] = y[j] - c[j] * a if has_mse else y[j]
            rn = np.float32(math.sqrt(tree_sumsq(resid[v], D, buf)))
            r16 = f32_to_f16(nrm * rn)
            if r16 == F16_OVERFLOW:
                flags[0] = 1
                r16 = 0
            rnorm[v] = r16


@kernel("turboquant", "cpu", "encode_instance")
def encode_instance(x, P, signs, rht, rscale, C, T, zero_code, has_mse, nc, codes, gam, resid, rnorm, flags):
    _encode_instance(x, P, signs, rht, rscale, C, T, zero_code, has_mse, nc, codes, gam, resid, rnorm, flags)


@njit(cache=True)
def _sketch_signs(r, S, bits):
    n, D = r.shape
    m = S.shape[0]
    for v in range(n):
        for i in range(m):
            acc = np.float32(0.0)
            for j in range(D):
                acc = acc + S[i, j] * r[v, j]
            bits[v, i] = 1 if acc < 0 else 0  # sgn(0) = +1


@kernel("turboquant", "cpu", "sketch_signs")
def sketch_signs(r, S, bits):
    _sketch_signs(r, S, bits)


@kernel("turboquant", "cpu", "pack")
def pack(codes, width, out, col):
    pack_fields(codes, width, out, col)


@njit(cache=True)
def _decode_instance(data, gcol, ccol, bits, C, P, signs, rht, rscale, out):
    """out[v] = unrotate(C[codes]) · γ; γ and codes read from data[v] at byte gcol / ccol."""
    n = data.shape[0]
    D = out.shape[1]
    w = np.empty(D, np.float32)
    z = np.empty(D, np.float32)
    for v in range(n):
        h = np.int64(data[v, gcol]) | (np.int64(data[v, gcol + 1]) << 8)
        g = f16_to_f32(h)
        for j in range(D):
            w[j] = C[field(data, v, ccol, j, bits)]
        unrotate(w, P, signs, rht, rscale, z)
        bad = (h & 0x7C00) == 0x7C00  # an Inf/NaN norm (never written): the vector is NaN
        for i in range(D):
            out[v, i] = NAN32 if bad else z[i] * g


@kernel("turboquant", "cpu", "decode_instance")
def decode_instance(data, gcol, ccol, bits, C, P, signs, rht, rscale, out):
    _decode_instance(data, gcol, ccol, bits, C, P, signs, rht, rscale, out)


@njit(cache=True)
def _decode_prod(data, gcol, rcol, ccol, zcol, bits, C, S, alpha, P, signs, rht, rscale, out):
    """out[v] = unrotate(γ·C[codes] + fl(α·γ_r)·Sᵀz), z = ±1 (bit 1 = −1); bits = 0: no MSE part."""
    n = data.shape[0]
    D = out.shape[1]
    m = S.shape[0]
    w = np.empty(D, np.float32)
    u = np.empty(D, np.float32)
    z = np.empty(D, np.float32)
    for v in range(n):
        hr = np.int64(data[v, rcol]) | (np.int64(data[v, rcol + 1]) << 8)
        bad = (hr & 0x7C00) == 0x7C00
        beta = alpha * f16_to_f32(hr)
        g = np.float32(0.0)
        if bits > 0:
            h = np.int64(data[v, gcol]) | (np.int64(data[v, gcol + 1]) << 8)
            bad = bad or (h & 0x7C00) == 0x7C00
            g = f16_to_f32(h)
        for j in range(D):
            u[j] = np.float32(0.0)
        for i in range(m):  # u = Sᵀ z, left to right over i
            zi = np.float32(-1.0) if field(data, v, zcol, i, 1) else np.float32(1.0)
            for j in range(D):
                u[j] = u[j] + S[i, j] * zi
        for j in range(D):
            if bits > 0:
                w[j] = g * C[field(data, v, ccol, j, bits)] + beta * u[j]
            else:
                w[j] = beta * u[j]
        unrotate(w, P, signs, rht, rscale, z)
        for i in range(D):
            out[v, i] = NAN32 if bad else z[i]


@kernel("turboquant", "cpu", "decode_prod")
def decode_prod(data, gcol, rcol, ccol, zcol, bits, C, S, alpha, P, signs, rht, rscale, out):
    _decode_prod(data, gcol, rcol, ccol, zcol, bits, C, S, alpha, P, signs, rht, rscale, out)
