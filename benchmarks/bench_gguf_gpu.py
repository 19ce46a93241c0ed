"""GGUF Triton kernels on a CUDA GPU: decode (and encode) throughput of lowbit's ``backend="gpu"``
against gguf-py's numpy dequantizer (CPU), a plain torch decoder on the same GPU (the obvious
vectorised port, for the types it covers), and the GPU's copy bandwidth.

    python benchmarks/bench_gguf_gpu.py [--rows 4096] [--cols 4096] [--types q4_k,q6_k] [--json out.json]
    python benchmarks/bench_gguf_gpu.py --check-reference   # the torch decoders vs lowbit, on CPU

Without a CUDA device it prints why and exits 0 (the Triton interpreter is far too slow to time).
Decode is timed with CUDA events, best of ``--repeat`` runs after a warm-up; "copy" is a
device-to-device copy of the same bytes (block bytes read + float32 written), the bandwidth the
decode target is measured against (decode >= 90 % of copy, research/gguf.md). Every decoded
tensor is checked bit-equal to lowbit's CPU decode before it is timed, and every GPU encode
byte-equal to the CPU encode. Nothing is recorded automatically; --json writes what was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import lowbit

TYPES = ["q4_0", "q4_1", "q5_0", "q8_0", "mxfp4_ggml", "iq4_nl", "iq4_xs", "tq2_0",
         "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


# ---- torch reference decoders (gguf-py's numpy formulas, on torch tensors) ----------------------

def _f16(raw, o):  # the little-endian ggml_half at byte o of each block, as float32
    import torch

    return raw[:, o:o + 2].contiguous().view(torch.float16).float()


def torch_q8_0(raw):
    import torch

    d = _f16(raw, 0)
    return d * raw[:, 2:34].contiguous().view(torch.int8).float()


def torch_q4_0(raw):
    import torch

    d = _f16(raw, 0)
    qs = raw[:, 2:18].to(torch.int32)
    q = torch.cat([qs & 0xF, qs >> 4], dim=1) - 8
    return q.float() * d


def torch_q6_k(raw):
    import torch

    d = _f16(raw, 208)
    ql = raw[:, 0:128].to(torch.int32).reshape(-1, 2, 2, 32)      # [blk, h, half, l]
    qh = raw[:, 128:192].to(torch.int32).reshape(-1, 2, 1, 32)    # [blk, h, 1, l]
    sc = raw[:, 192:208].contiguous().view(torch.int8).float()     # [blk, 16]
    lo = torch.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], dim=2)
    hi = torch.stack([(qh[:, :, 0] >> (2 * t)) & 3 for t in range(4)], dim=2)
    q = ((lo | (hi << 4)) - 32).float()                             # [blk, h, t, l]
    isc = sc.reshape(-1, 2, 8)                                      # [blk, h, 8]: index l//16 + 2t
    s = torch.stack([isc[:, :, 2 * t:2 * t + 2] for t in range(4)], dim=2)  # [blk, h, t, 2]
    s = s.repeat_interleave(16, dim=3)                              # [blk, h, t, 32]
    return ((d.reshape(-1, 1, 1, 1) * s) * q).reshape(-1, 256)


def torch_q4_k(raw):
    import torch

    d = _f16(raw, 0)
    dmin = _f16(raw, 2)
    s = raw[:, 4:16].to(torch.int32)
    sc = torch.cat([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], dim=1).float()
    mn = torch.cat([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], dim=1).float()
    qs = raw[:, 16:144].to(torch.int32).reshape(-1, 4, 32)
    q = torch.stack([qs & 0xF, qs >> 4], dim=2).reshape(-1, 8, 32).float()  # sub-block 2c + half
    return ((d * sc).unsqueeze(2) * q - (dmin * mn).unsqueeze(2)).reshape(-1, 256)


TORCH_REF = {"q8_0": (34, torch_q8_0), "q4_0": (18, torch_q4_0), "q6_k": (210, torch_q6_k), "q4_k": (144, torch_q4_k)}


def torch_decode(t: str, raw, rows: int, cols: int):
    ts, fn = TORCH_REF[t]
    return fn(raw.reshape(-1, ts)).reshape(rows, cols)


# ---- timing ------------------------------------------------------------------------------------

def gpu_time(fn, repeat: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) / 1e3)
    return best


def cpu_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def check_reference() -> None:
    """The torch decoders above against lowbit's CPU decode, bit for bit, on CPU tensors."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1024)).astype(np.float32)
    for t in TORCH_REF:
        c = lowbit.get_codec(t)
        q = c.encode(x, backend="cpu")
        want = c.decode(q, backend="cpu")
        got = torch_decode(t, torch.from_numpy(q.data), *x.shape).numpy()
        same = np.array_equal(want.view(np.uint32), got.view(np.uint32))
        print(f"{t:<8} torch reference {'bit-identical' if same else 'DIFFERS'} to lowbit's decode"
              + ("" if same else f" (max |diff| {np.abs(want - got).max():.3g})"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--encode", action="store_true", help="also time the GPU encoders (imatrix off)")
    ap.add_argument("--check-reference", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.check_reference:
        check_reference()
        return 0
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to benchmark")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark is skipped (run it on a machine with one)")
        return 0
    from gguf import GGMLQuantizationType as QT
    from gguf import quants as gq

    from lowbit.tools.ggml_oracle import GGML_TYPES

    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.cols)).astype(np.float32)
    xg = torch.from_numpy(x).to(dev)
    n = x.size
    res = []
    print(f"{torch.cuda.get_device_name()}; {a.rows}x{a.cols} float32")
    print(f"{'type':<11}{'op':<8}{'lowbit GB/s':>12}{'copy GB/s':>10}{'of copy':>8}{'torch ref':>10}{'gguf-py':>9}  (Melem/s for the last two)")
    for t in a.types.split(","):
        c = lowbit.get_codec(t)
        q = c.encode(x, backend="cpu")
        raw = torch.from_numpy(q.data).to(dev)
        want = c.decode(q, backend="cpu")
        got = c.decode_bytes(raw, x.shape, backend="gpu")
        if not np.array_equal(got.cpu().numpy().view(np.uint32), want.view(np.uint32)):
            print(f"{t}: GPU decode differs from the CPU decode; not timed")
            continue
        nbytes = raw.numel() + 4 * n  # block bytes read, float32 written
        dec = gpu_time(lambda: c.decode_bytes(raw, x.shape, backend="gpu"), a.repeat)
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=dev)
        dst = torch.empty_like(src)
        cp = gpu_time(lambda: dst.copy_(src), a.repeat)  # reads and writes nbytes/2 each: nbytes moved
        ref = None
        if t in TORCH_REF:
            ref = n / gpu_time(lambda: torch_decode(t, raw, a.rows, a.cols), a.repeat) / 1e6
        qtype = QT.MXFP4 if t == "mxfp4_ggml" else QT(GGML_TYPES[t])
        try:
            py = n / cpu_time(lambda: gq.dequantize(q.data, qtype), 1) / 1e6
        except NotImplementedError:
            py = None
        row = {"type": t, "op": "decode", "lowbit_GBps": nbytes / dec / 1e9, "copy_GBps": nbytes / cp / 1e9,
               "lowbit_Melem_s": n / dec / 1e6, "torch_ref_Melem_s": ref, "gguf_py_Melem_s": py}
        res.append(row)
        print(f"{t:<11}{'decode':<8}{row['lowbit_GBps']:>12.1f}{row['copy_GBps']:>10.1f}{cp / dec:>8.0%}"
              f"{'-' if ref is None else f'{ref:.0f}':>10}{'-' if py is None else f'{py:.0f}':>9}")
        if a.encode:
            qg = c.encode(xg, backend="gpu")
            if not np.array_equal(qg.data.cpu().numpy(), q.data):
                print(f"{t}: GPU encode differs from the CPU encode; not timed")
                continue
            enc = gpu_time(lambda: c.encode(xg, backend="gpu"), max(1, a.repeat // 3))
            res.append({"type": t, "op": "encode", "lowbit_Melem_s": n / enc / 1e6})
            print(f"{t:<11}{'encode':<8}{n / enc / 1e6:>12.0f} Melem/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": a.rows, "cols": a.cols, "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
