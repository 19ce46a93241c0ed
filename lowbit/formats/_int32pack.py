"""Packing helpers shared by the GPTQ, AWQ and compressed-tensors converters.

Every one of these checkpoint layouts stores b-bit codes as a little-endian bit stream in int32
words: code ``i`` of a run occupies bits ``[i*b, (i+1)*b)`` of the run (GPTQ's 3-bit layout,
with codes straddling word boundaries, is that same stream). lowbit's ``int`` codec rows are the
same stream in bytes, so converting is a reinterpretation plus a transpose where the checkpoint
packs along the other axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = ["as_numpy", "pack_bits", "unpack_bits", "pack_rows_i32", "unpack_rows_i32", "words_to_bytes", "bytes_to_words"]


def as_numpy(a: Any, name: str) -> np.ndarray:
    """A numpy copy of a checkpoint tensor (numpy, torch on any device); bfloat16 becomes its
    uint16 bit pattern."""
    if hasattr(a, "detach"):
        import torch

        t = a.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16).copy()
        return t.numpy().copy()
    if not isinstance(a, np.ndarray):
        raise FormatError(f"{name}: expected a numpy array or torch tensor, got {type(a).__name__}")
    return np.array(a)


def words_to_bytes(w: np.ndarray) -> np.ndarray:
    """int32 words (..., n) -> their little-endian bytes (..., 4n)."""
    w = np.ascontiguousarray(w.astype("<i4", copy=False))
    return w.view(np.uint8).reshape(w.shape[:-1] + (w.shape[-1] * 4,))


def bytes_to_words(b: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(b, dtype=np.uint8)
    return b.view("<i4").astype(np.int32).reshape(b.shape[:-1] + (b.shape[-1] // 4,))


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (..., n) -> their LSB-first bit stream as bytes (..., ceil(n*bits/8))."""
    c = np.asarray(codes, dtype=np.uint64)
    b = ((c[..., None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)  # bit j of code i
    return np.packbits(b.reshape(c.shape[:-1] + (-1,)), axis=-1, bitorder="little")


def unpack_bits(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` (int64 codes)."""
    b = np.unpackbits(np.asarray(data, np.uint8), axis=-1, bitorder="little")[..., : n * bits]
    b = b.reshape(b.shape[:-1] + (n, bits)).astype(np.int64)
    return (b << np.arange(bits)).sum(-1)


def pack_rows_i32(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (rows, n) -> int32 words (rows, ceil(n*bits/32)), the stream padded with 0."""
    rows, n = codes.shape
    stream = pack_bits(codes, bits)
    out = np.zeros((rows, -(-n * bits // 32) * 4), np.uint8)
    out[:, : stream.shape[1]] = stream
    return bytes_to_words(out)


def unpack_rows_i32(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """int32 words (rows, nw) -> unsigned codes (rows, n)."""
    return unpack_bits(words_to_bytes(words), bits, n)
