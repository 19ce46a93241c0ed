"""The plain-number descriptions the CPU and GPU kernels of the block-scaled families take (no
Numba, no Triton here): a codec derives one of these once, and importing it, or building a codec,
loads no compiler. Each kernel module re-exports its family's names unprefixed (``BLOCK``, ...).

>>> MX_BLOCK, NV_BLOCK, BNB_NESTED_BLOCK
(32, 16, 256)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import ElementEncoding

__all__ = ["BnbKernelFormat", "MXKernelFormat", "NVKernelFormat", "NAN_BITS"]

NAN_BITS = 0x7FC00000  # the one quiet NaN every kernel writes (for a NaN element, or every element of a NaN-scale block)

# ---- bitsandbytes 4-bit (lowbit.kernels.cpu.bnb) ------------------------------------------------------

BNB_NESTED_BLOCK = 256          # absmax values per nested block (bitsandbytes' blocksize for state2)
BNB_LUT_SIZE = 65536            # bitsandbytes' CPU quantize_blockwise lookup table
BNB_CHUNK = 8192               # elements per parallel work item (whole blocks)


@dataclass(frozen=True)
class BnbKernelFormat:
    """What a bnb kernel needs (all plain numbers and small tables)."""

    table: np.ndarray    # float32 value of every 4-bit code
    bounds: np.ndarray   # float32 midpoints between consecutive sorted table values (15)
    order: np.ndarray    # int64: code of the i-th smallest table value (identity for NF4)
    bs: int              # elements per block
    asize: int           # bytes of the absmax field: 4 (float32) or 1 (nested code)
    dyn: np.ndarray      # float32 8-bit dynamic code (256), for the nested absmax

    @property
    def ts(self) -> int:
        return self.asize + self.bs // 2


# ---- OCP MX (lowbit.kernels.cpu.mx) -------------------------------------------------------------------

# Scale rules, as the kernels see them.
MX_FLOOR, MX_CEIL, MX_EVEN, MX_RCEIL = range(4)
MX_SCALE_RULES = ("floor", "ceil", "even", "rceil")

MX_BLOCK = 32            # elements per MX block
MX_CHUNK_BLOCKS = 256   # blocks per parallel work item (8192 elements)


@dataclass(frozen=True)
class MXKernelFormat:
    """What an MX kernel needs to know, derived once per codec (all plain numbers)."""

    enc: ElementEncoding   # element format, saturating
    rule: int              # MX_FLOOR / MX_CEIL / MX_EVEN / MX_RCEIL
    emax: int              # floor(log2(max_elem)): 8 E4M3, 15 E5M2, 4 E3M2, 2 E2M3 / E2M1, 0 INT8
    round_add: int         # MX_EVEN: half an ulp at the element's mantissa width, on fp32 bits
    vmax: float            # MX_RCEIL: the largest element value (448, 57344, 28, 7.5, 6, 127/64)
    shift: int             # element value = code value * 2**-shift (6 for MXINT8's k/64, else 0)
    lut: np.ndarray        # float32 value of every element code (k/64 for MXINT8)
    type_size: int         # bytes per block: 1 + 32 * w / 8


# ---- NVFP4 / NVINT4 (lowbit.kernels.cpu.nvfp4) -------------------------------------------------------

NV_TORCHAO, NV_COMPRESSED_TENSORS = range(2)
NV_RECIPES = ("torchao", "compressed_tensors")

NV_BLOCK = 16
NV_TYPE_SIZE = 9            # 1 scale byte + 8 code bytes
NV_CHUNK_BLOCKS = 512      # blocks per parallel work item (8192 elements)


@dataclass(frozen=True)
class NVKernelFormat:
    """What an NVFP4/NVINT4 kernel needs, derived once per codec (all plain numbers)."""

    enc: ElementEncoding     # element: E2M1 or int4 (-7..7), saturating
    senc: ElementEncoding    # block scale: UE4M3 or UE5M3, saturating
    recipe: int              # NV_TORCHAO or NV_COMPRESSED_TENSORS
    emax_val: float          # largest element value: 6 (E2M1) or 7 (int4)
    smin: float              # torchao: the clamp floor of the block scale (the scale format's min normal)
    smax: float              # the scale format's max (448 or 114688)
    zero_code: int           # compressed-tensors: code of 0.125, written where the scale rounds to 0
    elut: np.ndarray         # float32 value of every element code
    slut: np.ndarray         # float32 value of every scale byte (NaN where the byte is NaN)
    scale_nan: int           # the scale byte written for blocks with NaN or Inf
