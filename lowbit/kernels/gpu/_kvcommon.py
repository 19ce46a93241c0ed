"""Triton building blocks shared by the rotated KV codecs: the GPU twins of
:mod:`lowbit.kernels.cpu._kvcommon`, the same float32 operations in the same order.

Every program holds a tile of BV vectors × DP columns (DP = the dimension rounded up to a
power of two, padding columns are 0). In-register reductions are the spec's pairwise tree
(reshape to (…, 2) and split: adjacent pairs first); dense rotations accumulate one input
column per loop step (the spec's left-to-right order); the FWHT is the butterfly network done
with reshape/permute/split/join. Launch everything with ``enable_fp_fusion=False``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..registry import interpreting


def block_vectors(n: int) -> int:
    """Vectors per program: 16 on a GPU; more in the interpreter, where programs cost Python time."""
    if interpreting():
        return max(2, min(64, triton.next_power_of_2(max(n, 1))))
    return 16


@triton.jit
def tree_sum(v, BV: tl.constexpr, DP: tl.constexpr, LOG: tl.constexpr):
    """Pairwise tree sum over the columns of v [BV, DP] (DP = 2**LOG) → [BV]."""
    for s in tl.static_range(LOG):
        v = tl.reshape(v, (BV, DP >> (s + 1), 2))
        a, b = tl.split(v)  # a: even columns, b: odd columns
        v = a + b
    return tl.reshape(v, (BV,))


@triton.jit
def fwht(v, BV: tl.constexpr, D: tl.constexpr, LOG: tl.constexpr):
    """Unnormalised Walsh–Hadamard transform of the rows of v [BV, D] (D = 2**LOG): stages
    h = 1, 2, 4, …, (a, b) = (v_i, v_{i+h}) → (a + b, a − b) for every i with bit h clear."""
    for s in tl.static_range(LOG):
        # column i = blk·2h + half·h + k  →  axes (blk, half, k); bring "half" last to split it
        t = tl.reshape(v, (BV, D >> (s + 1), 2, 1 << s))
        t = tl.permute(t, (0, 1, 3, 2))
        a, b = tl.split(t)
        t = tl.join(a + b, a - b)
        t = tl.permute(t, (0, 1, 3, 2))
        v = tl.reshape(t, (BV, D))
    return v


@triton.jit
def f32_to_f16(g):
    """float16 bits (int32) of float32 g >= 0, round half to even; 0x7C00 = overflow (> 65504)."""
    u = g.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    e = u >> 23
    normal = ((u - (112 << 23)) + 0xFFF + ((u >> 13) & 1)) >> 13
    sig = (u & 0x7FFFFF) | 0x800000
    sh = tl.minimum(tl.maximum(126 - e, 1), 30)
    sub = (sig + ((1 << (sh - 1)) - 1) + ((sig >> sh) & 1)) >> sh
    h = tl.where(e >= 113, normal, tl.where(e < 102, 0, sub))
    return tl.where(u >= 0x477FF000, 0x7C00, h)


@triton.jit
def f16_to_f32(h):
    """float32 value of float16 bits h (int32); the sign is honoured, Inf/NaN kept."""
    h = h & 0xFFFF
    s = (h >> 15) << 31
    e = (h >> 10) & 31
    m = h & 1023
    sub = m.to(tl.float32) * 5.9604644775390625e-08  # m * 2**-24, exact
    sub = tl.where(s != 0, -sub, sub)
    nrm = (s | ((e + 112) << 23) | (m << 13)).to(tl.float32, bitcast=True)
    spec = (s | 0x7F800000 | (m << 13)).to(tl.float32, bitcast=True)
    return tl.where(e == 0, sub, tl.where(e == 31, spec, nrm))


@triton.jit
def load_u16(data_ptr, rowbase, col, mask):
    """Little-endian uint16 at byte ``col`` of each row (int32)."""
    lo = tl.load(data_ptr + rowbase + col, mask=mask, other=0).to(tl.int32)
    hi = tl.load(data_ptr + rowbase + col + 1, mask=mask, other=0).to(tl.int32)
    return lo | (hi << 8)


@triton.jit
def load_field(data_ptr, rowbase, col, idx, W: tl.constexpr, mask):
    """Code ``idx`` (W <= 16 bits, LSB-first) of the bit field at byte ``col`` (int32)."""
    bit = (rowbase * 0 + idx) * W  # broadcast: idx may be a scalar or a tile
    p = data_ptr + rowbase + col + (bit >> 3)
    sh = bit & 7
    NB: tl.constexpr = (7 + W + 7) // 8
    word = tl.load(p, mask=mask, other=0).to(tl.int32)
    if NB > 1:
        word = word | (tl.load(p + 1, mask=mask & ((sh + W) > 8), other=0).to(tl.int32) << 8)
    if NB > 2:
        word = word | (tl.load(p + 2, mask=mask & ((sh + W) > 16), other=0).to(tl.int32) << 16)
    return (word >> sh) & ((1 << W) - 1)


@triton.jit
def _pack_kernel(codes_ptr, out_ptr, n, G, out_stride, col, NB,
                 W: tl.constexpr, BV: tl.constexpr, GP: tl.constexpr):
    """codes[v, g] (int) → bits [W·g, W·g+W) of out[v, col:col+NB], LSB-first, 8 codes per W bytes."""
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    grp = tl.arange(0, GP)
    rmask = rows < n
    for j in tl.static_range(W):
        byte = tl.zeros([BV, GP], dtype=tl.int32)
        for k in tl.static_range(8):
            if (k * W < 8 * j + 8) and (k * W + W > 8 * j):
                idx = grp * 8 + k
                m = rmask[:, None] & (idx < G)[None, :]
                code = tl.load(codes_ptr + rows[:, None] * G + idx[None, :], mask=m, other=0).to(tl.int32)
                if 8 * j >= k * W:
                    byte = byte | ((code >> (8 * j - k * W)) & 0xFF)
                else:
                    byte = byte | ((code << (k * W - 8 * j)) & 0xFF)
        pos = grp * W + j
        m = rmask[:, None] & (pos < NB)[None, :]
        tl.store(out_ptr + rows[:, None] * out_stride + col + pos[None, :], byte.to(tl.uint8), mask=m)


def pack(codes, width: int, out, col: int) -> None:
    """Pack codes[v, g] LSB-first into out[v, col:col + ceil(G·width/8)] (the cpu ``pack_fields``)."""
    n, G = codes.shape
    if n == 0 or G == 0:
        return
    nb = (G * width + 7) // 8
    bv = block_vectors(n)
    gp = triton.next_power_of_2(-(-G // 8))
    _pack_kernel[(triton.cdiv(n, bv),)](codes, out, n, G, out.stride(0), col, nb, W=width, BV=bv, GP=gp,
                                        enable_fp_fusion=False)
