"""NVFP4 / NVINT4 against torchao's NVFP4 path and compressed-tensors' NVFP4 formula, bit for bit.

* ``recipe="torchao"``: bytes, block scales, the global scale and decoded values equal torchao
  0.18's ``nvfp4_quantize`` / ``NVFP4Tensor.dequantize`` on 2**20 values (rows spread over
  e^N(0, 3), random finite bit patterns, all-zero blocks, exact E2M1 ties, signed zeros and
  underflow), with the global scale from the amax and with given ones;
* ``recipe="compressed_tensors"``: the same against compressed-tensors 0.20's
  ``generate_gparam`` + ``calculate_qparams`` + ``quantize`` + ``pack_fp4_to_uint8`` +
  ``dequantize`` (its divisor convention);
* NVINT4 and the UE5M3 scale (no peer has them) against :func:`nv_reference`, which is first
  shown to equal torchao on the format torchao has;
* every (scale byte × element code) pair decodes as element × (g·scale) (or scale / g) on both
  backends; the ModelOpt ⇄ compressed-tensors converters keep every code and scale byte.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.codecs import nvfp4 as nv
from lowbit.tools import blockscaled_oracles as B

from .harness import assert_same_bits, assert_same_bytes, gpu_tensor

N_ROWS, K = 1024, 1024


def nv_inputs(seed: int, n_rows: int = N_ROWS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_rows, K)) * np.exp(rng.normal(0, 3, (n_rows, 1)))).astype(np.float32)
    blocks = x.reshape(-1, 16)
    nb = blocks.shape[0]
    pick = rng.permutation(nb)
    m = nb // 16
    blocks[pick[:m]] = 0.0                                                            # all-zero blocks
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    s = np.exp2(rng.integers(-20, 20, (m, 1))).astype(np.float32)
    ties = rng.choice(np.concatenate([mids, -mids]), (m, 16)) * s
    ties[:, 0] = 6 * s[:, 0]
    blocks[pick[m:2 * m]] = ties                                                     # exact ties at a pinned max
    bits = rng.integers(0, 2**32, (m, 16), dtype=np.uint64).astype(np.uint32).view(np.float32)
    blocks[pick[2 * m:3 * m]] = np.where(np.isfinite(bits), bits, 1.0) * np.float32(2.0**-100)  # random patterns
    sz = blocks[pick[3 * m:4 * m]]
    sz[:, :4] = [0.0, -0.0, 1e-30, -1e-30]                                           # signed zeros, underflow
    blocks[pick[3 * m:4 * m]] = sz
    return x


@pytest.mark.parametrize("global_scale", [None, 1.0, 2.0**-10, 3.7e-3, 1e-30])
def test_nvfp4_equals_torchao(global_scale: float | None) -> None:
    codec = lowbit.get_codec("nvfp4")
    x = nv_inputs(7 if global_scale is None else int(abs(np.log2(global_scale))) + 100)
    want, g, want_y = B.torchao_nvfp4(x, global_scale)
    q = codec.encode(x) if global_scale is None else codec.encode(x, global_scale=global_scale)
    assert np.float32(q.aux["global_scale"]) == g
    assert_same_bytes(q.data, want, codec, "encode vs torchao nvfp4_quantize")
    assert_same_bits(codec.decode(q), want_y, codec, "decode vs torchao NVFP4Tensor.dequantize")
    # the torch-ops reference of the recipe agrees with torchao too (vouches for it below)
    ref, g2, ref_y = B.nv_reference(x, global_scale=global_scale)
    assert g2 == g
    assert_same_bytes(ref, want, codec, "nv_reference vs torchao")
    assert_same_bits(ref_y, want_y, codec, "nv_reference decode vs torchao")


def test_nvfp4_equals_compressed_tensors() -> None:
    codec = lowbit.get_codec("nvfp4", recipe="compressed_tensors")
    x = nv_inputs(8, 512)
    want, g, want_y = B.compressed_tensors_nvfp4(x)
    q = codec.encode(x)
    assert np.float32(q.aux["global_scale"]) == g
    assert_same_bytes(q.data, want, codec, "encode vs compressed-tensors")
    assert_same_bits(codec.decode(q), want_y, codec, "decode vs compressed-tensors dequantize")


def test_nvfp4_gpu_backend_equals_torchao_and_compressed_tensors() -> None:
    x = nv_inputs(9, 32)
    for recipe, oracle in (("torchao", B.torchao_nvfp4), ("compressed_tensors", B.compressed_tensors_nvfp4)):
        codec = lowbit.get_codec("nvfp4", recipe=recipe)
        want, g, want_y = oracle(x)
        q = codec.encode(gpu_tensor(x), backend="gpu")
        assert np.float32(lowbit._arrays.to_numpy(q.aux["global_scale"])) == g
        assert_same_bytes(q.data, want, codec, f"gpu encode vs {recipe}")
        assert_same_bits(codec.decode(q, backend="gpu"), want_y, codec, f"gpu decode vs {recipe}")


@pytest.mark.parametrize(("codec_id", "element", "scale_format"),
                         [("nvint4", "int4", "ue4m3"), ("nvint4", "int4", "ue5m3"), ("nvfp4", "e2m1", "ue5m3")])
@pytest.mark.parametrize("global_scale", [None, 0.37])
def test_no_peer_formats_equal_reference(codec_id: str, element: str, scale_format: str,
                                         global_scale: float | None) -> None:
    codec = lowbit.get_codec(codec_id, scale_format=scale_format)
    x = nv_inputs(10, 256)
    want, g, want_y = B.nv_reference(x, element, scale_format, global_scale)
    q = codec.encode(x) if global_scale is None else codec.encode(x, global_scale=global_scale)
    assert np.float32(q.aux["global_scale"]) == g
    assert_same_bytes(q.data, want, codec, "encode vs nv_reference")
    assert_same_bits(codec.decode(q), want_y, codec, "decode vs nv_reference")


def test_checkpoint_conventions_keep_the_codes() -> None:
    x = nv_inputs(12, 16)
    q = lowbit.encode(x, "nvfp4")                                    # multiplier convention
    mo = nv.to_modelopt(q)
    ct = nv.to_compressed_tensors(q)
    assert np.array_equal(mo["weight"], ct["weight_packed"]) and np.array_equal(mo["weight_scale"], ct["weight_scale"])
    assert mo["weight_scale_2"] == q.aux["global_scale"]
    assert ct["weight_global_scale"][0] == np.float32(1) / np.float32(q.aux["global_scale"])
    # ModelOpt's tensors are torchao's layout: packed [out, in/2] and E4M3 scales [out, in/16]
    want, _, _ = B.torchao_nvfp4(x)
    blocks = want.reshape(16, -1, 9)
    assert np.array_equal(mo["weight"], blocks[..., 1:].reshape(16, -1))
    assert np.array_equal(mo["weight_scale"], blocks[..., 0])
    back = nv.from_modelopt(**mo)
    assert_same_bytes(back.data, q.data, q.codec, "from_modelopt(to_modelopt(q))")
    assert_same_bits(lowbit.decode(back), lowbit.decode(q), q.codec, "decode after the ModelOpt round trip")
    qc = nv.from_compressed_tensors(**ct)
    assert qc.codec.recipe == "compressed_tensors"
    assert_same_bytes(qc.data, q.data, q.codec, "from_compressed_tensors")
    # decoding through the reciprocal moves a value by at most one float32 ulp
    y, yc = lowbit.decode(q), lowbit.decode(qc)
    assert (np.abs(y.view(np.int32).astype(np.int64) - yc.view(np.int32).astype(np.int64)) <= 1).all()
    # compressed-tensors' own checkpoint of the same tensor has the same codes and scale bytes
    want_ct, g_ct, _ = B.compressed_tensors_nvfp4(x)
    qct = lowbit.encode(x, "nvfp4", recipe="compressed_tensors")
    assert_same_bytes(qct.data, want_ct, qct.codec, "compressed-tensors recipe")


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize("recipe", ["torchao", "compressed_tensors"])
def test_every_scale_and_element_code_decodes(recipe: str, backend: str) -> None:
    """256 scale bytes x 16 codes: value = e2m1 × fl(g·s) (multiplier) or e2m1 × fl(s/g)
    (divisor); UE4M3 bytes 0x7F and up (the NaN pattern; the sign bit is not part of UE4M3) give NaN."""
    import ml_dtypes

    codec = lowbit.get_codec("nvfp4", recipe=recipe)
    g = np.float32(0.0371)
    e2m1 = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    sv = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    sv[0x7F:] = np.nan
    codes = np.arange(16)
    packed = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    data = np.concatenate([np.arange(256, dtype=np.uint8)[:, None], np.broadcast_to(packed, (256, 8))], axis=1)
    with np.errstate(all="ignore"):
        m = (sv * g if recipe == "torchao" else sv / g).astype(np.float32)
        want = (e2m1[None, :] * m[:, None]).astype(np.float32)
    y = lowbit._arrays.to_numpy(codec.decode_bytes(data if backend == "cpu" else gpu_tensor(data), (256, 16),
                                                   aux={"global_scale": np.array(g)}, backend=backend))
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(y), nan)
    assert_same_bits(np.where(nan, 0, y).astype(np.float32), np.where(nan, 0, want).astype(np.float32), codec,
                     f"every scale x element code on {backend}")


def test_tiny_tensor_multiplier_saturates_like_transformer_engine() -> None:
    """amax below 2688 * 2**-126: (1/g)/s can overflow float32. torchao 0.18 then multiplies by
    Inf (NaN codes, or ±6 where 0 belongs); lowbit takes TransformerEngine's min(., FLT_MAX):
    finite, and at 1e-36 as accurate as at any scale. Both backends alike."""
    codec = lowbit.get_codec("nvfp4")
    for mag in (1e-44, 1e-36):
        x = (np.random.default_rng(4).standard_normal((2, 32)) * mag).astype(np.float32)
        x[0, :16] *= np.float32(1e-3)
        q = codec.encode(x)
        y = codec.decode(q)
        assert np.isfinite(y).all()
        qg = codec.encode(gpu_tensor(x), backend="gpu")
        assert_same_bytes(qg.data, q.data, codec, "gpu vs cpu on a tiny tensor")
        _, _, ty = B.torchao_nvfp4(x)
        if mag == 1e-44:
            assert np.isnan(ty).any()                                    # the peer's NaNs, pinned
        else:
            assert np.abs(y - x).max() <= 0.25 * np.abs(x).max()
            assert np.abs(ty - x).max() > 0.9 * np.abs(x).max()         # the peer's ±6s, pinned
