"""GGUF k-quants: 256-element super-blocks with quantized sub-block scales, one class per type.

Without ``importance=`` the bytes are ggml's ``quantize_row_*_ref`` (what llama-quantize writes
without an imatrix); with it, ggml's ``quantize_row_*_impl`` (the imatrix algorithm, a different
search). Both are reproduced bit for bit: see :mod:`lowbit.kernels.cpu.gguf_kquants`.
"""

from __future__ import annotations

from ._gguf import GGUFCodec

__all__ = ["Q2K", "Q3K", "Q4K", "Q5K", "Q6K", "Q8K"]


class Q2K(GGUFCodec, codec_id="q2_k"):
    """GGUF Q2_K (ggml type 10), 2.625 bits per element. 256 elements in 16 sub-blocks of 16: 2-bit
    codes, 4-bit scale and min per sub-block, fp16 d and dmin; x = d*sc*q - dmin*m.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q2_k", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 168), 2.625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.6 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 10
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.6


class Q3K(GGUFCodec, codec_id="q3_k"):
    """GGUF Q3_K (ggml type 11), 3.4375 bits per element. 256 elements in 16 sub-blocks of 16: 3-bit
    codes (2 low bits in ``qs``, the high bit in ``hmask``, set means +0 and clear means -4),
    signed 6-bit scales, fp16 d.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q3_k", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 220), 3.4375)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.6 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 11
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.6


class Q4K(GGUFCodec, codec_id="q4_k"):
    """GGUF Q4_K (ggml type 12), 4.5 bits per element. 256 elements in 8 sub-blocks of 32: 4-bit codes,
    6-bit scale and min per sub-block (12 packed bytes), fp16 d and dmin; x = d*sc*q - dmin*m.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q4_k", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 288), 4.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.3 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 12
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.3


class Q5K(GGUFCodec, codec_id="q5_k"):
    """GGUF Q5_K (ggml type 13), 5.5 bits per element. 256 elements in 8 sub-blocks of 32: 5-bit codes
    (fifth bits in ``qh``), 6-bit scales and mins, fp16 d and dmin.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q5_k", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 352), 5.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.2 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 13
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.2


class Q6K(GGUFCodec, codec_id="q6_k"):
    """GGUF Q6_K (ggml type 14), 6.5625 bits per element. 256 elements in 16 sub-blocks of 16: 6-bit
    codes (4 bits in ``ql``, 2 in ``qh``), int8 scales, fp16 d; x = d*sc*(q - 32).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q6_k", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 420), 6.5625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.1 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 14
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.1


class Q8K(GGUFCodec, codec_id="q8_k"):
    """GGUF Q8_K (ggml type 15), 9.125 bits per element. 256 elements: float32 d, int8 codes and 16
    int16 sums of 16 codes: ggml's dot-product operand (not a file type). All-zero blocks get
    zero sums (ggml leaves them unwritten).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "q8_k")
    >>> q.data.shape, q.bits_per_element
    ((4, 584), 9.125)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.01 * np.abs(w).max())
    True
    """

    family = "gguf_kquants"
    ggml_type = 15
    uses_importance = False
    max_abs = 3e+38
    bound_rel = 0.01
