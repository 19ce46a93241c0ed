"""Write tests/data/checkpoint_goldens.safetensors: GPTQ and AWQ layers packed and dequantized by
the projects' own code (run once; the packages cannot be installed next to a CPU torch 2.13:
GPTQModel needs CUDA torch 2.14, AutoGPTQ and AutoAWQ pull CUDA extensions and datasets/peft).

How the reference code was obtained (no code of theirs is copied into lowbit):

    pip download --no-deps auto-gptq==0.7.1 autoawq==0.2.9 gptqmodel==7.7.0 -d wheels
    unzip wheels/auto_gptq-0.7.1-*.whl -d x; tar xzf wheels/autoawq-0.2.9.tar.gz -C x
    tar xzf wheels/gptqmodel-7.7.0.tar.gz -C x
    python tests/data/make_checkpoint_goldens.py x

Only pure-Python modules are loaded, by file path, with stubs for their unrelated imports:

* AutoGPTQ 0.7.1 ``nn_modules/qlinear/qlinear_cuda.py``: ``QuantLinear.pack`` (v1 ``qweight``,
  ``qzeros`` = zero - 1, ``scales``, ``g_idx``) and its torch ``forward`` (the CPU dequantizer)
  on an identity input, which returns the dequantized ``W^T`` in float16;
* GPTQModel 7.7.0 ``utils/model.py``: ``convert_gptq_v1_to_v2_format_module`` (v2 ``qzeros``);
* AutoAWQ 0.2.9 ``modules/linear/gemm.py``: ``WQLinear_GEMM.from_linear`` (interleaved
  ``qweight``/``qzeros``) and ``utils/packing_utils.py``: ``dequantize_gemm``.

Each case stores the source codes/scales/zeros/g_idx it started from, the packed tensors and the
reference dequantization; tests/test_checkpoints.py checks lowbit against them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

OUT = Path(__file__).with_name("checkpoint_goldens.safetensors")


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _stub(name: str, **attrs: object) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_autogptq(root: Path) -> type:
    class Conv1D(torch.nn.Module):  # only used in an isinstance check
        pass

    tr = _stub("transformers")
    tr.pytorch_utils = _stub("transformers.pytorch_utils", Conv1D=Conv1D)
    return _load("autogptq_qlinear_cuda", root / "auto_gptq/nn_modules/qlinear/qlinear_cuda.py").QuantLinear


def load_v1_to_v2(root: Path):
    src = (next(root.glob("gptqmodel-*")) / "gptqmodel/utils/model.py").read_text()
    tree = ast.parse(src)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "convert_gptq_v1_to_v2_format_module")
    ns = {"torch": torch, "nn": torch.nn, "BaseQuantLinear": object,
          "log": types.SimpleNamespace(info=types.SimpleNamespace(once=lambda *a, **k: None))}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "gptqmodel/utils/model.py", "exec"), ns)
    return ns["convert_gptq_v1_to_v2_format_module"]


def load_autoawq(root: Path):
    base = next(root.glob("autoawq-*")) / "awq"
    awq = _stub("awq")
    awq.__path__ = []  # a package with nothing else in it: optional kernels fail to import
    _stub("awq.utils").__path__ = []
    _stub("awq.utils.module", try_import=lambda name: (None, "stubbed"))
    _stub("awq.utils.utils", get_best_device=lambda: "cpu")
    pu = _load("awq.utils.packing_utils", base / "utils/packing_utils.py")
    _stub("awq.modules").__path__ = []
    _stub("awq.modules.linear").__path__ = []
    gemm = _load("awq.modules.linear.gemm", base / "modules/linear/gemm.py")
    return gemm.WQLinear_GEMM, pu.dequantize_gemm


def gptq_case(QuantLinear, v1_to_v2, rng, bits, K, N, g, act_order):
    maxq = (1 << bits) - 1
    ng = K // g
    codes = rng.integers(0, maxq + 1, (N, K))
    zeros = rng.integers(1, maxq + 1, (ng, N))  # v1 cannot hold 0 (see lowbit/formats/gptq.py)
    scales = (rng.uniform(0.5, 2.0, (ng, N)) * np.exp2(rng.integers(-12, -4, (ng, N)))).astype(np.float16)
    g_idx = (np.argsort(rng.permutation(K)) // g) if act_order else (np.arange(K) // g)
    g_idx = g_idx.astype(np.int32)
    s32 = scales.astype(np.float32)
    w = (codes - zeros[g_idx].T) * s32[g_idx].T  # exact in float32: the fake-quantized weight
    lin = torch.nn.Linear(K, N, bias=False)
    lin.weight.data = torch.from_numpy(w.astype(np.float32))
    ql = QuantLinear(bits, g, K, N, False)
    ql.pack(lin, torch.from_numpy(s32.T.copy()), torch.from_numpy(zeros.T.copy()), torch.from_numpy(g_idx))
    ql.scales = ql.scales.to(torch.float16)  # the checkpoint dtype (the values came from float16)
    deq = ql.forward(torch.eye(K, dtype=torch.float16)).numpy()  # (K, N) = W^T, float16
    out = {"codes": codes.astype(np.uint8), "zeros": zeros.astype(np.uint8), "scales_src": scales, "g_idx_src": g_idx,
           "qweight": ql.qweight.numpy().copy(), "qzeros": ql.qzeros.numpy().copy(), "scales": ql.scales.numpy().copy(),
           "g_idx": ql.g_idx.numpy().astype(np.int32), "dequant": deq.T.copy()}
    if bits in (2, 4, 8):
        mod = types.SimpleNamespace(qzeros=ql.qzeros.clone(), qzero_format=lambda format: None)
        v1_to_v2(mod, bits, torch.int32)
        out["qzeros_v2"] = mod.qzeros.numpy().copy()
    return out


def awq_case(WQLinear_GEMM, dequantize_gemm, rng, K, N, g):
    ng = K // g
    codes = rng.integers(0, 16, (N, K))
    zeros = rng.integers(0, 16, (ng, N))
    scales = (rng.uniform(0.5, 2.0, (ng, N)) * np.exp2(rng.integers(-12, -4, (ng, N)))).astype(np.float16)
    s32 = scales.astype(np.float32)
    gi = np.arange(K) // g
    w = (codes - zeros[gi].T) * s32[gi].T
    lin = torch.nn.Linear(K, N, bias=False)
    lin.weight.data = torch.from_numpy(w.astype(np.float32))
    ql = WQLinear_GEMM.from_linear(lin, 4, g, scales=torch.from_numpy(scales.copy()),
                                   zeros=torch.from_numpy(zeros.astype(np.float16)))
    deq = dequantize_gemm(ql.qweight, ql.qzeros, ql.scales, 4, g).numpy()  # (K, N) float16
    return {"codes": codes.astype(np.uint8), "zeros": zeros.astype(np.uint8), "scales_src": scales,
            "qweight": ql.qweight.numpy().copy(), "qzeros": ql.qzeros.numpy().copy(),
            "scales": ql.scales.numpy().copy(), "dequant": deq.T.copy()}


def main(root: str) -> None:
    r = Path(root)
    QuantLinear = load_autogptq(r)
    v1_to_v2 = load_v1_to_v2(r)
    WQ, deq = load_autoawq(r)
    rng = np.random.default_rng(20261123)
    tensors, cases = {}, []
    for bits, K, N, g, act in [(4, 256, 64, 32, False), (4, 256, 64, 64, True), (2, 128, 64, 32, False),
                               (3, 256, 64, 32, True), (8, 128, 32, 128, False)]:
        name = f"gptq_b{bits}_g{g}{'_act' if act else ''}"
        c = gptq_case(QuantLinear, v1_to_v2, rng, bits, K, N, g, act)
        tensors.update({f"{name}.{k}": np.ascontiguousarray(v) for k, v in c.items()})
        cases.append({"name": name, "kind": "gptq", "bits": bits, "group_size": g, "K": K, "N": N, "act_order": act})
    for K, N, g in [(256, 64, 32), (128, 128, 128)]:
        name = f"awq_g{g}_{N}x{K}"
        c = awq_case(WQ, deq, rng, K, N, g)
        tensors.update({f"{name}.{k}": np.ascontiguousarray(v) for k, v in c.items()})
        cases.append({"name": name, "kind": "awq", "bits": 4, "group_size": g, "K": K, "N": N})
    meta = {"cases": json.dumps(cases), "generator": "tests/data/make_checkpoint_goldens.py",
            "references": "auto-gptq 0.7.1 qlinear_cuda.QuantLinear.pack/forward; gptqmodel 7.7.0 "
                          "convert_gptq_v1_to_v2_format_module; autoawq 0.2.9 WQLinear_GEMM.from_linear, dequantize_gemm"}
    save_file(tensors, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main(sys.argv[1])
