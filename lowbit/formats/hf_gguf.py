"""A Hugging Face model folder read as the GGUF that llama.cpp's ``convert_hf_to_gguf.py`` writes.

``lowbit quantize HF_DIR out.gguf Q4_K_M`` and ``lowbit convert HF_DIR out.gguf --to float16`` read a
folder of ``config.json`` + ``model.safetensors`` (or a sharded ``model.safetensors.index.json``) +
tokenizer files through :func:`open_folder`: a :class:`~lowbit.formats.gguf.GGUFFile` whose tensors
have llama.cpp's names, types and shapes and whose metadata is llama.cpp's, while every tensor's
bytes are made from the safetensors file only when asked for (one tensor in memory at a time, no
float GGUF on disk first). The rest of lowbit (mixes, llama-quantize's metadata, the writers)
then sees the same input it would see for the converted file.

What the folder becomes (llama.cpp's own converter is the judge: tests/test_hf_to_gguf.py):

* the architecture: ``config.json``'s ``architectures[0]`` -> a ``gguf.MODEL_ARCH``
  (:data:`ARCHITECTURES`); anything else is refused naming it;
* tensor names: gguf-py's ``gguf.get_tensor_name_map(arch, n_blocks)``; ``lm_head.weight``
  becomes ``output.weight`` when the folder has it (a tied checkpoint saved by transformers has
  none, and llama.cpp then reads ``token_embd.weight`` for the output, as it does for the file
  ``convert_hf_to_gguf.py`` writes);
* the query and key weights of the Llama family are permuted back to the rotary layout llama.cpp
  computes with (:func:`unpermute_rotary`);
* types: 1-D tensors, norms and non-``.weight`` tensors are F32; the other weights F32, F16 or
  BF16 (``outtype``); values are rounded as numpy / ml_dtypes round (to nearest, ties to even);
* metadata, in llama.cpp's order: ``general.*`` from gguf-py's ``gguf.Metadata`` (name, basename,
  finetune, size label from the folder), the hyperparameters (``{arch}.block_count``,
  ``context_length``, ``embedding_length``, ``feed_forward_length``, head counts, rope base and
  scaling, RMS epsilon, key/value lengths, ``vocab_size``, ``rope.dimension_count``),
  ``general.file_type``, ``general.quantization_version``, and the tokenizer (:mod:`lowbit.
  formats.hf_vocab`), all set through gguf-py's own ``GGUFWriter.add_*`` methods.

>>> import json, os, tempfile, numpy as np, lowbit
>>> d = tempfile.mkdtemp()
>>> cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
...        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
...        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "vocab_size": 4}
>>> _ = open(os.path.join(d, "config.json"), "w").write(json.dumps(cfg))
>>> lowbit.save(os.path.join(d, "model.safetensors"), {"model.layers.0.self_attn.k_proj.weight":
...             np.arange(32, dtype=np.float32).reshape(4, 8)})
>>> with open_folder(d, tokenizer=False) as f:
...     f.names(), f.metadata["llama.attention.head_count_kv"], f.get("blk.0.attn_k.weight")[:, 0].tolist()
(['blk.0.attn_k.weight'], 1, [0.0, 16.0, 8.0, 24.0])
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, FormatError
from . import gguf as G

__all__ = ["ARCHITECTURES", "OUTTYPES", "HFSource", "HFCheckpoint", "is_model_folder", "open_folder",
           "read_config", "unpermute_rotary"]


@dataclass(frozen=True)
class _Family:
    arch: str  # gguf.MODEL_ARCH member name
    unpermute: bool  # HF stores q/k rows in the rotate-half order; llama.cpp's LLAMA rope pairs neighbours
    vocab_keys: bool  # writes {arch}.vocab_size and {arch}.rope.dimension_count


_LLAMA = _Family("LLAMA", True, True)
_QWEN2 = _Family("QWEN2", False, False)
_QWEN3 = _Family("QWEN3", False, False)

#: config.json ``architectures[0]`` -> how it maps (Mistral is a Llama for llama.cpp; Qwen2/Qwen3 use
#: llama.cpp's NEOX rope, which pairs the halves exactly as HF does, so nothing is permuted)
ARCHITECTURES = {"LlamaForCausalLM": _LLAMA, "MistralForCausalLM": _LLAMA,
                 "Qwen2ForCausalLM": _QWEN2, "Qwen3ForCausalLM": _QWEN3}

#: outtype -> (gguf.LlamaFileType member, the ggml type of the weights)
OUTTYPES = {"f32": ("ALL_F32", "f32"), "f16": ("MOSTLY_F16", "f16"), "bf16": ("MOSTLY_BF16", "bf16")}

# tensors llama.cpp's converter drops (buffers some checkpoints carry)
_DROPPED = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
# weights it always stores as F32 (those of the supported architectures)
_ALWAYS_F32 = ("FFN_GATE_INP", "FFN_GATE_INP_SHEXP", "POS_EMBD", "TOKEN_TYPES")


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (a Hugging Face model folder)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The model's hyperparameters: transformers' ``AutoConfig`` of the folder as a dict (its
    defaults filled in, as llama.cpp's converter reads them) where transformers is installed and
    knows the model type, else ``config.json`` itself."""
    folder = Path(folder)
    f = folder / "config.json"
    if not f.is_file():
        raise FormatError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{f}: malformed JSON ({e})") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{f}: expected a JSON object")
    try:
        import transformers

        return transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False).to_dict()
    except ImportError:
        return raw
    except Exception:  # a model type this transformers does not know: the file as it is
        return raw


def _family(cfg: dict[str, Any], folder: Path) -> _Family:
    archs = cfg.get("architectures") or []
    name = archs[0] if isinstance(archs, list) and archs else None
    if name not in ARCHITECTURES:
        raise ConfigError(f"{folder / 'config.json'}: architectures {archs!r}: lowbit converts "
                          f"{sorted(ARCHITECTURES)} to GGUF (use llama.cpp's convert_hf_to_gguf.py for others)")
    return ARCHITECTURES[name]


def _find(cfg: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` the config has (llama.cpp's converter accepts several spellings)."""
    return next((cfg[k] for k in keys if k in cfg and cfg[k] is not None), None)


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a query or key projection (``n_head * head_dim`` rows) from HF's rotary
    layout to llama.cpp's.

    HF's Llama rotates the pair (x[i], x[i + d/2]) of each head by angle theta_i (``rotate_half``);
    llama.cpp's LLAMA rope rotates neighbours (x[2i], x[2i + 1]) by theta_i. Both compute the same
    attention when llama.cpp's row 2i + j of a head is HF's row i + j*d/2 (j = 0, 1): per head, the
    rows seen as (2, d/2) are transposed to (d/2, 2).

    >>> unpermute_rotary(np.arange(8).reshape(8, 1), 2)[:, 0].tolist()   # two heads of four rows
    [0, 2, 1, 3, 4, 6, 5, 7]
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise FormatError(f"rotary permutation: {rows} rows do not split into {n_head} heads of pairs")
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _weights(folder: Path) -> Any:
    """The folder's weights as one safetensors source, read as llama.cpp's converter reads them:
    the shards ``model.safetensors.index.json`` names, else the ``model*.safetensors`` files."""
    from . import open_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return open_file(index)
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))
    if not parts:
        raise FormatError(f"{folder}: no model.safetensors (nor model.safetensors.index.json) beside config.json")
    if len(parts) > 1:
        raise FormatError(f"{folder}: several model*.safetensors files ({', '.join(p.name for p in parts)}) "
                          "and no model.safetensors.index.json naming their tensors")
    return open_file(parts[0])


def _order(st: Any) -> list[str]:
    """Tensor names as llama.cpp's converter walks them: shard files by name, then names sorted."""
    files = [Path(f).name for f in getattr(st, "files", [])]
    if not files:
        return sorted(st.names())
    return sorted(st.names(), key=lambda n: (files[st.shard_of(n)], n))


class HFCheckpoint(G.GGUFFile):
    """An HF model folder as a GGUF source (see the module text); ``raw(name)`` converts one tensor."""

    _st: Any
    _plan: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]  # GGUF name -> (HF name, conversion)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as the GGUF holds them. The pages of the tensor read before this one
        are dropped from the process's map (the page cache keeps them), so reading a whole model
        holds about one tensor's pages at a time."""
        from .sharded import release_pages

        t = self.tensor(name)
        hf, convert = self._plan[name]
        prev = self.__dict__.pop("_last", None)
        if prev is not None:
            release_pages(self._st, prev)
        a = np.ascontiguousarray(convert(np.asarray(self._st.get(hf, copy=False))))
        self.__dict__["_last"] = hf  # the result may be a view of the map: released on the next read
        if a.nbytes != t.nbytes:  # pragma: no cover - the plan and the conversion disagree
            raise FormatError(f"{self.path}: tensor {hf!r}: converted to {a.nbytes} bytes, planned {t.nbytes}")
        return a.reshape(-1).view(np.uint8)

    def hf_name(self, name: str) -> str:
        """The safetensors name a GGUF tensor is made from."""
        return self._plan[name][0]

    def close(self) -> None:
        st = self.__dict__.pop("_st", None)
        if st is not None:
            st.close()


@dataclass(frozen=True)
class HFSource:
    """What a worker process opens (picklable): the folder, read as :func:`open_folder` reads it."""

    folder: str
    outtype: str = "f32"

    def open(self, *, tokenizer: bool = True) -> HFCheckpoint:
        """The folder as :func:`open_folder` reads it (``tokenizer=False``: tensors and hyperparameters
        only, what a worker that converts tensors needs)."""
        return open_folder(self.folder, outtype=self.outtype, tokenizer=tokenizer)

    def __str__(self) -> str:
        return self.folder

    def __fspath__(self) -> str:  # where a file path is expected (stat, input signatures): the folder
        return self.folder


_ST_FLOATS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _float_of(name: str, st_dtype: str) -> str:
    if st_dtype not in _ST_FLOATS:
        raise FormatError(f"tensor {name!r}: dtype {st_dtype} is not a float dtype (F32, F16, BF16, F64)")
    return _ST_FLOATS[st_dtype]


def _converter(ggml_type: str, rope_heads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """Values as llama.cpp's converter makes them: anything but float16/float32 goes through float32,
    then the rotary rows are reordered, then the values are rounded to ``ggml_type``."""

    def convert(x: np.ndarray) -> np.ndarray:
        if x.dtype.name not in ("float16", "float32"):
            x = x.astype(np.float32)
        if rope_heads:
            x = unpermute_rotary(x, rope_heads)
        if ggml_type == "f32":
            return x.astype(np.float32, copy=False)
        if ggml_type == "f16":
            with np.errstate(over="ignore"):
                return x.astype(np.float16, copy=False)
        import ml_dtypes

        return x.astype(np.float32, copy=False).astype(ml_dtypes.bfloat16)

    return convert


def open_folder(folder: str | os.PathLike[str], *, outtype: str = "f32", tokenizer: bool = True) -> HFCheckpoint:
    """The Hugging Face model folder ``folder`` as the GGUF llama.cpp's ``convert_hf_to_gguf.py
    --outtype OUTTYPE`` writes (``outtype``: ``f32``, ``f16``, ``bf16``, or ``source``: each weight
    keeps its stored float type, float32 for float64). Nothing is converted until a tensor is read.
    ``tokenizer=False`` leaves the tokenizer keys out (a folder without tokenizer files)."""
    import gguf

    folder = Path(folder)
    cfg = read_config(folder)
    fam = _family(cfg, folder)
    if outtype not in OUTTYPES and outtype != "source":
        raise ConfigError(f"HF -> GGUF: outtype: expected one of {sorted(OUTTYPES) + ['source']}, got {outtype!r}")
    _refuse_unsupported(cfg, folder)
    arch = getattr(gguf.MODEL_ARCH, fam.arch)
    n_blocks = int(_find(cfg, ("n_layers", "num_hidden_layers", "n_layer", "num_layers")) or 0)
    names = gguf.get_tensor_name_map(arch, n_blocks)
    n_head = _find(cfg, ("n_heads", "num_attention_heads"))
    n_head_kv = _find(cfg, ("n_kv_heads", "num_key_value_heads")) or n_head
    st = _weights(folder)
    try:
        tensors: list[G.TensorInfo] = []
        plan: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
        for hf in _order(st):
            if hf.endswith(_DROPPED):
                continue
            info = st.info(hf)
            shape, dtype = tuple(int(d) for d in info["shape"]), _float_of(hf, info["dtype"])
            new = names.get_name(hf, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise FormatError(f"{folder}: tensor {hf!r} has no llama.cpp name for {fam.arch.lower()} "
                                  "(gguf.get_tensor_name_map)")
            gtype = _ggml_type(new, shape, outtype, dtype, arch)
            heads = None
            if fam.unpermute and hf.endswith(("q_proj.weight", "q_proj.bias")):
                heads = int(n_head)
            elif fam.unpermute and hf.endswith(("k_proj.weight", "k_proj.bias")):
                heads = int(n_head_kv)
            tid = G._TYPE_ID[gtype]
            _, bs, ts = G.BLOCK[tid]
            tensors.append(G.TensorInfo(new, shape, tid, 0, math.prod(shape) // bs * ts))
            plan[new] = (hf, _converter(gtype, heads))
        ftype = _file_type(outtype, tensors)
        meta, types = _metadata(folder, cfg, fam, arch, n_blocks, tensors, ftype, tokenizer)
    except BaseException:
        st.close()
        raise
    f = HFCheckpoint(str(folder), 3, meta, tensors, 0, None, types)
    f._st, f._plan = st, plan
    return f


def _refuse_unsupported(cfg: dict[str, Any], folder: Path) -> None:
    """What llama.cpp's converter does for these models that lowbit does not (yet) do."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope = rope.get("full_attention", rope) if isinstance(rope, dict) else {}
    if str(rope.get("rope_type", rope.get("type", ""))).lower() == "llama3":
        raise ConfigError(f"{folder / 'config.json'}: rope_type llama3 (Llama 3.1+) needs llama.cpp's generated "
                          "rope_freqs tensor, which lowbit does not write yet")
    if _find(cfg, ("num_local_experts", "num_experts", "n_routed_experts")):
        raise ConfigError(f"{folder / 'config.json'}: mixture-of-experts checkpoints (experts merged into one "
                          "tensor per layer) are not converted by lowbit yet")
    if cfg.get("quantization_config"):
        raise ConfigError(f"{folder / 'config.json'}: the checkpoint is quantized "
                          f"({cfg['quantization_config'].get('quant_method')!r}); lowbit converts float checkpoints")


def _ggml_type(new: str, shape: tuple[int, ...], outtype: str, dtype: str, arch: Any) -> str:
    import gguf

    if len(shape) <= 1 or new.endswith("_norm.weight") or not new.endswith(".weight"):
        return "f32"
    always = {gguf.TENSOR_NAMES[getattr(gguf.MODEL_TENSOR, k)] for k in _ALWAYS_F32}
    if new[: -len(".weight")] in always:
        return "f32"
    if outtype == "source":
        return {"float32": "f32", "float64": "f32", "float16": "f16", "bfloat16": "bf16"}[dtype]
    return OUTTYPES[outtype][1]


def _file_type(outtype: str, tensors: list[G.TensorInfo]) -> int:
    import gguf

    if outtype == "source":  # llama.cpp's guess from the first weight: bf16 or f16 (f32 written as it is)
        first = next((t.type_name for t in tensors if len(t.shape) >= 2), "f32")
        outtype = first
    return int(getattr(gguf.LlamaFileType, OUTTYPES[outtype][0]))


def _metadata(folder: Path, cfg: dict[str, Any], fam: _Family, arch: Any, n_blocks: int, tensors: list[G.TensorInfo],
              ftype: int, tokenizer: bool) -> tuple[dict[str, Any], dict[str, tuple[int, int | None]]]:
    """The metadata llama.cpp's converter writes, in its order, set through gguf-py's writer."""
    import gguf

    w = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])  # collects key/values; no file
    total = sum(math.prod(t.shape) for t in tensors)
    md = gguf.Metadata.load(None, folder, None, total)
    if md.name is None:
        md.name = folder.name
    if md.size_label is None and total > 0:
        md.size_label = gguf.size_label(total, total, 0, 0)
    w.add_type(gguf.GGUFType.MODEL)
    md.set_gguf_meta_model(w)
    _hparams(w, cfg, fam, n_blocks, ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tokenizer:
        from .hf_vocab import add_vocab

        add_vocab(w, folder, cfg, llama_rules=fam is _LLAMA)
    meta: dict[str, Any] = {}
    types: dict[str, tuple[int, int | None]] = {}
    for key, v in w.kv_data[0].items():
        value = v.value
        if v.type == gguf.GGUFValueType.ARRAY:
            value = [x.decode("utf-8") if isinstance(x, (bytes, bytearray)) else x for x in value]
            sub = v.sub_type if v.sub_type is not None else gguf.GGUFValueType.get_type(value[0])
            types[key] = (int(v.type), int(sub))
        else:
            types[key] = (int(v.type), None)
        meta[key] = value
    return meta, types


def _hparams(w: Any, cfg: dict[str, Any], fam: _Family, n_blocks: int, ftype: int) -> None:
    """``{arch}.*``: the keys llama.cpp's converter sets for a text model of these families."""
    import gguf

    w.add_block_count(n_blocks)
    for key, add in ((("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                       "model_max_length"), w.add_context_length),
                     (("hidden_size", "n_embd", "dim"), w.add_embedding_length),
                     (("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
                       "hidden_dim"), w.add_feed_forward_length),
                     (("num_attention_heads", "n_head", "n_heads"), w.add_head_count),
                     (("num_key_value_heads", "n_kv_heads"), w.add_head_count_kv)):
        if (v := _find(cfg, key)) is not None:
            add(v)
    if cfg.get("is_causal") is False:
        w.add_causal_attention(False)
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = _find(cfg, ("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"))
    if "full_attention" not in rope and "rope_theta" not in rope and theta is not None:
        rope["rope_theta"] = theta
    if "rope_type" not in rope and rope.get("type") is not None:
        rope["rope_type"] = rope["type"]
    params = rope.get("full_attention", rope)
    factor = params.get("factor")
    if params.get("rope_type") == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif params.get("rope_type") == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(params["original_max_position_embeddings"])
        for k, add in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                       ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                       ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
            if params.get(k) is not None:
                add(params[k])
        if (af := params.get("attention_factor", params.get("attn_factor"))) is not None:
            w.add_rope_scaling_yarn_attn_factor(af)
    if params.get("rope_theta") is not None:
        w.add_rope_freq_base(params["rope_theta"])
    if (eps := _find(cfg, ("rms_norm_eps", "norm_eps"))) is not None:
        w.add_layer_norm_rms_eps(eps)
    if (eps := _find(cfg, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))) is not None:
        w.add_layer_norm_eps(eps)
    if (hd := cfg.get("head_dim")) is not None:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_file_type(ftype)
    if fam.vocab_keys:
        w.add_vocab_size(cfg["vocab_size"])
        hd = cfg.get("head_dim")
        w.add_rope_dimension_count(hd if hd is not None else cfg["hidden_size"] // cfg["num_attention_heads"])
