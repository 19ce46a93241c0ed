"""The prepared GPU check (benchmarks/gpu_check.sh) runs in CI as a dry run: the same steps on the
CPU (Triton interpreter, tiny sizes). These tests run it and read what it wrote, see it fail on a
planted mismatch, refuse to pretend without CUDA, and check the pieces that turn results into the
verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lowbit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import gpu_check_report as report  # noqa: E402


#: budgets for the runs here: the defaults fit an idle machine with warm JIT caches; CI's machine
#: may be neither, and a step cut short would fail these tests for the wrong reason
ROOMY = ["--total", "900", "--warm-budget", "200", "--tests-budget", "400", "--bench-budget", "250"]


def _check(tmp: Path, *args: str, timeout: int = 1000) -> tuple[int, dict, str]:
    env = dict(os.environ, LOWBIT_PYTHON=sys.executable)
    env.pop("LOWBIT_GPU_CHECK_PLANT", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp), *ROOMY, *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    summary = tmp / "summary.json"
    assert summary.is_file(), f"no summary.json (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.returncode, json.loads(summary.read_text()), r.stdout


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    code, doc, stdout = _check(out, "--dry-run")
    return code, doc, stdout, out


def test_dry_run_passes_and_writes_json_and_markdown(dry: tuple[int, dict, str, Path]) -> None:
    code, doc, stdout, out = dry
    assert code == 0, doc.get("problems")
    assert doc["verdict"] == "PASSED" and doc["problems"] == []
    assert {"wheels", "env", "warm", "tests", "bench"} <= set(doc["steps"])
    assert doc["steps"]["warm"]["status"] == "ok"
    assert doc["steps"]["tests"]["status"] == "passed" and doc["steps"]["bench"]["status"] == "passed"
    md = (out / "summary.md").read_text()
    assert md == report.markdown(doc) and "## GPU tests per codec" in md and "## Speed" in md
    assert "PASSED" in stdout
    assert {p.name for p in out.iterdir()} <= set(gpu_check.OUTPUT_FILES)
    assert len(gpu_check.OUTPUT_FILES) <= 8  # what the device machine hands back from one folder


def test_dry_run_table_lists_every_codec(dry: tuple[int, dict, str, Path]) -> None:
    """test_gpu.py covers every configuration: without CUDA each codec shows up as skipped, with
    the reason; the interpreter-tier checks in the dry run pass."""
    table = dry[1]["tests_by_codec"]
    assert set(lowbit.list_codecs()) <= set(table)
    assert table["fp8_e4m3"]["passed"] >= 1 and table["q4_0"]["passed"] >= 1
    assert all(r["failed"] == r["error"] == 0 for r in table.values())
    assert "CUDA" in table["mxfp4"]["first_skip"]


def test_dry_run_bench_rows(dry: tuple[int, dict, str, Path]) -> None:
    bench = dry[1]["bench"]
    assert bench["copy_GBps"] > 0
    rows = {r["codec"]: r for r in bench["rows"]}
    assert list(rows) == [c for c in gpu_check_bench_plan()]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert ok, "no codec was timed"
    for r in ok:
        for case in ("encode_f32", "encode_bf16", "decode_f32", "decode_bf16"):
            assert r[case]["seconds"] > 0 and r[case]["of_copy"] > 0
    for r in rows.values():  # whatever was not timed says why
        assert r["status"] == "ok" or r.get("reason")
    assert all(p["status"] == "ok" or p.get("reason") for p in bench["peers"])


def gpu_check_bench_plan() -> list[str]:
    import gpu_bench

    return gpu_bench.plan(dry=True)


def test_planted_mismatch_fails_the_check(tmp_path: Path) -> None:
    code, doc, _ = _check(tmp_path, "--dry-run", "--skip", "tests", "--bench-codecs", "fp8_e4m3,nf4",
                          "--plant-mismatch", "nf4")
    assert code == 1 and doc["verdict"] == "FAILED"
    rows = {r["codec"]: r for r in doc["bench"]["rows"]}
    assert rows["nf4"]["status"] == "mismatch" and rows["fp8_e4m3"]["status"] == "ok"
    assert any("nf4" in p and "mismatch" in p for p in doc["problems"])
    assert doc["steps"]["tests"]["status"] == "skipped"


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="only where no CUDA device is present")
def test_without_cuda_the_real_check_refuses(tmp_path: Path) -> None:
    code, doc, _ = _check(tmp_path)
    assert code == 2 and doc["verdict"].startswith("NOT RUN")
    assert doc["steps"]["tests"]["status"] == "skipped" and "CUDA" in doc["steps"]["tests"]["note"]


def test_junit_to_codec_table(tmp_path: Path) -> None:
    xml = tmp_path / "j.xml"
    xml.write_text("""<testsuites><testsuite>
      <testcase classname="tests.test_codecs" name="test_cpu_and_gpu_identical[q4_k]"/>
      <testcase classname="tests.test_codecs" name="test_cpu_and_gpu_identical[mxfp4-scale_rounding=rceil]">
        <failure message="AssertionError: 3 block(s) differ">trace</failure></testcase>
      <testcase classname="tests.test_gguf_gpu" name="test_gpu_encode_and_decode_match_ggml_and_cpu[ref-q4_k]"/>
      <testcase classname="tests.test_gpu" name="test_large_tensor_cuda_equals_cpu[fp8_e4m3-default]">
        <skipped message="needs a CUDA device"/></testcase>
      <testcase classname="tests.test_kernel_rules" name="test_there_are_kernels_to_scan"><error message="boom"/></testcase>
    </testsuite></testsuites>""")
    t = report.per_codec(report.read_junit(xml), lowbit.list_codecs())
    assert t["q4_k"]["passed"] == 2
    assert t["mxfp4"]["failed"] == 1 and "3 block(s) differ" in t["mxfp4"]["first_problem"]
    assert "mxfp8_e4m3" not in t and t["fp8_e4m3"]["skipped"] == 1 and t["fp8_e4m3"]["first_skip"] == "needs a CUDA device"
    assert t["(other)"]["error"] == 1
    doc = {"steps": {"tests": {"status": "failed"}}, "tests_by_codec": t, "bench": {"rows": []}}
    verdict, code, problems = gpu_check.verdict(doc)
    assert (verdict, code) == ("FAILED", 1) and any("mxfp4" in p for p in problems)
    clean = {"steps": {"tests": {"status": "passed"}}, "tests_by_codec": {"q4_k": t["q4_k"]}, "bench": {"rows": []}}
    assert gpu_check.verdict(clean)[:2] == ("PASSED", 0)


def test_codec_of_picks_whole_tokens() -> None:
    ids = lowbit.list_codecs()
    assert report.codec_of("t[mxfp8_e4m3-scale_rounding=rceil]", ids) == "mxfp8_e4m3"
    assert report.codec_of("t[fp8_e4m3]", ids) == "fp8_e4m3"
    assert report.codec_of("t[imatrix-q4_k]", ids) == "q4_k"
    assert report.codec_of("t_no_params", ids) == "(other)"


def test_real_bench_plan_covers_the_targets() -> None:
    """Every block-scaled and GGUF codec is timed, and one codec of every other family."""
    import gpu_bench

    plan = gpu_bench.plan(dry=False)
    fam = {c: lowbit.codec_class(c).family for c in lowbit.list_codecs()}
    for c, f in fam.items():
        if f in gpu_bench.ALL_OF:
            assert c in plan, c
    # every family is timed: each has a GPU encoder (the grid i-quants, family gguf_iq, through
    # their first ported type, IQ3_XXS/IQ3_S; the types not yet ported encode on the CPU only)
    assert set(fam.values()) == {fam[c] for c in plan}
    assert len(plan) == len(set(plan))


def test_deselections_name_each_missing_peer(tmp_path: Path) -> None:
    info = {"importable": {m: False for m in gpu_check.PEERS}}
    env = {"LOWBIT_GGML_CACHE": str(tmp_path)}
    d = {x["test"]: x["reason"] for x in gpu_check.deselections(info, env)}
    assert set(d) == set(gpu_check.PEER_TESTS)
    assert "torchao" in d["tests/test_mx_oracles.py::test_mx_gpu_backend_equals_torchao"]
    info = {"importable": {m: True for m in gpu_check.PEERS}}
    d = {x["test"]: x["reason"] for x in gpu_check.deselections(info, env)}
    assert list(d) == ["tests/test_gguf_gpu.py"] and "ggml oracle" in d["tests/test_gguf_gpu.py"]
    lib = tmp_path / "build" / "bin" / "libggml-base.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    assert gpu_check.deselections(info, env) == []


def test_slow_codecs_are_timed_on_fewer_rows() -> None:
    """The bench's sizing: a tiny per-codec allowance shrinks the tensor or skips the codec, with
    the reason; a generous one keeps every row."""
    import gpu_bench
    import torch

    codec = lowbit.get_codec("fp8_e4m3")
    x = torch.randn(64, 256)
    assert gpu_bench.sized(codec, x, cap=1e6, calls=16) == (64, "")
    use, note = gpu_bench.sized(codec, x, cap=1e-9, calls=16)
    assert use == 0 and "too slow" in note


def test_a_spent_budget_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    """Steps that cannot start for lack of time are reported, and the verdict is not PASSED."""
    code, doc, _ = _check(tmp_path, "--dry-run", "--total", "1")
    assert code == 1 and doc["verdict"] == "FAILED"
    assert doc["steps"]["tests"]["status"] == "timed out" and doc["steps"]["bench"]["status"] == "timed out"
    assert doc["steps"]["warm"]["status"] == "skipped"


def test_real_pytest_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command the CUDA run gives pytest: every GPU test file, the GPU selection, xdist when it
    imports, and a --deselect for each test whose peer is missing."""
    import argparse

    seen: list[list[str]] = []
    monkeypatch.setattr(gpu_check, "run", lambda cmd, env, log, timeout: (seen.append(cmd), (0, 1.0))[1])
    info = {"importable": {m: m != "bitsandbytes" for m in gpu_check.PEERS}}
    a = argparse.Namespace(dry_run=False, tests_k=None)
    st = gpu_check.step_tests(a, {"LOWBIT_GGML_CACHE": str(tmp_path)}, info, tmp_path, 100)
    cmd = seen[0]
    assert st["status"] == "passed"
    assert all(f in cmd for f in gpu_check.REAL_TESTS) and all((ROOT / f).is_file() for f in gpu_check.REAL_TESTS)
    assert cmd[cmd.index("-k") + 1] == gpu_check.REAL_K and "-n" in cmd
    desel = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--deselect"]
    assert "tests/test_bnb_oracles.py::test_every_nested_and_element_code_decodes" in desel
    assert "tests/test_gguf_gpu.py" in desel  # no oracle library under tmp_path
    assert {d["test"] for d in st["deselected"]} == set(desel)


def test_peer_test_ids_exist() -> None:
    """A renamed test would make its --deselect a silent no-op."""
    for node in gpu_check.PEER_TESTS:
        path, _, name = node.partition("::")
        src = (ROOT / path).read_text()
        assert not name or f"def {name}(" in src, node


def test_a_failing_gpu_test_fails_the_check(tmp_path: Path) -> None:
    """End to end through pytest, JUnit and the table: one failing test of codec q4_0 -> exit 1."""
    planted = tmp_path / "test_planted.py"
    planted.write_text("import pytest\n\n\n@pytest.mark.parametrize('cid', ['q4_0', 'nf4'])\n"
                       "def test_planted(cid):\n    assert cid != 'q4_0', 'planted: 1 block(s) differ'\n")
    out = tmp_path / "out"
    code, doc, _ = _check(out, "--dry-run", "--skip", "warm,bench", "--tests-files", str(planted))
    assert code == 1 and doc["verdict"] == "FAILED"
    t = doc["tests_by_codec"]
    assert t["q4_0"]["failed"] == 1 and "planted" in t["q4_0"]["first_problem"] and t["nf4"]["passed"] == 1
    assert any("q4_0" in p for p in doc["problems"])


def test_speed_targets_are_judged_from_the_figures() -> None:
    import gpu_bench

    row = {"codec": "mxfp4", "family": "mx", "status": "ok", "decode_f32": {"of_copy": 0.95},
           "encode_bf16": {"of_copy": 0.50, "Gelem_s": 0.7}}
    doc = {"rows": [row, {**row, "codec": "e8m0", "family": "minifloat"}],
           "peers": [{"peer": "torchao to_mx mxfp4 floor (bf16)", "status": "ok", "Gelem_s": 0.3}]}
    t = {x["target"].split(":")[0].split(" ")[0] + (" peer" if "x torchao" in x["target"] else ""): x for x in gpu_bench.targets(doc)}
    assert set(t) == {"mxfp4", "mxfp4 peer"}  # e8m0's family has no bandwidth target
    assert t["mxfp4"]["met"] is False and t["mxfp4"]["measured"] == "95%, 50%"
    assert t["mxfp4 peer"]["met"] is True and t["mxfp4 peer"]["measured"] == "2.33x"
