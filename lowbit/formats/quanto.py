"""optimum-quanto ``WeightQBitsTensor`` (``qint4``/``qint2`` weights) ⇄ lowbit ``quanto4``/
``quanto2``/``int`` QTensors.

quanto groups ``W [N, K]`` with ``axis=0``: ``W.reshape(-1, group_size)`` (``[N*K/g, g]``), one
``scale`` and one ``shift`` per row of that matrix; codes are unsigned ``0 … 2**bits - 1`` packed
by ``PackedTensor`` along the first axis (packed row ``r`` holds rows ``r + i*n/per`` at bits
``i*bits``). With an integer ``shift`` (a zero point) ``W = scale * (data - shift)``; with a float
``shift`` (quanto's ``MaxOptimizer``, ``shift = -min``) ``W = scale * data - shift``. lowbit's
zero points are integers: :func:`to_quanto` writes an integer ``shift``; :func:`from_quanto` reads
integer shifts (quanto's ``zeropoint=True``) and refuses float ones (its default) rather than
changing values.

>>> import numpy as np, lowbit
>>> from lowbit.formats.quanto import to_quanto, from_quanto
>>> q = lowbit.encode(np.linspace(-1, 1, 8 * 256, dtype=np.float32).reshape(8, 256), "quanto4")
>>> t = to_quanto(q)          # needs optimum-quanto
>>> t.qtype.name, tuple(t._scale.shape), t._shift.dtype
('qint4', (16, 1), torch.uint8)
>>> from_quanto(t).data.tobytes() == q.data.tobytes()
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor, get_codec
from ..errors import FormatError
from ._int32pack import as_numpy, pack_bits, unpack_bits
from ._intq import take_apart

__all__ = ["from_quanto", "to_quanto"]


def _unpack_rows(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    """quanto's ``PackedTensor`` layout read back: packed row ``r`` holds the codes of rows
    ``r + i * len(packed)`` at bits ``[i*bits, (i+1)*bits)``, i = 0 … 8/bits - 1 (LSB first);
    the concatenation can be longer than ``rows`` (padding rows), which are dropped."""
    mask = (1 << bits) - 1
    return np.concatenate([(packed >> (i * bits)) & mask for i in range(8 // bits)], axis=0)[:rows]


def to_quanto(q: QTensor) -> Any:
    """A ``WeightQBitsTensor`` (requires optimum-quanto) holding exactly ``q``'s codes, float16 or
    bfloat16 scales and integer (uint8) shifts."""
    import torch
    from optimum.quanto import qint2, qint4
    from optimum.quanto.tensor.packed import PackedTensor
    from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor

    data, s, z, gi, c = take_apart(q, "to_quanto")
    N, K = q.shape
    g = K if c.group_size is None else c.group_size
    if c.bits not in (2, 4) or gi is not None or K % g or c.scale_dtype == "float32":
        raise FormatError(f"to_quanto: expected 4- or 2-bit codes, float16/bfloat16 scales, no act-order and K a multiple "
                          f"of the group size; got bits={c.bits}, scale_dtype={c.scale_dtype}, group_size={g}")
    rows = N * K // g
    codes = torch.from_numpy(unpack_bits(data, c.bits, K).reshape(rows, g).astype(np.uint8))
    st = torch.from_numpy(s.reshape(rows, 1).copy())
    st = st.view(torch.bfloat16) if c.scale_dtype == "bfloat16" else st
    shift = torch.from_numpy(z.reshape(rows, 1).astype(np.uint8))  # uint8, as quanto's zeropoint=True writes
    qtype = qint4 if c.bits == 4 else qint2
    return WeightQBitsTensor(qtype, 0, g, torch.Size([N, K]), (K, 1), PackedTensor.pack(codes, c.bits), st, shift)


def from_quanto(t: Any) -> QTensor:
    """A ``WeightQBitsTensor`` (``axis=0``, integer shift) → a QTensor of ``quanto4``/``quanto2``."""
    bits = int(t.qtype.bits)
    if bits not in (2, 4) or t.axis != 0 or t._group_size is None:
        raise FormatError(f"from_quanto: expected a grouped qint4/qint2 tensor with axis=0, got {t.qtype}, axis={t.axis}")
    if t._shift.dtype.is_floating_point:
        raise FormatError("from_quanto: a float shift (quanto's MaxOptimizer, W = scale*data - shift) has no integer "
                          "zero point; lowbit's int codes store integer zero points")
    N, K = (int(v) for v in t.shape)
    g = int(t._group_size)
    rows = N * K // g
    if hasattr(t._data, "_bits"):  # a PackedTensor: read its bytes ourselves (its unpack is a C++ JIT build)
        codes = _unpack_rows(as_numpy(t._data._data, "data").astype(np.uint8), bits, rows)
    else:
        codes = as_numpy(t._data, "data")
    codes = codes.astype(np.int64).reshape(N, K)
    z = as_numpy(t._shift, "shift").astype(np.int64).reshape(N, K // g)
    s = as_numpy(t._scale, "scale").reshape(N, K // g)
    sd = {"float16": "float16", "uint16": "bfloat16"}.get(s.dtype.name)
    if sd is None or (z < 0).any() or (z > (1 << bits) - 1).any():
        raise FormatError(f"from_quanto: expected float16/bfloat16 scales and shifts in [0, {(1 << bits) - 1}], got "
                          f"{s.dtype}, shifts {z.min()} .. {z.max()}")
    codec = get_codec("quanto4" if bits == 4 else "quanto2", group_size=g, scale_dtype=sd)
    return QTensor(pack_bits(codes, bits), {"scale": np.ascontiguousarray(s), "zero": z.astype(np.uint8)}, (N, K), codec)
