"""compressed-tensors ``pack-quantized`` integer weights (llm-compressor W4A16/W8A16 checkpoints,
``"format": "pack-quantized"``) ⇄ lowbit ``int`` QTensors, byte for byte.

Per linear layer with weight ``[N=out, K=in]`` and ``num_bits`` b ∈ 1…8:

* ``weight_packed`` int32 ``[N, ceil(K*b/32)]``: the signed codes ``x_q`` plus ``2**(b-1)``
  (offset binary: our unsigned codes), as one little-endian bit stream per row, zero-padded to
  whole words — our ``q.data`` row, padded.
* ``weight_scale`` ``[N, K/g]`` (strategy "group") or ``[N, 1]`` ("channel"), in the model dtype.
* ``weight_zero_point`` (asymmetric only) signed int8 zero points, offset by ``2**(b-1)`` and
  packed the same way along the *output* channels: int32 ``[ceil(N*b/32), K/g]``.
* ``weight_shape`` int ``[2]``; ``weight_g_idx`` int32 ``[K]`` with activation ordering.

Dequantization: ``(x_q - zero_point) * scale`` = ``(code - zero) * scale`` in unsigned terms.
Strategy "tensor" (one scale for the whole weight) has no ``int`` equivalent and is refused.

>>> import numpy as np, lowbit
>>> from lowbit.formats.compressed_tensors_int import to_compressed_tensors, from_compressed_tensors
>>> q = lowbit.get_codec("int", bits=4, group_size=32, symmetric=True).encode(np.ones((8, 64), np.float32))
>>> ck = to_compressed_tensors(q)
>>> sorted(ck), ck["weight_packed"].shape
(['weight_packed', 'weight_scale', 'weight_shape'], (8, 8))
>>> bool((from_compressed_tensors(**ck, num_bits=4, group_size=32).data == q.data).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor
from ..errors import FormatError
from ._int32pack import as_numpy, pack_rows_i32, unpack_rows_i32, words_to_bytes
from ._intq import make_qtensor, take_apart

__all__ = ["from_compressed_tensors", "to_compressed_tensors"]


def from_compressed_tensors(weight_packed: Any, weight_scale: Any, weight_shape: Any, weight_zero_point: Any = None,
                            weight_g_idx: Any = None, *, num_bits: int, group_size: int | None = None,
                            strategy: str | None = None) -> QTensor:
    """A pack-quantized layer → a QTensor of ``int``. ``strategy`` defaults to "group" when a
    ``group_size`` is given, else "channel"; a ``weight_zero_point`` makes it asymmetric."""
    b = int(num_bits)
    where = f"compressed-tensors pack-quantized ({b}-bit)"
    strategy = strategy or ("group" if group_size else "channel")
    if strategy not in ("group", "channel"):
        raise FormatError(f"{where}: strategy: expected 'group' or 'channel' (lowbit's int codec has no per-tensor scale), got {strategy!r}")
    wp, sc = as_numpy(weight_packed, "weight_packed"), as_numpy(weight_scale, "weight_scale")
    N, K = (int(v) for v in as_numpy(weight_shape, "weight_shape").reshape(-1))
    if wp.dtype != np.int32 or wp.shape != (N, -(-K * b // 32)):
        raise FormatError(f"{where}: weight_packed: expected int32 {(N, -(-K * b // 32))}, got {wp.dtype}{wp.shape}")
    g = K if strategy == "channel" else int(group_size)
    ng = -(-K // g)
    if sc.shape != (N, ng):
        raise FormatError(f"{where}: weight_scale: expected {(N, ng)}, got {sc.shape}")
    data = words_to_bytes(wp)[:, : K * b // 8]
    zeros = None
    if weight_zero_point is not None:
        zp = as_numpy(weight_zero_point, "weight_zero_point")
        if zp.dtype != np.int32 or zp.shape != (-(-N * b // 32), ng):
            raise FormatError(f"{where}: weight_zero_point: expected int32 {(-(-N * b // 32), ng)}, got {zp.dtype}{zp.shape}")
        zeros = unpack_rows_i32(np.ascontiguousarray(zp.T), b, N).T  # (N, ng), unsigned
    gi = None
    if weight_g_idx is not None:
        gi = as_numpy(weight_g_idx, "weight_g_idx").astype(np.int64)
        if gi.shape != (K,) or (gi.size and (gi.min() < 0 or gi.max() >= ng)):
            raise FormatError(f"{where}: weight_g_idx: expected {K} group indices in [0, {ng})")
    return make_qtensor(data, sc, zeros, gi, (N, K), bits=b, group_size=None if strategy == "channel" else g,
                        where=where)


def to_compressed_tensors(q: QTensor) -> dict[str, np.ndarray]:
    """A 2-D QTensor of ``int`` → ``weight_packed``, ``weight_scale``, ``weight_shape`` and, when
    asymmetric, ``weight_zero_point`` (and ``weight_g_idx`` with act-order); numpy arrays,
    bfloat16 scales as uint16 bits."""
    data, s, z, gi, c = take_apart(q, "to_compressed_tensors")
    N, K = q.shape
    b = c.bits
    words = -(-K * b // 32)
    padded = np.zeros((N, words * 4), np.uint8)
    padded[:, : data.shape[1]] = data
    out = {"weight_packed": padded.view("<i4").astype(np.int32), "weight_scale": s,
           "weight_shape": np.array([N, K], np.int64)}
    if not c.symmetric:
        out["weight_zero_point"] = np.ascontiguousarray(pack_rows_i32(np.ascontiguousarray(z.T), b).T)
    if gi is not None:
        out["weight_g_idx"] = gi.astype(np.int32)
    return out
