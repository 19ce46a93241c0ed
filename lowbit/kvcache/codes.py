"""Attention computed on compressed keys and values, without materialising K or V.

* :func:`scores` — ``q · kᵀ`` for queries ``q`` [..., M, dim] against a QTensor of keys
  [..., N, dim] → [..., M, N];
* :func:`weighted_sum` — ``p · v`` for weights ``p`` [..., M, N] against a QTensor of values
  [..., N, dim] → [..., M, dim].

Rotated codecs work in the rotated domain: the query is rotated once (``q' = Π q``, and for
``turboquant_prod`` also sketched, ``S q'``), then every key contributes
``γ · ⟨q', C[codes]⟩`` (OCTOPUS: ``γ · Σ_slots ⟨q'_slot, ρ̂ n̂⟩``); for values the weighted
sum is accumulated in the rotated domain and rotated back once. BFP works on the mantissas and
block exponents, with a K-sort permutation applied to the query once. The Numba (``cpu``) and
Triton (``gpu``) kernels agree with ``decode`` followed by a matmul within float32 rounding.

>>> import numpy as np, lowbit
>>> from lowbit.kvcache.codes import scores
>>> c = lowbit.get_codec("turboquant_mse", dim=64, bits=4)
>>> rng = np.random.default_rng(0)
>>> k = rng.standard_normal((10, 64)).astype(np.float32)
>>> q = rng.standard_normal((2, 64)).astype(np.float32)
>>> keys = c.encode(k)
>>> s = scores(q, keys)
>>> s.shape, bool(np.allclose(s, q @ c.decode(keys).T, rtol=1e-4, atol=1e-4))
((2, 10), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _arrays
from ..codec import QTensor
from ..errors import DTypeError, ShapeError
from ..kernels.registry import get_kernel, resolve_backend

__all__ = ["scores", "weighted_sum", "supports"]

#: codecs whose codes :func:`scores` and :func:`weighted_sum` work on directly
ON_CODES = frozenset({"turboquant_mse", "turboquant_prod", "octopus", "bfp", "bfp12", "bfp16"})


def supports(codec: Any) -> bool:
    """Whether attention can run on this codec's codes (keys never materialised)."""
    return getattr(codec, "codec_id", None) in ON_CODES

_ALPHA_QJL = None


def _prep(a: Any, q: QTensor, what: str, last: int, be: str) -> tuple[Any, tuple[int, ...]]:
    """a as float32 [B, M, last] in the backend's array type; the leading shape."""
    cid = q.codec_id
    if not isinstance(q, QTensor):
        raise DTypeError(f"kvcache: {what}: expected a QTensor, got {type(q).__name__}")
    if len(q.shape) < 2:
        raise ShapeError(f"{cid}: {what}: expected a QTensor of shape (..., N, dim), got {q.shape}")
    inp = _arrays.Input(a, codec=cid)
    if inp.shape[:-2] != q.shape[:-2] or inp.shape[-1] != last or len(inp.shape) != len(q.shape):
        raise ShapeError(f"{cid}: {what}: expected shape {q.shape[:-2]} + (M, {last}), got {inp.shape}")
    x = inp.float32_2d(be)
    B = int(np.prod(q.shape[:-2], dtype=np.int64))
    return x.reshape(B, inp.shape[-2], last), inp.shape[:-1]


def _zeros(like: Any, shape: tuple[int, ...]) -> Any:
    if _arrays.is_torch(like):
        import torch

        return torch.zeros(shape, dtype=torch.float32, device=like.device)
    return np.zeros(shape, np.float32)


def _mm(a: Any, b: np.ndarray) -> Any:
    """a [..., k] @ b [k, n] (b a host float32 matrix) in a's array type, float32."""
    if _arrays.is_torch(a):
        import torch

        return torch.matmul(a, torch.from_numpy(np.array(b, dtype=np.float32)).to(a.device))
    return np.matmul(a, b).astype(np.float32)


def _take(a: Any, idx: np.ndarray) -> Any:
    if _arrays.is_torch(a):
        import torch

        return a[..., torch.from_numpy(idx).to(a.device)].contiguous()
    return np.ascontiguousarray(a[..., idx])


def _data(q: QTensor, be: str) -> Any:
    d = _arrays.native(q.data, be)
    B = int(np.prod(q.shape[:-2], dtype=np.int64))
    return d.reshape(B, q.shape[-2], -1)


def _tables(codec: Any, be: str, names: tuple[str, ...]) -> list[Any]:
    return [getattr(codec, n) if be == "cpu" else _arrays.gpu_tensor(np.array(getattr(codec, n))) for n in names]


_QJL_C = np.array([1.0, -1.0], np.float32)  # sign bit 0 → +1, 1 → −1


def _tq_parts(codec: Any) -> list[tuple[Any, int, int, Any]]:
    """(instance, byte offset of its norm, byte offset of its codes, channels) per instance."""
    from ..codecs.turboquant import TurboQuantProd

    if isinstance(codec, TurboQuantProd):
        gcol, _, ccol, _ = codec._cols()
        return [(codec._inst, gcol, ccol, None)] if codec._inst.bits else []
    out, col = [], 0
    for inst in codec._inst:
        out.append((inst, col, col + 2, inst.channels))
        col += 2 + inst.code_bytes
    return out


def scores(q: Any, keys: QTensor, *, backend: str = "auto") -> Any:
    """q · kᵀ for every query and key: [..., M, dim] × QTensor [..., N, dim] → [..., M, N] float32."""
    codec = keys.codec
    dim = keys.shape[-1]
    be = resolve_backend(backend, on_cuda=_arrays.is_torch(keys.data) and keys.data.device.type == "cuda",
                         codec=codec.codec_id)
    qf, lead = _prep(q, keys, "queries", dim, be)
    data = _data(keys, be)
    B, M, N = qf.shape[0], qf.shape[1], keys.shape[-2]
    out = _zeros(qf, (B, M, N))
    cid = codec.codec_id
    if cid in ("turboquant_mse", "turboquant_prod"):
        _need_one_vector(codec, dim)
        K = get_kernel("kvattn", be, "inst_scores")
        for inst, gcol, ccol, ch in _tq_parts(codec):
            qi = qf if ch is None else _take(qf, ch)
            qr = _mm(qi, inst.rot.matrix64().T.astype(np.float32))  # q' = Π q, once per query
            K(_contig(qr), data, gcol, 1.0, ccol, inst.bits, *_tables(inst, be, ("C",)), out)
        if cid == "turboquant_prod":
            gcol, rcol, ccol, zcol = codec._cols()
            qr = _mm(qf, codec._inst.rot.matrix64().T.astype(np.float32))
            qs = _mm(qr, codec._S.T)  # S q'
            K(_contig(qs), data, rcol, float(codec._alpha), zcol, 1, _QJL_C if be == "cpu" else _arrays.gpu_tensor(_QJL_C.copy()), out)
    elif cid == "octopus":
        _need_one_vector(codec, dim)
        qr = _mm(qf, codec._rot.matrix64().T.astype(np.float32))
        qs = _contig(_take(qr, _slot_major(codec)))
        if _arrays.is_torch(qs):
            qs = qs * _mask_t(codec, qs)
        else:
            qs = qs * _slot_mask(codec)
        bx, be_, _ = codec.allocation
        get_kernel("kvattn", be, "oct_scores")(qs, data, codec._W, codec._G3, codec._rem, bx, be_,
                                               *_tables(codec, be, ("_Cr", "_DIR3", "_Cr2", "_DIR2", "_C1")), out)
    elif cid in ("bfp", "bfp12", "bfp16"):
        if codec.ksort:
            qf = _take(qf, _arrays.to_numpy(keys.aux["permutation"]).astype(np.int64))
        get_kernel("kvattn", be, "bfp_scores")(_contig(qf), data, codec.block, codec.mbits, out)
    else:
        raise DTypeError(f"{cid}: kvcache.scores: expected keys from turboquant_mse, turboquant_prod, octopus or bfp")
    return _restore(out.reshape(lead[:-1] + (M, N)), q)


def weighted_sum(p: Any, values: QTensor, *, backend: str = "auto") -> Any:
    """Σ_n p[..., m, n] · v[..., n, :]: [..., M, N] × QTensor [..., N, dim] → [..., M, dim] float32."""
    codec = values.codec
    dim, N = values.shape[-1], values.shape[-2]
    be = resolve_backend(backend, on_cuda=_arrays.is_torch(values.data) and values.data.device.type == "cuda",
                         codec=codec.codec_id)
    pf, lead = _prep(p, values, "weights", N, be)
    data = _data(values, be)
    B, M = pf.shape[0], pf.shape[1]
    cid = codec.codec_id
    pf = _contig(pf)
    if cid in ("turboquant_mse", "turboquant_prod"):
        _need_one_vector(codec, dim)
        K = get_kernel("kvattn", be, "inst_wsum")
        out = _zeros(pf, (B, M, dim))
        parts = _tq_parts(codec)
        if cid == "turboquant_prod":
            inst = codec._inst
            w = _zeros(pf, (B, M, dim))
            for inst_, gcol, ccol, _ in parts:
                K(pf, data, gcol, 1.0, ccol, inst_.bits, *_tables(inst_, be, ("C",)), w)
            gcol, rcol, ccol, zcol = codec._cols()
            wz = _zeros(pf, (B, M, dim))
            K(pf, data, rcol, float(codec._alpha), zcol, 1, _QJL_C if be == "cpu" else _arrays.gpu_tensor(_QJL_C.copy()), wz)
            w = w + _mm(wz, codec._S)  # Sᵀ Σ p β z, as row vectors
            out = _mm(w, inst.rot.matrix64().astype(np.float32))  # back from the rotated domain, once
        else:
            for inst, gcol, ccol, ch in parts:
                w = _zeros(pf, (B, M, inst.d))
                K(pf, data, gcol, 1.0, ccol, inst.bits, *_tables(inst, be, ("C",)), w)
                v = _mm(w, inst.rot.matrix64().astype(np.float32))
                if ch is None:
                    out = v
                else:
                    out[..., _idx(ch, out)] = v
    elif cid == "octopus":
        _need_one_vector(codec, dim)
        w = _zeros(pf, (B, M, 3 * codec._G))
        bx, be_, _ = codec.allocation
        get_kernel("kvattn", be, "oct_wsum")(pf, data, codec._W, codec._G3, codec._rem, bx, be_,
                                             *_tables(codec, be, ("_Cr", "_DIR3", "_Cr2", "_DIR2", "_C1")), w)
        wr = _take(w, _slot_positions(codec))  # slot-major → coordinate order
        out = _mm(wr, codec._rot.matrix64().astype(np.float32))
    elif cid in ("bfp", "bfp12", "bfp16"):
        out = _zeros(pf, (B, M, dim))
        get_kernel("kvattn", be, "bfp_wsum")(pf, data, codec.block, codec.mbits, out)
        if codec.ksort:
            inv = np.argsort(_arrays.to_numpy(values.aux["permutation"]).astype(np.int64), kind="stable")
            out = _take(out, inv)
    else:
        raise DTypeError(f"{cid}: kvcache.weighted_sum: expected values from turboquant_mse, turboquant_prod, octopus or bfp")
    return _restore(out.reshape(lead[:-1] + (M, dim)), p)


# ---- helpers ---------------------------------------------------------------------------------------

def _need_one_vector(codec: Any, dim: int) -> None:
    if dim != codec.dim:
        raise ShapeError(f"{codec.codec_id}: kvcache: expected one vector of dim {codec.dim} per row, got rows of {dim}")


def _contig(a: Any) -> Any:
    return a.contiguous() if _arrays.is_torch(a) else np.ascontiguousarray(a, dtype=np.float32)


def _idx(ch: np.ndarray, like: Any) -> Any:
    if _arrays.is_torch(like):
        import torch

        return torch.from_numpy(np.asarray(ch, np.int64)).to(like.device)
    return ch


def _slot_major(codec: Any) -> np.ndarray:
    """Index map rotated coordinate ← slot-major position: position k·G + g holds coordinate
    3g + k (remainder components beyond dim point at coordinate 0 and are masked)."""
    G = codec._G
    g = np.arange(G)
    idx = np.concatenate([3 * g + k for k in range(3)])
    return np.where(idx < codec.dim, idx, 0)


def _slot_positions(codec: Any) -> np.ndarray:
    """For coordinate i of the rotated vector, its slot-major position."""
    G = codec._G
    i = np.arange(codec.dim)
    return (i % 3) * G + i // 3


def _slot_mask(codec: Any) -> np.ndarray:
    G = codec._G
    g = np.arange(G)
    return np.concatenate([(3 * g + k < codec.dim) for k in range(3)]).astype(np.float32)


def _mask_t(codec: Any, like: Any) -> Any:
    import torch

    return torch.from_numpy(_slot_mask(codec)).to(like.device)


def _restore(out: Any, ref: Any) -> Any:
    if _arrays.is_torch(ref):
        return out if _arrays.is_torch(out) else _arrays.restore(out, torch_out=True, device=ref.device)
    return _arrays.to_numpy(out)
