"""KV-cache compression: an append-only compressed store per layer (:class:`KVStore`, framework
free), attention on the codes of the rotated KV codecs (:func:`scores`, :func:`weighted_sum`, see
:mod:`lowbit.kvcache.codes`) and the transformers integration (:class:`LowbitCache`, imported on
first use because it needs transformers)."""

from __future__ import annotations

from typing import Any

from .codes import scores, weighted_sum
from .store import KVStore

__all__ = ["KVStore", "LowbitCache", "LowbitLayer", "scores", "use_lowbit_attention", "weighted_sum"]


def __getattr__(name: str) -> Any:
    if name in ("LowbitCache", "LowbitLayer", "use_lowbit_attention", "DEFAULT_KV"):
        from . import hf

        return getattr(hf, name)
    raise AttributeError(name)
