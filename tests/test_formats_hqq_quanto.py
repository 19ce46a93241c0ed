"""HQQ and optimum-quanto packed int4/int2 weights ⇄ lowbit, checked live against the installed
projects' own quantizers, packers and dequantizers (hqq ``HQQLinear``, quanto
``quantize_weight`` / ``WeightQBitsTensor``), both directions, on both backends.

Both projects' *default* recipes produce fractional zero points (HQQ's half-quadratic optimizer,
quanto's float ``shift``); lowbit's ``int`` codes store integer zero points, so those are refused
(tested below) and the integer-zero-point recipes (HQQ ``optimize=False, round_zero=True``;
quanto ``zeropoint=True``) are the ones read.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import lowbit
from lowbit.errors import FormatError
from lowbit.formats._int32pack import unpack_bits

from .harness import gpu_tensor


def _decoded(q: lowbit.QTensor, backend: str, dtype: torch.dtype) -> torch.Tensor:
    """lowbit's exact float32 decode, rounded once to the reference's dtype (their arithmetic
    rounds the same exact product (code - zero) * scale once)."""
    if backend == "cpu":
        y = torch.from_numpy(lowbit.decode(q, backend="cpu"))
    else:
        qg = lowbit.QTensor(gpu_tensor(q.data), {k: gpu_tensor(v) for k, v in q.aux.items()}, q.shape, q.codec)
        y = lowbit.decode(qg, backend="gpu").cpu()
    return y.to(dtype)


def _bits_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    iv = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[a.element_size()]
    diff = int((a.contiguous().view(iv) != b.contiguous().view(iv)).sum())
    assert diff == 0, f"{what}: {diff} of {a.numel()} values differ"


# ---- HQQ ----------------------------------------------------------------------------------------

hqq_quantize = pytest.importorskip("hqq.core.quantize")
from lowbit.formats.hqq import from_hqq, to_hqq  # noqa: E402


def _hqq_linear(w: torch.Tensor, nbits: int, group_size: int, optimize: bool):
    cfg = hqq_quantize.BaseQuantizeConfig(nbits=nbits, group_size=group_size, axis=1)
    cfg["weight_quant_params"].update(optimize=optimize, round_zero=True)
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w.clone()
    return hqq_quantize.HQQLinear(lin, cfg, compute_dtype=torch.float16, device="cpu")


@pytest.mark.parametrize("nbits,group_size", [(4, 64), (4, 32), (2, 64), (2, 16)])
def test_hqq_layers_read_and_written(nbits: int, group_size: int) -> None:
    torch.manual_seed(nbits * 100 + group_size)
    w = torch.randn(64, 128) * 0.02
    hl = _hqq_linear(w, nbits, group_size, optimize=False)
    q = from_hqq(hl.W_q, hl.meta)
    assert q.codec.codec_id == f"hqq{nbits}" and q.codec.group_size == group_size and q.shape == (64, 128)
    # the codes are HQQ's own (its unpacker, compared element by element)
    theirs = hqq_quantize.Quantizer.unpack[hl.meta["packing"]](hl.W_q).reshape(64, 128)
    assert torch.equal(torch.from_numpy(unpack_bits(q.data, nbits, 128).astype(np.uint8)), theirs)
    ref = hl.dequantize()  # HQQ's float16 dequantizer
    for be in ("cpu", "gpu"):
        _bits_equal(_decoded(q, be, torch.float16), ref, f"decoded on {be} vs HQQLinear.dequantize")
    W_q, meta = to_hqq(q)  # our writer gives HQQ's packer's bytes and meta
    assert torch.equal(W_q, hl.W_q)
    _bits_equal(meta["scale"], hl.meta["scale"], "scale")
    _bits_equal(meta["zero"], hl.meta["zero"], "zero")


@pytest.mark.parametrize("codec", ["hqq4", "hqq2"])
def test_our_hqq_encodings_load_in_hqq(codec: str) -> None:
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((32, 256)) * 0.05).astype(np.float32)
    w[:, :64] = np.abs(w[:, :64])  # an all-positive group: zero point 0
    q = lowbit.encode(w, codec)
    W_q, meta = to_hqq(q)
    donor = _hqq_linear(torch.zeros(32, 256), q.codec.bits, q.codec.group_size, optimize=False)
    sd = donor.state_dict()  # HQQ's serialized layer (what its checkpoints hold), with our tensors in it
    assert {k: (sd[k].dtype, sd[k].shape) for k in ("W_q", "scale", "zero")} == \
        {"W_q": (W_q.dtype, W_q.shape), "scale": (meta["scale"].dtype, meta["scale"].shape),
         "zero": (meta["zero"].dtype, meta["zero"].shape)}
    sd.update(W_q=W_q, scale=meta["scale"], zero=meta["zero"])
    cfg = hqq_quantize.BaseQuantizeConfig(nbits=q.codec.bits, group_size=q.codec.group_size, axis=1)
    hl = hqq_quantize.HQQLinear(None, cfg, compute_dtype=torch.float16, device="cpu", initialize=False)
    hl.load_state_dict(sd)  # HQQ's loader
    _bits_equal(hl.dequantize(), _decoded(q, "cpu", torch.float16), "HQQLinear.dequantize of our layer")
    x = torch.randn(3, 256, dtype=torch.float16)
    assert torch.equal(hl(x), x @ _decoded(q, "cpu", torch.float16).T)  # and its forward uses them
    q2 = from_hqq(W_q, meta)
    assert q2.codec == q.codec and q2.data.tobytes() == q.data.tobytes()
    assert q2.aux["zero"].tobytes() == q.aux["zero"].tobytes() and q2.aux["scale"].tobytes() == q.aux["scale"].tobytes()


def test_hqq_fractional_zero_points_are_refused() -> None:
    torch.manual_seed(0)
    hl = _hqq_linear(torch.randn(64, 128), 4, 64, optimize=True)  # HQQ's default: optimized float zero points
    assert not torch.equal(hl.meta["zero"], hl.meta["zero"].round())
    with pytest.raises(FormatError, match="integer"):
        from_hqq(hl.W_q, hl.meta)


# ---- optimum-quanto -----------------------------------------------------------------------------

pytest.importorskip("optimum.quanto")
from optimum.quanto import MaxOptimizer, qint2, qint4  # noqa: E402
from optimum.quanto.tensor.weights import quantize_weight  # noqa: E402

from lowbit.formats.quanto import from_quanto, to_quanto  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _quanto_python_unpack():
    """quanto's CPU ``unpack`` op is a C++ extension JIT-built on first use (a compiler and a
    minute of build time). Route it to quanto's own pure-torch implementation of the same op
    (registered as the CompositeExplicitAutograd kernel) for the duration of these tests."""
    import optimum.quanto.library.extensions.cpp as qcpp

    op = torch.ops.quanto.unpack.default
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    saved = qcpp.ext._lib
    qcpp.ext._lib = types.SimpleNamespace(unpack=lambda t, bits: op.redispatch(keys, t, bits))
    yield
    qcpp.ext._lib = saved


def _quanto_weight(w: torch.Tensor, qtype, group_size: int, zeropoint: bool):
    scale, shift = MaxOptimizer()(w, qtype=qtype, axis=0, group_size=group_size, zeropoint=zeropoint)
    return quantize_weight(w, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=group_size, optimized=False)


@pytest.mark.parametrize("qtype,group_size,dtype", [(qint4, 128, torch.float16), (qint4, 64, torch.bfloat16),
                                                    (qint2, 128, torch.bfloat16), (qint2, 32, torch.float16)])
def test_quanto_weights_read_and_written(qtype, group_size: int, dtype: torch.dtype) -> None:
    torch.manual_seed(group_size)
    w = torch.randn(64, 256, dtype=dtype)
    t = _quanto_weight(w, qtype, group_size, zeropoint=True)
    q = from_quanto(t)
    bits = qtype.bits
    assert q.codec.codec_id == f"quanto{bits}" and q.codec.group_size == group_size
    assert q.codec.scale_dtype == {torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    theirs = t._data.unpack().reshape(64, 256)  # quanto's own unpacker
    assert torch.equal(torch.from_numpy(unpack_bits(q.data, bits, 256).astype(np.uint8)), theirs)
    ref = t.dequantize()
    for be in ("cpu", "gpu"):
        _bits_equal(_decoded(q, be, dtype), ref, f"decoded on {be} vs quanto dequantize")
    t2 = to_quanto(q)  # our writer gives quanto's packer's bytes
    assert torch.equal(t2._data._data, t._data._data)
    _bits_equal(t2._scale, t._scale, "scale")
    assert torch.equal(t2._shift, t._shift) and t2._shift.dtype == t._shift.dtype
    _bits_equal(t2.dequantize(), ref, "quanto dequantize of our tensor")


@pytest.mark.parametrize("codec,scale_dtype", [("quanto4", "float16"), ("quanto2", "bfloat16")])
def test_our_quanto_encodings_load_in_quanto(codec: str, scale_dtype: str) -> None:
    rng = np.random.default_rng(9)
    w = (rng.standard_normal((16, 512)) * 0.05).astype(np.float32)
    q = lowbit.encode(w, codec, scale_dtype=scale_dtype)
    t = to_quanto(q)
    dt = torch.float16 if scale_dtype == "float16" else torch.bfloat16
    _bits_equal(t.dequantize(), _decoded(q, "cpu", dt), "quanto dequantize of our tensor")
    q2 = from_quanto(t)
    assert q2.codec == q.codec and q2.data.tobytes() == q.data.tobytes()
    assert q2.aux["zero"].tobytes() == q.aux["zero"].tobytes() and q2.aux["scale"].tobytes() == q.aux["scale"].tobytes()


def test_quanto_float_shift_is_refused() -> None:
    t = _quanto_weight(torch.randn(64, 256, dtype=torch.float16), qint4, 128, zeropoint=False)  # quanto's default
    assert t._shift.dtype.is_floating_point
    with pytest.raises(FormatError, match="float shift"):
        from_quanto(t)
