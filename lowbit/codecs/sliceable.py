"""Matryoshka integers (MatQuant, Nair et al. 2025; MatGPTQ, IST-DASLab 2026): 8-bit codes
whose most significant bits are themselves a lower-precision code (spec/sliceable_int.toml)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays
from ..codec import QTensor
from ..errors import ConfigError
from .int import Int

__all__ = ["SliceableInt", "slice_codes"]

MASTER_BITS = 8


def slice_codes(codes: Any, bits: int) -> Any:
    """MatGPTQ's ``matryoshka_slice`` of 8-bit codes (numpy or torch integer arrays): the top
    ``bits`` bits rounded half up by the next bit, clamped: ``min((q >> d) + ((q >> (d-1)) & 1),
    2**bits - 1)`` with ``d = 8 - bits`` (``q`` itself for 8 bits)."""
    d = MASTER_BITS - bits
    if d == 0:
        return codes
    t = (codes >> d) + ((codes >> (d - 1)) & 1)
    top = (1 << bits) - 1
    return t.clamp(max=top) if _arrays.is_torch(t) else np.minimum(t, top)


class SliceableInt(Int, codec_id="sliceable_int"):
    """Matryoshka integers: 8-bit codes ``q`` with a scale and zero point per group (the ``int``
    rules at 8 bits), readable at 8, 4 or 2 bits (any width 1–8) by slicing the most significant
    bits: ``q.slice(4)`` is a QTensor of ``sliceable_int`` with ``bits=4`` holding the sliced codes
    ``t = min((q >> 4) + ((q >> 3) & 1), 15)`` and the *same* scales and zero points, decoded as
    the paper does: ``scale * ((t << (8 - bits)) - zero)``. For symmetric parents that is a plain
    int4/int2 code with scale ``scale * 2**(8 - bits)`` and zero point ``2**(bits-1)``.

    Tensors are encoded at the master width (``bits=8``) and sliced, never re-encoded; encoding
    with ``bits < 8`` raises. (MatGPTQ's multi-precision objective, which picks each 8-bit code to
    minimise the weighted error of all its slices, is a choice of codes inside this format; the
    encoder here rounds to the nearest 8-bit code.)

    >>> import numpy as np, lowbit
    >>> x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    >>> q8 = lowbit.get_codec("sliceable_int", group_size=8).encode(x)
    >>> q4 = q8.slice(4)
    >>> q4.codec.bits, q4.data.shape, [round(float(v), 2) for v in lowbit.decode(q4)[0]]
    (4, (1, 4), [-1.0, -0.75, -0.38, -0.13, 0.13, 0.38, 0.75, 0.88])
    """

    def __init__(self, *, bits: int = 8, group_size: int | None = 128, axis: int = -1, symmetric: bool = False,
                 scale_dtype: str = "float16") -> None:
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MASTER_BITS:
            raise ConfigError(f"{self.codec_id}: bits: expected an int in [1, 8] (8 = the master width), got {bits!r}")
        super().__init__(bits=bits, group_size=group_size, axis=axis, symmetric=False, scale_dtype=scale_dtype)
        self.symmetric = bool(symmetric)
        if not isinstance(symmetric, bool):
            raise ConfigError(f"{self.codec_id}: symmetric: expected a boolean, got {symmetric!r}")
        self._decode_shift = MASTER_BITS - bits

    @property
    def layout(self) -> Any:
        from ..layout import BlockLayout

        return BlockLayout.from_spec("sliceable_int", w=self.bits)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "bits": self.bits, "group_size": self.group_size, "axis": self.axis,
                "symmetric": self.symmetric, "scale_dtype": self.scale_dtype}

    def _code_range(self) -> tuple[int, int, int]:
        if self.symmetric:  # the master's zero point, whatever the width
            return 1 << (MASTER_BITS - 1), 1, (1 << MASTER_BITS) - 1
        return 0, 0, (1 << MASTER_BITS) - 1

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        geo = self.geometry(shape)
        from . import _groups as G

        ash = geo.aux_shape(shape, self.axis)
        spec = {"scale": (ash, G.SCALE_DTYPES[self.scale_dtype][4])}
        if not self.symmetric:
            spec["zero"] = (ash, "uint8")
        return spec

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, g_idx: Any = None) -> tuple[Any, dict[str, Any]]:
        if self.bits != MASTER_BITS:
            raise ConfigError(f"{self.codec_id}: bits={self.bits}: tensors are encoded at the master width 8 and "
                              f"sliced (q.slice({self.bits})), never encoded at a lower width")
        from . import _groups as G
        from ..kernels.registry import get_kernel
        from .int import _empty_u8

        self._refuse_nan(x2d, shape)
        geo = self.geometry(shape)
        gcol = self._gcol(geo, None, x2d)
        lo, hi = G.group_minmax(x2d, geo)
        s, z = G.int_params(lo, hi, MASTER_BITS, self.symmetric, self.scale_dtype)
        out = _empty_u8(x2d, (x2d.shape[0], self.row_bytes(shape[-1])))
        zconst, qlo, qhi = self._code_range()
        if x2d.shape[0] and shape[-1]:
            get_kernel("int", backend, "encode")(x2d, s, z, geo, gcol, MASTER_BITS, zconst, qlo, qhi, out)
        return out, self._aux_out(s, z, gcol, shape, geo)

    def slice(self, q: QTensor, bits: int) -> QTensor:
        """The ``bits``-wide QTensor of the 8-bit ``q``: sliced codes repacked, the same side arrays."""
        if self.bits != MASTER_BITS:
            raise ConfigError(f"{self.codec_id}: slice: only the 8-bit master is sliced (slicing a slice rounds twice), got bits={self.bits}")
        child = SliceableInt(bits=bits, group_size=self.group_size, axis=self.axis, symmetric=self.symmetric,
                             scale_dtype=self.scale_dtype)
        K = q.shape[-1]
        rows = int(np.prod(q.shape[:-1]))
        if not rows or not K:
            return QTensor(q.data[..., : child.row_bytes(K)], dict(q.aux), q.shape, child)
        d = q.data.reshape(rows, K)
        t = slice_codes(d.to(_torch().int32) if _arrays.is_torch(d) else d.astype(np.int32), bits)
        data = _repack(t, bits).reshape(tuple(q.shape[:-1]) + (child.row_bytes(K),))
        return QTensor(data, dict(q.aux), q.shape, child)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"group_size": 8}, {"group_size": 4, "axis": -2, "symmetric": True, "scale_dtype": "bfloat16"}]

    def input_policy(self) -> dict[str, str]:
        return super().input_policy()


def _torch() -> Any:
    import torch

    return torch


def _repack(t: Any, bits: int) -> Any:
    """Codes (rows, K) of width <= 8 → LSB-first packed bytes (rows, K*bits/8), numpy or torch."""
    rows, K = t.shape
    per = 8 // bits if 8 % bits == 0 else 0
    if per:  # 1, 2, 4, 8 bits: whole codes per byte
        v = t.reshape(rows, K // per, per)
        acc = v[..., 0]
        for i in range(1, per):
            acc = acc | (v[..., i] << (bits * i))
        return acc.to(_torch().uint8) if _arrays.is_torch(acc) else acc.astype(np.uint8)
    from ..formats._int32pack import pack_bits  # other widths: the general bit stream (host)

    out = pack_bits(_arrays.to_numpy(t), bits)
    return _arrays.restore(out, torch_out=_arrays.is_torch(t), device=t.device if _arrays.is_torch(t) else None)
