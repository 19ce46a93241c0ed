"""AWQ checkpoints (AutoAWQ / llm-awq "GEMM" version, ``quant_method: "awq"``) ⇄ lowbit ``int``
QTensors, byte for byte.

Per linear layer with weight ``W [N=out, K=in]``, 4-bit codes and group size ``g``:

* ``qweight`` int32 ``[K, N/8]``: packed along the *output* channels, with AWQ's interleave:
  nibble ``i`` (bits ``4i … 4i+3``) of word ``(k, j)`` holds the code of output channel
  ``8j + ORDER[i]``, ``ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`` (so the GEMM kernel can unpack pairs).
* ``qzeros`` int32 ``[K/g, N/8]``: the zero points, same packing and interleave, stored as is.
* ``scales`` float16 ``[K/g, N]``.

Dequantization: ``W[n, k] = (code - zero) * scale`` of group ``k // g``.

>>> import numpy as np, lowbit
>>> from lowbit.formats.awq import to_awq, from_awq
>>> q = lowbit.get_codec("int", bits=4, group_size=32).encode(np.ones((16, 64), np.float32))
>>> ck = to_awq(q)
>>> ck["qweight"].shape, ck["qzeros"].shape, ck["scales"].shape
((64, 2), (2, 2), (2, 16))
>>> bool((from_awq(**ck, group_size=32).data == q.data).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor
from ..errors import FormatError
from ._int32pack import as_numpy, pack_bits, pack_rows_i32, unpack_bits, unpack_rows_i32
from ._intq import make_qtensor, take_apart

__all__ = ["from_awq", "to_awq", "AWQ_ORDER"]

AWQ_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])  # nibble i of a word holds channel 8j + AWQ_ORDER[i]


def _deinterleave(stored: np.ndarray) -> np.ndarray:
    """Codes in nibble order (rows, N) → codes in channel order."""
    r, n = stored.shape
    out = np.empty_like(stored)
    out.reshape(r, n // 8, 8)[:, :, AWQ_ORDER] = stored.reshape(r, n // 8, 8)
    return out


def _interleave(codes: np.ndarray) -> np.ndarray:
    r, n = codes.shape
    return codes.reshape(r, n // 8, 8)[:, :, AWQ_ORDER].reshape(r, n)


def from_awq(qweight: Any, qzeros: Any, scales: Any, *, group_size: int, bits: int = 4) -> QTensor:
    """An AWQ GEMM layer's tensors → a QTensor of ``int`` (shape ``[out, in]``)."""
    where = "awq (GEMM)"
    if bits != 4:
        raise FormatError(f"{where}: bits: expected 4 (AWQ's interleaved packing is defined for 4-bit), got {bits}")
    qw, qz, sc = as_numpy(qweight, "qweight"), as_numpy(qzeros, "qzeros"), as_numpy(scales, "scales")
    if qw.dtype != np.int32 or qz.dtype != np.int32 or qw.ndim != 2:
        raise FormatError(f"{where}: qweight/qzeros: expected int32, got {qw.dtype}, {qz.dtype}")
    K, N = qw.shape[0], qw.shape[1] * 8
    g = K if group_size in (-1, None) else int(group_size)
    if K % g or qz.shape != (K // g, N // 8) or sc.shape != (K // g, N):
        raise FormatError(f"{where}: expected qzeros {(K // g, N // 8)} and scales {(K // g, N)} for K={K}, N={N}, "
                          f"group_size={g}; got {qz.shape} and {sc.shape}")
    codes = _deinterleave(unpack_rows_i32(qw, 4, N))  # (K, N)
    zeros = _deinterleave(unpack_rows_i32(qz, 4, N))  # (K/g, N)
    data = pack_bits(np.ascontiguousarray(codes.T), 4)
    return make_qtensor(data, np.ascontiguousarray(sc.T), np.ascontiguousarray(zeros.T), None, (N, K),
                        bits=4, group_size=None if g == K else g, where=where)


def to_awq(q: QTensor) -> dict[str, np.ndarray]:
    """A 4-bit QTensor of ``int`` (``[out, in]``, groups along ``in``) → ``qweight``, ``qzeros``,
    ``scales`` (numpy)."""
    data, s, z, gi, c = take_apart(q, "to_awq")
    N, K = q.shape
    g = K if c.group_size is None else c.group_size
    if c.bits != 4 or gi is not None or N % 8 or K % g:
        raise FormatError(f"to_awq: AWQ needs 4-bit codes, no act-order, out_features a multiple of 8 and in_features "
                          f"a multiple of the group size; got bits={c.bits}, act_order={gi is not None}, shape={q.shape}")
    if (z > 15).any():
        raise FormatError("to_awq: zero points above 15 do not fit 4 bits")
    codes = unpack_bits(data, 4, K).T  # (K, N)
    return {
        "qweight": pack_rows_i32(_interleave(np.ascontiguousarray(codes)), 4),
        "qzeros": pack_rows_i32(_interleave(np.ascontiguousarray(z.T)), 4),
        "scales": np.ascontiguousarray(s.T),
    }
