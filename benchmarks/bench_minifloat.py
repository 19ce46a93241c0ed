"""Element-wise codec speed: lowbit's kernels next to ml_dtypes' and torch's casts, same run.

    python benchmarks/bench_minifloat.py            # CPU (and CUDA when present)
    python benchmarks/bench_minifloat.py --quick    # smaller tensor, fewer repeats
    python benchmarks/bench_minifloat.py --json out.json

For every format: encode (float32 -> packed codes) and decode (codes -> float32) throughput in
million elements per second, the peer's throughput on the same tensor, the ratio, and the
fraction of the hardware limit: bytes moved (float32 in + codes out, or the reverse) over the
time a plain memory copy of the same number of bytes takes on this machine (measured here).

Peers do less work than lowbit in two places, which the table states: ml_dtypes' sub-byte types
keep one code per byte (no packing), and neither peer computes or applies scales. Best of N
repeats after a warm-up (JIT compile excluded).
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

# (label, codec id, codec params, ml_dtypes type name or None, torch dtype name or None, note)
CASES = [
    ("fp8_e4m3", "fp8_e4m3", {}, "float8_e4m3fn", None, "torch >= 2.13 saturates: compared below with overflow=saturate"),
    ("fp8_e4m3 sat", "fp8_e4m3", {"overflow": "saturate"}, None, "float8_e4m3fn", ""),
    ("fp8_e5m2", "fp8_e5m2", {}, "float8_e5m2", "float8_e5m2", ""),
    ("fp6_e2m3", "fp6_e2m3", {}, "float6_e2m3fn", None, "ml_dtypes: one code per byte, no packing"),
    ("fp4_e2m1", "fp4_e2m1", {}, "float4_e2m1fn", None, "ml_dtypes: one code per byte, no packing"),
    ("e8m0", "e8m0", {}, "float8_e8m0fnu", "float8_e8m0fnu", "unsigned: fed |x|, as scales are"),
    ("bf16 (e8m7)", "minifloat", {"ebits": 8, "mbits": 7}, "bfloat16", "bfloat16", ""),
    ("fp16 (e5m10)", "minifloat", {"ebits": 5, "mbits": 10}, "float16", "float16", "ml_dtypes column: numpy's float16"),
    ("fp8_e4m3 channel", "fp8_e4m3", {"scale": "channel"}, None, None, "scales computed and applied; no peer"),
    ("int8 channel", "int8", {"scale": "channel"}, None, None, "symmetric absmax int8; no peer"),
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
    """Bytes per second (read + write) of a plain single-threaded numpy copy."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / best_of(lambda: np.copyto(b, a), repeats)


def cpu_rows(n_rows: int, n_cols: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import ml_dtypes
    import numba
    import torch

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n_rows, n_cols)) * np.exp(rng.normal(0, 1, (n_rows, 1)))).astype(np.float32)
    n = x.size
    bw = copy_bandwidth(x.nbytes, repeats)
    env = {"elements": n, "copy_GBps": bw / 1e9, "cpu_threads_available": numba.config.NUMBA_NUM_THREADS}
    rows = []
    x_signed = x
    for label, cid, params, md_name, torch_name, note in CASES:
        codec = lowbit.get_codec(cid, **params)
        x = x_signed if codec.format.signed else np.abs(x_signed)  # unsigned formats: scale-like data
        out_bytes = n * codec.layout.bits_per_element / 8
        row: dict[str, Any] = {"format": label, "note": note}
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            q = codec.encode(x, backend="cpu")
            te = best_of(lambda: codec.encode(x, backend="cpu"), repeats)
            td = best_of(lambda: codec.decode(q, backend="cpu"), repeats)
            row[f"enc_{threads}t"] = n / te / 1e6
            row[f"dec_{threads}t"] = n / td / 1e6
            row[f"enc_{threads}t_bw"] = (x.nbytes + out_bytes) / te / bw
            row[f"dec_{threads}t_bw"] = (x.nbytes + out_bytes) / td / bw
        if md_name:
            t = np.float16 if md_name == "float16" else getattr(ml_dtypes, md_name)
            with np.errstate(all="ignore"):
                y = x.astype(t)
                row["ml_dtypes_enc"] = n / best_of(lambda: x.astype(t), repeats) / 1e6
                row["ml_dtypes_dec"] = n / best_of(lambda: y.astype(np.float32), repeats) / 1e6
        if torch_name:
            tdt = getattr(torch, torch_name)
            xt = torch.from_numpy(x)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                yt = xt.to(tdt)
                row[f"torch_enc_{threads}t"] = n / best_of(lambda: xt.to(tdt), repeats) / 1e6
                row[f"torch_dec_{threads}t"] = n / best_of(lambda: yt.to(torch.float32), repeats) / 1e6
        rows.append(row)
    return rows, env


def gpu_rows(n_rows: int, n_cols: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch
    import triton

    dev = torch.device("cuda")
    x = torch.randn(n_rows, n_cols, device=dev)
    n = x.numel()

    def bench(fn: Callable[[], Any]) -> float:
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3

    y = torch.empty_like(x)
    bw = 2 * x.numel() * 4 / bench(lambda: y.copy_(x))
    env = {"device": torch.cuda.get_device_name(), "copy_GBps": bw / 1e9, "elements": n, "triton": triton.__version__}
    rows = []
    for label, cid, params, _md, torch_name, note in CASES:
        codec = lowbit.get_codec(cid, **params)
        out_bytes = n * codec.layout.bits_per_element / 8
        q = codec.encode(x, backend="gpu")
        te = bench(lambda: codec.encode(x, backend="gpu"))
        td = bench(lambda: codec.decode(q, backend="gpu"))
        row = {"format": label, "note": note, "enc": n / te / 1e6, "dec": n / td / 1e6,
               "enc_bw": (n * 4 + out_bytes) / te / bw, "dec_bw": (n * 4 + out_bytes) / td / bw}
        if torch_name:
            tdt = getattr(torch, torch_name)
            yt = x.to(tdt)
            row["torch_enc"] = n / bench(lambda: x.to(tdt)) / 1e6
            row["torch_dec"] = n / bench(lambda: yt.to(torch.float32)) / 1e6
        rows.append(row)
    return rows, env


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _num(v: float | None) -> str:
    return f"{v:.0f}" if v else "-"


def print_cpu(rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(f"\nCPU: {env['elements']:,} float32 elements; single-thread numpy copy {env['copy_GBps']:.1f} GB/s (read+write)")
    print("Melem/s; 'vs' = lowbit / peer at the same thread count; 'BW' = fraction of the copy bandwidth (1 thread)\n")
    print("| format | op | lowbit 1T | lowbit 2T | ml_dtypes 1T | vs ml_dtypes | torch 1T | torch 2T | vs torch 1T/2T | BW 1T |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for op in ("enc", "dec"):
            md = r.get(f"ml_dtypes_{op}")
            t1, t2 = r.get(f"torch_{op}_1t"), r.get(f"torch_{op}_2t")
            name = "encode" if op == "enc" else "decode"
            print(f"| {r['format']} | {name} | {_num(r[op + '_1t'])} | {_num(r[op + '_2t'])} | {_num(md)} | "
                  f"{_ratio(r[op + '_1t'], md)} | {_num(t1)} | {_num(t2)} | "
                  f"{_ratio(r[op + '_1t'], t1)} / {_ratio(r[op + '_2t'], t2)} | {r[op + '_1t_bw']:.0%} |")
    notes = {r["format"]: r["note"] for r in rows if r["note"]}
    for k, v in notes.items():
        print(f"- {k}: {v}")


def print_gpu(rows: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(f"\nGPU: {env['device']}, {env['elements']:,} elements, copy {env['copy_GBps']:.0f} GB/s, triton {env['triton']}")
    print("| format | encode Melem/s | % copy BW | torch cast | vs torch | decode Melem/s | % copy BW | torch | vs torch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {_num(r['enc'])} | {r['enc_bw']:.0%} | {_num(r.get('torch_enc'))} | "
              f"{_ratio(r['enc'], r.get('torch_enc'))} | {_num(r['dec'])} | {r['dec_bw']:.0%} | "
              f"{_num(r.get('torch_dec'))} | {_ratio(r['dec'], r.get('torch_dec'))} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024x4096 elements, 3 repeats")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    shape, repeats = ((1024, 4096), 3) if args.quick else ((4096, 4096), 7)
    import ml_dtypes
    import numba
    import torch

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "machine": platform.machine(),
            "cpu": platform.processor() or platform.uname().machine, "cores": os.cpu_count(),
            "numpy": np.__version__, "numba": numba.__version__, "ml_dtypes": ml_dtypes.__version__,
            "torch": torch.__version__, "lowbit": lowbit.__version__}
    print("lowbit minifloat benchmark:", json.dumps(info))
    cpu, cpu_env = cpu_rows(*shape, repeats)
    print_cpu(cpu, cpu_env)
    result: dict[str, Any] = {"info": info, "cpu": {"env": cpu_env, "rows": cpu}}
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        gpu, gpu_env = gpu_rows(8192, 8192, repeats)
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
