"""Triton kernels of the GGUF k-quants (family ``gguf_kquants``): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
Q8_K; the GPU twins of :mod:`lowbit.kernels.cpu.gguf_kquants`, same entry points and arguments
(``decode(codec_id, data, out)``), same bits.

Decoding runs one lane per output element: the lane reads the super-block's fp16 scale(s), its
sub-block's packed scale and its own code bits, and does ggml's ``dequantize_row_*`` products in
ggml's order (launched without FMA contraction).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..cpu.gguf_kquants import _IDS, _TS
from ..registry import kernel
from ._ggml import FP, bits_f32, canon, ld_f16, ld_u8, ld_u32, programs_block, sext8

Q2_K: tl.constexpr = tl.constexpr(0)
Q3_K: tl.constexpr = tl.constexpr(1)
Q4_K: tl.constexpr = tl.constexpr(2)
Q5_K: tl.constexpr = tl.constexpr(3)
Q6_K: tl.constexpr = tl.constexpr(4)
Q8_K: tl.constexpr = tl.constexpr(5)


@triton.jit
def scale_min_k4(b, j, m):
    """ggml ``get_scale_min_k4(j, scales)`` over the 12 scale bytes at ``b``: sub-blocks 0..3 keep
    the low 6 bits of bytes j and j + 4; 4..7 take a nibble of byte j + 4 and the top two bits
    of bytes j - 4 (scale) and j (min) as their bits 4..5."""
    lo = j < 4
    jh = tl.where(lo, j, j - 4)  # (clamped index for the lanes that do not use it)
    b_j = ld_u8(b + j, m)
    b_j4 = ld_u8(b + j + 4, m)
    b_jm4 = ld_u8(b + jh, m)
    sc = tl.where(lo, b_j & 63, (b_j4 & 0xF) | ((b_jm4 >> 6) << 4))
    mn = tl.where(lo, b_j4 & 63, (b_j4 >> 4) | ((b_j >> 6) << 4))
    return sc, mn


@triton.jit
def q3_scale(b, s, m):
    """Q3_K's signed 6-bit scale ``s`` (0..15) from the 12 scale bytes at ``b``: the low nibble
    of byte s (s < 8) or the high nibble of byte s - 8, two high bits at 2*(s/4) of byte 8 + s%4;
    minus 32."""
    lo = tl.where(s < 8, ld_u8(b + (s & 7), m) & 0xF, ld_u8(b + (s & 7), m) >> 4)
    hi = (ld_u8(b + 8 + (s & 3), m) >> (2 * (s >> 2))) & 3
    return (lo | (hi << 4)) - 32


@triton.jit
def _decode_kernel(data_ptr, out_ptr, n, K, RB, T: tl.constexpr, TS: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = e < n
    e = tl.where(m, e, 0)
    row = e // K
    col = e - row * K
    blk = col // 256
    j = (col - blk * 256).to(tl.int32)
    b = data_ptr + row * RB + blk * TS  # the super-block's first byte
    if T == Q2_K:  # element 128h + 32s + l: bits 2s of qs[32h + l]; scale byte j/16 = min << 4 | scale
        h = j >> 7
        s = (j >> 5) & 3
        l = j & 31
        q = (ld_u8(b + 16 + 32 * h + l, m) >> (2 * s)) & 3
        sc = ld_u8(b + (j >> 4), m)
        dl = ld_f16(b + 80, m) * (sc & 0xF).to(tl.float32)
        ml = ld_f16(b + 82, m) * (sc >> 4).to(tl.float32)
        y = dl * q.to(tl.float32) - ml
    elif T == Q3_K:  # low 2 bits as Q2_K (qs at 32); the high bit (4h + s) of hmask[l] set means +0, clear -4
        h = j >> 7
        s = (j >> 5) & 3
        l = j & 31
        low = (ld_u8(b + 32 + 32 * h + l, m) >> (2 * s)) & 3
        hb = (ld_u8(b + l, m) >> (4 * h + s)) & 1
        q = low - tl.where(hb != 0, 0, 4)
        dl = ld_f16(b + 108, m) * q3_scale(b + 96, j >> 4, m).to(tl.float32)
        y = dl * q.to(tl.float32)
    elif T == Q4_K or T == Q5_K:  # 4 chunks of 64: byte l of a chunk holds element l (low) and l + 32 (high)
        c = j >> 6
        r = j & 63
        l = r & 31
        hi = r >= 32
        sc, mn = scale_min_k4(b + 4, 2 * c + (r >> 5), m)
        if T == Q4_K:
            qb = ld_u8(b + 16 + 32 * c + l, m)
            q = tl.where(hi, qb >> 4, qb & 0xF)
        else:  # the fifth bit of element 64c + l (+ 32) is bit 2c (2c + 1) of qh[l]
            qb = ld_u8(b + 48 + 32 * c + l, m)
            q = tl.where(hi, qb >> 4, qb & 0xF) + (((ld_u8(b + 16 + l, m) >> (2 * c + (r >> 5))) & 1) << 4)
        d1 = ld_f16(b, m) * sc.to(tl.float32)
        m1 = ld_f16(b + 2, m) * mn.to(tl.float32)
        y = d1 * q.to(tl.float32) - m1
    elif T == Q6_K:
        # element 128h + 32t + l (t = 0..3): low nibble of ql[64h + 32(t&1) + l] (t < 2) or its high
        # nibble (t >= 2), two high bits at 2t of qh[32h + l]; minus 32; int8 scale 8h + l/16 + 2t
        h = j >> 7
        t = (j >> 5) & 3
        l = j & 31
        qlb = ld_u8(b + 64 * h + 32 * (t & 1) + l, m)
        low = tl.where(t >= 2, qlb >> 4, qlb & 0xF)
        q = (low | (((ld_u8(b + 128 + 32 * h + l, m) >> (2 * t)) & 3) << 4)) - 32
        isc = sext8(ld_u8(b + 192 + 8 * h + (l >> 4) + 2 * t, m))
        y = (ld_f16(b + 208, m) * isc.to(tl.float32)) * q.to(tl.float32)
    else:  # Q8_K: float32 d, int8 codes
        d = bits_f32(ld_u32(b, m))
        y = d * sext8(ld_u8(b + 4 + j, m)).to(tl.float32)
    tl.store(out_ptr + e, canon(y), mask=m)


@kernel("gguf_kquants", "gpu", "decode")
def decode(codec_id: str, data: torch.Tensor, out: torch.Tensor) -> None:
    """``data[n, row_bytes]`` -> float32 ``out[n, K]``; see lowbit.kernels.cpu.gguf_kquants."""
    t = _IDS[codec_id]
    rows, K = out.shape
    n = rows * K
    blk = programs_block(n, 1024, 1 << 16)
    _decode_kernel[(triton.cdiv(n, blk),)](data.contiguous(), out, n, K, data.shape[1], T=t, TS=int(_TS[t]),
                                           BLOCK=blk, **FP)
