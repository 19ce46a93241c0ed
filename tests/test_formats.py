"""lowbit's own safetensors layout and the QTensor byte format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.codec import QTensor

from .harness import assert_same_bits


def sample() -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    return {
        "a.fp8": lowbit.encode(x, "fp8_e4m3", scale="channel"),
        "b.fp4": lowbit.encode(x, "fp4_e2m1", scale="block:4x16"),
        "c.int4": lowbit.encode(x[:3], "int4"),
        "d.plain": x[0],
        "e.scalar": np.float32(3.0).reshape(()),
    }


def test_save_load_round_trip(tmp_path: Path) -> None:
    t = sample()
    p = tmp_path / "m.safetensors"
    lowbit.save(p, t, metadata={"who": "test"})
    back = lowbit.load(p)
    assert set(back) == set(t)
    for k, v in t.items():
        if isinstance(v, QTensor):
            assert back[k].codec == v.codec and back[k].shape == v.shape
            assert_same_bits(lowbit.decode(back[k]), lowbit.decode(v), v.codec, k)
        else:
            assert np.array_equal(back[k], v)
    from safetensors import safe_open

    with safe_open(str(p), framework="numpy") as f:
        meta = f.metadata()
    assert meta["who"] == "test" and json.loads(meta["lowbit"])["format"] == 1


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.safetensors"
    lowbit.save(p, {"x": np.zeros(4, np.float32)})
    before = p.read_bytes()
    import safetensors.numpy

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        lowbit.save(p, sample())
    assert p.read_bytes() == before  # the old file is untouched
    assert [q.name for q in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_load_refuses_garbage(tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(lowbit.FormatError):
        lowbit.load(p)
    good = tmp_path / "good.safetensors"
    lowbit.save(good, sample())
    raw = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(lowbit.FormatError):
        lowbit.load(tmp_path / "trunc.safetensors")


def test_reserved_names(tmp_path: Path) -> None:
    with pytest.raises(lowbit.FormatError):
        lowbit.save(tmp_path / "x.safetensors", {"a.__aux__.b": np.zeros(2, np.float32)})
    with pytest.raises(lowbit.FormatError):
        lowbit.save(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)}, metadata={"lowbit": "x"})


def test_qtensor_bytes_reject_tampering() -> None:
    q = lowbit.encode(np.ones((2, 8), np.float32), "fp6_e2m3")
    b = bytearray(q.tobytes())
    assert QTensor.frombytes(bytes(b)).codec == q.codec
    bad = bytes(b).replace(b'"shape":[2,8]', b'"shape":[2,9]')
    with pytest.raises(lowbit.LowbitError):
        QTensor.frombytes(bad)
    with pytest.raises(lowbit.FormatError, match="magic"):
        QTensor.frombytes(b"XXXX" + bytes(b[4:]))
    huge = bytes(b[:8]) + (2**60).to_bytes(8, "little") + bytes(b[16:])
    with pytest.raises(lowbit.FormatError, match="header length"):
        QTensor.frombytes(huge)


def test_decode_refuses_foreign_qtensor() -> None:
    q = lowbit.encode(np.ones((1, 4), np.float32), "fp8_e4m3")
    with pytest.raises(lowbit.ConfigError, match="made by"):
        lowbit.get_codec("fp8_e5m2").decode(q)
    assert os.fspath  # keep os imported for readers of this module
