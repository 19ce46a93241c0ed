"""Non-uniform codes: a lookup table of ``2**bits`` levels per group, fitted by
sensitivity-weighted k-means — the SqueezeLLM / KVQuant "nuq" format (spec/nonuniform.toml)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError, ShapeError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from . import _groups as G

__all__ = ["NonUniform"]

_LUT_DTYPES = {"float16": 65504.0, "float32": float(np.finfo(np.float32).max)}


class NonUniform(Codec, codec_id="nonuniform"):
    """Per-group lookup tables of ``2**bits`` float16 levels; each element stores the index of the
    nearest level (SqueezeLLM: one table per output channel; KVQuant: per channel of the keys).

    Parameters
    ----------
    bits:
        1 … 8 (a table of 2**bits levels).
    group_size, axis:
        the groups sharing a table (see ``int``); ``group_size=None, axis=-1`` is one table per
        row, SqueezeLLM's per-channel layout.
    lut_dtype:
        "float16" (SqueezeLLM, KVQuant) or "float32".
    iterations:
        Lloyd steps of the k-means (fixed, so every run gives the same table).

    ``encode(x, importance=w)`` weights the k-means by ``w`` (per column ``(K,)`` or per element,
    ``x.shape``): SqueezeLLM's sensitivity (Fisher information) weighting. Fitting starts from
    2**bits levels evenly spaced over [min, max] of the group; a group with at most 2**bits
    distinct values gets exactly those values. The table is then made canonical: levels rounded
    to ``lut_dtype``, sorted, duplicates and levels no element uses dropped, the rest +Inf. So
    re-encoding a decoded tensor finds the same table and codes. The fitting runs on the CPU
    (Numba, float64 sums in a fixed order) for both backends; the GPU kernels do the assignment,
    packing and decoding.

    >>> import numpy as np, lowbit
    >>> x = np.array([[0.0, 0.1, 0.11, 0.9, 1.0, 1.02, 5.0, 5.1]], np.float32)
    >>> q = lowbit.get_codec("nonuniform", bits=2).encode(x)
    >>> q.aux["lut"].shape, q.aux["lut"][0, 0].tolist()    # one table for the row; a level unused
    ((1, 1, 4), [0.07000732421875, 0.97314453125, 5.05078125, inf])
    >>> [round(float(v), 2) for v in lowbit.decode(q)[0]]
    [0.07, 0.07, 0.07, 0.97, 0.97, 0.97, 5.05, 5.05]
    """

    encode_kwargs = ("importance",)

    def __init__(self, *, bits: int = 4, group_size: int | None = None, axis: int = -1, lut_dtype: str = "float16",
                 iterations: int = 16) -> None:
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise ConfigError(f"{self.codec_id}: bits: expected an int in [1, 8], got {bits!r}")
        G.check_group_config(self.codec_id, group_size, axis, "float16")
        if lut_dtype not in _LUT_DTYPES:
            raise ConfigError(f"{self.codec_id}: lut_dtype: expected one of {sorted(_LUT_DTYPES)}, got {lut_dtype!r}")
        if not isinstance(iterations, int) or isinstance(iterations, bool) or not 0 <= iterations <= 1000:
            raise ConfigError(f"{self.codec_id}: iterations: expected an int in [0, 1000], got {iterations!r}")
        self.bits, self.group_size, self.axis, self.lut_dtype, self.iterations = bits, group_size, axis, lut_dtype, iterations

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec("nonuniform", w=self.bits)

    def geometry(self, shape: tuple[int, ...]) -> G.Geometry:
        return G.Geometry.of(shape, self.group_size, self.axis)

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        geo = self.geometry(shape)
        return {"lut": (geo.aux_shape(shape, self.axis) + (1 << self.bits,), self.lut_dtype)}

    def _round_lut(self, cent: np.ndarray) -> np.ndarray:
        """float64 centroids → the stored precision (float32 values), clamped to its range."""
        m = _LUT_DTYPES[self.lut_dtype]
        c = np.clip(cent, -m, m)
        return c.astype(np.float16).astype(np.float32) if self.lut_dtype == "float16" else c.astype(np.float32)

    def _importance(self, importance: Any, shape: tuple[int, ...]) -> np.ndarray:
        K = shape[-1]
        if importance is None:
            return np.ones(shape, np.float32)
        w = np.asarray(_arrays.to_numpy(importance), dtype=np.float64)
        if w.shape == (K,):
            w = np.broadcast_to(w, shape)
        if w.shape != tuple(shape):
            raise ShapeError(f"{self.codec_id}: importance: expected shape ({K},) or {tuple(shape)}, got {w.shape}")
        if not (np.isfinite(w) & (w >= 0)).all():
            raise RangeError(f"{self.codec_id}: importance: expected finite non-negative weights")
        return np.ascontiguousarray(w, dtype=np.float32)

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, importance: Any = None) -> tuple[Any, dict[str, Any]]:
        w = self._importance(importance, shape)
        torch_mode = _arrays.is_torch(x2d)
        xh = _arrays.to_numpy(x2d)
        if np.isnan(xh).any():
            flat = int(np.flatnonzero(np.isnan(xh))[0])
            idx = tuple(int(i) for i in np.unravel_index(flat, shape))
            raise RangeError(f"{self.codec_id}: input has NaN at index {idx}, but a lookup table has no NaN; nothing was encoded")
        geo = self.geometry(shape)
        k = 1 << self.bits
        gcol_h = geo.gcol(np)
        rows, K = x2d.shape
        lut = (get_kernel("nonuniform", "cpu", "fit")(xh, w.reshape(rows, K), geo, gcol_h, k, self.iterations, self._round_lut)
               if rows and K else np.zeros(geo.n_param_rows * geo.NGc * k, np.float32))
        out = (_torch().zeros((rows, self.row_bytes(K)), dtype=_torch().uint8, device=x2d.device) if torch_mode
               else np.zeros((rows, self.row_bytes(K)), np.uint8))
        lut_be = _arrays.native(lut, backend)
        if rows and K:
            get_kernel("nonuniform", backend, "encode")(x2d, lut_be, geo, _arrays.native(gcol_h, backend), self.bits, out)
        stored = lut.astype(self.lut_dtype).reshape(geo.aux_shape(shape, self.axis) + (k,))
        return out, {"lut": _arrays.native(stored, backend)}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        geo = self.geometry(shape)
        rows, K = data2d.shape[0], shape[-1]
        torch_mode = _arrays.is_torch(data2d)
        out = (_torch().empty((rows, K), dtype=_torch().float32, device=data2d.device) if torch_mode
               else np.empty((rows, K), np.float32))
        if rows and K:
            lut = aux["lut"]
            lut = lut.to(_torch().float32) if torch_mode else lut.astype(np.float32)
            get_kernel("nonuniform", backend, "decode")(data2d, lut.reshape(-1), geo,
                                                        _arrays.native(geo.gcol(np), backend), self.bits, out)
        return out

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"bits": 3}, {"bits": 2, "group_size": 8, "lut_dtype": "float32"}, {"bits": 4, "group_size": 4, "axis": -2}]

    def input_policy(self) -> dict[str, str]:
        return {"nan": "raise", "inf": "nearest", "overflow": "saturate" if self.lut_dtype == "float16" else "encode",
                "negative": "encode", "negative_zero": "nearest", "subnormal": "encode"}

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """The distance from x to the nearest level of its table (what the nearest-level rule
        achieves), plus float32 rounding slack; Inf where x is not finite."""
        x = np.asarray(x, np.float32)
        lut = _arrays.to_numpy(q.aux["lut"]).astype(np.float64).reshape(-1, 1 << self.bits)
        geo = self.geometry(x.shape)
        if not x.size:
            return np.zeros(x.shape)
        r = np.arange(geo.rows)
        gr = (r // geo.M) * geo.NGr + (r % geo.M) // geo.Gr
        gidx = (gr[:, None] * geo.NGc + geo.gcol(np)[None, :]).reshape(-1)
        L = lut[gidx]  # (n, k)
        xd = x.astype(np.float64).reshape(-1, 1)
        with np.errstate(invalid="ignore"):
            d = np.where(np.isfinite(L), np.abs(L - xd), np.inf).min(axis=1)
        bound = d * (1 + 2.0**-22) + 2.0**-23 * np.abs(xd[:, 0]) + 2.0**-149
        return np.where(np.isfinite(x.reshape(-1)), bound, np.inf).reshape(x.shape)

    def interesting_values(self) -> np.ndarray:
        return np.array([0.0, -0.0, 1.0, -1.0, 0.5, 65504.0, -65504.0, 1e-3], np.float32)


def _torch() -> Any:
    import torch

    return torch
