"""GGUF codecs against ggml's own C library (libggml-base, built here from the pinned
llama-cpp-python sdist by :mod:`lowbit.tools.ggml_oracle`), the gguf reader, and a real model.

Nothing here skips when the oracle or the model cannot be fetched or built: the fixture raises,
and every test that needs it fails with the reason.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.errors import ConfigError, FormatError, RangeError, ShapeError
from lowbit.formats import gguf as G
from lowbit.tools.ggml_oracle import GGML, GGML_TYPES

ROOT = Path(__file__).resolve().parents[1]
ENCODE_IDS = sorted(c for c in lowbit.list_codecs() if hasattr(lowbit.codec_class(c), "ggml_type"))
#: the grid i-quants that still decode only (no codec yet): tested through the reader's dequantize
IQ_IDS = [c for c in ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s") if c not in ENCODE_IDS]


def rows_for(codec: lowbit.Codec, seed: int) -> np.ndarray:
    """72 rows (8 of each of 9 kinds) for each of 3 lengths = 216 rows: Gaussian, heavy-tailed, all-zero,
    constant, one outlier, tiny, huge (near the accepted limit), mixed scales, positive only."""
    rng = np.random.default_rng(seed)
    bs = codec.block_size
    big = min(codec.max_abs, 65504.0) * 0.9
    out = []
    for K in (bs, 2 * bs, 4 * bs):
        block = []
        for r in range(72):
            kind = r % 9
            if kind == 0:
                x = rng.standard_normal(K) * 10.0 ** rng.uniform(-2, 2)
            elif kind == 1:
                x = rng.standard_t(2, K)
            elif kind == 2:
                x = np.zeros(K)
            elif kind == 3:
                x = np.full(K, rng.standard_normal() * 3)
            elif kind == 4:
                x = rng.standard_normal(K) * 0.01
                x[rng.integers(K)] = rng.choice([-1, 1]) * 10.0 ** rng.uniform(0, 3)
            elif kind == 5:
                x = rng.standard_normal(K) * 10.0 ** rng.uniform(-38, -20)
            elif kind == 6:
                x = np.clip(rng.standard_normal(K) * big / 3, -big, big)
            elif kind == 7:
                x = rng.standard_normal(K) * np.exp(rng.uniform(-9, 9, K))
            else:
                x = np.abs(rng.standard_normal(K))
            block.append(np.clip(x, -big, big))
        out.append(np.asarray(block, dtype=np.float32))
    return out


def same_float_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit equality, every NaN equal to every NaN (lowbit writes one canonical NaN)."""
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("cid", ENCODE_IDS)
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["ref", "imatrix"])
def test_encode_and_decode_match_ggml(ggml: GGML, cid: str, with_imatrix: bool) -> None:
    codec = lowbit.get_codec(cid)
    assert codec.requires_importance == ggml.requires_imatrix(cid), (
        f"{cid}: requires_importance is {codec.requires_importance}, ggml_quantize_requires_imatrix says "
        f"{ggml.requires_imatrix(cid)}")
    if not with_imatrix and codec.requires_importance:
        # ggml aborts without an imatrix for these types; lowbit refuses with a clear error instead
        with pytest.raises(ConfigError, match="needs importance="):
            codec.encode(np.ones((1, codec.block_size), np.float32), backend="cpu")
        return
    n = 0
    for x in rows_for(codec, GGML_TYPES[cid] * 2 + with_imatrix):
        K = x.shape[1]
        rng = np.random.default_rng(K)
        imp = (rng.random(K) ** 3 * 10).astype(np.float32) if with_imatrix else None
        want = ggml.quantize(x, cid, imp)
        q = codec.encode(x, backend="cpu", importance=imp)
        bad = np.nonzero((q.data != want).any(1))[0]
        assert bad.size == 0, f"{cid} K={K}: rows {bad.tolist()} differ from ggml, first: {q.data[bad[0]].tobytes().hex()} != {want[bad[0]].tobytes().hex()}"
        y = codec.decode(q, backend="cpu")
        wy = ggml.dequantize(want, cid, K)
        ok = same_float_bits(y, wy)
        assert ok.all(), f"{cid} K={K}: decode differs from ggml at {np.argwhere(~ok)[0].tolist()}"
        n += x.shape[0]
    assert n >= 200


@pytest.mark.parametrize("cid", ENCODE_IDS + IQ_IDS)
def test_random_bytes_decode_like_ggml(ggml: GGML, cid: str) -> None:
    """Totality: any bytes decode (no error), equal to ggml's dequantize_row_* bit for bit."""
    bs, ts = next((b, t) for (name, b, t) in G.BLOCK.values() if name == cid)
    rng = np.random.default_rng(GGML_TYPES[cid])
    raw = rng.integers(0, 256, (40, 3 * ts), dtype=np.uint8)
    y = G.dequantize(raw, cid, (40, 3 * bs))
    wy = ggml.dequantize(raw, cid, 3 * bs)
    ok = same_float_bits(y, wy)
    assert ok.all(), f"{cid}: random-bytes decode differs from ggml at {np.argwhere(~ok)[0].tolist()}"


def test_fp16_rounding_matches_ggml(ggml: GGML) -> None:
    from numba import njit

    from lowbit.kernels.cpu._ggml import fp32_to_fp16

    @njit
    def conv(x, out):
        for i in range(x.size):
            out[i] = fp32_to_fp16(x[i])

    rng = np.random.default_rng(5)
    bits = np.concatenate([rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32),
                           np.arange(0x33000000, 0x39000000, 97, dtype=np.uint32),  # the subnormal edge
                           np.arange(0x477F0000, 0x47810000, 3, dtype=np.uint32),   # the overflow edge
                           np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001], np.uint32)])
    x = bits.view(np.float32)
    ours = np.zeros(x.size, np.uint16)
    conv(x, ours)
    assert np.array_equal(ours, ggml.fp32_to_fp16(x))


def test_mxfp4_exponent_near_powers_of_two(ggml: GGML) -> None:
    """floor(log2f(amax)) as libm computes it: amax just below 2**k rounds up for large k."""
    c = lowbit.get_codec("mxfp4_ggml")
    rows = []
    for k in range(-130, 126, 3):
        for ulps in (0, 1, 2, 7, 40, 300):
            top = np.float32(2.0 ** k)
            a = np.nextafter(top, np.float32(0)) if ulps else top
            for _ in range(max(ulps - 1, 0)):
                a = np.nextafter(a, np.float32(0))
            r = np.zeros(32, np.float32)
            r[3] = a
            r[7] = -a / 3
            rows.append(r)
    x = np.asarray(rows, dtype=np.float32)
    assert np.array_equal(c.encode(x).data, ggml.quantize(x, "mxfp4_ggml"))


def test_importance_is_checked() -> None:
    c = lowbit.get_codec("q4_k")
    x = np.ones((2, 256), np.float32)
    with pytest.raises(ShapeError, match="q4_k: importance: expected shape"):
        c.encode(x, importance=np.ones(255, np.float32))
    with pytest.raises(RangeError, match="importance"):
        c.encode(x, importance=np.full(256, np.nan, np.float32))
    with pytest.raises(lowbit.DTypeError, match="importance"):
        c.encode(x, importance=[1.0] * 256)
    with pytest.raises(RangeError, match="outside the encodable range"):
        c.encode(np.full((1, 256), 1e6, np.float32))
    # float64 weights are rounded to float32 (ggml's quant_weights are float32)
    imp = np.random.default_rng(0).random(256)
    assert np.array_equal(c.encode(x, importance=imp).data, c.encode(x, importance=imp.astype(np.float32)).data)


# ---- the reader ---------------------------------------------------------------------------------

def _write_gguf(path: Path, tensors: dict[str, tuple[int, tuple[int, ...], bytes]], meta: dict[str, str] | None = None) -> None:
    """A minimal GGUF v3 writer for the tests (strings-only metadata)."""
    meta = meta or {"general.architecture": "test"}
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for k, v in meta.items():
        out += struct.pack("<Q", len(k)) + k.encode() + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v.encode()
    off = 0
    blobs = []
    for name, (t, shape, data) in tensors.items():
        out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape)) + struct.pack("<IQ", t, off)
        pad = -len(data) % 32
        blobs.append(data + b"\0" * pad)
        off += len(data) + pad
    out += b"\0" * (-len(out) % 32)
    path.write_bytes(bytes(out) + b"".join(blobs))


def test_reader_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 512)).astype(np.float32)
    q = lowbit.encode(w, "q4_k")
    p = tmp_path / "t.gguf"
    _write_gguf(p, {"a": (12, (3, 512), q.data.tobytes()), "b": (0, (4,), np.arange(4, dtype=np.float32).tobytes()),
                    "c": (30, (2,), np.array([0x3F80, 0xC000], np.uint16).tobytes())})
    f = G.read(p)
    assert [(t.name, t.type_name, t.shape) for t in f.tensors] == [("a", "q4_k", (3, 512)), ("b", "f32", (4,)), ("c", "bf16", (2,))]
    assert f.metadata["general.architecture"] == "test"
    assert np.array_equal(f.decode("a"), lowbit.decode(q))
    assert f.decode("b").tolist() == [0, 1, 2, 3] and f.decode("c").tolist() == [1.0, -2.0]
    f.close()


def test_reader_refuses_bad_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    q = lowbit.encode(rng.standard_normal((2, 256)).astype(np.float32), "q8_0")
    p = tmp_path / "t.gguf"
    _write_gguf(p, {"w": (8, (2, 256), q.data.tobytes())})
    good = p.read_bytes()
    G.read(p).close()
    cases = {
        "truncated": good[:-10],
        "magic": b"GGUX" + good[4:],
        "huge tensor count": good[:8] + struct.pack("<Q", 2**60) + good[16:],
        "huge metadata count": good[:16] + struct.pack("<Q", 2**40) + good[24:],
        "huge key length": good[:24] + struct.pack("<Q", 2**62) + good[32:],
    }
    for what, blob in cases.items():
        bad = tmp_path / f"{what}.gguf"
        bad.write_bytes(blob)
        with pytest.raises(FormatError):
            G.read(bad)
    # a tensor whose type is unknown, or whose shape does not fit: named in the message
    i = good.index(b"w") + 1
    blob = bytearray(good)
    struct.pack_into("<Q", blob, i + 4, 2**40)  # ne[0]
    (tmp_path / "ne.gguf").write_bytes(bytes(blob))
    with pytest.raises(FormatError, match="tensor 'w'"):
        G.read(tmp_path / "ne.gguf")
    blob = bytearray(good)
    struct.pack_into("<I", blob, i + 4 + 16, 77)  # type
    (tmp_path / "ty.gguf").write_bytes(bytes(blob))
    with pytest.raises(FormatError, match="tensor 'w' type"):
        G.read(tmp_path / "ty.gguf")


# ---- real blocks: a GGUF model shipped on PyPI (the gemma_gguf fixture, in conftest.py) ----------------

def test_real_model_decodes_like_gguf_py_and_ggml(gemma_gguf: Path, ggml: GGML) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize as gq_dequantize

    f = G.read(gemma_gguf)
    ref = {t.name: t for t in GGUFReader(str(gemma_gguf)).tensors}
    assert len(f.tensors) == len(ref) == 236
    seen: dict[str, int] = {}
    for t in f.tensors:
        r = ref[t.name]
        assert t.shape == tuple(int(d) for d in reversed(r.shape.tolist())) and t.ggml_type == int(r.tensor_type)
        raw = f.raw(t.name)
        assert np.array_equal(raw, np.asarray(r.data).reshape(-1).view(np.uint8))
        if t.type_name == "f32":
            continue
        seen[t.type_name] = seen.get(t.type_name, 0) + 1
        # the 170 MB token embedding: its first 4096 rows (all of every other tensor)
        rows = min(t.shape[0], 4096) if len(t.shape) == 2 else t.shape[0]
        K = t.shape[-1]
        nb = G.BLOCK[t.ggml_type][2] * (K // G.BLOCK[t.ggml_type][1])
        part = raw[: rows * nb].reshape(rows, nb)
        ours = G.dequantize(part, t.type_name, (rows, K))
        assert np.array_equal(ours.view(np.uint32), ggml.dequantize(part, t.type_name, K).view(np.uint32)), t.name
        theirs = gq_dequantize(np.asarray(part), r.tensor_type)
        assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32)), t.name
    assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= set(seen), seen
    f.close()
