"""Triton kernels of the ``rotated`` wrapper, twins of :mod:`lowbit.kernels.cpu.rotated`: each
program rotates a tile of ``BR`` rows (rotation blocks); the FWHT runs its butterfly stages in
place in ``out`` (global memory, a barrier between stages) in the CPU kernel's order; the dense
rotation is a sequential float32 sum vectorised over outputs. ``enable_fp_fusion=False``: no FMA.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel


@triton.jit
def _hadamard_kernel(x_ptr, s_ptr, out_ptr, rows, K, c, INVERSE: tl.constexpr, LOG: tl.constexpr, BR: tl.constexpr,
                     BK: tl.constexpr, BH: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    mr = r < rows
    j = tl.arange(0, BK)
    mj = j < K
    m2 = mr[:, None] & mj[None, :]
    base = r[:, None] * K
    s = tl.load(s_ptr + j, mask=mj, other=1.0)[None, :]
    x = tl.load(x_ptr + base + j[None, :], mask=m2, other=0.0)
    if not INVERSE:
        x = x * s  # a sign flip: exact
    tl.store(out_ptr + base + j[None, :], x, mask=m2)
    tl.debug_barrier()
    p = tl.arange(0, BH)
    mp = mr[:, None] & (p < K // 2)[None, :]
    for st in tl.static_range(LOG):
        h = 1 << st
        i = ((p // h) * (2 * h) + p % h)[None, :]  # the first element of butterfly pair p at this stage
        a = tl.load(out_ptr + base + i, mask=mp, other=0.0)
        b = tl.load(out_ptr + base + i + h, mask=mp, other=0.0)
        tl.debug_barrier()
        tl.store(out_ptr + base + i, a + b, mask=mp)
        tl.store(out_ptr + base + i + h, a - b, mask=mp)
        tl.debug_barrier()
    v = tl.load(out_ptr + base + j[None, :], mask=m2, other=0.0)
    y = v * c
    if INVERSE:
        y = y * s
    qnan = tl.full([BR, BK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    tl.debug_barrier()
    tl.store(out_ptr + base + j[None, :], tl.where(y != y, qnan, y), mask=m2)


@triton.jit
def _dense_kernel(x_ptr, q_ptr, out_ptr, rows, K, INVERSE: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    mr = r < rows
    i = tl.arange(0, BK)
    mi = i < K
    acc = tl.zeros([BR, BK], tl.float32)
    for j in range(K):
        xj = tl.load(x_ptr + r * K + j, mask=mr, other=0.0)[:, None]
        if INVERSE:
            qv = tl.load(q_ptr + j * K + i, mask=mi, other=0.0)[None, :]
        else:
            qv = tl.load(q_ptr + i * K + j, mask=mi, other=0.0)[None, :]
        acc = acc + xj * qv
    qnan = tl.full([BR, BK], 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    tl.store(out_ptr + r[:, None] * K + i[None, :], tl.where(acc != acc, qnan, acc), mask=mr[:, None] & mi[None, :])


def _br(rows: int, width: int) -> int:
    """Rows per program: a tile of about 8192 values (the interpreter runs programs one by one)."""
    return max(1, min(triton.next_power_of_2(rows), max(1, 8192 // width)))


@kernel("rotated", "gpu", "hadamard")
def hadamard(x: torch.Tensor, signs: torch.Tensor, c: float, inverse: bool, out: torch.Tensor) -> None:
    rows, K = x.shape
    if rows and K:
        bk = triton.next_power_of_2(K)
        br = _br(rows, bk)
        _hadamard_kernel[(triton.cdiv(rows, br),)](x.contiguous(), signs, out, rows, K, c, INVERSE=inverse,
                                                    LOG=K.bit_length() - 1, BR=br, BK=bk,
                                                    BH=max(1, triton.next_power_of_2(K // 2)), enable_fp_fusion=False)


@kernel("rotated", "gpu", "dense")
def dense(x: torch.Tensor, Q: torch.Tensor, inverse: bool, out: torch.Tensor) -> None:
    rows, K = x.shape
    if rows and K:
        bk = triton.next_power_of_2(K)
        br = _br(rows, bk)
        _dense_kernel[(triton.cdiv(rows, br),)](x.contiguous(), Q, out, rows, K, INVERSE=inverse, BR=br, BK=bk,
                                                 enable_fp_fusion=False)
