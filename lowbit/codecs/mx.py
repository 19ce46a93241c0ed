"""OCP Microscaling (MX v1.0) block formats: MXFP8 (E4M3, E5M2), MXFP6 (E3M2, E2M3), MXFP4
(E2M1) and MXINT8.

A block is 32 consecutive elements along the last axis, stored as one E8M0 scale byte
(``2**(byte - 127)``, 0xFF = NaN) followed by the 32 element codes packed LSB-first: one byte
each for FP8 and INT8, four codes in three bytes for FP6, two per byte for FP4 with the even
element in the low nibble (spec/mx*.toml). Decoded value = element value × 2**(byte - 127).

Encoding a block with amax = max |x| (OCP v1.0 §6.3 and the variants real producers use):

* ``scale_rounding="floor"`` (OCP, llama.cpp, torchao default): ``s = floor(log2 amax) - emax``,
  emax = floor(log2 max_elem);
* ``"rceil"`` (NVIDIA cuBLAS/TransformerEngine, triton_kernels, ModelOpt MXFP4):
  ``s = ceil(log2(amax / max_elem))`` with the quotient rounded to fp32 first;
* ``"even"`` (compressed-tensors MXFP4/6, AMD Quark): FLOOR of amax rounded half-up at the
  element's mantissa width — the block max is never clipped by more than rounding;
* ``"ceil"`` (torchao CEIL): ``s = ceil(log2 amax) - emax``;

then ``s`` is clamped to [-127, 127] and each element is ``x / 2**s`` rounded to nearest-even
with saturation to ±max (E5M2 saturates too, as MX requires). All-zero blocks get s = -127
(byte 0) and zero codes. A block holding NaN or ±Inf is written as scale 0xFF with zero codes
and decodes to all-NaN (``nonfinite="nan"``, as torchao HEAD and OCP's NaN scale do), or is
refused (``nonfinite="raise"``).

MXINT8 elements are ``k / 64`` for k in [-127, 127] (emax 0, max 127/64), as in the OCP reference
emulator; the code 0x80 (-2) decodes but is never written.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError
from ..kernels.formats import MX_BLOCK as BLOCK, MX_SCALE_RULES as SCALE_RULES, MXKernelFormat
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from ..numerics import ElementEncoding, FloatFormat, IntFormat

__all__ = ["MXCodec", "MXFP8E4M3", "MXFP8E5M2", "MXFP6E3M2", "MXFP6E2M3", "MXFP4", "MXINT8",
           "to_ggml_mxfp4", "from_ggml_mxfp4", "mxfp4_to_nvfp4", "nvfp4_to_mxfp4"]

NONFINITE_POLICIES = ("nan", "raise")


class MXCodec(Codec):
    """Shared machinery of the MX codecs (not a codec by itself); see the module docstring."""

    family = "mx"
    element: ClassVar[FloatFormat | IntFormat]
    shift: ClassVar[int] = 0        # element value = code value * 2**-shift (MXINT8: 6)
    elem_mbits: ClassVar[int]       # mantissa bits below the leading one at the top binade
    emax: ClassVar[int]

    def __init__(self, *, scale_rounding: str = "floor", nonfinite: str = "nan") -> None:
        if scale_rounding not in SCALE_RULES:
            raise ConfigError(f"{self.codec_id}: scale_rounding: expected one of {SCALE_RULES}, got {scale_rounding!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"{self.codec_id}: nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self.scale_rounding = scale_rounding
        self.nonfinite = nonfinite

    # ---- formats ---------------------------------------------------------------------------
    @property
    def format(self) -> FloatFormat | IntFormat:
        """The element format (for MXINT8: int8 codes k, valued k / 64)."""
        return self.element

    @property
    def element_max(self) -> float:
        """The largest element value (448, 57344, 28, 7.5, 6, 127/64)."""
        return float(self.element.max) * 2.0 ** -self.shift

    @classmethod
    def _encoding(cls) -> ElementEncoding:
        on_nan = "nan" if cls.element.has_nan else "raise"  # never used: NaN blocks are handled first
        return ElementEncoding(cls.element, overflow="saturate", on_nan=on_nan)

    @property
    def kernel_format(self) -> MXKernelFormat:
        enc = self._encoding()
        lut = (enc.lut.astype(np.float64) * 2.0 ** -self.shift).astype(np.float32)
        return MXKernelFormat(
            enc=enc, rule=SCALE_RULES.index(self.scale_rounding), emax=self.emax,
            round_add=1 << (22 - self.elem_mbits), vmax=float(np.float32(self.element_max)), shift=self.shift,
            lut=lut, type_size=self.type_size)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec(self.codec_id)

    def idempotence(self) -> str:
        # FLOOR and EVEN pick the same scale for the decoded block; CEIL and RCEIL may pick one
        # binade lower for it (e.g. E2M1 amax 3 * 2**s), re-encoding the same values
        return "bytes" if self.scale_rounding in ("floor", "even") else "values"

    # ---- the codec hooks -------------------------------------------------------------------
    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
        rows, K = x2d.shape
        nbytes = self.row_bytes(K)
        if _arrays.is_torch(x2d):
            import torch

            out = torch.empty((rows, nbytes), dtype=torch.uint8, device=x2d.device)
            flags = torch.zeros(1, dtype=torch.int32, device=x2d.device)
        else:
            out = np.empty((rows, nbytes), dtype=np.uint8)
            flags = np.zeros(1, dtype=np.int64)
        if rows and K:
            get_kernel(self.family, backend, "encode")(x2d, self.kernel_format, out, flags)
            if self.nonfinite == "raise" and int(flags[0]):
                self._raise_nonfinite(x2d, shape)
        return out, {}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        rows, K = data2d.shape[0], shape[-1]
        if _arrays.is_torch(data2d):
            import torch

            out = torch.empty((rows, K), dtype=torch.float32, device=data2d.device)
        else:
            out = np.empty((rows, K), dtype=np.float32)
        if rows and K:
            get_kernel(self.family, backend, "decode")(data2d, self.kernel_format, out)
        return out

    def _raise_nonfinite(self, x2d: Any, shape: tuple[int, ...]) -> None:
        x = _arrays.to_numpy(x2d)
        flat = int(np.flatnonzero(~np.isfinite(x))[0])
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        what = "NaN" if np.isnan(x.reshape(-1)[flat]) else "Inf"
        raise RangeError(f"{self.codec_id}: input has {what} at index {idx}: expected finite values "
                         f"(nonfinite='raise'; 'nan' writes the block as NaN); nothing was encoded")

    # ---- columnwise (training) layout ------------------------------------------------------
    def encode_columnwise(self, x: Any, *, backend: str = "auto") -> Any:
        """Blocks of 32 along the second-to-last axis: the row-wise encoding of ``x``
        transposed (``(..., M, K)`` → a QTensor of shape ``(..., K, M)``), which is exactly the
        data + scale layout torchao's ``dim1`` MX casts produce for training."""
        t = x.transpose(-1, -2) if _arrays.is_torch(x) else np.swapaxes(x, -1, -2)
        if getattr(t, "ndim", 0) < 2:
            raise ConfigError(f"{self.codec_id}: encode_columnwise: expected at least 2 dimensions, got {getattr(x, 'ndim', 0)}")
        return self.encode(t.contiguous() if _arrays.is_torch(t) else np.ascontiguousarray(t), backend=backend)

    def decode_columnwise(self, q: Any, *, backend: str = "auto", dtype: Any = None) -> Any:
        """The inverse of :meth:`encode_columnwise`: decodes and transposes back to ``(..., M, K)``."""
        y = self.decode(q, backend=backend, dtype=dtype)
        return y.transpose(-1, -2) if _arrays.is_torch(y) else np.swapaxes(y, -1, -2)

    # ---- contract details the harness checks -------------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{}, {"scale_rounding": "rceil"}, {"scale_rounding": "even"}, {"scale_rounding": "ceil", "nonfinite": "raise"}]

    def _grid(self) -> np.ndarray:
        """Sorted finite element values the encoder produces (float64, ±0 merged)."""
        v = self.element.values()
        v = v[np.isfinite(v)]
        if isinstance(self.element, IntFormat):
            v = v[v != -128]
        return np.unique(np.where(v == 0, 0.0, v)) * 2.0 ** -self.shift

    def block_scales(self, q: Any) -> np.ndarray:
        """The E8M0 scale bytes of every block, shape ``(..., K/32)`` (uint8)."""
        d = _arrays.to_numpy(q.data)
        return d.reshape(d.shape[:-1] + (-1, self.type_size))[..., 0]

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """Half the local spacing of the element grid (or the distance to ±max for saturated
        elements) times the block's scale; ``inf`` in blocks with NaN or Inf."""
        x = np.asarray(x, dtype=np.float32)
        G = self._grid()
        sb = self.block_scales(q).astype(np.int64)
        s = np.repeat(np.exp2(sb.astype(np.float64) - 127), BLOCK, axis=-1).reshape(x.shape)
        bad = np.repeat(sb == 255, BLOCK, axis=-1).reshape(x.shape)
        with np.errstate(all="ignore"):
            v = x.astype(np.float64) / s
            c = np.clip(v, G[0], G[-1])
            i = np.clip(np.searchsorted(G, c, side="right") - 1, 0, G.size - 1)
            hi = G[np.minimum(i + 1, G.size - 1)]
            half = np.where(c >= G[-1], 0.0, (hi - G[i]) / 2)
            bound = (np.abs(v - c) + half) * s
            # the nearest grid value may lie past float32's range (E2M1 4 * 2**126 under RCEIL):
            # it then decodes to ±Inf, as the peers' float32 dequantizers give
            over = np.abs(x.astype(np.float64)) + bound > float(np.finfo(np.float32).max)
        return np.where(bad | over | ~np.isfinite(bound), np.inf, bound)

    def input_policy(self) -> dict[str, str]:
        return {"nan": self.nonfinite, "inf": self.nonfinite, "overflow": "saturate", "negative": "encode",
                "negative_zero": "zero", "subnormal": "encode"}

    def interesting_values(self) -> np.ndarray:
        G = self._grid()
        mids = (G[1:] + G[:-1]) / 2
        cand = np.concatenate([G, mids, [G[-1] * 1.0625, G[-1] * 1.5, -G[-1] * 1.25]])
        cand = np.concatenate([cand, cand * 0.5, cand * 0.25]).astype(np.float32)
        cand = np.concatenate([cand, np.nextafter(cand, np.float32(np.inf)), np.nextafter(cand, np.float32(-np.inf))])
        cand = np.unique(cand[np.isfinite(cand)])
        if cand.size > 768:
            keep = np.linspace(0, cand.size - 1, 768).astype(int)
            cand = np.unique(np.concatenate([cand[keep], cand[:32], cand[-32:]]))
        return cand


class MXFP8E4M3(MXCodec, codec_id="mxfp8_e4m3"):
    """OCP MXFP8 with E4M3 elements (max 448): 32 elements = 1 E8M0 byte + 32 code bytes
    (8.25 bits per element). ``scale_rounding`` ∈ floor (OCP), rceil (NVIDIA), even, ceil.

    >>> import numpy as np, lowbit
    >>> x = np.linspace(-3, 3, 32, dtype=np.float32).reshape(1, 32)
    >>> q = lowbit.encode(x, "mxfp8_e4m3")
    >>> q.data.shape, int(q.data[0, 0])      # scale byte: floor(log2 3) - 8 + 127
    ((1, 33), 120)
    >>> float(np.abs(lowbit.decode(q) - x).max()) <= 3 / 16
    True
    """

    element = FloatFormat(4, 3, special="fn")
    elem_mbits = 3
    emax = 8  # floor(log2 max)


class MXFP8E5M2(MXCodec, codec_id="mxfp8_e5m2"):
    """OCP MXFP8 with E5M2 elements (max 57344, saturating: MX never writes Inf elements).

    >>> import numpy as np, lowbit
    >>> x = np.full((1, 32), 1000.0, np.float32)
    >>> q = lowbit.encode(x, "mxfp8_e5m2")             # FLOOR: 1000 * 2**6 saturates to 57344
    >>> int(q.data[0, 0]) - 127, float(lowbit.decode(q)[0, 0])
    (-6, 896.0)
    >>> float(lowbit.decode(lowbit.encode(x, "mxfp8_e5m2", scale_rounding="rceil"))[0, 0])
    1024.0
    """

    element = FloatFormat(5, 2, special="ieee")
    elem_mbits = 2
    emax = 15  # floor(log2 max)


class MXFP6E3M2(MXCodec, codec_id="mxfp6_e3m2"):
    """OCP MXFP6 with E3M2 elements (max 28): 1 E8M0 byte + 32 six-bit codes in 24 bytes
    (four codes in three bytes, LSB first — compressed-tensors' ``mxfp6-pack-quantized`` order).

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 32), np.float32); x[0, :4] = [28.0, -1.0, 0.3, 100.0]
    >>> lowbit.decode(lowbit.encode(x, "mxfp6_e3m2"))[0, :4].tolist()    # scale 2**(6-4)
    [28.0, -1.0, 0.25, 96.0]
    """

    element = FloatFormat(3, 2, special="finite")
    elem_mbits = 2
    emax = 4  # floor(log2 max)


class MXFP6E2M3(MXCodec, codec_id="mxfp6_e2m3"):
    """OCP MXFP6 with E2M3 elements (max 7.5), packed like :class:`MXFP6E3M2`.

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 32), np.float32); x[0, :3] = [7.5, 0.1, -2.25]
    >>> lowbit.decode(lowbit.encode(x, "mxfp6_e2m3"))[0, :3].tolist()
    [7.5, 0.125, -2.25]
    """

    element = FloatFormat(2, 3, special="finite")
    elem_mbits = 3
    emax = 2  # floor(log2 max)


class MXFP4(MXCodec, codec_id="mxfp4"):
    """OCP MXFP4 with E2M1 elements (0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives): 1 E8M0 byte +
    16 bytes, the even element in the low nibble (OCP / gpt-oss / torchao / compressed-tensors
    order; GGUF's MXFP4 splits the halves instead: :func:`to_ggml_mxfp4` / :func:`from_ggml_mxfp4`).

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 32), np.float32); x[0, :4] = [6.0, -0.5, 5.0, 7.0]
    >>> q = lowbit.encode(x, "mxfp4")
    >>> q.data[0, :3].tobytes().hex()       # scale 2**0; 0x97 = (-0.5 << 4) | 6; 5 ties to 4, 7 saturates
    '7f9776'
    >>> lowbit.decode(lowbit.encode(x, "mxfp4", scale_rounding="rceil"))[0, :4].tolist()
    [6.0, -0.0, 4.0, 8.0]
    """

    element = FloatFormat(2, 1, special="finite")
    elem_mbits = 1
    emax = 2  # floor(log2 max)


class MXINT8(MXCodec, codec_id="mxint8"):
    """OCP MXINT8: elements ``k / 64`` with k in [-127, 127] (two's complement bytes), max
    127/64, emax 0, so ``s = floor(log2 amax)`` under FLOOR. The code 0x80 (-2) decodes but is
    never written, as in the OCP reference emulator.

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 32), np.float32); x[0, :3] = [1.0, -0.3, 1.99]
    >>> q = lowbit.encode(x, "mxint8")
    >>> q.data[0, 1:4].view(np.int8).tolist(), lowbit.decode(q)[0, :3].tolist()
    ([64, -19, 127], [1.0, -0.296875, 1.984375])
    """

    element = IntFormat(8, symmetric=True)
    shift = 6
    elem_mbits = 6
    emax = 0



# ---- conversions that keep the codes ---------------------------------------------------------

def _nibbles(d: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale bytes (rows, nb), codes (rows, nb, 32)) of MXFP4 block bytes in OCP order."""
    blk = d.reshape(-1, nb, 17)
    b = blk[..., 1:]
    codes = np.stack([b & 0xF, b >> 4], axis=-1).reshape(blk.shape[0], nb, 32)  # byte i: 2i low, 2i+1 high
    return blk[..., 0], codes


def to_ggml_mxfp4(q: Any) -> np.ndarray:
    """The bytes of ggml's ``block_mxfp4`` (GGUF type 39) for an ``mxfp4`` QTensor: the same E8M0
    byte, and byte j of the 16 holds element j (low nibble) and element j + 16 (high nibble).
    ggml's ``kvalues_mxfp4`` are E2M1 doubled and its scale ``2**(e - 128)``, so the codes and the
    scale byte carry over unchanged and every value decodes the same.

    >>> import numpy as np, lowbit
    >>> from lowbit.codecs.mx import to_ggml_mxfp4, from_ggml_mxfp4
    >>> q = lowbit.encode(np.arange(32, dtype=np.float32).reshape(1, 32) / 8, "mxfp4")
    >>> g = to_ggml_mxfp4(q); g.shape, g[0, :3].tobytes().hex()     # elements 0 | 16, 1 | 17
    ((1, 17), '7e6060')
    >>> bool((lowbit.decode(from_ggml_mxfp4(g, (1, 32))) == lowbit.decode(q)).all())
    True
    """
    if q.codec.codec_id != "mxfp4":
        raise ConfigError(f"to_ggml_mxfp4: expected an mxfp4 QTensor, got {q.codec!r}")
    d = np.ascontiguousarray(_arrays.to_numpy(q.data))
    nb = q.shape[-1] // BLOCK
    scale, codes = _nibbles(d, nb)
    g = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)   # ggml: j low, j + 16 high
    out = np.concatenate([scale[..., None], g], axis=-1)
    return out.reshape(d.shape)


def from_ggml_mxfp4(raw: Any, shape: tuple[int, ...], *, scale_rounding: str = "floor") -> Any:
    """An ``mxfp4`` QTensor of logical ``shape`` from ggml ``block_mxfp4`` bytes (the inverse of
    :func:`to_ggml_mxfp4`; llama.cpp's encoder rounds the scale with FLOOR, the default here)."""
    from ..codec import QTensor

    codec = MXFP4(scale_rounding=scale_rounding)
    shape = tuple(int(s) for s in shape)
    codec._check_shape(shape)
    d = np.ascontiguousarray(_arrays.to_numpy(raw), dtype=np.uint8).reshape(-1)
    rows = int(np.prod(shape[:-1]))
    nb = shape[-1] // BLOCK
    if d.size != rows * nb * 17:
        raise ConfigError(f"from_ggml_mxfp4: expected {rows * nb * 17} bytes for shape {shape}, got {d.size}")
    blk = d.reshape(rows, nb, 17)
    g = blk[..., 1:]
    codes = np.concatenate([g & 0xF, g >> 4], axis=-1)               # elements 0..15, then 16..31
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    data = np.concatenate([blk[..., :1], packed], axis=-1).reshape(shape[:-1] + (nb * 17,))
    return QTensor(data, {}, shape, codec)


def _e4m3_pow2_byte(p: np.ndarray) -> np.ndarray:
    """The E4M3 byte of 2**p for p in [-9, 8]: normal (p + 7) << 3, subnormal 1 << (p + 9)."""
    return np.where(p >= -6, (p + 7) << 3, 1 << np.clip(p + 9, 0, 2)).astype(np.uint8)


def mxfp4_to_nvfp4(q: Any) -> Any:
    """Re-express an ``mxfp4`` QTensor as ``nvfp4`` (recipe torchao: ``global_scale`` a
    multiplier) with the same E2M1 codes and bit-identical decoded values: each block of 32
    becomes two blocks of 16 whose UE4M3 scale times the global power of two equals the MX scale.
    Exact only when the tensor's (non-zero) block scales span at most 18 binades (E4M3 holds
    2**-9 … 2**8) and no block is NaN; otherwise raises :class:`~lowbit.errors.RangeError`.

    >>> import numpy as np, lowbit
    >>> from lowbit.codecs.mx import mxfp4_to_nvfp4
    >>> x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> q = lowbit.encode(x, "mxfp4"); n = mxfp4_to_nvfp4(q)
    >>> n.codec.codec_id, bool((lowbit.decode(n) == lowbit.decode(q)).all())
    ('nvfp4', True)
    """
    from ..codec import QTensor
    from .nvfp4 import NVFP4

    if q.codec.codec_id != "mxfp4":
        raise ConfigError(f"mxfp4_to_nvfp4: expected an mxfp4 QTensor, got {q.codec!r}")
    d = np.ascontiguousarray(_arrays.to_numpy(q.data))
    nb = q.shape[-1] // BLOCK
    blk = d.reshape(-1, nb, 17)
    e = blk[..., 0].astype(np.int64)
    if (e == 0xFF).any():
        raise RangeError("mxfp4_to_nvfp4: a block has the NaN scale 0xFF; NVFP4 cannot hold a NaN block exactly")
    used = (blk[..., 1:] & 0x77).any(-1)                     # blocks with a non-zero magnitude
    k = e - 127
    kmax = int(k[used].max()) if used.any() else 0
    kmin = int(k[used].min()) if used.any() else 0
    if kmax - kmin > 17:
        raise RangeError(f"mxfp4_to_nvfp4: block scales span 2**{kmin} … 2**{kmax}; UE4M3 times one global "
                         "power of two covers 18 binades, so this tensor has no exact NVFP4 form")
    j = max(kmax - 8, -126)                                 # global scale 2**j (a normal float32)
    p = np.where(used, k - j, -9)
    if (p[used] < -9).any() or (p > 8).any():
        raise RangeError(f"mxfp4_to_nvfp4: block scales span 2**{kmin} … 2**{kmax}: no exact NVFP4 form")
    sb = _e4m3_pow2_byte(p)
    halves = blk[..., 1:].reshape(blk.shape[0], nb, 2, 8)
    out = np.concatenate([np.repeat(sb[..., None, None], 2, axis=2), halves], axis=-1)
    data = out.reshape(q.shape[:-1] + (nb * 18,))
    return QTensor(data, {"global_scale": np.array(np.float32(2.0**j))}, q.shape, NVFP4())


def nvfp4_to_mxfp4(q: Any) -> Any:
    """The inverse of :func:`mxfp4_to_nvfp4`, for an ``nvfp4`` QTensor whose two blocks of each
    32 decode with the same power-of-two scale (blocks whose codes are all ±0 take any scale);
    raises :class:`~lowbit.errors.RangeError` naming the first block where that fails."""
    from ..codec import QTensor

    if q.codec.codec_id != "nvfp4" or q.codec.scale_format != "ue4m3":
        raise ConfigError(f"nvfp4_to_mxfp4: expected an nvfp4 (ue4m3) QTensor, got {q.codec!r}")
    d = np.ascontiguousarray(_arrays.to_numpy(q.data))
    nb = q.shape[-1] // BLOCK
    blk = d.reshape(-1, nb, 2, 9)
    m = q.codec.effective_scales(q).reshape(-1, nb, 2).astype(np.float32)   # float32 g*s or s/g
    used = (blk[..., 1:] & 0x77).any(-1)
    mant, ex = np.frexp(m.astype(np.float64))
    pow2 = (mant == 0.5) & np.isfinite(m)
    k = (ex - 1).astype(np.int64)
    kk = np.where(used, k, np.where(used[..., ::-1], k[..., ::-1], -127))  # a zero half takes its twin's
    ok = (~used | pow2) & (kk[..., 0] == kk[..., 1])[..., None] & (kk >= -127) & (kk <= 127)
    if not ok.all():
        r, b, h = (int(i) for i in np.argwhere(~ok)[0])
        raise RangeError(f"nvfp4_to_mxfp4: block {2 * b + h} of row {r} decodes with scale {m[r, b, h]!r}, "
                         "not the power of two its MX block shares: no exact MXFP4 form")
    e = (kk[..., 0] + 127).astype(np.uint8)
    data = np.concatenate([e[..., None], blk[..., 0, 1:], blk[..., 1, 1:]], axis=-1).reshape(q.shape[:-1] + (nb * 17,))
    return QTensor(data, {}, q.shape, MXFP4())
