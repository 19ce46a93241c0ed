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

from .. import _arrays
from ..errors import FormatError
from .safetensors import AtomicWriter

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

# ---- the reader's limits (docs/reliability.md): past one of them a file is refused ---------------
MAX_TENSORS = 1 << 18  # 262 144 tensors
MAX_METADATA_VALUES = 1 << 22  # 4 194 304 metadata values that are Python objects: each key's value,
# each string and each array inside an array (numeric arrays are read whole, at memcpy speed)
MAX_ARRAY_NESTING = 3  # an array of arrays of arrays; deeper is refused
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ELEM_DTYPE = {k: np.dtype(v) for k, v in _SCALAR.items()}
_TENSOR_ENTRY = {nd: struct.Struct(f"<{nd}QIQ") for nd in range(1, _MAX_DIMS + 1)}  # ne[], type, offset
_ARRAY_HEAD = struct.Struct("<IQ")


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
    metadata_types: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """GGUF value type of each metadata key (and the element type of arrays)."""

    def tensor(self, name: str) -> TensorInfo:
        index = self.__dict__.get("_by_name")
        if index is None or len(index) != len(self.tensors):  # built once (names are unique: checked on read)
            index = self.__dict__["_by_name"] = {t.name: t for t in self.tensors}
        try:
            return index[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes (a read-only uint8 view of the memory-mapped file)."""
        t = self.tensor(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def decode(self, name: str, *, backend: str = "cpu") -> np.ndarray:
        """The tensor as float32 (integer types as stored), numpy order."""
        t = self.tensor(name)
        return dequantize(self.raw(name), t.type_name, t.shape, backend=backend)

    def names(self) -> list[str]:
        """Tensor names in file order."""
        return [t.name for t in self.tensors]

    def get(self, name: str, *, copy: bool = True) -> Any:
        """A QTensor with ggml's exact block bytes for quantized types (decode with lowbit's GGUF
        codecs), a numpy array for plain types (BF16 as ml_dtypes' bfloat16 when installed), float32
        for the grid i-quants (decoded: no encoder for them)."""
        from ..codec import QTensor, get_codec

        t = self.tensor(name)
        raw = self.raw(name)
        if t.type_name in codec_types():
            codec = get_codec(t.type_name)
            data = raw.reshape(t.shape[:-1] + (codec.row_bytes(t.shape[-1]),))
            return QTensor(data.copy() if copy else data, {}, t.shape, codec)
        if t.type_name == "bf16":
            try:
                import ml_dtypes

                a = raw.view(ml_dtypes.bfloat16).reshape(t.shape)
                return a.copy() if copy else a
            except ImportError:
                pass
        return self.decode(name)

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
    """Reads a GGUF header front to back. Every length is checked against the bytes left before
    it is used, and every value that becomes a Python object is charged to ``budget`` (at most
    MAX_METADATA_VALUES per file), so the cost of a parse is bounded per byte and per value."""

    def __init__(self, buf: Any, size: int, path: str) -> None:
        self.buf, self.size, self.pos, self.path = buf, size, 0, path
        self.bytes = np.frombuffer(buf, dtype=np.uint8)  # one view: np.frombuffer per array costs microseconds
        self.budget = MAX_METADATA_VALUES

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(f"{self.path}: {what}: needs {n} bytes at offset {self.pos}, "
                              f"but the file has {self.size - self.pos} left")

    def charge(self, n: int, what: str) -> None:
        """Account for ``n`` more metadata values (FormatError past the limit)."""
        self.budget -= n
        if self.budget < 0:
            raise FormatError(f"{self.path}: {what}: more than {MAX_METADATA_VALUES} metadata values (the reader's limit)")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str, *args: Any) -> str:
        """A length-prefixed UTF-8 string; ``what.format(*args)`` names it in an error (formatted
        only then: the tensor table's loop stays cheap)."""
        if self.pos + 8 > self.size:
            self.need(8, what.format(*args) + " (length)")
        (n,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        if n > self.size - self.pos:
            self.need(n, what.format(*args))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: {what.format(*args)}: not valid UTF-8") from None

    def _uniform_strings(self, n: int) -> list[str] | None:
        """``n`` strings that all have the first one's length L, read with numpy in one pass (the
        floods of equal strings a hostile file repeats, and fixed-width tables); None when the
        lengths differ, a string holds a NUL byte (numpy's fixed-width bytes would drop trailing
        NULs) or is not UTF-8, so the general loop runs and names the culprit."""
        if n < 64 or self.pos + 8 > self.size:
            return None
        (L,) = _U64.unpack_from(self.buf, self.pos)
        stride = 8 + L
        if L > 1 << 16 or n * stride > self.size - self.pos:
            return None
        rec = self.bytes[self.pos:self.pos + n * stride].reshape(n, stride)
        if not (rec[:, :8].copy().view("<u8").reshape(n) == L).all():
            return None
        if L == 0:
            self.pos += n * stride
            return [""] * n  # str is immutable: one object n times is n equal strings
        body = rec[:, 8:]
        if not body.all():  # a NUL inside some string: the split below would cut it
            return None
        # the strings joined by NULs in one buffer (a separator column), one decode, one split
        sep = np.zeros((n, L + 1), np.uint8)
        sep[:, :L] = body
        try:
            out = sep.tobytes().decode("utf-8").split("\0")
        except UnicodeDecodeError:
            return None
        out.pop()  # the empty piece after the last separator
        self.pos += n * stride
        return out

    def _uniform_arrays(self, n: int, depth: int, what: str) -> list[Any] | None:
        """``n`` nested arrays that share the first one's scalar element type and length c, read as
        one (n, c) numpy copy whose rows are returned (the values the general path gives, one array
        per element); None when they differ (the general path runs)."""
        if n < 64 or depth + 1 >= MAX_ARRAY_NESTING or self.pos + 12 > self.size:
            return None
        et, c = _ARRAY_HEAD.unpack_from(self.buf, self.pos)
        if et not in _SCALAR or c > 1 << 16:
            return None
        isz = struct.calcsize(_SCALAR[et])
        stride = 12 + c * isz
        if n * stride > self.size - self.pos:
            return None
        rec = self.bytes[self.pos:self.pos + n * stride].reshape(n, stride)
        head = np.ascontiguousarray(rec[:, :12])
        if not ((head[:, :4].copy().view("<u4").reshape(n) == et).all()
                and (head[:, 4:].copy().view("<u8").reshape(n) == c).all()):
            return None
        vals = np.ascontiguousarray(rec[:, 12:]).view(_ELEM_DTYPE[et]).reshape(n, c)
        self.pos += n * stride
        if c == 0:  # n empty arrays: one read-only empty array n times (nothing to share but the dtype)
            empty = vals[0].copy()
            empty.flags.writeable = False
            return [empty] * n
        return list(vals.copy())

    def strings(self, n: int, what: str) -> list[str]:
        """``n`` strings back to back (an array of strings): equal-length runs in one numpy pass
        (:meth:`_uniform_strings`), else one tight loop over the length fields, then one UTF-8 decode
        of all of them joined (a per-string decode only to name a bad one)."""
        fast = self._uniform_strings(n)
        if fast is not None:
            return fast
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        spans = []
        for i in range(n):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"{what}[{i}] (length)")
            (m,) = unpack(buf, pos)
            pos += 8
            if m > size - pos:
                self.pos = pos
                self.need(m, f"{what}[{i}]")
            spans.append((pos, pos + m))
            pos += m
        self.pos = pos
        pieces = [buf[a:b] for a, b in spans]
        joined = b"\0".join(pieces)
        if joined.count(b"\0") == max(n - 1, 0):  # no NUL inside a string: split the joined text
            try:
                return joined.decode("utf-8").split("\0") if n else []
            except UnicodeDecodeError:
                pass  # find the string to name below
        out = []
        for i, b in enumerate(pieces):
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"{self.path}: {what}[{i}]: not valid UTF-8") from None
        return out

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9:
            if depth >= MAX_ARRAY_NESTING:
                raise FormatError(f"{self.path}: {what}: arrays nested deeper than {MAX_ARRAY_NESTING} levels")
            self.need(12, f"{what} (array element type and length)")
            et, n = _ARRAY_HEAD.unpack_from(self.buf, self.pos)
            self.pos += 12
            if et in _SCALAR:
                size = struct.calcsize(_SCALAR[et])
                self.need(n * size, f"{what} ({n} array elements)")
                a = self.bytes[self.pos:self.pos + n * size].view(_ELEM_DTYPE[et]).copy()
                self.pos += n * size
                return a
            if et not in (8, 9):
                raise FormatError(f"{self.path}: {what}: unknown array element type {et}")
            self.need(n * (8 if et == 8 else 12), f"{what} ({n} array elements, at least {8 if et == 8 else 12} bytes each)")
            self.charge(n, what)
            if et == 8:
                return self.strings(n, what)
            fast = self._uniform_arrays(n, depth, what)
            if fast is not None:
                return fast
            sub = f"{what}[...]"  # (one name for every element: formatting one per element would dominate)
            return [self.value(9, sub, depth + 1) for _ in range(n)]
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
    try:
        return _parse_with(c, path, mm, size)
    finally:
        c.bytes = None  # drop the cursor's view, so the map can be closed on failure


def _parse_with(c: _Cursor, path: str, mm: Any, size: int) -> GGUFFile:
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
    if n_tensors > MAX_TENSORS:
        raise FormatError(f"{path}: tensor count: {n_tensors} exceeds the limit of {MAX_TENSORS}")
    c.charge(n_kv, "metadata count")
    meta: dict[str, Any] = {}
    types: dict[str, tuple[int, int | None]] = {}
    for i in range(n_kv):
        key = c.string("metadata entry {} key", i)
        if key in meta:
            raise FormatError(f"{path}: metadata {key!r}: duplicate key")
        vtype = c.unpack("<I", f"metadata {key!r} type")
        if vtype == 9:  # remember the element type, to write the same bytes back
            c.need(12, f"metadata {key!r} (array element type and length)")
            types[key] = (9, struct.unpack_from("<I", mm, c.pos)[0])
        else:
            types[key] = (vtype, None)
        meta[key] = c.value(vtype, f"metadata {key!r}")
    align = meta.get("general.alignment", 32)
    if not isinstance(align, (int, np.integer)) or isinstance(align, bool) or align < 1 or align & (align - 1):
        raise FormatError(f"{path}: metadata 'general.alignment': expected a power of two, got {align!r}")
    align = int(align)
    raw_infos = []
    for i in range(n_tensors):  # one struct call per entry after its name
        name = c.string("tensor {} name", i)
        nd = c.unpack("<I", f"tensor {name!r} dimension count") if c.pos + 4 > size else _U32.unpack_from(mm, c.pos)[0]
        c.pos += 4
        if nd < 1 or nd > _MAX_DIMS:
            raise FormatError(f"{path}: tensor {name!r} dimension count: expected 1..{_MAX_DIMS}, got {nd}")
        entry = _TENSOR_ENTRY[nd]
        if c.pos + entry.size > size:
            c.need(entry.size, f"tensor {name!r} dimensions, type and offset")
        *ne, t, off = entry.unpack_from(mm, c.pos)
        c.pos += entry.size
        raw_infos.append((name, ne, t, off))
    data_offset = -(-c.pos // align) * align
    tensors = []
    seen: set[str] = set()
    for name, ne, t, off in raw_infos:
        if name in seen:
            raise FormatError(f"{path}: tensor {name!r}: duplicate name")
        seen.add(name)
        if t not in BLOCK:
            raise FormatError(f"{path}: tensor {name!r} type: unknown ggml type {t}")
        tname, bs, ts = BLOCK[t]
        if any(d > size * 8 for d in ne) or math.prod(ne) > size * 64 or not _arrays.indexable(tuple(ne), 4):
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
    _check_no_overlap(path, tensors)
    return GGUFFile(path, version, meta, tensors, data_offset, mm, types)


def _check_no_overlap(path: str, tensors: list[TensorInfo]) -> None:
    """FormatError when two tensors' byte ranges share a byte: one pass over the table sorted by
    offset (tensors of zero bytes hold nothing and overlap nothing)."""
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise FormatError(f"{path}: tensors {an!r} and {bn!r} overlap (bytes {b0}..{a1 - 1} belong to both)")


# ---- the lowbit container interface: names(), get(), load(), open_file(), save() ------------------

def codec_types() -> frozenset[str]:
    """The ggml types lowbit reads and writes as codes (a registered GGUF codec each): every
    quantized type, the grid i-quants once their encoder is registered; the rest decode only."""
    global _CODEC_TYPES_CACHE
    if _CODEC_TYPES_CACHE is None:
        from ..codec import list_codecs

        have = set(list_codecs())
        _CODEC_TYPES_CACHE = frozenset(name for name, _, _ in BLOCK.values()
                                       if name not in _PLAIN and name != "bf16" and (name not in _IQ or name in have))
    return _CODEC_TYPES_CACHE


_CODEC_TYPES_CACHE: frozenset[str] | None = None


def __getattr__(name: str) -> Any:
    if name == "_CODEC_TYPES":  # the old constant, computed on first use (the registry must be loaded)
        return codec_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_TYPE_ID = {name: tid for tid, (name, _, _) in BLOCK.items()}




def open_file(path: str | os.PathLike[str]) -> GGUFFile:
    """Lazy access (``names()``, ``get(name)``, ``metadata``); use as a context manager."""
    return read(path)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    with read(path) as f:
        return {n: f.get(n) for n in f.names()}


# value type ids (gguf-py's GGUFValueType)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)


def infer_type(value: Any) -> tuple[int, int | None]:
    """A GGUF value type for a Python value: bool, int (uint32/int32, 64-bit when needed),
    float (float32), str, and lists/arrays of those."""
    if isinstance(value, (bool, np.bool_)):
        return BOOL, None
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 2**32:
            return UINT32, None
        if -(2**31) <= v < 2**31:
            return INT32, None
        return (UINT64 if v >= 0 else INT64), None
    if isinstance(value, (float, np.floating)):
        return FLOAT32, None
    if isinstance(value, str):
        return STRING, None
    if isinstance(value, np.ndarray):
        code = {np.dtype("<u1"): UINT8, np.dtype("i1"): INT8, np.dtype("<u2"): UINT16, np.dtype("<i2"): INT16,
                np.dtype("<u4"): UINT32, np.dtype("<i4"): INT32, np.dtype("<f4"): FLOAT32, np.dtype("?"): BOOL,
                np.dtype("<u8"): UINT64, np.dtype("<i8"): INT64, np.dtype("<f8"): FLOAT64}.get(value.dtype)
        if code is None:
            raise FormatError(f"GGUF metadata: arrays of {value.dtype} have no GGUF type")
        return ARRAY, code
    if isinstance(value, (list, tuple)):
        if not value:
            return ARRAY, STRING
        return ARRAY, infer_type(value[0])[0]
    raise FormatError(f"GGUF metadata: no GGUF type for a {type(value).__name__}")


def _encode_value(vtype: int, value: Any, elem: int | None, key: str) -> bytes:
    if vtype in _SCALAR:
        return struct.pack(_SCALAR[vtype], value)
    if vtype == STRING:
        b = str(value).encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if vtype == ARRAY:
        assert elem is not None
        if elem in _SCALAR:
            a = np.asarray(value, dtype=np.dtype(_SCALAR[elem]))
            return struct.pack("<IQ", elem, a.size) + a.tobytes()
        items = list(value)
        return struct.pack("<IQ", elem, len(items)) + b"".join(
            _encode_value(elem, v, infer_type(v)[1] if elem == ARRAY else None, key) for v in items)
    raise FormatError(f"GGUF metadata {key!r}: unknown value type {vtype}")


class Writer(AtomicWriter):
    """Write a GGUF v3 file tensor by tensor, atomically (as the safetensors Writer: the header is
    computed from the declared tensors first, data is streamed, and the file only gets its name
    when complete)."""

    def __init__(self, path: str | os.PathLike[str], tensors: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, Any] | None = None, metadata_types: dict[str, tuple[int, int | None]] | None = None) -> None:
        from .safetensors import _temporary  # the same O_TMPFILE / rename machinery

        from pathlib import Path

        self.path = Path(path)
        meta = dict(metadata or {})
        types = dict(metadata_types or {})
        align = int(meta.get("general.alignment", 32))
        kv = b""
        for key, value in meta.items():
            vtype, elem = types.get(key) or infer_type(value)
            kb = key.encode("utf-8")
            kv += struct.pack("<Q", len(kb)) + kb + struct.pack("<I", vtype) + _encode_value(vtype, value, elem, key)
        infos = b""
        self._order: list[tuple[str, int, int]] = []
        off = 0
        for name, type_name, shape in tensors:
            if type_name not in _TYPE_ID:
                raise FormatError(f"GGUF writer: tensor {name!r}: unknown ggml type {type_name!r}")
            tid = _TYPE_ID[type_name]
            _, bs, ts = BLOCK[tid]
            shape = tuple(int(d) for d in shape) or (1,)
            if len(shape) > _MAX_DIMS or shape[-1] % bs:
                raise FormatError(f"GGUF writer: tensor {name!r}: shape {shape} does not fit {type_name} "
                                  f"(at most {_MAX_DIMS} dims, rows a multiple of {bs})")
            nbytes = math.prod(shape) // bs * ts
            nb = name.encode("utf-8")
            infos += struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(shape))
            infos += b"".join(struct.pack("<Q", d) for d in reversed(shape)) + struct.pack("<IQ", tid, off)
            self._order.append((name, nbytes, off))
            off += -(-nbytes // align) * align
        head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kv + infos
        head += b"\0" * (-len(head) % align)
        self._f, self._tmp = _temporary(self.path)
        self._f.write(head)
        self._align, self._next, self._done = align, 0, False

    def write(self, name: str, data: Any) -> None:
        from .. import _arrays

        if self._next >= len(self._order) or self._order[self._next][0] != name:
            raise FormatError(f"GGUF writer: write order: expected {self._order[self._next][0] if self._next < len(self._order) else 'nothing'!r}, got {name!r}")
        a = np.ascontiguousarray(_arrays.to_numpy(data))
        n = self._order[self._next][1]
        if a.nbytes != n:
            raise FormatError(f"GGUF writer: tensor {name!r}: expected {n} bytes, got {a.nbytes}")
        self._f.write(a.view(np.uint8).reshape(-1).data if a.size else b"")
        self._f.write(b"\0" * (-n % self._align))
        self._next += 1

    def close(self) -> None:
        from .safetensors import _publish

        if self._done:
            return
        if self._next != len(self._order):
            self.abort()
            raise FormatError(f"GGUF writer: {len(self._order) - self._next} declared tensor(s) were never written")
        self._f.flush()
        os.fsync(self._f.fileno())
        _publish(self._f, self._tmp, self.path)
        self._done = True



_PLAIN_OUT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int8": "i8", "int16": "i16", "int32": "i32",
              "int64": "i64", "float64": "f64"}


def entry(name: str, t: Any) -> tuple[str, str, tuple[int, ...], Any]:
    """(name, ggml type name, numpy shape, bytes) of a QTensor with a GGUF codec or a plain array."""
    from .. import _arrays
    from ..codec import QTensor

    if isinstance(t, QTensor):
        if t.codec_id not in codec_types() or t.aux or t.codec != type(t.codec)():
            raise FormatError(f"GGUF writer: tensor {name!r}: codec {t.codec!r} is not a GGUF type "
                              f"(GGUF holds {sorted(codec_types())}; convert it, or save as safetensors)")
        return name, t.codec_id, t.shape, _arrays.to_numpy(t.data)
    a = _arrays.to_numpy(t)
    tn = _PLAIN_OUT.get(a.dtype.name)
    if tn is None:
        raise FormatError(f"GGUF writer: tensor {name!r}: dtype {a.dtype.name} has no GGUF type")
    return name, tn, tuple(a.shape), a


def save(path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, Any] | None = None, *,
         metadata_types: dict[str, tuple[int, int | None]] | None = None) -> None:
    """Write QTensors of GGUF codecs (their block bytes as they are) and plain arrays to a GGUF
    file; metadata values keep ``metadata_types`` where given (e.g. a source file's), else their
    types are inferred."""
    entries = [entry(n, t) for n, t in tensors.items()]
    with Writer(path, [(n, tn, s) for n, tn, s, _ in entries], metadata, metadata_types) as w:
        for n, _, _, a in entries:
            w.write(n, a)
