"""GPTQ checkpoints (AutoGPTQ / GPTQModel / transformers ``quant_method: "gptq"``) ⇄ lowbit
``int`` QTensors, byte for byte.

Per linear layer with weight ``W [N=out, K=in]``, ``bits`` ∈ {2, 3, 4, 8} and group size ``g``:

* ``qweight`` int32 ``[K*bits/32, N]``: column ``n`` holds the codes of ``W[n, :]`` as one
  little-endian bit stream (code ``k`` at bits ``[k*bits, (k+1)*bits)``; 3-bit codes straddle
  words). That stream is exactly the row of our ``q.data``.
* ``qzeros`` int32 ``[K/g, N*bits/32]``: the zero points of group row ``i``, packed along ``N``.
  ``checkpoint_format="gptq"`` (v1, AutoGPTQ and what GPTQModel exports) stores ``zero - 1``;
  ``"gptq_v2"`` stores ``zero`` itself. v1 cannot store a zero point of 0: AutoGPTQ's packer
  writes ``-1`` there, which ORs ones into the neighbouring fields, and its readers disagree on
  the result — :func:`to_gptq` refuses it (use ``"gptq_v2"``), :func:`from_gptq` reads a v1 field
  ``f`` as ``f + 1`` (the current AutoGPTQ ``qlinear_cuda`` reader and the CUDA kernels).
* ``scales`` ``[K/g, N]`` (float16, sometimes bfloat16), ``g_idx`` int32 ``[K]``: the group of each
  input channel (``k // g``, or a permutation-derived map with ``desc_act``/act-order).
* ``sym=True`` checkpoints have every zero point ``2**(bits-1)``.

Dequantization: ``W[n, k] = scales[g_idx[k], n] * (code - zero[g_idx[k], n])``.

>>> import numpy as np, lowbit
>>> from lowbit.formats.gptq import to_gptq, from_gptq
>>> q = lowbit.get_codec("int", bits=4, group_size=32).encode(np.ones((64, 64), np.float32))
>>> ck = to_gptq(q, checkpoint_format="gptq_v2")
>>> ck["qweight"].shape, ck["qzeros"].shape, ck["scales"].shape, ck["g_idx"].shape
((8, 64), (2, 8), (2, 64), (64,))
>>> q2 = from_gptq(**ck, bits=4, group_size=32, checkpoint_format="gptq_v2")
>>> bool((q2.data == q.data).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor
from ..errors import FormatError
from ._int32pack import as_numpy, bytes_to_words, pack_rows_i32, unpack_rows_i32, words_to_bytes
from ._intq import make_qtensor, take_apart

__all__ = ["from_gptq", "to_gptq"]

_FORMATS = ("gptq", "gptq_v2")


def from_gptq(qweight: Any, qzeros: Any, scales: Any, g_idx: Any = None, *, bits: int, group_size: int,
              sym: bool = False, checkpoint_format: str = "gptq") -> QTensor:
    """A GPTQ layer's tensors → a QTensor of ``int`` (shape ``[out, in]``, groups along ``in``)."""
    where = f"gptq ({checkpoint_format}, {bits}-bit)"
    if checkpoint_format not in _FORMATS:
        raise FormatError(f"gptq: checkpoint_format: expected one of {_FORMATS}, got {checkpoint_format!r}")
    if bits not in (2, 3, 4, 8):
        raise FormatError(f"{where}: bits: expected 2, 3, 4 or 8, got {bits}")
    qw = as_numpy(qweight, "qweight")
    qz = as_numpy(qzeros, "qzeros")
    sc = as_numpy(scales, "scales")
    if qw.dtype != np.int32 or qz.dtype != np.int32 or qw.ndim != 2 or qz.ndim != 2:
        raise FormatError(f"{where}: qweight/qzeros: expected 2-D int32, got {qw.dtype}{qw.shape}, {qz.dtype}{qz.shape}")
    K, N = qw.shape[0] * 32 // bits, qw.shape[1]
    g = K if group_size in (-1, None) else int(group_size)
    if K % g or sc.shape != (K // g, N) or qz.shape != (K // g, -(-N * bits // 32)):
        raise FormatError(f"{where}: expected scales {(K // g, N)} and qzeros {(K // g, -(-N * bits // 32))} for "
                          f"K={K}, N={N}, group_size={g}; got {sc.shape} and {qz.shape}")
    data = words_to_bytes(np.ascontiguousarray(qw.T))  # column n's bit stream = our row n
    zeros = unpack_rows_i32(qz, bits, N).T  # (N, K/g)
    if checkpoint_format == "gptq":
        zeros = zeros + 1
    gi = None
    if g_idx is not None:
        gi = as_numpy(g_idx, "g_idx").astype(np.int64)
        if gi.shape != (K,) or (gi.size and (gi.min() < 0 or gi.max() >= K // g)):
            raise FormatError(f"{where}: g_idx: expected {K} group indices in [0, {K // g}), got shape {gi.shape}")
        if np.array_equal(gi, np.arange(K) // g):
            gi = None  # the trivial map: plain contiguous groups
    if sym:
        if not (zeros == 1 << (bits - 1)).all():
            raise FormatError(f"{where}: sym=True but some zero points differ from {1 << (bits - 1)}")
        zeros = None
    return make_qtensor(data, np.ascontiguousarray(sc.T), None if zeros is None else np.ascontiguousarray(zeros),
                        gi, (N, K), bits=bits, group_size=None if g == K else g, where=where)


def to_gptq(q: QTensor, *, checkpoint_format: str = "gptq") -> dict[str, np.ndarray]:
    """A QTensor of ``int`` (``[out, in]``, groups along ``in``) → ``qweight``, ``qzeros``,
    ``scales`` (numpy; bfloat16 scales as uint16 bits) and ``g_idx``."""
    if checkpoint_format not in _FORMATS:
        raise FormatError(f"gptq: checkpoint_format: expected one of {_FORMATS}, got {checkpoint_format!r}")
    data, s, z, gi, c = take_apart(q, "to_gptq")
    N, K = q.shape
    bits = c.bits
    g = K if c.group_size is None else c.group_size
    if bits not in (2, 3, 4, 8) or K % g or (K * bits) % 32 or (N * bits) % 32:
        raise FormatError(f"to_gptq: GPTQ needs bits in (2, 3, 4, 8), in_features a multiple of the group size "
                          f"and of 32, out_features*bits a multiple of 32; got bits={bits}, shape={q.shape}, group_size={g}")
    stored = z.T.copy()  # (K/g, N)
    if checkpoint_format == "gptq":
        if (stored == 0).any():
            raise FormatError("to_gptq: checkpoint_format='gptq' (v1) stores zero-1 and cannot hold a zero point of 0; "
                              "use checkpoint_format='gptq_v2' or a symmetric codec")
        stored = stored - 1
    if (stored > (1 << bits) - 1).any():
        raise FormatError(f"to_gptq: zero points above {(1 << bits) - 1} do not fit {bits} bits")
    return {
        "qweight": np.ascontiguousarray(bytes_to_words(data).T),
        "qzeros": pack_rows_i32(stored, bits),
        "scales": np.ascontiguousarray(s.T),
        "g_idx": (np.arange(K, dtype=np.int32) // g) if gi is None else gi.astype(np.int32),
    }
