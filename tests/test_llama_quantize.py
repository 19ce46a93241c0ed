"""lowbit as a drop-in for llama-quantize, llama-gguf-split and gguf-dump (issue 15).

Oracles: gguf-py's reader and writer (an independent implementation of the container), the real
gemma-3-270m Q4_K_M file made by llama-quantize (its per-tensor types), ggml's own quantizer
(``ggml`` fixture, block for block), and llama.cpp's rules as written in src/llama-quant.cpp.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.errors import ConfigError, FormatError, LowbitError
from lowbit.formats import gguf as G
from lowbit.formats import gguf_split
from lowbit.tools.convert import convert_file
from lowbit.tools.ggml_oracle import GGML
from lowbit.tools.imatrix import write_imatrix_dat
from lowbit.tools.mixes import QUANT_OPTIONS, ModelInfo, Options, llama_order, plan_types
from lowbit.tools.quantize import quantize_file


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowbit.tools.cli", *args], capture_output=True, text=True)


def _model(path: Path, names_order: str = "llama", n_layers: int = 8, *, gqa: int = 4, tied: bool = False,
           seed: int = 5) -> dict[str, np.ndarray]:
    """A llama-shaped float32 GGUF written by gguf-py's writer in the order asked for: ``llama``
    (llama.cpp's loader order), ``lexicographic`` (blk.0, blk.1, blk.10, ...) or ``shuffled``.
    FFN width 288 (not a multiple of 256: fallbacks), one 40-column tensor (fits no block: F16)."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
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
    w["blk.0.odd.weight"] = rng.standard_normal((4, 40))
    w["output_norm.weight"] = np.ones(d)
    if not tied:
        w["output.weight"] = rng.standard_normal((96, d)) * 0.05
    w = {k: v.astype(np.float32) for k, v in w.items()}
    names = {"llama": llama_order(w), "lexicographic": sorted(w),
             "shuffled": random.Random(seed).sample(list(w), len(w))}[names_order]
    gw = GGUFWriter(str(path), "llama")
    gw.add_block_count(n_layers)
    gw.add_head_count(4 * gqa)
    gw.add_head_count_kv(4)
    gw.add_file_type(0)
    for n in names:
        gw.add_tensor(n, w[n])
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    return {n: w[n] for n in names}


def _types(path: Path) -> dict[str, str]:
    with lowbit.open_file(path) as g:
        return {t.name: t.type_name for t in g.tensors}


# ---- inspect: gguf-dump -------------------------------------------------------------------------------

def test_inspect_gguf_matches_gguf_py(gemma_gguf: Path) -> None:
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType

    r = cli("inspect", str(gemma_gguf), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    ref = GGUFReader(str(gemma_gguf))
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert (d["version"], d["tensor_count"], d["kv_count"]) == (3, len(ref.tensors), len(fields))
    assert list(d["metadata"]) == list(fields)
    for k, f in fields.items():
        want = GGUFValueType(f.types[0]).name if f.types[0] != GGUFValueType.ARRAY else f"[{GGUFValueType(f.types[-1]).name}]"
        assert d["metadata"][k]["type"] == want, k
        if f.types[0] == GGUFValueType.ARRAY:
            assert d["metadata"][k]["count"] == len(f.data), k
        elif f.types[0] != GGUFValueType.STRING:
            assert d["metadata"][k]["value"] == f.parts[-1][0].item(), k
    assert d["metadata"]["general.file_type"] == {"type": "UINT32", "value": 15}
    for ours, t in zip(d["tensors"], ref.tensors, strict=True):
        assert (ours["name"], ours["type"], ours["ne"]) == (t.name, t.tensor_type.name, [int(x) for x in t.shape])
        assert (ours["file_offset"], ours["n_elements"], ours["nbytes"]) == (t.data_offset, t.n_elements, t.n_bytes)
    human = cli("inspect", str(gemma_gguf))
    assert human.returncode == 0, human.stderr  # issue 15.1: crashed with a TypeError on every real file
    assert "general.file_type = 15" in human.stdout and "[STRING]   |   262144 | tokenizer.ggml.tokens" in human.stdout
    line = next(x for x in human.stdout.splitlines() if x.endswith("| blk.0.ffn_down.weight"))
    assert " 2048,   640," in line and "Q6_K" in line


# ---- the type plan: llama.cpp's rules, independent of tensor order ----------------------------------------

def test_plan_independent_of_tensor_order_on_the_real_model(gemma_gguf: Path) -> None:
    with G.read(gemma_gguf) as g:
        real = {t.name: t.type_name for t in g.tensors}
        model = ModelInfo.from_metadata(g.metadata, g.names())
        items = [(t.name, t.shape, "f32") for t in g.tensors]  # as from the F32 original
    assert (model.arch, model.n_layer, model.n_gqa) == ("gemma3", 18, 4)
    orders = {"file": items, "lexicographic": sorted(items), "reversed": items[::-1],
              "shuffled": random.Random(1).sample(items, len(items))}
    for what, order in orders.items():
        plan = plan_types(order, "Q4_K_M", model)
        wrong = {n: (plan[n], real[n]) for n in real if plan[n] != real[n]}
        assert wrong == {}, what
    assert sum(v == "q6_k" for n, v in real.items() if "ffn_down" in n) == 9  # use_more_bits picked 9 of 18 layers


@pytest.mark.parametrize("mix", [m for m in QUANT_OPTIONS if not m.startswith("IQ") or m in ("IQ4_NL", "IQ4_XS")])
def test_every_mix_plan_is_order_independent(mix: str) -> None:
    rng = random.Random(3)
    n = 32
    items = [("token_embd.weight", (1000, 512), "f32"), ("output.weight", (1000, 512), "f32")]
    for i in range(n):
        for part, shape in (("attn_q", (512, 512)), ("attn_k", (128, 512)), ("attn_v", (128, 512)),
                            ("attn_output", (512, 512)), ("ffn_gate", (1408, 512)), ("ffn_up", (1408, 512)),
                            ("ffn_down", (512, 1408)), ("attn_norm", (512,))):
            items.append((f"blk.{i}.{part}.weight", shape, "f32"))
    model = ModelInfo("llama", n, 4, 0)
    want = plan_types(items, mix, model)
    for _ in range(3):
        assert plan_types(rng.sample(items, len(items)), mix, model) == want
    assert plan_types(sorted(items), mix, model) == want
    assert all(want[n] == "f32" for n, s, _ in items if len(s) == 1)


def test_plan_rules_from_llama_quant_cpp() -> None:
    """Rules read off src/llama-quant.cpp, one assertion per rule."""
    def items(n: int = 16, ff: int = 1024) -> list[tuple[str, tuple[int, ...], str]]:
        out = [("token_embd.weight", (100, 512), "f32"), ("output.weight", (100, 512), "f32")]
        for i in range(n):
            out += [(f"blk.{i}.attn_v.weight", (128, 512), "f32"), (f"blk.{i}.ffn_down.weight", (512, ff), "f32"),
                    (f"blk.{i}.attn_output.weight", (512, 512), "f32"), (f"blk.{i}.attn_norm.weight", (512,), "f32")]
        return out

    m16, gqa1 = ModelInfo("llama", 16, 4), ModelInfo("llama", 16, 1)
    # Q4_0 with an imatrix: ffn_down of the first n/8 layers -> Q4_1; without: Q4_0
    p = plan_types(items(), "Q4_0", m16, Options(has_imatrix=True))
    assert [p[f"blk.{i}.ffn_down.weight"] for i in range(3)] == ["q4_1", "q4_1", "q4_0"]
    assert plan_types(items(), "Q4_0", m16)["blk.0.ffn_down.weight"] == "q4_0"
    assert plan_types(items(), "Q5_0", m16, Options(has_imatrix=True))["blk.1.ffn_down.weight"] == "q5_1"
    # IQ4_XS: attn_v -> Q5_K when GQA >= 4; ffn_down of the first n/8 layers -> Q5_K without an imatrix
    p = plan_types(items(), "IQ4_XS", m16)
    assert p["blk.5.attn_v.weight"] == "q5_k" and p["blk.1.ffn_down.weight"] == "q5_k" and p["blk.2.ffn_down.weight"] == "iq4_xs"
    assert plan_types(items(), "IQ4_XS", gqa1)["blk.5.attn_v.weight"] == "iq4_xs"
    assert plan_types(items(), "IQ4_XS", m16, Options(has_imatrix=True))["blk.1.ffn_down.weight"] == "iq4_xs"
    # Q2_K: attn_v Q4_K at GQA >= 4 else Q3_K; ffn_down and attn_output Q3_K; output Q6_K
    p = plan_types(items(), "Q2_K", m16)
    assert (p["blk.0.attn_v.weight"], p["blk.9.ffn_down.weight"], p["blk.3.attn_output.weight"], p["output.weight"]) == \
        ("q4_k", "q3_k", "q3_k", "q6_k")
    assert plan_types(items(), "Q2_K", gqa1)["blk.0.attn_v.weight"] == "q3_k"
    # Q3_K_M: the first two attn_v Q5_K, then Q4_K; ffn_down Q5_K below n/16, else Q4_K
    p = plan_types(items(), "Q3_K_M", m16)
    assert [p[f"blk.{i}.attn_v.weight"] for i in range(3)] == ["q5_k", "q5_k", "q4_k"]
    assert [p[f"blk.{i}.ffn_down.weight"] for i in range(2)] == ["q5_k", "q4_k"]
    # fallbacks: 1056-column rows: Q4_K -> Q5_0, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL; 40 columns -> F16
    odd = items(ff=1056) + [("blk.0.x.weight", (4, 40), "f32")]
    assert plan_types(odd, "Q4_K_S", m16)["blk.9.ffn_down.weight"] == "q5_0"
    assert plan_types(odd, "Q6_K", m16)["blk.9.ffn_down.weight"] == "q8_0"
    assert plan_types(odd, "IQ4_XS", m16, Options(has_imatrix=True))["blk.9.ffn_down.weight"] == "iq4_nl"
    assert plan_types(odd, "Q2_K", m16)["blk.0.x.weight"] == "f16"
    with pytest.raises(ConfigError, match="no fallback"):  # Q1_0 (block 128) has none in llama.cpp either
        plan_types(items(ff=1056), "Q1_0", m16)
    # TQ1_0: token embeddings Q4_K; MXFP4_MOE: 2-D tensors Q8_0, 3-D experts MXFP4
    assert plan_types(items(), "TQ1_0", m16)["token_embd.weight"] == "q4_k"  # an output exists: the embeddings rule
    tied = [x for x in items() if x[0] != "output.weight"]
    assert plan_types(tied, "TQ1_0", m16)["token_embd.weight"] == "q6_k"  # tied: the output's type
    assert plan_types(items(), "TQ2_0", m16, Options(token_embedding_type="q4_k"))["token_embd.weight"] == "q4_k"
    moe = items() + [("blk.0.ffn_down_exps.weight", (8, 512, 1024), "f32")]
    p = plan_types(moe, "MXFP4_MOE", ModelInfo("llama", 16, 4, 8))
    assert p["blk.0.ffn_down_exps.weight"] == "mxfp4_ggml" and p["blk.0.attn_v.weight"] == "q8_0"
    # F16 / BF16: every quantizable tensor, norms stay
    p = plan_types(items(), "BF16", m16)
    assert p["blk.0.attn_v.weight"] == "bf16" and p["blk.0.attn_norm.weight"] == "f32"
    # flags: --pure, --output-tensor-type, --leave-output-tensor, --tensor-type (regex, lower-cased, with fallbacks)
    p = plan_types(items(), "Q4_K_M", m16, Options(pure=True))
    assert {p[n] for n, s, _ in items() if len(s) == 2} == {"q4_k"}
    assert plan_types(items(), "Q4_K_M", m16, Options(output_tensor_type="q8_0"))["output.weight"] == "q8_0"
    assert plan_types(items(), "Q4_K_M", m16, Options(leave_output_tensor=True))["output.weight"] == "f32"
    p = plan_types(items(ff=1056), "Q4_K_M", m16, Options(tensor_types=[("FFN_DOWN", "q6_k"), ("attn_v", "q8_0")]))
    assert p["blk.4.ffn_down.weight"] == "q8_0" and p["blk.4.attn_v.weight"] == "q8_0"  # Q6_K falls back on 1056


# ---- whole files: order independence, order kept, metadata -----------------------------------------------

def test_quantize_file_is_tensor_order_independent(ggml: GGML, tmp_path: Path) -> None:
    outs = {}
    for order in ("llama", "lexicographic", "shuffled"):
        src = tmp_path / f"{order}.gguf"
        w = _model(src, order)
        out = tmp_path / f"{order}.q4_k_m.gguf"
        r = cli("quantize", str(src), str(out), "Q4_K_M", "--json")
        assert r.returncode == 0, r.stderr
        with G.read(out) as g:
            assert g.names() == list(w)  # the input's order is kept
            outs[order] = {t.name: (t.type_name, bytes(g.raw(t.name))) for t in g.tensors}
            assert g.metadata["general.file_type"] == 15 and list(g.metadata)[-2:] == \
                ["general.quantization_version", "general.file_type"]
    assert outs["lexicographic"] == outs["llama"] == outs["shuffled"]
    got = outs["llama"]
    assert [got[f"blk.{i}.attn_v.weight"][0] for i in range(8)] == ["q6_k", "q4_k", "q4_k", "q6_k", "q4_k", "q4_k", "q6_k", "q6_k"]
    assert got["blk.3.ffn_down.weight"][0] == "q8_0" and got["blk.1.ffn_down.weight"][0] == "q5_0"  # 288 columns
    assert got["blk.0.odd.weight"][0] == "f16" and got["output.weight"][0] == "q6_k"
    for name, (t, raw) in got.items():
        if t not in ("f32", "f16"):
            x = w[name]
            assert raw == ggml.quantize(x.reshape(-1, x.shape[-1]), t).tobytes(), name
    # --tensor-order llama: llama-quantize's order, so both inputs give the same file byte for byte
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for src, out in ((tmp_path / "lexicographic.gguf", a), (tmp_path / "shuffled.gguf", b)):
        assert cli("quantize", "--tensor-order", "llama", str(src), str(out), "q4_k_m").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert G.read(a).names() == llama_order(w)


def test_file_type_and_codec_names(tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    _model(src, n_layers=2)
    for args, ftype in ((["--codec", "IQ4_XS"], 30), (["--codec", "q8_0"], 7), (["--mix", "Q4_1"], 3), (["tq2_0"], 37),
                        (["25"], 25)):
        out = tmp_path / "o.gguf"
        r = cli("quantize", str(src), str(out), *args)
        assert r.returncode == 0, (args, r.stderr)
        with G.read(out) as g:
            assert g.metadata["general.file_type"] == ftype, args
            assert g.metadata_types["general.file_type"] == (G.UINT32, None)
            assert g.metadata["general.quantization_version"] == 2
        out.unlink()
    # --codec iq4_xs is llama-quantize --pure IQ4_XS: 288-column rows fall back to IQ4_NL, norms stay F32
    quantize_file(src, tmp_path / "p.gguf", codec=lowbit.get_codec("iq4_xs"), progress=False)
    t = _types(tmp_path / "p.gguf")
    assert t["blk.0.ffn_down.weight"] == "iq4_nl" and t["blk.0.attn_q.weight"] == "iq4_xs"
    assert t["output.weight"] == "iq4_xs" and t["blk.0.attn_norm.weight"] == "f32" and t["blk.0.odd.weight"] == "f16"


def test_convert_to_float_gguf(gemma_gguf: Path, tmp_path: Path) -> None:
    src, q = tmp_path / "f32.gguf", tmp_path / "q4_1.gguf"
    _model(src, n_layers=2)
    assert cli("quantize", str(src), str(q), "Q4_1").returncode == 0
    out = tmp_path / "back.gguf"
    r = cli("convert", str(q), str(out), "--to", "float32", "--json")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"GGUF"  # issue 15.3: was safetensors under a .gguf name
    with G.read(q) as g, G.read(out) as f:
        assert f.names() == g.names() and g.metadata["general.file_type"] == 3 and f.metadata["general.file_type"] == 0
        assert {t.type_name for t in f.tensors} == {"f32"} and "q4_1" in {t.type_name for t in g.tensors}
        for name in g.names():
            assert np.array_equal(f.decode(name).view(np.uint32), g.decode(name).astype(np.float32).view(np.uint32)), name
        assert set(f.metadata) == set(g.metadata)
    r = cli("convert", str(q), str(tmp_path / "h.gguf"), "--to", "float16")
    assert r.returncode == 0, r.stderr
    t = _types(tmp_path / "h.gguf")
    assert t["blk.0.attn_q.weight"] == "f16" and t["blk.0.attn_norm.weight"] == "f32"
    assert G.read(tmp_path / "h.gguf").metadata["general.file_type"] == 1
    for to, name in (("gguf", "x.safetensors"), ("lowbit", "x.gguf"), ("compressed-tensors", "y.gguf")):
        r = cli("convert", str(gemma_gguf), str(tmp_path / name), "--to", to)
        assert r.returncode == 2 and "lowbit: error:" in r.stderr and name in r.stderr, (to, r.stderr)
        assert not (tmp_path / name).exists()
    with pytest.raises(ConfigError, match="ends in .gguf"):
        convert_file(gemma_gguf, tmp_path / "z.gguf", to="lowbit")
    convert_file(q, tmp_path / "default.gguf", progress=False)  # no --to: the suffix picks GGUF, codes copied
    assert (tmp_path / "default.gguf").read_bytes() == q.read_bytes()


# ---- split files -----------------------------------------------------------------------------------------

def _split_with_gguf_py(d: Path, w: dict[str, np.ndarray], max_tensors: int) -> list[Path]:
    from gguf import GGUFWriter

    gw = GGUFWriter(str(d / "m.gguf"), "llama", split_max_tensors=max_tensors)
    gw.add_block_count(8)
    for n, a in w.items():
        gw.add_tensor(n, a)
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    return sorted(d.glob("m-*-of-*.gguf"))


def test_split_files_read_whole_or_refused(tmp_path: Path) -> None:
    w = _model(tmp_path / "single.gguf", n_layers=3)
    d = tmp_path / "s"
    d.mkdir()
    shards = _split_with_gguf_py(d, w, max_tensors=10)
    assert len(shards) == 3
    for shard in shards:  # any shard reads as the whole model
        with lowbit.open_file(shard) as g:
            assert g.names() == list(w) and not any(k.startswith("split.") for k in g.metadata)
            assert all(np.array_equal(g.decode(n), a) for n, a in w.items())
    assert set(lowbit.load(shards[1])) == set(w)
    # quantized from a shard: one file, no split.* keys, every tensor
    out = tmp_path / "q.gguf"
    assert cli("quantize", str(shards[2]), str(out), "Q8_0").returncode == 0
    with G.read(out) as g:
        assert len(g.tensors) == len(w) and not any(k.startswith("split.") for k in g.metadata)
    convert_file(shards[0], tmp_path / "c.gguf")
    with G.read(tmp_path / "c.gguf") as g:
        assert len(g.tensors) == len(w) and not any(k.startswith("split.") for k in g.metadata)
    # a missing shard is named
    shards[1].rename(tmp_path / "away.gguf")
    with pytest.raises(FormatError, match="missing .*m-00002-of-00003.gguf"):
        lowbit.open_file(shards[0])
    r = cli("quantize", str(shards[0]), str(tmp_path / "x.gguf"), "Q8_0")
    assert r.returncode == 2 and "m-00002-of-00003.gguf" in r.stderr and not (tmp_path / "x.gguf").exists()
    # a renamed shard cannot find its siblings: refused, not read as a part
    (tmp_path / "away.gguf").rename(tmp_path / "renamed.gguf")
    with pytest.raises(FormatError, match="does not follow"):
        lowbit.open_file(tmp_path / "renamed.gguf")


def test_split_writing_like_llama_gguf_split(tmp_path: Path) -> None:
    from gguf import GGUFReader

    w = _model(tmp_path / "single.gguf", n_layers=3)
    r = cli("quantize", str(tmp_path / "single.gguf"), str(tmp_path / "out.gguf"), "Q8_0", "--split-max-tensors", "10")
    assert r.returncode == 0, r.stderr
    shards = sorted(tmp_path.glob("out-*-of-*.gguf"))
    assert [p.name for p in shards] == [f"out-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    names = []
    for i, p in enumerate(shards):
        ref = GGUFReader(str(p))
        f = ref.fields
        assert (int(f["split.no"].parts[-1][0]), int(f["split.count"].parts[-1][0]),
                int(f["split.tensors.count"].parts[-1][0])) == (i, 3, len(w))
        assert ("general.architecture" in f) == (i == 0)  # metadata in the first shard only
        names += [t.name for t in ref.tensors]
        assert len(ref.tensors) == (10 if i < 2 else len(w) - 20)
    assert names == list(w)
    # gguf-py's splitter cuts at the same places
    d = tmp_path / "ref"
    d.mkdir()
    ref_shards = _split_with_gguf_py(d, w, max_tensors=10)
    assert [[t.name for t in GGUFReader(str(p)).tensors] for p in ref_shards] == \
        [[t.name for t in GGUFReader(str(p)).tensors] for p in shards]
    # --keep-split: the input's shards; by size: no shard over the limit
    r = cli("quantize", "--keep-split", "--allow-requantize", str(shards[0]), str(tmp_path / "k.gguf"), "Q4_0")
    assert r.returncode == 0, r.stderr
    kept = sorted(tmp_path.glob("k-*-of-*.gguf"))
    assert [[t.name for t in GGUFReader(str(p)).tensors] for p in kept] == names_by_shard(shards)
    assert cli("quantize", "--keep-split", str(tmp_path / "single.gguf"), str(tmp_path / "one.gguf"), "Q8_0").returncode == 0
    with G.read(tmp_path / "one-00001-of-00001.gguf") as g:  # as llama-quantize names it; no split.* keys
        assert len(g.tensors) == len(w) and not any(k.startswith("split.") for k in g.metadata)
    assert not (tmp_path / "one.gguf").exists()
    assert cli("quantize", str(tmp_path / "single.gguf"), str(tmp_path / "z.gguf"), "F16", "--split-max-size", "1M").returncode == 0
    sized = sorted(tmp_path.glob("z-*-of-*.gguf"))
    assert len(sized) >= 2
    for p in sized:
        assert sum(-(-int(t.n_bytes) // 32) * 32 for t in GGUFReader(str(p)).tensors) <= 10**6
    with lowbit.open_file(sized[-1]) as g:
        assert g.names() == list(w)
    with pytest.raises(ConfigError, match="alone exceeds"):
        gguf_split.plan_shards([("a", "f32", (1000,))], max_size=100)


def names_by_shard(paths: list[Path]) -> list[list[str]]:
    from gguf import GGUFReader

    return [[t.name for t in GGUFReader(str(p)).tensors] for p in paths]


# ---- llama-quantize's flags ------------------------------------------------------------------------------

def test_llama_quantize_flags(ggml: GGML, tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    w = _model(src, n_layers=8)
    out = tmp_path / "o.gguf"
    tt = tmp_path / "tt.txt"
    tt.write_text("attn_q=Q8_0\n  ffn_up=q5_k  ")
    r = cli("quantize", "--pure", "--output-tensor-type", "q8_0", "--token-embedding-type", "Q4_K", "--tensor-type", "attn_k=q6_k",
            "--tensor-type-file", str(tt), "--override-kv", "llama.context_length=int:4096",
            "--override-kv", "general.name=str:tiny", str(src), str(out), "Q4_K_M", "2")
    assert r.returncode == 0, r.stderr
    t = _types(out)
    assert t["output.weight"] == "q8_0" and t["token_embd.weight"] == "q4_k"
    assert t["blk.3.attn_k.weight"] == "q6_k" and t["blk.3.attn_q.weight"] == "q8_0"
    assert t["blk.3.ffn_up.weight"] == "q5_k"  # 256-column rows: Q5_K fits
    with G.read(out) as g:
        assert g.metadata["llama.context_length"] == 4096 and g.metadata["general.name"] == "tiny"
        assert list(g.metadata)[-2:] == ["llama.context_length", "general.name"]
        assert t["blk.0.attn_v.weight"] == "q4_k"  # --pure: no use_more_bits bump
    # --leave-output-tensor; IN TYPE form writes ggml-model-TYPE.gguf beside the input
    assert cli("quantize", "--leave-output-tensor", str(src), "Q8_0").returncode == 0
    t = _types(tmp_path / "ggml-model-Q8_0.gguf")
    assert t["output.weight"] == "f32" and t["blk.0.attn_q.weight"] == "q8_0"
    # --dry-run writes nothing
    r = cli("quantize", "--dry-run", str(src), "Q4_K_M", "--json")
    assert r.returncode == 0 and {d["name"] for d in json.loads(r.stdout)} == set(w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f32.gguf", "ggml-model-Q8_0.gguf", "o.gguf", "tt.txt"]
    # requantizing needs --allow-requantize; bad values name the flag; nothing is left behind
    for inp, args, word in ((out, ["Q4_K_M"], "--allow-requantize"), (out, ["Q4_K_M", "--tensor-type", "attn_q"], "--tensor-type"),
                            (out, ["Q4_K_M", "--output-tensor-type", "q9_k"], "--output-tensor-type"),
                            (out, ["Q4_K_M", "--override-kv", "a=long:1"], "--override-kv"), (out, ["Q9_X"], "TYPE"),
                            (src, ["IQ2_XS"], "requires an importance matrix"), (src, ["Q8_0", "--split-max-size", "9K"], "--split-max-size")):
        r = cli("quantize", str(inp), str(tmp_path / "bad.gguf"), *args)
        assert r.returncode == 2 and word in r.stderr, (args, r.stderr)
        assert not (tmp_path / "bad.gguf").exists()
    r = cli("quantize", "--allow-requantize", str(tmp_path / "o.gguf"), str(tmp_path / "re.gguf"), "Q8_0")
    assert r.returncode == 0, r.stderr
    assert _types(tmp_path / "re.gguf")["blk.0.attn_q.weight"] == "q8_0"
    assert _types(tmp_path / "re.gguf")["output.weight"] == "q8_0"  # was q8_0 already: copied


def test_imatrix_choices_and_metadata(ggml: GGML, tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    w = _model(src, n_layers=16)
    rng = np.random.default_rng(7)
    sums = {n: (4, (rng.random(a.shape[-1]) ** 2 * 50).astype(np.float32)) for n, a in w.items() if a.ndim == 2}
    imx = tmp_path / "imatrix.dat"
    write_imatrix_dat(imx, sums, dataset="wiki.train.raw")
    raw = imx.read_bytes()
    imx.write_bytes(raw[: len(raw) - len(b"wiki.train.raw") - 8] + np.array([37], "<i4").tobytes()
                    + np.array([14], "<i4").tobytes() + b"wiki.train.raw")  # 37 chunks
    out = tmp_path / "q4_0.gguf"
    r = cli("quantize", "--imatrix", str(imx), str(src), str(out), "Q4_0")
    assert r.returncode == 0, r.stderr
    with G.read(out) as g:
        m = g.metadata
        assert (m["quantize.imatrix.file"], m["quantize.imatrix.dataset"], m["quantize.imatrix.entries_count"],
                m["quantize.imatrix.chunks_count"]) == (str(imx), "wiki.train.raw", len(sums), 37)
        assert list(m)[-4:] == ["quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                                "quantize.imatrix.chunks_count"]
        types = {t.name: t.type_name for t in g.tensors}
        assert [types[f"blk.{i}.ffn_down.weight"] for i in range(3)] == ["q4_1", "q4_1", "q4_0"]
        for name in ("blk.0.ffn_down.weight", "blk.5.attn_q.weight", "blk.1.ffn_down.weight"):
            x, t = w[name], types[name]
            imp = sums[name][1] / np.float32(4)
            assert np.array_equal(g.raw(name).reshape(x.shape[0], -1), ggml.quantize(x, t, imp)), name
    # --exclude-weights: those tensors quantized without weights (the others keep theirs)
    r = cli("quantize", "--imatrix", str(imx), "--exclude-weights", "ffn_down", str(src), str(tmp_path / "x.gguf"), "Q4_0")
    assert r.returncode == 0, r.stderr
    with G.read(tmp_path / "x.gguf") as g:
        n_down = sum("ffn_down" in n for n in sums)
        assert g.metadata["quantize.imatrix.entries_count"] == len(sums) - n_down
        assert g.tensor("blk.0.ffn_down.weight").type_name == "q4_1"  # still an imatrix run
        x = w["blk.0.ffn_down.weight"]
        assert np.array_equal(g.raw("blk.0.ffn_down.weight").reshape(x.shape[0], -1), ggml.quantize(x, "q4_1"))
        x = w["blk.0.attn_q.weight"]
        assert np.array_equal(g.raw("blk.0.attn_q.weight").reshape(x.shape[0], -1),
                              ggml.quantize(x, "q4_0", sums["blk.0.attn_q.weight"][1] / np.float32(4)))
    r = cli("quantize", "--imatrix", str(imx), "--include-weights", "a", "--exclude-weights", "b", str(src), str(tmp_path / "y.gguf"), "Q4_0")
    assert r.returncode == 2 and "cannot be used together" in r.stderr and not (tmp_path / "y.gguf").exists()
    no_imx = _types(tmp_path / "n.gguf") if cli("quantize", str(src), str(tmp_path / "n.gguf"), "Q4_0").returncode == 0 else {}
    assert no_imx["blk.0.ffn_down.weight"] == "q4_0"
    bare = tmp_path / "bare.gguf"  # a GGUF imatrix without imatrix.datasets / chunk_count / chunk_size
    G.save(bare, {"blk.0.attn_q.weight.in_sum2": np.ones((1, 256), np.float32),
                  "blk.0.attn_q.weight.counts": np.ones((1, 1), np.float32)}, {"general.type": "imatrix"})
    r = cli("quantize", "--imatrix", str(bare), str(src), str(tmp_path / "b.gguf"), "Q4_0")
    assert r.returncode == 2 and "missing imatrix metadata" in r.stderr and not (tmp_path / "b.gguf").exists()
    r = cli("quantize", str(src), str(tmp_path / "qs.gguf"), "Q2_K_S")
    assert r.returncode == 2 and "importance matrix" in r.stderr and not (tmp_path / "qs.gguf").exists()


def test_bad_input_is_a_lowbit_error(tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    _model(src, n_layers=1)
    for kw in ({"mix": "Q4_K_M", "tensor_order": "random"}, {"mix": "nope"}, {"mix": "Q8_0", "split_max_tensors": 0}):
        with pytest.raises(LowbitError):
            quantize_file(src, tmp_path / "x.gguf", progress=False, **kw)
    with pytest.raises(ConfigError, match="same"):
        quantize_file(src, src, mix="Q8_0", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f32.gguf"]


def test_moe_experts_with_per_expert_imatrix(ggml: GGML, tmp_path: Path) -> None:
    """MXFP4_MOE: 3-D expert tensors MXFP4, everything else Q8_0; a GGUF imatrix with one row
    of sums and one count per expert weights each expert with its own row, as llama-quantize."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(11)
    E, d, ff = 4, 256, 64
    w = {"token_embd.weight": rng.standard_normal((50, d)), "output.weight": rng.standard_normal((50, d)) * 0.1}
    for i in range(2):
        w[f"blk.{i}.attn_q.weight"] = rng.standard_normal((d, d)) * 0.05
        w[f"blk.{i}.ffn_gate_inp.weight"] = rng.standard_normal((E, d)) * 0.05
        w[f"blk.{i}.ffn_down_exps.weight"] = rng.standard_normal((E, d, ff)) * 0.05
        w[f"blk.{i}.ffn_up_exps.weight"] = rng.standard_normal((E, ff, d)) * 0.05
    w = {k: v.astype(np.float32) for k, v in w.items()}
    src = tmp_path / "moe.gguf"
    gw = GGUFWriter(str(src), "qwen3moe")
    gw.add_block_count(2)
    gw.add_expert_count(E)
    for n, a in w.items():
        gw.add_tensor(n, a)
    gw.write_header_to_file(); gw.write_kv_data_to_file(); gw.write_tensors_to_file(); gw.close()
    sums = {n: (rng.random((E, a.shape[-1])) * 9).astype(np.float32) for n, a in w.items() if "exps" in n}
    counts = {n: rng.integers(0, 5, (E, 1)).astype(np.float32) for n in sums}
    counts["blk.0.ffn_up_exps.weight"][2] = 0  # no tokens routed: weight 1 for that expert
    imx = tmp_path / "imatrix.gguf"
    G.save(imx, {**{n + ".in_sum2": s for n, s in sums.items()}, **{n + ".counts": c for n, c in counts.items()}},
           {"general.type": "imatrix", "imatrix.datasets": ["calib.txt"], "imatrix.chunk_count": 5, "imatrix.chunk_size": 512})
    out = tmp_path / "q.gguf"
    r = cli("quantize", "--imatrix", str(imx), str(src), str(out), "MXFP4_MOE")
    assert r.returncode == 0, r.stderr
    with G.read(out) as g:
        types = {t.name: t.type_name for t in g.tensors}
        assert types["blk.0.ffn_down_exps.weight"] == "mxfp4_ggml" and types["blk.1.attn_q.weight"] == "q8_0"
        assert types["output.weight"] == "q8_0" and types["blk.0.ffn_gate_inp.weight"] == "f32"
        assert g.metadata["general.file_type"] == 38 and g.metadata["quantize.imatrix.chunks_count"] == 5
        assert g.metadata["quantize.imatrix.dataset"] == "calib.txt"
        for name in sums:  # ggml's MXFP4 quantizer takes no importance weights
            x = w[name]
            got = g.raw(name).reshape(E, x.shape[1], -1)
            assert all(np.array_equal(got[e], ggml.quantize(x[e], "mxfp4_ggml")) for e in range(E)), name
    # a type that uses them: each expert with its own row
    r = cli("quantize", "--imatrix", str(imx), "--tensor-type", "_exps=q4_k", str(src), str(out), "MXFP4_MOE")
    assert r.returncode == 0, r.stderr
    with G.read(out) as g:
        for name in sums:
            x, t = w[name], g.tensor(name).type_name
            assert t == ("q5_0" if "down" in name else "q4_k"), name  # 64-column rows fall back
            c = counts[name][:, 0]
            imp = np.where(c[:, None] > 0, sums[name] / np.where(c > 0, c, 1)[:, None], np.float32(1)).astype(np.float32)
            got = g.raw(name).reshape(E, x.shape[1], -1)
            for e in range(E):
                assert np.array_equal(got[e], ggml.quantize(x[e], t, imp[e])), (name, e)
            assert not np.array_equal(got[1], ggml.quantize(x[1], t, imp[0]))


def test_prune_layers(ggml: GGML, tmp_path: Path) -> None:
    src = tmp_path / "f32.gguf"
    w = _model(src, "lexicographic", n_layers=8)
    imx = tmp_path / "imatrix.dat"
    sums = {n: (2, (np.random.default_rng(2).random(a.shape[-1]) * 4).astype(np.float32)) for n, a in w.items() if a.ndim == 2}
    write_imatrix_dat(imx, sums)
    out = tmp_path / "p.gguf"
    r = cli("quantize", "--prune-layers", "5,2,5", "--imatrix", str(imx), str(src), str(out), "Q4_K_M")
    assert r.returncode == 0, r.stderr
    with G.read(out) as g:
        assert g.metadata["llama.block_count"] == 6 and list(g.metadata)[-1] == "llama.block_count"
        old_of = {0: 0, 1: 1, 2: 3, 3: 4, 4: 6, 5: 7}
        assert sorted({int(n.split(".")[1]) for n in g.names() if n.startswith("blk.")}) == list(old_of)
        assert len(g.tensors) == len(w) - 2 * 8  # two layers of 8 tensors
        # types from llama.cpp's rules on the renamed tensors (n_layer as the file says: 8); bytes from the
        # original layer's values with the original layer's imatrix entry
        for new, old in old_of.items():
            name, orig = f"blk.{new}.attn_q.weight", f"blk.{old}.attn_q.weight"
            t = g.tensor(name).type_name
            want = ggml.quantize(w[orig], t, sums[orig][1] / np.float32(2))
            assert np.array_equal(g.raw(name).reshape(want.shape), want), name
        # use_more_bits over the 6 attention-V tensors left: i >= 7*6/8 or (i - 6/8) % 3 == 2
        assert [g.tensor(f"blk.{i}.attn_v.weight").type_name for i in range(6)] == ["q4_k", "q4_k", "q6_k", "q4_k", "q4_k", "q6_k"]
    r = cli("quantize", "--prune-layers", "1,x", str(src), str(tmp_path / "bad.gguf"), "Q8_0")
    assert r.returncode == 2 and "--prune-layers" in r.stderr and not (tmp_path / "bad.gguf").exists()


def test_a_llama_quantize_file_requantized_to_its_own_type_is_reproduced(gemma_gguf: Path, tmp_path: Path) -> None:
    """gemma-3-270m Q4_K_M is llama-quantize output: quantizing it to Q4_K_M again keeps every type,
    so llama-quantize would write it back unchanged (tensor table, data, key order). So does lowbit,
    byte for byte, from its file order and from a shuffled copy with --tensor-order llama."""
    out = tmp_path / "again.gguf"
    r = cli("quantize", str(gemma_gguf), str(out), "Q4_K_M")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == gemma_gguf.read_bytes()
    with G.read(gemma_gguf) as g:
        names = random.Random(4).sample(g.names(), len(g.tensors))
        G.save(tmp_path / "shuffled.gguf", {n: g.get(n, copy=False) for n in names}, g.metadata,
               metadata_types=g.metadata_types)
    out2 = tmp_path / "again2.gguf"
    r = cli("quantize", "--tensor-order", "llama", str(tmp_path / "shuffled.gguf"), str(out2), "q4_k_m")
    assert r.returncode == 0, r.stderr
    assert out2.read_bytes() == gemma_gguf.read_bytes()


def test_trailing_unit_dims_recorded_as_ggml_does(tmp_path: Path) -> None:
    """A tensor stored as ne = [64, 1] is one-dimensional for ggml: never quantized, and
    llama-quantize records it with one dimension; a plain conversion keeps the file's shape."""
    src = tmp_path / "a.gguf"
    G.save(src, {"blk.0.ssm_a.weight": np.ones((1, 64), np.float32), "blk.0.y.weight": np.ones((2, 64), np.float32)},
           {"general.architecture": "llama"})
    quantize_file(src, tmp_path / "q.gguf", mix="Q8_0", progress=False)
    with G.read(tmp_path / "q.gguf") as g:
        assert [(t.shape, t.type_name) for t in g.tensors] == [((64,), "f32"), ((2, 64), "q8_0")]
    convert_file(src, tmp_path / "c.gguf", progress=False)
    assert (tmp_path / "c.gguf").read_bytes() == src.read_bytes()


#: llama-quantize's i-quant mixes (its usage list); each runs once lowbit encodes every type the mix picks
IQ_MIXES = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"]


@pytest.mark.parametrize("mix", IQ_MIXES)
def test_iq_mixes_with_an_imatrix_give_ggml_bytes(ggml: GGML, tmp_path: Path, mix: str) -> None:
    """Issue 21: ``lowbit quantize --imatrix IM IN OUT IQ3_M`` (a llama-quantize command line) picks the
    per-tensor types of llama.cpp's rules (plan_types, checked against llama-quant.cpp above) and
    every tensor's bytes are ggml's quantizer's with that tensor's imatrix row; without an imatrix
    the types that llama.cpp requires one for are refused and nothing is written."""
    from lowbit.formats.gguf import codec_types
    from lowbit.tools.mixes import parse_ftype

    src = tmp_path / "f32.gguf"
    w = _model(src, n_layers=4)
    model = ModelInfo.from_metadata(G.read(src).metadata, list(w))
    want_types = plan_types([(n, a.shape, "f32") for n, a in w.items()], parse_ftype(mix, "mix")[1], model,
                            Options(has_imatrix=True))
    missing = sorted({t for t in want_types.values() if t not in codec_types() and t not in ("f32", "f16", "bf16")})
    assert not missing, f"{mix}: lowbit does not encode {missing}"
    rng = np.random.default_rng(11)
    sums = {n: (2, (rng.random(a.shape[-1]) ** 2 * 20 + 0.01).astype(np.float32)) for n, a in w.items() if a.ndim == 2}
    imx = tmp_path / "imatrix.dat"
    write_imatrix_dat(imx, sums, dataset="calib.txt")
    out = tmp_path / "out.gguf"
    r = cli("quantize", "--imatrix", str(imx), str(src), str(out), mix, "2")
    assert r.returncode == 0, r.stderr
    with G.read(out) as g:
        assert g.metadata["general.file_type"] == parse_ftype(mix, "mix")[1]
        assert [t.name for t in g.tensors] == list(w)  # the input's order
        for t in g.tensors:
            assert t.type_name == want_types[t.name], t.name
            x = w[t.name]
            if t.type_name in ("f32", "f16", "bf16"):
                continue
            imp = sums[t.name][1] / np.float32(2)
            assert np.array_equal(g.raw(t.name).reshape(x.shape[0], -1), ggml.quantize(x, t.type_name, imp)), t.name
    no = tmp_path / "no.gguf"
    needs = any(t in ("iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s") for t in want_types.values())
    r = cli("quantize", str(src), str(no), mix)
    if needs:
        assert r.returncode == 2 and "requires an importance matrix" in r.stderr and not no.exists(), r.stderr


@pytest.mark.parametrize("cid", ["q4_k", "iq4_xs", "q8_0"])
def test_max_buffer_slabs_give_the_whole_tensor_bytes(cid: str) -> None:
    """--max-buffer-size: a tensor encoded a few rows at a time (slabs that do not divide an
    expert's rows, never spanning two experts, a float16 source converted slab by slab) has the
    bytes of the whole-tensor encode, per-expert importance included; the slab count follows
    llama-quantize's rule (source + code + float32 row)."""
    from lowbit.tools.quantize import _encode_slabs, _slab_rows

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 8, 256)).astype(np.float16)  # 3 experts of 8 rows
    w = rng.random((3, 256)).astype(np.float32) + 0.1
    codec = lowbit.get_codec(cid)
    whole = np.stack([np.asarray(codec.encode(x[e].astype(np.float32), backend="cpu", importance=w[e]).data)
                      for e in range(3)])
    per_row = 256 * 2 + np.asarray(whole).shape[-1] + 256 * 4
    assert _slab_rows(x, codec, 5 * per_row + 1) == 5 and _slab_rows(x, codec, 24 * per_row) is None
    assert _slab_rows(x, codec, 1) == 1  # at least one row
    for slab in (1, 5, 7, 8, 23):
        got = _encode_slabs(x, codec, w, slab)
        assert got.shape == whole.shape and got.tobytes() == whole.tobytes(), slab
    one = np.asarray(codec.encode(x.reshape(24, 256).astype(np.float32), backend="cpu").data)
    assert _encode_slabs(x, codec, None, 5).reshape(24, -1).tobytes() == one.tobytes()
