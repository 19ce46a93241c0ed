"""The search tables of ggml's IQ3 encoders, built the way ``iq3xs_init_impl`` builds them.

An IQ3 grid point is four codes l0..l3 in 0..7 (the element magnitudes 2l+1 = 1, 3, ..., 15);
its *key* is ``l0 | l1 << 3 | l2 << 6 | l3 << 9`` (0..4095). IQ3_XXS keeps 256 of the 4096
points, IQ3_S 512. The encoders round four magnitudes to a key and need two tables:

* ``kmap[key]``: the grid index of the point, or, for a key not on the grid, ``-(o + 1)`` where
  ``o`` is the start of its neighbour list in ``neighbours``;
* ``neighbours[o] = n`` followed by ``n`` grid indices: every grid point whose squared distance
  (in the 2l+1 units) to the key's point is among the ``nwant`` smallest distinct distances
  (2 for the 256-point grid, 3 for the 512-point one), ordered by (distance, grid index) --
  ggml's ``qsort`` with ``iq3_compare_func``, a total order, so a stable sort by distance gives
  the same list. Lists are laid out in increasing key order.

The grids themselves come from the ``gguf`` package (:func:`lowbit.kernels.cpu.gguf_iq.tables`),
as the decoders use them; code l of an entry is the rank of its byte among the grid's eight
levels: IQ3_S stores the magnitudes 2l+1 themselves, IQ3_XXS (``iq3xxs_grid`` in ggml-common.h)
4, 12, ..., 52, 62, i.e. 4(2l+1) with the top level nudged from 60 to 62. The encoder's own grid
(``the_grid`` of ``iq3xs_init_impl``) is 2l+1 for both.
"""

from __future__ import annotations

import functools

import numpy as np

#: grid size -> (index into gguf_iq.tables(), nwant)
_GRIDS = {256: (3, 2), 512: (4, 3)}
KMAP_SIZE = 4096


@functools.lru_cache(maxsize=2)
def iq3_maps(grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, kmap, neighbours)`` for the 256- (IQ3_XXS) or 512-point (IQ3_S) grid.

    ``codes[g, i]`` is code l_i (0..7) of grid point g (int64 [grid_size, 4]); ``kmap`` is int32
    [4096] and ``neighbours`` uint16, both exactly ggml's ``iq3_data[].map`` / ``.neighbours``."""
    from .gguf_iq import tables

    which, nwant = _GRIDS[grid_size]
    grid = tables()[which]
    levels = np.unique(grid)
    if grid.shape != (grid_size, 4) or levels.size != 8:
        raise AssertionError(f"IQ3 grid {grid_size}: unexpected gguf table {grid.shape}, levels {levels}")
    codes = np.searchsorted(levels, grid)  # 0..7
    pos = 2 * codes + 1  # the encoder's magnitudes
    keys = codes[:, 0] | (codes[:, 1] << 3) | (codes[:, 2] << 6) | (codes[:, 3] << 9)

    kmap = np.full(KMAP_SIZE, -1, dtype=np.int64)
    kmap[keys] = np.arange(grid_size)  # C: kmap_q3xs[index] = i, later points win (keys are distinct)
    if len(set(keys.tolist())) != grid_size:
        raise AssertionError(f"IQ3 grid {grid_size}: duplicate points")

    # every key's point in 2l+1 units, and its squared distance to every grid point (ints, exact)
    allk = np.arange(KMAP_SIZE)
    kpos = 2 * np.stack([(allk >> (3 * i)) & 7 for i in range(4)], axis=1) + 1
    off = np.flatnonzero(kmap < 0)
    d2 = ((kpos[off, None, :] - pos[None, :, :]) ** 2).sum(-1)  # [n_off, grid_size]
    order = np.argsort(d2, axis=1, kind="stable")  # ties by grid index, as iq3_compare_func
    sd2 = np.take_along_axis(d2, order, axis=1)

    lists: list[np.ndarray] = []
    counter = 0
    for r, key in enumerate(off):
        # C: walk the sorted list, counting distinct distances; stop at the (nwant+1)-th
        distinct = np.cumsum(np.r_[True, sd2[r, 1:] > sd2[r, :-1]])
        n = int(np.count_nonzero(distinct <= nwant))
        kmap[key] = -(counter + 1)
        lists.append(np.r_[n, order[r, :n]])
        counter += 1 + n
    neighbours = np.concatenate(lists).astype(np.uint16)
    return codes, kmap.astype(np.int32), neighbours
