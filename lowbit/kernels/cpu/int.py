"""Numba kernels of the group-scaled integer codecs (family ``int``; spec/int.toml).

Entry points (same names and arguments as :mod:`lowbit.kernels.gpu.int`):

* ``encode(x, s, z, geo, gcol, bits, zconst, qlo, qhi, out)``: float32 ``x[rows, K]`` →
  packed codes ``out[rows, K*bits/8]``. Element ``(r, c)`` uses group
  ``g = ((r // M) * NGr + (r % M) // Gr) * NGc + gcol[c]``; its code is
  ``clamp(rne(fl32(x / s[g])) + z[g], qlo, qhi)`` (``z[g]`` is ``zconst`` when ``z`` is None,
  the symmetric case). The division result is clamped to ±1024 before rounding (Inf and huge
  values saturate); NaN never reaches the kernel (the codec refuses it first).
* ``decode(data, s, z, geo, gcol, bits, zconst, out)``: ``y = float32(code - z[g]) * s[g]``;
  a NaN result (only possible from foreign scales) is written as the canonical 0x7FC00000.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import kernel
from .minifloat import _pack, _unpack

_QNAN = np.float32(np.nan)  # 0x7FC00000


@njit(cache=True, parallel=True)
def _encode(x, s, z, has_z, zconst, M, Gr, NGr, NGc, gcol, w, qlo, qhi, out):
    rows, K = x.shape
    for r in prange(rows):
        gr = ((r // M) * NGr + (r % M) // Gr) * NGc
        codes = np.empty(K, dtype=np.int32)
        for c in range(K):
            g = gr + gcol[c]
            v = np.float32(x[r, c] / s[g])  # correctly rounded float32 division
            v = min(max(v, np.float32(-1024.0)), np.float32(1024.0))
            k = np.int64(np.rint(v)) + (z[g] if has_z else zconst)
            codes[c] = min(max(k, qlo), qhi)
        _pack(codes, w, out[r], 0)


@njit(cache=True, parallel=True)
def _decode(data, s, z, has_z, zconst, M, Gr, NGr, NGc, gcol, w, shift, out):
    rows, K = out.shape
    for r in prange(rows):
        gr = ((r // M) * NGr + (r % M) // Gr) * NGc
        codes = np.empty(K, dtype=np.int32)
        _unpack(data[r], 0, w, codes)
        for c in range(K):
            g = gr + gcol[c]
            y = np.float32(np.float32((codes[c] << shift) - (z[g] if has_z else zconst)) * s[g])
            out[r, c] = y if y == y else _QNAN


_NO_Z = np.zeros(1, dtype=np.int32)


@kernel("int", "cpu", "encode")
def encode(x, s, z, geo, gcol, bits: int, zconst: int, qlo: int, qhi: int, out) -> None:
    """Codes of float32 ``x[rows, K]`` into ``out``; see the module docstring."""
    _encode(x, s.reshape(-1), _NO_Z if z is None else z.reshape(-1).astype(np.int32), z is not None, zconst,
            geo.M, geo.Gr, geo.NGr, geo.NGc, gcol, bits, qlo, qhi, out)


@kernel("int", "cpu", "decode")
def decode(data, s, z, geo, gcol, bits: int, zconst: int, out, shift: int = 0) -> None:
    """float32 values of the codes in ``data``; see the module docstring. ``shift`` moves a
    sliced code back to its parent's width first: ``((code << shift) - z) * s``."""
    _decode(data, s.reshape(-1), _NO_Z if z is None else z.reshape(-1).astype(np.int32), z is not None, zconst,
            geo.M, geo.Gr, geo.NGr, geo.NGc, gcol, bits, shift, out)
