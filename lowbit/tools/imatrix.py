"""llama.cpp importance matrices (imatrix files) for ``importance=`` and ``--imatrix``.

:func:`read_imatrix` reads both layouts llama-imatrix writes: the GGUF one
(``<tensor>.in_sum2`` / ``<tensor>.counts``, normalised per expert by the counts, and 1 where a
count is 0, as llama-quantize's ``load_imatrix`` does) and the legacy binary ``.dat``
(``values / ncall``). :func:`imatrix_info` gives the dataset names, entry count and chunk count
llama-quantize records as ``quantize.imatrix.*`` metadata.

>>> import os, tempfile, numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "i.dat")
>>> write_imatrix_dat(p, {"blk.0.ffn_up.weight": (4, np.full(8, 2.0, np.float32))}, dataset="wiki.txt")
>>> read_imatrix(p)["blk.0.ffn_up.weight"][:2]
array([0.5, 0.5], dtype=float32)
>>> imatrix_info(p)
{'datasets': ['wiki.txt'], 'entries': 1, 'chunks': 0}
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from lowbit.errors import FormatError

__all__ = ["read_imatrix", "imatrix_info", "write_imatrix_dat"]


# ---- imatrix files ------------------------------------------------------------------------------

def read_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """Per-column importance weights ``{tensor name: float32 [ncols]}`` (``[n_expert, ncols]``
    for expert tensors) from a llama.cpp imatrix: the GGUF layout (``in_sum2 / counts`` in
    float32, counts rounded to integers, weight 1 where a count is 0) or the legacy binary
    ``.dat`` (``values / ncall``)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from lowbit.formats import gguf

        out = {}
        with gguf.read(path) as g:
            names = set(g.names())
            sums = [n[: -len(".in_sum2")] for n in g.names() if n.endswith(".in_sum2")]
            for name in sums:
                if name + ".counts" not in names:
                    raise FormatError(f"imatrix {path}: entry {name!r}: has in_sum2 but no counts")
                s = np.asarray(g.decode(name + ".in_sum2"), dtype=np.float32)
                counts = np.rint(np.asarray(g.decode(name + ".counts"), dtype=np.float32).reshape(-1)).astype(np.float32)
                s = s.reshape(counts.size, -1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    w = np.where(counts[:, None] > 0, s / np.where(counts > 0, counts, 1)[:, None], np.float32(1))
                out[name] = w[0].astype(np.float32) if w.shape[0] == 1 else w.astype(np.float32)
        return out
    return _read_dat(path)


def imatrix_info(path: str | Path) -> dict[str, object]:
    """``{"datasets": [...], "entries": n, "chunks": n}``: what llama-quantize writes as
    ``quantize.imatrix.dataset`` / ``.entries_count`` / ``.chunks_count``."""
    path = Path(path)
    entries = len(read_imatrix(path))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from lowbit.formats import gguf

        with gguf.read(path) as g:
            missing = [k for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size") if k not in g.metadata]
            if missing:  # llama-quantize refuses these files too
                raise FormatError(f"imatrix {path}: missing imatrix metadata {', '.join(missing)}")
            ds, chunks = g.metadata["imatrix.datasets"], g.metadata["imatrix.chunk_count"]
            if not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool):
                raise FormatError(f"imatrix {path}: imatrix.chunk_count: expected an integer, got {chunks!r}")
            return {"datasets": [str(d) for d in ds] if isinstance(ds, list) else [], "entries": entries,
                    "chunks": int(chunks)}
    raw = path.read_bytes()
    chunks, datasets = 0, []
    pos = _dat_end(raw)
    if pos + 4 <= len(raw):
        (chunks,) = struct.unpack_from("<i", raw, pos)
        if pos + 8 <= len(raw):
            (ln,) = struct.unpack_from("<i", raw, pos + 4)
            if ln > 0 and pos + 8 + ln <= len(raw):
                datasets = [raw[pos + 8: pos + 8 + ln].decode("utf-8", "replace")]
    return {"datasets": datasets, "entries": entries, "chunks": chunks}


def _dat_end(raw: bytes) -> int:
    """Offset just past the entries of a (validated) legacy file."""
    (n,) = struct.unpack_from("<i", raw, 0)
    pos = 4
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", raw, pos)
        pos += 4 + ln
        _, nval = struct.unpack_from("<ii", raw, pos)
        pos += 8 + 4 * nval
    return pos


def _read_dat(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(raw):
            raise FormatError(f"imatrix {path}: {what}: needs {n} bytes at offset {pos}, file has {len(raw) - pos}")
        b = raw[pos:pos + n]
        pos += n
        return b

    (n_entries,) = struct.unpack("<i", take(4, "entry count"))
    if n_entries < 0 or n_entries > len(raw) // 12:
        raise FormatError(f"imatrix {path}: entry count {n_entries} cannot fit in {len(raw)} bytes")
    out = {}
    for i in range(n_entries):
        (ln,) = struct.unpack("<i", take(4, f"entry {i} name length"))
        try:
            name = take(ln, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"imatrix {path}: entry {i} name is not UTF-8") from None
        ncall, nval = struct.unpack("<ii", take(8, f"entry {name!r} counts"))
        if nval < 0:
            raise FormatError(f"imatrix {path}: entry {name!r}: negative value count {nval}")
        vals = np.frombuffer(take(4 * nval, f"entry {name!r} values"), dtype="<f4").astype(np.float32)
        out[name] = vals / np.float32(ncall) if ncall > 0 else vals
    return out


def write_imatrix_dat(path: str | Path, entries: dict[str, tuple[int, np.ndarray]], dataset: str = "lowbit") -> None:
    """Write the legacy layout: ``{name: (ncall, summed values)}`` (used by tests and tools)."""
    b = struct.pack("<i", len(entries))
    for name, (ncall, vals) in entries.items():
        nb = name.encode()
        v = np.asarray(vals, dtype="<f4")
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, v.size) + v.tobytes()
    d = dataset.encode()
    b += struct.pack("<i", 0) + struct.pack("<i", len(d)) + d
    Path(path).write_bytes(b)
