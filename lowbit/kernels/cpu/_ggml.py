"""Numba building blocks of the GGUF kernels: ggml's float helpers, ported operation by operation.

Everything here is float32 arithmetic in C's order (``a*b*c`` is ``(a*b)*c``, sums run left to
right one element at a time), because ggml's reference quantizers are plain sequential C compiled
without FMA, and the bytes of a GGUF block depend on every rounding. Constants are float32
(``F(0.1)`` is C's ``0.1f``); an ``int`` meeting a float is converted first, as C does.

The search loops of ggml's ``make_q*_quants`` try a fixed list of candidate scales one after the
other; the candidates are independent, so these ports evaluate all of them in one sweep over
the elements (an inner loop over candidates that LLVM vectorizes) and then pick the winner in
ggml's order. Every candidate's sums are still accumulated element by element in C's order, so
each candidate gets exactly ggml's float32 value and the choice is the same.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._bits import bits_f32, f32_bits
from ._simd import vabs, vand, vbits, vgt, vlane, vlanes, vload, vlt, vne, vnint_clamp, vsel, vsplat, vstore

F = np.float32
I8 = np.int8

GROUP_MAX_EPS = F(1e-15)
MAGIC = F(12582912.0)  # 1.5 * 2**23: adding it leaves round-half-even(x) in the low mantissa bits


@njit(inline="always", error_model="numpy", cache=True)
def nearest_int(f):
    """ggml's ``nearest_int``: round half to even via the 1.5*2**23 trick, bit for bit (values
    beyond ±4194303 give ggml's wrapped result, as in C)."""
    v = f + MAGIC  # one float32 addition (rounds, which is the point)
    return np.int64(f32_bits(v) & 0x007FFFFF) - 0x00400000


@njit(inline="always", error_model="numpy", cache=True)
def fp32_to_fp16(f):
    """IEEE binary16 bits of float32 ``f``, round half to even (= ggml's GGML_FP32_TO_FP16 on every
    input: NaN becomes sign|0x7E00, overflow becomes ±Inf)."""
    w = np.int64(f32_bits(f))
    sign = (w >> 16) & 0x8000
    a = w & 0x7FFFFFFF
    if a > 0x7F800000:
        return sign | 0x7E00
    if a >= 0x47800000:  # >= 65536 (and Inf): Inf
        return sign | 0x7C00
    if a >= 0x38800000:  # normal half: drop 13 mantissa bits, round half to even
        return sign | ((a + 0xFFF + ((a >> 13) & 1) - 0x38000000) >> 13)
    # subnormal half: round(|f| * 2**24) half to even, |f| = m * 2**(e - 150)
    e = a >> 23
    if e < 102:  # |f| < 2**-25: rounds to zero
        return sign
    m = (a & 0x7FFFFF) | 0x800000
    s = 126 - e  # 14 .. 24
    return sign | ((m + ((np.int64(1) << (s - 1)) - 1) + ((m >> s) & 1)) >> s)


@njit(inline="always", error_model="numpy", cache=True)
def fp16_to_fp32(h):
    """float32 value of IEEE binary16 bits ``h`` (exact). NaN keeps its payload with the quiet bit
    set, as ggml's conversion does on x86."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = F(m) * F(5.9604644775390625e-08)  # m * 2**-24, exact
        return -v if sign else v
    if e == 31:
        return bits_f32(sign | 0x7F800000 | (m << 13) | (0x400000 if m else 0))
    return bits_f32(sign | ((e + 112) << 23) | (m << 13))


@njit(inline="always", error_model="numpy", cache=True)
def canon(v):
    """Decoded values: NaN becomes the one canonical quiet NaN 0x7FC00000 (its payload would
    otherwise depend on the CPU's NaN propagation; NVIDIA GPUs canonicalize anyway)."""
    if v != v:
        return bits_f32(0x7FC00000)
    return v


@njit(inline="always", error_model="numpy", cache=True)
def rd_f16(b, o):
    """The little-endian ggml_half at byte ``o`` of block ``b`` as float32."""
    return fp16_to_fp32(np.int64(b[o]) | (np.int64(b[o + 1]) << 8))


@njit(inline="always", error_model="numpy", cache=True)
def wr_f16(b, o, f):
    h = fp32_to_fp16(f)
    b[o] = h & 0xFF
    b[o + 1] = (h >> 8) & 0xFF
    return h


@njit(inline="always", error_model="numpy", cache=True)
def f16_round(f):
    """fp16->fp32(fp32->fp16(f)): the value ggml reads back from a stored ggml_half."""
    return fp16_to_fp32(fp32_to_fp16(f))


@njit(inline="always", error_model="numpy", cache=True)
def best_index_int8(n, val, x):
    """ggml's ``best_index_int8``: nearest entry of the sorted int8 table ``val`` by bisection
    (ties go to the upper neighbour only when strictly closer, as in C)."""
    if x <= F(val[0]):
        return 0
    if x >= F(val[n - 1]):
        return n - 1
    ml = 0
    mu = n - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < F(val[mav]):
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - F(val[mu - 1]) < F(val[mu]) - x else mu


# ---- make_qx_quants: symmetric codes -nmax..nmax-1 with a scale search ------------------------

@njit(error_model="numpy", cache=True)
def make_qx_quants(n, nmax, x, xo, L, lo, qw, qo, has_qw, S):
    """ggml ``make_qx_quants(n, nmax, x+xo, L+lo, rmse_type=1, has_qw ? qw+qo : NULL)``; returns
    the scale and writes the codes (0 .. 2*nmax-1) to ``L[lo:lo+n]``. ``S`` is float32 scratch
    (at least 3 x 19)."""
    mx = F(0.0)
    amax = F(0.0)
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return F(0.0)
    fn = F(nmax)
    # candidate 0 is ggml's first pass (iscale = -nmax/max); then is = -9..-1, 1..9 in order
    nc = 19
    c_is = S[0]
    sumlx = S[1]
    suml2 = S[2]
    c_is[0] = F(-nmax) / mx
    for c in range(1, nc):
        isv = c - 10 if c <= 9 else c - 9
        c_is[c] = -(fn + F(0.1) * F(isv)) / mx
    for c in range(nc):
        sumlx[c] = F(0.0)
        suml2[c] = F(0.0)
    for i in range(n):
        xi = x[xo + i]
        w = qw[qo + i] if has_qw else xi * xi
        wx = w * xi
        for c in range(nc):
            l = nearest_int(c_is[c] * xi)
            fl = F(max(-nmax, min(nmax - 1, l)))
            sumlx[c] += wx * fl
            suml2[c] += (w * fl) * fl
    scale = sumlx[0] / suml2[0] if suml2[0] != 0 else F(0.0)
    best = scale * sumlx[0]
    pick = 0
    for c in range(1, nc):
        if suml2[c] > 0 and sumlx[c] * sumlx[c] > best * suml2[c]:
            pick = c
            scale = sumlx[c] / suml2[c]
            best = scale * sumlx[c]
    isc = c_is[pick]
    for i in range(n):
        l = nearest_int(isc * x[xo + i])
        L[lo + i] = nmax + max(-nmax, min(nmax - 1, l))
    return scale


@njit(error_model="numpy", cache=True)
def make_q3_quants(n, nmax, x, xo, L, lo, S):
    """ggml ``make_q3_quants(n, nmax, x+xo, L+lo, do_rmse=true)`` (Q3_K without imatrix); ``n`` a
    multiple of 8, ``x`` C-contiguous, ``S`` float32 scratch with ``S[1]`` at least n long.

    The coordinate descent visits the elements in order and an accepted change moves ``sumlx``
    and ``suml2`` for the elements after it. Eight elements are tried at once (one per lane,
    C's float32 operations in C's order) under the current sums; the first accepted one is
    applied and the window is tried again from the lane after it, so every decision is ggml's."""
    mx = F(0.0)
    amax = F(0.0)
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    sumlx = F(0.0)
    suml2 = F(0.0)
    Lf = S[1]
    for i in range(n):
        xi = x[xo + i]
        l = nearest_int(iscale * xi)
        fl = F(max(-nmax, min(nmax - 1, l)))
        Lf[i] = fl
        w = xi * xi
        sumlx += (w * xi) * fl
        suml2 += (w * fl) * fl
    zero = vsplat(F(0.0))
    for itry in range(5):
        n_changed = 0
        for i0 in range(0, n, 8):
            live = 0xFF
            while live:
                xv = vload(x, xo + i0)
                wv = xv * xv
                wx = wv * xv
                Lv = vload(Lf, i0)
                vsx = vsplat(sumlx)
                vs2 = vsplat(suml2)
                slx = vsx - wx * Lv  # C: float slx = sumlx - w*x[i]*L[i];
                sl2 = vs2 - (wv * Lv) * Lv
                nl = vnint_clamp((xv * sl2) / slx, -nmax, nmax - 1)
                slx = slx + wx * nl
                sl2 = sl2 + (wv * nl) * nl
                # C: if (slx > 0) ... if (new_l != L[i]) ... if (sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2)
                ok = vand(vand(vgt(vsx - wx * Lv, zero), vne(nl, Lv)),
                          vand(vgt(sl2, zero), vgt((slx * slx) * vs2, vsplat(sumlx * sumlx) * sl2)))
                bits = vbits(ok) & live
                if bits == 0:
                    break
                p = 0
                while not (bits >> p) & 1:
                    p += 1
                Lf[i0 + p] = vlane(nl, p)
                sumlx = vlane(slx, p)
                suml2 = vlane(sl2, p)
                n_changed += 1
                live = 0xFF & ~((2 << p) - 1)
        if n_changed == 0:
            break
    for i in range(n):
        L[lo + i] = np.int64(Lf[i]) + nmax
    return sumlx / suml2 if suml2 > F(0.0) else F(0.0)


# ---- make_qkx2/qkx3_quants: asymmetric codes 0..nmax with scale and min ------------------------

@njit(error_model="numpy", cache=True)
def make_qkx_quants(n, nmax, x, xo, w, L, lo, rmin, rdelta, nstep, use_mad, ms, mins_out, mo, S):
    """ggml ``make_qkx2_quants`` / ``make_qkx3_quants`` (identical once the weights are given:
    qkx3 with NULL weights means w = x², which the caller passes in ``w``). Returns the scale,
    writes ``-min`` to ``mins_out[mo]`` and the codes 0..nmax to ``L[lo:lo+n]``.

    ``ms`` selects the empty-range test: 2 → ``max == min`` (qkx2), 3 → ``max <= min`` (qkx3).
    ``S`` is float32 scratch; ``S[0]`` holds at least 8 * n floats.

    ggml tries ``is = 0..nstep`` one after the other, and accepting one changes ``min`` (so the
    next candidates' iscale and offsets). Here eight consecutive candidates are evaluated at once,
    one per SIMD lane (:mod:`._simd`), each lane with C's float32 operations in C's order under the
    current state; the first lane ggml would accept is taken and the next window starts right
    after it, so the sequence of decisions is exactly ggml's. ggml accepts 1-3 candidates per
    sub-block on typical data, so a sub-block costs about nstep/8 + 3 window sweeps.
    """
    mn = x[xo]
    mx = x[xo]
    sum_w = w[0]
    sum_x = sum_w * x[xo]
    for i in range(1, n):
        xi = x[xo + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        wi = w[i]
        sum_w += wi
        sum_x += wi * xi
    if mn > 0:
        mn = F(0.0)
    if (ms == 2 and mx == mn) or (ms == 3 and mx <= mn):
        for i in range(n):
            L[lo + i] = 0
        mins_out[mo] = -mn
        return F(0.0)
    iscale = F(nmax) / (mx - mn)
    scale = F(1.0) / iscale
    best_error = F(0.0)
    for i in range(n):
        xi = x[xo + i]
        l = nearest_int(iscale * (xi - mn))
        l = max(0, min(nmax, l))
        L[lo + i] = l
        diff = (scale * F(l) + mn) - xi
        diff = abs(diff) if use_mad else diff * diff
        best_error += w[i] * diff
    if nstep < 1:
        mins_out[mo] = -mn
        return scale
    Lw = S[0]
    ns = nstep + 1
    vsw = vsplat(sum_w)
    vsx = vsplat(sum_x)
    zero = vsplat(F(0.0))
    first = 0
    while first < ns:
        cand = (vsplat(rmin) + vsplat(rdelta) * (vsplat(F(first)) + vlanes())) + vsplat(F(nmax))
        isc = cand / vsplat(mx - mn)
        sl = zero
        sl2 = zero
        sxl = zero
        for i in range(n):
            xi = x[xo + i]
            l = vnint_clamp(isc * vsplat(xi - mn), 0, nmax)
            vstore(Lw, 8 * i, l)
            wl = vsplat(w[i]) * l
            sl = sl + wl
            sl2 = sl2 + wl * l
            sxl = sxl + wl * vsplat(xi)
        D = vsw * sl2 - sl * sl
        ts = (vsw * sxl - vsx * sl) / D
        tm = (sl2 * vsx - sl * sxl) / D
        pos = vgt(tm, zero)  # C: if (this_min > 0) { this_min = 0; this_scale = sum_xl / sum_l2; }
        ts = vsel(pos, sxl / sl2, ts)
        tm = vsel(pos, zero, tm)
        err = zero
        if use_mad:
            for i in range(n):
                diff = (ts * vload(Lw, 8 * i) + tm) - vsplat(x[xo + i])
                err = err + vsplat(w[i]) * vabs(diff)
        else:
            for i in range(n):
                diff = (ts * vload(Lw, 8 * i) + tm) - vsplat(x[xo + i])
                err = err + vsplat(w[i]) * (diff * diff)
        bits = vbits(vand(vgt(D, zero), vlt(err, vsplat(best_error))))  # C: D > 0 ... cur_error < best_error
        left = ns - first
        if left < 8:
            bits &= (1 << left) - 1
        if bits == 0:
            first += 8
            continue
        p = 0
        while not (bits >> p) & 1:
            p += 1
        for i in range(n):
            L[lo + i] = np.int64(Lw[8 * i + p])
        best_error = vlane(err, p)
        scale = vlane(ts, p)
        mn = vlane(tm, p)
        first += p + 1
    mins_out[mo] = -mn
    return scale


@njit(error_model="numpy", cache=True)
def make_qp_quants(n, nmax, x, L, qw):
    """ggml ``make_qp_quants``: codes for non-negative values (the sub-block scales and mins of
    the imatrix paths; IQ2_XXS's magnitudes, one of which may be negative). ``L`` is uint8,
    exactly as in C (negative codes wrap)."""
    mx = F(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]  # C's MAX(max, x[i])
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F(0.0)
    iscale = F(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = F(1.0) / iscale
    best_mse = F(0.0)
    for i in range(n):
        diff = x[i] - scale * F(L[i])
        best_mse += (qw[i] * diff) * diff
    for isv in range(-4, 5):
        if isv == 0:
            continue
        iscale_is = (F(0.1) * F(isv) + F(nmax)) / mx
        scale_is = F(1.0) / iscale_is
        mse = F(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * F(l)
            mse += (qw[i] * diff) * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F(0.0)
    suml2 = F(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        # C sums the int l, not the stored uint8 L[i]: they differ for a negative x (IQ2_XXS's
        # sign-parity flip leaves one), where l < 0 wraps in L
        fl = F(l)
        sumlx += (qw[i] * x[i]) * fl
        suml2 += (qw[i] * fl) * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            Li = F(L[i])
            slx = sumlx - (w * x[i]) * Li
            sl2 = suml2 - (w * Li) * Li
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int((x[i] * sl2) / slx))
                if new_l != np.int64(L[i]):
                    slx += (w * x[i]) * F(new_l)
                    sl2 += (w * F(new_l)) * F(new_l)
                    if (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > F(0.0) else F(0.0)


@njit(error_model="numpy", cache=True)
def all_within(x, lim):
    """True when every element of the C-contiguous float32 array ``x`` has ``|x| <= lim`` (float32
    ``lim``). NaN fails the compare and so does ±Inf for a finite ``lim``, so this is numpy's
    ``isfinite(x).all() and not (abs(x) > lim).any()`` in one pass without temporaries (the GGUF
    codecs' input check, which otherwise costs more than a Q8_0 encode)."""
    flat = x.reshape(-1)
    bad = 0
    for i in range(flat.size):
        bad += not (abs(flat[i]) <= lim)  # a count, not an early exit, so LLVM can vectorize it
    return bad == 0
