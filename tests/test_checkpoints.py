"""GPTQ, AWQ and compressed-tensors integer checkpoints ⇄ lowbit, byte for byte.

GPTQ and AWQ: golden layers packed and dequantized by AutoGPTQ / GPTQModel / AutoAWQ's own code
(tests/data/make_checkpoint_goldens.py says how). compressed-tensors: the installed package, live.
Dequantized values are compared bit for bit after rounding lowbit's exact float32 to the
reference's float16/bfloat16 (their arithmetic rounds the same exact product once).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import lowbit
from lowbit.errors import FormatError
from lowbit.formats._int32pack import unpack_bits
from lowbit.formats.awq import from_awq, to_awq
from lowbit.formats.compressed_tensors_int import from_compressed_tensors, to_compressed_tensors
from lowbit.formats.gptq import from_gptq, to_gptq

from .harness import gpu_tensor

GOLDEN = Path(__file__).with_name("data") / "checkpoint_goldens.safetensors"


def _cases() -> list[dict]:
    with safe_open(str(GOLDEN), "np") as f:
        return json.loads(f.metadata()["cases"])


def _tensors(name: str) -> dict[str, np.ndarray]:
    with safe_open(str(GOLDEN), "np") as f:
        return {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert a.shape == b.shape and a.dtype.itemsize == b.dtype.itemsize, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: {int((a.view(np.uint8) != b.view(np.uint8)).sum())} bytes differ"


def _decoded_f16(q: lowbit.QTensor, backend: str) -> np.ndarray:
    if backend == "cpu":
        return lowbit.decode(q, backend="cpu").astype(np.float16)
    qg = lowbit.QTensor(gpu_tensor(q.data), {k: gpu_tensor(v) for k, v in q.aux.items()}, q.shape, q.codec)
    return lowbit.decode(qg, backend="gpu").numpy().astype(np.float16)


GPTQ = [c for c in _cases() if c["kind"] == "gptq"]
AWQ = [c for c in _cases() if c["kind"] == "awq"]


@pytest.mark.parametrize("case", GPTQ, ids=[c["name"] for c in GPTQ])
def test_gptq_reads_and_writes_autogptq_layers(case: dict) -> None:
    t = _tensors(case["name"])
    b, g = case["bits"], case["group_size"]
    q = from_gptq(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits=b, group_size=g)
    assert q.shape == (case["N"], case["K"]) and q.codec.act_order == case["act_order"]
    _same(unpack_bits(q.data, b, case["K"]).astype(np.uint8), t["codes"], "codes")
    _same(q.aux["scale"], t["scales_src"].T, "scales")
    _same(q.aux["zero"], t["zeros"].T, "zero points")
    for be in ("cpu", "gpu"):  # AutoGPTQ's torch dequantizer, bit for bit
        _same(_decoded_f16(q, be), t["dequant"], f"decoded on {be} vs AutoGPTQ")
    back = to_gptq(q)  # our writer gives AutoGPTQ's packer's bytes
    for k in ("qweight", "qzeros", "scales", "g_idx"):
        _same(back[k], t[k], f"to_gptq {k}")
    if "qzeros_v2" in t:  # GPTQModel's v1 -> v2 conversion
        q2 = from_gptq(t["qweight"], t["qzeros_v2"], t["scales"], t["g_idx"], bits=b, group_size=g,
                       checkpoint_format="gptq_v2")
        _same(q2.aux["zero"], q.aux["zero"], "v2 zero points")
        _same(to_gptq(q2, checkpoint_format="gptq_v2")["qzeros"], t["qzeros_v2"], "to_gptq v2 qzeros")


@pytest.mark.parametrize("case", AWQ, ids=[c["name"] for c in AWQ])
def test_awq_reads_and_writes_autoawq_layers(case: dict) -> None:
    t = _tensors(case["name"])
    q = from_awq(t["qweight"], t["qzeros"], t["scales"], group_size=case["group_size"])
    _same(unpack_bits(q.data, 4, case["K"]).astype(np.uint8), t["codes"], "codes")
    _same(q.aux["zero"], t["zeros"].T, "zero points")
    for be in ("cpu", "gpu"):
        _same(_decoded_f16(q, be), t["dequant"], f"decoded on {be} vs AutoAWQ dequantize_gemm")
    back = to_awq(q)
    for k in ("qweight", "qzeros", "scales"):
        _same(back[k], t[k], f"to_awq {k}")


def test_our_encodings_survive_the_checkpoint_layouts() -> None:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    for cfg, fmt in [({"bits": 4, "group_size": 32}, "gptq_v2"), ({"bits": 4, "group_size": 64, "symmetric": True}, "gptq"),
                     ({"bits": 3, "group_size": 32}, "gptq_v2"), ({"bits": 8, "group_size": None}, "gptq_v2")]:
        q = lowbit.encode(w, "int", **cfg)
        ck = to_gptq(q, checkpoint_format=fmt)
        q2 = from_gptq(**ck, bits=cfg["bits"], group_size=cfg["group_size"] or -1, sym=cfg.get("symmetric", False),
                       checkpoint_format=fmt)
        assert q2.codec == q.codec
        _same(q2.data, q.data, f"{cfg} data")
        for k in q.aux:
            _same(q2.aux[k], q.aux[k], f"{cfg} aux {k}")
    q = lowbit.encode(w, "int", bits=4, group_size=32)
    _same(from_awq(**to_awq(q), group_size=32).data, q.data, "awq round trip")
    w[:, :32] = np.abs(w[:, :32])  # an all-positive group: zero point 0
    q = lowbit.encode(w, "int", bits=4, group_size=32)
    with pytest.raises(FormatError, match="gptq_v2"):
        to_gptq(q, checkpoint_format="gptq")
    with pytest.raises(FormatError, match="sym=True"):
        from_gptq(**to_gptq(q, checkpoint_format="gptq_v2"), bits=4, group_size=32, sym=True, checkpoint_format="gptq_v2")


# ---- compressed-tensors, live -------------------------------------------------------------------

ct = pytest.importorskip("compressed_tensors")  # in the test extra; the import only guards odd installs


def _scheme(bits: int, symmetric: bool, strategy: str, group_size: int | None):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy=strategy, group_size=group_size)
    return QuantizationScheme(targets=["Linear"], weights=args)


CT_CASES = [(4, True, "group", 32, torch.bfloat16), (4, False, "group", 64, torch.float16),
            (8, True, "channel", None, torch.bfloat16), (8, False, "group", 128, torch.float32),
            (3, False, "group", 32, torch.float16)]


@pytest.mark.parametrize("bits,symmetric,strategy,group_size,dtype", CT_CASES)
def test_compressed_tensors_pack_quantized(bits, symmetric, strategy, group_size, dtype) -> None:
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    rng = np.random.default_rng(bits * 100 + (group_size or 0))
    N, K = 64, 256
    ng = 1 if strategy == "channel" else K // group_size
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    scale = torch.from_numpy(rng.uniform(0.001, 0.01, (N, ng)).astype(np.float32)).to(dtype)
    zp = None if symmetric else torch.from_numpy(rng.integers(lo, hi + 1, (N, ng)).astype(np.int8))
    gi = np.arange(K) // (group_size or K)
    codes = rng.integers(lo, hi + 1, (N, K))
    w = ((torch.from_numpy(codes).float() - (0 if zp is None else zp.float()[:, gi])) * scale.float()[:, gi]).to(dtype)
    scheme = _scheme(bits, symmetric, strategy, group_size)
    sd = {"weight": w, "weight_scale": scale}
    if zp is not None:
        sd["weight_zero_point"] = zp
    comp = PackedQuantizationCompressor.compress(sd, scheme)  # their writer
    ref = PackedQuantizationCompressor.decompress(dict(comp), scheme)["weight"]  # their reader
    q = from_compressed_tensors(**{k: v for k, v in comp.items() if k.startswith("weight_")}, num_bits=bits,
                                group_size=group_size, strategy=strategy)
    assert q.codec.symmetric == symmetric
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    their_codes = unpack_from_int32(comp["weight_packed"], bits, torch.Size([N, K])).numpy().astype(np.int64)
    _same(unpack_bits(q.data, bits, K).astype(np.int64) - (1 << (bits - 1)), their_codes, "codes")
    if dtype != torch.bfloat16:  # the float weight held the codes exactly: their quantizer found them
        _same(their_codes, codes, "codes vs source")
    for be in ("cpu", "gpu"):
        y = _decoded_f16(q, be) if dtype == torch.float16 else None
        if be == "cpu":
            yt = torch.from_numpy(lowbit.decode(q, backend="cpu")).to(dtype)
        else:
            qg = lowbit.QTensor(gpu_tensor(q.data), {k: gpu_tensor(v) for k, v in q.aux.items()}, q.shape, q.codec)
            yt = lowbit.decode(qg, backend="gpu").cpu().to(dtype)
        assert torch.equal(yt.view(torch.int16 if dtype != torch.float32 else torch.int32),
                           ref.view(torch.int16 if dtype != torch.float32 else torch.int32)), f"decode vs compressed-tensors on {be}"
        if y is not None:
            _same(y, ref.numpy(), f"float16 decode on {be}")
    back = to_compressed_tensors(q)  # our writer gives their packer's bytes
    _same(back["weight_packed"], comp["weight_packed"].numpy(), "weight_packed")
    if zp is not None:
        _same(back["weight_zero_point"], pack_to_int32(zp, bits, packed_dim=0).numpy(), "weight_zero_point")
    sc_ref = comp["weight_scale"]
    sc_ref = sc_ref.view(torch.int16).numpy() if sc_ref.dtype == torch.bfloat16 else sc_ref.numpy()
    _same(back["weight_scale"], sc_ref, "weight_scale")
