"""Block-scaled codec speed: lowbit next to torchao, bitsandbytes and an ml_dtypes-based numpy
encoder, in one run, on the same tensor.

    python benchmarks/bench_blockscaled.py            # CPU (and CUDA when present)
    python benchmarks/bench_blockscaled.py --quick    # smaller tensor, fewer repeats
    python benchmarks/bench_blockscaled.py --json out.json

Encode = float32 → the format's bytes (block scales included); decode = bytes → float32.
Million elements per second, best of N after a warm-up (JIT compile excluded), and lowbit / peer
ratios at the same thread count. Peers:

* torchao 0.18 ``to_mx`` / ``MXTensor.dequantize`` and ``nvfp4_quantize`` /
  ``NVFP4Tensor.dequantize`` (eager torch on the CPU; ``torch.compile`` on CUDA);
* bitsandbytes ``quantize_4bit`` / ``dequantize_4bit``;
* "numpy": a plain numpy + ml_dtypes MX FLOOR encoder/decoder (exponent field, scale, clip,
  ``astype``, nibble packing), what one writes without a codec library.

"BW" is bytes moved (float32 in + bytes out, or the reverse) over the time a plain
single-threaded numpy copy of as many bytes takes here (CPU), or over ``torch`` copy bandwidth
(GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

import lowbit

# (label, codec id, params, torchao kind, bitsandbytes quant_type, numpy peer)
CASES = [
    ("mxfp8_e4m3 floor", "mxfp8_e4m3", {}, ("mx", "float8_e4m3fn", "FLOOR"), None, True),
    ("mxfp8_e4m3 rceil", "mxfp8_e4m3", {"scale_rounding": "rceil"}, ("mx", "float8_e4m3fn", "RCEIL"), None, False),
    ("mxfp6_e2m3 floor", "mxfp6_e2m3", {}, ("mx", "fp6_e2m3", "FLOOR"), None, False),
    ("mxfp4 floor", "mxfp4", {}, ("mx", "float4_e2m1fn_x2", "FLOOR"), None, True),
    ("mxfp4 rceil", "mxfp4", {"scale_rounding": "rceil"}, ("mx", "float4_e2m1fn_x2", "RCEIL"), None, False),
    ("mxint8 floor", "mxint8", {}, None, None, False),
    ("nvfp4", "nvfp4", {}, ("nv", None, None), None, False),
    ("nf4 (bs 64)", "nf4", {}, None, "nf4", False),
    ("nf4 double quant", "nf4", {"double_quant": True}, None, "nf4dq", False),
    ("fp4_bnb (bs 64)", "fp4_bnb", {}, None, "fp4", False),
]


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (and JIT compile)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / best_of(lambda: np.copyto(b, a), repeats)


# ---- the numpy + ml_dtypes peer ------------------------------------------------------------------

def numpy_mx_encode(x: np.ndarray, tname: str, emax: int, vmax: float, w: int) -> tuple[np.ndarray, np.ndarray]:
    """OCP FLOOR: scale bytes (rows, nb) and packed codes, in numpy + ml_dtypes."""
    import ml_dtypes

    xb = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(xb).max(-1)
    e = ((amax.view(np.uint32) >> 23) & 0xFF).astype(np.int32) - 127     # floor(log2 amax)
    s = np.clip(e - emax, -127, 127)
    v = np.clip(xb * np.ldexp(np.float32(1), -s)[..., None], -vmax, vmax)
    c = v.astype(getattr(ml_dtypes, tname)).view(np.uint8)
    if w == 4:
        c = c & 0xF
        c = c[..., 0::2] | (c[..., 1::2] << 4)
    return (s + 127).astype(np.uint8), c


def numpy_mx_decode(sb: np.ndarray, c: np.ndarray, tname: str, w: int) -> np.ndarray:
    import ml_dtypes

    if w == 4:
        c = np.stack([c & 0xF, c >> 4], -1).reshape(c.shape[:-1] + (-1,))
    v = c.view(getattr(ml_dtypes, tname)).astype(np.float32)
    return (v * np.ldexp(np.float32(1), sb.astype(np.int32) - 127)[..., None]).reshape(c.shape[0], -1)


NUMPY_PEERS = {"mxfp8_e4m3": ("float8_e4m3fn", 8, 448.0, 8), "mxfp4": ("float4_e2m1fn", 2, 6.0, 4)}


# ---- CPU -----------------------------------------------------------------------------------------

def cpu_rows(n_rows: int, n_cols: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import bitsandbytes.functional as F
    import numba
    import torch
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import MXTensor, to_mx
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, nvfp4_quantize, per_tensor_amax_to_scale

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n_rows, n_cols)) * np.exp(rng.normal(0, 1, (n_rows, 1)))).astype(np.float32)
    xt = torch.from_numpy(x)
    n = x.size
    bw = copy_bandwidth(x.nbytes, repeats)
    env = {"elements": n, "copy_GBps": bw / 1e9, "cpu_threads_available": numba.config.NUMBA_NUM_THREADS}
    rows = []
    for label, cid, params, ta, bq, has_np in CASES:
        codec = lowbit.get_codec(cid, **params)
        out_bytes = n * codec.bits_per_element(x.shape) / 8
        row: dict[str, Any] = {"format": label}
        q = codec.encode(x, backend="cpu")
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            torch.set_num_threads(threads)
            te = best_of(lambda: codec.encode(x, backend="cpu"), repeats)
            td = best_of(lambda: codec.decode(q, backend="cpu"), repeats)
            row[f"enc_{threads}t"], row[f"dec_{threads}t"] = n / te / 1e6, n / td / 1e6
            row[f"enc_{threads}t_bw"] = (x.nbytes + out_bytes) / te / bw
            row[f"dec_{threads}t_bw"] = (x.nbytes + out_bytes) / td / bw
            if ta and ta[0] == "mx":
                dt = getattr(torch, ta[1]) if ta[1].startswith("float") else ta[1]
                mode = getattr(ScaleCalculationMode, ta[2])
                m = MXTensor.to_mx(xt, dt, 32, scaling_mode=mode)
                row[f"torchao_enc_{threads}t"] = n / best_of(lambda: to_mx(xt, dt, 32, scaling_mode=mode), repeats) / 1e6
                row[f"torchao_dec_{threads}t"] = n / best_of(lambda: m.dequantize(torch.float32), repeats) / 1e6
            elif ta and ta[0] == "nv":
                def enc() -> Any:
                    return nvfp4_quantize(xt, 16, per_tensor_amax_to_scale(xt.abs().max()))
                m = NVFP4Tensor.to_nvfp4(xt, per_tensor_scale=per_tensor_amax_to_scale(xt.abs().max()))
                row[f"torchao_enc_{threads}t"] = n / best_of(enc, repeats) / 1e6
                row[f"torchao_dec_{threads}t"] = n / best_of(lambda: m.dequantize(torch.float32), repeats) / 1e6
            if bq:
                qt, dq = bq.removesuffix("dq"), bq.endswith("dq")
                p, st = F.quantize_4bit(xt, blocksize=64, compress_statistics=dq, quant_type=qt)
                row[f"bnb_enc_{threads}t"] = n / best_of(
                    lambda: F.quantize_4bit(xt, blocksize=64, compress_statistics=dq, quant_type=qt), repeats) / 1e6
                row[f"bnb_dec_{threads}t"] = n / best_of(lambda: F.dequantize_4bit(p, st), repeats) / 1e6
        if has_np:
            tname, emax, vmax, w = NUMPY_PEERS[cid]
            sb, c = numpy_mx_encode(x, tname, emax, vmax, w)
            row["numpy_enc_1t"] = n / best_of(lambda: numpy_mx_encode(x, tname, emax, vmax, w), repeats) / 1e6
            row["numpy_dec_1t"] = n / best_of(lambda: numpy_mx_decode(sb, c, tname, w), repeats) / 1e6
        rows.append(row)
    return rows, env


# ---- CUDA ----------------------------------------------------------------------------------------

def gpu_rows(n_rows: int, n_cols: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch
    import triton

    dev = torch.device("cuda")
    x = torch.randn(n_rows, n_cols, device=dev)
    n = x.numel()

    def bench(fn: Callable[[], Any]) -> float:
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3

    y = torch.empty_like(x)
    bw = 2 * n * 4 / bench(lambda: y.copy_(x))
    env = {"device": torch.cuda.get_device_name(), "copy_GBps": bw / 1e9, "elements": n, "triton": triton.__version__}
    rows = []
    for label, cid, params, ta, bq, _ in CASES:
        codec = lowbit.get_codec(cid, **params)
        out_bytes = n * codec.bits_per_element(tuple(x.shape)) / 8
        q = codec.encode(x, backend="gpu")
        te, td = bench(lambda: codec.encode(x, backend="gpu")), bench(lambda: codec.decode(q, backend="gpu"))
        row: dict[str, Any] = {"format": label, "enc": n / te / 1e6, "dec": n / td / 1e6,
                               "enc_bw": (n * 4 + out_bytes) / te / bw, "dec_bw": (n * 4 + out_bytes) / td / bw}
        try:
            if ta and ta[0] == "mx":
                from torchao.prototype.mx_formats.config import ScaleCalculationMode
                from torchao.prototype.mx_formats.mx_tensor import to_mx

                dt = getattr(torch, ta[1]) if ta[1].startswith("float") else ta[1]
                mode = getattr(ScaleCalculationMode, ta[2])
                f = torch.compile(lambda t: to_mx(t, dt, 32, scaling_mode=mode))
                row["torchao_enc"] = n / bench(lambda: f(x)) / 1e6
            elif ta and ta[0] == "nv":
                from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale

                f = torch.compile(lambda t: nvfp4_quantize(t, 16, per_tensor_amax_to_scale(t.abs().max())))
                row["torchao_enc"] = n / bench(lambda: f(x)) / 1e6
            if bq:
                import bitsandbytes.functional as F

                qt, dq = bq.removesuffix("dq"), bq.endswith("dq")
                p, st = F.quantize_4bit(x, blocksize=64, compress_statistics=dq, quant_type=qt)
                row["bnb_enc"] = n / bench(lambda: F.quantize_4bit(x, blocksize=64, compress_statistics=dq, quant_type=qt)) / 1e6
                row["bnb_dec"] = n / bench(lambda: F.dequantize_4bit(p, st)) / 1e6
        except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
            row["peer_error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
    return rows, env


# ---- printing ------------------------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _num(v: float | None) -> str:
    return f"{v:.0f}" if v else "-"


def print_cpu(rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(f"\nCPU: {env['elements']:,} float32 elements; single-thread numpy copy {env['copy_GBps']:.1f} GB/s (read+write)")
    print("Melem/s; ratios = lowbit / peer at the same thread count; BW = fraction of the 1-thread copy bandwidth\n")
    print("| format | op | lowbit 1T | lowbit 2T | BW 1T | torchao 1T | torchao 2T | vs torchao 1T / 2T | "
          "bitsandbytes 1T | bitsandbytes 2T | vs bnb 1T / 2T | numpy+ml_dtypes | vs numpy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for op in ("enc", "dec"):
            a1, a2 = r.get(f"torchao_{op}_1t"), r.get(f"torchao_{op}_2t")
            b1, b2 = r.get(f"bnb_{op}_1t"), r.get(f"bnb_{op}_2t")
            npy = r.get(f"numpy_{op}_1t")
            l1, l2 = r[f"{op}_1t"], r[f"{op}_2t"]
            name = "encode" if op == "enc" else "decode"
            print(f"| {r['format']} | {name} | {_num(l1)} | {_num(l2)} | {r[op + '_1t_bw']:.0%} | {_num(a1)} | {_num(a2)} | "
                  f"{_ratio(l1, a1)} / {_ratio(l2, a2)} | {_num(b1)} | {_num(b2)} | {_ratio(l1, b1)} / {_ratio(l2, b2)} | "
                  f"{_num(npy)} | {_ratio(l1, npy)} |")


def print_gpu(rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(f"\nGPU: {env['device']}, {env['elements']:,} elements, copy {env['copy_GBps']:.0f} GB/s, triton {env['triton']}")
    print("| format | encode Melem/s | % copy BW | torchao compiled | vs torchao | bnb quantize_4bit | vs bnb | "
          "decode Melem/s | % copy BW | bnb dequantize | vs bnb |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {_num(r['enc'])} | {r['enc_bw']:.0%} | {_num(r.get('torchao_enc'))} | "
              f"{_ratio(r['enc'], r.get('torchao_enc'))} | {_num(r.get('bnb_enc'))} | {_ratio(r['enc'], r.get('bnb_enc'))} | "
              f"{_num(r['dec'])} | {r['dec_bw']:.0%} | {_num(r.get('bnb_dec'))} | {_ratio(r['dec'], r.get('bnb_dec'))} |")
        if "peer_error" in r:
            print(f"  - {r['format']}: peer failed: {r['peer_error']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="512x4096 elements, 3 repeats")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    shape, repeats = ((512, 4096), 3) if args.quick else ((2048, 4096), 5)
    import bitsandbytes
    import ml_dtypes
    import numba
    import torch
    import torchao

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "machine": platform.machine(),
            "cores": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
            "ml_dtypes": ml_dtypes.__version__, "torch": torch.__version__, "torchao": torchao.__version__,
            "bitsandbytes": bitsandbytes.__version__, "lowbit": lowbit.__version__}
    print("lowbit block-scaled benchmark:", json.dumps(info))
    cpu, cpu_env = cpu_rows(*shape, repeats)
    print_cpu(cpu, cpu_env)
    result: dict[str, Any] = {"info": info, "cpu": {"env": cpu_env, "rows": cpu}}
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        gpu, gpu_env = gpu_rows(8192, 8192)
        print_gpu(gpu, gpu_env)
        result["gpu"] = {"env": gpu_env, "rows": gpu}
    else:
        print("\nGPU: no CUDA device here; the GPU table needs one (the interpreter is not a speed measure).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
