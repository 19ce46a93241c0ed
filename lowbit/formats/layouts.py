"""Quantized-checkpoint layouts from the wild: detection, file I/O and conversion.

Each layout has its own module with ``from_<layout>(tensors, config) -> {name: QTensor | array}``
and ``to_<layout>(tensors) -> (tensors, config)``; both carry codes over exactly (no
re-quantization) and raise a :class:`~lowbit.errors.LowbitError` saying why when they cannot:

==========================  =========================================  ==============================
layout id                   module                                      lowbit codecs
==========================  =========================================  ==============================
``compressed-tensors``      :mod:`lowbit.formats.compressed_tensors_fp` nvfp4 (recipe
                                                                        compressed_tensors), mxfp4,
                                                                        mxfp6_e2m3, mxfp8_e4m3/e5m2,
                                                                        fp8_e4m3/e5m2 (tensor,
                                                                        channel, block:RxC scales)
``modelopt``                :mod:`lowbit.formats.modelopt`             nvfp4 (recipe torchao)
``gpt-oss``                 :mod:`lowbit.formats.gptoss`               mxfp4
``bitsandbytes``            :mod:`lowbit.formats.bnb_state`            nf4, fp4_bnb
==========================  =========================================  ==============================

The tensors a layout function takes or returns are numpy arrays whose dtype is the safetensors
dtype (``uint8`` for U8, ``ml_dtypes.float8_e4m3fn`` for F8_E4M3, ``ml_dtypes.float8_e8m0fnu``
for F8_E8M0, ``ml_dtypes.bfloat16`` for BF16); torch tensors are accepted too.
:func:`read_safetensors` / :func:`write_safetensors` move such dicts to and from files
byte-exactly (numpy only, no torch), :func:`detect_layout` names the layout of a loaded file,
:func:`load_layout` / :func:`save_layout` do the whole trip, and :func:`convert_file` is what
``lowbit convert --to <layout>`` calls.

>>> import numpy as np, lowbit, tempfile, os
>>> from lowbit.formats import layouts
>>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
>>> q = lowbit.encode(w, "nvfp4", recipe="compressed_tensors")
>>> d = tempfile.mkdtemp()
>>> cfg = layouts.save_layout(os.path.join(d, "ct.safetensors"), {"l.weight": q}, "compressed-tensors")
>>> back, layout, config = layouts.load_layout(os.path.join(d, "ct.safetensors"))
>>> layout, config["format"], back["l.weight"].data.tobytes() == q.data.tobytes()
('compressed-tensors', 'nvfp4-pack-quantized', True)
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import _arrays
from ..codec import QTensor
from ..errors import ConfigError, FormatError, LowbitError

__all__ = ["LAYOUTS", "detect_layout", "from_layout", "to_layout", "read_safetensors", "write_safetensors",
           "load_layout", "save_layout", "load_wild", "read_header", "detect_file", "checkpoint_files", "convert_file", "as_numpy", "CONFIG_METADATA_KEY"]

#: layout id -> module name under lowbit.formats
_MODULES = {
    "compressed-tensors": "compressed_tensors_fp",
    "modelopt": "modelopt",
    "gpt-oss": "gptoss",
    "bitsandbytes": "bnb_state",
}
LAYOUTS = tuple(_MODULES)

#: the header metadata key under which :func:`save_layout` stores the layout's config JSON
#: (``quantization_config`` of config.json, or hf_quant_config.json for ModelOpt), so a single
#: file is enough to read it back; the producers' own sidecar files are read too.
CONFIG_METADATA_KEY = "quantization_config"

# ---- safetensors dtypes <-> numpy -------------------------------------------------------------

_PLAIN = {"U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32", "I32": "int32",
          "U64": "uint64", "I64": "int64", "F16": "float16", "F32": "float32", "F64": "float64", "BOOL": "bool"}
_ML = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu"}


def _ml_dtypes() -> Any:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a core dependency
        raise LowbitError("layouts: reading or writing F8/BF16 tensors needs the ml_dtypes package "
                          "(pip install ml_dtypes)") from None
    return ml_dtypes


def _np_dtype(st: str) -> np.dtype:
    if st in _PLAIN:
        return np.dtype(_PLAIN[st])
    if st in _ML:
        return np.dtype(getattr(_ml_dtypes(), _ML[st]))
    raise FormatError(f"safetensors dtype: expected one of {sorted(_PLAIN) + sorted(_ML)}, got {st!r}")


def _st_dtype(dt: np.dtype) -> str:
    for k, v in _PLAIN.items():
        if dt == np.dtype(v):
            return k
    for k, v in _ML.items():
        if dt.name == v:
            return k
    raise FormatError(f"safetensors dtype: no safetensors dtype for numpy {dt}")


def as_numpy(t: Any) -> np.ndarray:
    """A numpy array with the same bytes and dtype as ``t`` (numpy or torch; torch float8 and
    bfloat16 become the ml_dtypes types)."""
    if isinstance(t, np.ndarray):
        return t
    if _arrays.is_torch(t):
        import torch

        name = str(t.dtype).removeprefix("torch.")
        t = t.detach().cpu().contiguous()
        if name in _ML.values():
            # numpy has no float8/bfloat16: move the raw bytes, then reinterpret with ml_dtypes
            raw = t.view(torch.uint8).numpy() if t.element_size() == 1 else t.view(torch.int16).numpy()
            return raw.view(getattr(_ml_dtypes(), name))
        return t.numpy()
    return np.asarray(t)


# ---- byte-exact safetensors I/O (numpy only) -------------------------------------------------------

def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as numpy arrays (in header order; read-only views of
    the memory-mapped file) and its metadata. Checks that offsets are in bounds and sizes match
    shapes before reading anything."""
    p = Path(path)
    try:
        buf = np.memmap(p, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: cannot open ({e})") from None
    if buf.size < 8:
        raise FormatError(f"{p}: not a safetensors file (shorter than 8 bytes)")
    (hlen,) = struct.unpack("<Q", bytes(buf[:8]))
    from .safetensors import MAX_HEADER, parse_header

    if hlen > min(MAX_HEADER, buf.size - 8):
        raise FormatError(f"{p}: not a safetensors file (header length {hlen} exceeds the file or {MAX_HEADER} bytes)")
    header = parse_header(bytes(buf[8:8 + hlen]), str(p))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + hlen
    out: dict[str, np.ndarray] = {}
    for name, ent in header.items():
        try:
            dt = _np_dtype(ent["dtype"])
            shape = tuple(int(d) for d in ent["shape"])
            a, b = (int(o) for o in ent["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{p}: tensor {name!r}: malformed header entry ({e})") from None
        if not (0 <= a <= b <= buf.size - base) or b - a != math.prod(shape) * dt.itemsize:
            raise FormatError(f"{p}: tensor {name!r}: bytes {a}..{b} do not fit its shape {shape} {ent['dtype']} "
                              f"or the {buf.size - base}-byte data section")
        # a read-only view of the memory-mapped file: bytes are read when a tensor is used
        out[name] = np.asarray(buf[base + a:base + b]).view(dt).reshape(shape)
    return out, {str(k): str(v) for k, v in meta.items()}


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write arrays (numpy with safetensors-compatible dtypes, or torch) to a safetensors file
    sorted by name, atomically (a temporary file renamed on success). Deterministic: the same
    tensors give the same bytes, whatever the dict's order."""
    arrays = {str(k): as_numpy(tensors[k]) for k in sorted(tensors)}
    # C order without np.ascontiguousarray, which would turn 0-d arrays (ModelOpt's scalar
    # weight_scale_2) into shape (1,)
    arrays = {k: a if a.flags.c_contiguous else a.copy(order="C") for k, a in arrays.items()}
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, a in arrays.items():
        header[name] = {"dtype": _st_dtype(a.dtype), "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # the data section starts 8-byte aligned, padded with spaces
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        from .safetensors import new_file_mode

        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; the file follows the umask
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for a in arrays.values():
                f.write(a.reshape(-1).view(np.uint8).tobytes() if a.size else b"")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- detection and dispatch -------------------------------------------------------------------------

def _module(layout: str) -> Any:
    import importlib

    if layout not in _MODULES:
        raise ConfigError(f"layout: expected one of {list(LAYOUTS)}, got {layout!r}")
    return importlib.import_module(f"lowbit.formats.{_MODULES[layout]}")


def detect_layout(tensors: Mapping[str, Any] | list[str], config: Mapping[str, Any] | None = None) -> str | None:
    """The layout id of a checkpoint from its quantization config or, failing that, its tensor
    names: ``"compressed-tensors"``, ``"modelopt"``, ``"gpt-oss"``, ``"bitsandbytes"``, or None.

    >>> from lowbit.formats.layouts import detect_layout
    >>> detect_layout(["a.weight", "a.weight.absmax", "a.weight.quant_state.bitsandbytes__nf4"])
    'bitsandbytes'
    >>> detect_layout(["l.weight_packed", "l.weight_scale", "l.weight_global_scale"])
    'compressed-tensors'
    >>> detect_layout(["l.weight", "l.weight_scale", "l.weight_scale_2"]), detect_layout(["x"])
    ('modelopt', None)
    """
    if config:
        qc = config.get("quantization_config", config)
        method = str(qc.get("quant_method", "")).lower()
        producer = qc.get("producer", {})
        if method in ("compressed-tensors", "compressed_tensors"):
            return "compressed-tensors"
        if method in ("modelopt", "modelopt_fp4") or (isinstance(producer, dict) and producer.get("name") == "modelopt"):
            return "modelopt"
        if method == "mxfp4":
            return "gpt-oss"
        if method == "bitsandbytes":
            return "bitsandbytes"
    names = list(tensors)
    if any(".quant_state.bitsandbytes__" in n for n in names):
        return "bitsandbytes"
    if any(n.endswith("_scale_2") for n in names):
        return "modelopt"
    if any(n.endswith("_blocks") for n in names) and any(n.endswith("_scales") for n in names):
        return "gpt-oss"
    if any(n.endswith("_packed") for n in names):
        return "compressed-tensors"
    if isinstance(tensors, Mapping):
        for n, t in tensors.items():  # FP8: a float8 tensor with a *_scale companion
            if n + "_scale" in tensors and getattr(t, "dtype", None) is not None and "float8" in str(t.dtype):
                return "compressed-tensors"
    return None


def from_layout(layout: str, tensors: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                **options: Any) -> dict[str, Any]:
    """Dispatch to ``from_<layout>`` of the layout's module."""
    mod = _module(layout)
    return getattr(mod, mod.FROM)(tensors, config, **options)


def to_layout(layout: str, tensors: Mapping[str, Any], **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dispatch to ``to_<layout>`` of the layout's module."""
    mod = _module(layout)
    return getattr(mod, mod.TO)(tensors, **options)


def _sidecar_config(path: Path) -> dict[str, Any] | None:
    """quantization config from files next to the checkpoint: hf_quant_config.json (ModelOpt)
    or config.json's ``quantization_config``."""
    for fname, key in (("hf_quant_config.json", None), ("config.json", "quantization_config")):
        f = path.parent / fname
        if f.is_file():
            try:
                cfg = json.loads(f.read_text())
            except (ValueError, RecursionError) as e:
                raise FormatError(f"{f}: malformed JSON ({e})") from None
            cfg = cfg.get(key) if key else cfg
            if isinstance(cfg, dict):
                return cfg
    return None


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a checkpoint given as one file, a sharded checkpoint's
    ``*.safetensors.index.json`` (its ``weight_map``), or a directory holding either."""
    p = Path(path)
    if p.is_dir():
        idx = sorted(p.glob("*.safetensors.index.json"))
        if not idx:
            files = sorted(p.glob("*.safetensors"))
            if not files:
                raise FormatError(f"{p}: no *.safetensors files and no *.safetensors.index.json")
            return files
        p = idx[0]
    if p.name.endswith(".index.json"):
        try:
            weight_map = json.loads(p.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise FormatError(f"{p}: malformed index ({e})") from None
        return [p.parent / f for f in sorted(set(weight_map.values()))]
    return [p]


def load_layout(path: str | os.PathLike[str], layout: str | None = None, config: Mapping[str, Any] | None = None,
                **options: Any) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """Read a checkpoint in a wild layout: (tensors with QTensors, layout id, config).
    ``path`` is a safetensors file, a sharded checkpoint's index JSON, or their directory (a
    layout's tensors for one weight may then sit in different shards). The config comes from
    ``config=``, else the file's metadata, else config.json / hf_quant_config.json beside it."""
    files = checkpoint_files(path)
    raw: dict[str, np.ndarray] = {}
    meta: dict[str, str] = {}
    for f in files:
        t, m = read_safetensors(f)
        dup = sorted(set(t) & set(raw))
        if dup:
            raise FormatError(f"{f}: tensors {dup[:3]} also appear in another shard")
        raw.update(t)
        meta = meta or m
    p = files[0]
    if config is None and CONFIG_METADATA_KEY in meta:
        try:
            config = json.loads(meta[CONFIG_METADATA_KEY])
        except (ValueError, RecursionError) as e:
            raise FormatError(f"{p}: metadata {CONFIG_METADATA_KEY!r}: malformed JSON ({e})") from None
    if config is None:
        config = _sidecar_config(p)
    layout = layout or detect_layout(raw, config)
    if layout is None:
        raise FormatError(f"{Path(path)}: no known quantized layout (expected one of {list(LAYOUTS)}): no "
                          f"quantization config and no tensor names of those layouts")
    return from_layout(layout, raw, config, **options), layout, dict(config) if config else None


def save_layout(path: str | os.PathLike[str], tensors: Mapping[str, Any], layout: str,
                metadata: Mapping[str, str] | None = None, **options: Any) -> dict[str, Any]:
    """Write QTensors and arrays in a wild layout; the layout's config goes into the header
    metadata (key ``quantization_config``). Returns the config."""
    out, config = to_layout(layout, tensors, **options)
    meta = dict(metadata or {})
    meta[CONFIG_METADATA_KEY] = json.dumps(config, sort_keys=True)
    write_safetensors(path, out, meta)
    return config


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor entries (name -> {dtype, shape, data_offsets}) and metadata of a safetensors
    file, reading only its header."""
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{p}: not a safetensors file (shorter than 8 bytes)")
        (hlen,) = struct.unpack("<Q", head)
        from .safetensors import MAX_HEADER, parse_header

        if hlen > min(MAX_HEADER, p.stat().st_size - 8):
            raise FormatError(f"{p}: not a safetensors file (header length {hlen} exceeds the file or {MAX_HEADER} bytes)")
        header = parse_header(f.read(hlen), str(p))
    meta = header.pop("__metadata__", None) or {}
    return header, {str(k): str(v) for k, v in meta.items()}


def detect_file(path: str | os.PathLike[str]) -> str | None:
    """The wild layout of a safetensors file, from its header (and a sidecar config) only; None
    for lowbit's own layout, plain tensors, or a file that is not safetensors."""
    from . import safetensors as st

    p = Path(path)
    try:
        header, meta = read_header(p)
    except (FormatError, OSError):
        return None
    if st.METADATA_KEY in meta:
        return None
    config: Any = None
    if CONFIG_METADATA_KEY in meta:
        try:
            config = json.loads(meta[CONFIG_METADATA_KEY])
        except (ValueError, RecursionError):
            config = None
    if config is None:
        config = _sidecar_config(p)

    class _Entry:  # what detect_layout looks at: the dtype's name
        def __init__(self, st_dtype: str) -> None:
            self.dtype = _ML.get(st_dtype, _PLAIN.get(st_dtype, st_dtype))

    names = {n: _Entry(str(e.get("dtype"))) for n, e in header.items() if isinstance(e, dict)}
    return detect_layout(names, config)


def load_wild(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """For :func:`lowbit.load`: the tensors of a safetensors file in a wild layout (QTensors
    for its quantized weights), or None when :func:`detect_file` finds no wild layout."""
    layout = detect_file(path)
    return None if layout is None else load_layout(path, layout)[0]


def _read_any(path: Path) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(QTensors and arrays, wild layout or None, the layout's ``info``) from any wild layout,
    lowbit's own layout or (where the build has the GGUF container) a GGUF file."""
    import lowbit

    sharded = path.is_dir() or path.name.endswith(".index.json")
    layout = None if sharded else detect_file(path)
    if sharded or layout:
        info: dict[str, Any] = {}
        tensors, layout, _ = load_layout(path, layout, info=info)
        return tensors, layout, info
    return lowbit.load(path), None, {}


#: the targets of :func:`convert_file` besides the wild layouts
PLAIN_TARGETS = ("lowbit", "gguf", "float32", "float16", "bfloat16")


def _for_target(name: str, t: Any, to: str) -> tuple[Any, str]:
    """A source tensor made ready for the target (codes re-laid only, never re-quantized) and
    the report's word for what happened."""
    from ..codec import codec_class
    from ..errors import UnknownCodecError

    if not isinstance(t, QTensor):
        return t, "array copied"
    if t.codec_id == "mxfp4_ggml" and to in ("gpt-oss", "compressed-tensors"):
        from .gptoss import from_gguf_qtensor

        return from_gguf_qtensor(t), "codes copied (GGUF MXFP4 nibbles reordered)"
    if t.codec_id == "mxfp4" and to == "gguf":
        try:
            codec_class("mxfp4_ggml")
        except UnknownCodecError:
            return t, "codes copied"  # the GGUF writer, if any, says what it cannot hold
        from .gptoss import to_gguf_qtensor

        return to_gguf_qtensor(t), "codes copied (nibbles reordered to GGUF MXFP4)"
    return t, "codes copied"


def convert_file(inp: str | os.PathLike[str], out: str | os.PathLike[str], *, to: str,
                 progress: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """``lowbit convert IN OUT --to LAYOUT``: ``to`` is a wild layout (:data:`LAYOUTS`), ``lowbit``
    (lowbit's own layout; the container follows OUT's suffix where the build has GGUF), ``gguf``
    (where the build has the GGUF container) or a float dtype (every tensor decoded). Codes are carried over exactly or a LowbitError
    says why not, and nothing is written. Returns a per-tensor report.

    >>> import numpy as np, lowbit, tempfile, os
    >>> from lowbit.formats.layouts import save_layout, convert_file
    >>> d = tempfile.mkdtemp(); src = os.path.join(d, "bnb.safetensors")
    >>> cfg = save_layout(src, {"fc.weight": lowbit.encode(np.ones((2, 64), np.float32), "nf4")}, "bitsandbytes")
    >>> r = convert_file(src, os.path.join(d, "lowbit.safetensors"), to="lowbit")
    >>> r["tensors"]
    [{'name': 'fc.weight', 'action': 'codes copied', 'codec': 'nf4'}]
    """
    if to not in LAYOUTS and to not in PLAIN_TARGETS:
        raise ConfigError(f"convert: --to: expected one of {list(PLAIN_TARGETS) + list(LAYOUTS)}, got {to!r}")
    import time

    t0 = time.perf_counter()
    src, src_layout, info = _read_any(Path(inp))
    if to == src_layout and "info" not in options:
        options["info"] = info  # same layout: keep what QTensors do not hold (dtypes, shapes)
    ready: dict[str, Any] = {}
    rows = []
    for name, t in src.items():
        v, word = _for_target(name, t, to)
        if to in ("float32", "float16", "bfloat16"):
            import lowbit

            dt = np.dtype(getattr(_ml_dtypes(), to)) if to == "bfloat16" else np.dtype(to)
            with np.errstate(over="ignore"):  # float32 -> float16 overflows to Inf, as a cast does
                v = np.asarray(lowbit.decode(t) if isinstance(t, QTensor) else as_numpy(t)).astype(dt)
            word = "decoded" if isinstance(t, QTensor) else "cast"
        ready[name] = v
        rows.append({"name": name, "action": word, "codec": t.codec_id if isinstance(t, QTensor) else None})
    config = None
    if to in LAYOUTS:
        config = save_layout(out, ready, to, **options)
    elif to == "gguf":
        try:
            from . import gguf as gguf_container  # type: ignore[attr-defined]
        except ImportError:
            raise LowbitError("convert --to gguf: this build of lowbit has no GGUF container") from None
        gguf_container.save(out, ready)
    elif to == "lowbit":
        import lowbit

        lowbit.save(out, ready)
    else:
        write_safetensors(out, ready)
    if progress:
        for r in rows:
            progress(f"{r['name']}: {r['action']}")
    return {"input": str(inp), "output": str(out), "to": to, "config": config, "tensors": rows,
            "output_bytes": Path(out).stat().st_size, "seconds": time.perf_counter() - t0}


# ---- block bytes: lowbit's interleaved blocks <-> the producers' separate arrays ---------------------

def join_blocks(scales: np.ndarray, codes: np.ndarray, nbytes: int) -> np.ndarray:
    """lowbit's block bytes from separate arrays: ``scales`` uint8 ``(..., nb, s)`` (or
    ``(..., nb)`` for one byte) and ``codes`` uint8 ``(..., nb * nbytes)``: per block its ``s``
    scale bytes, then its ``nbytes`` code bytes. Returns ``(..., nb * (s + nbytes))``."""
    if scales.ndim == codes.ndim:
        scales = scales[..., None]
    lead = codes.shape[:-1]
    nb = scales.shape[-2]
    blocks = np.concatenate([scales, codes.reshape(lead + (nb, nbytes))], axis=-1)
    return np.ascontiguousarray(blocks.reshape(lead + (-1,)))


def split_blocks(data: np.ndarray, s: int, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`join_blocks`: (scales ``(..., nb, s)``, codes ``(..., nb * nbytes)``)."""
    d = np.asarray(data, dtype=np.uint8)
    lead = d.shape[:-1]
    blocks = d.reshape(lead + (-1, s + nbytes))
    return (np.ascontiguousarray(blocks[..., :s]),
            np.ascontiguousarray(blocks[..., s:]).reshape(lead + (-1,)))


def u8(a: Any) -> np.ndarray:
    """The raw bytes of an array as uint8 with the same shape (1-byte dtypes only)."""
    a = as_numpy(a)
    if a.dtype.itemsize != 1:
        raise FormatError(f"expected a 1-byte dtype, got {a.dtype}")
    return np.ascontiguousarray(a).view(np.uint8)


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two float32 arrays (so NaN == NaN, -0 != +0)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and bool((a.view(np.uint32) == b.view(np.uint32)).all())
