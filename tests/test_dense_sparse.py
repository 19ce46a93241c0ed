"""``dense_sparse`` around every codec in the registry (one configuration each, fixed seeds, so
the whole registry stays within the CI budget): the harness checks on the wrapper, idempotence
for every inner codec that decodes an encoded 0 as exactly 0."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit

from . import harness
from .strategies import make_tensor

INNER = [(cid, lowbit.codec_class(cid).examples()[0]) for cid in lowbit.list_codecs() if cid != "dense_sparse"]


def _wrapped(cid: str, cfg: dict) -> lowbit.Codec:
    return lowbit.get_codec("dense_sparse", codec={"id": cid, **cfg}, fraction=0.05)


def _inputs(codec: lowbit.Codec, seed: int) -> np.ndarray:
    inner = codec.inner
    bs = inner.block_size
    K = bs * max(1, -(-24 // bs))
    x = make_tensor(inner, (3, 2, K), "normal", seed)
    rng = np.random.default_rng(seed)
    x.reshape(-1)[rng.integers(0, x.size, 3)] *= 50  # a few outliers
    return x


def _zero_exact(inner: lowbit.Codec, x: np.ndarray) -> bool:
    z = x.copy()
    z.reshape(-1)[::5] = 0.0
    try:
        y = inner.decode(inner.encode(z, backend="cpu"), backend="cpu")
    except lowbit.LowbitError:
        return False
    return bool((y.reshape(-1)[::5] == 0).all())


@pytest.mark.parametrize("cid,cfg", INNER, ids=[c for c, _ in INNER])
def test_dense_sparse_composes(cid: str, cfg: dict) -> None:
    codec = harness.driven(_wrapped(cid, cfg))
    harness.check_config_roundtrip(codec)
    harness.check_layout(codec)
    for seed in (1,):
        x = _inputs(codec, seed)
        harness.check_roundtrip_bound(codec, x)
        harness.check_bits_per_element(codec, x)
        harness.check_cpu_gpu(codec, x)
        q = codec.encode(x, backend="cpu")
        assert q.aux["values"].size == int(0.05 * x.size)
        if _zero_exact(codec.inner, x):
            harness.check_idempotent(codec, x)
    harness.check_decode_total(codec, (2, 2, 2 * codec.block_size), seed=7)


def test_outliers_are_the_largest_and_kept_in_float16() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 64)) * 0.02).astype(np.float32)
    hot = rng.choice(x.size, 10, replace=False)
    x.reshape(-1)[hot] = rng.choice([-1, 1], 10) * rng.uniform(1, 8, 10)
    c = lowbit.get_codec("dense_sparse", codec={"id": "int", "bits": 3, "group_size": 32}, fraction=10 / x.size)
    q = c.encode(x)
    pos = np.sort(hot)
    assert np.array_equal(q.aux["indptr"][-1], 10)
    got = np.repeat(np.arange(16), np.diff(q.aux["indptr"])) * 64 + q.aux["indices"]
    assert np.array_equal(got, pos)
    y = lowbit.decode(q)
    assert np.array_equal(y.reshape(-1)[pos], x.reshape(-1)[pos].astype(np.float16).astype(np.float32))
    plain = lowbit.decode(lowbit.encode(x, "int", bits=3, group_size=32))
    assert np.abs(y - x).mean() < 0.5 * np.abs(plain - x).mean()  # the outliers no longer spoil their groups
    assert c.bits_per_element(x.shape) == pytest.approx(q.bits_per_element)
    assert c.bits_per_element(x.shape) > lowbit.get_codec("int", bits=3, group_size=32).bits_per_element(x.shape)
