"""KV-cache codecs: encode time per token and attention on the codes, next to the plain paths,
in one run.

    python benchmarks/bench_kv.py                 # CPU, one thread (the kernels are single-threaded)
    python benchmarks/bench_kv.py --quick         # fewer tokens and repeats
    python benchmarks/bench_kv.py --json out.json
    python benchmarks/bench_kv.py --cuda          # the Triton kernels on a CUDA device (see below)

Per codec, for H heads × N cached tokens × dim (a decode step: M queries per head):

* ``encode``: µs per token (all H heads of one token), encoding the N tokens at once;
* ``scores``: ``lowbit.kvcache.scores(q, keys)`` on the codes (query rotated once);
* ``dec+mm``: the obvious alternative, ``decode(keys)`` then a float32 matmul (what a
  dequantize-then-attend cache does every step);
* ``weighted_sum``: ``p · V`` on the codes, and its decode-then-matmul twin;
* peers without codecs in the same run: the float32 matmul (numpy) and the bfloat16 matmul
  (torch) over uncompressed K, the floor any compressed path is compared with.

With ``--peers`` (needs optimum-quanto and/or hqq importable), transformers' ``QuantizedCache``
at 4 bits: prefill time of the same N tokens (quantize) and the cost of one decode step
(``update`` with one token: dequantize the history and concatenate), which a model then follows
with the same float32 matmul. Best of R repeats after a warm-up (JIT compile excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

THREADS = os.environ.get("LOWBIT_BENCH_THREADS", "1")
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, THREADS)

import numpy as np  # noqa: E402

import lowbit  # noqa: E402
from lowbit.kvcache import scores, weighted_sum  # noqa: E402

CODECS = [
    ("turboquant_mse 4b", "turboquant_mse", {"bits": 4}),
    ("turboquant_mse 3b", "turboquant_mse", {"bits": 3}),
    ("turboquant_mse 2b", "turboquant_mse", {"bits": 2}),
    ("turboquant_mse 4b rht", "turboquant_mse", {"bits": 4, "rotation": "rht"}),
    ("turboquant_mse 3.5b", "turboquant_mse", {"bits": 3.5}),
    ("turboquant_prod 4b", "turboquant_prod", {"bits": 4}),
    ("octopus 4b", "octopus", {"bits": 4}),
    ("octopus 2b", "octopus", {"bits": 2}),
    ("bfp12 (block 32)", "bfp12", {"block": 32}),
]


def best_of(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up (and JIT compile)
    sync()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        t.append(time.perf_counter() - t0)
    return min(t)


def run_cpu(H: int, N: int, d: int, M: int, repeats: int) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(int(THREADS))
    rng = np.random.default_rng(0)
    k = rng.standard_normal((H, N, d)).astype(np.float32)
    k[:, :, 3] *= 8  # an outlier channel, as real keys have
    v = rng.standard_normal((H, N, d)).astype(np.float32)
    q = rng.standard_normal((H, M, d)).astype(np.float32)
    p = rng.random((H, M, N)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    rows = []
    kt, qt, vt, pt = (torch.from_numpy(a).to(torch.bfloat16) for a in (k, q, v, p))
    t_f32 = best_of(lambda: np.matmul(q, np.swapaxes(k, -1, -2)), repeats)
    t_bf16 = best_of(lambda: torch.matmul(qt, kt.transpose(-1, -2)), repeats)
    t_f32_w = best_of(lambda: np.matmul(p, v), repeats)
    t_bf16_w = best_of(lambda: torch.matmul(pt, vt), repeats)
    rows.append({"codec": "float32 K (numpy matmul)", "bits": 32.0, "scores_ms": t_f32 * 1e3, "wsum_ms": t_f32_w * 1e3})
    rows.append({"codec": "bfloat16 K (torch matmul)", "bits": 16.0, "scores_ms": t_bf16 * 1e3, "wsum_ms": t_bf16_w * 1e3})
    for label, cid, cfg in CODECS:
        c = lowbit.get_codec(cid, **({"dim": d} if cid != "bfp12" else {}), **cfg)
        keys = c.encode(k)
        vals = c.encode(v)
        t_enc = best_of(lambda: c.encode(k), repeats)
        t_s = best_of(lambda: scores(q, keys), repeats)
        t_dm = best_of(lambda: np.matmul(q, np.swapaxes(c.decode(keys), -1, -2)), repeats)
        t_w = best_of(lambda: weighted_sum(p, vals), repeats)
        t_dw = best_of(lambda: np.matmul(p, c.decode(vals)), repeats)
        rows.append({"codec": label, "bits": float(c.bits_per_element((1, d))), "encode_us_per_token": t_enc / N * 1e6,
                     "scores_ms": t_s * 1e3, "dec_mm_ms": t_dm * 1e3, "wsum_ms": t_w * 1e3, "dec_mm_w_ms": t_dw * 1e3,
                     "scores_vs_dec_mm": t_dm / t_s, "scores_vs_bf16": t_bf16 / t_s, "wsum_vs_dec_mm": t_dw / t_w})
    return rows


def run_peers(H: int, N: int, d: int, repeats: int) -> list[dict[str, Any]]:
    """transformers' QuantizedCache (quanto / HQQ backends), 4 bits, group 64, residual 128."""
    import torch

    try:
        from transformers import LlamaConfig, QuantizedCache
    except Exception as e:  # noqa: BLE001
        return [{"peer": "transformers QuantizedCache", "error": f"{type(e).__name__}: {e}"}]
    cfg = LlamaConfig(num_hidden_layers=1, hidden_size=H * d, num_attention_heads=H, num_key_value_heads=H, head_dim=d)
    torch.manual_seed(0)
    k = torch.randn(1, H, N, d)
    one = torch.randn(1, H, 1, d)
    out = []
    for backend in ("quanto", "hqq"):
        try:
            def prefill() -> Any:
                cache = QuantizedCache(backend=backend, config=cfg, nbits=4, q_group_size=64, residual_length=128)
                cache.update(k, k, 0)
                return cache

            t_pre = best_of(prefill, repeats)
            cache = prefill()

            def step() -> None:
                kk, _ = cache.update(one, one, 0)  # dequantize the history, append the new token
                assert kk.shape[-2] > N

            t_step = best_of(step, repeats)
            out.append({"peer": f"QuantizedCache[{backend}] 4b", "encode_us_per_token": t_pre / N * 1e6,
                        "step_ms": t_step * 1e3})
        except Exception as e:  # noqa: BLE001
            out.append({"peer": f"QuantizedCache[{backend}] 4b", "error": f"{type(e).__name__}: {str(e)[:200]}"})
    return out


def run_cuda(H: int, N: int, d: int, M: int, repeats: int) -> list[dict[str, Any]]:
    """The Triton kernels against torch's bfloat16 matmul on the same CUDA device."""
    import torch

    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    g = torch.Generator(device=dev).manual_seed(0)
    k = torch.randn(H, N, d, device=dev, generator=g)
    q = torch.randn(H, M, d, device=dev, generator=g)
    kb, qb = k.to(torch.bfloat16), q.to(torch.bfloat16)
    t_bf16 = best_of(lambda: torch.matmul(qb, kb.transpose(-1, -2)), repeats, sync)
    rows = [{"codec": "bfloat16 K (torch matmul)", "bits": 16.0, "scores_ms": t_bf16 * 1e3}]
    for label, cid, cfg in CODECS:
        c = lowbit.get_codec(cid, **({"dim": d} if cid != "bfp12" else {}), **cfg)
        keys = c.encode(k, backend="gpu")
        t_enc = best_of(lambda: c.encode(k, backend="gpu"), repeats, sync)
        t_s = best_of(lambda: scores(q, keys, backend="gpu"), repeats, sync)
        t_dm = best_of(lambda: torch.matmul(q, c.decode(keys, backend="gpu").transpose(-1, -2)), repeats, sync)
        rows.append({"codec": label, "bits": float(c.bits_per_element((1, d))), "encode_us_per_token": t_enc / N * 1e6,
                     "scores_ms": t_s * 1e3, "dec_mm_ms": t_dm * 1e3, "scores_vs_dec_mm": t_dm / t_s,
                     "scores_vs_bf16": t_bf16 / t_s})
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]], peers: list[dict[str, Any]], title: str) -> None:
    print(title)
    print("| codec | bits/elt | encode µs/token | scores ms | dec+mm ms | dec+mm / scores | bf16 / scores "
          "| wsum ms | dec+mm ms (V) | dec+mm / wsum |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['codec']} | {r['bits']:.3g} | {_fmt(r.get('encode_us_per_token'), '.2f')} | "
              f"{_fmt(r.get('scores_ms'), '.3f')} | {_fmt(r.get('dec_mm_ms'), '.3f')} | "
              f"{_fmt(r.get('scores_vs_dec_mm'), '.2f')}{'x' if 'scores_vs_dec_mm' in r else ''} | "
              f"{_fmt(r.get('scores_vs_bf16'), '.2f')}{'x' if 'scores_vs_bf16' in r else ''} | "
              f"{_fmt(r.get('wsum_ms'), '.3f')} | {_fmt(r.get('dec_mm_w_ms'), '.3f')} | "
              f"{_fmt(r.get('wsum_vs_dec_mm'), '.2f')}{'x' if 'wsum_vs_dec_mm' in r else ''} |")
    for p in peers:
        if "error" in p:
            print(f"- {p['peer']}: not measured ({p['error']})")
        else:
            print(f"- {p['peer']}: prefill {p['encode_us_per_token']:.2f} µs/token; one decode step "
                  f"(dequantize history + append) {p['step_ms']:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--peers", action="store_true", help="transformers QuantizedCache (quanto, HQQ)")
    ap.add_argument("--json")
    a = ap.parse_args()
    H, N, d, M = (4, 512, 128, 1) if a.quick else (8, 4096, 128, 1)
    R = 3 if a.quick else 7
    import numba
    import torch

    meta = {"machine": f"{platform.machine()} {os.cpu_count()} logical CPUs", "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__,
            "lowbit": getattr(lowbit, "__version__", "?"), "threads": THREADS,
            "date": time.strftime("%Y-%m-%d"), "shape": {"heads": H, "tokens": N, "dim": d, "queries": M}}
    print(json.dumps(meta))
    out: dict[str, Any] = {"meta": meta}
    if a.cuda:
        rows = run_cuda(H, N, d, M, R)
        print_table(rows, [], f"CUDA ({torch.cuda.get_device_name()}): {H} heads x {N} tokens x {d}, {M} query/head")
        out["cuda"] = rows
    else:
        rows = run_cpu(H, N, d, M, R)
        peers = run_peers(H, N, d, R) if a.peers else []
        print_table(rows, peers, f"CPU, {THREADS} thread(s): {H} heads x {N} tokens x {d}, {M} query/head")
        out["cpu"], out["peers"] = rows, peers
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
