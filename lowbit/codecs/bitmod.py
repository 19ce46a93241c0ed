"""BitMoD (Chen et al., HPCA 2025): per-group mixture of element datatypes — FP3/FP4 with the
redundant negative zero remapped to a special value (spec/bitmod.toml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout

__all__ = ["BitMoD", "TYPES"]

# magnitudes of the sign-magnitude codes (code & (2**(b-1) - 1)), and each type's special value,
# written where the negative zero (code 2**(b-1)) would be. Units: FP4 E2M1 (max 6) / FP3 (max 4).
_MAGS = {4: (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), 3: (0.0, 1.0, 2.0, 4.0)}
TYPES = {  # name -> special value, in the order the selection tries them (ties: the first)
    4: {"fp4_er_pos": 5.0, "fp4_er_neg": -5.0, "fp4_ea_pos": 8.0, "fp4_ea_neg": -8.0},
    3: {"fp3_er_pos": 3.0, "fp3_er_neg": -3.0, "fp3_ea_pos": 6.0, "fp3_ea_neg": -6.0},
}


@dataclass(frozen=True)
class Tables:
    """Per type: ``lut[T, code]`` (decode), sorted ``vals[T]``, their ``codes_of[T]``,
    midpoints ``mids[T]`` (assignment), and the largest positive / negative magnitudes."""

    lut: np.ndarray
    vals: np.ndarray
    codes_of: np.ndarray
    mids: np.ndarray
    pmax: np.ndarray
    nmax: np.ndarray


def tables(bits: int) -> Tables:
    mags, half = _MAGS[bits], 1 << (bits - 1)
    lut, vals, codes, mids, pmax, nmax = [], [], [], [], [], []
    for special in TYPES[bits].values():
        row = [mags[c] if c < half else (special if c == half else -mags[c - half]) for c in range(2 * half)]
        order = sorted(range(2 * half), key=lambda c: row[c])
        v = [row[c] for c in order]
        lut.append(row)
        vals.append(v)
        codes.append(order)
        mids.append([(a + b) / 2 for a, b in zip(v, v[1:])])
        pmax.append(max(v))
        nmax.append(-min(v))
    f = np.float32
    return Tables(np.array(lut, f), np.array(vals, f), np.array(codes, np.int64), np.array(mids, f),
                  np.array(pmax, np.float64), np.array(nmax, np.float64))


class BitMoD(Codec, codec_id="bitmod"):
    """BitMoD: every group of ``group_size`` weights along a row picks one of four element types —
    FP4 (E2M1) or FP3 (values 0, ±1, ±2, ±4) whose redundant negative-zero code is remapped to a
    special value: extra resolution ``er_pos``/``er_neg`` (+5/-5 for FP4, ±3 for FP3) or extra
    asymmetry ``ea_pos``/``ea_neg`` (±8 for FP4, ±6 for FP3) — with a float16 scale, choosing the
    type with the smallest squared error.

    Layout: codes are the types' sign-magnitude codes (FP4: the OCP E2M1 nibble, ``1000`` = the
    special value), packed LSB-first; ``aux["scale"]`` float16 and ``aux["dtype"]`` uint8 (0–3, the
    order above) per group. The scale of type T is ``RD(max(max(x, 0) / pmax_T, -min(x, 0) / nmax_T))``
    on the float16 grid (no clipping of the larger side); values are rounded to the nearest value,
    ties to the lower one, as BitMoD does. The choice is made twice — for x, then for the decoded
    group, whose choice is stored — so re-encoding a decoded tensor reproduces it exactly.

    >>> import numpy as np, lowbit
    >>> x = np.array([[0.1, 0.2, 0.3, 0.5, 0.45, -0.1, 0.0, 0.8]], np.float32)
    >>> q = lowbit.get_codec("bitmod", bits=4, group_size=8).encode(x)
    >>> q.aux["dtype"].tolist(), [round(float(v), 3) for v in lowbit.decode(q)[0]]
    ([[0]], [0.133, 0.2, 0.267, 0.533, 0.4, -0.133, 0.0, 0.8])
    """

    def __init__(self, *, bits: int = 4, group_size: int = 128) -> None:
        if bits not in (3, 4):
            raise ConfigError(f"{self.codec_id}: bits: expected 3 (FP3 family) or 4 (FP4 family), got {bits!r}")
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
            raise ConfigError(f"{self.codec_id}: group_size: expected a positive int, got {group_size!r}")
        self.bits, self.group_size = bits, group_size

    @property
    def tables(self) -> Tables:
        return _TABLES[self.bits]

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec("bitmod", w=self.bits)

    def _ng(self, K: int) -> int:
        return -(-K // self.group_size)

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        ash = tuple(shape[:-1]) + (self._ng(shape[-1]),)
        return {"scale": (ash, "float16"), "dtype": (ash, "uint8")}

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str) -> tuple[Any, dict[str, Any]]:
        xh = _arrays.to_numpy(x2d)
        if np.isnan(xh).any():
            flat = int(np.flatnonzero(np.isnan(xh))[0])
            idx = tuple(int(i) for i in np.unravel_index(flat, shape))
            raise RangeError(f"{self.codec_id}: input has NaN at index {idx}, but the BitMoD types have no NaN; nothing was encoded")
        rows, K = xh.shape
        t1, s1, t2, s2 = get_kernel("bitmod", "cpu", "select")(xh, self.group_size, self.tables)
        torch_mode = _arrays.is_torch(x2d)
        out = (_torch().zeros((rows, self.row_bytes(K)), dtype=_torch().uint8, device=x2d.device) if torch_mode
               else np.zeros((rows, self.row_bytes(K)), np.uint8))
        if rows and K:
            n = lambda a: _arrays.native(a, backend)  # noqa: E731
            get_kernel("bitmod", backend, "encode")(x2d, n(s1), n(t1), n(s2), n(t2), self.group_size, self.tables,
                                                    self.bits, out)
        ash = tuple(shape[:-1]) + (self._ng(K),)
        return out, {"scale": _arrays.native(s2.astype(np.float16).reshape(ash), backend),
                     "dtype": _arrays.native(t2.reshape(ash), backend)}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        rows, K = data2d.shape[0], shape[-1]
        torch_mode = _arrays.is_torch(data2d)
        out = (_torch().empty((rows, K), dtype=_torch().float32, device=data2d.device) if torch_mode
               else np.empty((rows, K), np.float32))
        if rows and K:
            s = aux["scale"].reshape(rows, -1)
            s = s.to(_torch().float32) if torch_mode else s.astype(np.float32)
            get_kernel("bitmod", backend, "decode")(data2d, s, aux["dtype"].reshape(rows, -1), self.group_size,
                                                    self.tables, self.bits, out)
        return out

    # ---- what the harness checks ------------------------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"bits": 4, "group_size": 8}, {"bits": 3, "group_size": 16}]

    def input_policy(self) -> dict[str, str]:
        return {"nan": "raise", "inf": "saturate", "overflow": "saturate", "negative": "encode",
                "negative_zero": "zero", "subnormal": "encode"}

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """The distance from x to the nearest value of the best type for its group (the pass-1
        choice, recomputed from x; the stored pass-2 labels decode to exactly those values),
        plus the float32 division's rounding; Inf for non-finite x."""
        x = np.asarray(x, np.float32)
        if not x.size:
            return np.zeros(x.shape)
        K = x.shape[-1]
        x2 = np.ascontiguousarray(x.reshape(-1, K))
        t1, s1, _, _ = get_kernel("bitmod", "cpu", "select")(x2, self.group_size, self.tables)
        g = np.arange(K) // self.group_size
        se, te = s1.astype(np.float64)[:, g], t1.astype(np.int64)[:, g]
        V = self.tables.vals.astype(np.float64)[te]  # (rows, K, nv)
        xd = x2.astype(np.float64)
        d = np.abs(V * se[..., None] - xd[..., None]).min(-1)
        b = np.where(np.isfinite(xd), d + 2.0**-22 * np.abs(xd) + 2.0**-149, np.inf)
        return b.reshape(x.shape)

    def interesting_values(self) -> np.ndarray:
        v = self.tables.vals.reshape(-1).astype(np.float64)
        m = self.tables.mids.reshape(-1).astype(np.float64)
        return np.unique(np.concatenate([v, m, [0.0]]).astype(np.float32))


_TABLES = {b: tables(b) for b in (3, 4)}


def _torch() -> Any:
    import torch

    return torch
