"""llama-quantize's ``--prune-layers``: drop whole layers and renumber the ones after them.

llama.cpp (``remap_layer`` in src/llama-quant.cpp) walks the tensors in its loader order; a
tensor whose name holds ``blk.N.`` with N in the list is dropped, layers below the first pruned
one keep their number, later ones are numbered on consecutively; ``{arch}.block_count`` becomes
the number of layers left. Importance-matrix entries keep the original names.

>>> prune_map(["blk.0.a", "blk.1.a", "blk.2.a", "blk.3.a", "output.weight"], [1])
{'blk.0.a': 'blk.0.a', 'blk.1.a': None, 'blk.2.a': 'blk.1.a', 'blk.3.a': 'blk.2.a', 'output.weight': 'output.weight'}
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable

import numpy as np

from lowbit.errors import ConfigError
from lowbit.formats import gguf as G
from lowbit.tools.mixes import llama_order

__all__ = ["parse_prune", "prune_map", "pruned", "PrunedGGUF", "blocks_left"]

_BLK = re.compile(r"blk\.(\d+)\.")


def parse_prune(text: str) -> list[int]:
    """``"3,1,1"`` -> ``[1, 3]`` (sorted, unique, each >= 0)."""
    out = set()
    for part in text.split(","):
        try:
            v = int(part)
        except ValueError:
            v = -1
        if v < 0:
            raise ConfigError(f"--prune-layers: invalid layer id {part!r} (expected L0,L1,... with L >= 0)")
        out.add(v)
    return sorted(out)


def _walk(names: Iterable[str], prune: list[int]) -> tuple[dict[str, str | None], int]:
    mapped: dict[int, str] = {}
    next_id = 0
    out: dict[str, str | None] = {}
    for name in llama_order(names):
        m = _BLK.search(name)
        if not prune or not m:
            out[name] = name
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in prune:
                mapped[blk] = ""
            elif blk < prune[0]:
                mapped[blk], next_id = str(blk), blk + 1
            else:
                mapped[blk], next_id = str(next_id), next_id + 1
        out[name] = name[: m.start(1)] + mapped[blk] + name[m.end(1):] if mapped[blk] else None
    return out, next_id


def prune_map(names: Iterable[str], prune: list[int]) -> dict[str, str | None]:
    """``{old name: new name, or None when dropped}``, in the order given."""
    names = list(names)
    m, _ = _walk(names, prune)
    return {n: m[n] for n in names}


def blocks_left(names: Iterable[str], prune: list[int]) -> int:
    """The ``block_count`` llama-quantize writes after pruning."""
    return _walk(names, prune)[1]


class PrunedGGUF(G.GGUFFile):
    """A GGUF source seen with the pruned layers gone and the rest renumbered."""

    _base: G.GGUFFile
    old: dict[str, str]  # new name -> original name

    def raw(self, name: str) -> np.ndarray:
        return self._base.raw(self.old[self.tensor(name).name])

    def close(self) -> None:
        self._base.close()


def pruned(src: G.GGUFFile, prune: list[int]) -> PrunedGGUF:
    """``src`` with ``prune``'s layers dropped (tensor order kept)."""
    if not isinstance(src, G.GGUFFile):
        raise ConfigError("--prune-layers: the input must be a GGUF model (blk.N. tensor names)")
    m = prune_map(src.names(), prune)
    tensors = [replace(t, name=m[t.name]) for t in src.tensors if m[t.name] is not None]
    f = PrunedGGUF(src.path, src.version, src.metadata, tensors, src.data_offset, None, src.metadata_types)
    f._base, f.old = src, {new: old for old, new in m.items() if new is not None}
    return f
