"""``lowbit inspect FILE.gguf``: what gguf-dump prints, from lowbit's hardened reader.

The header (version, tensor and key counts), every metadata key with its GGUF value type and
value, and every tensor with its ggml type, its shape in ggml ``ne`` order (innermost first, as
gguf-dump and llama.cpp show it), its element count, its byte size and its data offset (from the
start of the data section, as stored, and absolute in the file).

>>> import os, tempfile, numpy as np
>>> from lowbit.formats import gguf as G
>>> p = os.path.join(tempfile.mkdtemp(), "m.gguf")
>>> G.save(p, {"w": np.zeros((2, 32), np.float32)}, {"general.architecture": "llama"})
>>> d = dump(p)
>>> d["version"], d["tensor_count"], d["kv_count"], d["metadata"]["general.architecture"]["type"]
(3, 1, 1, 'STRING')
>>> d["tensors"][0]["ne"], d["tensors"][0]["type"]
([32, 2], 'F32')
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType, GGUFValueType

from lowbit.formats import gguf as G

__all__ = ["dump", "format_dump", "ggml_type_name"]


def ggml_type_name(type_id: int) -> str:
    """ggml's name for a type id, as gguf-dump prints it (``Q4_K``, ``F32``, ``MXFP4``)."""
    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return G.GGML_TYPE_NAMES.get(type_id, str(type_id)).upper()


def _type_word(vtype: int, elem: int | None) -> str:
    if vtype == G.ARRAY:
        return "[" + (GGUFValueType(elem).name if elem is not None else "?") + "]"
    return GGUFValueType(vtype).name


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def dump(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header, typed metadata and tensor table of one GGUF file (a shard of a split model is
    dumped as the file it is), as plain JSON-ready values."""
    with G.read(path) as g:
        meta = {}
        for k, v in g.metadata.items():
            vtype, elem = g.metadata_types[k]
            ent: dict[str, Any] = {"type": _type_word(vtype, elem), "value": _plain(v)}
            if vtype == G.ARRAY:
                ent["count"] = len(v)
            meta[k] = ent
        tensors = [{"name": t.name, "type": ggml_type_name(t.ggml_type), "ne": list(reversed(t.shape)),
                    "n_elements": int(np.prod(t.shape)), "nbytes": t.nbytes,
                    "offset": t.offset - g.data_offset, "file_offset": t.offset} for t in g.tensors]
        return {"file": os.fspath(path), "container": "gguf", "version": g.version, "tensor_count": len(g.tensors),
                "kv_count": len(g.metadata), "data_offset": g.data_offset, "metadata": meta, "tensors": tensors,
                "total_bytes": sum(t["nbytes"] for t in tensors), "elements": sum(t["n_elements"] for t in tensors)}


def _short(v: Any, vtype: str, width: int = 60) -> str:
    if vtype == "STRING":
        s = repr(v)
    elif isinstance(v, list):
        head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in v[:5])
        s = f"[{head}{', ...' if len(v) > 5 else ''}]"
    else:
        s = str(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def format_dump(d: dict[str, Any]) -> str:
    """gguf-dump's text layout: one numbered line per key (type, element count, value) and per
    tensor (elements, ``ne``, type, name), with lowbit's byte size and offset columns added."""
    lines = [f"* File: {d['file']} (GGUF v{d['version']})",
             f"* Dumping {d['kv_count'] + 3} key/value pair(s)",
             f"  {1:5d}: {'UINT32':<10} | {1:8d} | GGUF.version = {d['version']}",
             f"  {2:5d}: {'UINT64':<10} | {1:8d} | GGUF.tensor_count = {d['tensor_count']}",
             f"  {3:5d}: {'UINT64':<10} | {1:8d} | GGUF.kv_count = {d['kv_count']}"]
    for i, (k, e) in enumerate(d["metadata"].items(), start=4):
        lines.append(f"  {i:5d}: {e['type']:<10} | {e.get('count', 1):8d} | {k} = {_short(e['value'], e['type'])}")
    lines.append(f"* Dumping {d['tensor_count']} tensor(s)")
    lines.append(f"  {'#':>5}  {'elements':>10} | {'ne':<30} | {'type':<7} | {'bytes':>11} | {'offset':>11} | name")
    for i, t in enumerate(d["tensors"], start=1):
        ne = ", ".join(f"{n:5d}" for n in t["ne"] + [1] * (4 - len(t["ne"])))
        lines.append(f"  {i:5d}: {t['n_elements']:10d} | {ne:<30} | {t['type']:<7} | {t['nbytes']:11d} | "
                     f"{t['offset']:11d} | {t['name']}")
    lines.append(f"* {d['elements']:,} elements, {d['total_bytes']:,} bytes of tensor data "
                 f"({d['total_bytes'] * 8 / max(d['elements'], 1):.3f} bits/element)")
    return "\n".join(lines)
