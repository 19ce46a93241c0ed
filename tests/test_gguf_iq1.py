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
