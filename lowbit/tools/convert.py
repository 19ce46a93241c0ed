"""``lowbit convert``: between layouts and containers, carrying codes over when they are exact.

Layouts (``--to``):

* ``lowbit`` — lowbit's safetensors layout (QTensors with their codec config in the header);
  quantized tensors are copied byte for byte, never re-encoded.
* ``float32`` / ``bfloat16`` / ``float16`` — every tensor decoded to plain floats (a
  "dequantize" for tools that know no quantization).

Every conversion streams one tensor at a time into a file that only gets its name when complete,
and says per tensor whether codes were carried over or values were converted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.codec import QTensor
from lowbit.errors import ConfigError
from lowbit.formats import safetensors as st
from lowbit.tools.progress import Progress

__all__ = ["LAYOUTS", "convert_file"]

_FLOATS = {"float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16"}
LAYOUTS = ("lowbit",) + tuple(_FLOATS)


def _float_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return _FLOATS[name]


def convert_file(inp: str | Path, out: str | Path, *, to: str = "lowbit", progress: bool = True) -> dict[str, Any]:
    if to not in LAYOUTS:
        raise ConfigError(f"convert: --to: expected one of {list(LAYOUTS)}, got {to!r}")
    t0 = time.perf_counter()
    report = []
    with lowbit.open_file(inp) as src:
        names = src.names()
        meta = st.user_metadata(getattr(src, "metadata", {}))

        def produce(name: str) -> Any:
            t = src.get(name, copy=False)
            if to == "lowbit":
                report.append({"name": name, "action": "codes copied" if isinstance(t, QTensor) else "array copied"})
                return t
            report.append({"name": name, "action": "decoded" if isinstance(t, QTensor) else "cast"})
            v = lowbit.decode(t) if isinstance(t, QTensor) else np.asarray(t)
            with np.errstate(over="ignore"):
                return np.asarray(v, dtype=np.float32).astype(_float_dtype(to))

        # the header needs every tensor's dtype and shape before any data: a first pass over
        # the memory-mapped tensors (views, nothing decoded) provides them
        specs, index = [], {}
        for name in names:
            t = src.get(name, copy=False)
            if to == "lowbit" and isinstance(t, QTensor):
                specs += [(n, d, s) for n, d, s, _ in st.layout_entries(name, t)]
                index[name] = {"config": t.codec.get_config(), "shape": list(t.shape), "aux": sorted(t.aux)}
            else:
                shape = t.shape if isinstance(t, QTensor) else tuple(np.asarray(t).shape)
                dt = st._dtype_of(np.zeros(0, np.asarray(t).dtype)) if to == "lowbit" else st._dtype_of(np.zeros(0, _float_dtype(to)))
                specs.append((name, dt, tuple(shape)))
        if to == "lowbit":
            meta[st.METADATA_KEY] = json.dumps({"format": 1, "tensors": index}, sort_keys=True)
        total = sum(st._nbytes(d, s, n) for n, d, s in specs)
        with st.Writer(out, specs, meta, checksums=True) as w, Progress(total, "convert", enabled=progress) as bar:
            for name in names:
                for n, d, s, a in st.layout_entries(name, produce(name)):
                    w.write(n, a)
                    bar.update(st._nbytes(d, s, n), name)
    return {"input": str(inp), "output": str(out), "to": to, "tensors": report,
            "output_bytes": Path(out).stat().st_size, "seconds": time.perf_counter() - t0}
