"""IQ1_S / IQ1_M beyond the registry-wide GGUF tests (tests/test_gguf.py): the corners of ggml's
quantizer that ordinary rows and imatrices rarely reach."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.errors import RangeError
from lowbit.tools.ggml_oracle import GGML

from .test_gguf import rows_for


def _rows() -> np.ndarray:
    """Two rows of each of rows_for's nine kinds, one and two super-blocks long, as rows of 512."""
    a, b, _ = rows_for(lowbit.get_codec("iq1_m"), 11)
    return np.concatenate([a[:18].reshape(-1, 512), b[:18]])


@pytest.mark.parametrize("cid", ["iq1_s", "iq1_m"])
@pytest.mark.parametrize("imp", ["zeros", "half_zeros", "tiny", "huge", "wide"])
def test_extreme_importance_matches_ggml(ggml: GGML, cid: str, imp: str) -> None:
    """All-zero weights (every block skipped), weights whose products underflow (1e-30) or reach
    1e39 in the split sums (1e30; sums of squares overflow to Inf and ggml's comparisons then
    pick what IEEE arithmetic makes them pick), and weights spread over 30 decades."""
    x = _rows()
    rng = np.random.default_rng(1)
    w = {"zeros": np.zeros(512), "half_zeros": np.where(rng.random(512) < 0.5, 0.0, 1.0),
         "tiny": np.full(512, 1e-30), "huge": np.full(512, 1e30),
         "wide": 10.0 ** rng.uniform(-15, 15, 512)}[imp].astype(np.float32)
    got = lowbit.encode(x, cid, importance=w).data
    want = ggml.quantize(x, cid, w)
    bad = np.nonzero((got != want).any(1))[0]
    assert bad.size == 0, f"{cid} {imp}: rows {bad.tolist()} differ from ggml"


@pytest.mark.parametrize("cid", ["iq1_s", "iq1_m"])
def test_equal_values_keep_ggmls_sort_order(ggml: GGML, cid: str) -> None:
    """ggml sorts a block's values with qsort comparing the value only; glibc's merge sort keeps
    equal values in index order, and where the weights differ the split between equal values
    changes the bytes (reversing the order of ties makes these rows differ)."""
    rng = np.random.default_rng(2)
    x = np.repeat(rng.choice([-1.5, -0.25, 0.5, 2.0], (12, 16)), 32, axis=1).astype(np.float32)
    w = (rng.random(512) * 4).astype(np.float32)
    assert np.array_equal(lowbit.encode(x, cid, importance=w).data, ggml.quantize(x, cid, w))


@pytest.mark.parametrize("cid", ["iq1_s", "iq1_m"])
def test_overflowing_importance_is_refused(cid: str) -> None:
    """Weights near 1e36 make a block scale NaN (Inf/Inf); ggml aborts the process there
    (GGML_ASSERT(scale >= 0) in quantize_row_iq1_{s,m}_impl, seen in a subprocess), lowbit raises."""
    x = _rows()
    with pytest.raises(RangeError, match=r"GGML_ASSERT\(scale >= 0\)"):
        lowbit.encode(x, cid, importance=np.full(512, 1e36, np.float32))


def _imatrices(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"zeros": np.zeros(512), "half_zeros": np.where(rng.random(512) < 0.5, 0.0, 1.0),
            "tiny": np.full(512, 1e-30), "huge": np.full(512, 1e30),
            "wide": 10.0 ** rng.uniform(-15, 15, 512)}


@pytest.mark.parametrize("cid", ["iq1_s", "iq1_m"])
def test_gpu_corners_match_ggml_and_cpu(ggml: GGML, cid: str) -> None:
    """The rows and imatrices of test_extreme_importance_matches_ggml, the tied rows of
    test_equal_values_keep_ggmls_sort_order (IQ1_M also without an imatrix) and a row of
    alternating zero sub-blocks, through the Triton encoder: ggml's bytes and the CPU's."""
    pytest.importorskip("triton")
    from .harness import gpu_tensor

    codec = lowbit.get_codec(cid)
    rng = np.random.default_rng(1)
    x = _rows()
    x[0] = np.where(np.repeat(np.arange(16) % 2 == 0, 32), 0.0, rng.standard_normal(512))
    rng2 = np.random.default_rng(2)
    ties = np.repeat(rng2.choice([-1.5, -0.25, 0.5, 2.0], (12, 16)), 32, axis=1).astype(np.float32)
    x = np.concatenate([x, ties]).astype(np.float32)
    imps: dict[str, np.ndarray | None] = {k: v.astype(np.float32) for k, v in _imatrices(rng).items()}
    imps["ties"] = (rng2.random(512) * 4).astype(np.float32)
    if cid == "iq1_m":
        imps["none"] = None
    for name, w in imps.items():
        want = ggml.quantize(x, cid, w)
        got = codec.encode(gpu_tensor(x), backend="gpu", importance=None if w is None else gpu_tensor(w)).data
        got = got.cpu().numpy()
        bad = np.nonzero((got != want).any(1))[0]
        assert bad.size == 0, f"{cid} gpu {name}: rows {bad.tolist()} differ from ggml"
        assert np.array_equal(got, codec.encode(x, backend="cpu", importance=w).data), name


@pytest.mark.parametrize("cid", ["iq1_s", "iq1_m"])
def test_gpu_overflowing_importance_is_refused(cid: str) -> None:
    """The Triton encoder raises where the CPU one does (and ggml aborts), naming the same row."""
    pytest.importorskip("triton")
    from .harness import gpu_tensor

    x = _rows()
    w = np.full(512, 1e36, np.float32)
    codec = lowbit.get_codec(cid)
    with pytest.raises(RangeError, match=r"GGML_ASSERT\(scale >= 0\)") as cpu:
        codec.encode(x, backend="cpu", importance=w)
    with pytest.raises(RangeError, match=r"GGML_ASSERT\(scale >= 0\)") as gpu:
        codec.encode(gpu_tensor(x), backend="gpu", importance=gpu_tensor(w))
    assert str(gpu.value) == str(cpu.value)
