"""A Hugging Face tokenizer as llama.cpp's ``tokenizer.*`` GGUF keys (for :mod:`lowbit.formats.hf_gguf`).

Byte-level BPE tokenizers (GPT-2 style ``tokenizer.json``: SmolLM, Llama 3, Qwen2/3) are written as
llama.cpp's converter writes them:

* ``tokenizer.ggml.model`` ``gpt2``; the vocabulary from gguf-py's ``gguf.vocab.BpeVocab``, padded to
  ``vocab_size`` with ``[PAD<id>]`` tokens of type UNUSED;
* token types: NORMAL, except the ``added_tokens`` of ``tokenizer.json``: CONTROL when marked
  ``special`` or spelled like a control token (``<|...|>``, ``<pad>``, ``<mask>``, ``<unused...>``),
  USER_DEFINED otherwise (with SentencePiece's ``\u2581`` read as a space);
* ``tokenizer.ggml.pre``, the name llama.cpp gives the pre-tokenizer of a vocabulary
  (:data:`PRE_TOKENIZERS`, recognised by the vocabulary's own tokens);
* merges, special token ids, ``add_*_token`` flags and the chat template from gguf-py's
  ``gguf.SpecialVocab`` (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``,
  ``config.json``);
* for the Llama family, llama.cpp's two extra rules: ``add_prefix_space`` of
  ``tokenizer_config.json`` becomes ``tokenizer.ggml.add_space_prefix``, and a vocabulary of
  exactly 49152 tokens (Granite's and SmolLM's) gets ``tokenizer.ggml.add_bos_token = false``.

SentencePiece (``tokenizer.model``) and byte-fallback BPE tokenizers (Llama 2, Mistral) are refused
with a FormatError for now.

>>> pre_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + ["x"] * 49149)
'smollm'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FormatError

__all__ = ["PRE_TOKENIZERS", "pre_tokenizer", "add_vocab", "looks_like_control"]

#: llama.cpp's pre-tokenizer names (``tokenizer.ggml.pre``) and the vocabularies they belong to:
#: (name, vocabulary size, {token id: token}). llama.cpp names a pre-tokenizer after the vocabulary
#: it was written for, so a vocabulary is recognised by its size and its first special tokens.
#: Only "smollm" is checked against llama.cpp's converter here (tests/test_hf_to_gguf.py).
PRE_TOKENIZERS: tuple[tuple[str, int, dict[int, str]], ...] = (
    ("smollm", 49152, {0: "<|endoftext|>", 1: "<|im_start|>", 2: "<|im_end|>"}),
    ("llama-bpe", 128256, {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>"}),
    ("qwen2", 151643, {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"}),
)


def pre_tokenizer(tokens: list[str]) -> str:
    """The ``tokenizer.ggml.pre`` name of a byte-level BPE vocabulary (its tokens by id)."""
    for name, size, anchors in PRE_TOKENIZERS:
        if len(tokens) >= size and all(i < len(tokens) and tokens[i] == t for i, t in anchors.items()):
            return name
    raise FormatError(f"tokenizer.json: a byte-level BPE vocabulary of {len(tokens)} tokens starting "
                      f"{tokens[:3]!r} is not one lowbit knows the llama.cpp pre-tokenizer of "
                      f"({', '.join(n for n, _, _ in PRE_TOKENIZERS)})")


def looks_like_control(token: str) -> bool:
    """Added tokens llama.cpp's converter treats as control tokens even when not marked special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: cannot read ({e})") from None


def _check_tokenizer(folder: Path) -> dict[str, Any]:
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        if (folder / "tokenizer.model").is_file():
            raise FormatError(f"{folder}: a SentencePiece tokenizer (tokenizer.model) without tokenizer.json: "
                              "lowbit writes byte-level BPE tokenizers only (for now)")
        raise FormatError(f"{folder}: no tokenizer (tokenizer.json) in the model folder: llama.cpp needs the "
                          "vocabulary in the GGUF")
    doc = _json(tj)
    model = doc.get("model") if isinstance(doc, dict) else None
    decoder = doc.get("decoder") if isinstance(doc, dict) else None
    if (not isinstance(model, dict) or model.get("type") != "BPE" or model.get("byte_fallback")
            or not isinstance(decoder, dict) or decoder.get("type") != "ByteLevel"):
        raise FormatError(f"{tj}: not a byte-level BPE tokenizer (GPT-2 style); lowbit does not write "
                          "SentencePiece or byte-fallback tokenizers (Llama 2, Mistral) yet")
    if (folder / "tokenizer.model").is_file():
        raise FormatError(f"{folder}: has tokenizer.model, which llama.cpp's converter would read as a "
                          "SentencePiece vocabulary; lowbit writes byte-level BPE tokenizers only (for now)")
    return doc


def add_vocab(w: Any, folder: Path, cfg: dict[str, Any], *, llama_rules: bool) -> None:
    """Set the tokenizer keys on the gguf-py writer ``w`` (see the module text)."""
    import gguf

    folder = Path(folder)
    doc = _check_tokenizer(folder)
    if llama_rules and (folder / "tokenizer_config.json").is_file():
        tc = _json(folder / "tokenizer_config.json")
        if isinstance(tc, dict) and tc.get("add_prefix_space") is not None:
            w.add_add_space_prefix(tc["add_prefix_space"])
    bpe = gguf.vocab.BpeVocab(folder)
    by_id = {i: t for t, i in bpe.vocab.items()}
    by_id.update({i: t for t, i in bpe.added_tokens_dict.items()})
    n_vocab = int(cfg.get("vocab_size") or len(by_id))
    if by_id and max(by_id) >= n_vocab:
        raise FormatError(f"{folder}: tokenizer ids go up to {max(by_id)}, but config.json's vocab_size is {n_vocab}")
    added = {a["content"]: a for a in doc.get("added_tokens") or [] if isinstance(a, dict) and "content" in a}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif t in added:
            if added[t].get("special") or looks_like_control(t):
                types.append(gguf.TokenType.CONTROL)
            else:
                t = t.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
            tokens.append(t)
        else:
            tokens.append(t)
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer(tokens))
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True).add_to_gguf(w, quiet=True)
    if llama_rules and n_vocab == 49152:
        w.add_add_bos_token(False)
