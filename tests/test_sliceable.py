"""sliceable_int: slices equal an independent re-slice, decode the paper's way on both backends,
and a symmetric master's slices are plain int codes."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.errors import ConfigError
from lowbit.tools.oracles import pack_codes

from . import harness


def _reslice(codes8: np.ndarray, bits: int) -> np.ndarray:
    """An independent re-slice: round(q / 2**(8-bits)) with halves rounded up, in floats, clamped."""
    d = 2.0 ** (8 - bits)
    return np.minimum(np.floor(codes8.astype(np.float64) / d + 0.5), 2**bits - 1).astype(np.int64)


@pytest.mark.parametrize("cfg", [{"group_size": 16}, {"group_size": 8, "symmetric": True},
                                 {"group_size": 3, "axis": -2, "scale_dtype": "float32"}])
@pytest.mark.parametrize("bits", [4, 2, 3, 1, 8])
def test_slices_equal_an_independent_reslice(cfg: dict, bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((2, 6, 32)) * np.exp2(rng.integers(-6, 6, (2, 6, 1)))).astype(np.float32)
    c = lowbit.get_codec("sliceable_int", **cfg)
    q8 = c.encode(x)
    qs = q8.slice(bits)
    assert qs.codec == lowbit.get_codec("sliceable_int", **{**cfg, "bits": bits})
    t = _reslice(q8.data.astype(np.int64), bits)
    assert np.array_equal(qs.data, pack_codes(t, bits)), "sliced bytes"
    s, z = c.expand_params(q8)  # float64 per element (the master's)
    want = ((t * 2.0 ** (8 - bits) - z) * s).astype(np.float32)
    for be in ("cpu", "gpu"):
        qq = qs if be == "cpu" else lowbit.QTensor(harness.gpu_tensor(qs.data), {k: harness.gpu_tensor(v) for k, v in qs.aux.items()}, qs.shape, qs.codec)
        y = lowbit.decode(qq, backend=be)
        harness.assert_same_bits(np.asarray(y), want, qs.codec, f"decoded {bits}-bit slice on {be}")
    # sliced on the gpu backend too (torch tensors): same bytes
    qg = c.encode(harness.gpu_tensor(x), backend="gpu").slice(bits)
    harness.assert_same_bytes(qg.data, qs.data, qs.codec, "slice of a gpu-encoded master")
    harness.check_decode_total(qs.codec, (2, 3, 16), seed=bits)


def test_symmetric_slices_are_plain_int_codes() -> None:
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    q8 = lowbit.get_codec("sliceable_int", group_size=32, symmetric=True, scale_dtype="float32").encode(x)
    for bits in (4, 2):
        qs = q8.slice(bits)
        plain = lowbit.get_codec("int", bits=bits, group_size=32, symmetric=True, scale_dtype="float32")
        s = (q8.aux["scale"] * np.float32(2 ** (8 - bits))).astype(np.float32)
        as_int = lowbit.QTensor(qs.data, {"scale": s}, qs.shape, plain)
        assert np.array_equal(lowbit.decode(as_int).view(np.uint32), lowbit.decode(qs).view(np.uint32))


def test_slicing_rules() -> None:
    x = np.ones((2, 16), np.float32)
    q8 = lowbit.get_codec("sliceable_int", group_size=16).encode(x)
    with pytest.raises(ConfigError, match="master"):
        q8.slice(4).slice(2)
    with pytest.raises(ConfigError, match="master width"):
        lowbit.get_codec("sliceable_int", bits=4).encode(x)
    with pytest.raises(ConfigError, match="not sliceable"):
        lowbit.encode(x, "int4").slice(2)
    assert q8.slice(8).data.tobytes() == q8.data.tobytes()
