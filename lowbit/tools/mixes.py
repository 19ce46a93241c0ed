"""llama-quantize's type choice: which ggml type each tensor of a GGUF model gets under a file
type (``Q4_K_M``, ``IQ4_XS``, ``MXFP4_MOE``, ...), independent of the order tensors come in.

:func:`plan_types` follows llama.cpp's ``llama_tensor_get_type`` (``src/llama-quant.cpp``):

* which tensors may be quantized at all (:func:`quantizable`: 2-D+ ``*weight`` tensors, no norms,
  router gates, positional embeddings, small conv / RWKV / multimodal tensors, ...);
* the file type's default type, the bumps for the output / tied embeddings, attention-V, FFN-down
  and attention-output tensors (``use_more_bits`` and the first/last-layer rules), which depend on
  the layer, the layer count, the GQA ratio, the expert count, the architecture and whether an
  imatrix is given;
* ``--tensor-type`` regex overrides, ``--pure``, ``--output-tensor-type``,
  ``--token-embedding-type``, ``--leave-output-tensor``;
* the fallback for rows a type cannot take (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
  Q2_K/Q3_K/TQ*_0 -> Q4_0, IQ* -> IQ4_NL, then F16).

llama.cpp walks the tensors in its loader's order — layer number first (``blk.N.``; other
tensors before every layer), then name — and counts attention-V and FFN-down tensors as it goes;
:func:`llama_order` gives that order, so a plan is the same for any order the input file has.

>>> shapes = [(f"blk.{i}.attn_v.weight", (64, 256)) for i in range(8)] + [("output.weight", (100, 256))]
>>> p = plan_types([(n, s, "f32") for n, s in reversed(shapes)], "Q4_K_M", ModelInfo(n_layer=8))
>>> [p[f"blk.{i}.attn_v.weight"] for i in range(8)], p["output.weight"]
(['q6_k', 'q4_k', 'q4_k', 'q6_k', 'q4_k', 'q4_k', 'q6_k', 'q6_k'], 'q6_k')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gguf.constants import GGMLQuantizationType as T
from gguf.constants import Keys, LlamaFileType as F

from lowbit.errors import ConfigError
from lowbit.formats import gguf as G
from lowbit.tools.imatrix import read_imatrix, write_imatrix_dat  # noqa: F401  (re-exported: older imports)

__all__ = ["QUANT_OPTIONS", "MIXES", "FTYPE", "ModelInfo", "Options", "plan_types", "gguf_mix_plan", "quantizable",
           "llama_order", "layer_of", "parse_ggml_type", "parse_ftype", "ftype_name", "default_type", "ftype_of_type",
           "requires_imatrix", "ggml_shape", "ENCODABLE", "read_imatrix", "write_imatrix_dat"]

_Q2_0_FTYPE = 41  # LLAMA_FTYPE_MOSTLY_Q2_0 (llama.h); gguf 0.19's LlamaFileType has no member for it yet

# llama-quantize's usage list, in its order: name -> llama_ftype (aliases: Q3_K, Q4_K, Q5_K)
QUANT_OPTIONS: dict[str, int] = {
    "Q1_0": F.MOSTLY_Q1_0, "Q2_0": _Q2_0_FTYPE, "Q4_0": F.MOSTLY_Q4_0, "Q4_1": F.MOSTLY_Q4_1,
    "MXFP4_MOE": F.MOSTLY_MXFP4_MOE, "Q5_0": F.MOSTLY_Q5_0, "Q5_1": F.MOSTLY_Q5_1,
    "IQ2_XXS": F.MOSTLY_IQ2_XXS, "IQ2_XS": F.MOSTLY_IQ2_XS, "IQ2_S": F.MOSTLY_IQ2_S, "IQ2_M": F.MOSTLY_IQ2_M,
    "IQ1_S": F.MOSTLY_IQ1_S, "IQ1_M": F.MOSTLY_IQ1_M, "TQ1_0": F.MOSTLY_TQ1_0, "TQ2_0": F.MOSTLY_TQ2_0,
    "Q2_K": F.MOSTLY_Q2_K, "Q2_K_S": F.MOSTLY_Q2_K_S, "IQ3_XXS": F.MOSTLY_IQ3_XXS, "IQ3_S": F.MOSTLY_IQ3_S,
    "IQ3_M": F.MOSTLY_IQ3_M, "Q3_K": F.MOSTLY_Q3_K_M, "IQ3_XS": F.MOSTLY_IQ3_XS, "Q3_K_S": F.MOSTLY_Q3_K_S,
    "Q3_K_M": F.MOSTLY_Q3_K_M, "Q3_K_L": F.MOSTLY_Q3_K_L, "IQ4_NL": F.MOSTLY_IQ4_NL, "IQ4_XS": F.MOSTLY_IQ4_XS,
    "Q4_K": F.MOSTLY_Q4_K_M, "Q4_K_S": F.MOSTLY_Q4_K_S, "Q4_K_M": F.MOSTLY_Q4_K_M, "Q5_K": F.MOSTLY_Q5_K_M,
    "Q5_K_S": F.MOSTLY_Q5_K_S, "Q5_K_M": F.MOSTLY_Q5_K_M, "Q6_K": F.MOSTLY_Q6_K, "Q8_0": F.MOSTLY_Q8_0,
    "F16": F.MOSTLY_F16, "BF16": F.MOSTLY_BF16, "F32": F.ALL_F32, "COPY": F.ALL_F32,
}
QUANT_OPTIONS = {k: int(v) for k, v in QUANT_OPTIONS.items()}

# llama_ftype_get_default_type: ftype -> ggml type id
_DEFAULT: dict[int, int] = {
    F.MOSTLY_Q4_0: T.Q4_0, F.MOSTLY_Q4_1: T.Q4_1, F.MOSTLY_Q5_0: T.Q5_0, F.MOSTLY_Q5_1: T.Q5_1,
    F.MOSTLY_Q8_0: T.Q8_0, F.MOSTLY_F16: T.F16, F.MOSTLY_BF16: T.BF16, F.ALL_F32: T.F32, F.MOSTLY_Q1_0: T.Q1_0,
    _Q2_0_FTYPE: 42, F.MOSTLY_MXFP4_MOE: T.MXFP4, F.MOSTLY_Q2_K_S: T.Q2_K, F.MOSTLY_Q2_K: T.Q2_K,
    F.MOSTLY_IQ3_XS: T.IQ3_S, F.MOSTLY_Q3_K_S: T.Q3_K, F.MOSTLY_Q3_K_M: T.Q3_K, F.MOSTLY_Q3_K_L: T.Q3_K,
    F.MOSTLY_Q4_K_S: T.Q4_K, F.MOSTLY_Q4_K_M: T.Q4_K, F.MOSTLY_Q5_K_S: T.Q5_K, F.MOSTLY_Q5_K_M: T.Q5_K,
    F.MOSTLY_Q6_K: T.Q6_K, F.MOSTLY_TQ1_0: T.TQ1_0, F.MOSTLY_TQ2_0: T.TQ2_0, F.MOSTLY_IQ2_XXS: T.IQ2_XXS,
    F.MOSTLY_IQ2_XS: T.IQ2_XS, F.MOSTLY_IQ2_S: T.IQ2_XS, F.MOSTLY_IQ2_M: T.IQ2_S, F.MOSTLY_IQ3_XXS: T.IQ3_XXS,
    F.MOSTLY_IQ1_S: T.IQ1_S, F.MOSTLY_IQ1_M: T.IQ1_M, F.MOSTLY_IQ4_NL: T.IQ4_NL, F.MOSTLY_IQ4_XS: T.IQ4_XS,
    F.MOSTLY_IQ3_S: T.IQ3_S, F.MOSTLY_IQ3_M: T.IQ3_S,
}
_DEFAULT = {int(k): int(v) for k, v in _DEFAULT.items()}

#: lowbit's GGUF type names that have an encoder (the grid i-quants are decode-only)
ENCODABLE = frozenset(G._CODEC_TYPES | {"f32", "f16", "bf16"})

# the mix names of the older API: lower-case names of the file types whose types lowbit can encode
MIXES = {k.lower(): G.GGML_TYPE_NAMES[_DEFAULT[v]] for k, v in QUANT_OPTIONS.items() if k != "COPY"}
FTYPE = {k.lower(): v for k, v in QUANT_OPTIONS.items() if k != "COPY"}


def _n(t: int) -> str:
    return G.GGML_TYPE_NAMES[int(t)]


def parse_ggml_type(text: str, what: str = "type") -> str:
    """A ggml type name, any case (``Q4_K``, ``iq4_xs``, ``MXFP4``), as lowbit's GGUF type name.

    >>> parse_ggml_type("IQ4_XS"), parse_ggml_type("mxfp4")
    ('iq4_xs', 'mxfp4_ggml')
    """
    key = text.strip().upper()
    for tid, name in G.GGML_TYPE_NAMES.items():
        try:
            ggml_name = T(tid).name
        except ValueError:
            ggml_name = name.upper()
        if key in (ggml_name, name.upper()):
            return name
    raise ConfigError(f"{what}: unknown ggml type {text!r} (expected one of "
                      f"{', '.join(sorted(n.upper() for n in G.GGML_TYPE_NAMES.values()))})")


def parse_ftype(text: str | int, what: str = "type") -> tuple[str, int]:
    """A llama-quantize file type, by name (any case) or number, as ``(NAME, llama_ftype)``.

    >>> parse_ftype("q4_k_m"), parse_ftype("30"), parse_ftype("Q4_K")
    (('Q4_K_M', 15), ('IQ4_XS', 30), ('Q4_K', 15))
    """
    key = str(text).strip().upper()
    if key in QUANT_OPTIONS:
        return key, QUANT_OPTIONS[key]
    if key.isdigit():
        for name, v in QUANT_OPTIONS.items():
            if v == int(key):
                return name, v
    raise ConfigError(f"{what}: unknown llama-quantize type {text!r} (expected one of {', '.join(QUANT_OPTIONS)}, "
                      "or its number)")


def ftype_name(ftype: int) -> str:
    """The canonical name of a llama_ftype (``15`` -> ``Q4_K_M``)."""
    for name, v in QUANT_OPTIONS.items():
        if v == ftype and name not in ("Q3_K", "Q4_K", "Q5_K"):
            return name
    raise ConfigError(f"unknown llama_ftype {ftype}")


def default_type(ftype: int) -> str:
    """llama_ftype_get_default_type, as lowbit's type name (``15`` -> ``q4_k``)."""
    return _n(_DEFAULT[ftype])


def ftype_of_type(type_name: str) -> int:
    """The ``general.file_type`` llama-quantize writes for a file of one type (``--pure``): the
    first file type in its list whose default type it is (``q4_k`` -> Q4_K_M = 15)."""
    tid = G._TYPE_ID[type_name]
    if tid == T.NVFP4:
        return int(F.MOSTLY_NVFP4)
    for v in QUANT_OPTIONS.values():
        if _DEFAULT[v] == tid:
            return v
    raise ConfigError(f"no llama file type has {type_name} as its type")


# ---- which tensors, in which order ---------------------------------------------------------------

_NEVER = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
          "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
          "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
          "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
          "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
          "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
          ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger",
          "a.rvq.codebook", "mm.a.code_embd")
_NEVER_GLM5_NEXT = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
                    "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight")


def quantizable(name: str, shape: tuple[int, ...], arch: str = "", *, leave_output: bool = False) -> bool:
    """llama.cpp's ``tensor_allows_quantization``.

    >>> quantizable("blk.0.attn_q.weight", (64, 64)), quantizable("blk.0.attn_norm.weight", (64, 64))
    (True, False)
    >>> quantizable("blk.0.ssm_a.weight", (1, 256))  # ne = [256, 1]: one dimension for ggml
    False
    """
    if _n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if leave_output and name == "output.weight":
        return False
    if name in ("position_embd.weight", "token_types.weight") or any(s in name for s in _NEVER):
        return False
    return not (arch == "glm5-next" and any(s in name for s in _NEVER_GLM5_NEXT))


def ggml_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The numpy shape ggml records for a tensor: ``ggml_n_dims`` stops at the last ``ne`` above 1,
    so numpy's leading 1s go.

    >>> ggml_shape((1, 1, 64)), ggml_shape((1,)), ggml_shape((2, 1, 64))
    ((64,), (1,), (2, 1, 64))
    """
    dims = tuple(int(d) for d in shape)
    while len(dims) > 1 and dims[0] == 1:
        dims = dims[1:]
    return dims


def _n_dims(shape: tuple[int, ...]) -> int:
    return len(ggml_shape(shape))


_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")


def layer_of(name: str) -> int:
    """The ``N`` of a ``blk.N.`` name as llama.cpp's ``sscanf("blk.%d.")`` reads it; -1 otherwise."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def llama_order(names: Iterable[str]) -> list[str]:
    """Names in llama.cpp's loader order (``weight_name_comparer``): by layer (non-layer tensors
    first), then by name (byte order, as ``std::string`` compares).

    >>> llama_order(["blk.10.a", "output.weight", "blk.2.b", "blk.2.a", "token_embd.weight"])
    ['output.weight', 'token_embd.weight', 'blk.2.a', 'blk.2.b', 'blk.10.a']
    """
    return sorted(names, key=lambda n: (layer_of(n), n.encode("utf-8")))


# ---- the model facts llama.cpp's rules read --------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    """What the type rules read from the model: architecture, layer count (``n_layer_all``),
    GQA ratio of layer 0, expert count, and whether llama.cpp calls it a 70B model."""

    arch: str = ""
    n_layer: int = 0
    n_gqa: int = 1
    n_expert: int = 0
    is_70b: bool = False

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], names: Iterable[str] = ()) -> "ModelInfo":
        """From GGUF metadata (``general.architecture``, ``{arch}.block_count``, head counts,
        ``{arch}.expert_count``); without a block count, the highest ``blk.N.`` + 1."""
        arch = str(meta.get(Keys.General.ARCHITECTURE, ""))

        def first(key: str, default: int) -> int:
            v = meta.get(key.format(arch=arch))
            if v is None:
                return default
            try:
                return int(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else int(v)
            except (TypeError, ValueError, IndexError):
                return default

        n_layer = first(Keys.LLM.BLOCK_COUNT, 0) or (max((layer_of(n) for n in names), default=-1) + 1)
        n_head = first(Keys.Attention.HEAD_COUNT, 0)
        n_head_kv = first(Keys.Attention.HEAD_COUNT_KV, n_head)
        n_gqa = n_head // n_head_kv if n_head_kv else (1 if not n_head else 0)
        return cls(arch, n_layer, n_gqa, first(Keys.LLM.EXPERT_COUNT, 0),
                   arch == "llama" and n_layer == 80 and n_head != n_head_kv)


@dataclass
class Options:
    """llama-quantize's flags that change types: ``--pure``, ``--output-tensor-type``,
    ``--token-embedding-type``, ``--leave-output-tensor``, ``--tensor-type`` (``[(regex, type)]``,
    first match wins; names lower-cased as llama-quantize does), ``--imatrix`` (``has_imatrix``),
    and COPY (``only_copy``)."""

    pure: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    tensor_types: list[tuple[str, str]] = field(default_factory=list)
    has_imatrix: bool = False
    only_copy: bool = False

    def __post_init__(self) -> None:
        try:
            self._patterns = [(re.compile(p.lower()), t) for p, t in self.tensor_types]
        except re.error as e:
            raise ConfigError(f"--tensor-type: bad pattern ({e})") from None


def _bs(t: str) -> int:
    return G.BLOCK[G._TYPE_ID[t]][1]


def _quantized(t: str) -> bool:
    return _bs(t) > 1


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2  # i, n >= 0: C's / and % agree


class _State:
    def __init__(self, ftype: int, model: ModelInfo, opts: Options, names: list[str]) -> None:
        self.ftype, self.model, self.opts = ftype, model, opts
        cats = [_category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.has_tied = "output" not in cats
        self.n_ffn = model.n_layer
        self.i_wv = self.i_down = self.i_gate = self.i_up = 0
        self.fallbacks: list[str] = []

    def layer(self, counter: int, name: str) -> tuple[int, int]:
        if self.model.n_expert > 1:
            if not _LAYER.match(name):
                raise ConfigError(f"tensor {name!r}: failed to determine its layer (expert models need blk.N. names)")
            i = layer_of(name)
            if i < 0 or i >= self.n_ffn:
                raise ConfigError(f"tensor {name!r}: bad layer {i}, must be in [0, {self.n_ffn})")
            return i, self.n_ffn
        return counter, self.n_ffn


def _impl(st: _State, t: str, name: str, shape: tuple[int, ...], cat: str) -> str:  # noqa: C901 - llama.cpp's rule table
    """llama_tensor_get_type_impl, rule for rule."""
    fm, m, o = st.ftype, st.model, st.opts
    arch = m.arch
    iq_low = {F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M}
    ne2 = shape[-3] if len(shape) >= 3 else 1
    if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        if t not in ("f32", "bf16", "f16"):
            return "q8_0"
    if cat == "output" or (st.has_tied and cat == "token_embd"):
        if o.output_tensor_type is not None:
            return o.output_tensor_type
        if fm == F.MOSTLY_MXFP4_MOE or arch == "falcon" or shape[-1] % _bs(t):
            return "q8_0"
        if fm in iq_low | {F.MOSTLY_IQ3_XXS}:
            return "q5_k"
        return "q6_k" if t != "q8_0" else t
    if fm == F.MOSTLY_MXFP4_MOE:
        expert = cat in ("ffn_up", "ffn_gate", "ffn_down")
        return "mxfp4_ggml" if ne2 > 1 and (arch != "bailingmoe3" or expert) else "q8_0"
    if cat == "token_embd":
        if o.token_embedding_type is not None:
            return o.token_embedding_type
        if fm in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            return "q2_k"
        if fm in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS):
            return "iq3_s"
        if fm in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0, _Q2_0_FTYPE):
            return "q4_k"
        return t
    is_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if fm in iq_low:
        iq2s = fm in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M)
        if is_v:
            t = "q4_k" if m.n_gqa >= 4 or m.n_expert >= 4 else ("iq3_s" if iq2s else "q2_k")
            st.i_wv += 1
        elif m.n_expert == 8 and cat == "attn_k":
            t = "q4_k"
        elif cat == "ffn_down":
            if st.i_down < st.n_ffn // 8:
                t = "iq3_s" if iq2s else "q2_k"
            st.i_down += 1
        elif cat == "attn_output":
            if m.n_expert == 8:
                t = "q5_k"
            elif fm in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                t = "iq2_xxs"
            elif iq2s:
                t = "iq3_s"
        return t
    if is_v:
        i, n = st.i_wv, st.n_attention_wv
        if fm == F.MOSTLY_Q2_K:
            t = "q4_k" if m.n_gqa >= 4 else "q3_k"
        elif fm == F.MOSTLY_Q2_K_S and m.n_gqa >= 4:
            t = "q4_k"
        elif fm == F.MOSTLY_IQ3_XXS:
            t = "q4_k" if m.n_gqa >= 4 else ("iq3_s" if not o.has_imatrix else "iq3_xxs")
        elif fm in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and m.n_gqa >= 4:
            t = "q4_k"
        elif fm == F.MOSTLY_IQ3_M:
            t = "q4_k"
        elif fm == F.MOSTLY_Q3_K_M:
            t = "q5_k" if i < 2 else "q4_k"
        elif fm == F.MOSTLY_Q3_K_L:
            t = "q5_k"
        elif fm in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and m.n_gqa >= 4:
            t = "q5_k"
        elif fm in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(i, n):
            t = "q6_k"
        elif fm == F.MOSTLY_Q4_K_S and i < 4:
            t = "q5_k"
        if m.is_70b and t in ("q3_k", "q4_k"):
            t = "q5_k"
        if m.n_expert == 8:
            t = "q8_0"
        st.i_wv += 1
        return t
    if cat == "attn_k":
        if m.n_expert == 8:
            return "q8_0"
        if fm == F.MOSTLY_IQ3_XS:
            return "iq3_xxs"
        if fm == F.MOSTLY_IQ3_XXS:
            return "iq2_s"
        return t
    if cat == "attn_q":
        if fm == F.MOSTLY_IQ3_XS:
            return "iq3_xxs"
        if fm == F.MOSTLY_IQ3_XXS:
            return "iq2_s"
        return t
    if cat == "ffn_down":
        i, n = st.layer(st.i_down, name)
        falcon = arch == "falcon"
        if fm == F.MOSTLY_Q2_K:
            t = "q3_k"
        elif fm == F.MOSTLY_Q2_K_S:
            if i < n // 8:
                t = "q4_k"
        elif fm == F.MOSTLY_IQ3_XXS and not o.has_imatrix:
            t = "q4_k" if i < n // 8 else "q3_k"
        elif fm == F.MOSTLY_Q3_K_M:
            t = "q5_k" if i < n // 16 else ("q4_k" if not falcon or _use_more_bits(i, n) else "q3_k")
        elif fm == F.MOSTLY_IQ3_M and (i < n // 8 or (m.n_expert == 8 and _use_more_bits(i, n))):
            t = "q4_k"
        elif fm == F.MOSTLY_Q3_K_L:
            t = "q4_k" if falcon else "q5_k"
        elif fm == F.MOSTLY_Q4_K_M:
            if falcon:
                t = "q6_k" if i < n // 16 else ("q5_k" if _use_more_bits(i, n) else "q4_k")
            elif _use_more_bits(i, n):
                t = "q6_k"
        elif i < n // 8 and fm in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not o.has_imatrix:
            t = "q5_k"
        elif fm == F.MOSTLY_Q5_K_M and _use_more_bits(i, n):
            t = "q6_k"
        elif fm == F.MOSTLY_Q4_K_S and not falcon and i < n // 8:
            t = "q5_k"
        elif fm in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and o.has_imatrix and i < n // 8:
            t = "q4_1" if fm == F.MOSTLY_Q4_0 else "q5_1"
        st.i_down += 1
        return t
    if cat == "attn_output":
        if arch != "falcon":
            if m.n_expert == 8:
                if fm in (F.MOSTLY_Q2_K, F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_Q3_K_S, F.MOSTLY_Q3_K_M,
                          F.MOSTLY_IQ4_NL, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M, F.MOSTLY_IQ3_S, F.MOSTLY_IQ3_M,
                          F.MOSTLY_IQ4_XS):
                    t = "q5_k"
            else:
                t = {F.MOSTLY_Q2_K: "q3_k", F.MOSTLY_IQ3_XXS: "iq3_s", F.MOSTLY_Q3_K_M: "q4_k",
                     F.MOSTLY_Q3_K_L: "q5_k", F.MOSTLY_IQ3_M: "q4_k"}.get(fm, t)
        elif fm == F.MOSTLY_Q3_K_L:
            t = "q4_k"
        return t
    if cat == "attn_qkv":  # unreachable (attn_qkv is attention-V-like above), kept in llama.cpp's order
        return t
    if cat in ("ffn_gate", "ffn_up"):
        counter = st.i_gate if cat == "ffn_gate" else st.i_up
        i, n = st.layer(counter, name)
        if fm == F.MOSTLY_IQ3_XS and n // 8 <= i < 7 * n // 8:
            t = "iq3_xxs"
        if cat == "ffn_gate":
            st.i_gate += 1
        else:
            st.i_up += 1
    return t


_FALLBACK = {"iq1_s": "iq4_nl", "iq1_m": "iq4_nl", "iq2_xxs": "iq4_nl", "iq2_xs": "iq4_nl", "iq2_s": "iq4_nl",
             "iq3_xxs": "iq4_nl", "iq3_s": "iq4_nl", "iq4_xs": "iq4_nl", "q2_0": "q4_0", "q2_k": "q4_0",
             "q3_k": "q4_0", "tq1_0": "q4_0", "tq2_0": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def _fallback(st: _State, name: str, ncols: int, t: str) -> str:
    """tensor_type_fallback: a type whose block divides the rows."""
    if ncols % _bs(t) == 0:
        return t
    if t in _FALLBACK:
        r = _FALLBACK[t]
    elif _bs(t) <= 32:
        r = t
    else:
        raise ConfigError(f"tensor {name!r}: rows of {ncols} do not fit {t} and llama.cpp defines no fallback for it")
    if ncols % _bs(r):
        r = "f16"
    st.fallbacks.append(name)
    return r


def plan_types(tensors: Iterable[tuple[str, tuple[int, ...], str]], ftype: int | str, model: ModelInfo | None = None,
               options: Options | None = None) -> dict[str, str]:
    """``{name: ggml type name}`` for ``tensors`` (name, numpy shape, current type name) under a
    llama-quantize file type (its number or name), walked in :func:`llama_order`: the result does
    not depend on the order given. Tensors that are not quantized keep their current type."""
    if isinstance(ftype, str):
        ftype = parse_ftype(ftype)[1]
    model = model or ModelInfo()
    opts = options or Options()
    items = {n: (tuple(int(d) for d in s), t) for n, s, t in tensors}
    order = llama_order(items)
    st = _State(ftype, model, opts, order)
    dflt = default_type(ftype)
    out: dict[str, str] = {}
    for name in order:
        shape, cur = items[name]
        if opts.only_copy or not quantizable(name, shape, model.arch, leave_output=opts.leave_output_tensor):
            out[name] = cur
            continue
        cat = _category(name)
        if opts.token_embedding_type is not None and cat == "token_embd":
            named = name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in opts._patterns)
            if not named:
                out[name] = opts.token_embedding_type
                continue
        if opts.output_tensor_type is not None and cat == "output":
            out[name] = opts.output_tensor_type
            continue
        t = dflt
        if _quantized(dflt):
            manual = next((typ for p, typ in opts._patterns if p.search(name)), None)
            if manual is not None:
                t = manual
            elif not opts.pure:
                t = _impl(st, t, name, shape, cat)
            t = _fallback(st, name, shape[-1], t)
        out[name] = t
    return {n: out[n] for n in items}


def requires_imatrix(name: str, type_name: str, ftype: int) -> bool:
    """llama.cpp's ``tensor_requires_imatrix``: the very low-bit types (and Q2_K inside a Q2_K_S
    file) need an importance matrix, except for the embeddings and the output."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if type_name in ("iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s"):
        return True
    return type_name == "q2_k" and ftype == F.MOSTLY_Q2_K_S


def gguf_mix_plan(tensors: Iterable[tuple[str, tuple[int, ...]]], mix: str, model: ModelInfo | None = None,
                  options: Options | None = None) -> dict[str, str | None]:
    """``{name: ggml type name, or None to keep it}`` for float tensors (name, numpy shape) under
    ``mix`` (``"q4_k_m"``, ``"IQ4_XS"``, ...); the layer count defaults to the highest ``blk.N.`` + 1."""
    items = [(n, tuple(s)) for n, s in tensors]
    model = model or ModelInfo.from_metadata({}, [n for n, _ in items])
    plan = plan_types([(n, s, "\0") for n, s in items], parse_ftype(mix, "mix")[1], model, options)
    return {n: (None if t == "\0" else t) for n, t in plan.items()}
