"""Pre-rotation wrapper: an orthogonal rotation of the last axis before any codec — QuaRot's and
ITQ3_S's randomised Hadamard transform, or a dense Haar-random rotation (spec/rotated.toml)."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Iterator, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec, QTensor, get_codec
from ..errors import ConfigError, LowbitError, RangeError, ShapeError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from .qjl import projection_matrix

__all__ = ["Rotated", "QuaRot4", "hadamard_signs", "haar_matrix"]

_PREFIX = "inner."
_LIMIT = 2.0**100  # a rotation block sums at most 2**16 terms: |rotated| < 2**116, finite in float32


@functools.lru_cache(maxsize=64)
def hadamard_signs(seed: int, K: int) -> np.ndarray:
    """The ±1 float32 diagonal of the randomised Hadamard transform (read-only)."""
    bits = np.random.Generator(np.random.PCG64(seed)).integers(0, 2, K)
    s = np.where(bits == 0, 1.0, -1.0).astype(np.float32)
    s.setflags(write=False)
    return s


@functools.lru_cache(maxsize=16)
def haar_matrix(seed: int, K: int) -> np.ndarray:
    """A Haar-random orthogonal ``K × K`` float32 matrix (rows orthonormal; read-only)."""
    G = projection_matrix(seed, K, K).astype(np.float64)
    Q = np.zeros((K, K))
    for i in range(K):
        v = G[i].copy()
        for _ in range(2):  # classical Gram–Schmidt, once more for orthogonality to ~1e-16
            v = v - Q[:i].T @ np.array([np.sum(Q[j] * v) for j in range(i)]) if i else v
        v = v / math.sqrt(np.sum(v * v))
        Q[i] = v if v[i] >= 0 else -v  # the sign fix of a QR with positive diagonal
    out = Q.astype(np.float32)
    out.setflags(write=False)
    return out


class Rotated(Codec, codec_id="rotated"):
    """Any ``codec`` applied to ``x`` rotated along its last axis: ``kind="hadamard"`` (random
    signs, then the fast Walsh–Hadamard transform scaled by 1/sqrt(block)) or ``kind="haar"``
    (a dense Haar-random orthogonal matrix), both from ``seed``, applied to each run of
    ``block`` consecutive elements of a row (a power of two: 128 = one attention head, QuaRot's
    online rotation; 256 = ITQ3_S's block; the row length for a full rotation). Rotating spreads
    outliers over the row, so block scales fit the bulk better (QuaRot, ITQ3_S, SpinQuant).

    Layout: the inner codec's data; its side arrays prefixed ``inner.``; the rotation itself is
    regenerated from the seed, so ``bits_per_element`` is the inner codec's. Decoding decodes the
    inner codec and rotates back. Both rotations run in a fixed float32 order on both backends
    (spec/rotated.toml), so CPU and GPU agree bit for bit; the rotations round, so re-encoding a
    decoded tensor is within the error bound rather than byte-identical.

    ``itq3_s`` (FWHT + GGUF iq3_s) is ``get_codec("rotated", codec="iq3_s")`` where the GGUF codecs
    are installed; :class:`QuaRot4` is the QuaRot-style rotated int4 preset.

    >>> import numpy as np, lowbit
    >>> x = (np.random.default_rng(0).standard_normal((16, 64)) * 0.1).astype(np.float32)
    >>> x[:, 5] = 8.0                                                    # an outlier channel
    >>> plain = lowbit.get_codec("int", bits=4, group_size=32, symmetric=True)
    >>> rot = lowbit.get_codec("rotated", codec=plain.get_config(), kind="hadamard", block=64, seed=1)
    >>> def rmse(c): return round(float(np.sqrt(((lowbit.decode(c.encode(x)) - x) ** 2).mean())), 4)
    >>> rmse(plain), rmse(rot), rot.bits_per_element(x.shape) == plain.bits_per_element(x.shape)
    (0.0685, 0.0485, True)
    """

    def __init__(self, *, codec: str | Mapping[str, Any] = "int", kind: str = "hadamard", block: int = 128,
                 seed: int = 0) -> None:
        inner = get_codec(codec) if isinstance(codec, (str, Mapping)) else None
        if inner is None:
            raise ConfigError(f"{self.codec_id}: codec: expected a codec id or config dict, got {codec!r}")
        if kind not in ("hadamard", "haar"):
            raise ConfigError(f"{self.codec_id}: kind: expected 'hadamard' or 'haar', got {kind!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ConfigError(f"{self.codec_id}: seed: expected an int in [0, 2**63), got {seed!r}")
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 65536 or block & (block - 1):
            raise ConfigError(f"{self.codec_id}: block: expected a power of two in [1, 65536], got {block!r}")
        self._inner = inner
        self.codec = inner.get_config()
        self.kind, self.block, self.seed = kind, block, seed

    family = "rotated"

    @property
    def encode_kwargs(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._inner.encode_kwargs)

    @property
    def inner(self) -> Codec:
        return self._inner

    def backends(self) -> list[str]:
        return self._inner.backends()  # runs on the inner codec's kernels

    @property
    def layout(self) -> BlockLayout:
        n = math.lcm(self._inner.block_size, self.block)
        return BlockLayout.from_spec("rotated", n=n, t=self._inner.type_size * (n // self._inner.block_size))

    def row_bytes(self, K: int) -> int:
        return self._inner.row_bytes(K)

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        try:
            yield
        except LowbitError as e:
            raise type(e)(f"{self.codec_id} (inner codec): {e}") from None

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        with self._named():
            self._inner._check_shape(shape)
        if shape[-1] % self.block:
            raise ShapeError(f"{self.codec_id}: last dimension: expected a multiple of the rotation block {self.block}, "
                             f"got {shape[-1]} (shape {shape})")

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        return {_PREFIX + k: v for k, v in self._inner._aux_spec(shape).items()}

    def rotate(self, x2d: Any, backend: str, *, inverse: bool = False) -> Any:
        """The rotation (or its inverse) of float32 ``x2d[rows, K]`` on ``backend``: each run of
        ``block`` consecutive elements of a row is rotated on its own (a block-diagonal rotation)."""
        shape2 = x2d.shape
        K = self.block
        x2d = x2d.reshape(-1, K)
        out = (_torch().empty(x2d.shape, dtype=_torch().float32, device=x2d.device) if _arrays.is_torch(x2d)
               else np.empty(x2d.shape, np.float32))
        if x2d.shape[0]:
            if self.kind == "hadamard":
                get_kernel("rotated", backend, "hadamard")(x2d, _arrays.native(hadamard_signs(self.seed, K), backend),
                                                           float(np.float32(1 / math.sqrt(K))), inverse, out)
            else:
                get_kernel("rotated", backend, "dense")(x2d, _arrays.native(haar_matrix(self.seed, K), backend),
                                                        inverse, out)
        return out.reshape(shape2)

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
        xh = _arrays.to_numpy(x2d)
        bad = ~(np.abs(xh) < _LIMIT)
        if bad.any():
            flat = int(np.flatnonzero(bad)[0])
            v = xh.reshape(-1)[flat]
            word = "NaN" if np.isnan(v) else "Inf" if np.isinf(v) else f"{v!r} (|x| >= 2**100 could overflow the rotation)"
            idx = tuple(int(i) for i in np.unravel_index(flat, shape))
            raise RangeError(f"{self.codec_id}: input has {word} at index {idx}; nothing was encoded")
        y = self.rotate(x2d, backend)
        with self._named():
            data, aux = self._inner._encode(y, shape, backend, **kw)
        return data, {_PREFIX + k: v for k, v in aux.items()}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        inner_aux = {k[len(_PREFIX):]: v for k, v in aux.items() if k.startswith(_PREFIX)}
        y = self._inner._decode(data2d, inner_aux, shape, backend)
        return self.rotate(y, backend, inverse=True)

    def reencode_kwargs(self, q: QTensor) -> dict[str, Any]:
        return self._inner.reencode_kwargs(QTensor(q.data, {k[len(_PREFIX):]: v for k, v in q.aux.items()}, q.shape,
                                                   self._inner))

    # ---- what the harness checks ------------------------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"codec": {"id": "int", "bits": 4, "group_size": 8}, "kind": "hadamard", "block": 16, "seed": 3},
                {"codec": {"id": "fp8_e4m3", "scale": "channel"}, "kind": "haar", "block": 8, "seed": 1}]

    def idempotence(self) -> str:
        return "bound"

    def input_policy(self) -> dict[str, str]:
        return {"nan": "raise", "inf": "raise", "overflow": "raise", "negative": "nearest",
                "negative_zero": "nearest", "subnormal": "nearest"}

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """Per rotation block: the Euclidean norm of the inner codec's bound on the rotated row (an
        orthogonal map keeps it), plus the rotations' float32 rounding, (log2 K + 4)·2^-22 times
        the row's norms (K + 4 for the dense rotation); Inf for rows whose inner bound is not finite."""
        x = np.asarray(x, np.float32)
        if not x.size:
            return np.zeros(x.shape)
        K = self.block
        x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        y = self.rotate(x2, "cpu")
        qi = QTensor(q.data, {k[len(_PREFIX):]: v for k, v in q.aux.items()}, q.shape, self._inner)
        b = np.asarray(self._inner.error_bound(y.reshape(x.shape), qi), np.float64).reshape(-1, K)
        yd = np.asarray(self._inner.decode(qi, backend="cpu"), np.float64).reshape(-1, K)
        x2 = x2.reshape(-1, K)
        steps = (math.log2(K) + 4) if self.kind == "hadamard" else (K + 4)
        nx = np.sqrt((x2.astype(np.float64) ** 2).sum(1))
        ny = np.sqrt((yd**2).sum(1))
        with np.errstate(over="ignore", invalid="ignore"):
            row = np.sqrt((b**2).sum(1)) * (1 + 2.0**-20) + steps * 2.0**-22 * (nx + ny) + 2.0**-140
        row = np.where(np.isfinite(row), row, np.inf)
        return np.repeat(row[:, None], K, axis=1).reshape(x.shape)

    def interesting_values(self) -> np.ndarray:
        v = self._inner.interesting_values().astype(np.float64)
        return np.unique(np.concatenate([v[np.abs(v) < 2.0**99], [2.0**99, -(2.0**99), 0.0]]).astype(np.float32))


class QuaRot4(Rotated, codec_id="quarot4"):
    """QuaRot-style rotated int4: the randomised Hadamard transform, then symmetric int4 with a
    float16 scale per group of 128 (QuaRot's weight and KV-cache quantizer, round to nearest).

    >>> import lowbit
    >>> lowbit.get_codec("quarot4").inner.get_config()["bits"]
    4
    """

    def __init__(self, *, codec: str | Mapping[str, Any] | None = None, kind: str = "hadamard", block: int = 128,
                 seed: int = 0) -> None:
        if codec is None:
            codec = {"id": "int", "bits": 4, "group_size": 128, "symmetric": True, "scale_dtype": "float16"}
        super().__init__(codec=codec, kind=kind, block=block, seed=seed)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"codec": {"id": "int", "bits": 4, "group_size": 16, "symmetric": True}, "block": 16, "seed": 2}]


def _torch() -> Any:
    import torch

    return torch
