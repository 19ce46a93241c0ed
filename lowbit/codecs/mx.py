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
from ..kernels.cpu.mx import BLOCK, SCALE_RULES, MXKernelFormat
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from ..numerics import ElementEncoding, FloatFormat, IntFormat

__all__ = ["MXCodec", "MXFP8E4M3", "MXFP8E5M2", "MXFP6E3M2", "MXFP6E2M3", "MXFP4", "MXINT8"]

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
        raise RangeError(f"{self.codec_id}: input value {x.reshape(-1)[flat]!r} at index {idx}: expected finite "
                         f"values (nonfinite='raise'; 'nan' writes the block as NaN); nothing was encoded")

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
        return {"nan": self.nonfinite, "inf": self.nonfinite, "overflow": "saturate", "negative": "encode"}

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
    order; GGUF's MXFP4 splits the halves instead, see ``lowbit.formats.blockscaled``).

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

