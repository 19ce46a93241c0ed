"""safetensors, read and written by lowbit itself: streaming, atomic, memory-mapped, hardened.

The container: 8 bytes little-endian header length ``N``, ``N`` bytes of UTF-8 JSON (padded with
spaces so the data starts 8-byte aligned), then the tensors' bytes back to back. The JSON maps
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
start of the data) and ``"__metadata__"`` to a str→str dict.

lowbit's own layout on top: a QTensor named ``w`` is stored as its encoded bytes under ``w`` plus
one tensor ``w.__aux__.<name>`` per side array; the metadata key ``"lowbit"`` holds JSON
``{"format": 1, "tensors": {"w": {"config": {...}, "shape": [...], "aux": [...]}}}``. Where the
encoded bytes *are* a safetensors dtype (FP8 E4M3/E5M2, E8M0, FP4 E2M1 with the even element in the
low nibble, int8), the tensor carries that dtype and the logical shape, so other tools read it
natively; anything else is ``U8`` with the byte shape.

Writing goes to a temporary file in the target's directory that is renamed over the target only
when every tensor has been written: an interrupted write leaves the old file (or nothing). The
header is written first, from the tensors' sizes, so tensors can be produced one at a time
(:class:`Writer`) and peak memory stays near the largest tensor.

Reading validates the header against the file before touching data: the header length, JSON,
every dtype, shape and offset, overlaps and holes, within the limits ``MAX_HEADER``,
``MAX_JSON_VALUES``, ``MAX_TENSORS`` and ``MAX_JSON_DEPTH``; a violation is a :class:`FormatError`
naming the tensor and the field. Tensors are memory-mapped: :func:`open_file` reads one without the
rest. Files written with ``checksums=True`` (the default of :func:`save`) carry a SHA-256 per tensor
and one of the header (``lowbit.header_sha256``); readers check them by default, the header when
the file is opened and each tensor on its first read.

>>> import numpy as np, lowbit, tempfile, os
>>> q = lowbit.encode(np.ones((2, 4), np.float32), "fp8_e4m3", scale="channel")
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> lowbit.save(path, {"w": q, "bias": np.zeros(2, np.float32)})
>>> back = lowbit.load(path)
>>> lowbit.decode(back["w"]).tolist(), back["bias"].tolist()
([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], [0.0, 0.0])
>>> with lowbit.open_file(path) as f:
...     f.keys(), f.info("w")["dtype"]
(['bias', 'w', 'w.__aux__.scale'], 'F8_E4M3')
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Self

import numpy as np

from .. import _arrays
from ..codec import QTensor, get_codec
from ..errors import FormatError, LowbitError

__all__ = ["save", "load", "open_file", "SafetensorsFile", "Writer", "AUX_SEP", "METADATA_KEY", "DTYPE_BITS"]

AUX_SEP = ".__aux__."
METADATA_KEY = "lowbit"
CHECKSUM_KEY = "lowbit.sha256"  # JSON {stored tensor name: sha256 hex of its bytes}
HEADER_DIGEST_KEY = "lowbit.header_sha256"  # sha256 of the header bytes with this value set to 64 zeros
_FORMAT_VERSION = 1

# ---- the reader's limits (docs/reliability.md): a header past one of them is refused unparsed ----
MAX_HEADER = 100 << 20  # header bytes (safetensors' own limit is 100 MB)
MAX_TENSORS = 1 << 18  # 262 144 tensors in one file
MAX_JSON_VALUES = 1 << 22  # 4 194 304 of the bytes ',' '[' '{' in the header, strings included: an
# upper bound on its JSON values (each value but a container's first needs a ',', each container
# a bracket), so the parse's cost (about 0.5 us per empty list, the worst value) is bounded first
MAX_JSON_DEPTH = 32  # nesting of lowbit's own metadata values (the header itself is 3 deep)

# dtype name -> (bits per element, numpy dtype or None when numpy has no such type)
DTYPE_BITS: dict[str, tuple[int, Any]] = {
    "BOOL": (8, np.bool_), "U8": (8, np.uint8), "I8": (8, np.int8), "U16": (16, np.uint16),
    "I16": (16, np.int16), "U32": (32, np.uint32), "I32": (32, np.int32), "U64": (64, np.uint64),
    "I64": (64, np.int64), "F16": (16, np.float16), "F32": (32, np.float32), "F64": (64, np.float64),
    "C64": (64, np.complex64), "BF16": (16, None), "F8_E4M3": (8, None), "F8_E5M2": (8, None),
    "F8_E8M0": (8, None), "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
}
_NUMPY_TO_DTYPE = {np.dtype(t).name: k for k, (_, t) in DTYPE_BITS.items() if t is not None}
# ml_dtypes names for the dtypes numpy lacks (used when ml_dtypes is installed)
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu"}

# element formats whose packed codes are exactly a safetensors dtype: (format name, storage bits)
_NATIVE = {("float8_e4m3fn", 8): "F8_E4M3", ("float8_e5m2", 8): "F8_E5M2", ("float8_e8m0fnu", 8): "F8_E8M0",
           ("float4_e2m1fn", 4): "F4", ("int8", 8): "I8", ("int8_sym", 8): "I8"}


def _dtype_of(a: np.ndarray) -> str:
    name = a.dtype.name
    if name in _NUMPY_TO_DTYPE:
        return _NUMPY_TO_DTYPE[name]
    for k, v in _ML_DTYPES.items():
        if name == v:
            return k
    raise FormatError(f"safetensors: dtype {name} has no safetensors equivalent")


def _nbytes(dtype: str, shape: tuple[int, ...], where: str) -> int:
    bits = DTYPE_BITS[dtype][0] * math.prod(shape)
    if bits % 8:
        raise FormatError(f"{where}: {dtype} {list(shape)} is not a whole number of bytes")
    return bits // 8


def native_dtype_for(codec: Any) -> str | None:
    """The safetensors dtype that holds a codec's data as is (logical shape), or None for U8."""
    enc = getattr(codec, "encoding", None)
    if enc is None or not hasattr(enc, "fmt"):
        return None
    return _NATIVE.get((enc.fmt.name, enc.storage_bits))


def native_dtype(q: QTensor) -> str | None:
    """The safetensors dtype that holds ``q.data`` as is (logical shape), or None for U8."""
    return native_dtype_for(q.codec)


# ---- writing -----------------------------------------------------------------------------------

class AtomicWriter:
    """What both containers' writers share: a temporary file (``self._f``, ``self._tmp`` from
    :func:`_temporary`) that ``close()`` publishes and ``abort()`` drops; as a context manager,
    an exception aborts."""

    _f: Any
    _tmp: Path | None
    _done: bool

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the temporary file; the target is left as it was."""
        if not self._done:
            self._f.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Writer(AtomicWriter):
    """Write a safetensors file tensor by tensor: declare every tensor first, then ``write`` them
    in that order; ``close()`` renames the finished file over the target. A ``with`` block that
    exits with an exception (or a Writer that is garbage collected unfinished) removes the
    temporary file and leaves the target untouched.

    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> with Writer(p, [("x", "F32", (2,)), ("y", "U8", (3,))], {"k": "v"}) as w:
    ...     w.write("x", np.array([1, 2], np.float32)); w.write("y", np.arange(3, dtype=np.uint8))
    >>> open_file(p).array("x").tolist()
    [1.0, 2.0]
    """

    def __init__(self, path: str | os.PathLike[str], specs: Iterable[tuple[str, str, tuple[int, ...]]],
                 metadata: Mapping[str, str] | None = None, *, checksums: bool = False) -> None:
        self.path = Path(path)
        specs = list(specs)
        header: dict[str, Any] = {}
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        for key in (CHECKSUM_KEY, HEADER_DIGEST_KEY):
            if key in meta:
                raise FormatError(f"safetensors: metadata key {key!r} is reserved for lowbit")
        if checksums:
            # placeholders of the digests' exact length, patched in place by close()
            meta[CHECKSUM_KEY] = _checksum_json({name: "0" * 64 for name, _, _ in specs})
            meta[HEADER_DIGEST_KEY] = "0" * 64
        if meta:
            header["__metadata__"] = meta
        self._hashes: dict[str, Any] | None = {} if checksums else None
        self._order: list[tuple[str, int]] = []
        off = 0
        for name, dtype, shape in specs:
            if not isinstance(name, str) or name == "__metadata__" or name in header:
                raise FormatError(f"safetensors: tensor name {name!r} is reserved or repeated")
            if dtype not in DTYPE_BITS:
                raise FormatError(f"safetensors: tensor {name!r}: unknown dtype {dtype!r}")
            shape = tuple(int(d) for d in shape)
            n = _nbytes(dtype, shape, f"safetensors: tensor {name!r}")
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
            self._order.append((name, n))
            off += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-(8 + len(blob)) % 8)  # data starts 8-byte aligned
        self._header, self._meta = blob, meta
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f, self._tmp = _temporary(self.path)
        self._f.write(struct.pack("<Q", len(blob)) + blob)
        self._next = 0
        self._done = False

    def write(self, name: str, data: Any) -> None:
        """Write the next declared tensor: any array whose bytes are the tensor's bytes."""
        if self._next >= len(self._order) or self._order[self._next][0] != name:
            expected = self._order[self._next][0] if self._next < len(self._order) else "nothing more"
            raise FormatError(f"safetensors: write order: expected {expected!r}, got {name!r}")
        a = np.ascontiguousarray(_arrays.to_numpy(data))
        n = self._order[self._next][1]
        if a.nbytes != n:
            raise FormatError(f"safetensors: tensor {name!r}: expected {n} bytes, got {a.nbytes}")
        raw = a.view(np.uint8).reshape(-1).data if a.size else b""
        self._f.write(raw)
        if self._hashes is not None:
            self._hashes[name] = hashlib.sha256(raw).hexdigest()
        self._next += 1

    def close(self) -> None:
        """Check every tensor was written, flush to disk and rename over the target."""
        if self._done:
            return
        if self._next != len(self._order):
            self.abort()
            raise FormatError(f"safetensors: {len(self._order) - self._next} declared tensor(s) were never written")
        if self._hashes is not None:  # patch the real digests over the placeholders
            old = json.dumps(self._meta[CHECKSUM_KEY]).encode()
            new = json.dumps(_checksum_json(self._hashes)).encode()
            assert len(old) == len(new)
            header = self._header.replace(old, new, 1)
            # the header digest: over the final header with its own field still zeros
            zeros = _digest_field("0" * 64)
            assert header.count(zeros) == 1
            header = header.replace(zeros, _digest_field(hashlib.sha256(header).hexdigest()))
            self._f.flush()
            os.pwrite(self._f.fileno(), header, 8)
        self._f.flush()
        os.fsync(self._f.fileno())
        _publish(self._f, self._tmp, self.path)
        self._done = True


    def __del__(self) -> None:
        try:
            self.abort()
        except Exception:
            pass


def user_metadata(meta: Mapping[str, str]) -> dict[str, str]:
    """A file's metadata without lowbit's own keys (what conversions carry over)."""
    return {k: v for k, v in meta.items() if k not in (METADATA_KEY, CHECKSUM_KEY, HEADER_DIGEST_KEY)}


def _checksum_json(hashes: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(hashes.items())), separators=(",", ":"))


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status;
    os.umask can only be read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 less the umask. Temporary
    files are created 0600 (mkstemp) or with whatever mode O_TMPFILE was given; the published
    file gets this mode, like any file the user's tools write."""
    return 0o666 & ~_umask()


def _temporary(target: Path) -> tuple[Any, Path | None]:
    """An open file for the new contents, with the mode :func:`new_file_mode` gives (it follows
    the umask). On Linux an *unnamed* file in the target's directory (O_TMPFILE): if the process
    dies, even by SIGKILL, nothing is left behind. Elsewhere a hidden named temporary (removed on
    any exception)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.open(target.parent, flag | os.O_WRONLY, 0o666)  # the kernel applies the umask
            return os.fdopen(fd, "wb"), None
        except OSError:
            pass  # a filesystem without O_TMPFILE support
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.fchmod(fd, new_file_mode())  # mkstemp makes 0600
    return os.fdopen(fd, "wb"), Path(tmp)


def _link_unnamed(fd: int, dst: Path) -> None:
    """linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, dst, AT_SYMLINK_FOLLOW): give an O_TMPFILE
    file a name. (os.link does not pass AT_SYMLINK_FOLLOW on every Python, hence ctypes.)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
    if libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(dst), AT_SYMLINK_FOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dst))


def _publish(f: Any, tmp: Path | None, target: Path) -> None:
    """Give the finished file its name atomically (readers see the old file or the new one)."""
    if tmp is None:  # unnamed: link it under a temporary name, then rename over the target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{id(f)}.partial")
        _link_unnamed(f.fileno(), tmp)
    f.close()
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def layout_entries(name: str, t: Any) -> list[tuple[str, str, tuple[int, ...], Any]]:
    """The (name, dtype, shape, data) safetensors entries that store ``t`` in lowbit's layout."""
    if isinstance(t, QTensor):
        nat = native_dtype(t)
        data = _arrays.to_numpy(t.data)
        out = [(name, nat or "U8", t.shape if nat else tuple(data.shape), data)]
        for k in sorted(t.aux):
            a = _arrays.to_numpy(t.aux[k])
            out.append((name + AUX_SEP + k, _dtype_of(a), tuple(a.shape), a))
        return out
    a = _arrays.to_numpy(t)
    return [(name, _dtype_of(a), tuple(a.shape), a)]


def layout_index(tensors: Mapping[str, Any]) -> str:
    """The ``"lowbit"`` metadata value describing the QTensors among ``tensors``."""
    index = {name: {"config": t.codec.get_config(), "shape": list(t.shape), "aux": sorted(t.aux)}
             for name, t in tensors.items() if isinstance(t, QTensor)}
    return json.dumps({"format": _FORMAT_VERSION, "tensors": index}, sort_keys=True)


def save(path: str | os.PathLike[str], tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None,
         *, checksums: bool = True) -> None:
    """Write QTensors and plain arrays to a safetensors file in lowbit's layout, atomically,
    with a SHA-256 of every stored tensor and of the header in the metadata (``checksums=False``
    to skip)."""
    for name in tensors:
        if not isinstance(name, str) or AUX_SEP in name:
            raise FormatError(f"save: tensor name {name!r}: expected a string without {AUX_SEP!r}")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if METADATA_KEY in meta:
        raise FormatError(f"save: metadata key {METADATA_KEY!r} is reserved for lowbit")
    meta[METADATA_KEY] = layout_index(tensors)
    entries = [e for name, t in tensors.items() for e in layout_entries(name, t)]
    with Writer(path, [(n, d, s) for n, d, s, _ in entries], meta, checksums=checksums) as w:
        for n, _, _, a in entries:
            w.write(n, a)


# ---- reading -----------------------------------------------------------------------------------

_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


def _digest_field(hexdigest: str) -> bytes:
    """The header bytes of the header-digest entry (the only place these bytes can occur: inside
    a JSON string the quotes would be escaped)."""
    return json.dumps({HEADER_DIGEST_KEY: hexdigest}, separators=(",", ":"))[1:-1].encode()


class _DuplicateKey(Exception):
    pass


def parse_json(raw: bytes | str, where: str, what: str = "header") -> Any:
    """The one JSON parse of the safetensors readers (the header, and the JSON that lowbit's
    metadata values hold). Bounded before parsing: at most MAX_JSON_VALUES values (counted as the
    bytes ',', '[', '{'); bounded while parsing: nesting past the parser's recursion guard, a
    repeated key, bad UTF-8 or bad JSON are FormatError naming ``where`` and ``what``."""
    b = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    counts = np.bincount(np.frombuffer(b, np.uint8), minlength=256)
    n_values = int(counts[ord(",")] + counts[ord("[")] + counts[ord("{")])
    if n_values > MAX_JSON_VALUES:
        raise FormatError(f"{where}: {what}: {n_values} JSON separators and brackets exceed the limit of "
                          f"{MAX_JSON_VALUES} values")
    try:
        return json.loads(b.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{where}: {what} is not UTF-8 JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{where}: {what}: JSON nested too deeply") from None
    except _DuplicateKey as e:
        raise FormatError(f"{where}: {what} repeats the key {e.args[0]!r}") from None


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), found level by level
    without recursion and without looking deeper than ``limit + 1``."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [c for c in level if isinstance(c, (list, dict))]
        if not containers:
            return depth
        depth += 1
        level = [v for c in containers for v in (c.values() if isinstance(c, dict) else c)]
    return depth


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # name the first repeated key
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return out


def parse_header(raw: bytes, where: str) -> dict[str, Any]:
    """The JSON object of a safetensors header, or FormatError (see :func:`parse_json`; not an
    object; more than MAX_TENSORS entries). Every reader of safetensors headers goes through here."""
    if raw.count(b'"data_offsets"') > MAX_TENSORS:  # every entry names it: refused unparsed
        raise FormatError(f"{where}: more than {MAX_TENSORS} tensor entries (the reader's limit)")
    header = parse_json(raw, where, "header")
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header: expected a JSON object")
    return header


class SafetensorsFile:
    """A validated, memory-mapped safetensors file. Tensors are read on demand.

    ``keys()`` lists every stored tensor, ``info(name)`` its dtype/shape/offsets, ``raw(name)`` its
    bytes (a read-only uint8 view into the map), ``array(name)`` a numpy array (ml_dtypes types
    for BF16/F8; raw bytes for F4/F6), ``get(name)`` a QTensor in lowbit's layout or an array.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool | None = None) -> None:
        self.path = Path(path)
        if verify not in (None, True, False):
            raise FormatError(f"safetensors: {path}: verify: expected None, True or False, got {verify!r}")
        self.verify_mode = verify
        self._verified: set[str] = set()
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise FormatError(f"safetensors: {path}: cannot open ({e.strerror})") from None
        try:
            self._parse()
        except BaseException:
            self._file.close()
            raise

    def _parse(self) -> None:
        where = f"safetensors: {self.path}"
        size = os.fstat(self._file.fileno()).st_size
        if size < 8:
            raise FormatError(f"{where}: file of {size} bytes is too short for a header")
        (n,) = struct.unpack("<Q", self._file.read(8))
        if n > min(MAX_HEADER, size - 8):
            raise FormatError(f"{where}: header length {n} exceeds the file ({size} bytes) or the {MAX_HEADER}-byte limit")
        raw_header = self._file.read(n)
        header = parse_header(raw_header, where)
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise FormatError(f"{where}: __metadata__: expected a str -> str object")
        self.metadata: dict[str, str] = meta
        if len(header) > MAX_TENSORS:
            raise FormatError(f"{where}: {len(header)} tensors exceed the limit of {MAX_TENSORS}")
        if self.verify_mode is not False and HEADER_DIGEST_KEY in meta:
            self._check_header_digest(raw_header, meta[HEADER_DIGEST_KEY], where)
        self._start = 8 + n
        data_len = size - self._start
        spans = []
        self._info: dict[str, dict[str, Any]] = {}
        for name, ent in header.items():  # messages are formatted only on failure (cheap per tensor)
            if not isinstance(ent, dict) or not set(ent) <= _ENTRY_KEYS:
                raise FormatError(f"{where}: tensor {name!r}: expected an object with the keys {sorted(_ENTRY_KEYS)}, "
                                  f"got {sorted(ent) if isinstance(ent, dict) else type(ent).__name__}")
            dtype, shape, offs = ent.get("dtype"), ent.get("shape"), ent.get("data_offsets")
            if dtype not in DTYPE_BITS:
                raise FormatError(f"{where}: tensor {name!r}: dtype: expected one of {sorted(DTYPE_BITS)}, got {dtype!r}")
            if type(shape) is not list or len(shape) > 64 or not all(type(d) is int for d in shape) \
                    or not _arrays.indexable(shape, max(DTYPE_BITS[dtype][0] // 8, 1)):
                raise FormatError(f"{where}: tensor {name!r}: shape: expected at most 64 non-negative ints whose "
                                  f"product an array can index (2**63 bytes), got {shape!r}")
            if not (type(offs) is list and len(offs) == 2 and type(offs[0]) is int and type(offs[1]) is int
                    and 0 <= offs[0] <= offs[1] <= data_len):
                raise FormatError(f"{where}: tensor {name!r}: data_offsets {offs!r} do not lie within the {data_len} data bytes")
            bits = DTYPE_BITS[dtype][0] * math.prod(shape)
            if bits % 8 or offs[1] - offs[0] != bits // 8:
                raise FormatError(f"{where}: tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, "
                                  f"data_offsets give {offs[1] - offs[0]}")
            self._info[name] = {"dtype": dtype, "shape": tuple(shape), "data_offsets": tuple(offs)}
            spans.append((offs[0], offs[1], name))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1 and b1 > b0 and a1 > a0:
                raise FormatError(f"{where}: tensors {an!r} and {bn!r} overlap")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._buf = np.frombuffer(self._map, dtype=np.uint8) if self._map is not None else np.zeros(0, np.uint8)

    def _check_header_digest(self, raw_header: bytes, want: str, where: str) -> None:
        """The header's SHA-256 (codec configs, side-array layout, shapes, offsets, per-tensor
        digests, user metadata: every byte of it, the digest's own 64 characters read as zeros)."""
        field = _digest_field(want)
        if raw_header.count(field) != 1:
            raise FormatError(f"{where}: metadata {HEADER_DIGEST_KEY!r}: expected 64 hex digits, once")
        if hashlib.sha256(raw_header.replace(field, _digest_field("0" * 64))).hexdigest() != want:
            raise FormatError(f"{where}: header digest mismatch (the header was changed: codec configs, "
                              f"side arrays, shapes, offsets or metadata)")

    # ---- access --------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(self._info)

    def __contains__(self, name: str) -> bool:
        return name in self._info

    def info(self, name: str) -> dict[str, Any]:
        try:
            return dict(self._info[name])
        except KeyError:
            raise FormatError(f"safetensors: {self.path}: no tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes, a read-only view into the memory map, checked against the stored
        SHA-256 on first access (see :func:`open_file` for ``verify``)."""
        a, b = self.info(name)["data_offsets"]
        out = self._buf[self._start + a:self._start + b]
        if self.verify_mode is not False and name not in self._verified:
            if self.verify_mode or self.checksums:  # None: check the digests the file carries
                self.verify(name, out)
            self._verified.add(name)
        return out

    @property
    def checksums(self) -> dict[str, str]:
        """The stored SHA-256 digests ({} when the file has none)."""
        if not hasattr(self, "_sums"):
            where = f"safetensors: {self.path}"
            sums = parse_json(self.metadata.get(CHECKSUM_KEY, "{}"), where, f"metadata {CHECKSUM_KEY!r}")
            if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
                raise FormatError(f"{where}: metadata {CHECKSUM_KEY!r} is malformed (not a name -> digest object)")
            self._sums = sums
        return self._sums

    def verify(self, name: str | None = None, raw: np.ndarray | None = None) -> int:
        """Check one tensor's (or, with no name, every tensor's) bytes against the stored SHA-256;
        FormatError on a mismatch or a missing digest. Returns the number of tensors checked."""
        if name is None:
            for k in self.keys():
                self.verify(k)
            return len(self.keys())
        want = self.checksums.get(name)
        if want is None:
            raise FormatError(f"safetensors: {self.path}: tensor {name!r} has no checksum to verify")
        if raw is None:
            a, b = self.info(name)["data_offsets"]
            raw = self._buf[self._start + a:self._start + b]
        if hashlib.sha256(raw.data).hexdigest() != want:
            raise FormatError(f"safetensors: {self.path}: tensor {name!r}: checksum mismatch (the bytes were changed)")
        return 1

    def array(self, name: str) -> np.ndarray:
        """A numpy array of the tensor (a copy-free view where the dtype allows)."""
        inf = self.info(name)
        dtype, shape = inf["dtype"], inf["shape"]
        raw = self.raw(name)
        npt = DTYPE_BITS[dtype][1]
        if npt is None and dtype in _ML_DTYPES:
            try:
                import ml_dtypes

                npt = getattr(ml_dtypes, _ML_DTYPES[dtype])
            except ImportError:
                npt = None
        if npt is None and dtype == "BF16":  # no ml_dtypes: widen to float32 (exact)
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if npt is None:
            return raw  # F4/F6 (and F8 without ml_dtypes): the packed bytes
        return raw.view(npt).reshape(shape)

    @property
    def quantized(self) -> dict[str, Any]:
        """lowbit's index of QTensors in this file (empty for other files)."""
        if not hasattr(self, "_index"):
            where, what = f"safetensors: {self.path}", f"metadata {METADATA_KEY!r}"
            index = parse_json(self.metadata.get(METADATA_KEY, '{"format": 1, "tensors": {}}'), where, what)
            t = index.get("tensors") if isinstance(index, dict) else None
            if not isinstance(index, dict) or index.get("format") != _FORMAT_VERSION or not isinstance(t, dict):
                raise FormatError(f"{where}: {what} is malformed (expected format {_FORMAT_VERSION} and a tensors object)")
            if json_depth(t, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise FormatError(f"{where}: {what}: nested deeper than {MAX_JSON_DEPTH} levels")
            self._index = t
        return self._index

    def names(self) -> list[str]:
        """Logical tensor names in the order their bytes are stored (so a file converted from GGUF
        converts back in the GGUF's order): QTensors once (their side arrays folded in), arrays as
        stored."""
        order = sorted(self._info, key=lambda k: (self._info[k]["data_offsets"][0], k))
        return [k for k in order if AUX_SEP not in k]

    def get(self, name: str, *, copy: bool = True) -> Any:
        """A QTensor (lowbit layout) or a numpy array; ``copy=False`` keeps views into the map."""
        ent = self.quantized.get(name)
        if ent is None:
            a = self.array(name)
            return a.copy() if copy else a
        where = f"safetensors: {self.path}: tensor {name!r}"
        try:
            codec = get_codec(ent["config"])
            shape = tuple(ent["shape"])
            aux_names = list(ent["aux"])
            if not all(type(d) is int for d in shape) or not _arrays.indexable(shape, 4):
                raise ValueError(f"shape {list(shape)}: expected non-negative ints, an indexable size")
            codec._check_shape(shape)
        except (KeyError, TypeError, ValueError, LowbitError) as e:
            raise FormatError(f"{where}: lowbit metadata: {e}") from None
        want = shape[:-1] + (codec.row_bytes(shape[-1]),)
        raw = self.raw(name)
        if raw.size != math.prod(want):
            raise FormatError(f"{where}: expected {math.prod(want)} bytes for shape {list(shape)}, got {raw.size}")
        data = raw.reshape(want)
        aux = {}
        for k in aux_names:
            if name + AUX_SEP + k not in self._info:
                raise FormatError(f"{where}: missing side array {k!r}")
            a = self.array(name + AUX_SEP + k)
            aux[k] = a.copy() if copy else a
        try:  # side arrays that contradict the codec are refused here, not at decode
            codec.check_aux(aux, shape)
        except LowbitError as e:
            raise FormatError(f"{where}: {e}") from None
        return QTensor(data.copy() if copy else data, aux, shape, codec)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def close(self) -> None:
        self._buf = np.zeros(0, np.uint8)
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view (copy=False): the OS frees it later
                pass
        self._file.close()

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_file(path: str | os.PathLike[str], *, verify: bool | None = None) -> SafetensorsFile:
    """Open a safetensors file for lazy, memory-mapped access (use as a context manager).

    ``verify``: ``None`` (the default) checks every digest the file carries: the header digest
    when the file is opened, each tensor's SHA-256 on its first read (files without digests,
    e.g. from other writers, read as they are; files from before the header digest get their
    tensor bytes checked). ``True`` also requires a SHA-256 for every tensor read (FormatError on a
    file without them). ``False`` checks nothing."""
    return SafetensorsFile(path, verify=verify)


def load(path: str | os.PathLike[str], *, verify: bool | None = None) -> dict[str, Any]:
    """Every tensor of a safetensors file: QTensors for lowbit-encoded ones, arrays otherwise
    (``verify`` as for :func:`open_file`: by default every digest the file carries is checked).
    A file in a quantized layout from the wild (compressed-tensors, ModelOpt, gpt-oss,
    bitsandbytes; see :mod:`lowbit.formats.layouts`) is read into QTensors too."""
    from .layouts import load_wild

    wild = load_wild(path)
    if wild is not None:
        return wild
    with SafetensorsFile(path, verify=verify) as f:
        return {name: f.get(name) for name in f.names()}
