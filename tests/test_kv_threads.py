"""Concurrent use (issue 18): a KVStore and a LowbitCache layer appended to from two threads while a
third reads stay consistent (every token once, decoded to its own value), and codec instances are
safe to share between threads."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

import lowbit
from lowbit.kvcache import KVStore

STEPS = 150  # appends per writer thread


def _token(tag: int) -> torch.Tensor:
    """A [1, 1, 1, 16] key/value whose every channel is ``tag`` (fp8 with a per-token scale holds it exactly)."""
    return torch.full((1, 1, 1, 16), float(tag))


def _hammer(append, read) -> list[BaseException]:
    """Two threads append tokens tagged 1..STEPS and 1001..1000+STEPS while a third reads; the
    interpreter switches threads as often as it can. Returns the exceptions the threads raised."""
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(base: int) -> None:
        try:
            for i in range(1, STEPS + 1):
                append(_token(base + i), _token(base + i))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    def reader() -> None:
        try:
            while not done.is_set():
                read()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ws = [threading.Thread(target=writer, args=(b,)) for b in (0, 1000)]
        r = threading.Thread(target=reader)
        for t in ws + [r]:
            t.start()
        for t in ws:
            t.join()
        done.set()
        r.join()
    finally:
        sys.setswitchinterval(old)
    return errors


def _check_tokens(keys: torch.Tensor, values: torch.Tensor) -> None:
    """Every appended token exactly once, each writer's tokens in its own order, keys == values."""
    k = keys[0, 0, :, 0].numpy()
    v = values[0, 0, :, 0].numpy()
    tags = np.rint(k).astype(np.int64)
    assert np.allclose(k, tags, rtol=1e-5, atol=0) and np.array_equal(k, v), "a token decoded to another value"
    want = list(range(1, STEPS + 1)) + list(range(1001, 1001 + STEPS))
    assert sorted(tags.tolist()) == want, "tokens lost or duplicated"
    for base in (0, 1000):
        mine = tags[(tags > base) & (tags <= base + STEPS)]
        assert np.all(np.diff(mine) > 0), "a writer's tokens out of order"


def test_kvstore_two_writers_one_reader() -> None:
    s = KVStore("fp8_e4m3", "fp8_e4m3", window=4, flush=2, codec_params={"scale": "channel"})
    s.append(_token(0) * 0 + 0.5, _token(0) * 0 + 0.5)  # a first token so the reader has something
    q = torch.ones(1, 1, 1, 16)
    errors = _hammer(s.append, lambda: (s.attend(q), s.keys_values(), s.seq_length))
    assert not errors, errors[:3]
    assert s.seq_length == 2 * STEPS + 1
    k, v = s.keys_values()
    _check_tokens(k[:, :, 1:], v[:, :, 1:])


def test_lowbit_cache_layer_two_writers_one_reader() -> None:
    pytest.importorskip("transformers")
    from lowbit.kvcache.hf import LowbitLayer

    layer = LowbitLayer(key_codec="fp8_e4m3", value_codec="fp8_e4m3", window=4, flush=2, codec_params={"scale": "channel"})
    layer.update(_token(0) * 0 + 0.5, _token(0) * 0 + 0.5)
    errors = _hammer(lambda k, v: layer.update(k, v), lambda: (layer.get_seq_length(), layer.get_mask_sizes(1)))
    assert not errors, errors[:3]
    assert layer.get_seq_length() == 2 * STEPS + 1 == layer.store.seq_length
    k, v = layer.store.keys_values()
    _check_tokens(k[:, :, 1:], v[:, :, 1:])


def test_store_copies_and_pickles_with_a_fresh_lock() -> None:
    import copy
    import pickle

    s = KVStore("fp8_e4m3", "fp8_e4m3", window=2, flush=2, codec_params={"scale": "channel"})
    for t in range(5):
        s.append(_token(t + 1), _token(t + 1))
    for c in (copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert c._lock is not s._lock and c.seq_length == 5
        assert torch.equal(c.keys_values()[0], s.keys_values()[0])


@pytest.mark.parametrize("cfg", [{"id": "q4_k"}, {"id": "fp8_e4m3", "scale": "channel"},
                                 {"id": "turboquant_mse", "dim": 64, "bits": 3}, {"id": "nvfp4"}])
def test_codec_instances_are_thread_safe(cfg: dict) -> None:
    """One codec instance shared by 4 threads gives, for each thread's input, the bytes and values
    a serial run gives."""
    c = lowbit.get_codec(cfg)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((8, 256)).astype(np.float32) * (i + 1) for i in range(8)]
    want = [(c.encode(x).data.copy(), c.decode(c.encode(x))) for x in xs]
    got: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                q = c.encode(xs[i])
                got[i] = (q.data.copy(), c.decode(q))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    for i, (d, y) in enumerate(want):
        assert np.array_equal(got[i][0], d) and np.array_equal(got[i][1].view(np.uint32), y.view(np.uint32))
