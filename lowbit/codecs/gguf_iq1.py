"""GGUF's 1.5- and 1.75-bit grid i-quants, IQ1_S and IQ1_M: one codec class per ggml type.

Eight weights at a time are one row of ggml's 2048-entry ternary grid (entries -1, 0, 1) plus a
shared shift of ±0.125, times a 3-bit block scale and the super-block's fp16 scale. The bytes are
what ``ggml_quantize_chunk`` writes (``quantize_iq1_s`` / ``quantize_iq1_m``: an exhaustive split
search per block and a nearest-neighbour search on the grid, see
:mod:`lowbit.kernels.cpu._iq1_enc`); decoding is ``dequantize_row_iq1_*``
(:mod:`lowbit.kernels.cpu.gguf_iq`). :mod:`lowbit.codecs._gguf` has the shared contract.
"""

from __future__ import annotations

from ._gguf import GGUFCodec

__all__ = ["IQ1S", "IQ1M"]


class IQ1S(GGUFCodec, codec_id="iq1_s"):
    """GGUF IQ1_S (ggml type 19), 1.5625 bits per element. 256 elements: fp16 d; per 32-element
    sub-block b a ``qh[b]`` u16 holding the high 3 bits of its four grid rows, a 3-bit scale l
    (bits 12-14) and the sign of the shift (bit 15); the rows' low bytes in ``qs``. x = d * (2l+1)
    * (grid[row][j] ± 0.125). ggml quantizes IQ1_S only with an imatrix: ``importance=`` is
    required (``ConfigError`` without it).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq1_s", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 100), 1.5625)
    >>> y = lowbit.decode(q)
    >>> bool(np.abs(y - w).max() <= 1.0 * np.abs(w).max())
    True
    >>> round(float(np.sqrt(((y - w) ** 2).mean() / (w ** 2).mean())), 2)  # relative RMS error
    0.49
    """

    family = "gguf_iq"
    gpu_encode = True  # Triton twin: lowbit.kernels.gpu._iq1_enc
    ggml_type = 19
    uses_importance = True
    requires_importance = True
    max_abs = 65504.0
    # proven for importance >= 0: a block scale sumqx/sumq2 is at most max|x| / min|q| = 8 max|x|
    # (|q| >= 0.125), and |decode| <= 1.125 (ggml's fudge on d) * fp16 rounding * 1.125 (|grid±delta|)
    # * max_scale <= 10.13 max|x|. ggml gets close: a constant block under a random imatrix decodes
    # to 10.1x its value (error 9.13x); typical data stays within 1x
    bound_rel = 11.2


class IQ1M(GGUFCodec, codec_id="iq1_m"):
    """GGUF IQ1_M (ggml type 29), 1.75 bits per element. 256 elements in 16 sub-blocks of 16: grid
    rows as IQ1_S (low bytes in ``qs``, high 3 bits and each group's shift sign in ``qh``), a 3-bit
    scale l per sub-block (four per u16 of ``scales``) and the fp16 super-block scale d spread over
    the top nibbles of those four u16. x = d * (2l+1) * (grid[row][j] ± 0.125). ``importance=`` is
    optional (without it ggml weights each value by x²).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq1_m")
    >>> q.data.shape, q.bits_per_element
    ((4, 112), 1.75)
    >>> y = lowbit.decode(q)
    >>> bool(np.abs(y - w).max() <= 1.0 * np.abs(w).max())
    True
    >>> round(float(np.sqrt(((y - w) ** 2).mean() / (w ** 2).mean())), 2)  # relative RMS error
    0.59
    """

    family = "gguf_iq"
    gpu_encode = True  # Triton twin: lowbit.kernels.gpu._iq1_enc
    ggml_type = 29
    uses_importance = True
    max_abs = 65504.0
    # proven for importance >= 0: ggml refits d = sumqx/sumq2 over the 256 values with q = (2l+1) *
    # (±0.125 | ±0.875 | ±1.125), so |d| <= 8 max|x| and |decode| <= 1.1125 * fp16 rounding * 8 *
    # 15 * 1.125 max|x| = 150.3 max|x|. Observed: up to 17.5x on the harness's wide-range tensors,
    # about 10x for a lone outlier among small values; typical data stays within 1x
    bound_rel = 152.0
