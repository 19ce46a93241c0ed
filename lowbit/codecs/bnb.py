"""bitsandbytes 4-bit formats: NF4 (QLoRA's NormalFloat) and bitsandbytes' own FP4.

A block is ``blocksize`` consecutive elements (32 … 4096, default 64; the flattened tensor in
row-major order, which is bitsandbytes' blocking when the last axis is a multiple of it). It is
stored as its absmax field followed by ``blocksize / 2`` bytes of 4-bit codes, the **first**
element in the **high** nibble (bitsandbytes' order, the reverse of OCP's; spec/nf4.toml):

* ``double_quant=False``: the absmax as float32, little-endian (4 bytes);
* ``double_quant=True`` (transformers' ``bnb_4bit_use_double_quant``): one byte, the code of
  ``absmax - offset`` in bitsandbytes' signed 8-bit dynamic map, in nested blocks of 256 absmax
  values with a float32 scale each (``q.aux["nested_absmax"]``) and one float32 ``offset`` per
  tensor (``q.aux["nested_offset"]``).

Encoding, exactly as bitsandbytes 0.50's CPU path (each step one fp32 operation)::

    absmax = max |x| over the block
    v      = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)
    code   = number of midpoints (t[i] + t[i+1]) / 2 of the sorted table strictly below v
             (a value on a midpoint takes the lower entry), mapped to its table index
    value  = table[code] * absmax

Nested (``quantize_blockwise`` on the CPU): ``a = absmax - offset``, ``m = max |a|`` per 256,
code = ``lut[(clamp(a * (1/m), -1, 1) + 1) * 0.5 * 65535 + 0.5]`` (truncated) where ``lut`` maps
the 65536 grid points of [-1, 1] to the nearest dynamic-map entry; decoding gives
``absmax = dyn[code] * m + offset``. The offset is the mean of the absmax values: bitsandbytes
takes ``torch.mean`` in float32, whose summation order depends on the CPU's vector width and
thread count, so lowbit defines it as the correctly rounded mean (``math.fsum`` / n, then float32)
and takes ``encode(..., nested_offset=...)`` to reproduce a given one exactly.

NaN and ±Inf are refused (bitsandbytes has no representation for them).
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError
from ..kernels.formats import BNB_NESTED_BLOCK as NESTED_BLOCK, BnbKernelFormat
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from . import _dynamic_map as _dm

__all__ = ["BnbCodec", "NF4", "FP4BNB", "NF4_TABLE", "FP4_BNB_TABLE", "dynamic_map", "nested_lut", "swap_nibbles",
           "to_bitsandbytes"]

F32 = np.float32

#: NF4 code table (index 0 … 15), float32 as bitsandbytes ships it (QLoRA, Dettmers et al. 2023).
NF4_TABLE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=F32)

#: bitsandbytes "fp4": sign bit 3 and a 3-bit magnitude code over {0, 0.0625, 8, 12, 4, 6, 2, 3},
#: divided by 12 in float32 (not OCP E2M1: the exponent bias and bit order differ). Code 8 is -0:
#: bitsandbytes' CPU and CUDA dequantizers apply the sign bit to zero too (its Python table, used
#: only to place the encoder's midpoints, has +0 there; the midpoints are the same either way).
FP4_BNB_TABLE = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=F32) / F32(12))

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic code (``create_dynamic_map(signed=True)``): the nested
    absmax map of ``double_quant`` (shared with ``dynamic8``: :mod:`lowbit.codecs._dynamic_map`)."""
    return _dm.dynamic_map(True)


def nested_lut() -> np.ndarray:
    """bitsandbytes' CPU ``quantize_blockwise`` table for :func:`dynamic_map`."""
    return _dm.quantize_lut(_dm.dynamic_map(True))


def exact_mean(a: np.ndarray) -> np.float32:
    """The nested offset: the mean of float32 ``a``, from the correctly rounded float64 sum
    (``math.fsum``), divided in float64, rounded to float32."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return F32(math.fsum(a) / a.size) if a.size else F32(0.0)


class BnbCodec(Codec):
    """Shared machinery of :class:`NF4` and :class:`FP4BNB` (not a codec by itself)."""

    family = "bnb"
    encode_kwargs = ("nested_offset",)
    table: ClassVar[np.ndarray]
    quant_type: ClassVar[str]

    def __init__(self, *, blocksize: int = 64, double_quant: bool = False) -> None:
        if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize not in BLOCKSIZES:
            raise ConfigError(f"{self.codec_id}: blocksize: expected one of {BLOCKSIZES}, got {blocksize!r}")
        if not isinstance(double_quant, bool):
            raise ConfigError(f"{self.codec_id}: double_quant: expected True or False, got {double_quant!r}")
        self.blocksize = blocksize
        self.double_quant = double_quant

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec(self.codec_id, bs=self.blocksize, a=1 if self.double_quant else 4)

    @property
    def kernel_format(self) -> BnbKernelFormat:
        return _kernel_format(self.quant_type, self.blocksize, 1 if self.double_quant else 4)

    def idempotence(self) -> str:
        # blocks with absmax < 1e-38 are scaled by 1e38 (bitsandbytes' clamp), not by 1/absmax;
        # nested absmax values decode to other absmax values
        return "bound"

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        if not self.double_quant:
            return {}
        nb = math.prod(shape) // self.blocksize
        return {"nested_absmax": ((-(-nb // NESTED_BLOCK),), "float32"), "nested_offset": ((), "float32")}

    # ---- the codec hooks -------------------------------------------------------------------
    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, *, nested_offset: Any = None,
                **kw: Any) -> tuple[Any, dict[str, Any]]:
        if nested_offset is not None and not self.double_quant:
            raise ConfigError(f"{self.codec_id}: nested_offset: expected only with double_quant=True, got {nested_offset!r}")
        rows, K = x2d.shape
        nb = rows * K // self.blocksize
        fmt = self.kernel_format
        torch_mode = _arrays.is_torch(x2d)
        if torch_mode:
            import torch

            out = torch.empty((rows, self.row_bytes(K)), dtype=torch.uint8, device=x2d.device)
            absmax = torch.empty(nb, dtype=torch.float32, device=x2d.device)
            flags = torch.zeros(1, dtype=torch.int32, device=x2d.device)
        else:
            out = np.empty((rows, self.row_bytes(K)), dtype=np.uint8)
            absmax = np.empty(nb, dtype=np.float32)
            flags = np.zeros(1, dtype=np.int64)
        if nb:
            get_kernel(self.family, backend, "encode")(x2d, fmt, out, absmax, flags)
            if int(flags[0]):
                x = _arrays.to_numpy(x2d)
                flat = int(np.flatnonzero(~np.isfinite(x))[0])
                idx = tuple(int(i) for i in np.unravel_index(flat, shape))
                what = "NaN" if np.isnan(x.reshape(-1)[flat]) else "Inf"
                raise RangeError(f"{self.codec_id}: input has {what} at index {idx}: expected finite values "
                                 f"(bitsandbytes formats cannot hold NaN or Inf); nothing was encoded")
        if not self.double_quant:
            return out, {}
        if nested_offset is None:
            offset = exact_mean(_arrays.to_numpy(absmax))
        else:
            offset = F32(float(_arrays.to_numpy(nested_offset)) if not isinstance(nested_offset, (int, float)) else nested_offset)
            if not np.isfinite(offset):
                raise RangeError(f"{self.codec_id}: nested_offset: expected a finite float, got {nested_offset!r}")
        nn = -(-nb // NESTED_BLOCK)
        if torch_mode:
            nabs = torch.zeros(nn, dtype=torch.float32, device=x2d.device)
        else:
            nabs = np.zeros(nn, dtype=np.float32)
        if nb:
            get_kernel(self.family, backend, "encode_nested")(absmax, offset, nested_lut(), out, fmt.ts, nabs)
        return out, {"nested_absmax": nabs, "nested_offset": np.array(offset, dtype=np.float32)}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        rows, K = data2d.shape[0], shape[-1]
        if _arrays.is_torch(data2d):
            import torch

            out = torch.empty((rows, K), dtype=torch.float32, device=data2d.device)
        else:
            out = np.empty((rows, K), dtype=np.float32)
        nabs, offset = None, 0.0
        if self.double_quant:
            nabs = aux["nested_absmax"]
            offset = F32(_arrays.to_numpy(aux["nested_offset"]))
        if rows and K:
            get_kernel(self.family, backend, "decode")(data2d, self.kernel_format, nabs, offset, out)
        return out

    # ---- what the harness needs ------------------------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{}, {"double_quant": True}, {"blocksize": 32, "double_quant": True}, {"blocksize": 256}]

    def block_absmax(self, q: Any) -> np.ndarray:
        """The float32 absmax every block decodes with (the nested values dequantized)."""
        d = _arrays.to_numpy(q.data)
        blocks = d.reshape(-1, self.type_size)
        if not self.double_quant:
            return np.ascontiguousarray(blocks[:, :4]).view(np.float32).reshape(-1)
        nabs = _arrays.to_numpy(q.aux["nested_absmax"])
        off = F32(_arrays.to_numpy(q.aux["nested_offset"]))
        j = np.arange(blocks.shape[0]) // NESTED_BLOCK
        with np.errstate(all="ignore"):
            return ((dynamic_map()[blocks[:, 0]] * nabs[j]).astype(F32) + off).astype(F32)

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """The distance from x/absmax to the nearest table entry, times absmax, plus a few ulps;
        with double quantization, plus |decoded absmax - absmax|. Blocks with absmax < 1e-38
        (scaled by bitsandbytes' clamp, not by absmax): |x| + |decoded absmax|."""
        x = np.asarray(x, dtype=np.float32)
        bs = self.blocksize
        xb = x.reshape(-1, bs).astype(np.float64)
        A = np.abs(xb).max(axis=1, keepdims=True)
        Ad = self.block_absmax(q).astype(np.float64)[:, None]
        T = np.sort(self.table.astype(np.float64))
        with np.errstate(all="ignore"):
            v = np.where(A > 0, xb / A, 0.0)
            d = np.abs(v[..., None] - T).min(axis=-1)
            b = (d + 2.0 ** -20) * A + np.abs(Ad - A)
        b = np.where(A >= 1e-38, b, np.abs(xb) + np.abs(Ad))
        return np.where(np.isfinite(b), b, np.inf).reshape(x.shape)

    def input_policy(self) -> dict[str, str]:
        return {"nan": "raise", "inf": "raise", "overflow": "saturate", "negative": "encode",
                "negative_zero": "zero", "subnormal": "encode"}

    def interesting_values(self) -> np.ndarray:
        T = np.sort(self.table.astype(np.float64))
        mids = (T[1:] + T[:-1]) / 2
        cand = np.concatenate([T, mids]).astype(F32)
        return np.unique(np.concatenate([cand, np.nextafter(cand, F32(np.inf)), np.nextafter(cand, F32(-np.inf))]))


@functools.cache
def _kernel_format(quant_type: str, bs: int, asize: int) -> BnbKernelFormat:
    table = NF4_TABLE if quant_type == "nf4" else FP4_BNB_TABLE
    order = np.argsort(table, kind="stable")  # equal values (FP4's two zeros) keep index order
    s = table[order]
    bounds = ((s[:-1] + s[1:]).astype(F32) / F32(2)).astype(F32)
    return BnbKernelFormat(table=table, bounds=bounds, order=order.astype(np.int64), bs=bs, asize=asize,
                           dyn=dynamic_map())


class NF4(BnbCodec, codec_id="nf4"):
    """bitsandbytes NF4 (4-bit NormalFloat): per block of ``blocksize`` (default 64) a float32
    absmax + 4-bit indices into the NF4 table, **first element in the high nibble**;
    ``double_quant=True`` nests the absmax in 8-bit codes (transformers' double quantization).

    >>> import numpy as np, lowbit
    >>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    >>> q = lowbit.encode(x, "nf4")
    >>> q.data.shape, q.data[0, :6].tobytes().hex()    # absmax 1.0 (LE float32), codes 0, 0, 0, 0
    ((1, 36), '0000803f0000')
    >>> lowbit.decode(q)[0, [0, 63]].tolist()
    [-1.0, 1.0]
    """

    table = NF4_TABLE
    quant_type = "nf4"


class FP4BNB(BnbCodec, codec_id="fp4_bnb"):
    """bitsandbytes FP4 (``quant_type="fp4"``): bitsandbytes' own 4-bit float table divided by
    12 (magnitudes 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1), absmax scaling as in :class:`NF4`.
    Positive values below half the smallest magnitude take code 8, which decodes to -0.0, as in
    bitsandbytes (its encoder's table has +0 there, its decoders -0).

    >>> import numpy as np, lowbit
    >>> x = np.zeros((1, 64), np.float32); x[0, :4] = [1.0, -0.5, 0.3, 0.001]
    >>> q = lowbit.encode(x, "fp4_bnb")
    >>> q.data[0, 4:6].tobytes().hex(), lowbit.decode(q)[0, :4].tolist()
    ('3d48', [1.0, -0.5, 0.3333333432674408, -0.0])
    """

    table = FP4_BNB_TABLE
    quant_type = "fp4"


# ---- layouts -----------------------------------------------------------------------------------

def swap_nibbles(packed: Any) -> np.ndarray:
    """bitsandbytes' nibble order (first element high) ⇄ OCP's (first element low): the two
    nibbles of every byte exchanged. Its own inverse.

    >>> import numpy as np
    >>> from lowbit.codecs.bnb import swap_nibbles
    >>> swap_nibbles(np.array([0x12, 0xF0], np.uint8)).tolist()
    [33, 15]
    """
    b = np.asarray(_arrays.to_numpy(packed), dtype=np.uint8)
    return ((b & 0x0F) << 4 | (b >> 4)).astype(np.uint8)   # low nibble up, high nibble down


def to_bitsandbytes(q: Any) -> dict[str, Any]:
    """The arrays of a bitsandbytes ``Params4bit`` state dict for one weight (transformers'
    ``bnb_4bit`` checkpoints), without the ``weight.`` prefix: ``weight`` (uint8
    ``[n/2, 1]``, the codes as bitsandbytes packs them), ``absmax`` (float32, or the uint8 nested
    codes), ``quant_map`` (the 16 table values) and, double-quantized, ``nested_absmax``,
    ``nested_quant_map`` and ``nested_offset``; plus ``quant_state`` (the JSON fields of
    ``quant_state.bitsandbytes__<type>``).

    >>> import numpy as np, lowbit
    >>> from lowbit.codecs.bnb import to_bitsandbytes
    >>> t = to_bitsandbytes(lowbit.encode(np.ones((2, 64), np.float32), "nf4", double_quant=True))
    >>> t["weight"].shape, t["absmax"].dtype.name, t["quant_state"]["quant_type"], t["quant_state"]["shape"]
    ((64, 1), 'uint8', 'nf4', [2, 64])
    """
    c = q.codec
    if not isinstance(c, BnbCodec):
        raise ConfigError(f"to_bitsandbytes: expected an nf4 or fp4_bnb QTensor, got {c!r}")
    d = np.ascontiguousarray(_arrays.to_numpy(q.data)).reshape(-1, c.type_size)
    a = 1 if c.double_quant else 4
    out: dict[str, Any] = {
        "weight": np.ascontiguousarray(d[:, a:]).reshape(-1, 1),
        "absmax": np.ascontiguousarray(d[:, :a]).reshape(-1) if c.double_quant
        else np.ascontiguousarray(d[:, :4]).view(np.float32).reshape(-1),
        "quant_map": c.table.copy(),
    }
    state: dict[str, Any] = {"quant_type": c.quant_type, "blocksize": c.blocksize, "dtype": "float32",
                             "shape": list(q.shape)}
    if c.double_quant:
        out["nested_absmax"] = np.asarray(_arrays.to_numpy(q.aux["nested_absmax"]), dtype=F32)
        out["nested_quant_map"] = dynamic_map().copy()
        out["nested_offset"] = np.asarray(_arrays.to_numpy(q.aux["nested_offset"]), dtype=F32)
        state.update(nested_blocksize=NESTED_BLOCK, nested_dtype="float32",
                     nested_offset=float(out["nested_offset"]))
    out["quant_state"] = state
    return out
