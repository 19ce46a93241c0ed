"""KV-cache compression: an append-only compressed store per layer (:class:`KVStore`, framework
free) and its transformers integration (:class:`LowbitCache`, imported on first use because it
needs transformers)."""

from __future__ import annotations

from typing import Any

from .store import KVStore

__all__ = ["KVStore", "LowbitCache", "LowbitLayer", "use_lowbit_attention"]


def __getattr__(name: str) -> Any:
    if name in ("LowbitCache", "LowbitLayer", "use_lowbit_attention", "DEFAULT_KV"):
        from . import hf

        return getattr(hf, name)
    raise AttributeError(name)
