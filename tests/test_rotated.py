"""The ``rotated`` wrapper around every codec in the registry (one configuration each, fixed
seeds), and its rotations against independent float64 constructions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lowbit
from lowbit.codecs.rotated import haar_matrix, hadamard_signs

from . import harness
from .strategies import make_tensor

WRAPPERS = ("rotated", "quarot4")
INNER = [(cid, lowbit.codec_class(cid).examples()[0]) for cid in lowbit.list_codecs() if cid not in WRAPPERS]


@pytest.mark.parametrize("kind", ["hadamard", "haar"])
@pytest.mark.parametrize("cid,cfg", INNER, ids=[c for c, _ in INNER])
def test_rotated_composes(cid: str, cfg: dict, kind: str) -> None:
    codec = harness.driven(lowbit.get_codec("rotated", codec={"id": cid, **cfg}, kind=kind, block=16, seed=5))
    harness.check_config_roundtrip(codec)
    harness.check_layout(codec)
    x = make_tensor(codec.inner, (3, codec.block_size * max(1, 32 // codec.block_size)), "normal", 1)
    harness.check_roundtrip_bound(codec, x)
    harness.check_bits_per_element(codec, x)
    harness.check_cpu_gpu(codec, x)
    assert codec.bits_per_element(x.shape) == codec.inner.bits_per_element(x.shape)
    harness.check_decode_total(codec, (2, codec.block_size), seed=7)


def _sylvester(n: int) -> np.ndarray:
    H = np.ones((1, 1))
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


@pytest.mark.parametrize("block", [1, 2, 16, 128])
def test_hadamard_rotation_is_the_normalised_sylvester_matrix(block: int) -> None:
    codec = lowbit.get_codec("rotated", codec="int", kind="hadamard", block=block, seed=9)
    x = np.random.default_rng(block).standard_normal((5, 2 * block)).astype(np.float32)
    y = codec.rotate(x, "cpu")
    s = hadamard_signs(9, block).astype(np.float64)
    ref = ((x.reshape(-1, block) * s) @ _sylvester(block).T / math.sqrt(block)).reshape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    back = codec.rotate(y, "cpu", inverse=True)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-5 * np.abs(x).max())
    harness.assert_same_bits(codec.rotate(harness.gpu_tensor(x), "gpu").cpu().numpy(), y, codec, "hadamard on gpu")


def test_haar_matrix_is_orthogonal_and_random() -> None:
    Q = haar_matrix(4, 64).astype(np.float64)
    np.testing.assert_allclose(Q @ Q.T, np.eye(64), atol=1e-6)
    assert not np.allclose(Q, haar_matrix(5, 64))
    assert (np.diag(Q) > 0).all()


def test_rotation_helps_an_outlier_channel() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((32, 128)) * 0.1).astype(np.float32)
    x[:, 7] = 8.0
    plain = lowbit.get_codec("int", bits=4, group_size=32, symmetric=True)
    rot = lowbit.get_codec("quarot4", codec=plain.get_config(), block=128)
    rmse = lambda c: float(np.sqrt(((lowbit.decode(c.encode(x)) - x) ** 2).mean()))  # noqa: E731
    assert rmse(rot) < 0.8 * rmse(plain)
