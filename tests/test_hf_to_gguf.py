"""A Hugging Face folder -> a GGUF llama.cpp loads, in one streaming step (lowbit.formats.hf_gguf).

The judge is llama.cpp's own converter and quantizer from the pinned llama-cpp-python sdist:
``convert_hf_to_gguf.py`` (run in a subprocess, with the gguf-py beside it) on SmolLM2-135M saved by
transformers as a folder, and ``llama-quantize`` of its F32 output. lowbit's ``convert HF_DIR
out.gguf --to float32|bfloat16`` must write the converter's file and ``quantize HF_DIR out.gguf
Q4_K_M 2`` llama-quantize's file — byte for byte, after tensor-by-tensor and key-by-key checks that
say what differs if anything does — and llama-perplexity must load lowbit's file and score it as it
scores the judge's. Each judge run happens once per module (module-scoped fixtures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import lowbit  # noqa: E402
from lowbit.errors import ConfigError, FormatError, LowbitError  # noqa: E402
from lowbit.formats import gguf as G  # noqa: E402
from lowbit.formats.hf_gguf import unpermute_rotary  # noqa: E402
from lowbit.tools.cli import main  # noqa: E402

from .conftest import ROOT  # noqa: E402

TEXT = ROOT / "lowbit" / "data" / "eval_text.txt"
# the hyperparameter keys llama.cpp's loader reads for a Llama (LLM_KV_* in src/llama-arch.cpp)
LLAMA_KEYS = ("llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
              "llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length", "llama.attention.value_length",
              "llama.vocab_size", "llama.rope.dimension_count")
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.chat_template",
                  "tokenizer.ggml.add_bos_token")


# ---- the judges ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py in the pinned sdist's tree (its gguf-py beside it)."""
    from lowbit.tools.cachelock import cache_lock
    from lowbit.tools.ggml_oracle import default_cache_dir, sdist_source

    cache = default_cache_dir()
    with cache_lock(cache, "build"):
        tree = sdist_source(cache)
    script = tree / "convert_hf_to_gguf.py"
    assert script.is_file(), f"no {script}"
    return script


# convert_hf_to_gguf.py run as __main__ once per job, all jobs in one process (torch, transformers and
# the converter's modules are imported once: a few seconds less per job)
_DRIVER = """
import json, os, runpy, sys
script, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, os.path.dirname(script))  # as `python convert_hf_to_gguf.py` has it (its conversion package)
for folder, outtype, out in jobs:
    sys.argv = [script, folder, "--outtype", outtype, "--outfile", out]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
"""


def _convert_hf_to_gguf(script: Path, jobs: list[tuple[Path, str, Path]]) -> None:
    r = subprocess.run([sys.executable, "-c", _DRIVER, str(script), json.dumps([[str(a), b, str(c)] for a, b, c in jobs])],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=""))
    assert r.returncode == 0, f"convert_hf_to_gguf.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    for _, _, out in jobs:
        assert out.is_file(), f"convert_hf_to_gguf.py wrote no {out}"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf2gguf")


# tiny random models of the other architectures (see test_tiny_models_...)
TINY = {
    "LlamaForCausalLM": dict(attention_bias=True, tie_word_embeddings=False),  # biases permuted too; an lm_head
    "MistralForCausalLM": dict(tie_word_embeddings=False, sliding_window=None),
    "Qwen3ForCausalLM": dict(tie_word_embeddings=True),
}
# Qwen2ForCausalLM (the same code path as Qwen3's, less the q/k norms) is not judged here: for
# model_type qwen2 transformers loads its Qwen2Tokenizer (Qwen's own pre-tokenizer regex) whatever
# tokenizer.json says, and convert_hf_to_gguf.py then refuses SmolLM2's vocabulary as unrecognised.


def _tiny_model(folder: Path, arch: str, tokenizer_from: Path) -> Path:
    cls = getattr(transformers, arch)
    cfg = cls.config_class(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                           **TINY[arch])
    torch.manual_seed(0)
    cls(cfg).to(torch.float32).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / f).write_bytes((tokenizer_from / f).read_bytes())
    return folder


@pytest.fixture(scope="module")
def judged(converter: Path, smollm2_folder_f32: Path, smollm2_folder: Path, work: Path) -> dict[str, tuple[Path, Path]]:
    """{case: (the HF folder, convert_hf_to_gguf.py's GGUF of it)}: SmolLM2 float32 as --outtype f32,
    SmolLM2 bfloat16 as --outtype bf16, each tiny model as --outtype f32."""
    cases = {"f32": (smollm2_folder_f32, "f32"), "bf16": (smollm2_folder, "bf16")}
    for arch in TINY:
        cases[arch] = (_tiny_model(work / f"tiny-{arch}", arch, smollm2_folder), "f32")
    jobs = [(folder, outtype, work / f"judge-{case}.gguf") for case, (folder, outtype) in cases.items()]
    _convert_hf_to_gguf(converter, jobs)
    return {case: (folder, out) for case, (folder, _, out) in zip(cases, jobs)}


@pytest.fixture(scope="module")
def judge_f32(judged) -> Path:
    return judged["f32"][1]


@pytest.fixture(scope="module")
def judge_bf16(judged) -> Path:
    return judged["bf16"][1]


@pytest.fixture(scope="module")
def judge_q4_k_m(llama_tools, judge_f32: Path, work: Path) -> Path:
    out = work / "judge-q4_k_m.gguf"
    llama_tools.run("llama-quantize", judge_f32, out, "Q4_K_M", "2")
    return out


@pytest.fixture(scope="module")
def ours_q4_k_m(smollm2_folder_f32: Path, work: Path) -> Path:
    out = work / "lowbit-q4_k_m.gguf"
    assert main(["quantize", "--json", "--tensor-order", "llama", str(smollm2_folder_f32), str(out), "Q4_K_M", "2"]) == 0
    return out


# ---- comparing two GGUF files ------------------------------------------------------------------------

def _same_value(a, b) -> bool:
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return list(np.asarray(a).tolist()) == list(np.asarray(b).tolist())
    return a == b


def assert_same_gguf(ours: Path, judge: Path, *, keys: tuple[str, ...] = ()) -> None:
    """The files equal byte for byte (so every tensor's name, order, type, shape and bytes and every
    metadata key's order, type and value); the judge has the named ``keys``. Where the bytes differ
    the assertion names the first tensors and keys that differ."""
    import filecmp

    a, b = G.read(ours), G.read(judge)
    try:
        missing = [k for k in keys if k not in b.metadata or k not in a.metadata]
        assert not missing, f"keys missing (from lowbit's file or the judge's): {missing}"
        if filecmp.cmp(ours, judge, shallow=False):
            return
        diff = [k for k in b.metadata if k not in a.metadata or a.metadata_types[k] != b.metadata_types[k]
                or not _same_value(a.metadata[k], b.metadata[k])]
        assert not diff, {k: (a.metadata.get(k), b.metadata[k]) for k in diff[:5]}
        assert list(a.metadata) == list(b.metadata), "metadata key order"
        assert a.names() == b.names(), "tensor order"
        for n in b.names():
            ta, tb = a.tensor(n), b.tensor(n)
            assert (ta.type_name, ta.shape) == (tb.type_name, tb.shape), n
            assert np.array_equal(a.raw(n), b.raw(n)), f"{n}: bytes differ"
        raise AssertionError("the files differ outside the tensors and keys compared")
    finally:
        a.close()
        b.close()


# ---- float GGUF: convert_hf_to_gguf.py --outtype f32 / bf16 --------------------------------------------

def test_f32_gguf_is_convert_hf_to_gguf_s(smollm2_folder_f32: Path, judge_f32: Path, work: Path) -> None:
    """``lowbit convert HF_DIR out.gguf --to float32`` writes convert_hf_to_gguf.py's --outtype f32
    file: 272 tensors (q/k rows permuted, no output.weight: the embeddings are tied), the llama.*
    hyperparameters, the tokenizer (pre-tokenizer ``smollm``), general.* from the folder name."""
    out = work / "lowbit-f32.gguf"
    assert main(["convert", "--json", str(smollm2_folder_f32), str(out), "--to", "float32"]) == 0
    assert_same_gguf(out, judge_f32, keys=LLAMA_KEYS + TOKENIZER_KEYS)
    g = G.read(out)
    assert len(g.tensors) == 272 and "output.weight" not in g.names()
    assert g.metadata["tokenizer.ggml.pre"] == "smollm" and g.metadata["general.architecture"] == "llama"
    g.close()


def test_bf16_gguf_is_convert_hf_to_gguf_s(smollm2_folder: Path, judge_bf16: Path, work: Path) -> None:
    """A bfloat16 folder: ``--to bfloat16`` is --outtype bf16 (norms F32, the rest BF16), and
    ``--to gguf`` (each weight in the type it is stored in) is the same file."""
    out = work / "lowbit-bf16.gguf"
    assert main(["convert", "--json", str(smollm2_folder), str(out), "--to", "bfloat16"]) == 0
    assert_same_gguf(out, judge_bf16, keys=LLAMA_KEYS + TOKENIZER_KEYS)
    same = work / "lowbit-source.gguf"
    assert main(["convert", "--json", str(smollm2_folder), str(same)]) == 0
    assert same.read_bytes() == out.read_bytes()


# ---- quantized: llama-quantize of the converter's F32 file ----------------------------------------------

def test_q4_k_m_is_llama_quantize_of_convert_hf_to_gguf(ours_q4_k_m: Path, judge_q4_k_m: Path) -> None:
    """``lowbit quantize HF_DIR out.gguf Q4_K_M 2`` (llama-quantize's tensor order) is
    ``llama-quantize (convert_hf_to_gguf.py --outtype f32) Q4_K_M 2``, every byte."""
    assert_same_gguf(ours_q4_k_m, judge_q4_k_m, keys=LLAMA_KEYS + TOKENIZER_KEYS + ("general.file_type",))
    g = G.read(ours_q4_k_m)
    assert g.metadata["general.file_type"] == 15 and {t.type_name for t in g.tensors} > {"q4_k", "q6_k"}
    g.close()


def test_llama_cpp_loads_it_with_the_judge_s_perplexity(llama_tools, ours_q4_k_m: Path, judge_q4_k_m: Path) -> None:
    ours = llama_tools.perplexity(ours_q4_k_m, TEXT, ctx=128, chunks=4)
    judge = llama_tools.perplexity(judge_q4_k_m, TEXT, ctx=128, chunks=4)
    assert ours == judge and 5 < ours[0] < 100, (ours, judge)


# ---- the rotary permutation, from the math ---------------------------------------------------------------

def _rope_hf(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """HF's Llama rope on one head: (x[i], x[i + d/2]) rotated by pos * theta^(-2i/d) (rotate_half)."""
    d = x.shape[-1]
    ang = pos * theta ** (-np.arange(d // 2) * 2 / d)
    a, b = x[: d // 2], x[d // 2:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)])


def _rope_llama_cpp(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """llama.cpp's LLAMA (normal) rope on one head: neighbours (x[2i], x[2i + 1]) by the same angles."""
    d = x.shape[-1]
    ang = pos * theta ** (-np.arange(d // 2) * 2 / d)
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2], out[1::2] = a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)
    return out


def test_unpermuted_rows_give_llama_cpp_the_same_attention_scores() -> None:
    """q.k after each side's rope, per head: HF's weights with HF's rope equal the permuted
    weights with llama.cpp's rope (a wrong or missing permutation changes the scores)."""
    rng = np.random.default_rng(0)
    n_head, d, k_in = 3, 8, 5
    wq, wk, x = rng.standard_normal((n_head * d, k_in)), rng.standard_normal((n_head * d, k_in)), rng.standard_normal(k_in)
    pq, pk = unpermute_rotary(wq, n_head), unpermute_rotary(wk, n_head)
    for h in range(n_head):
        s = slice(h * d, (h + 1) * d)
        hf = _rope_hf(wq[s] @ x, 3) @ _rope_hf(wk[s] @ x, 7)
        cpp = _rope_llama_cpp(pq[s] @ x, 3) @ _rope_llama_cpp(pk[s] @ x, 7)
        wrong = _rope_llama_cpp(wq[s] @ x, 3) @ _rope_llama_cpp(wk[s] @ x, 7)
        assert abs(hf - cpp) < 1e-9 and abs(hf - wrong) > 1e-6


# ---- bad input: a LowbitError naming the problem, and no output file --------------------------------------

def _tiny_folder(d: Path, config: dict | None) -> Path:
    d.mkdir()
    lowbit.save(d / "model.safetensors", {"model.embed_tokens.weight": np.ones((8, 32), np.float32),
                                          "model.norm.weight": np.ones(32, np.float32)})
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    return d


_LLAMA_CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 8,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-5}


@pytest.mark.parametrize("case,config,error,words", [
    ("no-config", None, FormatError, "no config.json"),
    ("gpt2", {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, ConfigError, "GPT2LMHeadModel"),
    ("no-tokenizer", _LLAMA_CFG, FormatError, "no tokenizer"),
])
@pytest.mark.parametrize("command", ["quantize", "convert"])
def test_bad_folders_are_refused_and_leave_nothing(tmp_path: Path, case, config, error, words, command) -> None:
    """A folder without config.json (and no GGUF metadata to carry), an architecture lowbit does not
    map, a model without its tokenizer: the error names the problem (config.json, the
    architectures value, the tokenizer), the CLI exits 2, and no output file is left."""
    from lowbit.tools.convert import convert_file
    from lowbit.tools.quantize import quantize_file

    folder = _tiny_folder(tmp_path / case, config)
    out = tmp_path / "out.gguf"
    with pytest.raises(error) as e:
        if command == "quantize":
            quantize_file(folder, out, mix="Q8_0", progress=False)
        else:
            convert_file(folder, out, to="float16", progress=False)
    assert isinstance(e.value, LowbitError) and words in str(e.value), str(e.value)
    args = ["quantize", str(folder), str(out), "Q8_0"] if command == "quantize" else \
        ["convert", str(folder), str(out), "--to", "float16"]
    assert main(args) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [case], "an output file was left behind"


# ---- the other architectures, on tiny random models (same judge) -------------------------------------------

@pytest.mark.parametrize("arch", sorted(TINY))
def test_tiny_models_of_each_architecture_are_convert_hf_to_gguf_s(judged, work: Path, arch: str) -> None:
    """A randomly initialised two-layer model of each supported architecture (4 query heads, 2 KV
    heads, head_dim 16), saved by transformers in float32 with SmolLM2's tokenizer: lowbit's
    ``--to float32`` file is the converter's, byte for byte (names from gguf-py's map for
    llama/qwen3, q/k permuted for Llama and Mistral only, Qwen3's q/k norms, biases, output.weight
    where the head is not tied)."""
    folder, judge = judged[arch]
    ours = work / f"lowbit-{arch}.gguf"
    assert main(["convert", "--json", str(folder), str(ours), "--to", "float32"]) == 0
    assert_same_gguf(ours, judge, keys=("tokenizer.ggml.pre", "general.architecture"))
    g = G.read(ours)
    assert ("output.weight" in g.names()) == (not TINY[arch]["tie_word_embeddings"])
    g.close()
