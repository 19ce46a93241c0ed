"""GGUF Triton kernels (``backend="gpu"``) against ggml's own C library and the Numba kernels.

Without CUDA the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
where every operation costs tens of microseconds whatever the tensor width: each case here is one
kernel launch over a few rows that cover the distributions of tests/test_gguf.py (Gaussian,
heavy-tailed, all-zero, constant, one outlier, tiny, huge, mixed scales, positive only). The same
tests run on a CUDA device unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.formats import gguf as G
from lowbit.kernels.registry import has_kernel
from lowbit.tools.ggml_oracle import GGML, GGML_TYPES

from .harness import gpu_tensor
from .test_gguf import rows_for, same_float_bits

triton = pytest.importorskip("triton")
torch = pytest.importorskip("torch")
tl = triton.language

from lowbit.kernels.gpu._ggml import fp16_to_fp32, fp32_to_fp16  # noqa: E402


@triton.jit
def _fp16_kernel(x_ptr, h_ptr, hh_ptr, f_ptr, n, BLOCK: tl.constexpr):
    """fp32_to_fp16 of x into h; fp16_to_fp32 of the halves hh (0..65535) into f."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(h_ptr + i, fp32_to_fp16(tl.load(x_ptr + i, mask=m, other=0.0)), mask=m)
    tl.store(f_ptr + i, fp16_to_fp32(tl.load(hh_ptr + i, mask=i < 65536, other=0)), mask=i < 65536)

LEGACY = sorted(c for c in lowbit.list_codecs() if lowbit.codec_class(c).family == "gguf_legacy")
KQUANTS = sorted(c for c in lowbit.list_codecs() if lowbit.codec_class(c).family == "gguf_kquants")
IQ_CODECS = sorted(c for c in lowbit.list_codecs() if lowbit.codec_class(c).family == "gguf_iq")
GPU_ENCODE = [c for c in LEGACY + KQUANTS + IQ_CODECS
              if has_kernel(lowbit.codec_class(c).family, "gpu", "encode") and lowbit.codec_class(c).gpu_encode]


def test_iq_gpu_encode_flags_match_the_dispatcher() -> None:
    """A grid i-quant claims the GPU backend exactly when the Triton dispatcher has its encoder."""
    from lowbit.kernels.gpu import gguf_iq

    for c in IQ_CODECS:
        cls = lowbit.codec_class(c)
        assert cls.gpu_encode == (c in gguf_iq.ENCODERS), c
        assert ("gpu" in lowbit.get_codec(c).backends()) == cls.gpu_encode, c
    assert set(gguf_iq.ENCODERS) <= set(IQ_CODECS)
#: the grid i-quants, registry codecs or not: their Triton decoder is tested directly
GRID_IDS = ["iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s"]


def sample_rows(codec: lowbit.Codec, seed: int, blocks: int) -> np.ndarray:
    """Two rows of each of the nine kinds of rows_for(), ``blocks`` blocks long (18 rows)."""
    by_len = {x.shape[1]: x for x in rows_for(codec, seed)}
    x = by_len[blocks * codec.block_size]
    return np.ascontiguousarray(np.concatenate([x[k::9][:2] for k in range(9)]))


def _check_bytes(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bad = np.nonzero((got != want).any(1))[0]
    assert bad.size == 0, f"{what}: rows {bad.tolist()} differ, first: {got[bad[0]].tobytes().hex()} != {want[bad[0]].tobytes().hex()}"


def _check_floats(got: np.ndarray, want: np.ndarray, what: str) -> None:
    ok = same_float_bits(got, want)
    assert ok.all(), f"{what}: differs at {np.argwhere(~ok)[0].tolist()}: {got[~ok][0]!r} != {want[~ok][0]!r}"


@pytest.mark.parametrize("cid", GPU_ENCODE)
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["ref", "imatrix"])
def test_gpu_encode_and_decode_match_ggml_and_cpu(ggml: GGML, cid: str, with_imatrix: bool) -> None:
    codec = lowbit.get_codec(cid)
    blocks = 2 if codec.block_size <= 64 else 1
    x = sample_rows(codec, GGML_TYPES[cid] * 2 + with_imatrix, blocks)
    K = x.shape[1]
    imp = (np.random.default_rng(K).random(K) ** 3 * 10).astype(np.float32) if with_imatrix else None
    if imp is None and codec.requires_importance:
        pytest.skip(f"{cid}: ggml quantizes it only with an imatrix (the refusal is tested in test_gguf.py)")
    want = ggml.quantize(x, cid, imp)
    qg = codec.encode(gpu_tensor(x), backend="gpu", importance=None if imp is None else gpu_tensor(imp))
    assert isinstance(qg.data, torch.Tensor)
    got = qg.data.cpu().numpy()
    _check_bytes(got, want, f"{cid} gpu encode vs ggml")
    _check_bytes(got, codec.encode(x, backend="cpu", importance=imp).data, f"{cid} gpu vs cpu encode")
    y = codec.decode(qg, backend="gpu").cpu().numpy()
    _check_floats(y, ggml.dequantize(want, cid, K), f"{cid} gpu decode vs ggml")


@pytest.mark.parametrize("cid", LEGACY + KQUANTS + GRID_IDS)
def test_gpu_decode_of_random_bytes_matches_ggml(ggml: GGML, cid: str) -> None:
    """Totality and bits: any bytes (NaN/Inf scales included) decode like dequantize_row_*."""
    bs, ts = next((b, t) for (name, b, t) in G.BLOCK.values() if name == cid)
    rng = np.random.default_rng(1000 + GGML_TYPES[cid])
    raw = rng.integers(0, 256, (12, 3 * ts), dtype=np.uint8)
    want = ggml.dequantize(raw, cid, 3 * bs)
    if cid in GRID_IDS:
        from lowbit.kernels.gpu.gguf_iq import decode

        yt = torch.empty((12, 3 * bs), dtype=torch.float32, device=gpu_tensor(raw).device)
        decode(cid, gpu_tensor(raw), yt)
        y = yt.cpu().numpy()
    else:
        y = lowbit.get_codec(cid).decode_bytes(gpu_tensor(raw), (12, 3 * bs), backend="gpu").cpu().numpy()
    _check_floats(y, want, f"{cid} gpu decode of random bytes vs ggml")
    # the reader's entry point with numpy bytes and backend="gpu" gives the same bits
    _check_floats(np.asarray(G.dequantize(raw, cid, (12, 3 * bs), backend="gpu")), want, f"{cid} via gguf.dequantize")


@pytest.mark.parametrize("cid", KQUANTS)
def test_gpu_decode_of_encoded_kquants_matches_ggml(ggml: GGML, cid: str) -> None:
    """Decoding ggml's own blocks of ordinary rows (the random-bytes test mostly sees odd scales)."""
    codec = lowbit.get_codec(cid)
    x = sample_rows(codec, 7, 1)
    raw = ggml.quantize(x, cid)
    y = codec.decode_bytes(gpu_tensor(raw), x.shape, backend="gpu").cpu().numpy()
    _check_floats(y, ggml.dequantize(raw, cid, x.shape[1]), f"{cid} gpu decode vs ggml")


def test_gpu_fp16_conversions_match_ggml(ggml: GGML) -> None:
    """The Triton fp32 -> fp16 rounding (integer bit operations, exact in the interpreter and on a
    GPU) against ggml's GGML_FP32_TO_FP16, on random bit patterns and both edges; and fp16 -> fp32
    back, exactly, for every half (NaN payloads with the quiet bit, as ggml on x86)."""
    rng = np.random.default_rng(6)
    bits = np.concatenate([rng.integers(0, 2**32, 1 << 14, dtype=np.uint64).astype(np.uint32),
                           np.arange(0x33000000, 0x39000000, 9973, dtype=np.uint32),  # the subnormal edge
                           np.arange(0x477F0000, 0x47810000, 31, dtype=np.uint32),    # the overflow edge
                           np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0, 0x80000000], np.uint32)])
    n = max(bits.size, 65536)
    x = np.zeros(n, np.float32)
    x[:bits.size] = bits.view(np.float32)
    h = torch.zeros(n, dtype=torch.int32)
    f = torch.zeros(n, dtype=torch.float32)
    halves = torch.arange(n, dtype=torch.int32)
    xt, ht, ft, hh = (gpu_tensor(a.numpy()) if isinstance(a, torch.Tensor) else gpu_tensor(a) for a in (x, h, f, halves))
    _fp16_kernel[(triton.cdiv(n, 1 << 16),)](xt, ht, hh, ft, n, BLOCK=1 << 16, enable_fp_fusion=False)
    assert np.array_equal(ht.cpu().numpy()[:bits.size].astype(np.uint16), ggml.fp32_to_fp16(x[:bits.size]))
    want = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    got = ft.cpu().numpy()[:65536]
    nan = np.isnan(want)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    # NaN halves keep sign and payload, quiet bit set: sign | 0x7F800000 | m << 13 | 0x400000
    hv = np.arange(65536, dtype=np.uint32)[nan]
    exp_bits = ((hv & 0x8000) << 16) | 0x7F800000 | ((hv & 0x3FF) << 13) | 0x400000
    assert np.array_equal(got[nan].view(np.uint32), exp_bits)


def test_gpu_mxfp4_exponent_near_powers_of_two(ggml: GGML) -> None:
    """floor(log2f(amax)) as libm computes it (amax just below 2**k rounds up for large k), on the GPU."""
    c = lowbit.get_codec("mxfp4_ggml")
    rows = []
    for k in range(-130, 126, 3):
        for ulps in (0, 1, 2, 40):
            a = np.float32(2.0 ** k)
            for _ in range(ulps):
                a = np.nextafter(a, np.float32(0))
            r = np.zeros(32, np.float32)
            r[3] = a
            r[7] = -a / 3
            rows.append(r)
    x = np.asarray(rows, dtype=np.float32)
    got = c.encode(gpu_tensor(x), backend="gpu").data.cpu().numpy()
    _check_bytes(got, ggml.quantize(x, "mxfp4_ggml"), "mxfp4 gpu encode near powers of two")
