"""Independent reference implementations, used as test oracles and to write golden vectors.

Nothing here calls lowbit's kernels or its value tables. The element reference works in
float64 on the *set of representable values*, enumerated from the spec text: round to the
nearest value; on a tie, take the neighbour that is an even multiple of the spacing between the
two (that is round-half-to-even in the destination's units); beyond ``max`` the grid continues
with the top binade's spacing, so a value overflows only if it rounds past ``max``. This is a
different algorithm from the kernels' integer bit manipulation, so agreement is evidence.

Where a real peer exists, :func:`ml_dtypes_cast` runs it (ml_dtypes, float32 in).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..numerics import ElementEncoding, FloatFormat, IntFormat, Special

__all__ = ["reference_values", "ReferenceQuantizer", "pack_codes", "unpack_codes", "ml_dtypes_type",
           "ml_dtypes_cast", "reference_scale", "REFUSED_NAN", "REFUSED_RANGE"]

REFUSED_NAN = -1
REFUSED_RANGE = -2


def reference_values(fmt: FloatFormat | IntFormat) -> np.ndarray:
    """float64 value of every code, straight from the spec text (vectorised, no lowbit code)."""
    n = 1 << fmt.bits
    c = np.arange(n, dtype=np.int64)
    if isinstance(fmt, IntFormat):
        half = 1 << (fmt.bits - 1)
        return np.where(fmt.signed & (c >= half), c - n, c).astype(np.float64)
    E, M = fmt.ebits, fmt.mbits
    s = (c >> (E + M)) & 1 if fmt.signed else np.zeros_like(c)
    ef = (c >> M) & ((1 << E) - 1)
    m = c & ((1 << M) - 1)
    frac = m / float(1 << M)
    normal = (1.0 + frac) * np.exp2(ef.astype(np.float64) - fmt.bias)
    if fmt.zero:
        low = frac * 2.0 ** (1 - fmt.bias) if fmt.subnormals else np.zeros(n)
        v = np.where(ef == 0, low, normal)
    else:
        v = (1.0 + frac) * np.exp2(ef.astype(np.float64) - fmt.bias)
    all_e = ef == (1 << E) - 1
    special = Special(fmt.special)
    if special is Special.IEEE:
        v = np.where(all_e & (m == 0), np.inf, v)
        v = np.where(all_e & (m != 0), np.nan, v)
    elif special is Special.FN:
        v = np.where(all_e & (m == (1 << M) - 1), np.nan, v)
    elif special is Special.FNUZ:
        v = np.where((s == 1) & (ef == 0) & (m == 0), np.nan, v)
        s = np.where(v == 0, 0, s)  # no negative zero, not even from flushed codes
    return np.where(s == 1, -v, v)


@dataclass
class ReferenceQuantizer:
    """float32 → code by nearest-value search; the independent twin of the kernels."""

    enc: ElementEncoding

    def __post_init__(self) -> None:
        fmt = self.enc.fmt
        v = reference_values(fmt)
        codes = np.arange(v.size)
        finite = np.isfinite(v)
        if isinstance(fmt, IntFormat) and fmt.symmetric:
            finite &= v != -(1 << (fmt.bits - 1))  # decodes, but is never produced
        # the sorted finite values (±0 merged), each with the code that holds it (+0 for 0)
        self.values, first = np.unique(np.where(v == 0, 0.0, v)[finite], return_index=True)
        self.code_of = codes[finite][first]
        mag0 = (codes & ((1 << (fmt.bits - 1)) - 1 if fmt.signed else -1)) == 0  # canonical zeros only
        pz = codes[finite & (v == 0) & ~np.signbit(v) & mag0]
        nz = codes[finite & (v == 0) & np.signbit(v) & mag0]
        self.pos_zero = int(pz[0]) if pz.size else -1
        self.neg_zero = int(nz[0]) if nz.size else self.pos_zero  # no -0: negatives round to +0
        if self.pos_zero >= 0:
            self.code_of[np.searchsorted(self.values, 0.0)] = self.pos_zero
        V = self.values
        # past both ends the grid continues with the spacing inside the top binade,
        # 2**(floor(log2 max) - mbits) (for integers: 1)
        if isinstance(fmt, FloatFormat):
            top = math.ldexp(1.0, math.frexp(float(V[-1]))[1] - 1 - fmt.mbits)
        else:
            top = 1.0
        self.step_lo = self.step_hi = top
        # special codes, as the spec text names them
        self.nan_pos = self.nan_neg = self.inf_pos = self.inf_neg = -1
        if isinstance(fmt, FloatFormat):
            E, M, sbit = fmt.ebits, fmt.mbits, (1 << (fmt.ebits + fmt.mbits)) if fmt.signed else 0
            sp = Special(fmt.special)
            if sp is Special.IEEE:
                self.inf_pos, self.inf_neg = ((1 << E) - 1) << M, (((1 << E) - 1) << M) | sbit
                if M:  # the quiet NaN: exponent all ones, top mantissa bit set
                    self.nan_pos = (((1 << E) - 1) << M) | (1 << (M - 1))
                    self.nan_neg = self.nan_pos | sbit
            elif sp is Special.FN:
                self.nan_pos = (1 << (E + M)) - 1
                self.nan_neg = self.nan_pos | sbit
            elif sp is Special.FNUZ:
                self.nan_pos = self.nan_neg = sbit

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Codes (int64) for float32 ``x``; REFUSED_NAN / REFUSED_RANGE where a policy refuses."""
        x = np.asarray(x, dtype=np.float32)
        enc, fmt, V = self.enc, self.enc.fmt, self.values
        with np.errstate(invalid="ignore"):
            xd = x.astype(np.float64)
        neg = np.signbit(x)
        nan, inf = np.isnan(xd), np.isinf(xd)
        fin = ~nan & ~inf
        xf = np.where(fin, xd, 0.0)

        # neighbours lo <= x < hi on the extended grid (index -1 and len(V) are the extensions)
        i = np.searchsorted(V, xf, side="right") - 1
        lo = np.where(i >= 0, V[np.clip(i, 0, V.size - 1)], V[0] - self.step_lo)
        hi = np.where(i + 1 < V.size, V[np.clip(i + 1, 0, V.size - 1)], V[-1] + self.step_hi)
        step = hi - lo
        lo_even = np.mod(np.round(lo / step), 2) == 0
        mid = (lo + hi) / 2  # exact: grid values have few significant bits (no x - lo rounding)
        j = np.where((xf > mid) | ((xf == mid) & ~lo_even), i + 1, i)
        zero_less = isinstance(fmt, FloatFormat) and not fmt.zero
        if zero_less and not fmt.signed:  # nothing below the smallest value: round up to it
            j = np.where((xf > 0) & (j < 0), 0, j)
        over_hi = fin & (j >= V.size)
        over_lo = fin & (j < 0)
        code = self.code_of[np.clip(j, 0, V.size - 1)]
        rounded_zero = fin & (V[np.clip(j, 0, V.size - 1)] == 0)
        code = np.where(rounded_zero & neg, self.neg_zero, code)

        # out of range: too big (either sign, Inf included) and "below" (negatives in unsigned
        # formats, zero in formats without a zero)
        signed = fmt.signed
        below = (~signed & neg & ~nan & ((xf != 0) | inf)) | (zero_less & fin & (xf == 0))
        big_pos = (over_hi | (inf & ~neg)) & ~below
        big_neg = (over_lo | (inf & neg)) & ~below
        ovf = enc.overflow
        if ovf == "saturate":  # to ±max; "below" to the smallest non-negative value (0 or min)
            cbelow = self.code_of[min(np.searchsorted(V, 0.0), V.size - 1)]
            cbig_pos, cbig_neg = self.code_of[-1], self.code_of[0]
        elif ovf == "nan":
            cbig_pos, cbig_neg, cbelow = self.nan_pos, self.nan_neg, self.nan_pos
        elif ovf == "inf":
            cbig_pos, cbig_neg, cbelow = self.inf_pos, self.inf_neg, self.nan_pos
        else:
            cbig_pos = cbig_neg = cbelow = REFUSED_RANGE
        if cbelow < 0:
            cbelow = REFUSED_RANGE
        code = np.where(big_pos, cbig_pos, code)
        code = np.where(big_neg, cbig_neg, code)
        code = np.where(below, cbelow, code)
        if enc.on_nan == "raise" or self.nan_pos < 0:
            code = np.where(nan, REFUSED_NAN, code)
        else:
            code = np.where(nan, np.where(neg, self.nan_neg, self.nan_pos), code)
        return code.astype(np.int64)


def pack_codes(codes: np.ndarray, w: int) -> np.ndarray:
    """Pack non-negative codes (..., K) LSB-first, w bits each → uint8 (..., K*w/8)."""
    codes = np.asarray(codes, dtype=np.uint64)
    *lead, K = codes.shape
    bits = ((codes[..., None] >> np.arange(w, dtype=np.uint64)) & 1).astype(np.uint8)  # (..., K, w)
    bits = bits.reshape(*lead, K * w)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_codes(data: np.ndarray, w: int, K: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`."""
    data = np.asarray(data, dtype=np.uint8)
    bits = np.unpackbits(data, axis=-1, bitorder="little")[..., : K * w]
    bits = bits.reshape(*data.shape[:-1], K, w).astype(np.int64)
    return (bits << np.arange(w)).sum(-1)


def ml_dtypes_type(fmt: FloatFormat | IntFormat) -> Any:
    """The ml_dtypes scalar type with exactly this format, or None."""
    import ml_dtypes

    if isinstance(fmt, IntFormat):
        return None  # ml_dtypes' float->int casts truncate and wrap: not a rounding oracle
    return getattr(ml_dtypes, fmt.name, None)


def ml_dtypes_cast(x: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Codes that ml_dtypes produces for float32 ``x`` (int64, one per element)."""
    t = ml_dtypes_type(fmt)
    with np.errstate(all="ignore"):
        y = np.asarray(x, dtype=np.float32).astype(t)
    raw = y.view(np.uint8).astype(np.int64)
    return raw & ((1 << fmt.bits) - 1)


def reference_scale(x: np.ndarray, mode: str, fmax: float, min_positive: float, R: int = 0,
                    C: int = 0, *, signed: bool = True) -> np.ndarray:
    """The scale the spec defines (float32 arithmetic in numpy), for ``x`` of shape (..., K):
    amax/max, nudged to a fixed point of s -> (max*s)/max, and at least (all-zero groups:
    exactly) 2**-126 / min_positive, min_positive being the format's smallest positive value.
    amax is the largest finite |x|, or the largest finite x > 0 for unsigned formats."""
    x = x.astype(np.float32)
    a = np.abs(x) if signed else np.where(x > 0, x, np.float32(0))
    a = np.where(np.isfinite(a), a, np.float32(0))
    if mode == "tensor":
        amax = np.float32(a.max(initial=0))
    elif mode == "channel":
        amax = a.max(axis=-1, initial=0).astype(np.float32)
    else:
        *b, M, K = a.shape
        Mb, Kb = -(-M // R), -(-K // C)
        p = np.zeros((*b, Mb * R, Kb * C), np.float32)
        p[..., :M, :K] = a
        amax = p.reshape(*b, Mb, R, Kb, C).max(axis=(-3, -1))
    m = np.float32(fmax)
    with np.errstate(all="ignore"):
        s = np.asarray(amax / m, dtype=np.float32)
        for _ in range(2):
            t = (s * m) / m
            s = np.where((t > 0) & np.isfinite(t), t, s)
    floor = np.float32(2.0**-126 / min_positive)
    return np.where((s > 0) & np.isfinite(s), np.maximum(s, floor), floor).astype(np.float32)


def producible_values(fmt: FloatFormat | IntFormat) -> np.ndarray:
    """The finite values an encoder produces (float64, sorted; symmetric integers lose their
    most negative code, which decodes but is never written)."""
    v = reference_values(fmt)
    v = v[np.isfinite(v)]
    if isinstance(fmt, IntFormat) and fmt.symmetric:
        v = v[v != fmt.min - 1]
    return np.unique(v)


def expand_scale(s: np.ndarray, shape: tuple[int, ...], mode: str, R: int = 0, C: int = 0) -> np.ndarray:
    """The scale of every element of a tensor of ``shape``, from the stored scales."""
    if mode == "tensor":
        return np.broadcast_to(s, shape)
    if mode == "channel":
        return np.broadcast_to(s[..., None], shape)
    return np.repeat(np.repeat(s, R, axis=-2), C, axis=-1)[..., : shape[-2], : shape[-1]]


def to_hex(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"




# ---- group-scaled integers (codec "int" and presets) ----------------------------------------------
# An independent, loop-by-loop reading of spec/int.toml in Python floats (float64) and numpy
# float32 scalars: nothing is shared with lowbit.codecs._groups or the kernels.

_SCALE_GRID = {"float16": (10, -14, 65504.0, 2.0**-24), "bfloat16": (7, -126, (2 - 2.0**-7) * 2.0**127, 2.0**-126),
               "float32": (15, -126, (2 - 2.0**-15) * 2.0**127, 2.0**-126)}


def _rd_scale(v: float, scale_dtype: str) -> float:
    """Round v down to the scale grid, clamp to [floor, max]; v <= 0 gives the floor."""
    mb, emin, vmax, floor = _SCALE_GRID[scale_dtype]
    if not v > 0:
        return floor
    if v >= vmax:
        return vmax
    e = max(math.floor(math.log2(v)), emin)
    while math.ldexp(1.0, e) > v and e > emin:  # guard log2 rounding
        e -= 1
    while e + 1 >= emin and math.ldexp(1.0, e + 1) <= v:
        e += 1
    e = max(e, emin)
    step = math.ldexp(1.0, e - mb)
    return min(max(math.floor(v / step) * step, floor), vmax)


def _code_f32(x: float, s: float) -> int:
    q = np.float32(np.float32(x) / np.float32(s))
    q = min(max(float(q), -1024.0), 1024.0)
    return int(np.rint(np.float32(q)))


def reference_int(x: np.ndarray, bits: int, group_size: int | None, axis: int, symmetric: bool,
                  scale_dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(codes uint, float64 scales, int zero points or None, float32 decoded) for float32 x,
    groups enumerated explicitly. Scales/zeros come back in the aux layout."""
    x = np.asarray(x, np.float32)
    shape = x.shape
    K = shape[-1]
    M = shape[-2] if x.ndim >= 2 else 1
    mats = x.reshape(-1, M, K)
    maxq = (1 << bits) - 1
    floor = _SCALE_GRID[scale_dtype][3]
    G = group_size
    if axis == -1:
        G = G or max(K, 1)
        ng = -(-K // G)
        groups = [(b, m, list(range(j * G, min(K, (j + 1) * G))), j) for b in range(mats.shape[0]) for m in range(M) for j in range(ng)]
        sshape = shape[:-1] + (ng,)
    else:
        G = G or max(M, 1)
        ng = -(-M // G)
        groups = [(b, j, c, None) for b in range(mats.shape[0]) for j in range(ng) for c in range(K)]
        sshape = shape[:-2] + (ng, K)
    codes = np.zeros(mats.shape, np.int64)
    scales, zeros = [], []
    for b, a1, a2, j in groups:
        if axis == -1:
            idx = [(b, a1, c) for c in a2]
        else:
            idx = [(b, m, a2) for m in range(a1 * G, min(M, (a1 + 1) * G))]
        vals = [float(mats[i]) for i in idx]
        fin = [v for v in vals if math.isfinite(v)]
        lo, hi = min(fin + [0.0]), max(fin + [0.0])
        if symmetric:
            qs = (1 << (bits - 1)) - 1
            s = _rd_scale(max(-lo, hi) / qs, scale_dtype)
            z = 1 << (bits - 1)
            qlo, qhi = 1, maxq
        else:
            s = _rd_scale((hi - lo) / maxq, scale_dtype)
            for _ in range(16):
                z = min(max(-_code_f32(lo, s), 0), maxq)
                if not (_code_f32(hi, s) + z < maxq and hi > lo and s > floor):
                    break
                s = _rd_scale(s * (1 - 2.0**-30), scale_dtype)
            qlo, qhi = 0, maxq
        for i, v in zip(idx, vals):
            codes[i] = min(max(_code_f32(v, s) + z, qlo), qhi)
        scales.append(s)
        zeros.append(z)
    codes = codes.reshape(shape)
    s_arr = np.array(scales, np.float64).reshape(sshape)
    z_arr = None if symmetric else np.array(zeros, np.int64).reshape(sshape)
    # decoded: (code - z) * s, float32 (exact, so float64 then cast gives the same)
    if axis == -1:
        s_el = np.repeat(s_arr, G, axis=-1)[..., :K]
        z_el = np.repeat(z_arr if z_arr is not None else np.full(s_arr.shape, 1 << (bits - 1)), G, axis=-1)[..., :K]
    else:
        s_el = np.repeat(s_arr, G, axis=-2)[..., :M, :].reshape(shape)
        zz = z_arr if z_arr is not None else np.full(s_arr.shape, 1 << (bits - 1))
        z_el = np.repeat(zz, G, axis=-2)[..., :M, :].reshape(shape)
    y = ((codes - z_el) * s_el).astype(np.float32)
    return codes, s_arr, z_arr, y


def scale_array(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """float64 scales on the grid -> the stored aux array (bfloat16 as uint16 bits)."""
    if scale_dtype == "float16":
        return s.astype(np.float16)
    if scale_dtype == "bfloat16":
        return (s.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return s.astype(np.float32)


# ---- non-uniform tables (codec "nonuniform"): a loop-by-loop reading of spec/nonuniform.toml ----


def _nearest_level(x: np.float32, L: list[np.float32]) -> int:
    """The lowest index among the nearest levels, by a full scan in float32; +Inf takes the
    largest finite level and -Inf the first (the spec's rule for infinite inputs)."""
    if np.isinf(x):
        fin = [j for j, v in enumerate(L) if np.isfinite(v)]
        return (fin[-1] if fin else 0) if x > 0 else 0
    best, bd = 0, None
    for j, v in enumerate(L):
        d = abs(np.float32(np.float32(x) - v))
        if bd is None or d < bd:
            best, bd = j, d
    return best


def reference_nonuniform(x: np.ndarray, bits: int, group_size: int | None, axis: int, lut_dtype: str,
                         iterations: int, importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, lut float32 in the aux layout, decoded) for float32 x, group by group."""
    x = np.asarray(x, np.float32)
    shape = x.shape
    K = shape[-1]
    M = shape[-2] if x.ndim >= 2 else 1
    mats = x.reshape(-1, M, K)
    w = np.ones(mats.shape) if importance is None else np.broadcast_to(importance, shape).reshape(mats.shape)
    k = 1 << bits
    if axis == -1:
        G = group_size or K
        groups = [[(b, m, c) for c in range(j * G, min(K, (j + 1) * G))] for b in range(mats.shape[0]) for m in range(M)
                  for j in range(-(-K // G))]
        lshape = shape[:-1] + (-(-K // G), k)
    else:
        G = group_size or M
        groups = [[(b, m, c) for m in range(j * G, min(M, (j + 1) * G))] for b in range(mats.shape[0])
                  for j in range(-(-M // G)) for c in range(K)]
        lshape = shape[:-2] + (-(-M // G), K, k)
    vmax = 65504.0 if lut_dtype == "float16" else float(np.finfo(np.float32).max)
    codes = np.zeros(mats.shape, np.int64)
    luts = []
    for idx in groups:
        pairs = sorted(((float(mats[i]), float(w[i])) for i in idx if math.isfinite(float(mats[i]))), key=lambda p: p[0])
        vals = [p[0] for p in pairs]
        if not vals:
            cent = [0.0]
        elif len(set(vals)) <= k:
            cent = sorted(set(vals))
        else:
            ws = [p[1] for p in pairs]
            if not sum(ws) > 0:
                ws = [1.0] * len(ws)
            lo, hi = vals[0], vals[-1]
            cent = [lo + (hi - lo) * (j / (k - 1)) for j in range(k)]
            for _ in range(iterations):
                sw, swv = [0.0] * k, [0.0] * k
                j = 0
                for v, wt in zip(vals, ws):
                    while j + 1 < k and abs(v - cent[j + 1]) < abs(v - cent[j]):
                        j += 1
                    sw[j] += wt
                    swv[j] += wt * v
                cent = [swv[j] / sw[j] if sw[j] > 0 else cent[j] for j in range(k)]
        c = np.clip(np.array(cent), -vmax, vmax)
        c = c.astype(np.float16).astype(np.float32) if lut_dtype == "float16" else c.astype(np.float32)
        u = sorted(set(float(v) for v in c))
        u = [np.float32(v) for v in u] + [np.float32(np.inf)] * (k - len(u))
        used = sorted({_nearest_level(mats[i], u) for i in idx})
        L = [u[j] for j in used if np.isfinite(u[j])] or [u[0] if np.isfinite(u[0]) else np.float32(0)]
        L = L + [np.float32(np.inf)] * (k - len(L))
        for i in idx:
            codes[i] = _nearest_level(mats[i], L)
        luts.append(L)
    lut = np.array(luts, np.float32).reshape(lshape)
    flat = lut.reshape(len(groups), k)
    y = np.zeros(mats.shape, np.float32)
    for g, idx in enumerate(groups):
        for i in idx:
            y[i] = flat[g, codes[i]]
    return codes.reshape(shape), lut, y.reshape(shape)


# ---- BitMoD (codec "bitmod"): a group-by-group reading of spec/bitmod.toml ------------------------

_BITMOD_MAGS = {4: [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], 3: [0.0, 1.0, 2.0, 4.0]}
_BITMOD_SPECIAL = {4: [5.0, -5.0, 8.0, -8.0], 3: [3.0, -3.0, 6.0, -6.0]}


def _bitmod_type(bits: int, T: int) -> dict[float, int]:
    """value -> code of type T (sign-magnitude; the -0 code holds the special value)."""
    half = 1 << (bits - 1)
    out = {}
    for c in range(2 * half):
        v = _BITMOD_MAGS[bits][c] if c < half else (_BITMOD_SPECIAL[bits][T] if c == half else -_BITMOD_MAGS[bits][c - half])
        out[v] = c
    return out


def _rd_f16(v: float) -> float:
    """Round down to the float16 grid by stepping numpy float16 values, clamp [2**-24, 65504]."""
    if not v > 0:
        return 2.0**-24
    if v >= 65504.0:
        return 65504.0
    h = np.float16(v)
    while float(h) > v:
        h = np.nextafter(h, np.float16(0))
    return max(float(h), 2.0**-24)


def _bitmod_pick(vals_sorted: list[float], t: np.float32) -> float:
    """The nearest value, ties to the lower one: the first value whose upper midpoint is >= t."""
    for a, b in zip(vals_sorted, vals_sorted[1:]):
        if not np.float32((a + b) / 2) < t:
            return a
    return vals_sorted[-1]


def _bitmod_choose(g: list[np.float32], bits: int) -> tuple[int, float]:
    fin = [float(v) for v in g if np.isfinite(v)]
    lo, hi = min(fin + [0.0]), max(fin + [0.0])
    best = (0, 1.0, math.inf)
    for T in range(4):
        vals = sorted(_bitmod_type(bits, T))
        s = _rd_f16(max(hi / max(vals), -lo / -min(vals)))
        err = 0.0
        for v in g:
            if np.isfinite(v):
                y = _bitmod_pick(vals, np.float32(np.float32(v) / np.float32(s))) * s
                err += (y - float(v)) ** 2
        if err < best[2]:
            best = (T, s, err)
    return best[0], best[1]


def reference_bitmod(x: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes, float16 scales, uint8 types, float32 decoded) for float32 x (..., K)."""
    x = np.asarray(x, np.float32)
    K = x.shape[-1]
    rows = x.reshape(-1, K)
    ng = -(-K // group_size)
    codes = np.zeros(rows.shape, np.int64)
    S = np.zeros((rows.shape[0], ng), np.float16)
    TT = np.zeros((rows.shape[0], ng), np.uint8)
    y = np.zeros(rows.shape, np.float32)
    for r in range(rows.shape[0]):
        for j in range(ng):
            g = list(rows[r, j * group_size:(j + 1) * group_size])
            T1, s1 = _bitmod_choose(g, bits)
            v1 = sorted(_bitmod_type(bits, T1))
            y1 = [np.float32(_bitmod_pick(v1, np.float32(v / np.float32(s1))) * s1) if np.isfinite(v) else v for v in g]
            T2, s2 = _bitmod_choose(y1, bits)
            tab = _bitmod_type(bits, T2)
            v2 = sorted(tab)
            for i, v in enumerate(y1):
                val = _bitmod_pick(v2, np.float32(np.float32(v) / np.float32(s2)))
                codes[r, j * group_size + i] = tab[val]
                y[r, j * group_size + i] = np.float32(val * s2)
            S[r, j], TT[r, j] = s2, T2
    return codes.reshape(x.shape), S.reshape(x.shape[:-1] + (ng,)), TT.reshape(x.shape[:-1] + (ng,)), y.reshape(x.shape)


# ---- dynamic8 (bitsandbytes blockwise 8-bit dynamic map) ---------------------------------------


def reference_dynamic_map(signed: bool) -> list[np.float32]:
    """bitsandbytes' ``create_dynamic_map(signed)`` read element by element with float32 scalars
    (torch.linspace: start + k*step for k < n//2, else end - (n-1-k)*step, via float64 then one
    rounding), ascending."""
    f = np.float32
    data = [f(0.0), f(1.0)]
    for i in range(7):
        n = (2 ** i if signed else 2 ** (i + 1)) + 1
        step = f(f(f(1.0) - f(0.1)) / f(n - 1))
        pts = [f(float(f(0.1)) + k * float(step)) if k < n // 2 else f(1.0 - (n - 1 - k) * float(step)) for k in range(n)]
        for a, b in zip(pts, pts[1:]):
            mean = f(f(a + b) / f(2.0))
            data.append(f(f(10.0 ** (i - 6)) * mean))
            if signed:
                data.append(f(f(-(10.0 ** (i - 6))) * mean))
    return sorted(data)


def reference_dynamic8(x: np.ndarray, blocksize: int, signed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8, absmax float32, decoded) for float32 x, block by block along the last axis,
    following spec/dynamic8.toml with scalar float32 arithmetic and bitsandbytes' LUT walk."""
    f = np.float32
    code = reference_dynamic_map(signed)
    mids = [f(f(0.5) * f(code[j] + code[j + 1])) for j in range(255)]
    lut, j = [], 0
    for i in range(65536):  # build_quantize_lut: advance while the next midpoint is below val
        val = f(f(-1.0) + f(f(2.0 * i) / f(65535.0)))
        while j < 255 and mids[j] < val:
            j += 1
        lut.append(j)
    x = np.asarray(x, np.float32)
    K = x.shape[-1]
    rows = x.reshape(-1, K)
    nb = -(-K // blocksize)
    codes = np.zeros(rows.shape, np.uint8)
    am_out = np.zeros((rows.shape[0], nb), np.float32)
    y = np.zeros(rows.shape, np.float32)
    with np.errstate(all="ignore"):
        for r in range(rows.shape[0]):
            for b in range(nb):
                cols = range(b * blocksize, min(K, (b + 1) * blocksize))
                am = f(max((abs(float(rows[r, c])) for c in cols), default=0.0))
                am_out[r, b] = am
                for c in cols:
                    if am == 0:
                        k = 0
                    else:
                        v = f(rows[r, c] * f(f(1.0) / am))
                        v = f(-1.0) if math.isnan(v) else min(max(v, f(-1.0)), f(1.0))
                        t = f(f(f(f(v + f(1.0)) * f(0.5)) * f(65535.0)) + f(0.5))
                        k = lut[int(t)]
                    codes[r, c] = k
                    y[r, c] = f(code[k] * am)
    return codes.reshape(x.shape), am_out.reshape(x.shape[:-1] + (nb,)), y.reshape(x.shape)


# ---- qjl (1-bit JL key sketches) ---------------------------------------------------------------


def reference_qjl_matrix(seed: int, m: int, d: int) -> np.ndarray:
    """spec/qjl.toml's matrix, element by element (Box–Muller over PCG64 uniforms, math module)."""
    u = np.random.Generator(np.random.PCG64(seed)).random(2 * m * d).tolist()
    n = m * d
    vals = [np.float32(math.sqrt(-2.0 * math.log1p(-u[k])) * math.cos(2.0 * math.pi * u[n + k])) for k in range(n)]
    return np.array(vals, np.float32).reshape(m, d)


def reference_qjl(x: np.ndarray, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sign bytes, norms, decoded) for float32 x (rows of dimension d), row by row with float32
    scalars in spec/qjl.toml's sequential order."""
    f = np.float32
    x = np.asarray(x, np.float32)
    d = x.shape[-1]
    m = bits * d
    S = reference_qjl_matrix(seed, m, d)
    c = f(math.sqrt(math.pi / 2) / m)
    rows = x.reshape(-1, d)
    data = np.zeros((rows.shape[0], m // 8), np.uint8)
    norms = np.zeros(rows.shape[0], np.float32)
    y = np.zeros(rows.shape, np.float32)
    for r, row in enumerate(rows):
        nsq = f(0.0)
        for v in row:
            nsq = f(nsq + f(v * v))
        norms[r] = f(math.sqrt(float(nsq)))  # the float64 sqrt of a float32 rounds to float32 correctly
        bits_r = []
        for i in range(m):
            acc = f(0.0)
            for j in range(d):
                acc = f(acc + f(S[i, j] * row[j]))
            bits_r.append(1 if acc >= 0 else 0)
            data[r, i // 8] |= bits_r[-1] << (i % 8)
        sc = f(c * norms[r])
        for j in range(d):
            acc = f(0.0)
            for i in range(m):
                acc = f(acc + (S[i, j] if bits_r[i] else -S[i, j]))
            y[r, j] = f(sc * acc)
    return data.reshape(x.shape[:-1] + (m // 8,)), norms.reshape(x.shape[:-1]), y.reshape(x.shape)


def reference_qjl_score(q: np.ndarray, data: np.ndarray, norms: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """spec/qjl.toml's score of float32 queries q (n_q, d) against sketches (T, m/8), (T,)."""
    f = np.float32
    d = q.shape[-1]
    m = bits * d
    S = reference_qjl_matrix(seed, m, d)
    c = f(math.sqrt(math.pi / 2) / m)
    out = np.zeros((q.shape[0], data.shape[0]), np.float32)
    for a in range(q.shape[0]):
        p = []
        for i in range(m):
            acc = f(0.0)
            for j in range(d):
                acc = f(acc + f(S[i, j] * q[a, j]))
            p.append(acc)
        for t in range(data.shape[0]):
            acc = f(0.0)
            for i in range(m):
                acc = f(acc + (p[i] if (int(data[t, i // 8]) >> (i % 8)) & 1 else -p[i]))
            out[a, t] = f(f(c * norms[t]) * acc)
    return out


# ---- rotated (pre-rotation wrapper) -------------------------------------------------------------


def reference_rotate(x: np.ndarray, kind: str, block: int, signs: np.ndarray, Q: np.ndarray | None,
                     inverse: bool = False) -> np.ndarray:
    """spec/rotated.toml's rotation of float32 x, block by block with float32 scalars."""
    f = np.float32
    x = np.asarray(x, np.float32)
    out = np.zeros(x.shape, np.float32)
    flat_in, flat_out = x.reshape(-1, block), out.reshape(-1, block)
    c = f(1 / math.sqrt(block))
    for r, row in enumerate(flat_in):
        if kind == "hadamard":
            v = [f(row[j]) if inverse else f(row[j] * signs[j]) for j in range(block)]
            h = 1
            while h < block:
                for i in range(0, block, 2 * h):
                    for j in range(i, i + h):
                        v[j], v[j + h] = f(v[j] + v[j + h]), f(v[j] - v[j + h])
                h *= 2
            res = [f(f(v[j] * c) * signs[j]) if inverse else f(v[j] * c) for j in range(block)]
        else:
            res = []
            for i in range(block):
                acc = f(0.0)
                for j in range(block):
                    acc = f(acc + f(row[j] * (Q[j, i] if inverse else Q[i, j])))
                res.append(acc)
        flat_out[r] = [np.float32(np.nan) if v != v else v for v in res]
    return out
