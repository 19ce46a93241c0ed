"""lowbit's own safetensors layout: quantized tensors that decode with nothing but the file.

A QTensor named ``w`` is stored as the uint8 tensor ``w`` (its encoded bytes, shape
``(..., row_bytes)``) plus one tensor ``w.__aux__.<name>`` per side array. The header metadata
key ``"lowbit"`` holds JSON ``{"format": 1, "tensors": {"w": {"config": {...}, "shape": [...],
"aux": [...]}}}``. Plain arrays are stored as themselves. Other metadata keys are the caller's.

Writes go to a temporary file in the same directory, renamed over the target only when
complete, so an interrupted save never leaves a half-written file behind.

>>> import numpy as np, lowbit, tempfile, os
>>> q = lowbit.encode(np.ones((2, 4), np.float32), "fp8_e4m3", scale="channel")
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> lowbit.save(path, {"w": q, "bias": np.zeros(2, np.float32)})
>>> back = lowbit.load(path)
>>> lowbit.decode(back["w"]).tolist(), back["bias"].tolist()
([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], [0.0, 0.0])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..codec import QTensor, get_codec
from ..errors import FormatError, LowbitError

__all__ = ["save", "load", "AUX_SEP", "METADATA_KEY"]

AUX_SEP = ".__aux__."
METADATA_KEY = "lowbit"
_FORMAT_VERSION = 1


def save(path: str | os.PathLike[str], tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write QTensors and plain arrays to a safetensors file, atomically."""
    from safetensors.numpy import save_file

    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or AUX_SEP in name:
            raise FormatError(f"save: tensor name {name!r}: expected a string without {AUX_SEP!r}")
        if isinstance(t, QTensor):
            arrays[name] = _arrays.to_numpy(t.data)
            for k, a in t.aux.items():
                arrays[name + AUX_SEP + k] = _arrays.to_numpy(a)
            index[name] = {"config": t.codec.get_config(), "shape": list(t.shape), "aux": sorted(t.aux)}
        else:
            arrays[name] = _arrays.to_numpy(t)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if METADATA_KEY in meta:
        raise FormatError(f"save: metadata key {METADATA_KEY!r} is reserved for lowbit")
    meta[METADATA_KEY] = json.dumps({"format": _FORMAT_VERSION, "tensors": index}, sort_keys=True)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    try:
        # 0-d arrays are fine for safetensors; contiguous copies avoid its stride complaints
        save_file({k: np.ascontiguousarray(v) if v.ndim else v for k, v in arrays.items()}, tmp, metadata=meta)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`save`: QTensors for quantized tensors, arrays otherwise.
    A file in a quantized layout from the wild (compressed-tensors, ModelOpt, gpt-oss,
    bitsandbytes; see :mod:`lowbit.formats.layouts`) is read into QTensors too."""
    from safetensors import safe_open

    from .layouts import load_wild

    wild = load_wild(path)
    if wild is not None:
        return wild

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            names = list(f.keys())
            raw = {k: f.get_tensor(k) for k in names}
    except LowbitError:
        raise
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise FormatError(f"load: {path}: not a readable safetensors file ({e})") from None
    try:
        index = json.loads(meta.get(METADATA_KEY, '{"format": 1, "tensors": {}}'))
        tensors_meta = index["tensors"]
        if index.get("format") != _FORMAT_VERSION or not isinstance(tensors_meta, dict):
            raise ValueError("unknown format version")
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"load: {path}: metadata {METADATA_KEY!r} is malformed ({e})") from None
    out: dict[str, Any] = {}
    for name in names:
        if AUX_SEP in name:
            continue
        if name not in tensors_meta:
            out[name] = raw[name]
            continue
        ent = tensors_meta[name]
        try:
            codec = get_codec(ent["config"])
            shape = tuple(int(d) for d in ent["shape"])
            aux = {k: raw[name + AUX_SEP + k] for k in ent["aux"]}
        except KeyError as e:
            raise FormatError(f"load: {path}: tensor {name!r}: missing {e}") from None
        q = QTensor(raw[name], aux, shape, codec)
        codec._check_shape(shape)
        want = shape[:-1] + (codec.row_bytes(shape[-1]),)
        if q.data.dtype != np.uint8 or tuple(q.data.shape) != want:
            raise FormatError(f"load: {path}: tensor {name!r}: expected uint8 {want}, got {q.data.dtype} {tuple(q.data.shape)}")
        out[name] = q
    return out
