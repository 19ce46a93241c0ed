"""Group geometry and integer group parameters shared by the group-scaled codecs
(``int`` and its presets, ``sliceable_int``, ``nonuniform``, ``bitmod``).

A tensor of shape ``(..., M, K)`` is seen as ``B`` matrices of ``M`` rows and ``K`` columns (a 1-D
tensor is one row). A *group* is a run of ``group_size`` consecutive elements along one axis:

* ``axis=-1``: along a row (per-token groups of a K/V tensor ``[T, D]``; the GPTQ/AWQ groups of
  input channels of a weight ``[out, in]``). Scales have shape ``shape[:-1] + (ceil(K/G),)``.
* ``axis=-2``: down a column (per-channel groups of ``G`` tokens, KIVI's key layout). Scales have
  shape ``shape[:-2] + (ceil(M/G), K)``.

``group_size=None`` means the whole axis. The last group may be partial. With an explicit column
group map ``g_idx`` (GPTQ act-order, ``axis=-1`` only) column ``c`` belongs to group ``g_idx[c]``.

Every array operation here works on numpy arrays (cpu backend) and torch tensors (gpu backend)
alike, with the same IEEE operations in the same order, so both backends get identical scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _arrays
from ..errors import ConfigError

__all__ = ["Geometry", "SCALE_DTYPES", "group_minmax", "int_params", "round_down", "scale_to_aux",
           "scale_from_aux", "check_group_config"]

# scale dtype -> (mantissa bits kept, smallest binade exponent, largest value, floor, aux dtype)
# float32 scales keep 16 significant bits (15 stored), so that (q - z) * s with |q - z| <= 255 is
# exact in float32: that exactness is what makes re-encoding a decoded tensor reproduce it.
SCALE_DTYPES: dict[str, tuple[int, int, float, float, str]] = {
    "float16": (10, -14, 65504.0, 2.0**-24, "float16"),
    "bfloat16": (7, -126, (2 - 2.0**-7) * 2.0**127, 2.0**-126, "uint16"),
    "float32": (15, -126, (2 - 2.0**-15) * 2.0**127, 2.0**-126, "float32"),
}


def check_group_config(codec: str, group_size: Any, axis: Any, scale_dtype: Any) -> None:
    if group_size is not None and (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1):
        raise ConfigError(f"{codec}: group_size: expected a positive int or None (whole axis), got {group_size!r}")
    if axis not in (-1, -2):
        raise ConfigError(f"{codec}: axis: expected -1 (groups along a row) or -2 (down a column), got {axis!r}")
    if scale_dtype not in SCALE_DTYPES:
        raise ConfigError(f"{codec}: scale_dtype: expected one of {sorted(SCALE_DTYPES)}, got {scale_dtype!r}")


@dataclass(frozen=True)
class Geometry:
    """Where each element's group parameters live: group row ``(r // M) * NGr + (r % M) // Gr``
    and group column ``gcol[c]``; parameters are stored as ``(B * NGr, NGc)`` row-major."""

    rows: int
    K: int
    M: int   # rows per matrix
    Gr: int  # group extent down the rows (1 for axis=-1)
    NGr: int  # group rows per matrix
    NGc: int  # group columns
    Gc: int  # group extent along a row (1 for axis=-2)

    @classmethod
    def of(cls, shape: tuple[int, ...], group_size: int | None, axis: int) -> "Geometry":
        K = shape[-1]
        M = shape[-2] if len(shape) >= 2 else 1
        rows = math.prod(shape[:-1])
        if axis == -1:
            G = max(K, 1) if group_size is None else group_size
            return cls(rows, K, max(rows, 1), 1, max(rows, 1), -(-K // G), G)
        G = max(M, 1) if group_size is None else group_size
        return cls(rows, K, max(M, 1), G, -(-M // G), K, 1)

    def aux_shape(self, shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
        if axis == -1:
            return tuple(shape[:-1]) + (self.NGc,)
        return tuple(shape[:-2]) + (self.NGr, self.K)

    @property
    def n_param_rows(self) -> int:
        return (self.rows // self.M if self.rows else 0) * self.NGr

    def gcol(self, xp: Any, device: Any = None) -> Any:
        """int32 [K]: the group column of every column (contiguous groups)."""
        if xp is np:
            return (np.arange(self.K, dtype=np.int32) // self.Gc).astype(np.int32)
        return (xp.arange(self.K, dtype=xp.int32, device=device) // self.Gc).to(xp.int32)


def _xp(a: Any) -> Any:
    if _arrays.is_torch(a):
        import torch

        return torch
    return np


def group_minmax(x2d: Any, geo: Geometry, gcol: Any = None) -> tuple[Any, Any]:
    """float32 (lo, hi) per group, shape (B*NGr, NGc): min(min x, 0) and max(max x, 0) over the
    finite elements of each group (non-finite elements count as 0; so does an empty group)."""
    xp = _xp(x2d)
    torch_mode = xp is not np
    finite = xp.isfinite(x2d)
    xf = xp.where(finite, x2d, xp.zeros_like(x2d))
    rows, K = geo.rows, geo.K
    B = rows // geo.M if rows else 0
    if not rows or not K:  # nothing to reduce: every group is empty
        shp = (geo.n_param_rows, geo.NGc)
        e = np.zeros(shp, np.float32) if not torch_mode else xp.zeros(shp, dtype=xp.float32, device=x2d.device)
        return e, e
    if gcol is not None:  # an explicit column map (act-order): scatter min/max, 0 included
        shape = (rows, geo.NGc)
        if torch_mode:
            idx = gcol.to(xp.int64).reshape(1, -1).expand(rows, -1)
            lo = xp.zeros(shape, dtype=xp.float32, device=x2d.device).scatter_reduce(1, idx, xf, "amin", include_self=True)
            hi = xp.zeros(shape, dtype=xp.float32, device=x2d.device).scatter_reduce(1, idx, xf, "amax", include_self=True)
        else:
            lo = np.zeros(shape, np.float32)
            hi = np.zeros(shape, np.float32)
            r = np.repeat(np.arange(rows), K)
            c = np.tile(gcol.astype(np.int64), rows)
            np.minimum.at(lo, (r, c), xf.reshape(-1))
            np.maximum.at(hi, (r, c), xf.reshape(-1))
        return lo, hi
    if geo.Gr == 1:  # groups along the rows
        G, NG = geo.Gc, geo.NGc
        t = _pad_last(xf, NG * G, xp)
        t = t.reshape(rows, NG, G)
        red = 2
    else:  # groups down the columns of each matrix
        G, NG = geo.Gr, geo.NGr
        t = xf.reshape(B, geo.M, K)
        t = _pad_mid(t, NG * G, xp)
        t = t.reshape(B, NG, G, K)
        red = 2
    z = xp.zeros((), dtype=xp.float32) if not torch_mode else xp.zeros((), dtype=xp.float32, device=x2d.device)
    if t.numel() if torch_mode else t.size:
        lo = xp.minimum(t.amin(dim=red) if torch_mode else t.min(axis=red), z)
        hi = xp.maximum(t.amax(dim=red) if torch_mode else t.max(axis=red), z)
    else:
        shp = t.shape[:red] + t.shape[red + 1:]
        lo = xp.zeros(shp, dtype=xp.float32) if not torch_mode else xp.zeros(shp, dtype=xp.float32, device=x2d.device)
        hi = lo
    return lo.reshape(-1, geo.NGc), hi.reshape(-1, geo.NGc)


def _pad_last(t: Any, n: int, xp: Any) -> Any:
    if t.shape[-1] == n:
        return t
    if xp is np:
        return np.pad(t, [(0, 0)] * (t.ndim - 1) + [(0, n - t.shape[-1])])
    return xp.nn.functional.pad(t, (0, n - t.shape[-1]))


def _pad_mid(t: Any, n: int, xp: Any) -> Any:
    if t.shape[1] == n:
        return t
    if xp is np:
        return np.pad(t, [(0, 0), (0, n - t.shape[1]), (0, 0)])
    return xp.nn.functional.pad(t, (0, 0, 0, n - t.shape[1]))


def round_down(v: Any, scale_dtype: str) -> Any:
    """float64 ``v`` > 0 rounded down to the scale grid (``SCALE_DTYPES``), clamped to
    [floor, max]; NaN and values <= 0 give the floor. Exact float64 operations only."""
    xp = _xp(v)
    mb, emin, vmax, floor, _ = SCALE_DTYPES[scale_dtype]
    ok = (v > 0) & (v < math.inf)
    safe = xp.where(ok, v, xp.ones_like(v))
    _, ex = xp.frexp(safe)  # safe = m * 2**ex, 0.5 <= m < 1: floor(log2 safe) = ex - 1
    e = xp.maximum(ex - 1, xp.full_like(ex, emin))
    sp = xp.exp2((e - mb).to(xp.float64) if xp is not np else (e - mb).astype(np.float64))
    r = xp.floor(safe / sp) * sp  # dividing by a power of two is exact
    r = xp.minimum(xp.maximum(r, xp.full_like(r, floor)), xp.full_like(r, vmax))
    r = xp.where(v >= math.inf, xp.full_like(r, vmax), r)
    return xp.where(ok | (v >= math.inf), r, xp.full_like(r, floor))


def _f32(a: Any) -> Any:
    return a.astype(np.float32) if isinstance(a, np.ndarray) else a.to(_xp(a).float32)


def _f64(a: Any) -> Any:
    return a.astype(np.float64) if isinstance(a, np.ndarray) else a.to(_xp(a).float64)


def rne_div(a: Any, s: Any) -> Any:
    """round-half-even(fl32(a / s)) as float32, the kernels' code rule (division clamped to
    ±1024 first, as the kernels do)."""
    xp = _xp(a)
    q = _f32(a) / _f32(s)  # float32 / float32: correctly rounded on every backend
    lim = 1024.0
    q = xp.minimum(xp.maximum(q, xp.full_like(q, -lim)), xp.full_like(q, lim))
    return xp.round(q) if xp is not np else np.rint(q)


def int_params(lo: Any, hi: Any, bits: int, symmetric: bool, scale_dtype: str) -> tuple[Any, Any]:
    """Scales (float32, on the scale grid) and integer zero points (int32; None if symmetric)
    of each group from its float32 (lo, hi) — the rule of ``spec/int.toml``:

    symmetric:  s = RD(max(-lo, hi) / (2**(b-1) - 1)); codes q = clamp(rne(x/s), ±(2**(b-1)-1)) + 2**(b-1)
    asymmetric: s = RD((hi - lo) / (2**b - 1)), z = clamp(-rne(lo/s), 0, 2**b - 1) — or, when even
                the largest scale cannot span the group ((hi - lo) / (2**b - 1) > max scale),
                z = clamp(rne((2**b - 1) / 2) - rne((lo/2 + hi/2) / s), 0, 2**b - 1) (both ends
                saturate);
                while rne(hi/s) + z < 2**b - 1 (a rounding tie or near-tie), s steps down one grid
                value (at most 16 times, never below the floor) and z is recomputed.

    RD rounds down to the scale grid. Rounding *down* and the loop guarantee that the group's
    minimum gets code 0 and its maximum code 2**b - 1, so the decoded group spans exactly
    [-z*s, (2**b-1-z)*s] and re-encoding it gives back s, z and every code.
    """
    xp = _xp(lo)
    lo64, hi64 = _f64(lo), _f64(hi)
    _, _, _, floor, _ = SCALE_DTYPES[scale_dtype]
    if symmetric:
        qs = (1 << (bits - 1)) - 1
        a = xp.maximum(-lo64, hi64)
        return _f32(round_down(a / qs, scale_dtype)), None
    maxq = (1 << bits) - 1
    s = round_down((hi64 - lo64) / maxq, scale_dtype)
    # a span the largest scale cannot cover (|x| near FLT_MAX): centre the range on the group's
    # midpoint, so both ends saturate towards their own side instead of one end collapsing to 0
    wide = (hi64 - lo64) / maxq > SCALE_DTYPES[scale_dtype][2]
    mid = _f32(lo) * 0.5 + _f32(hi) * 0.5  # (halves first: no overflow)
    zc = xp.full_like(_f32(lo), round(maxq / 2)) - rne_div(mid, s)  # rne(maxq/2): a ±a group's usual z
    for _ in range(16):
        z = xp.where(wide, zc, -rne_div(lo, s))
        z = xp.minimum(xp.maximum(z, xp.zeros_like(_f32(lo))), xp.full_like(_f32(lo), maxq))
        qh = rne_div(hi, s) + z
        bad = (qh < maxq) & (hi64 > lo64) & (s > floor)
        if not bool(bad.any()):
            break
        s = xp.where(bad, round_down(s * (1 - 2.0**-30), scale_dtype), s)
    zi = z.astype(np.int32) if xp is np else z.to(xp.int32)
    return _f32(s), zi


def scale_to_aux(s: Any, scale_dtype: str) -> Any:
    """float32 scales (on the grid) -> the stored array: float16, bfloat16 bits as uint16, float32."""
    xp = _xp(s)
    if scale_dtype == "float16":
        return s.astype(np.float16) if xp is np else s.to(xp.float16)
    if scale_dtype == "bfloat16":  # the top 16 bits of the float32 pattern (the rest are zero)
        if xp is np:
            return (s.view(np.uint32) >> 16).astype(np.uint16)
        return ((s.view(xp.int32) >> 16) & 0xFFFF).to(xp.int32).to(xp.uint16)
    return s


def scale_from_aux(a: Any, scale_dtype: str) -> Any:
    """The stored scales -> float32 (exact)."""
    xp = _xp(a)
    if scale_dtype == "float16":
        return a.astype(np.float32) if xp is np else a.to(xp.float32)
    if scale_dtype == "bfloat16":
        if xp is np:
            return (a.astype(np.uint32) << 16).view(np.float32)
        return (a.to(xp.int32) << 16).view(xp.float32)
    return a
