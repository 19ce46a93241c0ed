"""Triton kernels of the ``qjl`` codec, twins of :mod:`lowbit.kernels.cpu.qjl`: the same
sequential float32 sums (one loop iteration per term, each product and sum rounded once:
``enable_fp_fusion=False``), vectorised across projections, coordinates or keys instead; the
norm's square root is ``sqrt_rn`` (Triton's ``tl.sqrt`` is approximate on the GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel


@triton.jit
def _encode_kernel(x_ptr, s_ptr, out_ptr, norm_ptr, rows, d, m, BR: tl.constexpr, BM: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    mr = r < rows
    i = tl.arange(0, BM)
    mi = i < m
    acc = tl.zeros([BR, BM], tl.float32)
    nsq = tl.zeros([BR], tl.float32)
    for j in range(d):
        xj = tl.load(x_ptr + r * d + j, mask=mr, other=0.0)
        nsq = nsq + xj * xj
        acc = acc + tl.load(s_ptr + i * d + j, mask=mi, other=0.0)[None, :] * xj[:, None]
    tl.store(norm_ptr + r, tl.math.sqrt_rn(nsq), mask=mr)
    bit = (acc >= 0).to(tl.int32)  # +0 and -0 both count as non-negative
    w = tl.reshape(bit, [BR, BM // 8, 8]) << tl.arange(0, 8)[None, None, :]  # projection 8b+k -> bit k of byte b
    byte = tl.sum(w, axis=2)
    b = tl.arange(0, BM // 8)
    tl.store(out_ptr + r[:, None] * (m // 8) + b[None, :], byte.to(tl.uint8), mask=mr[:, None] & (b < m // 8)[None, :])


@triton.jit
def _decode_kernel(data_ptr, s_ptr, norm_ptr, out_ptr, rows, d, m, c, BR: tl.constexpr, BD: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    mr = r < rows
    j = tl.arange(0, BD)
    mj = j < d
    acc = tl.zeros([BR, BD], tl.float32)
    for i in range(m):
        byte = tl.load(data_ptr + r * (m // 8) + i // 8, mask=mr, other=0).to(tl.int32)
        s = tl.load(s_ptr + i * d + j, mask=mj, other=0.0)[None, :]
        acc = acc + tl.where((((byte >> (i % 8)) & 1) == 1)[:, None], s, -s)
    sc = c * tl.load(norm_ptr + r, mask=mr, other=0.0)
    tl.store(out_ptr + r[:, None] * d + j[None, :], sc[:, None] * acc, mask=mr[:, None] & mj[None, :])


@triton.jit
def _project_kernel(q_ptr, s_ptr, out_ptr, d, m, BM: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BM)
    mi = i < m
    acc = tl.zeros([BM], tl.float32)
    for j in range(d):
        qj = tl.load(q_ptr + r * d + j + tl.zeros([1], tl.int64))
        acc = acc + tl.load(s_ptr + i * d + j, mask=mi, other=0.0) * qj
    tl.store(out_ptr + r * m + i, acc, mask=mi)


@triton.jit
def _score_kernel(p_ptr, data_ptr, norm_ptr, out_ptr, T, m, c, BT: tl.constexpr):
    a = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1).to(tl.int64) * BT + tl.arange(0, BT)
    mt = t < T
    acc = tl.zeros([BT], tl.float32)
    for i in range(m):
        v = tl.load(p_ptr + a * m + i + tl.zeros([BT], tl.int64))
        byte = tl.load(data_ptr + t * (m // 8) + i // 8, mask=mt, other=0).to(tl.int32)
        acc = acc + tl.where(((byte >> (i % 8)) & 1) == 1, v, -v)
    sc = c * tl.load(norm_ptr + t, mask=mt, other=0.0)
    tl.store(out_ptr + a * T + t, sc * acc, mask=mt)


def _br(rows: int, width: int) -> int:
    """Rows per program: a tile of about 8192 values (the interpreter runs programs one by one)."""
    return max(1, min(triton.next_power_of_2(rows), 8192 // width, 64))


def _bm(m: int) -> int:
    return max(8, triton.next_power_of_2(m))


@kernel("qjl", "gpu", "encode")
def encode(x: torch.Tensor, S: torch.Tensor, out: torch.Tensor, norm: torch.Tensor) -> None:
    rows, d = x.shape
    if rows:
        br = _br(rows, _bm(S.shape[0]))
        _encode_kernel[(triton.cdiv(rows, br),)](x.contiguous(), S, out, norm, rows, d, S.shape[0], BR=br,
                                                  BM=_bm(S.shape[0]), enable_fp_fusion=False)


@kernel("qjl", "gpu", "decode")
def decode(data: torch.Tensor, S: torch.Tensor, norm: torch.Tensor, c: float, out: torch.Tensor) -> None:
    rows, d = out.shape
    if rows:
        bd = triton.next_power_of_2(d)
        br = _br(rows, bd)
        _decode_kernel[(triton.cdiv(rows, br),)](data.contiguous(), S, norm.contiguous(), out, rows, d, S.shape[0], c,
                                                  BR=br, BD=bd, enable_fp_fusion=False)


@kernel("qjl", "gpu", "project")
def project(q: torch.Tensor, S: torch.Tensor, out: torch.Tensor) -> None:
    rows, d = q.shape
    if rows:
        _project_kernel[(rows,)](q.contiguous(), S, out, d, S.shape[0], BM=_bm(S.shape[0]), enable_fp_fusion=False)


@kernel("qjl", "gpu", "score")
def score(p: torch.Tensor, data: torch.Tensor, norm: torch.Tensor, c: float, out: torch.Tensor) -> None:
    nq, m = p.shape
    T = data.shape[0]
    if nq and T:
        bt = min(1024, triton.next_power_of_2(T))
        _score_kernel[(nq, triton.cdiv(T, bt))](p.contiguous(), data.contiguous(), norm.contiguous(), out, T, m, c,
                                                 BT=bt, enable_fp_fusion=False)
