"""Element-wise codecs: every small float (any ExMy) and small integer, optionally scaled.

Each element is rounded to nearest, ties to even (in units of the destination's spacing), and
its code is packed LSB-first into the row's bit stream (spec/minifloat.toml):

* 8-bit codes: one byte each; 16-bit codes: two bytes, little-endian;
* 4-bit codes: two per byte, the even element in the low nibble;
* 6-bit codes: four codes in three bytes (code i in bits 6i … 6i+5 of the 24-bit group);
* in general ``lcm(w, 8) / w`` codes of ``w`` bits fill ``lcm(w, 8) / 8`` bytes.

Optional scaling stores float32 scales in ``aux["scale"]`` and encodes ``x / scale``:
``scale="tensor"`` (one scale), ``"channel"`` (one per row: every index but the last),
``"block:RxC"`` (one per R×C tile of the last two axes — the DeepSeek-V3 FP8 checkpoint layout is
``"block:128x128"``). The scale of a group is ``amax / max`` (float32, correctly rounded), with
``amax`` the largest finite |x| in the group (the largest finite x for unsigned formats), then nudged (by at most one ulp) to a fixed point of ``s -> (max * s) / max`` so that re-encoding a decoded tensor
reproduces every scale and code, and floored at ``2**-126 / min_positive`` so that decoded values
are never float32 subnormals (this only touches groups with amax below about ``max * 2**-126 /
min_positive``, 3e-33 for FP8 E4M3; all-zero groups get the floor). Decoding computes ``code_value * scale``. Scaled finite values
are clamped to the format's range before rounding.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError, ShapeError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from ..numerics import ElementEncoding, ElementFormat, FloatFormat, IntFormat

__all__ = ["ElementCodec", "MiniFloat", "Integer", "parse_scale"]


def parse_scale(scale: str | None, codec: str) -> tuple[str | None, int, int]:
    """``None | "tensor" | "channel" | "block:RxC"`` → (mode, R, C)."""
    if scale is None or scale in ("tensor", "channel"):
        return scale, 0, 0
    m = re.fullmatch(r"block:(\d+)x(\d+)", str(scale))
    if m and int(m[1]) > 0 and int(m[2]) > 0:
        return "block", int(m[1]), int(m[2])
    raise ConfigError(f"{codec}: scale: expected None, 'tensor', 'channel' or 'block:RxC', got {scale!r}")


class ElementCodec(Codec):
    """Shared machinery of :class:`MiniFloat` and :class:`Integer` (not a codec by itself)."""

    family = "minifloat"

    def _setup(self, fmt: ElementFormat, overflow: str | None, on_nan: str | None,
               storage_bits: int | None, scale: str | None) -> None:
        self._mode, self._R, self._C = parse_scale(scale, self.codec_id)
        self._fmt = fmt
        self._encoding = enc = ElementEncoding(fmt, overflow, on_nan, storage_bits)
        if self._mode is not None:
            lo = min(v for v in self._grid() if v > 0)
            if fmt.max / lo > 2.0**253:
                raise ConfigError(
                    f"{self.codec_id}: scale={scale!r}: {fmt.name} spans 2**{math.log2(fmt.max / lo):.0f}, more "
                    f"than float32 can hold after scaling (at most 2**253); use it unscaled")
        # the configuration, normalised so equal codecs have equal configs
        self.overflow, self.on_nan, self.storage_bits, self.scale = enc.overflow, enc.on_nan, enc.storage_bits, scale

    @property
    def format(self) -> ElementFormat:
        """The element format."""
        return self._fmt

    @property
    def encoding(self) -> ElementEncoding:
        """The element format with its rounding policies and packing width."""
        return self._encoding

    generic_spec = "minifloat"  # the parametric spec file of the family

    @property
    def layout(self) -> BlockLayout:
        """A preset at its own width has its own spec file; anything else uses the generic one."""
        w = self._encoding.storage_bits
        if self.preset and w == getattr(self, "preset_defaults", {}).get("storage_bits", self._fmt.bits):
            return BlockLayout.from_spec(self.codec_id)
        return BlockLayout.from_spec(self.generic_spec, w=w)

    # ---- scales ---------------------------------------------------------------------------
    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        m = self._mode
        if m is None:
            return {}
        if m == "tensor":
            return {"scale": ((), "float32")}
        if m == "channel":
            return {"scale": (tuple(shape[:-1]), "float32")}
        M, K = shape[-2], shape[-1]
        return {"scale": (tuple(shape[:-2]) + (-(-M // self._R), -(-K // self._C)), "float32")}

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        super()._check_shape(shape)
        if self._mode == "block" and len(shape) < 2:
            raise ShapeError(f"{self.codec_id}: scale={self.scale!r}: expected a tensor of at least 2 dimensions, got shape {shape}")

    def _compute_scale(self, x2d: Any, shape: tuple[int, ...], backend: str) -> Any:
        """float32 scales in the aux layout (see the module docstring for the rule)."""
        torch_mode = _arrays.is_torch(x2d)
        xp: Any = _torch() if torch_mode else np
        K = shape[-1]
        # amax over finite values only; unsigned formats clamp negatives to 0, so only x > 0 count
        C = self._C if self._mode == "block" else max(K, 1)
        am = get_kernel(self.family, backend, "absmax")(x2d, C, not self._fmt.signed)  # (rows, G)
        if K == 0 and self._mode != "block":  # empty rows still get their (floor) scale
            am = xp.zeros((x2d.shape[0], 1), dtype=xp.float32) if not torch_mode else _torch().zeros(
                (x2d.shape[0], 1), dtype=_torch().float32, device=x2d.device)
        if self._mode == "tensor":
            amax = _amax(am.reshape(1, -1), (1,), torch_mode).reshape(())
        elif self._mode == "channel":
            amax = am.reshape(shape[:-1])
        else:
            M = shape[-2]
            Mb, Kb = -(-M // self._R), am.shape[1]
            B = math.prod(shape[:-2])
            t = _pad(am.reshape(B, M, Kb), (B, Mb * self._R, Kb), torch_mode)
            amax = _amax(t.reshape(B, Mb, self._R, Kb), (2,), torch_mode).reshape(shape[:-2] + (Mb, Kb))
        vmax = np.float32(self._fmt.max)
        s = amax / vmax  # float32 / float32: correctly rounded
        # Nudge s to a fixed point of s -> (max * s) / max: re-encoding the decoded tensor then
        # finds the same amax and scale, so encode(decode(q)) == q. One step always suffices
        # (it moves s by at most one ulp); the second is insurance.
        for _ in range(2):
            s = _no_overflow(s, vmax, xp)  # the largest code times s must stay finite (|x| near FLT_MAX)
            t = (s * vmax) / vmax
            s = xp.where((t > 0) & xp.isfinite(t), t, s)
        s = _no_overflow(s, vmax, xp)
        # Floor: the smallest non-zero code times the scale stays a normal float32, so decoded
        # values keep every bit. All-zero groups get the floor too, so a group whose values all
        # round to zero re-encodes with the same scale. (A power of two: a fixed point as well.)
        floor = xp.full_like(s, self.min_scale)
        return xp.where((s > 0) & xp.isfinite(s), xp.maximum(s, floor), floor)

    @property
    def min_scale(self) -> float:
        """2**-126 / (smallest positive value of the format): the floor of every scale."""
        lo = min(v for v in self._grid() if v > 0)
        return math.ldexp(1.0, -126) / lo

    def _row_scales(self, scale: Any, shape: tuple[int, ...]) -> tuple[Any, int]:
        """Scales expanded to one row per data row: (rows, groups) and the column block width."""
        torch_mode = _arrays.is_torch(scale)
        K = shape[-1]
        rows = math.prod(shape[:-1])
        if self._mode == "tensor":
            one = scale.reshape(1, 1)
            return (one.expand(rows, 1).contiguous() if torch_mode else np.repeat(one, rows, axis=0)), max(K, 1)
        if self._mode == "channel":
            return scale.reshape(rows, 1), max(K, 1)
        M = shape[-2]
        B = math.prod(shape[:-2])
        s = scale.reshape(B, scale.shape[-2], scale.shape[-1])
        s = s.repeat_interleave(self._R, dim=1)[:, :M] if torch_mode else np.repeat(s, self._R, axis=1)[:, :M]
        s = s.reshape(rows, scale.shape[-1])
        return (s.contiguous() if torch_mode else np.ascontiguousarray(s)), self._C

    # ---- the codec hooks ------------------------------------------------------------------
    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        torch_mode = _arrays.is_torch(x2d)
        rows, K = x2d.shape
        nbytes = self.row_bytes(K)
        if torch_mode:
            torch = _torch()
            out = torch.empty((rows, nbytes), dtype=torch.uint8, device=x2d.device)
            flags = torch.zeros(2, dtype=torch.int32, device=x2d.device)
        else:
            out = np.empty((rows, nbytes), dtype=np.uint8)
            flags = np.zeros(2, dtype=np.int64)
        aux: dict[str, Any] = {}
        srows, cb = None, 1
        if self._mode is not None:
            aux["scale"] = self._compute_scale(x2d, shape, backend)
            srows, cb = self._row_scales(aux["scale"], shape)
        if rows and K:
            get_kernel(self.family, backend, "encode")(x2d, srows, cb, self._encoding, out, flags)
            f = [int(v) for v in (flags.tolist() if torch_mode else flags)]
            if f[0] or f[1]:
                self._raise_refused(x2d, srows, cb, shape, nan=bool(f[0]))
        return out, aux

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        K = shape[-1]
        rows = data2d.shape[0]
        if _arrays.is_torch(data2d):
            out = _torch().empty((rows, K), dtype=_torch().float32, device=data2d.device)
        else:
            out = np.empty((rows, K), dtype=np.float32)
        srows, cb = None, 1
        if self._mode is not None:
            srows, cb = self._row_scales(aux["scale"], shape)
        if rows and K:
            get_kernel(self.family, backend, "decode")(data2d, srows, cb, self._encoding, out)
        return out

    def _raise_refused(self, x2d: Any, srows: Any, cb: int, shape: tuple[int, ...], *, nan: bool) -> None:
        """Name the first refused element by its index in the input (host side: the error path)."""
        x = _arrays.to_numpy(x2d)
        fmt = self._fmt
        if nan:
            bad = np.isnan(x)
        else:
            v = x
            if srows is not None:
                s = _arrays.to_numpy(srows)
                with np.errstate(all="ignore"):
                    v = np.where(np.isfinite(x), x / s[:, np.arange(x.shape[1]) // cb], x)
            lo, hi = self._encoding.clamp_range
            with np.errstate(invalid="ignore"):
                bad = ~np.isnan(v) & ((v > hi) | (v < lo) | ((v == 0) & (not getattr(fmt, "zero", True))))
                if not bad.any():  # values that only leave the range by rounding up
                    bad = ~np.isnan(v) & (np.abs(v) >= hi)
        flat = int(np.flatnonzero(bad)[0]) if bad.any() else 0
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        if nan:
            why = "has no NaN" if not fmt.has_nan else "has a NaN, but this codec refuses NaN input"
            msg = f"input has NaN at index {idx}, but on_nan='raise' ({fmt.name} {why})"
        else:
            msg = (f"input value {x.reshape(-1)[flat]!r} at index {idx} is outside the range of {fmt.name} "
                   f"[{self._encoding.clamp_range[0]}, {fmt.max}] and overflow='raise'")
        raise RangeError(f"{self.codec_id}: {msg}; nothing was encoded")

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        out = []
        for cfg in ({}, {"scale": "channel"}, {"scale": "tensor"}, {"scale": "block:2x8"}):
            try:
                cls(**cfg)
            except ConfigError:
                continue  # e.g. E8M0 cannot be scaled
            out.append(cfg)
        return out

    # ---- contract details the harness checks ------------------------------------------------
    def _grid(self) -> np.ndarray:
        """Sorted finite values the encoder can produce (float64; ±0 merged)."""
        v = self._fmt.values()
        v = v[np.isfinite(v)]
        if isinstance(self._fmt, IntFormat) and self._fmt.symmetric:
            v = v[v != self._fmt.min - 1]
        return np.unique(np.where(v == 0, 0.0, v))

    def input_policy(self) -> dict[str, str]:
        enc, fmt = self._encoding, self._fmt
        zero_less = not getattr(fmt, "zero", True)
        if zero_less:  # zero is out of range: the smallest value when scaled/saturating
            negzero = "saturate" if self._mode else enc.overflow
        else:
            negzero = "keep" if getattr(fmt, "has_negative_zero", False) else "zero"
        return {
            "nan": enc.on_nan,
            "inf": enc.overflow,
            "overflow": "saturate" if self._mode else enc.overflow,
            "negative": "encode" if fmt.signed else ("saturate" if self._mode else enc.overflow),
            "negative_zero": negzero,
            "subnormal": "encode",
        }

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """Half the local spacing of the grid (round to nearest), the distance to the nearest end
        for saturated values, and, when scaled, the float32 errors of ``x / s`` and ``code * s``.
        ``inf`` where the policy makes the result non-finite (or refuses it)."""
        x = np.asarray(x, dtype=np.float32)
        G = self._grid()
        half_top = (G[-1] - G[-2]) / 2 if G.size > 1 else 0.5
        clamped = np.zeros(x.shape)
        if self._mode is None:
            v = x.astype(np.float64)
        else:
            srows, cb = self._row_scales(_arrays.to_numpy(q.aux["scale"]), x.shape)
            s = srows[:, np.arange(x.shape[-1]) // cb].reshape(x.shape) if x.size else np.ones(x.shape, np.float32)
            with np.errstate(all="ignore"):
                vs = (x / s).astype(np.float32).astype(np.float64)
                v = np.clip(vs, G[0], G[-1])  # the encoder's clamp, and how far it moved x
                clamped = np.where(vs != v, np.abs(x.astype(np.float64) - v * s), 0.0) / s
        i = np.clip(np.searchsorted(G, v, side="right") - 1, 0, G.size - 1)
        hi = G[np.minimum(i + 1, G.size - 1)]
        bound = np.where(v <= G[0], G[0] - v, np.where(v >= G[-1], v - G[-1], (hi - G[i]) / 2)) + clamped
        if self._encoding.overflow != "saturate":
            fmt = self._fmt
            nonfinite = (v >= G[-1] + half_top) | (fmt.signed & (v <= G[0] - half_top))
            if not fmt.signed:
                nonfinite |= v < 0
            if not getattr(fmt, "zero", True):
                nonfinite |= v == 0
            bound = np.where(nonfinite, np.inf, bound)
        if self._mode is not None:
            # fl(x/s) is off by eps/2 relative, or 2**-150 absolute if it underflows (times s
            # after decoding); fl(code*s) by eps/2 relative or 2**-150 absolute
            eps = 2.0 ** -23
            bound = bound * s * (1 + eps) + eps * np.abs(x.astype(np.float64)) + 2.0 ** -149 * (1 + s)
        return np.where(np.isfinite(x), bound, np.inf)

    def interesting_values(self) -> np.ndarray:
        G = self._grid()
        mids = (G[1:] + G[:-1]) / 2
        top = G[-1] - G[-2] if G.size > 1 else 1.0
        cand = np.concatenate([G, mids, [G[-1] + top / 2, G[-1] + top, -G[-1] - top / 2]]).astype(np.float32)
        cand = np.concatenate([cand, np.nextafter(cand, np.float32(np.inf)), np.nextafter(cand, np.float32(-np.inf))])
        cand = np.unique(cand[np.isfinite(cand)])
        if cand.size > 768:  # keep the ends, subsample the middle
            keep = np.linspace(0, cand.size - 1, 768).astype(int)
            cand = np.unique(np.concatenate([cand[keep], cand[:32], cand[-32:]]))
        return cand


def _torch() -> Any:
    import torch

    return torch


def _amax(a: Any, axes: tuple[int, ...], torch_mode: bool) -> Any:
    """Max over ``axes``; 0 for empty reductions."""
    if torch_mode:
        if a.numel():
            return a.amax(dim=axes)
        return _torch().zeros([s for i, s in enumerate(a.shape) if i not in axes], dtype=a.dtype, device=a.device)
    return a.max(axis=axes, initial=np.float32(0))


def _pad(t: Any, shape: tuple[int, ...], torch_mode: bool) -> Any:
    if tuple(t.shape) == shape:
        return t
    if torch_mode:
        out = _torch().zeros(shape, dtype=t.dtype, device=t.device)
    else:
        out = np.zeros(shape, dtype=t.dtype)
    out[: t.shape[0], : t.shape[1], : t.shape[2]] = t
    return out


class MiniFloat(ElementCodec, codec_id="minifloat"):
    """Any small binary float format ExMy (1–8 exponent bits, 0–10 mantissa bits), element-wise.

    Parameters
    ----------
    ebits, mbits, bias, signed, special, subnormals, zero:
        the element format, see :class:`lowbit.numerics.FloatFormat`.
    overflow:
        ``"saturate"``, ``"nan"``, ``"inf"`` or ``"raise"`` (default: what ml_dtypes' cast does —
        Inf for IEEE formats, NaN for formats with NaN, saturate otherwise).
    on_nan:
        ``"nan"`` or ``"raise"`` (default ``"nan"`` when the format has a NaN, else ``"raise"``).
    storage_bits:
        bits per code in the packed stream (default: the code width).
    scale:
        ``None``, ``"tensor"``, ``"channel"`` or ``"block:RxC"`` (see the module docstring).

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("minifloat", ebits=3, mbits=2, special="finite")
    >>> q = c.encode(np.array([0.3, -28.0, 100.0, 0.0625], np.float32))
    >>> q.data.tobytes().hex(), c.decode(q).tolist()    # four 6-bit codes in three bytes
    ('c5ff05', [0.3125, -28.0, 28.0, 0.0625])
    """

    def __init__(self, *, ebits: int = 4, mbits: int = 3, bias: int | None = None, signed: bool = True,
                 special: str = "ieee", subnormals: bool | None = None, zero: bool = True,
                 overflow: str | None = None, on_nan: str | None = None, storage_bits: int | None = None,
                 scale: str | None = None) -> None:
        given = dict(ebits=ebits, mbits=mbits, bias=bias, signed=signed, special=special,
                     subnormals=subnormals, zero=zero)
        given.update(_apply_preset(self, given, MiniFloat.__init__))
        fmt = FloatFormat(**given)
        pd = getattr(self, "preset_defaults", {})
        overflow = pd.get("overflow") if overflow is None else overflow
        storage_bits = pd.get("storage_bits") if storage_bits is None else storage_bits
        self.ebits, self.mbits, self.bias, self.signed = fmt.ebits, fmt.mbits, fmt.bias, fmt.signed
        self.special, self.subnormals, self.zero = fmt.special.value, fmt.subnormals, fmt.zero
        self._setup(fmt, overflow, on_nan, storage_bits, scale)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        if cls.preset:
            return super().examples()
        return [
            {"ebits": 4, "mbits": 3, "special": "fn"},
            {"ebits": 3, "mbits": 2, "special": "finite", "scale": "channel"},
            {"ebits": 5, "mbits": 10},
            {"ebits": 8, "mbits": 10, "bias": 130, "subnormals": False},
            {"ebits": 2, "mbits": 0, "special": "finite", "signed": False},
            {"ebits": 4, "mbits": 2, "special": "fnuz", "overflow": "saturate", "scale": "block:3x4"},
            {"ebits": 6, "mbits": 1, "storage_bits": 11},
        ]


class Integer(ElementCodec, codec_id="integer"):
    """Small integers (1–16 bits, two's complement or unsigned), element-wise.

    Values are rounded half to even and saturated (``overflow="saturate"``, the default) or
    refused (``"raise"``); integers have no NaN, so NaN input raises. With ``scale=...`` this is
    symmetric absmax quantization: ``x / (amax / max)`` is rounded, e.g. per-channel int8, and
    ``symmetric`` defaults to True (codes −max … max; the most negative code is never written).

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("integer", bits=4)
    >>> c.decode(c.encode(np.array([2.5, 3.5, -9.0, 7.6], np.float32))).tolist()
    [2.0, 4.0, -8.0, 7.0]
    """

    generic_spec = "integer"

    def __init__(self, *, bits: int = 8, signed: bool = True, symmetric: bool | None = None,
                 overflow: str = "saturate", on_nan: str = "raise", storage_bits: int | None = None,
                 scale: str | None = None) -> None:
        if symmetric is None:  # absmax scaling is symmetric: -max ... max around zero
            symmetric = scale is not None and signed and bits >= 2
        given = _apply_preset(self, dict(bits=bits, signed=signed, symmetric=symmetric), Integer.__init__)
        fmt = IntFormat(**given)
        self.bits, self.signed, self.symmetric = fmt.bits, fmt.signed, fmt.symmetric
        self._setup(fmt, overflow, on_nan, storage_bits, scale)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        if cls.preset:
            return super().examples()
        return [{"bits": 3}, {"bits": 8, "signed": False, "scale": "channel"}, {"bits": 5, "symmetric": True, "scale": "tensor"}]


def _apply_preset(self: Codec, given: dict[str, Any], init: Any) -> dict[str, Any]:
    """Check that a preset's fixed parameters are not overridden, and fill them in."""
    defaults = {n: p.default for n, p in inspect.signature(init).parameters.items() if p.kind is p.KEYWORD_ONLY}
    out = dict(given)
    for k, v in self.preset.items():
        if k in given and given[k] != defaults[k] and given[k] != v:
            raise ConfigError(
                f"{self.codec_id}: {k}: the preset fixes {k}={v!r}, got {given[k]!r} "
                f"(use get_codec('{type(self).__mro__[1].codec_id}', ...) for other formats)"
            )
        out[k] = v
    return out


# ---- presets: the formats people name ------------------------------------------------------------
# Each is the generic class with its format fixed. Policies default to what the format's
# reference cast does (ml_dtypes); scale formats (UE4M3, UE5M3) saturate, as their users do.


class FP8E4M3(MiniFloat, codec_id="fp8_e4m3", preset={"ebits": 4, "mbits": 3, "special": "fn"}):
    """OCP FP8 E4M3 (``float8_e4m3fn``): max 448, no Inf, NaN at ``S.1111.111``, one byte each.

    Overflow becomes NaN by default, as in ml_dtypes; ``overflow="saturate"`` gives ±448 as
    torch ≥ 2.13 and NVIDIA's ``satfinite`` conversions do.

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("fp8_e4m3")
    >>> c.encode(np.array([1.0, -2.5, 464.0, 500.0], np.float32)).data.tobytes().hex()
    '38c27e7f'
    >>> lowbit.get_codec("fp8_e4m3", overflow="saturate").encode(np.array([500.0], np.float32)).data[0]
    np.uint8(126)
    """


class FP8E5M2(MiniFloat, codec_id="fp8_e5m2", preset={"ebits": 5, "mbits": 2}):
    """OCP FP8 E5M2 (``float8_e5m2``): IEEE-like, max 57344, ±Inf and NaN, one byte each.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("fp8_e5m2").encode(np.array([1.0, 61440.0, -np.inf], np.float32)).data.tobytes().hex()
    '3c7cfc'
    """


class FP6E2M3(MiniFloat, codec_id="fp6_e2m3", preset={"ebits": 2, "mbits": 3, "special": "finite"}):
    """OCP MX FP6 E2M3 (``float6_e2m3fn``): max 7.5, no Inf or NaN; four codes in three bytes.

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("fp6_e2m3")
    >>> c.decode(c.encode(np.array([0.1, 1.0625, -9.0, 7.4], np.float32))).tolist()
    [0.125, 1.0, -7.5, 7.5]
    """


class FP6E3M2(MiniFloat, codec_id="fp6_e3m2", preset={"ebits": 3, "mbits": 2, "special": "finite"}):
    """OCP MX FP6 E3M2 (``float6_e3m2fn``): max 28, no Inf or NaN; four codes in three bytes.

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("fp6_e3m2")
    >>> c.decode(c.encode(np.array([0.03, 1.1, -30.0, 5.0], np.float32))).tolist()
    [0.0, 1.0, -28.0, 5.0]
    """


class FP4E2M1(MiniFloat, codec_id="fp4_e2m1", preset={"ebits": 2, "mbits": 1, "special": "finite"}):
    """OCP MX FP4 E2M1 (``float4_e2m1fn``): values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives;
    two codes per byte, the even element in the low nibble.

    >>> import numpy as np, lowbit
    >>> q = lowbit.get_codec("fp4_e2m1").encode(np.array([6.0, -0.5, 1.25, 2.5], np.float32))
    >>> q.data.tobytes().hex()    # 6 -> 0x7 (low), -0.5 -> 0x9 (high)
    '9742'
    """


class E8M0(MiniFloat, codec_id="e8m0", preset={"ebits": 8, "mbits": 0, "signed": False, "special": "fn", "zero": False}):
    """E8M0 (``float8_e8m0fnu``), the MX block scale: powers of two 2**-127 … 2**127, no zero,
    no sign, 0xFF is NaN. Rounds to the nearest power of two (ties up: with no mantissa bits
    the even neighbour is always the larger one); 0 and negatives are out of range.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("e8m0").encode(np.array([1.0, 1.5, 3.0, 0.25], np.float32)).data.tolist()
    [127, 128, 129, 125]
    """


class UE4M3(MiniFloat, codec_id="ue4m3", preset={"ebits": 4, "mbits": 3, "signed": False, "special": "fn"}):
    """UE4M3 (``float7_e4m3fnu``), the NVFP4 block scale: E4M3 without the sign, stored one per
    byte with the top bit clear (so each byte is also a valid ``float8_e4m3fn``); 0x7F is NaN.
    Saturates by default; bytes with the top bit set decode as NaN.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("ue4m3").encode(np.array([1.0, 448.0, 1000.0, 0.0], np.float32)).data.tolist()
    [56, 126, 126, 0]
    """

    preset_defaults = {"storage_bits": 8, "overflow": "saturate"}


class UE5M3(MiniFloat, codec_id="ue5m3", preset={"ebits": 5, "mbits": 3, "signed": False, "special": "fn"}):
    """UE5M3 (``float8_e5m3fnu``), the wider-range block scale proposed for FP4 training
    (Hu, Luschi, Balanca 2025): unsigned, bias 15, max 114688, subnormals down to 2**-17; the
    all-ones byte is reserved as NaN, as in E8M0 and UE4M3. Saturates by default.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("ue5m3").encode(np.array([1.0, 114688.0, 1e6, 2.0**-17], np.float32)).data.tolist()
    [120, 254, 254, 1]
    """

    preset_defaults = {"overflow": "saturate"}


class Int8(Integer, codec_id="int8", preset={"bits": 8}):
    """Signed 8-bit integers, rounded half to even and saturated; with ``scale="channel"``,
    symmetric per-channel absmax int8.

    >>> import numpy as np, lowbit
    >>> x = np.array([[0.5, -1.0, 0.25, 0.0]], np.float32)
    >>> q = lowbit.get_codec("int8", scale="channel").encode(x)
    >>> q.data.view(np.int8).tolist(), q.aux["scale"].tolist()
    ([[64, -127, 32, 0]], [0.007874015718698502])
    """


class Int4(Integer, codec_id="int4", preset={"bits": 4}):
    """Signed 4-bit integers (−8 … 7), two per byte, the even element in the low nibble.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("int4").encode(np.array([1.0, -1.0, 7.0, -8.0], np.float32)).data.tobytes().hex()
    'f187'
    """


class Int2(Integer, codec_id="int2", preset={"bits": 2}):
    """Signed 2-bit integers (−2 … 1), four per byte, element 0 in the lowest two bits.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("int2").encode(np.array([1.0, -1.0, -2.0, 0.0], np.float32)).data.tobytes().hex()
    '2d'
    """


def _no_overflow(s: Any, vmax: Any, xp: Any) -> Any:
    """``s`` stepped one float32 ulp towards 0 where ``vmax * s`` overflows to Inf: a block whose
    absmax is near FLT_MAX then decodes its largest code to a finite value (saturation)."""
    with np.errstate(over="ignore"):
        over = xp.isinf(s * vmax) & xp.isfinite(s)
    down = xp.nextafter(s, xp.zeros_like(s))
    return xp.where(over, down, s)
