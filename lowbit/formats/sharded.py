"""Sharded safetensors checkpoints read as one file: ``model.safetensors.index.json`` and its shards.

A Hugging Face checkpoint past a few GB is ``model-00001-of-0000N.safetensors`` ... plus
``model.safetensors.index.json`` whose ``weight_map`` names the shard of every tensor (the format
``transformers``' ``save_pretrained`` and ``huggingface_hub.save_torch_state_dict`` write).
:func:`open_sharded` opens the index (or the folder holding it, or a folder of shards without
one) as a :class:`ShardedSafetensors`: the interface of
:class:`lowbit.formats.safetensors.SafetensorsFile` (``names()``, ``get()``, ``info()``,
``raw()``, ``quantized``, ``metadata``), every tensor read from its own shard with a partial,
memory-mapped read of its bytes alone, so a tensor costs its own size whichever shard holds it.

Every shard's header is checked when the checkpoint is opened (no data read): the index's
shards exist, each tensor the index names is in the shard it names and in no other, and every
tensor of a shard is in the index; a violation is a FormatError naming the file and tensor.
``lowbit.open_file(folder)`` and ``lowbit.open_file(index.json)`` return one.

>>> import os, tempfile, json, numpy as np, lowbit
>>> d = tempfile.mkdtemp()
>>> lowbit.save(os.path.join(d, "a.safetensors"), {"x": np.ones(2, np.float32)})
>>> lowbit.save(os.path.join(d, "b.safetensors"), {"y": np.zeros(3, np.float32)})
>>> _ = open(os.path.join(d, "model.safetensors.index.json"), "w").write(json.dumps(
...     {"metadata": {}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}))
>>> with lowbit.open_file(d) as f:
...     f.names(), f.get("y").tolist(), f.shard_of("y")
(['x', 'y'], [0.0, 0.0, 0.0], 1)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .safetensors import AUX_SEP, METADATA_KEY, MAX_JSON_DEPTH, SafetensorsFile, json_depth, parse_json

__all__ = ["ShardedSafetensors", "open_sharded", "index_path", "is_sharded", "INDEX_SUFFIX"]

INDEX_SUFFIX = ".safetensors.index.json"


def index_path(path: str | os.PathLike[str]) -> Path | None:
    """The index of a sharded checkpoint given as its index, or its folder; None for a folder
    with no index (its ``*.safetensors`` files are then the shards)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*" + INDEX_SUFFIX))
        if len(found) > 1:
            raise FormatError(f"{p}: several indexes ({', '.join(f.name for f in found)}): name the one to read")
        return found[0] if found else None
    return p


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder or a ``*.safetensors.index.json`` (read by :func:`open_sharded`)."""
    p = Path(path)
    return p.is_dir() or p.name.endswith(".index.json")


def _weight_map(idx: Path) -> dict[str, str]:
    try:
        raw = idx.read_bytes()
    except OSError as e:
        raise FormatError(f"{idx}: cannot read the index ({e.strerror})") from None
    doc = parse_json(raw, str(idx), "index")
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise FormatError(f"{idx}: malformed index: expected {{\"weight_map\": {{tensor name: shard file}}}}")
    for f in set(wm.values()):
        if os.path.isabs(f) or ".." in Path(f).parts or Path(f).name != f:
            raise FormatError(f"{idx}: weight_map names the file {f!r}: expected a file name beside the index")
    return wm


class ShardedSafetensors(SafetensorsFile):
    """The shards of a checkpoint as one :class:`SafetensorsFile`: tensor names in shard order
    (then each shard's byte order), metadata of the first shard, lowbit's index merged."""

    def __init__(self, path: str | os.PathLike[str], *, verify: bool | None = None) -> None:
        p = Path(path)
        idx = index_path(p)
        folder = p if p.is_dir() else p.parent
        if idx is not None:
            wm = _weight_map(idx)
            if not wm:
                raise FormatError(f"{idx}: the index's weight_map is empty")
            files = sorted(set(wm.values()))
            self.path = idx
        else:
            files = sorted(f.name for f in folder.glob("*.safetensors"))
            if not files:
                raise FormatError(f"{folder}: no *.safetensors files and no *{INDEX_SUFFIX}")
            wm = None
            self.path = folder
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise FormatError(f"{self.path}: missing shard(s) {', '.join(missing)} (the index names them)")
        self.verify_mode = verify
        self._verified: set[str] = set()
        self.shards: list[SafetensorsFile] = []
        self._owner: dict[str, int] = {}
        try:
            for i, f in enumerate(files):
                s = SafetensorsFile(folder / f, verify=verify)
                self.shards.append(s)
                for name in s.keys():
                    if name in self._owner:
                        raise FormatError(f"{s.path}: tensor {name!r} is also in {files[self._owner[name]]}")
                    self._owner[name] = i
            if wm is not None:
                for name, f in wm.items():
                    got = self._owner.get(name)
                    if got is None or files[got] != f:
                        where = "no shard" if got is None else files[got]
                        raise FormatError(f"{self.path}: tensor {name!r}: the index says {f}, found in {where}")
                extra = [n for n in self._owner if n not in wm and n.partition(AUX_SEP)[0] not in wm]
                if extra:
                    raise FormatError(f"{self.path}: tensor {extra[0]!r} of {files[self._owner[extra[0]]]} is not "
                                      f"in the index's weight_map ({len(extra)} such)")
        except BaseException:
            self.close()
            raise
        self.files = files
        self.metadata = dict(self.shards[0].metadata)
        self._info = {n: self.shards[i]._info[n] for n, i in self._owner.items()}

    # ---- per-shard delegation ----------------------------------------------------------------------
    def shard_of(self, name: str) -> int:
        """The input shard (from 0) holding tensor ``name``."""
        try:
            return self._owner[name]
        except KeyError:
            raise FormatError(f"safetensors: {self.path}: no tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        return self.shards[self.shard_of(name)].raw(name)

    def verify(self, name: str | None = None, raw: np.ndarray | None = None) -> int:
        if name is None:
            return sum(s.verify() for s in self.shards)
        return self.shards[self.shard_of(name)].verify(name, raw)

    @property
    def checksums(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.shards:
            out.update(s.checksums)
        return out

    @property
    def quantized(self) -> dict[str, Any]:
        if not hasattr(self, "_index"):
            merged: dict[str, Any] = {}
            for s in self.shards:
                merged.update(s.quantized)
            if json_depth(merged, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:  # pragma: no cover - checked per shard
                raise FormatError(f"safetensors: {self.path}: metadata {METADATA_KEY!r} nested too deep")
            self._index = merged
        return self._index

    def names(self) -> list[str]:
        return [n for s in self.shards for n in s.names()]

    def close(self) -> None:
        for s in getattr(self, "shards", []):
            s.close()

    def release(self, name: str) -> None:
        """Drop the pages of ``name`` from this process's memory map (the page cache keeps them)."""
        release_pages(self.shards[self.shard_of(name)], name)


def release_pages(f: Any, name: str) -> None:
    """``madvise(MADV_DONTNEED)`` over a tensor's bytes in a memory-mapped file, so the pages a
    read touched stop counting in this process's memory (a later read maps them again). For
    :class:`SafetensorsFile`, :class:`ShardedSafetensors` and GGUF files; a no-op elsewhere."""
    import mmap

    if isinstance(f, ShardedSafetensors):
        return f.release(name)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    try:
        if isinstance(f, SafetensorsFile):
            m, (a, b) = f._map, f._info[name]["data_offsets"]
            start, end = f._start + a, f._start + b
        else:
            shards, owner = getattr(f, "shards", None), getattr(f, "_owner", None)
            base = getattr(f, "_base", None)
            if base is not None:  # a pruned GGUF: its tensors live in the file it prunes
                return release_pages(base, f.old[name])
            t = f.tensor(name)
            m = shards[owner[name]]._mm if shards is not None else f._mm
            start, end = t.offset, t.offset + t.nbytes
    except (AttributeError, KeyError):
        return
    if m is None or end <= start:
        return
    page = mmap.PAGESIZE
    lo, hi = start // page * page, min(-(-end // page) * page, len(m))
    if hi > lo:
        try:
            m.madvise(advice, lo, hi - lo)
        except (OSError, ValueError):
            pass


def open_sharded(path: str | os.PathLike[str], *, verify: bool | None = None) -> Any:
    """A sharded checkpoint (its index or folder) as one file; a folder holding one safetensors
    file and no index is that file, a folder of split GGUF shards is the split model."""
    p = Path(path)
    if p.is_dir() and index_path(p) is None:
        st = sorted(p.glob("*.safetensors"))
        if len(st) == 1:
            return SafetensorsFile(st[0], verify=verify)
        if not st:
            from .gguf_split import open_gguf, parse_split_path

            first = sorted(f for f in p.glob("*.gguf") if (s := parse_split_path(f)) is not None and s[1] == 0)
            if len(first) == 1:
                return open_gguf(first[0])
            raise FormatError(f"{p}: no *.safetensors files, no *{INDEX_SUFFIX} and no split GGUF "
                              "(NAME-00001-of-0000N.gguf)" if not first else
                              f"{p}: several split GGUF models ({', '.join(f.name for f in first)}): name a shard")
    return ShardedSafetensors(p, verify=verify)
