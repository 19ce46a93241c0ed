"""Triton building blocks of the GGUF kernels: the GPU twins of :mod:`lowbit.kernels.cpu._ggml`.

The same rules as on the CPU, plus three that only the GPU needs (research/gguf.md §2.5):

* every float operation is one IEEE float32 operation in C's order. Division is
  ``tl.math.div_rn`` and square root ``tl.math.sqrt_rn`` (Triton's ``/`` and ``tl.sqrt`` are
  approximate on NVIDIA GPUs), and kernels are launched with ``enable_fp_fusion=False`` so that
  no ``a*b + c`` becomes an FMA;
* every rounding to an integer or to float16 is done on the float32 bit pattern with integer
  operations (the interpreter's float down-casts are wrong, and float -> int conversions of
  NaN/Inf/huge values differ between x86 and NVIDIA), and a float -> int conversion only ever
  sees values that C's conversion would also handle (:func:`c_trunc` routes the rest);
* a float sum runs one element at a time in a loop, never through ``tl.sum`` (a tree whose
  rounding differs). ``tl.sum`` is only used on integers (exact in any order), and ``tl.max`` /
  ``tl.min`` only for maxima and minima, which are order-free (the entry C's loop would keep on
  ties is then found by index, :func:`tile_signed_absmax`).

Lanes are GGUF blocks or sub-blocks: one program works on ``BLOCK`` of them at once, each lane
running ggml's scalar code. Element-wise steps run on ``[lanes, n]`` tiles of a block's elements;
the sequential float sums load ``x[base + i]`` lane by lane. ggml's candidate-scale searches put
the candidates on a tile axis (see :func:`col`).

The Triton interpreter (``TRITON_INTERPRET=1``, what CI runs) charges milliseconds per operation
and more per call of a ``@triton.jit`` helper, so the hottest loops have ``nearest_int`` and the
weight formula written out inline; the arithmetic is the same.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..registry import interpreting

MAGIC: tl.constexpr = tl.constexpr(12582912.0)  # 1.5 * 2**23 (ggml's nearest_int)
GROUP_MAX_EPS: tl.constexpr = tl.constexpr(1e-15)
QNAN: tl.constexpr = tl.constexpr(0x7FC00000)  # the canonical quiet NaN lowbit decodes to


@triton.jit
def f32_bits(x):
    """int32 bit pattern of float32 ``x``."""
    return x.to(tl.int32, bitcast=True)


@triton.jit
def bits_f32(u):
    """float32 whose bit pattern is int32 ``u``."""
    return u.to(tl.float32, bitcast=True)


@triton.jit
def nearest_int(f):
    """ggml's ``nearest_int``: adding 1.5*2**23 leaves round-half-even(f) + 2**22 in the low 23
    mantissa bits of the (rounded) float32 sum; masking them and subtracting 2**22 gives the
    integer. One float32 addition, bit for bit C's (wrapped garbage past ±4194303, as in C)."""
    v = f + MAGIC
    return (f32_bits(v) & 0x007FFFFF) - 0x00400000


@triton.jit
def c_trunc(v):
    """C's float -> int conversion as x86 does it (cvttss2si): truncation toward zero, and
    INT_MIN (-2**31) for NaN, ±Inf and values outside the int32 range. Only in-range values
    reach the hardware conversion (NVIDIA's would give 0 for NaN and saturate the rest)."""
    ok = (v > -2147483648.0) & (v < 2147483648.0)
    t = tl.where(ok, v, 0.0).to(tl.int32)
    return tl.where(ok, t, -2147483647 - 1)


@triton.jit
def c_roundf(v):
    """C ``roundf``/``lroundf``: nearest, halves away from zero. |v| >= 2**23 is already an integer
    (and NaN/Inf go through c_trunc as in C); below it ``v - trunc(v)`` is exact."""
    t = c_trunc(v)
    r = v - t.to(tl.float32)
    small = tl.abs(v) < 8388608.0
    t2 = tl.where(r >= 0.5, t + 1, tl.where(r <= -0.5, t - 1, t))
    return tl.where(small, t2, t)


@triton.jit
def sext8(v):
    """C's ``(int8_t)v``: the low byte of ``v`` as a signed value (flip the sign bit and subtract
    it back: 0x80..0xFF map to -128..-1)."""
    return ((v & 0xFF) ^ 0x80) - 0x80


@triton.jit
def fp32_to_fp16(f):
    """IEEE binary16 bits (int32, 0..65535) of float32 ``f``, round half to even: ggml's
    GGML_FP32_TO_FP16 on every input (NaN -> sign|0x7E00, overflow -> ±Inf).

    Normal halves: re-bias the exponent (subtract (127-15) << 23) and drop 13 mantissa bits,
    adding 0xFFF plus the lowest kept bit first, which rounds half to even (a carry into the
    exponent is the correct rounding up to the next binade, and to Inf past 65504). Subnormal
    halves: the value is m * 2**(e-150) with m the 24-bit significand; shifting m right by
    s = 126 - e (14..24) with the same half-even adjustment gives round(|f| * 2**24)."""
    w = f32_bits(f)
    sign = (w >> 16) & 0x8000
    a = w & 0x7FFFFFFF
    e = a >> 23
    normal = (a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13
    m = (a & 0x7FFFFF) | 0x800000
    s = tl.minimum(tl.maximum(126 - e, 1), 30)  # clamped for the lanes that do not use it
    sub = (m + ((1 << (s - 1)) - 1) + ((m >> s) & 1)) >> s
    h = tl.where(e < 102, 0, sub)  # |f| < 2**-25 rounds to zero
    h = tl.where(a >= 0x38800000, normal, h)
    h = tl.where(a >= 0x47800000, 0x7C00, h)  # >= 65536 (and Inf): Inf
    h = tl.where(a > 0x7F800000, 0x7E00, h)  # NaN: one quiet NaN
    return sign | h


@triton.jit
def fp16_to_fp32(h):
    """float32 value of binary16 bits ``h`` (int32 0..65535), exact. Normal halves move the
    exponent and mantissa into place (re-bias +112); subnormals are m * 2**-24 (an exact float
    product); Inf/NaN keep their payload with the quiet bit set, as ggml's conversion does."""
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    normal = sign | ((e + 112) << 23) | (m << 13)
    special = sign | 0x7F800000 | (m << 13) | tl.where(m != 0, 0x400000, 0)
    sub = f32_bits(m.to(tl.float32) * 5.9604644775390625e-08) | sign
    bits = tl.where(e == 0, sub, tl.where(e == 31, special, normal))
    return bits_f32(bits)


@triton.jit
def f16_round(f):
    """fp16->fp32(fp32->fp16(f)): the value ggml reads back from a stored ggml_half."""
    return fp16_to_fp32(fp32_to_fp16(f))


@triton.jit
def canon(v):
    """NaN becomes the canonical quiet NaN 0x7FC00000 (as on the CPU side; NVIDIA would give
    0x7FFFFFFF and x86 the propagated payload)."""
    return tl.where(v != v, bits_f32(tl.zeros_like(f32_bits(v)) + QNAN), v)


@triton.jit
def ld_u8(ptr, mask):
    """Bytes as int32 (0..255)."""
    return tl.load(ptr, mask=mask, other=0).to(tl.int32)


@triton.jit
def ld_u16(ptr, mask):
    """A little-endian u16 at ``ptr`` (byte pointer) as int32."""
    return ld_u8(ptr, mask) | (ld_u8(ptr + 1, mask) << 8)


@triton.jit
def ld_u32(ptr, mask):
    """A little-endian u32 at ``ptr`` (byte pointer) as int32 bits (the top bit is the sign)."""
    return ld_u16(ptr, mask) | (ld_u16(ptr + 2, mask) << 16)


@triton.jit
def ld_f16(ptr, mask):
    """The little-endian ggml_half at ``ptr`` as float32."""
    return fp16_to_fp32(ld_u16(ptr, mask))


@triton.jit
def st_u8(ptr, v, mask):
    tl.store(ptr, (v & 0xFF).to(tl.uint8), mask=mask)


@triton.jit
def st_u16(ptr, v, mask):
    st_u8(ptr, v, mask)
    st_u8(ptr + 1, v >> 8, mask)


@triton.jit
def st_f16(ptr, f, mask):
    """Store fp16(f) little-endian; returns the float32 value read back (f16_round(f))."""
    h = fp32_to_fp16(f)
    st_u16(ptr, h, mask)
    return fp16_to_fp32(h)


@triton.jit
def best_index_int8(kv_ptr, x):
    """ggml's ``best_index_int8`` over the 16 sorted entries at ``kv_ptr`` (float32 LUT), bisection
    exactly as in C: below/at the first entry -> 0, at/above the last -> 15 (NaN falls through
    to the bisection, which walks up to 15), then halve [ml, mu] until adjacent (4 halvings
    always suffice for 16 entries; a lane whose interval is already adjacent keeps it) and pick
    the upper neighbour only when strictly closer."""
    ml = tl.zeros_like(f32_bits(x))
    mu = ml + 15
    for _ in tl.static_range(4):
        mav = (ml + mu) >> 1
        go_down = x < tl.load(kv_ptr + mav)
        act = (mu - ml) > 1
        mu = tl.where(act & go_down, mav, mu)
        ml = tl.where(act & ~go_down, mav, ml)
    lo = tl.load(kv_ptr + mu - 1)
    hi = tl.load(kv_ptr + mu)
    r = tl.where(x - lo < hi - x, mu - 1, mu)
    r = tl.where(x >= tl.load(kv_ptr + 15 + ml * 0), 15, r)
    return tl.where(x <= tl.load(kv_ptr + ml * 0), 0, r)


@triton.jit
def floor_log2(a):
    """floor(log2(a)) for 1 <= a < 2**31 (int32) by binary search on the bit length."""
    n = tl.zeros_like(a)
    c = a >= 65536
    n = tl.where(c, n + 16, n)
    a = tl.where(c, a >> 16, a)
    c = a >= 256
    n = tl.where(c, n + 8, n)
    a = tl.where(c, a >> 8, a)
    c = a >= 16
    n = tl.where(c, n + 4, n)
    a = tl.where(c, a >> 4, a)
    c = a >= 4
    n = tl.where(c, n + 2, n)
    a = tl.where(c, a >> 2, a)
    return tl.where(a >= 2, n + 1, n)


# ---- ggml's search routines, one lane per (sub-)block ------------------------------------------
# Weights of the element loops (ggml computes them into an array first; recomputing them per use
# gives the same float32 values):
W_X2: tl.constexpr = tl.constexpr(0)    # x*x          (rmse_type 1 without quant_weights)
W_RAW: tl.constexpr = tl.constexpr(1)   # wp[i]        (quant_weights as they are)
W_IMAT: tl.constexpr = tl.constexpr(2)  # wp[i] * sqrt(aux + x*x)   (the imatrix paths; aux = sigma2)
W_ABS: tl.constexpr = tl.constexpr(3)   # |x|          (Q2_K ref)
W_AVX: tl.constexpr = tl.constexpr(4)   # aux + |x|    (Q4_K/Q5_K ref; aux = av_x)


@triton.jit
def weight(WMODE: tl.constexpr, xi, wp, i, aux):
    if WMODE == W_X2:
        w = xi * xi
    elif WMODE == W_RAW:
        w = tl.load(wp + i)
    elif WMODE == W_IMAT:
        w = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
    elif WMODE == W_ABS:
        w = tl.abs(xi)
    else:
        w = aux + tl.abs(xi)
    return w


@triton.jit
def signed_absmax(xp, N: tl.constexpr):
    """(max |x|, the x that has it): the first one on ties (C's strict ``>``)."""
    x0 = tl.load(xp)
    amax = tl.zeros_like(x0)
    mx = tl.zeros_like(x0)
    for i in range(N):
        xi = tl.load(xp + i)
        ax = tl.abs(xi)
        up = ax > amax
        amax = tl.where(up, ax, amax)
        mx = tl.where(up, xi, mx)
    return amax, mx


@triton.jit
def tile_signed_absmax(t, idx, N: tl.constexpr):
    """signed_absmax of each row of a [lanes, N] tile of finite values (``idx`` = 0..N-1 as
    [1, N]): the maximum of |x| is order-free; the x that has it is the first such entry (ggml's
    strict ``>`` keeps the first), read back exactly with :func:`col`; +0.0 when all are zero
    (ggml's loop never updates from its initial 0, so a -0.0 entry must not leak through)."""
    a = tl.abs(t)
    amax = tl.max(a, axis=1)
    i0 = tl.min(tl.where(a == amax[:, None], idx, N), axis=1)
    mx = col(t, idx, i0[:, None])
    return amax, tl.where(amax > 0, mx, 0.0)


@triton.jit
def tile_first_min(t, idx, N: tl.constexpr):
    """The minimum of each row of a [lanes, N] tile of finite values, as C's ``if (v < min) min =
    v`` loop leaves it: the first entry equal to the minimum (so of +0.0 and -0.0 the earlier one)."""
    v = tl.min(t, axis=1)
    i0 = tl.min(tl.where(t == v[:, None], idx, N), axis=1)
    return col(t, idx, i0[:, None])


# Candidates on a second axis: ggml tries a fixed list of candidate scales one after the other,
# each one a full pass over the (sub-)block. Here every lane holds all its candidates as a row of a
# [lanes, NC] tile, so one pass over the elements accumulates every candidate's sums at once: each
# sum still runs element by element in C's order (the candidate axis is never reduced in float),
# and the winner is then picked in ggml's order. The few per-candidate values a pick needs are read
# back with :func:`col`.

@triton.jit
def col(t, cidx, c):
    """Entry ``c`` (a per-lane index, or a constant) of each row of the float32 tile ``t``, bit for
    bit: the row's bit patterns are summed as integers with every other entry zeroed (integer
    zeros add exactly, so -0.0 and NaN payloads survive, which a float sum would not promise)."""
    return bits_f32(tl.sum(tl.where(cidx == c, f32_bits(t), 0), axis=1))


@triton.jit
def make_qx_quants(xp, wp, aux, N: tl.constexpr, NMAX: tl.constexpr, WMODE: tl.constexpr):
    """ggml ``make_qx_quants(N, NMAX, x, L, rmse_type=1, qw)``: returns (scale, pick, off), the
    codes being ``L[i] = off + clamp(nearest_int(pick * x[i]), -NMAX, NMAX-1)`` (off = NMAX, or
    0 with pick = 0 for a block below GROUP_MAX_EPS, whose codes ggml sets to 0).

    Candidate 0 is ggml's first pass (iscale = -nmax/max), candidates 1..18 its ``is`` loop
    (is = -9..-1, 1..9: iscale = -(nmax + 0.1f*is)/max); 19..31 are padding, never picked."""
    amax, mx = signed_absmax(xp, N)
    zero = amax < GROUP_MAX_EPS
    cidx = tl.arange(0, 32)[None, :]
    zt = mx[:, None] * 0.0 + tl.zeros([1, 32], tl.float32)  # [lanes, 32] zeros
    isv = tl.where(cidx <= 9, cidx - 10, cidx - 9).to(tl.float32) + zt
    c_is = tl.math.div_rn(-(isv * 0.1 + NMAX), mx[:, None] + zt)  # C: -(nmax + 0.1f*is)/max
    c_is = tl.where(cidx == 0, tl.math.div_rn(zt - NMAX, mx[:, None] + zt), c_is)  # C: -nmax/max
    sumlx = zt
    suml2 = zt
    for i in range(N):
        xi = tl.load(xp + i)
        if WMODE == W_X2:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
            w = xi * xi
        elif WMODE == W_RAW:
            w = tl.load(wp + i)
        elif WMODE == W_IMAT:
            w = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
        elif WMODE == W_ABS:
            w = tl.abs(xi)
        else:
            w = aux + tl.abs(xi)
        fl = tl.minimum(tl.maximum((((c_is * xi[:, None]) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, -NMAX), NMAX - 1).to(tl.float32)
        sumlx += (w * xi)[:, None] * fl  # C: sumlx += w*x[i]*l
        suml2 += (w[:, None] * fl) * fl  # C: suml2 += w*l*l
    sx = col(sumlx, cidx, 0)
    s2 = col(suml2, cidx, 0)
    scale = tl.where(s2 != 0, tl.math.div_rn(sx, s2), 0.0)
    best = scale * sx
    pick = col(c_is, cidx, 0)
    for c in tl.static_range(1, 19):  # accepted on a strict improvement, in ggml's order
        sx = col(sumlx, cidx, c)
        s2 = col(suml2, cidx, c)
        acc = (s2 > 0) & (sx * sx > best * s2)
        s_new = tl.math.div_rn(sx, s2)
        scale = tl.where(acc, s_new, scale)
        best = tl.where(acc, s_new * sx, best)
        pick = tl.where(acc, col(c_is, cidx, c), pick)
    off = tl.where(zero, 0, f32_bits(mx) * 0 + NMAX)
    return tl.where(zero, 0.0, scale), tl.where(zero, 0.0, pick), off


@triton.jit
def qx_code(xi, pick, off, NMAX: tl.constexpr):
    """Code of one element after make_qx_quants."""
    return off + tl.minimum(tl.maximum(nearest_int(pick * xi), -NMAX), NMAX - 1)


@triton.jit
def make_qkx_quants(xp, wp, aux, N: tl.constexpr, NMAX: tl.constexpr, WMODE: tl.constexpr, RMIN: tl.constexpr,
                    RDELTA: tl.constexpr, NSTEP: tl.constexpr, USE_MAD: tl.constexpr, MS: tl.constexpr,
                    NC: tl.constexpr):
    """ggml ``make_qkx2_quants`` (MS = 2: an empty range is max == min) / ``make_qkx3_quants``
    (MS = 3: max <= min). Returns (scale, -min, l_is, l_mn): the codes are
    ``clamp(nearest_int(l_is * (x - l_mn)), 0, NMAX)`` (l_is = 0 gives ggml's all-zero codes).

    ggml tries is = 0..NSTEP one after the other, and accepting one moves ``min``, which the
    later candidates start from. So the candidates from ``first`` on (a row of NC >= NSTEP + 1
    entries) are evaluated together with the current state, the first one ggml would accept is
    taken, and the sweep restarts after it; a lane is done when a sweep accepts nothing: exactly
    ggml's sequence of decisions (the Numba kernel does the same)."""
    x0 = tl.load(xp)
    fz = tl.zeros_like(x0)
    mn = x0
    mx = x0
    if WMODE == W_X2:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
        sum_w = x0 * x0
    elif WMODE == W_RAW:
        sum_w = tl.load(wp + 0)
    elif WMODE == W_IMAT:
        sum_w = tl.load(wp + 0) * tl.math.sqrt_rn(aux + x0 * x0)
    elif WMODE == W_ABS:
        sum_w = tl.abs(x0)
    else:
        sum_w = aux + tl.abs(x0)
    sum_x = sum_w * x0
    for i in range(1, N):
        xi = tl.load(xp + i)
        mn = tl.where(xi < mn, xi, mn)
        mx = tl.where(xi > mx, xi, mx)
        if WMODE == W_X2:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
            wi = xi * xi
        elif WMODE == W_RAW:
            wi = tl.load(wp + i)
        elif WMODE == W_IMAT:
            wi = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
        elif WMODE == W_ABS:
            wi = tl.abs(xi)
        else:
            wi = aux + tl.abs(xi)
        sum_w += wi
        sum_x += wi * xi
    mn = tl.where(mn > 0, 0.0, mn)
    if MS == 2:
        empty = mx == mn
    else:
        empty = mx <= mn
    mn0 = mn
    iscale = tl.math.div_rn(fz + NMAX, mx - mn)
    scale = tl.math.div_rn(fz + 1.0, iscale)
    best = fz
    for i in range(N):
        xi = tl.load(xp + i)
        fl = tl.minimum(tl.maximum((((iscale * (xi - mn)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, 0), NMAX).to(tl.float32)
        diff = (scale * fl + mn) - xi
        if USE_MAD:
            diff = tl.abs(diff)
        else:
            diff = diff * diff
        if WMODE == W_X2:
            wi = xi * xi
        elif WMODE == W_RAW:
            wi = tl.load(wp + i)
        elif WMODE == W_IMAT:
            wi = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
        elif WMODE == W_ABS:
            wi = tl.abs(xi)
        else:
            wi = aux + tl.abs(xi)
        best += wi * diff
    l_is = iscale
    l_mn = mn
    cidx = tl.arange(0, NC)[None, :]
    zt = fz[:, None] + tl.zeros([1, NC], tl.float32)  # [lanes, NC] zeros
    cf = cidx.to(tl.float32) + zt
    first = f32_bits(fz) * 0
    active = tl.where(empty, 0, first + 1)  # 1 while a lane still sweeps
    while tl.max(active, axis=0) > 0:
        # C: iscale = (rmin + rdelta*is + nmax)/(max - min)
        c_is = tl.math.div_rn(cf * RDELTA + RMIN + NMAX, (mx - mn)[:, None] + zt)
        sum_l = zt
        sum_l2 = zt
        sum_xl = zt
        for i in range(N):
            xi = tl.load(xp + i)
            if WMODE == W_X2:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
                wi = xi * xi
            elif WMODE == W_RAW:
                wi = tl.load(wp + i)
            elif WMODE == W_IMAT:
                wi = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
            elif WMODE == W_ABS:
                wi = tl.abs(xi)
            else:
                wi = aux + tl.abs(xi)
            fl = tl.minimum(tl.maximum((((c_is * (xi - mn)[:, None]) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, 0), NMAX).to(tl.float32)
            wl = wi[:, None] * fl
            sum_l += wl
            sum_l2 += wl * fl
            sum_xl += wl * xi[:, None]
        sw = sum_w[:, None] + zt
        sx = sum_x[:, None] + zt
        D = sw * sum_l2 - sum_l * sum_l
        ts = tl.math.div_rn(sw * sum_xl - sx * sum_l, D)
        tm = tl.math.div_rn(sum_l2 * sx - sum_l * sum_xl, D)
        pos = tm > 0
        tm = tl.where(pos, 0.0, tm)
        ts = tl.where(pos, tl.math.div_rn(sum_xl, sum_l2), ts)
        err = zt
        for i in range(N):
            xi = tl.load(xp + i)
            if WMODE == W_X2:  # (weight(), inlined: a jit call costs milliseconds in the interpreter)
                wi = xi * xi
            elif WMODE == W_RAW:
                wi = tl.load(wp + i)
            elif WMODE == W_IMAT:
                wi = tl.load(wp + i) * tl.math.sqrt_rn(aux + xi * xi)
            elif WMODE == W_ABS:
                wi = tl.abs(xi)
            else:
                wi = aux + tl.abs(xi)
            fl = tl.minimum(tl.maximum((((c_is * (xi - mn)[:, None]) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, 0), NMAX).to(tl.float32)
            diff = (ts * fl + tm) - xi[:, None]
            if USE_MAD:
                diff = tl.abs(diff)
            else:
                diff = diff * diff
            err += wi[:, None] * diff
        # the first candidate ggml would accept (D > 0 and a strictly smaller error), if any
        acc = (cidx >= first[:, None]) & (cidx <= NSTEP) & (D > 0) & (err < best[:, None])
        pick = tl.min(tl.where(acc, cidx + first[:, None] * 0, NC), axis=1)
        found = (active != 0) & (pick < NC)
        pk = pick[:, None]
        l_is = tl.where(found, col(c_is, cidx, pk), l_is)
        l_mn = tl.where(found, mn, l_mn)
        best = tl.where(found, col(err, cidx, pk), best)
        scale = tl.where(found, col(ts, cidx, pk), scale)
        mn = tl.where(found, col(tm, cidx, pk), mn)
        first = tl.where(found, pick + 1, first)
        active = tl.where(found & (first <= NSTEP), 1, 0)
    l_is = tl.where(empty, 0.0, l_is)
    return tl.where(empty, 0.0, scale), tl.where(empty, -mn0, -mn), l_is, l_mn


@triton.jit
def qkx_code(xi, l_is, l_mn, NMAX: tl.constexpr):
    """Code of one element after make_qkx_quants."""
    return tl.minimum(tl.maximum(nearest_int(l_is * (xi - l_mn)), 0), NMAX)


# Per-lane code arrays of the coordinate-descent searches live in int64 registers, one field per
# element: get = (word >> shift) & mask; set adds (new - old) << shift, which replaces the field
# exactly (two's complement wrap-around included) without building wide masks.

@triton.jit
def make_q3_quants(xp, N: tl.constexpr, NMAX: tl.constexpr):
    """ggml ``make_q3_quants(N, NMAX, x, L, do_rmse=true)`` for N <= 16: returns (scale, Lp) with
    the codes 0 .. 2*NMAX-1 in 4-bit fields of the int64 ``Lp`` (element i at bit 4i)."""
    amax, mx = signed_absmax(xp, N)
    zero = amax < GROUP_MAX_EPS
    iscale = tl.math.div_rn(tl.zeros_like(mx) - NMAX, mx)
    sumlx = tl.zeros_like(mx)
    suml2 = tl.zeros_like(mx)
    Lp = tl.zeros(mx.shape, tl.int64)
    for i in tl.static_range(N):
        xi = tl.load(xp + i)
        l = tl.minimum(tl.maximum((((iscale * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, -NMAX), NMAX - 1)
        Lp = Lp + ((l + NMAX).to(tl.int64) << (4 * i))  # stored with the +NMAX offset (0..2*NMAX-1)
        w = xi * xi
        fl = l.to(tl.float32)
        sumlx += (w * xi) * fl
        suml2 += (w * fl) * fl
    # up to 5 passes; ggml stops after a pass that changes nothing. Such a pass would change
    # nothing again (same state), so a quiet lane may keep sweeping while others still change;
    # the loop ends when no lane within its 5 passes changed anything in the last one
    npass = f32_bits(mx) * 0
    chg = npass + 1
    while tl.max(tl.where(npass < 5, chg, 0), axis=0) > 0:  # until no lane has a live, changing pass
        live = npass < 5
        chg = npass * 0
        for i in tl.static_range(N):
            xi = tl.load(xp + i)
            w = xi * xi
            lc = ((Lp >> (4 * i)) & 15).to(tl.int32)
            Li = (lc - NMAX).to(tl.float32)
            slx = sumlx - (w * xi) * Li
            sl2 = suml2 - (w * Li) * Li
            new_l = tl.minimum(tl.maximum((((tl.math.div_rn(xi * sl2, slx)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, -NMAX), NMAX - 1)
            fn = new_l.to(tl.float32)
            slx2 = slx + (w * xi) * fn
            sl22 = sl2 + (w * fn) * fn
            ok = live & (slx > 0) & (new_l + NMAX != lc) & (sl22 > 0) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            chg = chg | ok.to(tl.int32)
            Lp = Lp + (tl.where(ok, new_l + NMAX - lc, 0).to(tl.int64) << (4 * i))
            sumlx = tl.where(ok, slx2, sumlx)
            suml2 = tl.where(ok, sl22, suml2)
        npass += 1
    scale = tl.where(suml2 > 0, tl.math.div_rn(sumlx, suml2), 0.0)
    return tl.where(zero, 0.0, scale), tl.where(zero, 0, Lp)


@triton.jit
def _get8(w0, w1, i: tl.constexpr):
    if i < 8:
        v = (w0 >> (8 * i)) & 0xFF
    else:
        v = (w1 >> (8 * (i - 8))) & 0xFF
    return v.to(tl.int32)


@triton.jit
def _add8(w0, w1, i: tl.constexpr, delta):
    if i < 8:
        w0 = w0 + (delta.to(tl.int64) << (8 * i))
    else:
        w1 = w1 + (delta.to(tl.int64) << (8 * (i - 8)))
    return w0, w1


@triton.jit
def make_qp_quants(xp, wp, N: tl.constexpr, NMAX: tl.constexpr):
    """ggml ``make_qp_quants(N, NMAX, x, L, quant_weights)`` for N <= 16 (the sub-block scales of
    the imatrix paths). Returns (scale, w0, w1): the uint8 codes (C's ``uint8_t L[]``, negative
    values wrap) in 8-bit fields of two int64 words, entries 0..7 and 8..15."""
    x0 = tl.load(xp)
    fz = tl.zeros_like(x0)
    mx = fz
    for i in tl.static_range(N):
        xi = tl.load(xp + i)
        mx = tl.where(mx > xi, mx, xi)  # C: MAX(max, x[i])
    zero = mx < GROUP_MAX_EPS
    iscale = tl.math.div_rn(fz + NMAX, mx)
    scale = tl.math.div_rn(fz + 1.0, iscale)
    best_mse = fz
    for i in tl.static_range(N):
        xi = tl.load(xp + i)
        L = (((iscale * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000 & 0xFF
        diff = xi - scale * L.to(tl.float32)
        best_mse += (tl.load(wp + i) * diff) * diff
    for isv in tl.static_range(-4, 5):
        if isv != 0:
            iscale_is = tl.math.div_rn((fz + 0.1) * isv + NMAX, mx)  # C: (0.1f*is + nmax)/max
            scale_is = tl.math.div_rn(fz + 1.0, iscale_is)
            mse = fz
            for i in tl.static_range(N):
                xi = tl.load(xp + i)
                l = tl.minimum((((iscale_is * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX)
                diff = xi - scale_is * l.to(tl.float32)
                mse += (tl.load(wp + i) * diff) * diff
            better = mse < best_mse
            best_mse = tl.where(better, mse, best_mse)
            iscale = tl.where(better, iscale_is, iscale)
    w0 = tl.zeros(x0.shape, tl.int64)
    w1 = tl.zeros(x0.shape, tl.int64)
    sumlx = fz
    suml2 = fz
    for i in tl.static_range(N):
        xi = tl.load(xp + i)
        qi = tl.load(wp + i)
        L = tl.minimum((((iscale * xi) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX) & 0xFF
        w0, w1 = _add8(w0, w1, i, L)
        Li = L.to(tl.float32)
        sumlx += (qi * xi) * Li
        suml2 += (qi * Li) * Li
    npass = f32_bits(mx) * 0  # up to 5 passes, as make_q3_quants
    chg = npass + 1
    while tl.max(tl.where(npass < 5, chg, 0), axis=0) > 0:
        live = npass < 5
        chg = npass * 0
        for i in tl.static_range(N):
            xi = tl.load(xp + i)
            qi = tl.load(wp + i)
            Lo = _get8(w0, w1, i)
            Li = Lo.to(tl.float32)
            slx = sumlx - (qi * xi) * Li
            sl2 = suml2 - (qi * Li) * Li
            new_l = tl.minimum((((tl.math.div_rn(xi * sl2, slx)) + MAGIC).to(tl.int32, bitcast=True) & 0x7FFFFF) - 0x400000, NMAX)
            fn = new_l.to(tl.float32)
            slx2 = slx + (qi * xi) * fn
            sl22 = sl2 + (qi * fn) * fn
            ok = live & (slx > 0) & (sl2 > 0) & (new_l != Lo) & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22)
            chg = chg | ok.to(tl.int32)
            w0, w1 = _add8(w0, w1, i, tl.where(ok, (new_l & 0xFF) - Lo, 0))
            sumlx = tl.where(ok, slx2, sumlx)
            suml2 = tl.where(ok, sl22, suml2)
        npass += 1
    scale = tl.where(suml2 > 0, tl.math.div_rn(sumlx, suml2), 0.0)
    return tl.where(zero, 0.0, scale), tl.where(zero, 0, w0), tl.where(zero, 0, w1)


@triton.jit
def sumsq_kernel(x_ptr, out_ptr, n_groups, G, BLOCK: tl.constexpr):
    """out[g] = x[g*G]**2 + x[g*G+1]**2 + ... left to right in float32 (ggml's sigma2 sums)."""
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = g < n_groups
    g = tl.where(m, g, 0)
    xp = x_ptr + g * G
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(G):
        v = tl.load(xp + i)
        s += v * v
    tl.store(out_ptr + g, s, mask=m)


def programs_block(n: int, gpu_block: int, interp_block: int = 1 << 14) -> int:
    """Lanes per program (a power of two): ``gpu_block`` on a GPU; in the interpreter, where each
    operation costs tens of microseconds of Python whatever its width, enough to cover ``n``
    lanes in as few programs as possible (at most ``interp_block``)."""
    if interpreting():
        return max(16, min(interp_block, triton.next_power_of_2(max(1, n))))
    return gpu_block


_LUTS: dict[tuple[str, str], torch.Tensor] = {}


def lut(name: str, device: torch.device, make) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The constant table ``make()`` (a numpy array) on ``device``, built once per device."""
    key = (name, str(device))
    t = _LUTS.get(key)
    if t is None:
        t = _LUTS[key] = torch.from_numpy(np.ascontiguousarray(make())).to(device)
    return t


def sumsq(x: torch.Tensor, group: int) -> torch.Tensor:
    """float32 sums of squares of consecutive groups of ``group`` elements of contiguous ``x``."""
    n = x.numel() // group
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    if n:
        blk = programs_block(n, 128)
        sumsq_kernel[(triton.cdiv(n, blk),)](x, out, n, group, BLOCK=blk, **FP)
    return out


#: launch options of every GGUF kernel: no FMA contraction
FP = {"enable_fp_fusion": False}
