"""GGUF's 3-bit grid i-quants, IQ3_XXS and IQ3_S: one codec class per ggml type.

Each 32 elements are eight quadruplets of magnitudes taken from a grid (256 or 512 points of
four 3-bit levels), one sign per element and a 4-bit sub-block scale under the block's fp16
``d``. Encoding is ggml's ``quantize_iq3_xxs`` / ``quantize_iq3_s`` byte for byte, with or
without ``importance=`` (ggml accepts both without an imatrix); the search tables are built
from the grids the way ggml's ``iq3xs_init_impl`` builds them (see
:mod:`lowbit.kernels.cpu._iq3_enc` and :mod:`lowbit.kernels.cpu._iq3_maps`; the Triton twin is :mod:`lowbit.kernels.gpu._iq3_enc`). Decoding is
``dequantize_row_iq3_*`` (:mod:`lowbit.kernels.cpu.gguf_iq`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._gguf import GGUFCodec

__all__ = ["IQ3XXS", "IQ3S"]


class IQ3XXS(GGUFCodec, codec_id="iq3_xxs"):
    """GGUF IQ3_XXS (ggml type 18), 3.0625 bits per element. 256 elements: fp16 d, 64 bytes of
    indices into the 256-point grid (four magnitudes 4, 12, ..., 52, 62 each), and per 32
    elements a little-endian u32: four 7-bit sign indices (the eighth sign of each 8 makes the
    count of minus signs even) and a 4-bit scale s in the top bits; x = d * (0.5 + s) / 2 *
    grid * sign. ggml flips the sign of the least important element of a byte with an odd count
    of negatives, so that element may come back with the wrong sign (hence ``bound_rel`` > 1).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq3_xxs", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 196), 3.0625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.5 * np.abs(w).max())
    True
    """

    family = "gguf_iq"
    gpu_encode = True  # lowbit.kernels.gpu._iq3_enc
    ggml_type = 18
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 1.25


class IQ3S(GGUFCodec, codec_id="iq3_s"):
    """GGUF IQ3_S (ggml type 21), 3.4375 bits per element. 256 elements: fp16 d, the low 8 bits of
    64 9-bit indices into the 512-point grid (magnitudes 1, 3, ..., 15) in ``qs`` and their 9th
    bits in ``qh``, one sign bit per element in ``signs``, and a 4-bit scale s per 32 elements
    (two per byte of ``scales``); x = d * (1 + 2s) * grid * sign.

    ggml's quantizer moves its ``qs`` and ``signs`` write positions on only after a sub-block that
    is not all zero, so after an all-zero sub-block the next ones' codes land one sub-block early
    (their ``qh`` bits and scales do not) and decode with their neighbour's scale: lowbit writes
    the same bytes, and :meth:`error_bound` allows ``shifted_bound_rel`` in such blocks.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq3_s", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 220), 3.4375)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.5 * np.abs(w).max())
    True
    """

    family = "gguf_iq"
    gpu_encode = True  # lowbit.kernels.gpu._iq3_enc
    ggml_type = 21
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.6
    #: the bound in a block where an all-zero sub-block precedes a non-zero one (ggml's shift)
    shifted_bound_rel = 2.5

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        bound = super().error_bound(x, q)
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return bound
        zero = (x.reshape(-1, 8, 32) == 0).all(-1)  # [blocks, sub-blocks]: ggml's ``if (!max)``
        later = np.flip(np.cumsum(np.flip(~zero, 1), 1), 1) - ~zero  # non-zero sub-blocks after each
        shifted = (zero & (later > 0)).any(-1)
        if not shifted.any():
            return bound
        a = np.abs(x.astype(np.float64)).reshape(-1, 256).max(1)
        extra = np.where(shifted, (self.shifted_bound_rel - self.bound_rel) * a, 0.0)
        return bound + np.repeat(extra, 256).reshape(x.shape)
