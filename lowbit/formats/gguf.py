"""GGUF files: a hardened reader that lists the tensors and decodes any of them.

Every count, length, offset and size in the file is checked against the file's size *before*
anything is allocated or mapped, so a truncated or crafted file raises :class:`FormatError`
naming the tensor (or metadata key) and the field, instead of hanging or exhausting memory.

    import lowbit.formats.gguf as G
    f = G.read("model.gguf")
    [(t.name, t.type_name, t.shape) for t in f.tensors][:2]
    w = f.decode("blk.0.ffn_down.weight")          # float32, numpy order

Shapes are numpy order (``reversed(ne)``), so the last axis is ggml's row (``ne[0]``). Quantized
tensors decode through the GGUF codecs (``q4_k`` ...), the grid i-quants through
:func:`dequantize`; F32/F16/BF16 and the integer types are returned as stored (BF16 widened).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = ["read", "GGUFFile", "TensorInfo", "dequantize", "GGML_TYPE_NAMES", "BLOCK"]

# ggml type id -> (name, block size, type size); ggml/include/ggml.h and ggml-common.h
BLOCK: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20), 6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 36), 10: ("q2_k", 256, 84), 11: ("q3_k", 256, 110),
    12: ("q4_k", 256, 144), 13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210), 15: ("q8_k", 256, 292),
    16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74), 18: ("iq3_xxs", 256, 98), 19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110), 22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136),
    24: ("i8", 1, 1), 25: ("i16", 1, 2), 26: ("i32", 1, 4), 27: ("i64", 1, 8), 28: ("f64", 1, 8),
    29: ("iq1_m", 256, 56), 30: ("bf16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66),
    39: ("mxfp4_ggml", 32, 17), 40: ("nvfp4_ggml", 64, 36), 41: ("q1_0", 128, 18), 42: ("q2_0", 64, 18),
}
GGML_TYPE_NAMES = {k: v[0] for k, v in BLOCK.items()}
_PLAIN = {"f32": "<f4", "f16": "<f2", "i8": "i1", "i16": "<i2", "i32": "<i4", "i64": "<i8", "f64": "<f8"}
_IQ = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m")

# metadata value types: id -> struct format (8 string, 9 array handled apart)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_DIMS = 4  # GGML_MAX_DIMS


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: reversed(ne)
    ggml_type: int
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES[self.ggml_type]


@dataclass
class GGUFFile:
    path: str
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    _mm: Any = field(default=None, repr=False)

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"{self.path}: no tensor {name!r}")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes (a read-only uint8 view of the memory-mapped file)."""
        t = self.tensor(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def decode(self, name: str, *, backend: str = "cpu") -> np.ndarray:
        """The tensor as float32 (integer types as stored), numpy order."""
        t = self.tensor(name)
        return dequantize(self.raw(name), t.type_name, t.shape, backend=backend)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # arrays from raw() still point into it: it closes when they go
                pass
            self._mm = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def dequantize(raw: Any, type_name: str, shape: tuple[int, ...], *, backend: str = "cpu") -> Any:
    """Decode the raw bytes of a tensor of ggml type ``type_name`` and numpy ``shape``."""
    shape = tuple(int(d) for d in shape)
    if type_name in _PLAIN:
        return np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype=_PLAIN[type_name]).reshape(shape).copy()
    if type_name == "bf16":
        u = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    if type_name in _IQ:
        from ..kernels.registry import get_kernel

        K = shape[-1] if shape else 1
        _, bs, ts = BLOCK[{v[0]: k for k, v in BLOCK.items()}[type_name]]
        if K % bs:
            raise FormatError(f"{type_name}: row length {K} is not a multiple of the block size {bs}")
        rows = math.prod(shape[:-1])
        data = np.ascontiguousarray(raw, dtype=np.uint8)
        if data.size != rows * (K // bs) * ts:
            raise FormatError(f"{type_name}: expected {rows * (K // bs) * ts} bytes for shape {shape}, got {data.size}")
        out = np.empty((rows, K), dtype=np.float32)
        if rows and K:
            get_kernel("gguf_iq", backend, "decode")(type_name, data.reshape(rows, -1), out)
        return out.reshape(shape)
    from ..codec import get_codec

    return get_codec(type_name).decode_bytes(np.ascontiguousarray(raw, dtype=np.uint8), shape, backend=backend)


class _Cursor:
    def __init__(self, buf: Any, size: int, path: str) -> None:
        self.buf, self.size, self.pos, self.path = buf, size, 0, path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(f"{self.path}: {what}: needs {n} bytes at offset {self.pos}, "
                              f"but the file has {self.size - self.pos} left")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.unpack("<Q", f"{what} (length)")
        self.need(n, what)
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: {what}: not valid UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9:
            if depth > 2:
                raise FormatError(f"{self.path}: {what}: arrays nested too deeply")
            et = self.unpack("<I", f"{what} (array element type)")
            n = self.unpack("<Q", f"{what} (array length)")
            if et in _SCALAR:
                size = struct.calcsize(_SCALAR[et])
                self.need(n * size, f"{what} ({n} array elements)")
                a = np.frombuffer(self.buf, dtype=np.dtype(_SCALAR[et]), count=n, offset=self.pos).copy()
                self.pos += n * size
                return a
            if et not in (8, 9):
                raise FormatError(f"{self.path}: {what}: unknown array element type {et}")
            self.need(n * 8, f"{what} ({n} array elements, at least 8 bytes each)")
            return [self.value(et, f"{what}[{i}]", depth + 1) for i in range(n)]
        raise FormatError(f"{self.path}: {what}: unknown metadata value type {vtype}")


def read(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse a GGUF file's header and tensor table (the tensor data stays memory-mapped)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            raise FormatError(f"{path}: header: expected at least 24 bytes, got {size}")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(path, mm, size)
    except BaseException:
        mm.close()
        raise


def _parse(path: str, mm: Any, size: int) -> GGUFFile:
    c = _Cursor(mm, size, path)
    magic = bytes(mm[:4])
    if magic != b"GGUF":
        raise FormatError(f"{path}: magic: expected b'GGUF', got {magic!r}")
    c.pos = 4
    version = c.unpack("<I", "version")
    if version not in (2, 3):
        raise FormatError(f"{path}: version: expected 2 or 3, got {version}")
    n_tensors = c.unpack("<Q", "tensor count")
    n_kv = c.unpack("<Q", "metadata count")
    # each metadata entry takes at least 8 + 4 bytes, each tensor entry at least 8 + 4 + 4 + 8
    if n_kv * 12 > size - c.pos:
        raise FormatError(f"{path}: metadata count: {n_kv} entries cannot fit in {size} bytes")
    if n_tensors * 24 > size - c.pos:
        raise FormatError(f"{path}: tensor count: {n_tensors} entries cannot fit in {size} bytes")
    meta: dict[str, Any] = {}
    for i in range(n_kv):
        key = c.string(f"metadata entry {i} key")
        vtype = c.unpack("<I", f"metadata {key!r} type")
        meta[key] = c.value(vtype, f"metadata {key!r}")
    align = meta.get("general.alignment", 32)
    if not isinstance(align, (int, np.integer)) or isinstance(align, bool) or align < 1 or align & (align - 1):
        raise FormatError(f"{path}: metadata 'general.alignment': expected a power of two, got {align!r}")
    align = int(align)
    raw_infos = []
    for i in range(n_tensors):
        name = c.string(f"tensor {i} name")
        nd = c.unpack("<I", f"tensor {name!r} dimension count")
        if nd < 1 or nd > _MAX_DIMS:
            raise FormatError(f"{path}: tensor {name!r} dimension count: expected 1..{_MAX_DIMS}, got {nd}")
        ne = [c.unpack("<Q", f"tensor {name!r} ne[{d}]") for d in range(nd)]
        t = c.unpack("<I", f"tensor {name!r} type")
        off = c.unpack("<Q", f"tensor {name!r} offset")
        raw_infos.append((name, ne, t, off))
    data_offset = -(-c.pos // align) * align
    tensors = []
    seen = set()
    for name, ne, t, off in raw_infos:
        if name in seen:
            raise FormatError(f"{path}: tensor {name!r}: duplicate name")
        seen.add(name)
        if t not in BLOCK:
            raise FormatError(f"{path}: tensor {name!r} type: unknown ggml type {t}")
        tname, bs, ts = BLOCK[t]
        if any(d > size * 8 for d in ne) or math.prod(ne) > size * 64:
            raise FormatError(f"{path}: tensor {name!r} shape: {ne} cannot fit in a {size}-byte file")
        if ne[0] % bs:
            raise FormatError(f"{path}: tensor {name!r} ne[0]: expected a multiple of the {tname} block size {bs}, got {ne[0]}")
        nbytes = math.prod(ne) // bs * ts
        if off % align:
            raise FormatError(f"{path}: tensor {name!r} offset: {off} is not a multiple of the alignment {align}")
        start = data_offset + off
        if start + nbytes > size:
            raise FormatError(f"{path}: tensor {name!r} data: {nbytes} bytes at offset {start} run past the end "
                              f"of the {size}-byte file")
        tensors.append(TensorInfo(name, tuple(int(d) for d in reversed(ne)), t, start, nbytes))
    return GGUFFile(path, version, meta, tensors, data_offset, mm)
