"""GGUF files end to end: writing (checked by gguf-py's reader), lowbit safetensors <-> GGUF round
trips on a real model (byte-identical), llama-quantize's type mixes (checked against a real
Q4_K_M file) and file-level re-quantization (checked block for block against ggml), imatrix files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.errors import ConfigError, FormatError
from lowbit.formats import gguf as G
from lowbit.tools.convert import convert_file
from lowbit.tools.ggml_oracle import GGML
from lowbit.tools.mixes import FTYPE, Options, gguf_mix_plan, read_imatrix, write_imatrix_dat
from lowbit.tools.quantize import quantize_file


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---- writing GGUF ---------------------------------------------------------------------------------

def test_written_gguf_reads_in_gguf_py(tmp_path: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize as gq_dequantize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    tensors = {
        "a.f32": x[:2, :7].copy(),
        "b.f16": x[:3].astype(np.float16),
        "c.i8": rng.integers(-128, 128, (4, 5), dtype=np.int8),
        "d.q4_0": lowbit.encode(x, "q4_0"),
        "e.q4_k": lowbit.encode(x, "q4_k"),
        "f.q8_0": lowbit.encode(x[:1, :64], "q8_0"),
        "g.scalar": np.array([3.5], np.float32),
    }
    meta = {"general.architecture": "llama", "general.name": "test ü", "llama.block_count": 2,
            "some.negative": -7, "some.big": 2**40, "some.float": 0.25, "some.flag": True,
            "tokenizer.ggml.tokens": ["<s>", "a", "b"], "tokenizer.ggml.scores": np.array([0.0, -1.0, -2.5], np.float32),
            "tokenizer.ggml.token_type": np.array([3, 1, 1], np.int32)}
    path = tmp_path / "w.gguf"
    G.save(path, tensors, meta)

    r = GGUFReader(str(path))
    assert {t.name for t in r.tensors} == set(tensors)
    for t in r.tensors:
        ours = lowbit.decode(tensors[t.name]) if isinstance(tensors[t.name], lowbit.QTensor) else tensors[t.name]
        data = np.asarray(t.data)
        theirs = data if data.dtype.kind == "i" else gq_dequantize(data, t.tensor_type)  # gguf-py keeps ints as they are
        assert np.array_equal(np.asarray(theirs).reshape(np.shape(ours)).astype(np.float64), np.asarray(ours, np.float64)), t.name
    f = r.fields
    assert bytes(f["general.name"].parts[-1]).decode() == "test ü"
    assert int(f["llama.block_count"].parts[-1][0]) == 2 and int(f["some.negative"].parts[-1][0]) == -7
    assert int(f["some.big"].parts[-1][0]) == 2**40 and bool(f["some.flag"].parts[-1][0])
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    assert toks == ["<s>", "a", "b"]

    # our reader gives back the same values and types; writing them back gives the same bytes
    with G.read(path) as g:
        assert g.names() == list(tensors)
        assert g.metadata["general.name"] == "test ü" and g.metadata["tokenizer.ggml.tokens"] == ["<s>", "a", "b"]
        assert g.metadata_types["some.float"] == (G.FLOAT32, None)
        assert g.metadata_types["tokenizer.ggml.token_type"] == (G.ARRAY, G.INT32)
        again = {n: g.get(n) for n in g.names()}
        assert np.array_equal(again["e.q4_k"].data, tensors["e.q4_k"].data)
        G.save(tmp_path / "again.gguf", again, g.metadata, metadata_types=g.metadata_types)
    assert (tmp_path / "again.gguf").read_bytes() == path.read_bytes()


def test_writer_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    with pytest.raises(FormatError, match="not a GGUF type"):
        G.save(path, {"w": lowbit.encode(np.ones((2, 32), np.float32), "fp8_e4m3", scale="channel")})
    with pytest.raises(FormatError, match="does not fit q4_0"):
        G.Writer(path, [("w", "q4_0", (2, 33))])
    with pytest.raises(FormatError, match="expected 36 bytes"):
        with G.Writer(path, [("w", "q4_0", (2, 32))]) as w:
            w.write("w", np.zeros(35, np.uint8))
    with pytest.raises(FormatError, match="never written"):
        with G.Writer(path, [("w", "q4_0", (2, 32)), ("v", "f32", (3,))]) as w:
            w.write("w", np.zeros(36, np.uint8))
    with pytest.raises(RuntimeError):
        with G.Writer(path, [("w", "f32", (3,))]) as w:
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FormatError, match="no GGUF type"):
        G.save(path, {"w": np.zeros(3, np.float32)}, {"k": {"a": 1}})


# ---- a real model: GGUF -> lowbit safetensors -> GGUF ------------------------------------------------

def test_real_model_round_trip_is_byte_identical(gemma_gguf: Path, tmp_path: Path) -> None:
    mid, back = tmp_path / "m.safetensors", tmp_path / "back.gguf"
    res = convert_file(gemma_gguf, mid, to="lowbit", progress=False)
    assert {t["action"] for t in res["tensors"]} == {"codes copied", "array copied"}
    with lowbit.open_file(mid) as s, G.read(gemma_gguf) as g:
        assert s.names() == g.names()  # file order survives
        for name in ("blk.0.attn_q.weight", "blk.3.ffn_down.weight", "output_norm.weight"):
            t = s.get(name)
            ours = lowbit.decode(t) if isinstance(t, lowbit.QTensor) else t
            assert np.array_equal(np.asarray(ours, np.float32).view(np.uint32), g.decode(name).view(np.uint32))
        assert s.verify() == len(s.keys())  # every stored tensor has a checksum, and it holds
    convert_file(mid, back, to="gguf", progress=False)
    assert digest(back) == digest(gemma_gguf)


def test_mix_plan_matches_llama_quantize(gemma_gguf: Path) -> None:
    """gemma-3-270m Q4_K_M was made by llama-quantize: our plan gives every tensor its type."""
    with G.read(gemma_gguf) as g:
        plan = gguf_mix_plan([(t.name, t.shape) for t in g.tensors], "q4_k_m")
        got = {t.name: t.type_name for t in g.tensors}
        assert g.metadata["general.file_type"] == FTYPE["q4_k_m"]
    wrong = {n: (plan[n], got[n]) for n in plan if (plan[n] or "f32") != got[n]}
    assert wrong == {}
    assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= set(plan.values())  # the bumps and both fallbacks occur
    with pytest.raises(ConfigError, match="mix"):
        gguf_mix_plan([], "q4_k_x")


def test_real_model_requantized_with_q5_k_m_matches_ggml(gemma_gguf: Path, ggml: GGML, tmp_path: Path) -> None:
    """Issue 7's acceptance run, as llama-quantize does it (issue 15): the real Q4_K_M model
    requantized (--allow-requantize) to Q5_K_M: tensors whose type the mix keeps are copied byte
    for byte, the others get ggml_quantize_chunk's bytes of their decoded values for the type
    the mix chose; in a separate process whose allocations stay under 2x the largest tensor
    plus a fixed overhead."""
    import sys

    from lowbit.tools.mixes import ModelInfo, plan_types
    from lowbit.tools.peakmem import run_measured

    out = tmp_path / "q.gguf"
    r = run_measured([sys.executable, "-m", "lowbit.tools.cli", "quantize", "--allow-requantize", str(gemma_gguf), str(out),
                      "Q5_K_M", "--json"])
    assert r["returncode"] == 0, r["stderr"][-2000:]
    with G.read(gemma_gguf) as g, G.read(out) as q:
        largest = max(4 * int(np.prod(t.shape)) for t in g.tensors)  # decoded float32
        want = plan_types([(t.name, t.shape, t.type_name) for t in g.tensors], "Q5_K_M", ModelInfo.from_metadata(g.metadata))
        assert q.names() == g.names() and q.metadata["general.file_type"] == FTYPE["q5_k_m"]
        assert all(np.array_equal(q.metadata[k], v) if isinstance(v, np.ndarray) else q.metadata[k] == v
                   for k, v in g.metadata.items() if k != "general.file_type")
        changed = 0
        for t in g.tensors:
            got = q.tensor(t.name)
            assert got.type_name == want[t.name], t.name
            if got.type_name == t.type_name:  # kept: copied as it is
                assert np.array_equal(q.raw(t.name), g.raw(t.name)), t.name
                continue
            changed += 1
            x = g.decode(t.name)
            ref = ggml.quantize(x.reshape(-1, x.shape[-1]), got.type_name)
            assert np.array_equal(q.raw(t.name).reshape(ref.shape), ref), f"{t.name} ({got.type_name}) differs from ggml"
        assert changed >= 100 and {"q5_k", "q5_1"} <= {t.type_name for t in q.tensors}
    # 2x the largest tensor (its float32 values and the encoder's working copy) + 256 MiB for the
    # interpreter, numba and numpy; file pages of the memory-mapped input are not allocations
    assert r["peak_anon_bytes"] <= 2 * largest + (256 << 20), (r["peak_anon_bytes"], largest)


# ---- re-quantizing with a mix and an imatrix: block for block against ggml -----------------------------

def _tiny_llama(path: Path, n_layers: int = 8) -> dict[str, np.ndarray]:
    """A llama-shaped float32 GGUF: 8 layers (so use_more_bits picks some), GQA-sized V, an FFN
    width that is not a multiple of 256 (fallbacks) and a row length that fits no block (F16)."""
    rng = np.random.default_rng(5)
    d, ff, kv = 256, 288, 64
    w: dict[str, np.ndarray] = {"token_embd.weight": rng.standard_normal((96, d))}
    for i in range(n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        w[p + "attn_q.weight"] = rng.standard_normal((d, d)) * 0.05
        w[p + "attn_k.weight"] = rng.standard_normal((kv, d)) * 0.05
        w[p + "attn_v.weight"] = rng.standard_t(3, (kv, d)) * 0.05
        w[p + "attn_output.weight"] = rng.standard_normal((d, d)) * 0.05
        w[p + "ffn_gate.weight"] = rng.standard_normal((ff, d)) * 0.05
        w[p + "ffn_up.weight"] = rng.standard_normal((ff, d)) * 0.05
        w[p + "ffn_down.weight"] = rng.standard_normal((d, ff)) * 0.05
    w["odd.weight"] = rng.standard_normal((4, 40))
    w["output_norm.weight"] = np.ones(d)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    G.save(path, w, {"general.architecture": "llama", "llama.block_count": n_layers, "general.file_type": 0})
    return w


@pytest.mark.parametrize("mix", ["q4_k_m", "q3_k_m", "q5_0"])
def test_quantize_with_mix_and_imatrix_matches_ggml(ggml: GGML, tmp_path: Path, mix: str) -> None:
    src = tmp_path / "f32.gguf"
    w = _tiny_llama(src)
    rng = np.random.default_rng(1)
    sums = {n: (rng.integers(1, 9), (rng.random(a.shape[-1]) ** 2 * 50).astype(np.float32))
            for n, a in w.items() if a.ndim == 2 and "embd" not in n}
    imx = tmp_path / "imatrix.dat"
    write_imatrix_dat(imx, sums)
    weights = read_imatrix(imx)
    assert set(weights) == set(sums)
    assert np.array_equal(weights["blk.0.attn_q.weight"], sums["blk.0.attn_q.weight"][1] / np.float32(sums["blk.0.attn_q.weight"][0]))

    out = tmp_path / "q.gguf"
    res = quantize_file(src, out, mix=mix, imatrix=imx, progress=False)
    plan = gguf_mix_plan([(n, a.shape) for n, a in w.items()], mix, options=Options(has_imatrix=True))
    if mix == "q5_0":  # llama-quantize with an imatrix: ffn_down of the first n/8 layers in Q5_1
        assert plan["blk.0.ffn_down.weight"] == "q5_1" and plan["blk.1.ffn_down.weight"] == "q5_0"
    with G.read(out) as g:
        assert g.metadata["general.file_type"] == FTYPE[mix] and g.metadata["llama.block_count"] == 8
        assert g.names() == list(w)
        for name, x in w.items():
            t = g.tensor(name)
            want_type = plan[name] or "f32"
            assert t.type_name == want_type, name
            if want_type == "f32":
                assert np.array_equal(g.raw(name).view(np.float32).reshape(x.shape), x)
            elif want_type == "f16":
                assert np.array_equal(g.raw(name).view(np.float16).reshape(x.shape), x.astype(np.float16))
            else:
                want = ggml.quantize(x.reshape(-1, x.shape[-1]), want_type, weights.get(name))
                assert np.array_equal(g.raw(name).reshape(want.shape), want), f"{name} ({want_type}) differs from ggml"
    kinds = {d["to"] if isinstance(d["to"], str) else d["to"]["id"] for d in res["decisions"]}
    assert "float16" in kinds and "kept" in kinds
    if mix == "q4_k_m":
        assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= kinds


def test_quantize_refuses_non_gguf_codec_for_gguf_output(tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    _tiny_llama(src, n_layers=1)
    with pytest.raises(ConfigError, match="cannot be stored in GGUF"):
        quantize_file(src, tmp_path / "x.gguf", codec=lowbit.get_codec("fp8_e4m3"), progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_imatrix_gguf_layout_and_bad_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    s2 = (rng.random((1, 64)) * 9).astype(np.float32)
    G.save(tmp_path / "im.gguf", {"blk.0.ffn_up.weight.in_sum2": s2, "blk.0.ffn_up.weight.counts": np.array([[4.0]], np.float32)},
           {"general.type": "imatrix"})
    got = read_imatrix(tmp_path / "im.gguf")
    assert np.array_equal(got["blk.0.ffn_up.weight"], (s2[0].astype(np.float64) / 4).astype(np.float32))
    write_imatrix_dat(tmp_path / "ok.dat", {"w": (2, np.ones(8, np.float32))})
    raw = (tmp_path / "ok.dat").read_bytes()
    (tmp_path / "cut.dat").write_bytes(raw[:20])
    with pytest.raises(FormatError, match="imatrix"):
        read_imatrix(tmp_path / "cut.dat")
    (tmp_path / "huge.dat").write_bytes(np.array([10**9], "<i4").tobytes())
    with pytest.raises(FormatError, match="cannot fit"):
        read_imatrix(tmp_path / "huge.dat")


def test_convert_reports_what_gguf_cannot_hold(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    src = tmp_path / "mixed.safetensors"
    lowbit.save(src, {"a": lowbit.encode(x, "q8_0"), "b": lowbit.encode(x, "fp8_e4m3", scale="channel"), "c": x[0]})
    out = tmp_path / "mixed.gguf"
    res = convert_file(src, out, to="gguf", progress=False)
    acts = {t["name"]: t["action"] for t in res["tensors"]}
    assert acts == {"a": "codes copied", "b": "decoded to float32 (no GGUF type holds fp8_e4m3)", "c": "array copied"}
    with G.read(out) as g:
        assert [t.type_name for t in g.tensors] == ["q8_0", "f32", "f32"]
        assert np.array_equal(g.raw("a"), lowbit.encode(x, "q8_0").data.reshape(-1))
        assert np.array_equal(g.decode("b"), lowbit.decode(lowbit.encode(x, "fp8_e4m3", scale="channel")))
    json.dumps(res)  # the report is plain JSON
