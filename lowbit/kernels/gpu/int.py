"""Triton kernels of the group-scaled integer codecs (family ``int``): the GPU twins of
:mod:`lowbit.kernels.cpu.int`, same entry points and arguments.

One program handles ``BLOCK`` packing groups (``lcm(bits, 8) / bits`` codes in
``lcm(bits, 8) / 8`` bytes). The only float operations are the correctly rounded division
(``div_rn``), the clamp, round-half-even by the exact ``(v + 1.5*2**23) - 1.5*2**23`` trick
(|v| <= 1024) and the decode multiply, launched with ``enable_fp_fusion=False``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..registry import interpreting, kernel

_MAGIC = 12582912.0  # 1.5 * 2**23: adding and subtracting it rounds |v| < 2**22 half to even


@triton.jit
def _load_code(data_ptr, grp, m, i: tl.constexpr, W: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    """Code ``i`` (``W`` bits, LSB first) of each lane's ``GB``-byte group: the bytes it overlaps,
    shifted into place and masked (the byte choice and shifts are resolved at compile time)."""
    code = tl.zeros([BLOCK], dtype=tl.int32)
    for j in tl.static_range(GB):
        if (i * W < 8 * j + 8) and (i * W + W > 8 * j):
            b = tl.load(data_ptr + grp * GB + j, mask=m, other=0).to(tl.int32)
            if 8 * j >= i * W:
                code = code | (b << (8 * j - i * W))
            else:
                code = code | (b >> (i * W - 8 * j))
    return code & ((1 << W) - 1)


@triton.jit
def _group(e, K, M, Gr, NGr, NGc, gcol_ptr, m):
    r = e // K
    c = e - r * K
    gc = tl.load(gcol_ptr + c, mask=m, other=0)
    return ((r // M) * NGr + (r % M) // Gr) * NGc + gc


@triton.jit
def _encode_kernel(x_ptr, s_ptr, z_ptr, gcol_ptr, out_ptr, n_groups, K, M, Gr, NGr, NGc, zconst, qlo, qhi,
                   HAS_Z: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    for j in tl.static_range(GB):
        byte = tl.zeros([BLOCK], dtype=tl.int32)
        for i in tl.static_range(GC):
            if (i * W < 8 * j + 8) and (i * W + W > 8 * j):  # code i overlaps byte j (constexpr)
                e = grp * GC + i
                x = tl.load(x_ptr + e, mask=m, other=0.0)
                g = _group(e, K, M, Gr, NGr, NGc, gcol_ptr, m)
                s = tl.load(s_ptr + g, mask=m, other=1.0)
                v = tl.math.div_rn(x, s)
                v = tl.minimum(tl.maximum(v, -1024.0), 1024.0)
                v = (v + _MAGIC) - _MAGIC  # round half to even, exactly
                if HAS_Z:
                    zz = tl.load(z_ptr + g, mask=m, other=0)
                else:
                    zz = zconst
                k = v.to(tl.int32) + zz
                k = tl.minimum(tl.maximum(k, qlo), qhi)
                if 8 * j >= i * W:
                    byte = byte | ((k >> (8 * j - i * W)) & 0xFF)
                else:
                    byte = byte | ((k << (i * W - 8 * j)) & 0xFF)
        tl.store(out_ptr + grp * GB + j, byte.to(tl.uint8), mask=m)


@triton.jit
def _decode_kernel(data_ptr, s_ptr, z_ptr, gcol_ptr, out_ptr, n_groups, K, M, Gr, NGr, NGc, zconst,
                   SHIFT: tl.constexpr, HAS_Z: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    qnan = tl.full([BLOCK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    for i in tl.static_range(GC):
        code = _load_code(data_ptr, grp, m, i, W, GB, BLOCK)
        e = grp * GC + i
        g = _group(e, K, M, Gr, NGr, NGc, gcol_ptr, m)
        s = tl.load(s_ptr + g, mask=m, other=1.0)
        if HAS_Z:
            zz = tl.load(z_ptr + g, mask=m, other=0)
        else:
            zz = zconst
        y = ((code << SHIFT) - zz).to(tl.float32) * s
        y = tl.where(y != y, qnan, y)
        tl.store(out_ptr + e, y, mask=m)


def _block(n_groups: int, gc: int) -> int:
    target = 1 << 16 if interpreting() else 4096
    b = max(16, triton.next_power_of_2(max(1, target // gc)))
    return min(b, max(16, triton.next_power_of_2(n_groups)))


def _gc_gb(bits: int) -> tuple[int, int]:
    import math

    l = bits * 8 // math.gcd(bits, 8)
    return l // bits, l // 8


@kernel("int", "gpu", "encode")
def encode(x: torch.Tensor, s: torch.Tensor, z: Any, geo: Any, gcol: torch.Tensor, bits: int, zconst: int,
           qlo: int, qhi: int, out: torch.Tensor) -> None:
    """Codes of float32 ``x[rows, K]`` into ``out``; see lowbit.kernels.cpu.int."""
    gc, gb = _gc_gb(bits)
    n_groups = x.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    zz = s if z is None else z.reshape(-1).to(torch.int32).contiguous()
    _encode_kernel[(triton.cdiv(n_groups, block),)](
        x, s.reshape(-1).contiguous(), zz, gcol.to(torch.int32).contiguous(), out, n_groups, geo.K, geo.M, geo.Gr,
        geo.NGr, geo.NGc, zconst, qlo, qhi, HAS_Z=z is not None, W=bits, GC=gc, GB=gb, BLOCK=block,
        enable_fp_fusion=False)


@kernel("int", "gpu", "decode")
def decode(data: torch.Tensor, s: torch.Tensor, z: Any, geo: Any, gcol: torch.Tensor, bits: int, zconst: int,
           out: torch.Tensor, shift: int = 0) -> None:
    """float32 values of the codes in ``data``; see lowbit.kernels.cpu.int."""
    gc, gb = _gc_gb(bits)
    n_groups = out.numel() // gc
    if not n_groups:
        return
    block = _block(n_groups, gc)
    zz = s if z is None else z.reshape(-1).to(torch.int32).contiguous()
    _decode_kernel[(triton.cdiv(n_groups, block),)](
        data, s.reshape(-1).contiguous(), zz, gcol.to(torch.int32).contiguous(), out, n_groups, geo.K, geo.M,
        geo.Gr, geo.NGr, geo.NGc, zconst, SHIFT=shift, HAS_Z=z is not None, W=bits, GC=gc, GB=gb, BLOCK=block,
        enable_fp_fusion=False)
