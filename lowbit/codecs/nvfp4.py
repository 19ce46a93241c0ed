"""NVIDIA's two-level 4-bit formats: NVFP4 (E2M1 elements) and NVINT4 (int4 elements).

A block is 16 consecutive elements along the last axis: one unsigned scale byte (UE4M3, the
E4M3 bit pattern with the sign bit clear; or UE5M3 with ``scale_format="ue5m3"``) followed by 8
bytes of 4-bit codes, even element in the low nibble (spec/nvfp4.toml). One float32 per tensor,
``q.aux["global_scale"]``, completes the scale. Producers disagree on its meaning and on the
order of the float operations, so the codec takes the producer as ``recipe`` and reproduces its
arithmetic step by step (each step one correctly rounded fp32 operation):

``recipe="torchao"`` (torchao ``nvfp4_quantize``; ModelOpt/TensorRT checkpoint convention:
``global_scale`` is a **multiplier**, stored by ModelOpt as ``weight_scale_2``)::

    g     = amax(x) / (6 * 448)                         # global_scale
    s_blk = ue4m3(clamp((amax_blk / 6) / g, 2**-6, 448))
    q     = e2m1(clamp(x * min((1 / g) / s_blk, FLT_MAX), -6, 6))   # min: TransformerEngine's
    y     = e2m1_value(q) * (g * s_blk)

``recipe="compressed_tensors"`` (llm-compressor ``nvfp4-pack-quantized`` checkpoints:
``global_scale`` is a **divisor**, stored as ``weight_global_scale``)::

    g     = (6 * 448) / max(amax(x), FLT_MIN)            # 1.0 if that is not finite
    s_blk = e4m3(clamp(g * (amax_blk / 6), -448, 448)),  a zero scale replaced by 0.125
    q     = e2m1(clamp(x / (s_blk / g) + 0.0, -6, 6))      # "+ 0.0" (its zero point): -0 -> +0
    y     = e2m1_value(q) * (s_blk / g)

Rounding is to nearest-even everywhere, with saturation. ``amax(x)`` is the largest finite |x|;
an all-zero tensor gets ``g = 1``, and for the torchao recipe ``g`` is at least 2**-126 (so that
``1 / g`` stays finite). ``encode(x, global_scale=g)`` uses a given (e.g. calibrated) value in the
recipe's convention instead. A block holding NaN or ±Inf is written as the scale format's NaN byte
with zero codes and decodes to NaN (``nonfinite="nan"``) or is refused (``"raise"``).

``scale_format="ue5m3"`` (the wider scale proposed for FP4 training) uses the torchao recipe with
448 replaced by UE5M3's max 114688 and the clamp floor 2**-6 by its smallest normal 2**-14.
NVINT4 uses the torchao recipe with int4 elements in [-7, 7] (symmetric, as in the INT-vs-FP
comparison of fine-grained formats) in place of E2M1, i.e. 6 replaced by 7.

Checkpoint conventions: :func:`to_modelopt` / :func:`from_modelopt` (``weight``,
``weight_scale``, ``weight_scale_2`` = the multiplier) and :func:`to_compressed_tensors` /
:func:`from_compressed_tensors` (``weight_packed``, ``weight_scale``, ``weight_global_scale`` =
the divisor) split a QTensor into the tensors those checkpoints store and back, converting the
global scale with :func:`multiplier_to_divisor` / :func:`divisor_to_multiplier` (``fl(1/g)``)
when the QTensor was made with the other recipe. Codes and block scale bytes never change; the
reciprocal is not exactly invertible in float32, so a decoded value can move by one ulp.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError
from ..kernels.formats import NV_BLOCK as BLOCK, NV_RECIPES as RECIPES, NVKernelFormat
from ..kernels.registry import get_kernel
from ..numerics import ElementEncoding, FloatFormat, IntFormat

__all__ = ["NVCodec", "NVFP4", "NVINT4", "SCALE_FORMATS", "multiplier_to_divisor", "divisor_to_multiplier",
           "to_modelopt", "to_compressed_tensors", "from_modelopt", "from_compressed_tensors"]

SCALE_FORMATS = {
    "ue4m3": FloatFormat(4, 3, signed=False, special="fn"),   # float7_e4m3fnu in a byte: max 448
    "ue5m3": FloatFormat(5, 3, signed=False, special="fn"),   # float8_e5m3fnu: max 114688
}
NONFINITE_POLICIES = ("nan", "raise")
_TINY = float(np.finfo(np.float32).tiny)  # 2**-126


class NVCodec(Codec):
    """Shared machinery of :class:`NVFP4` and :class:`NVINT4` (not a codec by itself)."""

    family = "nvfp4"
    encode_kwargs = ("global_scale",)
    element: ClassVar[FloatFormat | IntFormat]
    emax_val: ClassVar[float]  # largest element value: 6 or 7
    recipe: str

    def _setup(self, recipe: str, scale_format: str, nonfinite: str) -> None:
        if recipe not in RECIPES:
            raise ConfigError(f"{self.codec_id}: recipe: expected one of {RECIPES}, got {recipe!r}")
        if scale_format not in SCALE_FORMATS:
            raise ConfigError(f"{self.codec_id}: scale_format: expected one of {sorted(SCALE_FORMATS)}, got {scale_format!r}")
        if scale_format != "ue4m3" and recipe != "torchao":
            raise ConfigError(f"{self.codec_id}: scale_format={scale_format!r}: expected recipe 'torchao' "
                              f"(compressed-tensors only writes UE4M3 scales), got {recipe!r}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"{self.codec_id}: nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        self.scale_format = scale_format
        self.nonfinite = nonfinite

    # ---- formats ---------------------------------------------------------------------------
    @property
    def format(self) -> FloatFormat | IntFormat:
        """The element format."""
        return self.element

    @property
    def scale_fmt(self) -> FloatFormat:
        """The block scale format (UE4M3 or UE5M3)."""
        return SCALE_FORMATS[self.scale_format]

    @property
    def kernel_format(self) -> NVKernelFormat:
        enc = ElementEncoding(self.element, overflow="saturate", on_nan="raise")
        sf = self.scale_fmt
        senc = ElementEncoding(sf, overflow="saturate", on_nan="nan", storage_bits=8)
        slut = senc.lut
        zero = int(np.flatnonzero(slut == 0.125)[0]) if self.recipe == "compressed_tensors" else -1
        return NVKernelFormat(
            enc=enc, senc=senc, recipe=RECIPES.index(self.recipe), emax_val=self.emax_val, smin=sf.min_normal,
            smax=sf.max, zero_code=zero, elut=enc.lut, slut=slut, scale_nan=(1 << sf.bits) - 1)

    def idempotence(self) -> str:
        # the global scale comes from the data's amax, and the decoded maximum is not the original
        return "bound"

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"global_scale": ((), "float32")}

    # ---- the global scale --------------------------------------------------------------------
    def global_scale_from_amax(self, amax: float) -> np.float32:
        """The per-tensor scale the recipe derives from the tensor's largest finite |x|."""
        f = np.float32
        amax = f(amax)
        top = f(self.emax_val * self.scale_fmt.max)  # 6 * 448 = 2688 (exact in fp32)
        with np.errstate(all="ignore"):
            if self.recipe == "torchao":
                g = amax / top
                if amax == 0:
                    return f(1.0)
                return f(max(g, f(_TINY)))  # 1/g must stay finite
            g = top / max(amax, f(_TINY))
            return g if np.isfinite(g) else f(1.0)

    def _check_global(self, value: Any) -> np.float32:
        try:
            g = np.float32(float(_arrays.to_numpy(value)) if not isinstance(value, (int, float)) else value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.codec_id}: global_scale: expected a positive float, got {value!r}") from None
        if not (np.isfinite(g) and g >= _TINY):
            raise RangeError(f"{self.codec_id}: global_scale: expected a finite float32 >= 2**-126, got {value!r}")
        return g

    # ---- the codec hooks -------------------------------------------------------------------
    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, *, global_scale: Any = None,
                **kw: Any) -> tuple[Any, dict[str, Any]]:
        rows, K = x2d.shape
        if global_scale is None:
            amax = get_kernel(self.family, backend, "tensor_amax")(x2d) if rows and K else np.float32(0)
            g = self.global_scale_from_amax(amax)
        else:
            g = self._check_global(global_scale)
        with np.errstate(all="ignore"):
            rg = np.float32(1.0) / g
        if _arrays.is_torch(x2d):
            import torch

            out = torch.empty((rows, self.row_bytes(K)), dtype=torch.uint8, device=x2d.device)
            flags = torch.zeros(1, dtype=torch.int32, device=x2d.device)
        else:
            out = np.empty((rows, self.row_bytes(K)), dtype=np.uint8)
            flags = np.zeros(1, dtype=np.int64)
        if rows and K:
            get_kernel(self.family, backend, "encode")(x2d, self.kernel_format, g, rg, out, flags)
            if self.nonfinite == "raise" and int(flags[0]):
                x = _arrays.to_numpy(x2d)
                flat = int(np.flatnonzero(~np.isfinite(x))[0])
                idx = tuple(int(i) for i in np.unravel_index(flat, shape))
                what = "NaN" if np.isnan(x.reshape(-1)[flat]) else "Inf"
                raise RangeError(f"{self.codec_id}: input has {what} at index {idx}: expected finite values "
                                 f"(nonfinite='raise'; 'nan' writes the block as NaN); nothing was encoded")
        return out, {"global_scale": np.array(g, dtype=np.float32)}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        rows, K = data2d.shape[0], shape[-1]
        g = np.float32(_arrays.to_numpy(aux["global_scale"]))
        if _arrays.is_torch(data2d):
            import torch

            out = torch.empty((rows, K), dtype=torch.float32, device=data2d.device)
        else:
            out = np.empty((rows, K), dtype=np.float32)
        if rows and K:
            get_kernel(self.family, backend, "decode")(data2d, self.kernel_format, g, out)
        return out

    # ---- contract details the harness checks -------------------------------------------------
    def block_scales(self, q: Any) -> np.ndarray:
        """The scale bytes of every block, shape ``(..., K/16)`` (uint8)."""
        d = _arrays.to_numpy(q.data)
        return d.reshape(d.shape[:-1] + (-1, self.type_size))[..., 0]

    def effective_scales(self, q: Any) -> np.ndarray:
        """The float32 scale each block decodes with (``g * s_blk`` or ``s_blk / g``)."""
        g = np.float32(_arrays.to_numpy(q.aux["global_scale"]))
        sv = self.kernel_format.slut[self.block_scales(q)]
        with np.errstate(all="ignore"):
            return (sv * g if self.recipe == "torchao" else sv / g).astype(np.float32)

    def _grid(self) -> np.ndarray:
        v = self.element.values()
        if isinstance(self.element, IntFormat):
            v = v[v != -8]
        return np.unique(np.where(v == 0, 0.0, v))

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """Half the element grid's spacing (or the distance to ±max) times the block's decode
        scale, plus a few float32 ulps for the producer's float steps (the encoder's scale
        ``(1/g)/s`` and the decoder's ``g*s`` differ in their last bits); ``inf`` for NaN blocks."""
        x = np.asarray(x, dtype=np.float32)
        G = self._grid()
        m = np.repeat(self.effective_scales(q).astype(np.float64), BLOCK, axis=-1).reshape(x.shape)
        sat = np.zeros(x.shape, bool)
        if self.recipe == "torchao":  # blocks whose multiplier fl(1/g)/s saturated at FLT_MAX: no claim
            g = np.float32(_arrays.to_numpy(q.aux["global_scale"]))
            with np.errstate(all="ignore"):
                r = np.float64(np.float32(1.0) / g) / self.kernel_format.slut[self.block_scales(q)].astype(np.float64)
            sat = np.repeat(~(r <= float(np.finfo(np.float32).max)), BLOCK, axis=-1).reshape(x.shape)
        with np.errstate(all="ignore"):
            v = x.astype(np.float64) / m
            c = np.clip(v, G[0], G[-1])
            i = np.clip(np.searchsorted(G, c, side="right") - 1, 0, G.size - 1)
            hi = G[np.minimum(i + 1, G.size - 1)]
            half = np.where(c >= G[-1], 0.0, (hi - G[i]) / 2)
            bound = (np.abs(v - c) + half) * m + 2.0 ** -20 * (np.abs(x) + G[-1] * m) + 2.0 ** -149
        return np.where(np.isfinite(bound) & np.isfinite(x) & (m > 0) & ~sat, bound, np.inf)

    def input_policy(self) -> dict[str, str]:
        return {"nan": self.nonfinite, "inf": self.nonfinite, "overflow": "saturate", "negative": "encode",
                "negative_zero": "zero", "subnormal": "encode"}

    def interesting_values(self) -> np.ndarray:
        G = self._grid()
        mids = (G[1:] + G[:-1]) / 2
        cand = np.concatenate([G, mids, [G[-1] * 1.25, -G[-1] * 1.5]]).astype(np.float32)
        cand = np.concatenate([cand, np.nextafter(cand, np.float32(np.inf)), np.nextafter(cand, np.float32(-np.inf))])
        return np.unique(cand)


class NVFP4(NVCodec, codec_id="nvfp4"):
    """NVFP4: 16 E2M1 elements + one UE4M3 scale byte (4.5 bits per element) and a float32 global
    scale in ``aux["global_scale"]``; ``recipe`` ∈ torchao (multiplier convention, default),
    compressed_tensors (divisor convention); ``scale_format`` ∈ ue4m3, ue5m3.

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 16), np.float32); x[0, :4] = [2688.0, -672.0, 1000.0, 0.2]
    >>> q = lowbit.encode(x, "nvfp4")
    >>> float(q.aux["global_scale"]), q.data[0, :3].tobytes().hex()   # g = 2688/2688, s = 448
    (1.0, '7eb704')
    >>> lowbit.decode(q)[0, :4].tolist()                             # 448 * (6, -1.5, 2, 0)
    [2688.0, -672.0, 896.0, 0.0]
    >>> qc = lowbit.encode(x, "nvfp4", recipe="compressed_tensors")
    >>> bool((lowbit.decode(qc) == lowbit.decode(q)).all())
    True
    """

    element = FloatFormat(2, 1, special="finite")
    emax_val = 6.0

    def __init__(self, *, recipe: str = "torchao", scale_format: str = "ue4m3", nonfinite: str = "nan") -> None:
        self.recipe = recipe
        self._setup(recipe, scale_format, nonfinite)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{}, {"recipe": "compressed_tensors"}, {"scale_format": "ue5m3", "nonfinite": "raise"}]


class NVINT4(NVCodec, codec_id="nvint4"):
    """NVINT4: NVFP4's two-level scaling with symmetric int4 elements (-7 … 7) instead of E2M1:
    ``s_blk = ue4m3(clamp((amax_blk / 7) / g, 2**-6, 448))`` with ``g = amax / (7 * 448)``
    (the torchao recipe's order). The code 0x8 (-8) decodes but is never written.

    >>> import numpy as np, lowbit
    >>> x = (np.r_[np.arange(-7, 8), 0] * 448.0).astype(np.float32).reshape(1, 16)
    >>> q = lowbit.encode(x, "nvint4")                       # g = 3136 / (7 * 448) = 1, s = 448
    >>> q.data[0, :3].tobytes().hex(), bool((lowbit.decode(q) == x).all())
    ('7ea9cb', True)
    """

    element = IntFormat(4, symmetric=True)
    emax_val = 7.0
    recipe = "torchao"

    def __init__(self, *, scale_format: str = "ue4m3", nonfinite: str = "nan") -> None:
        self._setup("torchao", scale_format, nonfinite)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{}, {"scale_format": "ue5m3", "nonfinite": "raise"}]


# ---- checkpoint conventions ------------------------------------------------------------------

def multiplier_to_divisor(weight_scale_2: Any) -> np.float32:
    """ModelOpt's ``weight_scale_2`` (decode = e2m1 * scale * g) → compressed-tensors'
    ``weight_global_scale`` (decode = e2m1 * scale / g): ``fl(1 / g)``.

    >>> from lowbit.codecs.nvfp4 import multiplier_to_divisor
    >>> float(multiplier_to_divisor(1 / 2688))
    2688.0
    """
    with np.errstate(all="ignore"):
        return np.float32(1.0) / np.float32(_arrays.to_numpy(weight_scale_2).reshape(()))


def divisor_to_multiplier(weight_global_scale: Any) -> np.float32:
    """The inverse convention change, ``fl(1 / g)`` (see :func:`multiplier_to_divisor`)."""
    return multiplier_to_divisor(weight_global_scale)


def _split(q: Any) -> tuple[np.ndarray, np.ndarray]:
    """(packed codes ``(..., K/2)``, scale bytes ``(..., K/16)``) of an NVFP4 QTensor."""
    d = _arrays.to_numpy(q.data)
    blocks = d.reshape(d.shape[:-1] + (-1, 9))
    return (np.ascontiguousarray(blocks[..., 1:]).reshape(d.shape[:-1] + (-1,)),
            np.ascontiguousarray(blocks[..., 0]))


def _join(packed: Any, scales: Any, g: np.float32, recipe: str) -> Any:
    from ..codec import QTensor

    p = np.asarray(_arrays.to_numpy(packed)).view(np.uint8)
    sc = np.asarray(_arrays.to_numpy(scales)).view(np.uint8)
    if p.shape[:-1] != sc.shape[:-1] or p.shape[-1] != 8 * sc.shape[-1]:
        raise ConfigError(f"nvfp4: expected packed (..., 8n) and scales (..., n) uint8/float8 arrays, got "
                          f"{p.shape} and {sc.shape}")
    data = np.concatenate([sc[..., None], p.reshape(p.shape[:-1] + (-1, 8))], axis=-1).reshape(p.shape[:-1] + (-1,))
    codec = NVFP4(recipe=recipe)
    return QTensor(data, {"global_scale": np.array(g, dtype=np.float32)}, p.shape[:-1] + (2 * p.shape[-1],), codec)


def to_modelopt(q: Any) -> dict[str, np.ndarray]:
    """The tensors a ModelOpt NVFP4 checkpoint stores for one weight: ``weight`` (uint8
    ``[out, in/2]``, even element in the low nibble), ``weight_scale`` (the UE4M3 bytes, uint8
    ``[out, in/16]``; view as float8_e4m3fn) and ``weight_scale_2`` (float32 scalar, multiplier).

    >>> import numpy as np, lowbit
    >>> from lowbit.codecs.nvfp4 import to_modelopt, from_modelopt
    >>> q = lowbit.encode(np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32), "nvfp4")
    >>> t = to_modelopt(q); t["weight"].shape, t["weight_scale"].shape, bool(t["weight_scale_2"] == np.float32(3) / np.float32(2688))
    ((2, 16), (2, 2), True)
    >>> bool((lowbit.decode(from_modelopt(**t)) == lowbit.decode(q)).all())
    True
    """
    if q.codec.codec_id != "nvfp4" or q.codec.scale_format != "ue4m3":
        raise ConfigError(f"to_modelopt: expected an nvfp4 (ue4m3) QTensor, got {q.codec!r}")
    packed, scales = _split(q)
    g = np.float32(_arrays.to_numpy(q.aux["global_scale"]).reshape(()))
    if q.codec.recipe != "torchao":
        g = divisor_to_multiplier(g)
    return {"weight": packed, "weight_scale": scales, "weight_scale_2": np.array(g, dtype=np.float32)}


def from_modelopt(weight: Any, weight_scale: Any, weight_scale_2: Any) -> Any:
    """A QTensor (recipe ``torchao``: the multiplier convention) from ModelOpt's tensors."""
    return _join(weight, weight_scale, np.float32(_arrays.to_numpy(weight_scale_2).reshape(())), "torchao")


def to_compressed_tensors(q: Any) -> dict[str, np.ndarray]:
    """The tensors of compressed-tensors' ``nvfp4-pack-quantized`` format: ``weight_packed``,
    ``weight_scale`` (UE4M3 bytes) and ``weight_global_scale`` (float32 ``[1]``, divisor).

    >>> import numpy as np, lowbit
    >>> from lowbit.codecs.nvfp4 import to_compressed_tensors
    >>> q = lowbit.encode(np.linspace(-3, 3, 32, dtype=np.float32).reshape(1, 32), "nvfp4", recipe="compressed_tensors")
    >>> to_compressed_tensors(q)["weight_global_scale"].tolist()
    [896.0]
    """
    if q.codec.codec_id != "nvfp4" or q.codec.scale_format != "ue4m3":
        raise ConfigError(f"to_compressed_tensors: expected an nvfp4 (ue4m3) QTensor, got {q.codec!r}")
    packed, scales = _split(q)
    g = np.float32(_arrays.to_numpy(q.aux["global_scale"]).reshape(()))
    if q.codec.recipe != "compressed_tensors":
        g = multiplier_to_divisor(g)
    return {"weight_packed": packed, "weight_scale": scales, "weight_global_scale": np.array([g], dtype=np.float32)}


def from_compressed_tensors(weight_packed: Any, weight_scale: Any, weight_global_scale: Any) -> Any:
    """A QTensor (recipe ``compressed_tensors``: the divisor convention) from its tensors."""
    return _join(weight_packed, weight_scale, np.float32(_arrays.to_numpy(weight_global_scale).reshape(())),
                 "compressed_tensors")
