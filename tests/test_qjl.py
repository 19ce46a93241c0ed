"""QJL sketches: the projection matrix, the score kernel against the oracle on both backends, and
the estimator's unbiasedness (a statistical check whose tolerance is 5 standard errors)."""

from __future__ import annotations

import numpy as np
import pytest

import lowbit
from lowbit.errors import RangeError, ShapeError
from lowbit.tools import oracles as O

from .harness import assert_same_bits, gpu_tensor


def test_matrix_is_the_spec_matrix() -> None:
    c = lowbit.get_codec("qjl", bits=2, seed=11)
    assert_same_bits(c.matrix(24), O.reference_qjl_matrix(11, 48, 24), c, "projection matrix")
    S = lowbit.get_codec("qjl", bits=8, seed=1).matrix(64).astype(np.float64)
    assert abs(S.mean()) < 0.02 and abs(S.std() - 1) < 0.02  # standard normal entries


@pytest.mark.parametrize("bits,seed", [(1, 0), (2, 5)])
def test_score_matches_the_oracle_on_both_backends(bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal((9, 24)) * np.exp2(rng.integers(-6, 6, (9, 1)))).astype(np.float32)
    q = rng.standard_normal((3, 24)).astype(np.float32)
    codec = lowbit.get_codec("qjl", bits=bits, seed=seed)
    qk = codec.encode(k)
    data, norms, y = O.reference_qjl(k, bits, seed)
    assert_same_bits(qk.data, data, codec, "sign bytes")
    assert_same_bits(qk.aux["norm"], norms, codec, "norms")
    ref = O.reference_qjl_score(q, data, norms, bits, seed)
    assert_same_bits(codec.score(q, qk, backend="cpu"), ref, codec, "score on cpu")
    qg = lowbit.QTensor(gpu_tensor(qk.data), {"norm": gpu_tensor(qk.aux["norm"])}, qk.shape, codec)
    assert_same_bits(codec.score(gpu_tensor(q), qg, backend="gpu").cpu().numpy(), ref, codec, "score on gpu")
    # the score estimator is <q, decode(k)> up to float32 summation order
    np.testing.assert_allclose(ref, q.astype(np.float64) @ y.astype(np.float64).T,
                               rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_estimator_is_unbiased() -> None:
    """Average the score estimate over independent sketches (seeds): the mean must sit within 5
    standard errors of the exact inner product for every (query, key) pair, and the regression
    slope of estimate on exact within 5%. A missing sqrt(pi/2) (slope 0.8) or a sign error fails."""
    rng = np.random.default_rng(0)
    d, n_seeds = 32, 48
    k = rng.standard_normal((6, d)).astype(np.float32)
    q = rng.standard_normal((4, d)).astype(np.float32)
    exact = q.astype(np.float64) @ k.astype(np.float64).T
    est = np.stack([lowbit.get_codec("qjl", bits=2, seed=s).score(q, lowbit.get_codec("qjl", bits=2, seed=s).encode(k))
                    for s in range(n_seeds)]).astype(np.float64)
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(n_seeds)
    assert (np.abs(mean - exact) <= 5 * se).all(), f"biased: mean {mean}, exact {exact}, se {se}"
    slope = float((est * exact).sum() / (n_seeds * (exact**2).sum()))
    assert abs(slope - 1) < 0.05, f"slope of estimate on exact: {slope}"
    dec = np.stack([lowbit.decode(lowbit.get_codec("qjl", bits=2, seed=s).encode(k)) for s in range(n_seeds)])
    assert np.abs(dec.mean(0) - k).max() < 5 * (dec.std(0, ddof=1) / np.sqrt(n_seeds)).max()  # E[decode(k)] = k


def test_score_checks_its_inputs() -> None:
    codec = lowbit.get_codec("qjl")
    qk = codec.encode(np.ones((2, 16), np.float32))
    with pytest.raises(ShapeError):
        codec.score(np.ones((1, 8), np.float32), qk)
    with pytest.raises(RangeError):
        codec.score(np.full((1, 16), np.nan, np.float32), qk)
    with pytest.raises(lowbit.errors.ConfigError):
        lowbit.get_codec("qjl", seed=1).score(np.ones((1, 16), np.float32), qk)
