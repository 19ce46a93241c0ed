"""GGUF's 2-bit grid i-quants IQ2_XXS, IQ2_XS and IQ2_S: one codec class per ggml type.

Each stores groups of eight magnitudes as an index into a grid of 8-vectors with levels
{8, 25, 43}/8 (256, 512 or 1024 rows), their signs apart, and 4-bit sub-block scales under an fp16
``d`` per 256 elements. Encoding is ggml's ``quantize_iq2_*`` (a scale search that snaps every
group to the grid through precomputed neighbour lists), byte for byte; decoding is
``dequantize_row_iq2_*``. Layouts: ``lowbit/spec/<id>.toml``; the shared contract:
:mod:`lowbit.codecs._gguf`; the algorithms: :mod:`lowbit.kernels.cpu._iq2_enc`.

ggml quantizes IQ2_XXS and IQ2_XS only with an imatrix (``importance=``; without one
``encode`` raises ConfigError where ggml would abort); IQ2_S takes one optionally.

``bound_rel`` is what can be proven, not what is typical: a sub-block scale never exceeds the
block's max |x| (it is a non-negatively weighted least-squares fit of |x| <= max with levels >= 1),
so d <= max/31 and |decode| <= d * 15.5 / 4 * 43 = 5.375 max (plus fp16 rounding of d); a value
can decode with the wrong sign (IQ2_XXS/XS store only 7 of 8 signs) or on another grid level,
so |decode - x| <= 6.4 max. The largest error measured (Gaussian, heavy-tailed, mixed-scale,
outlier and constant-magnitude rows) is 1.32 max, where a sign was dropped. The proof needs
importance weights >= 0, which an imatrix is.
"""

from __future__ import annotations

from ._gguf import GGUFCodec

__all__ = ["IQ2XXS", "IQ2XS", "IQ2S"]


class IQ2XXS(GGUFCodec, codec_id="iq2_xxs"):
    """GGUF IQ2_XXS (ggml type 16), 2.0625 bits per element. 256 elements: fp16 d; per 32, four
    8-bit indices into the 256-row grid, four 7-bit sign patterns (the eighth sign is their parity)
    and a 4-bit scale, x = d * (0.5 + s) / 4 * grid * sign. Needs ``importance=``.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq2_xxs", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 132), 2.0625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.6 * np.abs(w).max())
    True
    """

    family = "gguf_iq"
    gpu_encode = True  # lowbit.kernels.gpu._iq2_enc
    ggml_type = 16
    uses_importance = True
    requires_importance = True
    max_abs = 65504.0
    bound_rel = 6.4  # see the module docstring


class IQ2XS(GGUFCodec, codec_id="iq2_xs"):
    """GGUF IQ2_XS (ggml type 17), 2.3125 bits per element. 256 elements: fp16 d; per 8 a u16 of a
    9-bit index into the 512-row grid and a 7-bit sign pattern (parity as IQ2_XXS); a 4-bit scale
    per 16, x = d * (0.5 + s) / 4 * grid * sign. Needs ``importance=``.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq2_xs", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 148), 2.3125)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.6 * np.abs(w).max())
    True
    """

    family = "gguf_iq"
    gpu_encode = True  # lowbit.kernels.gpu._iq2_enc
    ggml_type = 17
    uses_importance = True
    requires_importance = True
    max_abs = 65504.0
    bound_rel = 6.4  # see the module docstring


class IQ2S(GGUFCodec, codec_id="iq2_s"):
    """GGUF IQ2_S (ggml type 22), 2.5625 bits per element. 256 elements: fp16 d; per 8 a 10-bit
    index into the 1024-row grid (low byte in ``qs``, two bits in ``qh``) and a full sign byte; a
    4-bit scale per 16, x = d * (0.5 + s) / 4 * grid * sign. ``importance=`` is optional (without
    it ggml weights by x² and the block's variance).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq2_s")
    >>> q.data.shape, q.bits_per_element
    ((4, 164), 2.5625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.6 * np.abs(w).max())
    True
    """

    family = "gguf_iq"
    gpu_encode = True  # lowbit.kernels.gpu._iq2_enc
    ggml_type = 22
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 6.4  # see the module docstring
