"""bitsandbytes NF4 / FP4 against bitsandbytes ≥ 0.50 on the CPU, bit for bit.

* packed bytes (first element in the high nibble), float32 absmax, and with
  ``double_quant=True`` the 8-bit nested absmax codes, the nested float32 maxima and the offset,
  plus ``dequantize_4bit``'s values: every blocksize 32 … 4096, both quant types, on 2**18–2**20
  values (gaussian rows of different magnitudes, exact table midpoints, all-zero blocks, fp32
  subnormal blocks, one outlier per block);
* the nested offset: bitsandbytes takes ``torch.mean`` (its summation order depends on the CPU),
  lowbit the correctly rounded mean by default, and ``nested_offset=`` reproduces bitsandbytes';
* the code tables and the 8-bit dynamic map equal bitsandbytes' own, and every
  (nested code × element code) pair decodes like ``dequantize_4bit`` on both backends.

On machines where bitsandbytes decodes FP4 code 8 to +0.0 (its CPU kernel is chosen at run time;
``lowbit.tools.oracle_versions.BNB_FP4_CODE8_SIGN``) lowbit keeps the format's -0.0 there, and the
comparisons allow exactly that sign of zero (see ``blockscaled_oracles.bnb_like_lowbit_zero_sign``).
"""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.codecs import bnb as lb
from lowbit.tools import blockscaled_oracles as B
from lowbit.tools.oracle_versions import BNB_FP4_CODE8_SIGN

from .harness import assert_same_bits, assert_same_bytes, gpu_tensor

QTYPES = {"nf4": "nf4", "fp4_bnb": "fp4"}
BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]



def bnb_inputs(codec: lowbit.Codec, n: int, seed: int) -> np.ndarray:
    bs = codec.blocksize
    rng = np.random.default_rng(seed)
    nb = n // bs
    x = (rng.standard_normal((nb, bs)) * np.exp(rng.normal(0, 4, (nb, 1)))).astype(np.float32)
    T = np.sort(codec.table.astype(np.float32))
    mids = ((T[1:] + T[:-1]) / np.float32(2)).astype(np.float32)
    k = max(1, nb // 16)
    p = rng.permutation(nb)
    a = np.exp2(rng.integers(-10, 10, (k, 1))).astype(np.float32)
    ties = rng.choice(mids, (k, bs)) * a
    ties[:, 0] = a[:, 0]
    x[p[:k]] = ties                                                   # midpoints at a power-of-two absmax
    x[p[k:2 * k]] = 0.0                                               # all-zero blocks
    x[p[2 * k:3 * k]] = (rng.standard_normal((k, bs)) * 2.0**-140).astype(np.float32)  # fp32 subnormals
    o = x[p[3 * k:4 * k]]
    o[:, 3] = 1e6
    x[p[3 * k:4 * k]] = o                                             # one outlier per block
    return x.reshape(-1, max(1024, bs))


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
@pytest.mark.parametrize("codec_id", list(QTYPES))
def test_bnb_equals_bitsandbytes(codec_id: str, blocksize: int, double_quant: bool) -> None:
    codec = lowbit.get_codec(codec_id, blocksize=blocksize, double_quant=double_quant)
    n = 2**20 if blocksize == 64 else 2**18
    x = bnb_inputs(codec, n, seed=blocksize * 2 + double_quant)
    want, aux, want_y = B.bnb_4bit(x, QTYPES[codec_id], blocksize, double_quant)
    kw = {"nested_offset": aux["nested_offset"]} if double_quant else {}
    q = codec.encode(x, **kw)
    assert_same_bytes(q.data, want, codec, "packed bytes and absmax vs bitsandbytes quantize_4bit")
    for k, a in aux.items():
        assert_same_bits(q.aux[k], a, codec, f"{k} vs bitsandbytes")
    y = codec.decode(q)
    assert_same_bits(y, B.bnb_like_lowbit_zero_sign(y, want_y, codec.codec_id), codec, "decode vs bitsandbytes dequantize_4bit")
    if double_quant:
        assert aux["nested_absmax"].size == -(-(n // blocksize) // 256)


def test_default_nested_offset_is_the_exact_mean() -> None:
    codec = lowbit.get_codec("nf4", double_quant=True)
    x = bnb_inputs(codec, 2**16, seed=3)
    _, aux, _ = B.bnb_4bit(x, "nf4", 64, True)
    q = codec.encode(x)
    a = np.abs(x.reshape(-1, 64)).max(axis=1).astype(np.float64)
    import math

    assert q.aux["nested_offset"] == np.float32(math.fsum(a) / a.size)
    # bitsandbytes' float32 torch.mean is within a few ulps of it
    d = abs(int(np.float32(q.aux["nested_offset"]).view(np.int32)) - int(np.float32(aux["nested_offset"]).view(np.int32)))
    assert d <= 16


def test_tables_equal_bitsandbytes() -> None:
    import bitsandbytes.functional as F
    import torch

    dyn = F.create_dynamic_map(signed=True).numpy().astype(np.float32)
    assert_same_bits(lb.dynamic_map(), np.sort(dyn), lowbit.get_codec("nf4"), "dynamic map")
    # every 4-bit code at absmax 1, through bitsandbytes' own decoder (fp4's code 8 is -0 there)
    codes = np.arange(16, dtype=np.uint8)
    packed = torch.from_numpy(((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)).reshape(-1, 1)
    for cid, qt in QTYPES.items():
        st = F.QuantState(absmax=torch.ones(1), shape=torch.Size([1, 64]), code=None, blocksize=64, quant_type=qt,
                          dtype=torch.float32)
        full = torch.cat([packed] * 4)
        y = F.dequantize_4bit(full, st).numpy().reshape(-1)[:16]
        table = lowbit.codec_class(cid).table.copy()
        if cid == "fp4_bnb" and BNB_FP4_CODE8_SIGN.present():
            assert np.signbit(table[8]) and table[8] == 0 and not np.signbit(y[8]) and y[8] == 0
            table[8] = 0.0  # the only entry allowed to differ, and only in the sign of zero
        assert_same_bits(y, table, lowbit.get_codec(cid), "table vs bitsandbytes decode")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize("codec_id", list(QTYPES))
def test_every_nested_and_element_code_decodes(codec_id: str, backend: str) -> None:
    """Double-quantized blocks with every absmax code 0…255 (two nested blocks of 256 with
    different maxima) × every element code, against bitsandbytes' ``dequantize_4bit`` fed the
    same state."""
    import bitsandbytes.functional as F
    import torch

    bs = 32
    codec = lowbit.get_codec(codec_id, blocksize=bs, double_quant=True)
    nb = 512
    acodes = np.tile(np.arange(256, dtype=np.uint8), 2)
    el = np.tile(np.arange(16, dtype=np.uint8), (nb, bs // 16))
    packed = ((el[:, 0::2] << 4) | el[:, 1::2]).astype(np.uint8)
    nested = np.array([3.25, 1e-3], dtype=np.float32)
    offset = np.float32(0.71)
    st2 = F.QuantState(absmax=torch.from_numpy(nested), code=F.create_dynamic_map(signed=True), blocksize=256,
                       dtype=torch.float32)
    st = F.QuantState(absmax=torch.from_numpy(acodes), shape=torch.Size([nb * bs]), code=None, blocksize=bs,
                      quant_type=QTYPES[codec_id], dtype=torch.float32, offset=torch.tensor(offset), state2=st2)
    want = F.dequantize_4bit(torch.from_numpy(packed.reshape(-1, 1)), st).numpy().reshape(16, -1)
    data = B.bnb_assemble(packed.reshape(-1), acodes, bs, (16, nb * bs // 16))
    aux = {"nested_absmax": nested, "nested_offset": np.array(offset)}
    if backend == "gpu":
        data, aux = gpu_tensor(data), {k: gpu_tensor(np.asarray(v)) for k, v in aux.items()}
    y = lowbit._arrays.to_numpy(codec.decode_bytes(data, (16, nb * bs // 16), aux=aux, backend=backend))
    assert_same_bits(y, B.bnb_like_lowbit_zero_sign(y, want, codec.codec_id), codec, f"every nested x element code on {backend}")


@pytest.mark.parametrize("backend", ["cpu", "gpu"], ids=["numba", "triton"])  # a bare "gpu" id means CUDA-only
def test_subnormal_nested_maximum_like_bitsandbytes(backend: str) -> None:
    """absmax values 1e-40 apart: the nested max is an fp32 subnormal, 1/max overflows and the
    block equal to the offset gives 0 * Inf = NaN, which bitsandbytes writes as code 0."""
    x = np.zeros((3, 64), np.float32)
    x[:, 0] = [1e-40, 2e-40, 1.5e-40]
    want, aux, want_y = B.bnb_4bit(x, "nf4", 64, True)
    codec = lowbit.get_codec("nf4", double_quant=True)
    q = codec.encode(x if backend == "cpu" else gpu_tensor(x), backend=backend)
    assert_same_bytes(q.data, want, codec, f"{backend} encode vs bitsandbytes")
    assert_same_bits(q.aux["nested_absmax"], aux["nested_absmax"], codec, "nested absmax")
    assert_same_bits(codec.decode(q, backend=backend), want_y, codec, "decode vs bitsandbytes")


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_to_bitsandbytes_matches_a_linear4bit_state_dict(quant_type: str) -> None:
    """The arrays bitsandbytes' own ``Linear4bit`` writes to its state dict (transformers'
    checkpoint layout), and the OCP nibble order helper."""
    import json

    import bitsandbytes as bnb
    import torch

    from lowbit.codecs.bnb import swap_nibbles, to_bitsandbytes

    rng = np.random.default_rng(31)
    w = rng.standard_normal((32, 128)).astype(np.float32)
    lin = bnb.nn.Linear4bit(128, 32, bias=False, compress_statistics=True, quant_type=quant_type,
                            compute_dtype=torch.float32)
    lin.weight = bnb.nn.Params4bit(torch.from_numpy(w), requires_grad=False, compress_statistics=True,
                                   quant_type=quant_type)
    lin.weight = lin.weight._quantize("cpu") if hasattr(lin.weight, "_quantize") else lin.weight
    sd = {k: v for k, v in lin.state_dict().items()}
    blob = json.loads(bytes(sd[f"weight.quant_state.bitsandbytes__{quant_type}"].numpy()).decode())
    cid = "nf4" if quant_type == "nf4" else "fp4_bnb"
    q = lowbit.encode(w, cid, double_quant=True, nested_offset=np.float32(blob["nested_offset"]))
    t = to_bitsandbytes(q)
    assert np.array_equal(t["weight"], sd["weight"].numpy())
    assert np.array_equal(t["absmax"], sd["weight.absmax"].numpy())
    assert np.array_equal(t["nested_absmax"].view(np.uint32), sd["weight.nested_absmax"].numpy().view(np.uint32))
    assert np.array_equal(t["quant_map"], sd["weight.quant_map"].numpy())   # values (fp4: ±0 merged)
    assert np.array_equal(t["nested_quant_map"], np.sort(sd["weight.nested_quant_map"].numpy()))
    for k in ("quant_type", "blocksize", "shape", "nested_blocksize"):
        assert t["quant_state"][k] == blob[k]
    # OCP order: the first element in the low nibble
    ocp = swap_nibbles(t["weight"].reshape(-1))
    codes = np.stack([ocp & 0xF, ocp >> 4], -1).reshape(-1)
    bnb_codes = np.stack([t["weight"].reshape(-1) >> 4, t["weight"].reshape(-1) & 0xF], -1).reshape(-1)
    assert np.array_equal(codes, bnb_codes)
