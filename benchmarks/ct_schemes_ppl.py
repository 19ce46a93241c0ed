"""Perplexity of SmolLM2-135M-Instruct written by ``lowbit convert --to compressed-tensors --scheme``
for each preset, loaded back with plain ``from_pretrained`` (float32 where compressed-tensors
can, else bfloat16), on lowbit's fixed English text: the figures in docs/compressed-tensors.md.

    python benchmarks/ct_schemes_ppl.py FLOAT_MODEL_DIR [--tokens 512]

FLOAT_MODEL_DIR: SmolLM2 as a bfloat16 Hugging Face folder (tests/test_model_folder.py's
smollm2_folder fixture caches one under .cache/models/smollm2-135m-instruct-hf-bf16).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import transformers

from lowbit.formats.model_folder import quantize_folder
from lowbit.tools.realmodel import eval_text

RUNS = [("float (bf16 source)", None, None), ("W4A16", 64, "float32"), ("W4A16", 32, "float32"),
        ("W8A16", 64, "float32"), ("FP8_DYNAMIC", None, "float32"), ("NVFP4A16", None, "bfloat16"),
        ("MXFP4A16", None, "bfloat16")]


def ppl(folder: Path, dtype: str, n: int) -> float:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    ids = tok(eval_text(), return_tensors="pt").input_ids[:, :n]
    with torch.no_grad():
        return float(torch.exp(model(ids, labels=ids).loss))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, g, dt in RUNS:
            t0 = time.perf_counter()
            if g is None and dt is None:
                folder, dt, sec, size = Path(a.model), "float32", 0.0, (Path(a.model) / "model.safetensors").stat().st_size
            else:
                r = quantize_folder(a.model, Path(d) / f"{name}-{g}", scheme=name, group_size=g, progress=None)
                folder, sec, size = Path(r["output"]), time.perf_counter() - t0, r["output_bytes"]
            p = ppl(folder, dt, a.tokens)
            rows.append({"scheme": name, "group_size": g, "load_dtype": dt, "ppl": round(p, 3),
                         "convert_s": round(sec, 1), "folder_bytes": size})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
