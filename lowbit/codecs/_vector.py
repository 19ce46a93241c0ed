"""Shared machinery of the per-vector KV codecs (TurboQuant, OCTOPUS): one block = one vector
of ``dim`` elements along the last axis, a float16 norm, seeded rotations, NaN checks, the
harness hooks and the attention-on-codes entry points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError
from ..layout import BlockLayout, Field
from . import _rotations as R

__all__ = ["VectorCodec", "Rotation", "write_u16", "torch"]


def torch() -> Any:
    import torch as t

    return t


class Rotation:
    """The seeded rotation of one instance: dense Haar ``P`` (y = P x) or RHT ``signs``."""

    def __init__(self, kind: str, d: int, seed: int, instance: int = 0) -> None:
        self.kind, self.d = kind, d
        self.rht = kind == "rht"
        tag = 16 * instance
        if self.rht:
            self.signs = R.signs(d, seed, R.TAG_SIGNS + tag)
            self.P = np.zeros((1, 1), np.float32)
        else:
            self.P = R.haar(d, seed, R.TAG_ROTATION + tag)
            self.signs = np.ones(1, np.float32)
        # 1/sqrt(d) rounded once to float32 (exact when d is a power of 4)
        self.rscale = np.float32(1.0 / np.sqrt(np.float64(d)))

    def matrix64(self) -> np.ndarray:
        """The exact float64 matrix the float32 kernels apply (y ≈ M x); computed once."""
        m = self.__dict__.get("_m64")
        if m is None:
            if not self.rht:
                m = self.P.astype(np.float64)
            else:
                m = R.hadamard(self.d) * float(self.rscale) * self.signs.astype(np.float64)[None, :]
            m.setflags(write=False)
            self._m64 = m
        return m

    def args(self, backend: str) -> tuple[Any, Any, bool, Any]:
        return (_dev(self.P, backend), _dev(self.signs, backend), self.rht, self.rscale)


def _dev(a: np.ndarray, backend: str) -> Any:
    if backend == "cpu":
        return a
    return _arrays.gpu_tensor(np.array(a))


def write_u16(out: Any, col: int, h: Any) -> None:
    """Store uint16 values h[v] little-endian at bytes out[v, col:col+2]."""
    if _arrays.is_torch(out):
        out[:, col] = (h & 0xFF).to(out.dtype)
        out[:, col + 1] = ((h >> 8) & 0xFF).to(out.dtype)
    else:
        out[:, col] = (h & 0xFF).astype(np.uint8)
        out[:, col + 1] = (h >> 8).astype(np.uint8)


class VectorCodec(Codec):
    """Base of the per-vector codecs (not a codec itself)."""

    def idempotence(self) -> str:
        # not idempotent here means the decode is off the reconstruction set (an estimator, or a
        # norm that shrinks each round): the harness then checks that encoding is deterministic
        return "bytes" if self.idempotent else "deterministic"

    def _check_dim(self, dim: int) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 8 or dim % 8 or dim > 4096:
            raise ConfigError(f"{self.codec_id}: dim: expected a multiple of 8 in [8, 4096], got {dim!r}")

    def _check_rotation(self, rotation: str, dims: list[int]) -> None:
        if rotation not in ("haar", "rht"):
            raise ConfigError(f"{self.codec_id}: rotation: expected 'haar' or 'rht', got {rotation!r}")
        if rotation == "rht":
            for d in dims:
                if d & (d - 1):
                    raise ConfigError(f"{self.codec_id}: rotation='rht': expected power-of-two dimensions, got {d}")

    def _check_seed(self, seed: int) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ConfigError(f"{self.codec_id}: seed: expected an int in [0, 2**63), got {seed!r}")

    @property
    def block_size(self) -> int:
        return self.dim

    @property
    def type_size(self) -> int:
        return self.layout.type_size

    def _make_layout(self, title: str, fields: list[tuple[str, int, int, str | None]]) -> BlockLayout:
        """fields: (name, bits, count, format) in byte order; each field starts on a byte."""
        out, off = [], 0
        for name, bits, count, fmt in fields:
            f = Field(name=name, bits=bits, count=count, offset=off, format=fmt)
            out.append(f)
            off = f.end
        return BlockLayout(codec_id=self.codec_id, block_size=self.dim, type_size=off, fields=tuple(out),
                           title=title)

    # ---- input checks ----------------------------------------------------------------------
    def _refuse_nonfinite(self, x2d: Any, shape: tuple[int, ...]) -> None:
        """NaN / ±Inf inputs raise RangeError naming the first one's index."""
        if _arrays.is_torch(x2d):
            bad_any = bool((~torch().isfinite(x2d)).any())
            if not bad_any:
                return
            x = _arrays.to_numpy(x2d)
        else:
            x = x2d
            if np.isfinite(x).all():
                return
        flat = int(np.flatnonzero(~np.isfinite(x))[0])
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        what = "NaN" if np.isnan(x.reshape(-1)[flat]) else "Inf"
        raise RangeError(f"{self.codec_id}: input has {what} at index {idx}, but this codec refuses "
                         f"non-finite input (expected finite values); nothing was encoded")

    def _refuse_overflow(self, flags: Any) -> None:
        f = int(flags[0])
        if f:
            raise RangeError(f"{self.codec_id}: a vector's stored norm: expected at most 65504 (float16), got a "
                             "larger one; scale the input down; nothing was encoded")

    # ---- harness hooks -----------------------------------------------------------------------
    def input_policy(self) -> dict[str, str]:
        # overflow: vectors whose norm does not fit float16 raise RangeError
        return {"nan": "raise", "inf": "raise", "overflow": "raise", "negative": "encode", "negative_zero": "encode",
                "subnormal": "encode"}

    def interesting_values(self) -> np.ndarray:
        """Values mixed into the harness' random vectors; ±32 bounds them (norms stay far
        below float16's 65504 for every dim)."""
        v = np.array([0.0, 1e-30, 1e-3, 0.25, 0.5, 1.0, 3.0, 32.0], np.float32)
        return np.concatenate([v, -v])


def split_vectors(x2d: Any, dim: int) -> Any:
    """(rows, K) → (rows·K/dim, dim): consecutive vectors of the last axis (a view)."""
    return x2d.reshape(-1, dim)
