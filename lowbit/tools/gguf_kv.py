"""The GGUF metadata llama-quantize writes: the input's keys, then ``general.quantization_version``
and ``general.file_type``, then ``--override-kv`` values and the ``quantize.imatrix.*`` keys —
each set the way ggml's ``gguf_set_val_*`` does (an existing key is removed and the new value
appended), without the ``split.*`` keys of a split input.

>>> meta, types = {"general.architecture": "llama", "general.file_type": 0}, {}
>>> m, t = llama_quantize_kv(meta, types, ftype=15, overrides=parse_override_kv(["llama.context_length=int:4096"]))
>>> list(m), m["general.file_type"], t["llama.context_length"]
(['general.architecture', 'general.quantization_version', 'general.file_type', 'llama.context_length'], 15, (4, None))
"""

from __future__ import annotations

from typing import Any

from gguf.constants import GGML_QUANT_VERSION, Keys

from lowbit.errors import ConfigError
from lowbit.formats import gguf as G

__all__ = ["SPLIT_KEYS", "parse_override_kv", "set_kv", "llama_quantize_kv", "imatrix_kv"]

SPLIT_KEYS = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)

Override = tuple[str, int, Any]  # key, GGUF value type, value


def parse_override_kv(items: list[str] | None) -> list[Override]:
    """``KEY=TYPE:VALUE`` (TYPE ``int``, ``float``, ``bool`` or ``str``), as llama.cpp's
    ``--override-kv``; stored as llama-quantize stores them (int as UINT32 of the absolute value,
    float as FLOAT32, str at most 127 bytes).

    >>> parse_override_kv(["a.b=float:0.5", "c=bool:true", "d=str:hi"])
    [('a.b', 6, 0.5), ('c', 7, True), ('d', 8, 'hi')]
    """
    out: list[Override] = []
    for item in items or []:
        key, sep, rest = item.partition("=")
        kind, sep2, val = rest.partition(":")
        if not sep or not sep2 or not key:
            raise ConfigError(f"--override-kv: expected KEY=TYPE:VALUE, got {item!r}")
        if len(key) >= 128:
            raise ConfigError(f"--override-kv: key {key[:40]!r}... is longer than 127 characters")
        try:
            if kind == "int":
                out.append((key, G.UINT32, abs(int(val)) & 0xFFFFFFFF))
            elif kind == "float":
                out.append((key, G.FLOAT32, float(val)))
            elif kind == "bool":
                if val not in ("true", "false"):
                    raise ValueError("expected true or false")
                out.append((key, G.BOOL, val == "true"))
            elif kind == "str":
                if len(val.encode()) >= 128:
                    raise ValueError("strings are at most 127 bytes")
                out.append((key, G.STRING, val))
            else:
                raise ValueError("TYPE must be int, float, bool or str")
        except ValueError as e:
            raise ConfigError(f"--override-kv {item!r}: {e}") from None
    return out


def set_kv(meta: dict[str, Any], types: dict[str, tuple[int, int | None]], key: str, vtype: int, value: Any) -> None:
    """``gguf_set_val_*``: drop ``key`` where it is, append it with its new type and value."""
    meta.pop(key, None)
    types.pop(key, None)
    meta[key] = value
    types[key] = (vtype, None)


def imatrix_kv(path: str, info: dict[str, Any]) -> list[Override]:
    """The ``quantize.imatrix.*`` keys for an imatrix (``info`` from :func:`imatrix_info`)."""
    out: list[Override] = [("quantize.imatrix.file", G.STRING, _c_str(path))]
    if info["datasets"]:
        out.append(("quantize.imatrix.dataset", G.STRING, _c_str(info["datasets"][0])))
    out.append(("quantize.imatrix.entries_count", G.UINT32, int(info["entries"])))
    if info["chunks"] > 0:
        out.append(("quantize.imatrix.chunks_count", G.UINT32, int(info["chunks"])))
    return out


def _c_str(s: str) -> str:
    """What ``strncpy(dst, s, 127)`` into a 128-byte buffer keeps."""
    b = s.encode("utf-8")[:127]
    return b.decode("utf-8", "ignore")


def llama_quantize_kv(meta: dict[str, Any], types: dict[str, tuple[int, int | None]], *, ftype: int,
                      overrides: list[Override] = ()) -> tuple[dict[str, Any], dict[str, tuple[int, int | None]]]:
    """The output metadata of llama-quantize for input metadata ``meta`` / ``types``."""
    m, t = dict(meta), dict(types)
    set_kv(m, t, Keys.General.QUANTIZATION_VERSION, G.UINT32, GGML_QUANT_VERSION)
    set_kv(m, t, Keys.General.FILE_TYPE, G.UINT32, int(ftype))
    for k in SPLIT_KEYS:
        m.pop(k, None)
        t.pop(k, None)
    for key, vtype, value in overrides:
        set_kv(m, t, key, vtype, value)
    return m, t
