"""Split GGUF models, as llama-gguf-split and ``llama-quantize --keep-split`` write them.

A model in N shards is ``PREFIX-00001-of-0000N.gguf`` ... ``PREFIX-0000N-of-0000N.gguf``; every
shard carries ``split.no`` (uint16, from 0), ``split.count`` (uint16) and
``split.tensors.count`` (int32, the model's tensor count); the first shard also carries all other
metadata. :func:`open_gguf` reads any shard as the whole model (a :class:`SplitGGUF`, the same
interface as :class:`lowbit.formats.gguf.GGUFFile`, its metadata without the ``split.*`` keys),
or refuses naming the shards that are missing; :class:`Writer` writes a model into shards planned
by :func:`plan_shards` (``--split-max-tensors`` / ``--split-max-size`` as llama-gguf-split
counts them, or one shard per input shard) atomically: all shards appear, or none.

>>> import os, tempfile, numpy as np
>>> d = tempfile.mkdtemp(); out = os.path.join(d, "m.gguf")
>>> specs = [(f"t{i}", "f32", (4,)) for i in range(5)]
>>> with Writer(out, specs, {"general.architecture": "llama"}, {}, plan_shards(specs, max_tensors=2)) as w:
...     for n, _, _ in specs: w.write(n, np.full(4, 1.0, np.float32))
>>> sorted(os.listdir(d))
['m-00001-of-00003.gguf', 'm-00002-of-00003.gguf', 'm-00003-of-00003.gguf']
>>> g = open_gguf(os.path.join(d, "m-00002-of-00003.gguf"))
>>> g.names(), "split.count" in g.metadata, len(g.shards)
(['t0', 't1', 't2', 't3', 't4'], False, 3)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGUF_DEFAULT_ALIGNMENT, Keys

from ..errors import ConfigError, FormatError
from . import gguf as G

__all__ = ["open_gguf", "SplitGGUF", "split_path", "parse_split_path", "plan_shards", "shard_index", "Writer",
           "parse_size", "shard_metadata"]

NO, COUNT, TENSORS = Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT
_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_path(prefix: str | os.PathLike[str], no: int, count: int) -> Path:
    """llama.cpp's ``llama_split_path``: shard ``no`` (from 0) of ``count``.

    >>> split_path("out/model", 0, 3).name
    'model-00001-of-00003.gguf'
    """
    return Path(f"{os.fspath(prefix)}-{no + 1:05d}-of-{count:05d}.gguf")


def parse_split_path(path: str | os.PathLike[str]) -> tuple[str, int, int] | None:
    """``(prefix, no from 0, count)`` of a shard name, or None."""
    m = _NAME.match(os.fspath(path))
    if not m:
        return None
    return m.group("prefix"), int(m.group("no")) - 1, int(m.group("count"))


def parse_size(text: str) -> int:
    """llama-gguf-split's ``--split-max-size``: ``N`` followed by ``M`` (10^6 bytes) or ``G`` (10^9).

    >>> parse_size("500M"), parse_size("2G")
    (500000000, 2000000000)
    """
    m = re.fullmatch(r"\s*(\d+)\s*([MG])\s*", text or "")
    if not m:
        raise ConfigError(f"--split-max-size: expected a number followed by M or G (e.g. 500M, 2G), got {text!r}")
    return int(m.group(1)) * (10**6 if m.group(2) == "M" else 10**9)


class SplitGGUF(G.GGUFFile):
    """Every shard of a split model as one file: tensors in shard order, metadata of the first
    shard without the ``split.*`` keys; ``shards`` holds the per-shard readers."""

    shards: list[G.GGUFFile]
    _owner: dict[str, int]

    def raw(self, name: str) -> np.ndarray:
        t = self.tensor(name)
        mm = self.shards[self._owner[name]]._mm
        return np.frombuffer(mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def close(self) -> None:
        for s in self.shards:
            s.close()


def open_gguf(path: str | os.PathLike[str]) -> G.GGUFFile:
    """A GGUF file, or — when it is one shard of a split model — the whole model."""
    first = G.read(path)
    count, no = first.metadata.get(COUNT), first.metadata.get(NO, -1)
    if count is None:
        return first
    for key, v in ((COUNT, count), (NO, no)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
            first.close()
            raise FormatError(f"{path}: metadata {key!r}: expected an integer, got {v!r}")
    count, no = int(count), int(no)
    if count <= 1:
        return first
    parsed = parse_split_path(path)
    if parsed is None or parsed[1] != no or parsed[2] != count:
        first.close()
        raise FormatError(f"{path}: shard {no + 1} of a {count}-file split model, but its name does not follow "
                          f"PREFIX-{no + 1:05d}-of-{count:05d}.gguf, so the other shards cannot be found")
    paths = [split_path(parsed[0], i, count) for i in range(count)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        first.close()
        raise FormatError(f"{path}: split model of {count} shards: missing {', '.join(missing)}")
    first.close()
    shards: list[G.GGUFFile] = []
    try:
        for i, p in enumerate(paths):
            s = G.read(p)
            shards.append(s)
            got = (s.metadata.get(NO), s.metadata.get(COUNT))
            if not all(isinstance(v, (int, np.integer)) for v in got) or (int(got[0]), int(got[1])) != (i, count):
                raise FormatError(f"{p}: expected split.no {i} and split.count {count}, got {got[0]} and {got[1]}")
        return _merge(os.fspath(paths[0]), shards)
    except BaseException:
        for s in shards:
            s.close()
        raise


def _merge(path: str, shards: list[G.GGUFFile]) -> SplitGGUF:
    tensors, owner = [], {}
    for i, s in enumerate(shards):
        for t in s.tensors:
            if t.name in owner:
                raise FormatError(f"{s.path}: tensor {t.name!r} is also in shard {owner[t.name] + 1}")
            owner[t.name] = i
            tensors.append(t)
    want = shards[0].metadata.get(TENSORS)
    if want is not None and (not isinstance(want, (int, np.integer)) or int(want) != len(tensors)):
        raise FormatError(f"{path}: split.tensors.count says {int(want)} tensors, the {len(shards)} shards hold {len(tensors)}")
    meta = {k: v for k, v in shards[0].metadata.items() if k not in (NO, COUNT, TENSORS)}
    types = {k: v for k, v in shards[0].metadata_types.items() if k in meta}
    f = SplitGGUF(path, shards[0].version, meta, tensors, shards[0].data_offset, None, types)
    f.shards, f._owner = shards, owner
    return f


def shard_index(src: Any) -> dict[str, int]:
    """``{tensor name: shard number}`` of a source (all 0 for a single file)."""
    if isinstance(src, SplitGGUF):
        return dict(src._owner)
    return {n: 0 for n in src.names()}


def _padded(spec: tuple[str, str, tuple[int, ...]]) -> int:
    _, type_name, shape = spec
    _, bs, ts = G.BLOCK[G._TYPE_ID[type_name]]
    n = int(np.prod(shape or (1,))) // bs * ts
    return -(-n // GGUF_DEFAULT_ALIGNMENT) * GGUF_DEFAULT_ALIGNMENT


def plan_shards(specs: list[tuple[str, str, tuple[int, ...]]], *, max_tensors: int | None = None,
                max_size: int | None = None, keep: dict[str, int] | None = None) -> list[int] | None:
    """The shard of each output tensor (None: one file). ``max_tensors`` / ``max_size`` (bytes of
    padded tensor data per shard) cut as llama-gguf-split does; ``keep`` maps names to shards."""
    if sum(x is not None for x in (max_tensors, max_size, keep)) > 1:
        raise ConfigError("split: give one of --split-max-tensors, --split-max-size, --keep-split")
    if keep is not None:
        shards = [keep[n] for n, _, _ in specs]
        return shards if max(shards, default=0) > 0 else None
    if max_tensors is not None:
        if max_tensors < 1:
            raise ConfigError(f"--split-max-tensors: expected at least 1, got {max_tensors}")
        return [i // max_tensors for i in range(len(specs))]
    if max_size is not None:
        if max_size < 1:
            raise ConfigError(f"--split-max-size: expected a positive size, got {max_size}")
        out, shard, size = [], 0, 0
        for spec in specs:
            n = _padded(spec)
            if size + n > max_size:
                if size == 0:
                    raise ConfigError(f"--split-max-size {max_size}: tensor {spec[0]!r} ({n} bytes) alone exceeds it, "
                                      "which would leave a shard with no tensors")
                shard, size = shard + 1, n
            else:
                size += n
            out.append(shard)
        return out
    return None


def shard_metadata(no: int, count: int, n_tensors: int, metadata: dict[str, Any],
                   metadata_types: dict[str, tuple[int, int | None]], *, order: str = "gguf-split"
                   ) -> tuple[dict[str, Any], dict[str, tuple[int, int | None]]]:
    """The metadata (and value types) of shard ``no`` of ``count``: the model's metadata on the
    first shard only, then the ``split.*`` keys (``order`` as for :class:`Writer`)."""
    meta = {k: v for k, v in metadata.items() if k not in (NO, COUNT, TENSORS)} if no == 0 else {}
    types = {k: v for k, v in metadata_types.items() if k in meta}
    keys = [(NO, G.UINT16, no), (TENSORS, G.INT32, n_tensors), (COUNT, G.UINT16, count)]
    if order == "quantize":
        keys = [keys[0], keys[2], keys[1]]
    for k, vt, v in keys:
        meta[k], types[k] = v, (vt, None)
    return meta, types


class Writer:
    """Write a model's tensors (declared in order) into one GGUF file or into shards; the shard
    files appear together when every tensor is written (an error leaves none). ``order`` of the
    ``split.*`` keys: ``"gguf-split"`` (no, tensors.count, count) or ``"quantize"`` (no, count,
    tensors.count, as llama-quantize --keep-split writes them)."""

    def __init__(self, path: str | os.PathLike[str], specs: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, Any], metadata_types: dict[str, tuple[int, int | None]],
                 shards: list[int] | None = None, *, order: str = "gguf-split") -> None:
        path = Path(path)
        if shards is None:
            self.paths = [path]
            self._writers = [G.Writer(path, specs, metadata, metadata_types)]
            self._of = {n: 0 for n, _, _ in specs}
            return
        count = max(shards) + 1
        if sorted(set(shards)) != list(range(count)) or any(b < a for a, b in zip(shards, shards[1:])):
            raise ConfigError("split: every shard must hold consecutive tensors and none may be empty")
        prefix = str(path)[: -len(".gguf")] if str(path).lower().endswith(".gguf") else str(path)
        self.paths = [split_path(prefix, i, count) for i in range(count)]
        self._of = {n: s for (n, _, _), s in zip(specs, shards)}
        self._writers = []
        try:
            for i in range(count):
                meta, types = shard_metadata(i, count, len(specs), metadata, metadata_types, order=order)
                self._writers.append(G.Writer(self.paths[i], [s for s, j in zip(specs, shards) if j == i], meta, types))
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, data: Any) -> None:
        if name not in self._of:
            raise FormatError(f"GGUF writer: tensor {name!r} was not declared")
        self._writers[self._of[name]].write(name, data)

    def close(self) -> None:
        done: list[Path] = []
        try:
            for w, p in zip(self._writers, self.paths):
                w.close()
                done.append(p)
        except BaseException:
            self.abort()
            for p in done:
                p.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        for w in self._writers:
            w.abort()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
