"""Triton decoders of ggml's grid-based i-quants (family ``gguf_iq``): IQ1_S, IQ1_M, IQ2_XXS,
IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S; the GPU twins of :mod:`lowbit.kernels.cpu.gguf_iq` (decode only,
``decode(type, data, out)``, the same bits).

One lane per output element: the lane finds its 32-element group ``ib``, its 8-element grid row
``l`` and its position ``jj`` in the row, reads the few block bytes that element needs and
gathers its grid value from the code book, passed as a float32 tensor (grid entries are small
integers, exact in float32) together with ggml's 128 sign patterns (``ksigns_iq2xs``). Every
product is ggml's, in its order (``dequantize_row_iq*``), launched without FMA contraction.

Encoding: ``encode(type, x, qw, out)`` dispatches to the Triton encoder module of the type's grid
family (:data:`ENCODERS`, imported on first use); a type not listed there encodes on the CPU only
(its codec class says ``gpu_encode = False``, and tests/test_gguf_gpu.py checks the two agree).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from ..cpu.gguf_iq import _IDS, _TS, IQ1S_DELTA, tables
from ...errors import BackendUnavailable
from ..registry import kernel
from ._ggml import FP, canon, fp16_to_fp32, ld_f16, ld_u8, ld_u16, ld_u32, lut, programs_block

IQ2_XXS: tl.constexpr = tl.constexpr(0)
IQ2_XS: tl.constexpr = tl.constexpr(1)
IQ2_S: tl.constexpr = tl.constexpr(2)
IQ3_XXS: tl.constexpr = tl.constexpr(3)
IQ3_S: tl.constexpr = tl.constexpr(4)
IQ1_S: tl.constexpr = tl.constexpr(5)
IQ1_M: tl.constexpr = tl.constexpr(6)
DELTA: tl.constexpr = tl.constexpr(IQ1S_DELTA)


@triton.jit
def _sgn(signs, j):
    """ggml's sign: -1.0 where bit ``j`` of the 8-bit pattern is set, else +1.0."""
    return tl.where(((signs >> j) & 1) != 0, -1.0, 1.0)


@triton.jit
def _decode_kernel(data_ptr, out_ptr, grid_ptr, ks_ptr, n, K, RB, T: tl.constexpr, TS: tl.constexpr,
                   GW: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = e < n
    e = tl.where(m, e, 0)
    row = e // K
    col = e - row * K
    blk = col // 256
    j = (col - blk * 256).to(tl.int32)
    b = data_ptr + row * RB + blk * TS  # the block's first byte
    ib = j >> 5        # 32-element group
    l = (j >> 3) & 3   # 8-element grid row within the group
    jj = j & 7         # element within the row
    if T == IQ2_XXS:  # per group: 4 grid bytes, then a u32 of 4 x 7 sign-pattern bits and a 4-bit scale on top
        q = b + 2 + 8 * ib
        a1 = ld_u32(q + 4, m)
        # (a1 >> 28) & 0xF: the top nibble (the mask undoes the arithmetic shift of the int32 sign bit)
        db = (ld_f16(b, m) * (((a1 >> 28) & 0xF).to(tl.float32) + 0.5)) * 0.25
        gi = ld_u8(q + l, m)
        signs = tl.load(ks_ptr + ((a1 >> (7 * l)) & 127), mask=m, other=0)
        y = (db * tl.load(grid_ptr + gi * GW + jj, mask=m, other=0.0)) * _sgn(signs, jj)
    elif T == IQ2_XS:  # u16 per row = 9-bit grid index | 7-bit sign index; two 4-bit scales per group
        sc = ld_u8(b + 66 + ib, m)
        s4 = tl.where(l < 2, sc & 0xF, sc >> 4)
        db = (ld_f16(b, m) * (s4.to(tl.float32) + 0.5)) * 0.25
        q = ld_u16(b + 2 + 2 * (4 * ib + l), m)
        signs = tl.load(ks_ptr + (q >> 9), mask=m, other=0)
        y = (db * tl.load(grid_ptr + (q & 511) * GW + jj, mask=m, other=0.0)) * _sgn(signs, jj)
    elif T == IQ2_S:  # 10-bit grid index: qs byte | 2 bits of qh[ib] (bits 2l, 2l+1 -> 8, 9); sign bytes
        sc = ld_u8(b + 74 + ib, m)
        s4 = tl.where(l < 2, sc & 0xF, sc >> 4)
        db = (ld_f16(b, m) * (s4.to(tl.float32) + 0.5)) * 0.25
        qh = ld_u8(b + 66 + ib, m)
        gi = ld_u8(b + 2 + 4 * ib + l, m) | ((qh << (8 - 2 * l)) & 0x300)
        signs = ld_u8(b + 34 + 4 * ib + l, m)
        y = (db * tl.load(grid_ptr + gi * GW + jj, mask=m, other=0.0)) * _sgn(signs, jj)
    elif T == IQ3_XXS:  # 8 grid bytes (4 values each) per group, then u32 scale-and-signs words
        a = ld_u32(b + 66 + 4 * ib, m)
        db = (ld_f16(b, m) * (((a >> 28) & 0xF).to(tl.float32) + 0.5)) * 0.5
        signs = tl.load(ks_ptr + ((a >> (7 * l)) & 127), mask=m, other=0)
        g = ld_u8(b + 2 + 8 * ib + 2 * l + (jj >> 2), m)  # first grid byte for jj < 4, second after
        y = (db * tl.load(grid_ptr + g * GW + (jj & 3), mask=m, other=0.0)) * _sgn(signs, jj)
    elif T == IQ3_S:  # 9-bit grid index (qs | one qh bit), sign bytes, 4-bit odd scales per 64
        sc = ld_u8(b + 106 + (ib >> 1), m)
        db = ld_f16(b, m) * (1 + 2 * ((sc >> (4 * (ib & 1))) & 0xF)).to(tl.float32)
        qh = ld_u8(b + 66 + ib, m)
        h = jj >> 2  # which of the row's two grid bytes; its ninth bit is bit 2l + h of qh
        gi = ld_u8(b + 2 + 8 * ib + 2 * l + h, m) | ((qh << (8 - 2 * l - h)) & 256)
        signs = ld_u8(b + 74 + 4 * ib + l, m)
        y = (db * tl.load(grid_ptr + gi * GW + (jj & 3), mask=m, other=0.0)) * _sgn(signs, jj)
    elif T == IQ1_S:  # 11-bit index (qs | 3 qh bits) into the {-1,0,1} grid; 3-bit scale, delta sign in qh
        qh = ld_u16(b + 34 + 2 * ib, m)
        dl = ld_f16(b, m) * (2 * ((qh >> 12) & 7) + 1).to(tl.float32)
        delta = tl.where((qh & 0x8000) != 0, -DELTA, DELTA)
        gi = ld_u8(b + 2 + 4 * ib + l, m) | (((qh >> (3 * l)) & 7) << 8)
        y = dl * (tl.load(grid_ptr + gi * GW + jj, mask=m, other=0.0) + delta)
    else:  # IQ1_M: the fp16 scale is spread over the top nibbles of the 4 u16 scale words
        sc0 = ld_u16(b + 48, m)
        sc1 = ld_u16(b + 50, m)
        sc2 = ld_u16(b + 52, m)
        sc3 = ld_u16(b + 54, m)
        d = fp16_to_fp32((sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000))
        s = ld_u16(b + 48 + 2 * (ib >> 1), m)
        sh = 6 * (ib & 1) + 3 * (l >> 1)  # rows 0, 1 use the low 3-bit scale of the pair, 2, 3 the next
        dl = d * (2 * ((s >> sh) & 7) + 1).to(tl.float32)
        qhb = ld_u8(b + 32 + 2 * ib + (l >> 1), m)
        odd = (l & 1) != 0  # even rows: qh bits 0..2 -> index bits 8..10, bit 3 = delta sign; odd: bits 4..7
        gi = ld_u8(b + 4 * ib + l, m) | tl.where(odd, (qhb << 4) & 0x700, (qhb << 8) & 0x700)
        neg = tl.where(odd, qhb & 0x80, qhb & 0x08) != 0
        delta = tl.where(neg, -DELTA, DELTA)
        y = dl * (tl.load(grid_ptr + gi * GW + jj, mask=m, other=0.0) + delta)
    tl.store(out_ptr + e, canon(y), mask=m)


#: per type: the index of its grid in cpu tables() and the grid row width
_GRID = {0: (0, 8), 1: (1, 8), 2: (2, 8), 3: (3, 4), 4: (4, 4), 5: (5, 8), 6: (5, 8)}


def _grid(t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gi, _ = _GRID[t]
    g = lut(f"iq_grid{gi}", device, lambda: tables()[gi].astype(np.float32).reshape(-1))
    ks = lut("iq_ksigns", device, lambda: tables()[6].astype(np.int32))
    return g, ks


@kernel("gguf_iq", "gpu", "decode")
def decode(codec_id: str, data: Any, out: Any) -> None:
    """``data[n, row_bytes]`` (uint8) -> float32 ``out[n, K]``; see lowbit.kernels.cpu.gguf_iq.
    numpy arrays are accepted too (lowbit.formats.gguf.dequantize passes them): they are moved to
    the device for the kernel and the result copied back into ``out``."""
    if isinstance(out, np.ndarray):
        dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        dt = torch.from_numpy(np.ascontiguousarray(data)).to(dev)
        ot = torch.empty(out.shape, dtype=torch.float32, device=dev)
        decode(codec_id, dt, ot)
        out[...] = ot.cpu().numpy()
        return
    t = _IDS[codec_id]
    rows, K = out.shape
    n = rows * K
    if not n:
        return
    g, ks = _grid(t, data.device)
    blk = programs_block(n, 1024, 1 << 16)
    _decode_kernel[(triton.cdiv(n, blk),)](data.contiguous(), out, g, ks, n, K, data.shape[1], T=t, TS=int(_TS[t]),
                                           GW=_GRID[t][1], BLOCK=blk, **FP)


#: the module holding each type's Triton encoder (``encode(codec_id, x, qw, out)``, the same bytes
#: as the CPU twin); a grid i-quant not listed would encode on the CPU only (today all seven are here)
ENCODERS: dict[str, str] = {
    "iq1_s": "_iq1_enc",
    "iq1_m": "_iq1_enc",
    "iq2_xxs": "_iq2_enc",
    "iq2_xs": "_iq2_enc",
    "iq2_s": "_iq2_enc",
    "iq3_xxs": "_iq3_enc",
    "iq3_s": "_iq3_enc",
}


@kernel("gguf_iq", "gpu", "encode")
def encode(codec_id: str, x: Any, qw: Any, out: Any) -> None:
    if codec_id not in ENCODERS:
        raise BackendUnavailable(f"{codec_id}: no Triton encoder yet (it encodes on the CPU: backend='cpu')")
    import importlib

    importlib.import_module(f"{__package__}.{ENCODERS[codec_id]}").encode(codec_id, x, qw, out)
