"""The search tables of ggml's 8-wide grid quantizers (IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M),
derived from the grids: what ggml's ``iq2xs_init_impl(type)`` builds before ``quantize_iq2_*``
and ``quantize_iq1_*`` can run.

ggml describes each grid row by a *key*: eight 2-bit levels ``l[i]``, packed ``sum l[i] << 2i``.
IQ2 grids hold the bytes 8, 25, 43 (levels 0, 1, 2); the IQ1 grid holds -1, 0, 1 (levels 0, 1, 2
too). A quantizer rounds eight values to levels 0..2, packs the key and looks it up:

* ``grid``: ggml's ``kgrid_q2xs``, one row of eight int8 per grid entry, holding ``2*l + 1``
  (1, 3, 5: the odd lattice points the search measures distances on).
* ``kmap``: one int32 per key ``0 .. 43691`` (``0xAAAA + 2``, the largest key of levels <= 2,
  plus one). ``kmap[key] >= 0``: the key is grid row ``kmap[key]``. Otherwise the key is off
  the grid and ``-kmap[key] - 1`` is the offset of its neighbour list in ``neighbours``.
* ``neighbours``: uint16, for every off-grid key in increasing key order: the count ``n``, then
  ``n`` grid rows. The rows are those at the ``nwant`` smallest squared distances from the key's
  point ``2*l + 1`` (every row at each of those distances), sorted by (distance, row) as ggml's
  ``qsort`` with ``iq2_compare_func`` leaves them. ``nwant`` is 2 for IQ2_XXS and IQ2_XS, 1 for
  IQ2_S, 3 for IQ1_S and IQ1_M (which share one grid and one set of tables).

Keys with a level 3 (values 7) exist in ggml's table too (its loop covers every key below
43692); the quantizers clamp levels to 0..2, so they never look those up.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["KMAP_SIZE", "iq2_maps", "grid_keys"]

#: ggml's ``kmap_size``: one more than the largest key of eight levels <= 2 (0xAAAA)
KMAP_SIZE = 43692

#: tables() index of each kind's grid and ggml's ``nwant`` (iq1_m shares iq1_s's tables)
_KINDS = {"iq2_xxs": (0, 2), "iq2_xs": (1, 2), "iq2_s": (2, 1), "iq1_s": (5, 3), "iq1_m": (5, 3)}


def _levels(kind: str) -> np.ndarray:
    """The grid of ``kind`` as levels 0..2, int64 (rows, 8), in ggml's row order."""
    from .gguf_iq import tables

    g = tables()[_KINDS[kind][0]]
    # IQ2 grids: bytes 8, 25, 43; IQ1: -1, 0, 1. Both are levels 0, 1, 2 in increasing order.
    vals = np.unique(g)
    assert vals.size == 3, (kind, vals)
    return np.searchsorted(vals, g).astype(np.int64)


def grid_keys(kind: str) -> np.ndarray:
    """The key of every grid row (ggml's ``kgrid_2bit_*`` / ``kgrid_1bit_2048`` tables), int64.

    >>> grid_keys("iq2_xxs")[:4].tolist()
    [0, 2, 5, 8]
    """
    lv = _levels(kind)
    return (lv << (2 * np.arange(8))).sum(axis=1)


@functools.lru_cache(maxsize=None)
def iq2_maps(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, kmap, neighbours)`` of ggml's ``iq2xs_init_impl`` for ``kind`` (``"iq2_xxs"``,
    ``"iq2_xs"``, ``"iq2_s"``, ``"iq1_s"`` or ``"iq1_m"``): see the module docstring. The arrays
    are read-only and cached; ``grid`` is int8 (rows, 8), ``kmap`` int32 (43692,),
    ``neighbours`` uint16.

    >>> grid, kmap, nb = iq2_maps("iq2_xxs")
    >>> grid.shape, int(kmap[0]), grid[0].tolist()        # key 0: all levels 0, grid row 0
    ((256, 8), 0, [1, 1, 1, 1, 1, 1, 1, 1])
    >>> o = -int(kmap[1]) - 1                              # key 1 (level 1 in lane 0) is off the grid
    >>> n = int(nb[o]); rows = nb[o + 1:o + 1 + n].tolist()
    >>> rows[:2], grid[rows[0]].tolist()                   # its nearest rows come first
    ([0, 1], [1, 1, 1, 1, 1, 1, 1, 1])
    """
    nwant = _KINDS[kind][1]
    lv = _levels(kind)
    G = lv.shape[0]
    grid = (2 * lv + 1).astype(np.int8)
    keys = grid_keys(kind)
    kmap = np.full(KMAP_SIZE, -1, dtype=np.int64)
    kmap[keys] = np.arange(G)

    # every off-grid key's point 2*l + 1 (levels 0..3 from the key's bit pairs)
    off = np.flatnonzero(kmap < 0)
    pos = 2 * ((off[:, None] >> (2 * np.arange(8))) & 3) + 1  # (n_off, 8)
    gp = grid.astype(np.float64)
    gg = (gp * gp).sum(axis=1)

    # squared distances are small integers (< 8 * 6**2 = 288), exact in float64 as |p|^2 + |g|^2 - 2 p.g;
    # per key, the nwant smallest distinct distances bound the list, whose rows then sort by
    # (distance, row): ggml's qsort order
    counts = np.empty(off.size, dtype=np.int64)
    chunks = []
    step = 4096
    for s in range(0, off.size, step):
        p = pos[s:s + step].astype(np.float64)
        d2 = ((p * p).sum(axis=1)[:, None] + gg[None, :] - 2.0 * (p @ gp.T)).astype(np.int64)  # (chunk, G)
        n = p.shape[0]
        present = np.zeros((n, 8 * 36 + 1), dtype=bool)
        present[np.arange(n)[:, None], d2] = True
        # the nwant-th smallest distinct distance of each key (every key has >= nwant of them)
        thr = np.argmax(np.cumsum(present, axis=1) >= nwant, axis=1)
        keep = d2 <= thr[:, None]
        r, j = np.nonzero(keep)  # by key, then by grid row
        order = np.argsort(r * 289 + d2[r, j], kind="stable")  # stable: equal distances keep row order
        counts[s:s + step] = keep.sum(axis=1)
        chunks.append((r[order] + s, j[order]))
    r_all = np.concatenate([c[0] for c in chunks])
    j_all = np.concatenate([c[1] for c in chunks])

    # layout: for each off-grid key in key order, [count, rows...]; kmap = -(offset of count) - 1
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    neighbours = np.empty(int((counts + 1).sum()), dtype=np.uint16)
    neighbours[starts] = counts
    # each neighbour goes after its key's count, at its rank within the key
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_key = np.arange(r_all.size) - first[r_all]
    neighbours[starts[r_all] + 1 + rank_in_key] = j_all
    kmap[off] = -(starts + 1)

    out = (np.ascontiguousarray(grid), kmap.astype(np.int32), neighbours)
    for a in out:
        a.flags.writeable = False
    return out
