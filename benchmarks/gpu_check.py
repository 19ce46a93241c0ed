"""One prepared GPU check (issue 22), driven by ``bash benchmarks/gpu_check.sh``.

Steps, each with its own time budget inside one overall budget (8 minutes by default):

1. ``wheels``: install the pure-Python wheels carried in ``.whl/`` (filled on the development
   machine by ``benchmarks/fetch_gpu_wheels.sh``) offline into a temporary folder put on
   PYTHONPATH; point the ggml oracle at the prebuilt ``.whl/ggml-oracle`` when it is there.
2. ``env``: versions, the device, which optional peers import.
3. ``tests``: pytest over every GPU test (``-k "gpu or golden or ..."``: CUDA bytes == Numba
   bytes for every codec configuration, hypothesis examples, exhaustive code tables, the ggml
   oracle), JUnit XML -> a per-codec pass/fail table. Tests whose peer is missing are deselected
   with the reason printed.
4. ``bench``: ``benchmarks/gpu_bench.py`` (encode/decode of a 1 GiB tensor against the copy).
5. ``report``: ``summary.json`` and ``summary.md`` in the output folder, the table printed.

``--dry-run`` does all of it on the CPU (Triton interpreter, a few codecs, tiny tensors) for CI.
Exit status: 0 all passed; 1 a mismatch, a failed test or an unfinished step; 2 cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_report as report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
ORACLE = WHEELS / "ggml-oracle"

REAL_TESTS = ["tests/test_gpu.py", "tests/test_gguf_gpu.py", "tests/test_codecs.py", "tests/test_kernel_rules.py",
              "tests/test_minifloat_oracles.py", "tests/test_mx_oracles.py", "tests/test_nvfp4_oracles.py",
              "tests/test_bnb_oracles.py", "tests/test_dynamic8.py", "tests/test_qjl.py", "tests/test_rotated.py",
              "tests/test_sliceable.py", "tests/test_kv.py", "tests/test_formats_hqq_quanto.py"]
REAL_K = "gpu or golden or decode_random_bytes or kernel_rules"
#: the dry run: the GPU tier's skips (no CUDA: each codec listed as skipped with the reason), the static
#: kernel rules and two interpreter-tier CPU == GPU checks, by node id (``-k`` would match mxfp8_e4m3 too)
DRY_TESTS = ["tests/test_gpu.py", "tests/test_kernel_rules.py", "tests/test_codecs.py::test_cpu_and_gpu_identical[fp8_e4m3]",
             "tests/test_codecs.py::test_cpu_and_gpu_identical[q4_0]"]
DRY_K = ""
#: families the dry run warms (those of its two interpreter-tier tests)
DRY_FAMILIES = ["minifloat", "gguf_legacy"]

#: everything a run writes into its output folder (the device tool returns at most 8 files)
OUTPUT_FILES = ("summary.json", "summary.md", "junit.xml", "pytest.log", "bench.json", "bench.log", "setup.log")

#: tests that need a peer the device image may lack: node-id prefix -> modules it imports
PEER_TESTS = {
    "tests/test_mx_oracles.py::test_mx_gpu_backend_equals_torchao": ["torchao"],
    "tests/test_nvfp4_oracles.py::test_nvfp4_gpu_backend_equals_torchao_and_compressed_tensors": ["torchao", "compressed_tensors"],
    "tests/test_dynamic8.py::test_golden_vectors_agree_with_bitsandbytes": ["bitsandbytes"],
    "tests/test_bnb_oracles.py::test_every_nested_and_element_code_decodes": ["bitsandbytes"],
    "tests/test_formats_hqq_quanto.py": ["hqq", "optimum.quanto"],
    "tests/test_gguf_gpu.py": ["gguf"],
}
PEERS = sorted({m for ms in PEER_TESTS.values() for m in ms} | {"xdist"})

ENV_PROBE = r"""
import importlib, importlib.util, json, platform, sys
out = {"python": platform.python_version(), "versions": {}, "importable": {}}
from importlib.metadata import version
for m in ("torch", "triton", "numba", "numpy", "gguf", "ml_dtypes", "hypothesis", "pytest", "torchao", "bitsandbytes"):
    try:
        importlib.import_module(m)
        out["versions"][m] = version(m)
    except Exception as e:
        out["versions"][m] = "missing (%s)" % type(e).__name__
for m in sys.argv[1:]:
    try:
        out["importable"][m] = importlib.util.find_spec(m) is not None
    except Exception:
        out["importable"][m] = False
import lowbit, torch
out["lowbit"] = lowbit.__file__
out["codecs"] = lowbit.list_codecs()
out["cuda"] = torch.cuda.is_available()
out["device"] = torch.cuda.get_device_name() if out["cuda"] else "cpu"
print(json.dumps(out))
"""


class Clock:
    """The overall budget; steps ask for their share of what is left."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.total = seconds

    def left(self) -> float:
        return self.total - (time.monotonic() - self.t0)


def run(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int | None, float]:
    """Run cmd with output to log; past timeout send SIGINT (pytest then still writes its JUnit XML),
    then kill its process group. Returns (exit status or None when it timed out, seconds)."""
    t0 = time.monotonic()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return p.wait(timeout=max(timeout, 1)), time.monotonic() - t0
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            f.write(f"\n[gpu_check] stopped after its budget of {timeout:.0f} s\n")
            return None, time.monotonic() - t0


def step_wheels(env: dict[str, str], out: Path) -> dict[str, Any]:
    """Install .whl/*.whl offline into a temporary site folder (prepended to PYTHONPATH)."""
    t0 = time.monotonic()
    st: dict[str, Any] = {"installed": [], "skipped": []}
    manifest = WHEELS / "MANIFEST.txt"
    if manifest.is_file():
        st["skipped"] = [ln[len("skipped "):] for ln in manifest.read_text().splitlines() if ln.startswith("skipped ")]
    wheels = sorted(WHEELS.glob("*.whl"))
    if (ORACLE / "build" / "bin" / "libggml-base.so").is_file():
        env["LOWBIT_GGML_CACHE"] = str(ORACLE)
        st["installed"].append("ggml oracle: prebuilt libggml-base.so from .whl/ggml-oracle")
    if not wheels:
        return {**st, "status": "skipped", "seconds": time.monotonic() - t0,
                "note": "no wheels in .whl/ (fill it with benchmarks/fetch_gpu_wheels.sh where pip reaches PyPI)"}
    site = Path(tempfile.mkdtemp(prefix="lowbit-gpu-site-"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--disable-pip-version-check", "--target", str(site), *map(str, wheels)]
    rc, _ = run(cmd, env, out / "setup.log", 120)
    if rc != 0:
        return {**st, "status": "failed", "seconds": time.monotonic() - t0, "note": "pip install of .whl/ failed: see setup.log"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    st["installed"] += [w.name for w in wheels]
    return {**st, "status": "ok", "seconds": time.monotonic() - t0, "site": str(site), "note": f"{len(wheels)} wheels into {site}"}


def step_env(env: dict[str, str], out: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", ENV_PROBE, *PEERS], cwd=ROOT, env=env, capture_output=True, text=True)
    with open(out / "setup.log", "a") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"gpu_check: the environment probe failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def deselections(info: dict[str, Any], env: dict[str, str]) -> list[dict[str, str]]:
    """Tests that cannot run here (a peer missing, no ggml oracle), each with its reason."""
    out = []
    for node, mods in PEER_TESTS.items():
        missing = [m for m in mods if not info["importable"].get(m)]
        if missing:
            out.append({"test": node, "reason": f"needs {', '.join(missing)}, not importable here (not carried in .whl/)"})
    cache = Path(env.get("LOWBIT_GGML_CACHE") or ROOT / ".cache" / "ggml-oracle")
    if not (cache / "build" / "bin" / "libggml-base.so").is_file() and not any(d["test"] == "tests/test_gguf_gpu.py" for d in out):
        out.append({"test": "tests/test_gguf_gpu.py", "reason": f"no ggml oracle library under {cache} (carry .whl/ggml-oracle)"})
    return out


def step_tests(a: argparse.Namespace, env: dict[str, str], info: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    files, k = (DRY_TESTS, DRY_K) if a.dry_run else (REAL_TESTS, REAL_K)
    if getattr(a, "tests_files", None):
        files, k = a.tests_files.split(","), ""
    if a.tests_k:
        k = a.tests_k
    desel = deselections(info, env)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", f"--junitxml={out / 'junit.xml'}",
           *(["-k", k] if k else []), *files]
    for d in desel:
        cmd += ["--deselect", d["test"]]
    if not a.dry_run and info["importable"].get("xdist"):
        cmd += ["-n", str(min(12, os.cpu_count() or 1))]
    rc, secs = run(cmd, env, out / "pytest.log", budget)
    st: dict[str, Any] = {"seconds": secs, "deselected": desel, "command": " ".join(cmd)}
    if rc is None:
        st.update(status="timed out", note=f"pytest stopped after {budget:.0f} s; the table holds what finished")
    elif rc == 0:
        st.update(status="passed")
    elif rc == 1:
        st.update(status="failed", note="some tests failed: see the table and pytest.log")
    else:
        st.update(status="error", note=f"pytest exit status {rc}: see pytest.log")
    return st


def step_warm(a: argparse.Namespace, env: dict[str, str], out: Path, budget: float) -> dict[str, Any]:
    """Compile every family's kernels once, in parallel, into the on-disk JIT caches. Not part of
    the verdict: a failure here shows up again, with details, in the tests."""
    if a.dry_run:
        cmd = [sys.executable, "benchmarks/gpu_warm.py", "--jobs", "2", "--families", ",".join(DRY_FAMILIES)]
    else:
        cmd = [sys.executable, "benchmarks/gpu_warm.py", "--jobs", str(min(16, os.cpu_count() or 1)), "--gpu"]
    rc, secs = run(cmd, env, out / "setup.log", budget)
    status = {0: "ok", None: "partial"}.get(rc, "errors")
    note = {"ok": "", "partial": f"stopped after {budget:.0f} s; the tests compile the rest",
            "errors": "some configurations failed to run (see setup.log); the tests report them"}[status]
    return {"status": status, "seconds": secs, "note": note}


def step_bench(a: argparse.Namespace, env: dict[str, str], out: Path, budget: float) -> dict[str, Any]:
    setup = 10 if a.dry_run else 30  # importing torch, the 1 GiB tensors, the first compiles
    cmd = [sys.executable, "benchmarks/gpu_bench.py", "--json", str(out / "bench.json"), "--budget", f"{max(budget - setup, 1):.0f}"]
    if a.dry_run:
        cmd.append("--dry-run")
    if a.plant_mismatch:
        cmd += ["--plant-mismatch", a.plant_mismatch]
    if a.bench_codecs:
        cmd += ["--codecs", a.bench_codecs]
    rc, secs = run(cmd, env, out / "bench.log", budget)
    status = {0: "passed", 1: "failed", None: "timed out"}.get(rc, "error")
    return {"status": status, "seconds": secs, "note": "" if rc == 0 else "see bench.log"}


def reserve_for(name: str, skip: set[str], bench_budget: float, dry: bool) -> float:
    """Seconds of the overall budget a step must leave for the steps after it: the warm-up leaves
    the tests their minimum and the bench its budget, the tests leave the bench its budget."""
    r = 10.0
    if name == "warm" and "tests" not in skip:
        r += 20 if dry else 150
    if name in ("warm", "tests") and "bench" not in skip:
        r += bench_budget
    return r


def verdict(doc: dict[str, Any]) -> tuple[str, int, list[str]]:
    """PASSED / FAILED and the exit status, with every problem named."""
    problems = []
    for name, st in doc["steps"].items():
        if st["status"] in ("failed", "error", "timed out"):
            problems.append(f"step {name}: {st['status']} {st.get('note', '')}".strip())
    for cid, r in doc.get("tests_by_codec", {}).items():
        if r["failed"] or r["error"]:
            problems.append(f"tests of {cid}: {r['failed']} failed, {r['error']} errors; first: {r['first_problem']}")
    for r in doc.get("bench", {}).get("rows", []):
        if r["status"] in ("mismatch", "error"):
            problems.append(f"bench {r['codec']}: {r['status']}: {r.get('reason', '')}")
    return ("FAILED", 1, problems) if problems else ("PASSED", 0, problems)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="One prepared GPU check (see docs/gpu-check.md).")
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU (Triton interpreter, tiny sizes)")
    ap.add_argument("--out", help="output folder (default out/gpu-check-<UTC time>)")
    ap.add_argument("--total", type=float, help="overall budget in seconds (default 480; dry run 88)")
    ap.add_argument("--tests-budget", type=float, help="seconds for pytest (default 280; dry run 35)")
    ap.add_argument("--bench-budget", type=float, help="seconds for the bench, set-up included (default 120; dry run 30)")
    ap.add_argument("--warm-budget", type=float, help="seconds for compiling every family first (default 100; dry run 15)")
    ap.add_argument("--tests-files", help="comma-separated test files or node ids instead of the default selection")
    ap.add_argument("--tests-k", help="pytest -k expression instead of the default selection")
    ap.add_argument("--bench-codecs", help="comma-separated codec ids for the bench instead of its plan")
    ap.add_argument("--skip", default="", help="comma-separated steps to leave out (warm, tests, bench), reported as skipped")
    ap.add_argument("--plant-mismatch", default=os.environ.get("LOWBIT_GPU_CHECK_PLANT", ""),
                    help="flip a byte of this codec's GPU output in the bench comparison (to see the check fail)")
    a = ap.parse_args(argv)
    dry = a.dry_run
    clock = Clock(a.total or (88 if dry else 480))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    out = Path(a.out or ROOT / "out" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a reused folder must not lend this run an earlier run's results
        (out / name).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    if dry:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)  # the real check must run the compiled kernels
    doc: dict[str, Any] = {"mode": "dry run (CPU, Triton interpreter)" if dry else "CUDA", "started": started, "steps": {}}
    print(f"gpu_check: {doc['mode']}, results in {out}", flush=True)
    doc["steps"]["wheels"] = step_wheels(env, out)
    try:
        return finish(a, doc, env, out, clock)
    finally:
        if doc["steps"]["wheels"].get("site"):
            shutil.rmtree(doc["steps"]["wheels"]["site"], ignore_errors=True)


def finish(a: argparse.Namespace, doc: dict[str, Any], env: dict[str, str], out: Path, clock: Clock) -> int:
    """Steps 2-5 (after the wheels are in place); returns the exit status."""
    dry = a.dry_run
    t0 = time.monotonic()
    info = step_env(env, out)
    doc["env"] = {k: info[k] for k in ("python", "versions", "device", "cuda", "lowbit", "importable")}
    doc["steps"]["env"] = {"status": "ok", "seconds": time.monotonic() - t0, "note": f"{info['device']}; lowbit from {info['lowbit']}"}
    skip = set(filter(None, a.skip.split(",")))
    code = None
    if not dry and not info["cuda"]:
        doc["steps"]["env"].update(status="cannot run", note="no CUDA device here: run with --dry-run on a CPU")
        code = 2
    tests_budget = a.tests_budget or (35 if dry else 280)
    bench_budget = a.bench_budget or (30 if dry else 120)
    warm_budget = a.warm_budget or (15 if dry else 100)
    budgets = {"warm": warm_budget, "tests": tests_budget, "bench": bench_budget}
    for name in ("warm", "tests", "bench"):
        if code == 2 or name in skip:
            doc["steps"][name] = {"status": "skipped", "seconds": 0.0,
                                  "note": "no CUDA device" if code == 2 else "left out with --skip"}
            continue
        allowed = min(budgets[name], clock.left() - reserve_for(name, skip, bench_budget, dry))
        if allowed < 5:
            doc["steps"][name] = {"status": "skipped" if name == "warm" else "timed out", "seconds": 0.0,
                                  "note": "overall budget spent before this step"}
            continue
        print(f"gpu_check: {name} (up to {allowed:.0f} s) ...", flush=True)
        fn = {"warm": step_warm, "bench": step_bench}.get(name)
        doc["steps"][name] = step_tests(a, env, info, out, allowed) if name == "tests" else fn(a, env, out, allowed)
        print(f"gpu_check: {name}: {doc['steps'][name]['status']} in {doc['steps'][name]['seconds']:.0f} s", flush=True)
    if (out / "junit.xml").is_file() and doc["steps"].get("tests", {}).get("status") != "skipped":
        doc["tests_by_codec"] = report.per_codec(report.read_junit(out / "junit.xml"), info["codecs"])
    elif doc["steps"].get("tests", {}).get("status") in ("passed", "failed"):  # pytest ran but wrote no XML
        doc["steps"]["tests"]["note"] = (doc["steps"]["tests"].get("note", "") + "; no junit.xml written").strip("; ")
        doc["steps"]["tests"]["status"] = "error"
    if (out / "bench.json").is_file():
        doc["bench"] = json.loads((out / "bench.json").read_text())
    doc["verdict"], status, doc["problems"] = verdict(doc)
    if code == 2:
        doc["verdict"], status = "NOT RUN (no CUDA device)", 2
    doc["seconds"] = clock.total - clock.left()
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    md = report.markdown(doc)
    (out / "summary.md").write_text(md)
    print(md)
    print(f"gpu_check: {doc['verdict']} in {doc['seconds']:.0f} s; exit {status}; {out}/summary.md", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
