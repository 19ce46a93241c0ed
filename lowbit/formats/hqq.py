"""HQQ (mobiusml/hqq) ⇄ lowbit ``hqq4``/``hqq2``/``int`` QTensors.

HQQ quantizes ``W [N, K]`` with ``axis=1`` groups of ``group_size`` consecutive elements:
``W.reshape(-1, g)`` is ``[N*K/g, g]``, ``meta["scale"]``/``meta["zero"]`` are ``[N*K/g, 1]``
(float16 once on the device), ``W = (W_q - zero) * scale``. The codes are bit-packed along the
*first* axis of that matrix: 4-bit ``"4bit_u8"`` puts rows ``i`` and ``i + n/2`` in the high and
low nibble of packed row ``i``; 2-bit ``"2bit_u8"`` puts rows ``i, i + n/4, i + n/2, i + 3n/4``
at bits 6, 4, 2, 0.

lowbit's ``int`` zero points are integers, as HQQ's are for 4 bits (``BaseQuantizeConfig`` sets
``round_zero=True`` for ``nbits=4``); :func:`from_hqq` refuses fractional zero points (HQQ's
2-bit default) rather than changing values. :func:`to_hqq` works for any 4-/2-bit ``int``
QTensor with ``axis=-1`` groups; HQQ's own ``Quantizer.dequantize`` then gives lowbit's values
rounded to float16, bit for bit. To load into ``HQQLinear``, put ``W_q``, ``meta["scale"]``
and ``meta["zero"]`` in place of those entries of an ``HQQLinear.state_dict()`` of the same
config and call its ``load_state_dict`` (tests/test_formats_hqq_quanto.py does exactly that).

>>> import numpy as np, lowbit
>>> from lowbit.formats.hqq import to_hqq, from_hqq
>>> q = lowbit.encode(np.linspace(-1, 1, 32 * 128, dtype=np.float32).reshape(32, 128), "hqq4")
>>> W_q, meta = to_hqq(q)
>>> tuple(W_q.shape), tuple(meta["scale"].shape), meta["packing"]
((32, 64), (64, 1), '4bit_u8')
>>> from_hqq(W_q, meta).data.tobytes() == q.data.tobytes()
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor, get_codec
from ..errors import FormatError
from ._int32pack import as_numpy, pack_bits, unpack_bits
from ._intq import take_apart

__all__ = ["from_hqq", "to_hqq"]

_PACKING = {4: "4bit_u8", 2: "2bit_u8"}


def _pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """HQQ's first-axis packing of uint8 codes (n, g)."""
    per = 8 // bits
    n = codes.shape[0] // per
    out = np.zeros((n,) + codes.shape[1:], np.uint8)
    for i in range(per):  # slice i goes to bits (per - 1 - i) * bits
        out |= (codes[i * n:(i + 1) * n].astype(np.uint8) << ((per - 1 - i) * bits)).astype(np.uint8)
    return out


def _unpack_rows(packed: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    mask = (1 << bits) - 1
    return np.concatenate([(packed >> ((per - 1 - i) * bits)) & mask for i in range(per)], axis=0)


def to_hqq(q: QTensor) -> tuple[Any, dict[str, Any]]:
    """``(W_q, meta)`` as HQQ's ``Quantizer.quantize(..., axis=1, bitpack=True)`` returns them
    (torch tensors; scale and zero float16)."""
    import torch

    data, s, z, gi, c = take_apart(q, "to_hqq")
    N, K = q.shape
    g = K if c.group_size is None else c.group_size
    if c.bits not in _PACKING or gi is not None or K % g or c.scale_dtype != "float16":
        raise FormatError(f"to_hqq: expected 4- or 2-bit codes, float16 scales, no act-order and K a multiple of the "
                          f"group size; got bits={c.bits}, scale_dtype={c.scale_dtype}, shape={q.shape}, group_size={g}")
    rows = N * K // g
    per = 8 // c.bits
    if rows % per:
        raise FormatError(f"to_hqq: HQQ packs {per} groups per byte row; {rows} groups is not a multiple")
    codes = unpack_bits(data, c.bits, K).reshape(rows, g)
    meta = {"nbits": c.bits, "group_size": g, "shape": torch.Size([N, K]), "axis": 1,
            "scale": torch.from_numpy(s.reshape(rows, 1).astype(np.float16)),
            "zero": torch.from_numpy(z.reshape(rows, 1).astype(np.float16)),
            "packing": _PACKING[c.bits], "unpack_view_dtype": torch.uint8, "view_as_float": False,
            "compute_dtype": torch.float16}
    return torch.from_numpy(_pack_rows(codes, c.bits)), meta


def from_hqq(W_q: Any, meta: dict[str, Any]) -> QTensor:
    """HQQ's packed ``W_q`` and ``meta`` (``axis=1``, 4- or 2-bit, integer zero points) → a
    QTensor of ``hqq4``/``hqq2``."""
    bits = int(meta["nbits"])
    if bits not in _PACKING or int(meta.get("axis", 1)) != 1 or meta.get("packing") != _PACKING.get(bits):
        raise FormatError(f"from_hqq: expected nbits 4 or 2, axis=1 and packing {_PACKING.get(bits)}, got "
                          f"nbits={bits}, axis={meta.get('axis')}, packing={meta.get('packing')}")
    if meta.get("view_as_float"):
        raise FormatError("from_hqq: view_as_float=True: view W_q back as uint8 first")
    N, K = (int(v) for v in meta["shape"])
    g = int(meta["group_size"])
    rows = N * K // g
    codes = _unpack_rows(as_numpy(W_q, "W_q").astype(np.uint8), bits)[:rows].reshape(N, K)
    s = as_numpy(meta["scale"], "scale").reshape(N, K // g)
    zf = as_numpy(meta["zero"], "zero").astype(np.float64).reshape(N, K // g)
    if not (np.isfinite(zf) & (zf == np.round(zf)) & (zf >= 0) & (zf <= 255)).all():
        raise FormatError("from_hqq: the zero points are not all integers in [0, 255] (HQQ's round_zero=False): "
                          "lowbit's int codes store integer zero points")
    if s.dtype != np.float16:
        raise FormatError(f"from_hqq: expected float16 scales (HQQ's meta on the device), got {s.dtype}")
    codec = get_codec("hqq4" if bits == 4 else "hqq2", group_size=g)
    return QTensor(pack_bits(codes, bits), {"scale": np.ascontiguousarray(s), "zero": zf.astype(np.uint8)}, (N, K), codec)
