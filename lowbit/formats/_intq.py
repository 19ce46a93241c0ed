"""Build and take apart ``int``-codec QTensors for the checkpoint converters."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec import QTensor, get_codec
from ..errors import FormatError

_DT = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "uint16": "bfloat16", "int16": "bfloat16"}


def scale_dtype_of(a: np.ndarray, name: str) -> str:
    """Our scale_dtype for a checkpoint's scale array (bfloat16 arrives as uint16 bits)."""
    if a.dtype.name not in _DT:
        raise FormatError(f"{name}: scales: expected float16, bfloat16 or float32, got {a.dtype}")
    return _DT[a.dtype.name]


def scales_aux(a: np.ndarray, scale_dtype: str) -> np.ndarray:
    if scale_dtype == "bfloat16":
        return np.ascontiguousarray(a).view(np.uint16)
    return np.ascontiguousarray(a, dtype=scale_dtype)


def make_qtensor(data: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, g_idx: np.ndarray | None,
                 shape: tuple[int, int], *, bits: int, group_size: int | None, where: str) -> QTensor:
    """A QTensor of ``get_codec("int", ...)`` from row bytes, (N, G) scales, (N, G) zeros
    (None: symmetric, zero point 2**(bits-1)) and an optional column->group map."""
    N, K = shape
    sd = scale_dtype_of(scales, where)
    act = g_idx is not None
    codec = get_codec("int", bits=bits, group_size=group_size, axis=-1, symmetric=zeros is None,
                      scale_dtype=sd, act_order=act)
    aux: dict[str, Any] = {"scale": scales_aux(scales, sd)}
    if zeros is not None:
        if zeros.size and (zeros.min() < 0 or zeros.max() > 255):
            raise FormatError(f"{where}: zero points outside [0, 255] ({zeros.min()} .. {zeros.max()}) cannot be stored")
        aux["zero"] = np.ascontiguousarray(zeros, dtype=np.uint8)
    if act:
        aux["g_idx"] = np.ascontiguousarray(g_idx, dtype=np.int32)
    want = codec._aux_spec((N, K))
    for k, (ash, dt) in want.items():
        if tuple(aux[k].shape) != tuple(ash):
            raise FormatError(f"{where}: {k}: expected shape {tuple(ash)} for a ({N}, {K}) weight, got {tuple(aux[k].shape)}")
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.shape != (N, codec.row_bytes(K)):
        raise FormatError(f"{where}: packed weight: expected {(N, codec.row_bytes(K))} bytes of codes, got {data.shape}")
    return QTensor(data, aux, (N, K), codec)


def take_apart(q: QTensor, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, Any]:
    """(row bytes, scales as stored, zeros (N, G) int64, g_idx or None, codec) of a 2-D int QTensor
    with groups along the rows."""
    c = q.codec
    if c.family != "int" or getattr(c, "axis", None) != -1 or len(q.shape) != 2:
        raise FormatError(f"{where}: expected a 2-D QTensor of the int codec with axis=-1 groups, got {q!r} ({c!r})")
    qn = q.numpy()
    s = qn.aux["scale"]
    if c.scale_dtype == "bfloat16":
        s = s.view(np.uint16)
    z = (qn.aux["zero"].astype(np.int64) if "zero" in qn.aux
         else np.full(s.shape, 1 << (c.bits - 1), np.int64))
    return qn.data, s, z, (qn.aux["g_idx"] if c.act_order else None), c
