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
    from lowbit.formats import safetensors as st

    real = st.Writer.write
    calls = []

    def failing(self, name, data):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, name, data)

    monkeypatch.setattr(st.Writer, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        lowbit.save(p, sample())
    assert p.read_bytes() == before  # the old file is untouched
    assert [q.name for q in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_killed_writer_leaves_nothing(tmp_path: Path) -> None:
    """SIGKILL in the middle of a write: the target never appears and no temporary remains."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "big.safetensors"
    code = f"""
import numpy as np, sys
from lowbit.formats.safetensors import Writer
w = Writer({str(target)!r}, [("a", "F32", (1 << 20,)), ("b", "F32", (1 << 20,))])
w.write("a", np.ones(1 << 20, np.float32))
print("half", flush=True)
sys.stdin.readline()  # wait to be killed
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []


def test_native_dtypes_read_by_safetensors(tmp_path: Path) -> None:
    """FP8 and FP4 codes are stored under safetensors' own dtypes, readable by torch directly."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    t = {"e4m3": lowbit.encode(x, "fp8_e4m3", overflow="saturate"), "e5m2": lowbit.encode(x, "fp8_e5m2"),
         "fp4": lowbit.encode(x, "fp4_e2m1"), "i8": lowbit.encode(x * 10, "int8"),
         "e4m3_ch": lowbit.encode(x, "fp8_e4m3", scale="channel")}
    p = tmp_path / "n.safetensors"
    lowbit.save(p, t)
    with lowbit.open_file(p) as f:
        assert [f.info(k)["dtype"] for k in ("e4m3", "e5m2", "fp4", "i8")] == ["F8_E4M3", "F8_E5M2", "F4", "I8"]
        assert f.info("fp4")["shape"] == (4, 32)  # the logical shape
    theirs = load_file(str(p))
    assert torch.equal(theirs["e4m3"].float(), torch.from_numpy(x).to(torch.float8_e4m3fn).float())
    assert torch.equal(theirs["e5m2"].float(), torch.from_numpy(x).to(torch.float8_e5m2).float())
    assert np.array_equal(theirs["fp4"].view(torch.uint8).numpy().reshape(-1), t["fp4"].data.reshape(-1))
    assert np.array_equal(theirs["i8"].numpy(), t["i8"].data.view(np.int8))
    back = lowbit.load(p)
    for k, q in t.items():
        assert_same_bits(lowbit.decode(back[k]), lowbit.decode(q), q.codec, k)


def test_lazy_access_reads_one_tensor(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    lowbit.save(p, sample())
    with lowbit.open_file(p) as f:
        assert f.names() == ["a.fp8", "b.fp4", "c.int4", "d.plain", "e.scalar"]
        q = f.get("b.fp4", copy=False)
        assert isinstance(q, QTensor) and not q.data.flags.writeable  # a view into the map
        assert lowbit.decode(q).shape == (16, 64)


def test_writer_checks_order_and_sizes(tmp_path: Path) -> None:
    from lowbit.formats.safetensors import Writer

    p = tmp_path / "w.safetensors"
    w = Writer(p, [("a", "F32", (2,)), ("b", "U8", (3,))])
    with pytest.raises(lowbit.FormatError, match="expected 'a'"):
        w.write("b", np.zeros(3, np.uint8))
    with pytest.raises(lowbit.FormatError, match="8 bytes"):
        w.write("a", np.zeros(3, np.float32))
    w.write("a", np.zeros(2, np.float32))
    with pytest.raises(lowbit.FormatError, match="never written"):
        w.close()
    assert not p.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(lowbit.FormatError, match="whole number of bytes"):
        Writer(p, [("a", "F4", (3,))])


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b[:7], "too short"),
    (lambda b: (2**40).to_bytes(8, "little") + b[8:], "header length"),
    (lambda b: b[:8] + b"[" + b[9:], "JSON"),
    (lambda b: b.replace(b'"F32"', b'"F99"', 1), "dtype"),
    (lambda b: b.replace(b'"shape":[4]', b'"shape":[5]', 1), "bytes"),
    (lambda b: b.replace(b'"data_offsets":[0,16]', b'"data_offsets":[0,96]', 1), "data_offsets"),
])
def test_hostile_headers(tmp_path: Path, mutate, match: str) -> None:
    p = tmp_path / "x.safetensors"
    from lowbit.formats.safetensors import Writer

    with Writer(p, [("x", "F32", (4,))]) as w:
        w.write("x", np.arange(4, dtype=np.float32))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mutate(p.read_bytes()))
    with pytest.raises(lowbit.FormatError, match=match):
        lowbit.load(bad)


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


def test_zarr_v3_serializer_and_numcodecs() -> None:
    zarr = pytest.importorskip("zarr")
    numcodecs = pytest.importorskip("numcodecs")
    from zarr.storage import MemoryStore

    from lowbit.formats.zarr_codecs import ZarrLowbit

    x = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    store = MemoryStore()
    arr = zarr.create_array(store=store, shape=x.shape, chunks=(16, 128), dtype="float32",
                            serializer=ZarrLowbit(codec={"id": "fp4_e2m1", "scale": "channel"}), compressors=None)
    arr[:] = x
    again = zarr.open_array(store=store, mode="r")  # the codec is found again through its entry point
    want = np.concatenate([lowbit.decode(lowbit.encode(x[i:i + 16], "fp4_e2m1", scale="channel")) for i in range(0, 64, 16)])
    assert np.array_equal(again[:], want)
    assert again.metadata.to_dict()["codecs"][0]["name"] == "lowbit"
    c = numcodecs.get_codec({"id": "lowbit", "codec": {"id": "int8", "scale": "channel"}})
    y = c.decode(c.encode(x))
    assert np.array_equal(y, lowbit.decode(lowbit.encode(x, "int8", scale="channel")))
    assert numcodecs.get_codec(c.get_config()).get_config() == c.get_config()


def test_checksums_catch_tampering(tmp_path: Path) -> None:
    p = tmp_path / "c.safetensors"
    lowbit.save(p, sample())
    with lowbit.open_file(p) as f:
        assert f.verify() == len(f.keys()) and len(f.checksums) == len(f.keys())
        start, (a, _) = f._start, f.info("b.fp4")["data_offsets"]
    raw = bytearray(p.read_bytes())
    raw[start + a + 3] ^= 0x10  # one bit of one code
    p.write_bytes(bytes(raw))
    lowbit.load(p, verify=False)  # with verification off the file still reads (the codes are valid codes)
    for verify in (None, True):  # verification is on by default
        with pytest.raises(lowbit.FormatError, match="'b.fp4': checksum mismatch"):
            lowbit.load(p, **({} if verify is None else {"verify": verify}))
    from lowbit.tools.cli import main

    assert main(["inspect", str(p), "--verify"]) == 2
    assert main(["inspect", str(p)]) == 2  # inspect checks the digests the file carries by default
    assert main(["inspect", str(p), "--no-verify"]) == 0
    lowbit.save(tmp_path / "n.safetensors", sample(), checksums=False)
    lowbit.load(tmp_path / "n.safetensors")  # no digests: nothing to check by default
    with pytest.raises(lowbit.FormatError, match="no checksum"):
        lowbit.load(tmp_path / "n.safetensors", verify=True)


def test_readers_see_old_or_new_file_never_a_mix(tmp_path: Path) -> None:
    p = tmp_path / "r.safetensors"
    old = np.arange(1 << 16, dtype=np.float32)
    lowbit.save(p, {"x": old})
    with lowbit.open_file(p, verify=True) as reader:
        lowbit.save(p, {"x": -old})  # replaced while the reader holds it
        assert np.array_equal(reader.get("x"), old)  # the old file, whole and verified
    assert np.array_equal(lowbit.load(p, verify=True)["x"], -old)  # a new reader sees the new one
