"""Checkpoint layouts from the wild (issue 7 item 2), checked against the producers' own code:

* compressed-tensors 0.20 (NVFP4 files written by its compressor; our NVFP4 / MXFP4 / FP8-block
  files decompressed by its compressors),
* bitsandbytes 0.50 CPU (``Linear4bit`` state dicts saved with safetensors; ``QuantState.from_dict``
  + ``dequantize_4bit`` on files we write),
* torchao 0.18 (NVFP4 in ModelOpt's convention: ``weight_scale_2`` is torchao's per-tensor scale;
  OCP MXFP4 blocks for gpt-oss files), transformers' gpt-oss dequantizer,
* gguf-py (GGUF MXFP4 blocks),

plus byte-identical round trips ours → theirs → ours and theirs → ours → theirs.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.errors import LowbitError
from lowbit.formats import bnb_state, compressed_tensors_fp as ctf, gptoss, layouts, modelopt
from lowbit.tools import blockscaled_oracles as BO

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def _weights(rows: int, cols: int, seed: int) -> np.ndarray:
    """Rows on different scales, one all-zero block, a few exact E2M1 midpoints."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * np.exp(rng.standard_normal((rows, 1))).astype(np.float32)
    w[0, :32] = 0.0
    w[1, :8] = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -6.0]
    return w


def _bits(a) -> np.ndarray:
    a = a.detach().float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float32)
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _same(a, b) -> bool:
    return _bits(a).shape == _bits(b).shape and bool((_bits(a) == _bits(b)).all())


def _bf16(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(torch.bfloat16)


def _raw(t) -> tuple[str, tuple, bytes]:
    """(dtype name, shape, bytes) of a numpy array or torch tensor."""
    a = layouts.as_numpy(t)
    return a.dtype.name, tuple(a.shape), np.ascontiguousarray(a).tobytes()


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b), (sorted(a), sorted(b))
    for k in a:
        assert _raw(a[k]) == _raw(b[k]), k


def _assert_same_q(a, b) -> None:
    assert a.codec == b.codec and a.shape == b.shape
    assert a.data.tobytes() == b.data.tobytes()
    assert sorted(a.aux) == sorted(b.aux)
    for k in a.aux:
        assert _raw(np.asarray(a.aux[k])) == _raw(np.asarray(b.aux[k])), k


# ---- compressed-tensors -------------------------------------------------------------------------------

ct = pytest.importorskip("compressed_tensors")


def _ct_scheme(group: dict):
    from compressed_tensors.quantization import QuantizationScheme

    return QuantizationScheme.model_validate({k: v for k, v in group.items() if k != "format"})


def _ct_nvfp4_module(w: np.ndarray) -> tuple[dict, dict]:
    """compressed-tensors' own NVFP4 path: generate_gparam, calculate_qparams, then
    NVFP4PackedCompressor.compress; returns (module state dict, the preset scheme as config)."""
    from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    scheme = preset_name_to_scheme("NVFP4A16", ["Linear"])
    t = torch.from_numpy(w)
    g = generate_gparam(t.min(), t.max())
    tg = t.reshape(t.shape[0], -1, 16)
    sc, _ = calculate_qparams(tg.amin(-1), tg.amax(-1), scheme.weights, global_scale=g)
    sd = NVFP4PackedCompressor.compress({"weight": t, "weight_scale": sc, "weight_global_scale": g}, scheme)
    qcfg = QuantizationConfig(config_groups={"group_0": scheme}, format="nvfp4-pack-quantized",
                              quantization_status="compressed")
    return dict(sd), qcfg.model_dump(mode="json")


def test_ct_nvfp4_file_from_compressed_tensors_decodes_like_ct(tmp_path: Path) -> None:
    from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    w = _weights(48, 128, 1)
    sd, cfg = _ct_nvfp4_module(w)
    assert sd["weight_scale"].dtype == torch.float8_e4m3fn and sd["weight_packed"].dtype == torch.uint8
    theirs = {f"model.fc.{k}": v for k, v in sd.items()}
    theirs["model.fc.bias"] = torch.zeros(48)
    path = tmp_path / "ct.safetensors"
    st_torch.save_file(theirs, str(path), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": cfg}))

    ours, layout, config = layouts.load_layout(path)   # config from the config.json sidecar
    assert layout == "compressed-tensors" and config["format"] == "nvfp4-pack-quantized"
    q = ours["model.fc.weight"]
    assert q.codec == lowbit.get_codec("nvfp4", recipe="compressed_tensors") and q.shape == w.shape
    y = lowbit.decode(q)
    # CT's dequantize in float32 (its arithmetic: scale / global_scale, then times the code)
    scheme = _ct_scheme(cfg["config_groups"]["group_0"])
    unpacked = unpack_fp4_from_uint8(sd["weight_packed"], 48, 128, dtype=torch.float32)
    ref32 = dequantize(unpacked, sd["weight_scale"].to(torch.float32), None, scheme.weights, dtype=torch.float32,
                       global_scale=sd["weight_global_scale"])
    assert _same(y, ref32)
    # CT's decompressor (bfloat16 output) equals our float32 decode rounded to bfloat16
    dec = NVFP4PackedCompressor.decompress(dict(sd), scheme)["weight"]
    assert dec.dtype == torch.bfloat16 and torch.equal(dec, _bf16(y))
    # and it is lowbit's own encoding of the same weight with the compressed_tensors recipe
    mine = lowbit.encode(w, "nvfp4", recipe="compressed_tensors")
    assert q.data.tobytes() == mine.data.tobytes() and _same(q.aux["global_scale"], mine.aux["global_scale"])
    # theirs -> ours -> theirs: every tensor with its bytes, dtype and shape
    info: dict = {}
    back, cfg2 = ctf.to_compressed_tensors(ctf.from_compressed_tensors(theirs, cfg, info=info), info=info)
    _assert_same_tensors(theirs, back)
    assert cfg2["format"] == "nvfp4-pack-quantized"


@pytest.mark.parametrize("recipe", ["compressed_tensors", "torchao"])
def test_ct_nvfp4_written_by_us_loads_in_compressed_tensors(tmp_path: Path, recipe: str) -> None:
    from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor

    w = _weights(32, 64, 2)
    # a power-of-two global converts between the conventions exactly
    q = lowbit.encode(w, "nvfp4", recipe=recipe, global_scale=0.25 if recipe == "torchao" else 4.0)
    path = tmp_path / "ours.safetensors"
    cfg = layouts.save_layout(path, {"dec.weight": q, "dec.bias": np.ones(32, np.float32)}, "compressed-tensors")
    theirs = st_torch.load_file(str(path))
    assert theirs["dec.weight_scale"].dtype == torch.float8_e4m3fn and theirs["dec.weight_global_scale"].shape == (1,)
    scheme = _ct_scheme(cfg["config_groups"]["group_0"])
    mod = {k[len("dec."):]: v for k, v in theirs.items() if k.startswith("dec.weight")}
    dec = NVFP4PackedCompressor.decompress(mod, scheme)["weight"]
    assert torch.equal(dec, _bf16(lowbit.decode(q)))
    back, layout, _ = layouts.load_layout(path)
    expect = modelopt.convert_nvfp4_recipe(q, "compressed_tensors")
    _assert_same_q(back["dec.weight"], expect)
    assert np.array_equal(back["dec.bias"], np.ones(32, np.float32))
    # ours -> theirs -> ours -> theirs: the file is rewritten byte for byte
    path2 = tmp_path / "again.safetensors"
    layouts.save_layout(path2, back, "compressed-tensors")
    assert path.read_bytes() == path2.read_bytes()


def test_nvfp4_global_reciprocal_refused_when_inexact() -> None:
    w = _weights(16, 64, 3)
    q = lowbit.encode(w, "nvfp4", recipe="compressed_tensors")
    g = float(q.aux["global_scale"])
    r = np.float32(1) / np.float32(g)
    if lowbit.decode(q).tobytes() == lowbit.decode(modelopt.convert_nvfp4_recipe(q, "torchao", allow_global_rounding=True)).tobytes():
        pytest.skip(f"global {g} happens to have an exact reciprocal {r}")
    with pytest.raises(LowbitError, match="reciprocal"):
        modelopt.to_modelopt({"w": q})
    st, _ = modelopt.to_modelopt({"w": q}, allow_global_rounding=True)
    y = lowbit.decode(modelopt.from_modelopt(st)["w"])
    assert np.allclose(y, lowbit.decode(q), rtol=2**-22, atol=0)


def test_ct_mxfp4_written_by_us_loads_in_compressed_tensors(tmp_path: Path) -> None:
    from compressed_tensors.compressors.mxfp4 import MXFP4PackedCompressor

    w = _weights(24, 96, 4)
    q = lowbit.encode(w, "mxfp4", scale_rounding="even")
    path = tmp_path / "mx.safetensors"
    cfg = layouts.save_layout(path, {"m.weight": q}, "compressed-tensors")
    assert cfg["format"] == "mxfp4-pack-quantized"
    theirs = st_torch.load_file(str(path))
    scheme = _ct_scheme(cfg["config_groups"]["group_0"])
    dec = MXFP4PackedCompressor.decompress({k[2:]: v for k, v in theirs.items()}, scheme)["weight"]
    assert torch.equal(dec, _bf16(lowbit.decode(q)))
    back, layout, _ = layouts.load_layout(path)
    assert layout == "compressed-tensors"
    _assert_same_q(back["m.weight"], q)


@pytest.mark.parametrize("scale_dtype", ["float32", "bfloat16"])
def test_ct_fp8_block_written_by_us_loads_in_compressed_tensors(tmp_path: Path, scale_dtype: str) -> None:
    from compressed_tensors.compressors.naive_quantized import FloatQuantizationCompressor

    w = _weights(200, 300, 5)   # not multiples of 128: partial edge blocks
    q = lowbit.encode(w, "fp8_e4m3", scale="block:128x128")
    if scale_dtype == "bfloat16":  # bf16 scales, as FP8_BLOCK checkpoints of bf16 models store them
        s = torch.from_numpy(q.aux["scale"]).to(torch.bfloat16).float().numpy()
        q = lowbit.QTensor(q.data, {"scale": s}, q.shape, q.codec)
    path = tmp_path / "fp8.safetensors"
    cfg = layouts.save_layout(path, {"p.weight": q}, "compressed-tensors", scale_dtype=scale_dtype)
    grp = cfg["config_groups"]["group_0"]
    assert cfg["format"] == "float-quantized" and grp["weights"]["block_structure"] == [128, 128]
    theirs = st_torch.load_file(str(path))
    assert theirs["p.weight"].dtype == torch.float8_e4m3fn and theirs["p.weight_scale"].shape == (2, 3)
    assert str(theirs["p.weight_scale"].dtype) == f"torch.{scale_dtype}"
    scheme = _ct_scheme(grp)
    dec = FloatQuantizationCompressor.decompress({k[2:]: v for k, v in theirs.items()}, scheme)["weight"]
    y = lowbit.decode(q)
    if scale_dtype == "float32":
        assert _same(dec, y)
    else:  # CT multiplies in the scale's dtype: one bf16 rounding of the exact float32 product
        assert torch.equal(dec, _bf16(y))
    info: dict = {}
    back = ctf.from_compressed_tensors(theirs, cfg, info=info)
    _assert_same_q(back["p.weight"], q)
    again, _ = ctf.to_compressed_tensors(back, info=info)
    _assert_same_tensors(theirs, again)


def test_ct_fp8_channel_and_refusals() -> None:
    w = _weights(8, 32, 6)
    q = lowbit.encode(w, "fp8_e4m3", scale="channel")
    st, cfg = ctf.to_compressed_tensors({"c.weight": q})
    assert st["c.weight_scale"].shape == (8, 1) and cfg["config_groups"]["group_0"]["weights"]["strategy"] == "channel"
    _assert_same_q(ctf.from_compressed_tensors(st, cfg)["c.weight"], q)
    with pytest.raises(LowbitError, match="no compressed-tensors float layout"):
        ctf.to_compressed_tensors({"x": lowbit.encode(w, "nf4", blocksize=32)})
    bad = dict(st)
    bad["c.weight_scale"] = np.ones((3, 3), np.float32)
    with pytest.raises(LowbitError, match="scale shape"):
        ctf.from_compressed_tensors(bad)


# ---- ModelOpt ------------------------------------------------------------------------------------

def test_modelopt_file_decodes_like_torchao_multiplier_convention(tmp_path: Path) -> None:
    """torchao's NVFP4 (qdata, E4M3 scales, per_tensor_scale multiplier) is ModelOpt's stored
    form (weight, weight_scale, weight_scale_2); its dequantize is the reference."""
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    w = _weights(32, 128, 7)
    t = torch.from_numpy(w)
    pts = per_tensor_amax_to_scale(t.abs().max())
    n = NVFP4Tensor.to_nvfp4(t, per_tensor_scale=pts)
    theirs = {"layers.0.q_proj.weight": n.qdata, "layers.0.q_proj.weight_scale": n.scale.view(torch.float8_e4m3fn),
              "layers.0.q_proj.weight_scale_2": pts.reshape(()).float(), "layers.0.q_proj.input_scale": torch.tensor(0.5)}
    path = tmp_path / "model.safetensors"
    st_torch.save_file(theirs, str(path))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(
        {"producer": {"name": "modelopt", "version": "0.29.0"},
         "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}}))
    ours, layout, _ = layouts.load_layout(path)
    assert layout == "modelopt"
    q = ours["layers.0.q_proj.weight"]
    assert q.codec == lowbit.get_codec("nvfp4", recipe="torchao")
    assert _same(lowbit.decode(q), n.dequantize(torch.float32))
    assert float(ours["layers.0.q_proj.input_scale"]) == 0.5
    # the same codes as lowbit's own torchao-recipe encoder
    assert q.data.tobytes() == lowbit.encode(w, "nvfp4").data.tobytes()
    back, cfg = modelopt.to_modelopt(ours)
    _assert_same_tensors({k: v for k, v in theirs.items()}, back)
    layouts.save_layout(tmp_path / "ours.safetensors", ours, "modelopt")
    again = st_torch.load_file(str(tmp_path / "ours.safetensors"))
    _assert_same_tensors(theirs, again)          # scalar weight_scale_2 / input_scale stay shape ()
    assert cfg["quantization"]["quant_algo"] == "NVFP4"
    # ModelOpt -> compressed-tensors: refused unless the reciprocal global is exact
    gq = lowbit.encode(w, "nvfp4", global_scale=2.0**-3)
    st, _ = ctf.to_compressed_tensors({"w": gq})
    assert float(st["w_global_scale"][0]) == 8.0
    assert _same(lowbit.decode(ctf.from_compressed_tensors(st)["w"]), lowbit.decode(gq))


def test_modelopt_refusals() -> None:
    q = lowbit.encode(_weights(4, 64, 8), "mxfp4")
    with pytest.raises(LowbitError, match="no ModelOpt NVFP4 layout"):
        modelopt.to_modelopt({"w": q})
    with pytest.raises(LowbitError, match="quant_algo"):
        modelopt.from_modelopt({}, {"quantization": {"quant_algo": "INT4_AWQ"}})


# ---- gpt-oss MXFP4 and GGUF MXFP4 ---------------------------------------------------------------------

def _gptoss_experts(E: int, rows: int, cols: int, seed: int) -> tuple[dict, np.ndarray]:
    """gpt-oss expert tensors made by torchao's OCP MXFP4 cast (FLOOR): blocks [E, rows, G, 16]."""
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import to_mx

    w = np.stack([_weights(rows, cols, seed + e) for e in range(E)])
    scale, data = to_mx(torch.from_numpy(w), torch.float4_e2m1fn_x2, 32, scaling_mode=ScaleCalculationMode.FLOOR)
    G = cols // 32
    blocks = data.view(torch.uint8).reshape(E, rows, G, 16)
    scales = scale.view(torch.uint8).reshape(E, rows, G)
    return {"model.layers.0.mlp.experts.down_proj_blocks": blocks,
            "model.layers.0.mlp.experts.down_proj_scales": scales,
            "model.layers.0.mlp.experts.down_proj_bias": torch.zeros(E, rows)}, w


def test_gptoss_file_decodes_like_transformers(tmp_path: Path) -> None:
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    theirs, w = _gptoss_experts(2, 16, 96, 10)
    path = tmp_path / "gptoss.safetensors"
    st_torch.save_file(theirs, str(path))
    cfg = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "lm_head"]}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": cfg}))
    ours, layout, _ = layouts.load_layout(path)
    assert layout == "gpt-oss"
    q = ours["model.layers.0.mlp.experts.down_proj"]
    assert q.shape == (2, 16, 96) and q.codec_id == "mxfp4"
    ref = convert_moe_packed_tensors(theirs["model.layers.0.mlp.experts.down_proj_blocks"],
                                     theirs["model.layers.0.mlp.experts.down_proj_scales"], dtype=torch.float32)
    assert _same(ref.transpose(1, 2), lowbit.decode(q))    # transformers returns [E, in, out]
    assert q.data.tobytes() == lowbit.encode(w, "mxfp4").data.tobytes()  # torchao FLOOR == lowbit floor
    info: dict = {}
    back, cfg2 = gptoss.to_gptoss(gptoss.from_gptoss(theirs, cfg, info=info), info=info)
    _assert_same_tensors(theirs, back)
    assert cfg2 == cfg


def test_gptoss_to_gguf_mxfp4_and_back_exact() -> None:
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType as QT

    theirs, _ = _gptoss_experts(1, 8, 64, 20)
    q = gptoss.from_gptoss(theirs)["model.layers.0.mlp.experts.down_proj"]
    g = gptoss.to_ggml_mxfp4(q.data)
    ref = gq.dequantize(g.reshape(8, -1), QT.MXFP4).reshape(q.shape)
    y = lowbit.decode(q)
    assert np.array_equal(ref, y)                               # equal values (ggml's -0 is +0)
    back = gptoss.from_ggml_mxfp4(g, q.shape)
    assert back.data.tobytes() == q.data.tobytes()
    # GGUF -> gpt-oss: blocks quantized by gguf-py, carried to OCP order, decoded identically
    w = _weights(8, 64, 21)
    gb = gq.quantize(w, QT.MXFP4)
    q2 = gptoss.from_ggml_mxfp4(gb, w.shape)
    assert np.array_equal(lowbit.decode(q2), gq.dequantize(gb, QT.MXFP4))
    assert gptoss.to_ggml_mxfp4(q2.data).tobytes() == np.asarray(gb).tobytes()
    st, _ = gptoss.to_gptoss({"x": q2})
    assert _raw(gptoss.from_gptoss(st)["x"].data) == _raw(q2.data)
    # the NaN scale byte has no GGUF meaning: refused, not silently changed
    bad = q.data.copy()
    bad[0, 0, 0] = 0xFF
    with pytest.raises(LowbitError, match="0xFF"):
        gptoss.to_ggml_mxfp4(bad)
    try:
        lowbit.codec_class("mxfp4_ggml")
    except LowbitError:
        with pytest.raises(LowbitError, match="not registered"):
            gptoss.to_gguf_qtensor(q)
    else:
        gqt = gptoss.to_gguf_qtensor(q)
        assert np.array_equal(lowbit.decode(gqt), y)
        assert gptoss.from_gguf_qtensor(gqt).data.tobytes() == q.data.tobytes()


# ---- bitsandbytes ----------------------------------------------------------------------------------

bnb = pytest.importorskip("bitsandbytes")

BNB_CASES = [("nf4", True, torch.float32), ("nf4", False, torch.float32), ("fp4", True, torch.bfloat16),
             ("fp4", False, torch.float32)]


def _bnb_linear_state(quant_type: str, dq: bool, dtype, seed: int) -> dict:
    """The state dict of a bitsandbytes Linear4bit quantized on the CPU from a ``dtype`` Linear."""
    torch.manual_seed(seed)
    lin = torch.nn.Linear(128, 48).to(dtype)
    q = bnb.nn.Linear4bit(128, 48, bias=True, compute_dtype=dtype, compress_statistics=dq, quant_type=quant_type)
    q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=dq,
                                 quant_type=quant_type)._quantize("cpu")
    q.bias = torch.nn.Parameter(lin.bias.data)
    assert q.weight.quant_state.dtype == dtype
    return {k: v.detach().clone().contiguous() for k, v in q.state_dict().items()}


def _bnb_dequant(sd: dict, base: str):
    from bitsandbytes.functional import QuantState, dequantize_4bit

    qs = QuantState.from_dict({k[len(base) + 1:]: v for k, v in sd.items() if k.startswith(base + ".")}, device="cpu")
    return dequantize_4bit(sd[base], qs)


@pytest.mark.parametrize("quant_type,dq,dtype", BNB_CASES)
def test_bnb_state_dict_from_bitsandbytes_decodes_like_bnb(tmp_path: Path, quant_type: str, dq: bool, dtype) -> None:
    sd = _bnb_linear_state(quant_type, dq, dtype, 30)
    assert f"weight.quant_state.bitsandbytes__{quant_type}" in sd
    path = tmp_path / "bnb.safetensors"
    st_torch.save_file(sd, str(path))
    ours, layout, _ = layouts.load_layout(path)
    assert layout == "bitsandbytes"
    q = ours["weight"]
    assert q.codec == lowbit.get_codec("nf4" if quant_type == "nf4" else "fp4_bnb", blocksize=64, double_quant=dq)
    ref = _bnb_dequant(st_torch.load_file(str(path)), "weight")
    assert ref.dtype == dtype
    y = lowbit.decode(q)
    assert torch.equal(ref, torch.from_numpy(y).to(dtype))
    if dtype == torch.float32:
        assert _same(BO.bnb_like_lowbit_zero_sign(y, ref, q.codec_id), y)
    # theirs -> ours -> theirs, every tensor byte for byte (the quant_state JSON too)
    theirs = st_torch.load_file(str(path))
    info: dict = {}
    back, cfg = bnb_state.to_bnb(bnb_state.from_bnb(theirs, None, info=info), info=info)
    _assert_same_tensors(theirs, back)
    assert cfg["bnb_4bit_quant_type"] == quant_type and cfg["bnb_4bit_use_double_quant"] == dq


@pytest.mark.parametrize("quant_type,dq", [("nf4", True), ("fp4", False)])
def test_bnb_written_by_us_loads_in_bitsandbytes(tmp_path: Path, quant_type: str, dq: bool) -> None:
    w = _weights(32, 256, 31)
    q = lowbit.encode(w, "nf4" if quant_type == "nf4" else "fp4_bnb", blocksize=128, double_quant=dq)
    path = tmp_path / "ours.safetensors"
    layouts.save_layout(path, {"fc.weight": q, "fc.bias": np.zeros(32, np.float32)}, "bitsandbytes")
    theirs = st_torch.load_file(str(path))
    ref = _bnb_dequant(theirs, "fc.weight")
    y = lowbit.decode(q)
    assert _same(BO.bnb_like_lowbit_zero_sign(y, ref, q.codec_id), y)
    # a bitsandbytes Linear4bit takes the state dict and computes with it
    lin = bnb.nn.Linear4bit(256, 32, bias=True, compute_dtype=torch.float32, quant_type=quant_type)
    stats = {k[len("fc.weight."):]: v for k, v in theirs.items() if k.startswith("fc.weight.")}
    lin.weight = bnb.nn.Params4bit.from_prequantized(theirs["fc.weight"], stats, device="cpu", module=lin)
    lin.bias = torch.nn.Parameter(theirs["fc.bias"])
    x = torch.randn(2, 256)
    assert torch.allclose(lin(x), x @ torch.from_numpy(lowbit.decode(q)).T, rtol=1e-4, atol=1e-4)
    back, layout, _ = layouts.load_layout(path)
    _assert_same_q(back["fc.weight"], q)
    path2 = tmp_path / "again.safetensors"
    layouts.save_layout(path2, back, "bitsandbytes")
    assert path.read_bytes() == path2.read_bytes()


def test_bnb_refusals() -> None:
    sd = {k: layouts.as_numpy(v) for k, v in _bnb_linear_state("nf4", False, torch.float32, 32).items()}
    bad = dict(sd)
    bad["weight.quant_map"] = sd["weight.quant_map"] * 2
    with pytest.raises(LowbitError, match="standard nf4 table"):
        bnb_state.from_bnb(bad)
    js = json.loads(sd["weight.quant_state.bitsandbytes__nf4"].tobytes())
    js["shape"] = [64, 96]     # last axis not a multiple of the block size
    bad = dict(sd)
    bad["weight.quant_state.bitsandbytes__nf4"] = np.frombuffer(json.dumps(js).encode(), np.uint8)
    with pytest.raises(LowbitError, match="multiple of the block size"):
        bnb_state.from_bnb(bad)
    with pytest.raises(LowbitError, match="no bitsandbytes 4-bit layout"):
        bnb_state.to_bnb({"w": lowbit.encode(_weights(4, 64, 33), "mxfp4")})


# ---- detection, lowbit.load, convert ------------------------------------------------------------------

def test_detect_layout_and_lowbit_load(tmp_path: Path) -> None:
    assert layouts.detect_layout({}, {"quant_method": "compressed-tensors"}) == "compressed-tensors"
    assert layouts.detect_layout({}, {"producer": {"name": "modelopt"}, "quantization": {}}) == "modelopt"
    assert layouts.detect_layout(["a_blocks", "a_scales"]) == "gpt-oss"
    assert layouts.detect_layout({"w": np.zeros(2, np.float32)}) is None
    q = lowbit.encode(_weights(4, 64, 40), "nf4")
    path = tmp_path / "b.safetensors"
    layouts.save_layout(path, {"w": q}, "bitsandbytes")
    loaded = lowbit.load(path)     # lowbit.load reads a wild layout as QTensors
    _assert_same_q(loaded["w"], q)
    plain = tmp_path / "plain.safetensors"
    layouts.write_safetensors(plain, {"x": np.arange(3, dtype=np.float32)})
    assert np.array_equal(lowbit.load(plain)["x"], np.arange(3, dtype=np.float32))
    with pytest.raises(LowbitError, match="no known quantized layout"):
        layouts.load_layout(plain)


def test_convert_between_layouts(tmp_path: Path) -> None:
    w = _weights(16, 64, 41)
    q = lowbit.encode(w, "nvfp4", global_scale=0.5)     # torchao recipe, exact reciprocal
    src = tmp_path / "mo.safetensors"
    layouts.save_layout(src, {"l.weight": q, "l.input_scale": np.float32(0.25).reshape(())}, "modelopt")
    r = layouts.convert_file(src, tmp_path / "ct.safetensors", to="compressed-tensors")
    assert [t["action"] for t in r["tensors"]] == ["codes copied", "array copied"]
    layouts.convert_file(tmp_path / "ct.safetensors", tmp_path / "lb.safetensors", to="lowbit")
    mine = lowbit.load(tmp_path / "lb.safetensors")
    assert mine["l.weight"].codec.recipe == "compressed_tensors"
    ct_in = layouts.read_safetensors(tmp_path / "ct.safetensors")[0]
    assert "l.input_scale" not in ct_in and ct_in["l.input_global_scale"].tolist() == [4.0]
    layouts.convert_file(tmp_path / "lb.safetensors", tmp_path / "mo2.safetensors", to="modelopt")
    assert src.read_bytes() == (tmp_path / "mo2.safetensors").read_bytes()
    inexact = tmp_path / "mo3.safetensors"
    layouts.save_layout(inexact, {"l.weight": q, "l.input_scale": np.float32(0.3).reshape(())}, "modelopt")
    with pytest.raises(LowbitError, match="activation scale"):
        layouts.convert_file(inexact, tmp_path / "ct3.safetensors", to="compressed-tensors")
    with pytest.raises(LowbitError, match="no gpt-oss layout"):
        layouts.convert_file(src, tmp_path / "x.safetensors", to="gpt-oss")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lowbit.tools.cli import main

    theirs, _ = _gptoss_experts(1, 8, 64, 50)
    src = tmp_path / "gptoss.safetensors"
    st_torch.save_file(theirs, str(src))
    assert main(["convert", str(src), str(tmp_path / "ct.safetensors"), "--to", "compressed-tensors", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["config"]["format"] == "mxfp4-pack-quantized"
    assert main(["convert", str(tmp_path / "ct.safetensors"), str(tmp_path / "back.safetensors"), "--to", "gpt-oss"]) == 0
    back = st_torch.load_file(str(tmp_path / "back.safetensors"))
    _assert_same_tensors(theirs, back)
    assert main(["convert", str(src), str(tmp_path / "f.safetensors"), "--to", "float32"]) == 0
    y = layouts.read_safetensors(tmp_path / "f.safetensors")[0]["model.layers.0.mlp.experts.down_proj"]
    assert _same(y, lowbit.decode(gptoss.from_gptoss(theirs)["model.layers.0.mlp.experts.down_proj"]))
    # a layout that cannot hold the codes: one error line, exit status 2, no output file
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "bad.safetensors"), "--to", "bitsandbytes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit: error: bitsandbytes:") and "mxfp4" in err
    assert not (tmp_path / "bad.safetensors").exists()


def test_ct_mxfp4_and_fp8_block_files_from_compressed_tensors(tmp_path: Path) -> None:
    """MXFP4 and FP8-block modules compressed by compressed-tensors itself (its calculate_qparams
    and compressors): loaded as QTensors that decode like its decompressors, written back the same."""
    from compressed_tensors.compressors.mxfp4 import MXFP4PackedCompressor
    from compressed_tensors.compressors.naive_quantized import FloatQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    mx = preset_name_to_scheme("MXFP4A16", ["re:.*mx$"])
    w = torch.from_numpy(_weights(48, 128, 60))
    tg = w.reshape(48, -1, 32)
    sc, _ = calculate_qparams(tg.amin(-1), tg.amax(-1), mx.weights)
    sd_mx = MXFP4PackedCompressor.compress({"weight": w, "weight_scale": sc}, mx)
    fp8 = preset_name_to_scheme("FP8_BLOCK", ["re:.*fp8$"])
    w2 = torch.from_numpy(_weights(200, 300, 61)).to(torch.bfloat16)
    blocks = torch.nn.functional.pad(w2.float(), (0, 84, 0, 56)).reshape(2, 128, 3, 128).transpose(1, 2)
    sc2, _ = calculate_qparams(blocks.amin((-1, -2)), blocks.amax((-1, -2)), fp8.weights)
    sd_fp8 = FloatQuantizationCompressor.compress({"weight": w2, "weight_scale": sc2.to(torch.bfloat16)}, fp8)
    theirs = {f"l.{m}.{k}": v.contiguous() for m, sd in (("mx", sd_mx), ("fp8", sd_fp8)) for k, v in sd.items()}
    cfg = QuantizationConfig(config_groups={"group_0": mx, "group_1": fp8}, format="mixed-precision",
                             quantization_status="compressed").model_dump(mode="json")
    path = tmp_path / "ct.safetensors"
    st_torch.save_file(theirs, str(path))
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": cfg}))
    ours = lowbit.load(path)
    assert ours["l.mx.weight"].codec_id == "mxfp4" and ours["l.fp8.weight"].codec.scale == "block:128x128"
    dec = MXFP4PackedCompressor.decompress(dict(sd_mx), mx)["weight"]
    assert torch.equal(dec, _bf16(lowbit.decode(ours["l.mx.weight"])))
    dec2 = FloatQuantizationCompressor.decompress(dict(sd_fp8), fp8)["weight"]
    assert dec2.dtype == torch.bfloat16 and torch.equal(dec2, _bf16(lowbit.decode(ours["l.fp8.weight"])))
    info: dict = {}
    back, _ = ctf.to_compressed_tensors(ctf.from_compressed_tensors(theirs, cfg, info=info), info=info)
    _assert_same_tensors(theirs, back)


ROUND_TRIPS = [
    ("compressed-tensors", "nvfp4", {"recipe": "compressed_tensors"}, (3, 5, 48)),
    ("compressed-tensors", "mxfp4", {"scale_rounding": "even"}, (2, 3, 64)),
    ("compressed-tensors", "fp8_e5m2", {"scale": "tensor"}, (5, 40)),
    ("compressed-tensors", "mxfp6_e2m3", {"scale_rounding": "even"}, (5, 64)),
    ("compressed-tensors", "mxfp8_e5m2", {"scale_rounding": "even"}, (2, 3, 32)),
    ("compressed-tensors", "fp8_e4m3", {"scale": "block:16x32"}, (40, 70)),
    ("modelopt", "nvfp4", {}, (7, 32)),
    ("gpt-oss", "mxfp4", {"scale_rounding": "rceil"}, (3, 4, 96)),
    ("bitsandbytes", "nf4", {"blocksize": 32, "double_quant": True}, (3, 600, 32)),
    ("bitsandbytes", "fp4_bnb", {"blocksize": 256}, (4, 512)),
]


@pytest.mark.parametrize("layout,codec,cfg,shape", ROUND_TRIPS)
def test_ours_theirs_ours_byte_identical(tmp_path: Path, layout: str, codec: str, cfg: dict, shape: tuple) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{layout}:{codec}".encode()))
    x = (rng.standard_normal(shape) * np.exp(rng.standard_normal(shape[:-1] + (1,)) * 3)).astype(np.float32)
    q = lowbit.encode(x, codec, **cfg)
    path = tmp_path / "f.safetensors"
    config = layouts.save_layout(path, {"a.weight": q, "a.bias": np.arange(3, dtype=np.float32)}, layout)
    raw, meta = layouts.read_safetensors(path)
    assert layouts.detect_layout(raw) == layout and layouts.detect_layout({}, config) == layout
    back = lowbit.load(path)
    _assert_same_q(back["a.weight"], q)
    assert np.array_equal(back["a.bias"], np.arange(3, dtype=np.float32))
    assert _same(lowbit.decode(back["a.weight"]), lowbit.decode(q))
    path2 = tmp_path / "g.safetensors"
    layouts.save_layout(path2, back, layout)
    assert path.read_bytes() == path2.read_bytes()


def test_gptoss_file_to_gguf_file_and_back(tmp_path: Path) -> None:
    """gpt-oss MXFP4 -> a GGUF file (ggml type MXFP4) that gguf-py's GGUFReader reads and
    dequantizes to our values -> gpt-oss again, byte for byte. Needs the GGUF container and the
    ``mxfp4_ggml`` codec (the issue-gguf work); skipped where this build lacks them."""
    try:
        lowbit.codec_class("mxfp4_ggml")
        from lowbit.formats import gguf as _  # noqa: F401
    except (LowbitError, ImportError):
        theirs, _ = _gptoss_experts(1, 8, 32, 71)
        st_torch.save_file(theirs, str(tmp_path / "g.safetensors"))
        with pytest.raises(LowbitError, match="no GGUF container|mxfp4_ggml"):
            layouts.convert_file(tmp_path / "g.safetensors", tmp_path / "g.gguf", to="gguf")
        assert not (tmp_path / "g.gguf").exists()
        pytest.skip("this build has no GGUF container / mxfp4_ggml codec (refusal checked)")
    from gguf import GGMLQuantizationType as QT
    from gguf import GGUFReader
    from gguf.quants import dequantize

    theirs, _ = _gptoss_experts(2, 8, 64, 70)
    src = tmp_path / "gptoss.safetensors"
    st_torch.save_file(theirs, str(src))
    rep = layouts.convert_file(src, tmp_path / "m.gguf", to="gguf")
    assert "nibbles reordered" in rep["tensors"][1]["action"] or "nibbles reordered" in rep["tensors"][0]["action"]
    want = lowbit.decode(gptoss.from_gptoss(theirs)["model.layers.0.mlp.experts.down_proj"])
    r = GGUFReader(str(tmp_path / "m.gguf"))
    t = {x.name: x for x in r.tensors}["model.layers.0.mlp.experts.down_proj"]
    assert t.tensor_type == QT.MXFP4
    got = dequantize(np.asarray(t.data), QT.MXFP4).reshape(want.shape)
    assert np.array_equal(got, want)
    layouts.convert_file(tmp_path / "m.gguf", tmp_path / "back.safetensors", to="gpt-oss")
    _assert_same_tensors(theirs, st_torch.load_file(str(tmp_path / "back.safetensors")))


def test_sharded_checkpoint(tmp_path: Path) -> None:
    """A sharded bitsandbytes checkpoint (model-0000i-of-00002 + index), one weight's quant_state
    in the other shard than its codes: read through the index or the directory."""
    sd = _bnb_linear_state("nf4", True, torch.float32, 80)
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in shards.items():
        st_torch.save_file({k: sd[k] for k in keys}, str(tmp_path / fname))
    index = {"metadata": {"total_size": 0}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    whole = tmp_path / "whole"
    whole.mkdir()
    st_torch.save_file(sd, str(whole / "model.safetensors"))
    ref, _, _ = layouts.load_layout(whole / "model.safetensors")
    for p in (tmp_path, tmp_path / "model.safetensors.index.json"):
        got, layout, _ = layouts.load_layout(p)
        assert layout == "bitsandbytes"
        _assert_same_q(got["weight"], ref["weight"])
    rep = layouts.convert_file(tmp_path, tmp_path / "one.safetensors", to="bitsandbytes")
    assert {"name": "weight", "action": "codes copied", "codec": "nf4"} in rep["tensors"]
    _assert_same_tensors(sd, st_torch.load_file(str(tmp_path / "one.safetensors")))


@pytest.mark.parametrize("preset,codec", [("MXFP6A16", "mxfp6_e2m3"), ("MXFP8A16", "mxfp8_e4m3")])
def test_ct_mxfp6_mxfp8_both_ways(tmp_path: Path, preset: str, codec: str) -> None:
    """MXFP6 / MXFP8 modules compressed by compressed-tensors decode like its decompressor, and
    ours written in its layout decompress to our values; both round-trip byte for byte."""
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    fmt = "mxfp6-pack-quantized" if codec == "mxfp6_e2m3" else "mxfp8-quantized"
    comp = BaseCompressor.get_value_from_registry(fmt)
    scheme = preset_name_to_scheme(preset, ["Linear"])
    w = torch.from_numpy(_weights(16, 96, 90))
    tg = w.reshape(16, -1, 32)
    sc, _ = calculate_qparams(tg.amin(-1), tg.amax(-1), scheme.weights)
    theirs = {f"x.{k}": v.contiguous() for k, v in comp.compress({"weight": w, "weight_scale": sc}, scheme).items()}
    info: dict = {}
    ours = ctf.from_compressed_tensors(theirs, None, info=info)
    q = ours["x.weight"]
    assert q.codec_id == codec
    dec = comp.decompress({k[2:]: v for k, v in theirs.items()}, scheme)["weight"]
    assert torch.equal(dec, _bf16(lowbit.decode(q)))
    back, cfg = ctf.to_compressed_tensors(ours, info=info)
    _assert_same_tensors(theirs, back)
    assert cfg["format"] == fmt
    # ours -> their layout -> their decompressor
    mine = lowbit.encode(_weights(8, 64, 91), codec, scale_rounding="even")
    st, cfg = ctf.to_compressed_tensors({"y.weight": mine})
    their_scheme = _ct_scheme(cfg["config_groups"]["group_0"])
    tt = {k[2:]: torch.from_numpy(np.ascontiguousarray(v).view(np.uint8)).view(
        torch.float8_e4m3fn if v.dtype.name == "float8_e4m3fn" else torch.uint8) for k, v in st.items()}
    assert torch.equal(comp.decompress(tt, their_scheme)["weight"], _bf16(lowbit.decode(mine)))


def test_convert_same_layout_keeps_what_qtensors_do_not_hold(tmp_path: Path) -> None:
    """bitsandbytes bf16 quant_state (dtype in the JSON) and compressed-tensors bf16 FP8 block
    scales survive a same-layout conversion byte for byte."""
    sd = _bnb_linear_state("fp4", True, torch.bfloat16, 95)
    st_torch.save_file(sd, str(tmp_path / "b.safetensors"))
    layouts.convert_file(tmp_path / "b.safetensors", tmp_path / "b2.safetensors", to="bitsandbytes")
    _assert_same_tensors(sd, st_torch.load_file(str(tmp_path / "b2.safetensors")))
    q = lowbit.encode(_weights(130, 128, 96), "fp8_e4m3", scale="block:128x128")
    q = lowbit.QTensor(q.data, {"scale": torch.from_numpy(q.aux["scale"]).bfloat16().float().numpy()}, q.shape, q.codec)
    layouts.save_layout(tmp_path / "c.safetensors", {"p.weight": q}, "compressed-tensors", scale_dtype="bfloat16")
    layouts.convert_file(tmp_path / "c.safetensors", tmp_path / "c2.safetensors", to="compressed-tensors")
    assert (tmp_path / "c.safetensors").read_bytes() == (tmp_path / "c2.safetensors").read_bytes()
