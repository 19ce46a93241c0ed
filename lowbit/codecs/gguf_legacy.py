"""GGUF's 32-element, ternary and non-linear types: one codec class per ggml type.

Layouts are ggml's block structs (``lowbit/spec/<id>.toml`` spells each out), the bytes are what
``ggml_quantize_chunk`` writes and decoding is ``dequantize_row_*``; see :mod:`lowbit.codecs._gguf`
for the shared contract and :mod:`lowbit.kernels.cpu.gguf_legacy` for the algorithms.
"""

from __future__ import annotations

from ._gguf import GGUFCodec

__all__ = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "MXFP4GGML", "TQ1_0", "TQ2_0", "IQ4NL", "IQ4XS",
           "Q1_0", "Q2_0", "NVFP4GGML"]


class Q4_0(GGUFCodec, codec_id="q4_0"):
    """GGUF Q4_0 (ggml type 2), 4.5 bits per element. 32 elements: fp16 scale d and 4-bit codes q, x =
    (q - 8) * d; element j in the low nibble of byte j, j + 16 in the high nibble. With
    ``importance=`` ggml's imatrix search picks d (``quantize_row_q4_0_impl``).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q4_0", importance=np.ones(64, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 36), 4.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.15 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 2
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.15


class Q4_1(GGUFCodec, codec_id="q4_1"):
    """GGUF Q4_1 (ggml type 3), 5 bits per element. 32 elements: fp16 scale d and minimum m, 4-bit
    codes, x = q * d + m (nibbles as Q4_0). With ``importance=``: ggml's weighted scale/min
    search.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q4_1", importance=np.ones(64, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 40), 5.0)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.1 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 3
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.1


class Q5_0(GGUFCodec, codec_id="q5_0"):
    """GGUF Q5_0 (ggml type 6), 5.5 bits per element. 32 elements: fp16 d, the fifth code bits in a
    little-endian u32 ``qh``, low nibbles as Q4_0; x = (q - 16) * d.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q5_0", importance=np.ones(64, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 44), 5.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.08 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 6
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.08


class Q5_1(GGUFCodec, codec_id="q5_1"):
    """GGUF Q5_1 (ggml type 7), 6 bits per element. 32 elements: fp16 d and m, 5-bit codes (``qh`` as
    Q5_0), x = q * d + m.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q5_1", importance=np.ones(64, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 48), 6.0)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.05 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 7
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.05


class Q8_0(GGUFCodec, codec_id="q8_0"):
    """GGUF Q8_0 (ggml type 8), 8.5 bits per element. 32 elements: fp16 d = max|x|/127 and int8 codes,
    x = q * d (``importance=`` is ignored, as in ggml).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q8_0")
    >>> q.data.shape, q.bits_per_element
    ((4, 68), 8.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.01 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 8
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 0.01


class Q8_1(GGUFCodec, codec_id="q8_1"):
    """GGUF Q8_1 (ggml type 9), 9 bits per element. Q8_0 plus s = fp16(d * sum(q)): ggml's activation
    operand for dot products (not a file type).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "q8_1")
    >>> q.data.shape, q.bits_per_element
    ((4, 72), 9.0)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.01 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 9
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 0.01


class MXFP4GGML(GGUFCodec, codec_id="mxfp4_ggml"):
    """GGUF MXFP4 (ggml type 39), 4.25 bits per element. ggml's MXFP4 (type 39): one E8M0 exponent byte
    and 32 E2M1 codes, element j in the low nibble of byte j and j + 16 in the high one (not
    OCP's pairwise order); the exponent is floor(log2 amax) - 2 as ggml computes it.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "mxfp4_ggml")
    >>> q.data.shape, q.bits_per_element
    ((4, 34), 4.25)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.5 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 39
    uses_importance = False
    max_abs = 3e+38
    bound_rel = 0.5


class TQ1_0(GGUFCodec, codec_id="tq1_0"):
    """GGUF TQ1_0 (ggml type 34), 1.6875 bits per element. Ternary 256 elements: d = max|x| (fp16),
    trits round(x/d) + 1 packed five per byte as a base-3 fraction (3**5 = 243 < 256) and four
    per byte in ``qh``.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "tq1_0")
    >>> q.data.shape, q.bits_per_element
    ((4, 108), 1.6875)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.55 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 34
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 0.55


class TQ2_0(GGUFCodec, codec_id="tq2_0"):
    """GGUF TQ2_0 (ggml type 35), 2.0625 bits per element. Ternary 256 elements: d = max|x| (fp16),
    2-bit codes round(x/d) + 1, element 128h + 32n + m in bits 2n of byte 32h + m.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "tq2_0")
    >>> q.data.shape, q.bits_per_element
    ((4, 132), 2.0625)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.55 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 35
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 0.55


class IQ4NL(GGUFCodec, codec_id="iq4_nl"):
    """GGUF IQ4_NL (ggml type 20), 4.5 bits per element. 32 elements: fp16 d and 4-bit indices into
    ggml's non-linear table (-127 ... 113), x = d * kvalues[q]; the chunk path of ggml (a
    15-step scale search), weighted by ``importance=``.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq4_nl", importance=np.ones(64, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 36), 4.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.2 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 20
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.2


class IQ4XS(GGUFCodec, codec_id="iq4_xs"):
    """GGUF IQ4_XS (ggml type 23), 4.25 bits per element. 256 elements: fp16 d, eight 6-bit sub-scales
    (``scales_l`` nibbles + 2 bits each in ``scales_h``) and IQ4_NL codes, x = d * (ls - 32) *
    kvalues[q].

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    >>> q = lowbit.encode(w, "iq4_xs", importance=np.ones(512, np.float32))
    >>> q.data.shape, q.bits_per_element
    ((4, 272), 4.25)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.2 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 23
    uses_importance = True
    max_abs = 65504.0
    bound_rel = 0.2


class Q1_0(GGUFCodec, codec_id="q1_0"):
    """GGUF Q1_0 (ggml type 41), 1.125 bits per element. 128 elements: fp16 d = mean |x| and one sign
    bit per element (set for x >= 0), x = ±d.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    >>> q = lowbit.encode(w, "q1_0")
    >>> q.data.shape, q.bits_per_element
    ((4, 36), 1.125)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 2.0 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 41
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 2.0


class Q2_0(GGUFCodec, codec_id="q2_0"):
    """GGUF Q2_0 (ggml type 42), 2.25 bits per element. 64 elements: fp16 d = max|x| and 2-bit codes
    clamp(round(x/d) + 1, 0, 3), x = (q - 1) * d.

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
    >>> q = lowbit.encode(w, "q2_0")
    >>> q.data.shape, q.bits_per_element
    ((4, 36), 2.25)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 0.55 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 42
    uses_importance = False
    max_abs = 65504.0
    bound_rel = 0.55


class NVFP4GGML(GGUFCodec, codec_id="nvfp4_ggml"):
    """GGUF NVFP4 (ggml type 40), 4.5 bits per element. ggml's NVFP4 (type 40): four UE4M3 sub-block
    scales (one per 16 elements, amax/6) and E2M1 codes; within each 16, element j low nibble, j
    + 8 high nibble. No global scale (ggml keeps it outside the block).

    >>> import numpy as np, lowbit
    >>> w = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
    >>> q = lowbit.encode(w, "nvfp4_ggml")
    >>> q.data.shape, q.bits_per_element
    ((4, 72), 4.5)
    >>> bool(np.abs(lowbit.decode(q) - w).max() <= 1.0 * np.abs(w).max())
    True
    """

    family = "gguf_legacy"
    ggml_type = 40
    uses_importance = False
    max_abs = 2688.0
    bound_rel = 1.0
