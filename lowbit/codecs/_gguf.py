"""What every GGUF codec shares: ggml's block bytes, the ``importance=`` keyword (ggml's
``quant_weights``, the imatrix), the input policy, and the round-trip bound the tests check.

A GGUF codec's ``q.data`` is byte for byte what ``ggml_quantize_chunk`` writes for the same float32
rows (with the same imatrix), and ``decode`` is ggml's ``dequantize_row_*``; the tests run ggml's
own C library (:mod:`lowbit.tools.ggml_oracle`) against both backends.

Input policy: NaN and ±Inf raise, and so do values beyond ``max_abs`` (65504 for types with an
fp16 scale: past it the stored scale overflows and ggml writes a block that decodes to Inf/NaN).
Within that range every float32 is encoded exactly as ggml does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, DTypeError, RangeError, ShapeError
from ..kernels.registry import get_kernel

__all__ = ["GGUFCodec"]


class GGUFCodec(Codec):
    """Base of the GGUF codecs (not a codec by itself)."""

    ggml_type: ClassVar[int]
    #: whether ``importance=`` changes the bytes (False: accepted and ignored, as ggml does)
    uses_importance: ClassVar[bool] = False
    #: whether ggml refuses to quantize without ``importance=`` (``ggml_quantize_requires_imatrix``)
    requires_importance: ClassVar[bool] = False
    #: whether the GPU backend encodes this type (False while its family's Triton encoder covers
    #: only some of the family's types: the grid i-quants are ported one grid family at a time)
    gpu_encode: ClassVar[bool] = True
    #: the largest |x| accepted (the block scale's range)
    max_abs: ClassVar[float] = 65504.0
    #: round-trip bound: |decode - x| <= rel * (max |x| of the block) + abs_ (checked by the harness)
    bound_rel: ClassVar[float] = 1.0
    bound_abs: ClassVar[float] = 2.0 ** -12
    encode_kwargs = ("importance",)
    # ggml's quantizers search scales; re-quantizing a decoded block may pick other ones
    idempotent = False

    def __init__(self) -> None:
        pass

    def backends(self) -> list[str]:
        return [b for b in super().backends() if b == "cpu" or self.gpu_encode]

    # ---- the codec hooks ----------------------------------------------------------------------
    def _importance(self, importance: Any, K: int, backend: str) -> Any:
        if importance is None:
            return None
        if _arrays.is_torch(importance):
            imp = _arrays.to_numpy(importance.detach().float() if str(importance.dtype) != "torch.float32" else importance)
        elif isinstance(importance, np.ndarray):
            imp = importance
        else:
            raise DTypeError(f"{self.codec_id}: importance: expected a numpy array or torch tensor of {K} floats, "
                             f"got {type(importance).__name__}")
        if imp.dtype.kind != "f":
            raise DTypeError(f"{self.codec_id}: importance: expected floats (ggml's float32 quant_weights), got {imp.dtype}")
        if imp.shape != (K,):
            raise ShapeError(f"{self.codec_id}: importance: expected shape ({K},), one weight per column, got {imp.shape}")
        imp = np.ascontiguousarray(imp, dtype=np.float32)
        if not np.isfinite(imp).all():
            i = int(np.flatnonzero(~np.isfinite(imp))[0])
            raise RangeError(f"{self.codec_id}: importance: expected finite weights, got {imp[i]!r} at index {i}")
        return _arrays.native(imp, backend)

    def _check_range(self, x2d: Any, shape: tuple[int, ...]) -> None:
        """NaN, ±Inf and |x| > max_abs raise RangeError naming the first such element."""
        if _arrays.is_torch(x2d):
            torch = __import__("torch")
            bad_t = ~torch.isfinite(x2d) | (x2d.abs() > self.max_abs)
            if not bool(bad_t.any()):
                return
            x = _arrays.to_numpy(x2d)
        else:
            x = x2d
            lim = np.float32(self.max_abs)  # numpy compares float32 x with the float as float32
            if x.dtype == np.float32 and x.flags.c_contiguous and np.isfinite(lim):
                from ..kernels.cpu._ggml import all_within

                if all_within(x, lim):  # one fused pass; the numpy path below finds the culprit
                    return
            # otherwise two reductions and no temporary the size of x: min/max propagate NaN, and a
            # NaN fails both comparisons; only a tensor that fails is searched for its first bad element
            elif x.size == 0 or (-self.max_abs <= x.min() and x.max() <= self.max_abs):
                return
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(x) | (np.abs(x) > self.max_abs)
        flat = int(np.flatnonzero(bad)[0])
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        v = x.reshape(-1)[flat]
        if np.isnan(v):
            raise RangeError(f"{self.codec_id}: input has NaN at index {idx}; GGUF blocks cannot hold NaN, nothing was encoded")
        raise RangeError(f"{self.codec_id}: input value {v!r} at index {idx} is outside the encodable range "
                         f"[-{self.max_abs}, {self.max_abs}] (the block scale would overflow); nothing was encoded")

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, importance: Any = None) -> tuple[Any, dict[str, Any]]:
        K = shape[-1]
        qw = self._importance(importance, K, backend)
        if qw is None and self.requires_importance:
            raise ConfigError(f"{self.codec_id}: needs importance= (an imatrix: one float32 weight per column, e.g. "
                              f"from llama-imatrix or lowbit.tools.imatrix); ggml refuses this type without one")
        self._check_range(x2d, shape)
        rows = x2d.shape[0]
        out = _empty_u8((rows, self.row_bytes(K)), x2d)
        if rows and K:
            get_kernel(self.family, backend, "encode")(self.codec_id, x2d, qw, out)
        return out, {}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        K = shape[-1]
        rows = data2d.shape[0]
        if _arrays.is_torch(data2d):
            torch = __import__("torch")
            out = torch.empty((rows, K), dtype=torch.float32, device=data2d.device)
        else:
            out = np.empty((rows, K), dtype=np.float32)
        if rows and K:
            get_kernel(self.family, backend, "decode")(self.codec_id, data2d, out)
        return out

    # ---- contract details the harness checks ----------------------------------------------------
    def input_policy(self) -> dict[str, str]:
        # -0.0 is rounded like any value (a zero whose sign follows the block scale, or the
        # nearest non-zero level of the IQ4 grids, which have no zero)
        # beyond max_abs the block scale would overflow: RangeError (for Q8_K and MXFP4 max_abs is
        # 3e38, so FLT_MAX is refused too; what lies within is encoded like any value)
        return {"nan": "raise", "inf": "raise", "overflow": "raise", "negative": "encode",
                "negative_zero": "encode", "subnormal": "encode"}

    def interesting_values(self) -> np.ndarray:
        # the ends stay inside the accepted range after a float16/bfloat16 round trip
        m = np.float32(2.0 ** min(15, int(np.floor(np.log2(self.max_abs)))))
        return np.array([-m, -1.0, -0.5, -2.0 ** -20, 0.0, 2.0 ** -20, 0.25, 0.5, 1.0, 1.5, 3.0, m], dtype=np.float32)

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """``bound_rel`` times the largest |x| of the element's block, plus ``bound_abs`` (the fp16
        scales lose relative precision below 2**-14); ``inf`` for non-finite input."""
        x = np.asarray(x, dtype=np.float32)
        bs = self.block_size
        if x.size == 0:
            return np.zeros(x.shape)
        a = np.abs(x.astype(np.float64)).reshape(-1, bs)
        amax = np.repeat(a.max(axis=1), bs).reshape(x.shape)
        return np.where(np.isfinite(x), self.bound_rel * amax + self.bound_abs, np.inf)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{}]


def _empty_u8(shape: tuple[int, int], like: Any) -> Any:
    if _arrays.is_torch(like):
        torch = __import__("torch")
        return torch.zeros(shape, dtype=torch.uint8, device=like.device)
    return np.zeros(shape, dtype=np.uint8)


def block_bits(layout_bytes: int, block: int) -> float:
    return layout_bytes * 8 / block if block else math.nan
