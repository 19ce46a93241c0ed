"""On-disk containers. ``save`` picks the container from the file suffix, ``load`` and
``open_file`` from the file's first bytes (GGUF files start with ``b"GGUF"``; anything else is
read as safetensors)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import FormatError
from . import safetensors as _st

__all__ = ["save", "load", "open_file", "container_of"]


def container_of(path: str | os.PathLike[str]) -> str:
    """``"gguf"`` or ``"safetensors"``, from the magic bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise FormatError(f"{path}: cannot open ({e.strerror})") from None
    return "gguf" if head == b"GGUF" else "safetensors"


def _gguf() -> Any:
    try:
        from . import gguf
    except ImportError as e:  # pragma: no cover - present once the GGUF family is installed
        raise FormatError(f"GGUF support is not available in this build ({e})") from None
    return gguf


def save(path: str | os.PathLike[str], tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None,
         **options: Any) -> None:
    """Write tensors (QTensors and arrays) atomically; ``.gguf`` → GGUF, otherwise safetensors
    (options: ``checksums=True``, per-tensor SHA-256 in the metadata)."""
    if Path(path).suffix.lower() == ".gguf":
        return _gguf().save(path, tensors, metadata, **options)
    return _st.save(path, tensors, metadata, **options)


def load(path: str | os.PathLike[str], *, verify: bool | None = None) -> dict[str, Any]:
    """Every tensor of a file: QTensors where the file says how to decode them, arrays otherwise.
    ``verify`` (safetensors; GGUF carries no digests): by default every digest the file carries
    is checked (lowbit's header digest and per-tensor SHA-256); ``True`` requires them, ``False``
    skips them (see :func:`lowbit.formats.safetensors.open_file`)."""
    if container_of(path) == "gguf":
        from .gguf_split import open_gguf

        with open_gguf(path) as f:  # a shard of a split model: every shard
            return {n: f.get(n) for n in f.names()}
    return _st.load(path, verify=verify)


def open_file(path: str | os.PathLike[str], *, verify: bool | None = None) -> Any:
    """Lazy, memory-mapped access to one tensor at a time (``names()``, ``get(name)``); ``verify``
    as for :func:`load` (digests checked once per tensor, on its first read). A folder or a
    ``*.safetensors.index.json`` is a sharded checkpoint read as one file
    (:mod:`lowbit.formats.sharded`)."""
    if os.path.isdir(path) or os.fspath(path).endswith(".index.json"):
        from .sharded import open_sharded

        return open_sharded(path, verify=verify)
    if container_of(path) == "gguf":
        _gguf()
        from .gguf_split import open_gguf

        return open_gguf(path)  # a shard of a split model reads as the whole model
    return _st.open_file(path, verify=verify)
