"""Numba kernels of OCTOPUS (family ``octopus``); twins of :mod:`lowbit.kernels.gpu.octopus`.

Per vector (lowbit/spec/octopus.toml): ``y = rotate(x) / n``; ``G3 = D // 3`` full triplets
(y[3g], y[3g+1], y[3g+2]) and, if D % 3, one remainder slot (a pair or a single coordinate).
A slot's code is ``jξ | jη << bξ | jρ << (bξ + bη)``.

* triplet: ``l = (|y0| + |y1|) + |y2|``, ``p = y / l`` (0 if l = 0); octahedral map
  ``(u, v) = (px, py)`` if pz >= 0 else ``(sgn(px)(1 − |py|), sgn(py)(1 − |px|))``, sgn(0) = +1;
  ``jξ = #(u > Tξ)``, ``jη = #(v > Tη)``; with ``joint`` the 3×3 neighbourhood is searched for
  the direction ``DIR3[a, b]`` maximising ``s = (y0 d0 + y1 d1) + y2 d2`` (first maximum in the
  order δ, ε = −1, 0, 1; strict >) and ρ is quantized from s, else from
  ``sqrt((y0² + y1²) + y2²)``; ``ŷ = Cρ[jρ] · DIR3[jξ, jη]``;
* pair: ``u = y0 / (|y0| + |y1|)`` (0 if that is 0) on the circle codebook, jη = 1 if y1 < 0,
  ρ = sqrt(y0² + y1²) on the pair-norm codebook; ``ŷ = Cρ2[jρ] · DIR2[jξ, jη]``;
* single: ``jξ = #(y0 > T1)`` on the f_d codebook; ``ŷ = C1[jξ]``;
* ``‖ŷ‖²`` = pairwise tree over the slots of ``(ŷ0² + ŷ1²) + ŷ2²``; norm correction: up to
  NC_ROUNDS rounds re-quantize ``ŷ/‖ŷ‖`` (all slots, as above) so that re-encoding the decoded
  vector gives the same codes; then ``γ = f16(n / ‖ŷ‖)``; γ that
  underflows → the canonical codes; ``nc=False``: ``γ = f16(n)`` (those of y = 0), γ past 65504 → ``flags[0]``.

Decode: ``x = unrotate(ŷ) · γ`` (the turboquant order), NaN when the norm field is Inf/NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..registry import kernel
from ._kvcommon import F16_OVERFLOW, f16_to_f32, f32_to_f16, field, next_pow2, rotate, unrotate

NC_ROUNDS = 16  # norm-correction fixed-point rounds (spec: [algorithm] fixed_point)


@njit(cache=True, inline="always")
def _count(v, T):
    k = 0
    for t in range(T.shape[0]):
        k += v > T[t]
    return k


@njit(cache=True, inline="always")
def _sgn(a):
    return np.float32(1.0) if a >= 0 else np.float32(-1.0)


@njit(cache=True)
def _encode_slots(y, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1, codes, yh, s2):
    """Quantize the rotated unit vector y: slot codes → codes[:], ŷ → yh, slot energies → s2."""
    NE = 1 << be
    NX = 1 << bx
    for g in range(G3):
        y0 = y[3 * g]
        y1 = y[3 * g + 1]
        y2 = y[3 * g + 2]
        l = (abs(y0) + abs(y1)) + abs(y2)
        if l > 0:
            px = y0 / l
            py = y1 / l
            pz = y2 / l
        else:
            px = np.float32(0.0)
            py = np.float32(0.0)
            pz = np.float32(0.0)
        if pz >= 0:
            u = px
            v = py
        else:  # fold the lower hemisphere onto the corners; sgn(0) = +1
            u = _sgn(px) * (np.float32(1.0) - abs(py))
            v = _sgn(py) * (np.float32(1.0) - abs(px))
        ja = _count(u, Tx)
        jb = _count(v, Te)
        if joint:
            best = np.float32(-np.inf)
            ba = ja
            bb = jb
            for da in range(-1, 2):
                for db in range(-1, 2):
                    a = ja + da
                    b = jb + db
                    if a < 0 or a >= NX or b < 0 or b >= NE:
                        continue
                    k = 3 * (a * NE + b)
                    s = (y0 * DIR3[k] + y1 * DIR3[k + 1]) + y2 * DIR3[k + 2]
                    if s > best:
                        best = s
                        ba = a
                        bb = b
            ja = ba
            jb = bb
            rho = best
        else:
            rho = np.float32(math.sqrt((y0 * y0 + y1 * y1) + y2 * y2))
        jr = _count(rho, Tr)
        codes[g] = ja | (jb << bx) | (jr << (bx + be))
        k = 3 * (ja * NE + jb)
        c = Cr[jr]
        a0 = c * DIR3[k]
        a1 = c * DIR3[k + 1]
        a2 = c * DIR3[k + 2]
        yh[3 * g] = a0
        yh[3 * g + 1] = a1
        yh[3 * g + 2] = a2
        s2[g] = (a0 * a0 + a1 * a1) + a2 * a2
    if rem == 2:
        y0 = y[3 * G3]
        y1 = y[3 * G3 + 1]
        l = abs(y0) + abs(y1)
        u = y0 / l if l > 0 else np.float32(0.0)
        ja = _count(u, Tc)
        jb = 1 if y1 < 0 else 0
        rho = np.float32(math.sqrt(y0 * y0 + y1 * y1))
        jr = _count(rho, Tr2)
        codes[G3] = ja | (jb << bx) | (jr << (bx + be))
        k = 2 * (2 * ja + jb)
        c = Cr2[jr]
        a0 = c * DIR2[k]
        a1 = c * DIR2[k + 1]
        yh[3 * G3] = a0
        yh[3 * G3 + 1] = a1
        s2[G3] = (a0 * a0 + a1 * a1) + np.float32(0.0)
    elif rem == 1:
        ja = _count(y[3 * G3], T1)
        codes[G3] = ja
        a0 = C1[ja]
        yh[3 * G3] = a0
        s2[G3] = (a0 * a0 + np.float32(0.0)) + np.float32(0.0)


@njit(cache=True)
def _slot_norm(s2, G, buf):
    """‖ŷ‖ = sqrt of the pairwise tree sum of the slot energies s2[0:G] (zero-padded)."""
    p = next_pow2(G)
    for i in range(p):
        buf[i] = s2[i] if i < G else np.float32(0.0)
    while p > 1:
        p //= 2
        for k in range(p):
            buf[k] = buf[2 * k] + buf[2 * k + 1]
    return np.float32(math.sqrt(buf[0]))


@njit(cache=True)
def _encode(x, P, signs, rht, rscale, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1,
            nc, canon, codes, gam, flags):
    n, D = x.shape
    PT = np.ascontiguousarray(P.T)  # Πᵀ row-major: rotate's inner loop runs along memory
    G = codes.shape[1]
    y = np.empty(D, np.float32)
    yh = np.empty(D, np.float32)
    buf = np.empty(2 * D + 2, np.float32)
    s2 = np.empty(G, np.float32)
    u = np.empty(D, np.float32)
    old = np.empty(G, np.int64)
    for v in range(n):
        xv = x[v]
        p = next_pow2(D)
        for i in range(p):
            buf[i] = xv[i] * xv[i] if i < D else np.float32(0.0)
        while p > 1:
            p //= 2
            for k in range(p):
                buf[k] = buf[2 * k] + buf[2 * k + 1]
        nrm = np.float32(math.sqrt(buf[0]))
        rotate(xv, PT, signs, rht, rscale, y)
        for j in range(D):
            y[j] = y[j] / nrm if nrm > 0 else np.float32(0.0)
        _encode_slots(y, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1, codes[v], yh, s2)
        cn = _slot_norm(s2, G, buf)
        if nc:
            # Decoding gives the direction ŷ/‖ŷ‖, which re-encoding quantizes: make the codes a
            # fixed point of codes ↦ slots(ŷ/‖ŷ‖) (only the norm codes ρ can move: the
            # directions are scale-free), up to NC_ROUNDS rounds; a round that moves nothing
            # leaves every later round unchanged, so stopping early equals running them all.
            for _ in range(NC_ROUNDS):
                for j in range(D):
                    u[j] = yh[j] / cn
                for g in range(G):
                    old[g] = codes[v, g]
                _encode_slots(u, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1,
                              codes[v], yh, s2)
                cn = _slot_norm(s2, G, buf)
                moved = False
                for g in range(G):
                    if old[g] != codes[v, g]:
                        moved = True
                if not moved:
                    break
        g16 = f32_to_f16(nrm / cn if nc else nrm)
        if g16 == F16_OVERFLOW:
            flags[0] = 1
            g16 = 0
        if g16 == 0:  # the norm underflows: store what y = 0 stores
            for g in range(G):
                codes[v, g] = canon[g]
        gam[v] = g16


@kernel("octopus", "cpu", "encode")
def encode(x, P, signs, rht, rscale, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1,
           nc, canon, codes, gam, flags):
    _encode(x, P, signs, rht, rscale, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1,
            nc, canon, codes, gam, flags)


@njit(cache=True)
def dequant_slots(data, v, ccol, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, yh):
    """ŷ of row v from its packed slot codes (the rotated-domain vector before γ)."""
    NE = 1 << be
    mx = (1 << bx) - 1
    me = (1 << be) - 1
    for g in range(G3):
        c = field(data, v, ccol, g, W)
        ja = c & mx
        jb = (c >> bx) & me
        jr = c >> (bx + be)
        k = 3 * (ja * NE + jb)
        r = Cr[jr]
        yh[3 * g] = r * DIR3[k]
        yh[3 * g + 1] = r * DIR3[k + 1]
        yh[3 * g + 2] = r * DIR3[k + 2]
    if rem == 2:
        c = field(data, v, ccol, G3, W)
        ja = c & mx
        jb = (c >> bx) & 1
        jr = c >> (bx + be)
        k = 2 * (2 * ja + jb)
        r = Cr2[jr]
        yh[3 * G3] = r * DIR2[k]
        yh[3 * G3 + 1] = r * DIR2[k + 1]
    elif rem == 1:
        c = field(data, v, ccol, G3, W)
        yh[3 * G3] = C1[c & mx]


@njit(cache=True)
def _decode(data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, P, signs, rht, rscale, out):
    n, D = out.shape
    yh = np.empty(D, np.float32)
    z = np.empty(D, np.float32)
    for v in range(n):
        h = np.int64(data[v, 0]) | (np.int64(data[v, 1]) << 8)
        g = f16_to_f32(h)
        dequant_slots(data, v, 2, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, yh)
        unrotate(yh, P, signs, rht, rscale, z)
        bad = (h & 0x7C00) == 0x7C00
        for i in range(D):
            out[v, i] = np.float32(np.nan) if bad else z[i] * g


@kernel("octopus", "cpu", "decode")
def decode(data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, P, signs, rht, rscale, out):
    _decode(data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, P, signs, rht, rscale, out)
