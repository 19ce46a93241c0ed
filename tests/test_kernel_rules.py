"""Static bit-exactness rules for the Triton kernels (DESIGN.md §4, research/gpu-probe.md).

The Triton interpreter hides the three ways a kernel that passes CPU == GPU in CI can still
differ on a real NVIDIA GPU: fp32 ``/`` (``div.full.f32``, not correctly rounded), ``tl.sqrt`` and
the other transcendental intrinsics (``*.approx.f32``), and ``a*b + c`` contracted into an FMA
unless the launch passes ``enable_fp_fusion=False``. A fourth, ``tl.dot``, runs in TF32 on the
GPU unless told ``input_precision="ieee"``. These tests read the source of every module under
``lowbit/kernels/gpu/`` (no import, no GPU) and fail on any of them, naming file and line.

Modules whose results are documented as "within rounding" rather than bit-exact are listed in
``EXEMPT`` with the reason; docs/gpu-check.md has the kernel-by-kernel review.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

GPU_DIR = Path(__file__).resolve().parents[1] / "lowbit" / "kernels" / "gpu"

#: module -> why its kernels need no CPU parity (so FMA contraction and float sums are allowed)
EXEMPT = {
    "kvattn.py": "attention scores / weighted sums over codes: float32 results within rounding of "
                 "decode-then-matmul, compared with a tolerance (tests/test_kv.py), never bit-exact",
}

#: intrinsics that are approximate (or flush subnormals) on NVIDIA GPUs but exact in the interpreter
APPROX = {"sqrt", "rsqrt", "exp", "exp2", "log", "log2", "sin", "cos", "fdiv", "erf", "tanh", "pow",
          "div", "fast_expf", "fast_logf", "fast_dividef", "log1p", "expm1"}
#: namespaces those names are called through (tl.sqrt, tl.math.sqrt, libdevice.sqrt, math.exp ...)
NAMESPACES = {"tl", "math", "libdevice", "triton"}


@dataclass(frozen=True)
class Finding:
    """One rule broken at one place."""

    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text}"


def _dotted(node: ast.AST) -> str:
    """``tl.math.sqrt`` for an Attribute chain, ``name`` for a Name, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_jit(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if _dotted(target) in ("triton.jit", "jit"):
            return True
    return False


def _jit_names(tree: ast.Module) -> set[str]:
    """Names of @triton.jit functions defined in the module, plus jit kernels it imports by name
    from sibling modules (``from ._kvcommon import _rotate_kernel``): launches of either count."""
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and _is_jit(n)}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            sib = GPU_DIR / (node.module.replace(".", "/") + ".py")
            if sib.is_file():
                sib_jit = {n.name for n in ast.walk(ast.parse(sib.read_text())) if isinstance(n, ast.FunctionDef) and _is_jit(n)}
                names |= {a.asname or a.name for a in node.names if a.name in sib_jit}
    return names


def _holds_no_fusion(d: ast.AST) -> bool:
    """A dict literal with ``"enable_fp_fusion": False`` in it."""
    return isinstance(d, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "enable_fp_fusion" and isinstance(v, ast.Constant) and v.value is False
        for k, v in zip(d.keys, d.values))


def _local_dicts(tree: ast.Module) -> set[str]:
    return {t.id for n in tree.body if isinstance(n, ast.Assign) and _holds_no_fusion(n.value)
            for t in n.targets if isinstance(t, ast.Name)}


def _no_fusion_dicts(tree: ast.Module) -> set[str]:
    """Module-level names bound to a dict literal holding ``"enable_fp_fusion": False`` (``FP``),
    defined here or imported from a sibling (``from ._ggml import FP``)."""
    out = _local_dicts(tree)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            sib = GPU_DIR / (node.module.replace(".", "/") + ".py")
            if sib.is_file():
                sib_dicts = _local_dicts(ast.parse(sib.read_text()))
                out |= {a.asname or a.name for a in node.names if a.name in sib_dicts}
    return out


def _launch_is_unfused(call: ast.Call, dicts: set[str]) -> bool:
    for kw in call.keywords:
        if kw.arg == "enable_fp_fusion" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
            return True
        if kw.arg is None and isinstance(kw.value, ast.Name) and kw.value.id in dicts:
            return True
    return False


def scan_source(src: str, path: str = "<src>", *, exempt: bool = False) -> list[Finding]:
    """Every rule broken in one kernel module's source (``exempt``: skip the parity-only rules)."""
    tree = ast.parse(src)
    lines = src.splitlines()
    found: list[Finding] = []

    def add(node: ast.AST, rule: str) -> None:
        found.append(Finding(path, node.lineno, rule, lines[node.lineno - 1].strip()))

    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and _is_jit(n)):
        for node in ast.walk(fn):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                add(node, "plain '/' in a @triton.jit function (div.full.f32 is approximate; use tl.math.div_rn or a multiply by an exact power of two)")
            elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div):
                add(node, "'/=' in a @triton.jit function (use tl.math.div_rn)")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                head, _, last = name.rpartition(".")
                if last in APPROX and head and head.split(".")[0] in NAMESPACES:
                    add(node, f"{name}() is approximate on NVIDIA GPUs (use tl.math.sqrt_rn / div_rn, or integer bit operations)")
                if last == "dot" and head.split(".")[0] == "tl" and not exempt:
                    prec = {kw.arg: kw.value for kw in node.keywords}.get("input_precision")
                    if not (isinstance(prec, ast.Constant) and prec.value == "ieee"):
                        add(node, "tl.dot without input_precision='ieee' runs in TF32 on the GPU")
    if not exempt:
        jit, dicts = _jit_names(tree), _no_fusion_dicts(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
                    and _dotted(node.func.value) in jit and not _launch_is_unfused(node, dicts)):
                add(node, f"launch of {_dotted(node.func.value)} without enable_fp_fusion=False (a*b+c would become an FMA)")
    return found


def scan_all() -> list[Finding]:
    """Findings over every module in lowbit/kernels/gpu/."""
    out: list[Finding] = []
    for p in sorted(GPU_DIR.glob("*.py")):
        out += scan_source(p.read_text(), str(p.relative_to(GPU_DIR.parents[2])), exempt=p.name in EXEMPT)
    return out


def test_gpu_kernels_follow_the_bit_exactness_rules() -> None:
    found = scan_all()
    assert not found, "Triton kernels that can differ from the CPU on a real GPU:\n" + "\n".join(map(str, found))


def test_there_are_kernels_to_scan() -> None:
    """The scan is not vacuous: it sees the jit kernels and their launches."""
    mods = sorted(GPU_DIR.glob("*.py"))
    assert len(mods) >= 15
    n_jit = sum(len(_jit_names(ast.parse(p.read_text()))) for p in mods)
    assert n_jit >= 40


def test_exempt_modules_exist() -> None:
    for name in EXEMPT:
        assert (GPU_DIR / name).is_file(), f"EXEMPT names {name}, which is not in {GPU_DIR}"


PLANTED = '''
import triton
import triton.language as tl
from ._ggml import FP

@triton.jit
def _k(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i)
    a = x / 3.0
    b = tl.sqrt(x)
    c = tl.math.exp2(x)
    d = tl.dot(x, x)
    e = tl.math.div_rn(x, 3.0)
    f = tl.math.sqrt_rn(x)
    tl.store(y_ptr + i, a + b + c + d + e + f)

def go(x, y):
    _k[(1,)](x, y, 1, BLOCK=16)
    _k[(1,)](x, y, 1, BLOCK=16, enable_fp_fusion=False)
    _k[(1,)](x, y, 1, BLOCK=16, **FP)
'''


@pytest.mark.parametrize("rule,line", [("plain '/'", 10), ("tl.sqrt()", 11), ("tl.math.exp2()", 12),
                                       ("tl.dot without", 13), ("launch of _k without", 19)])
def test_the_scanner_catches_planted_violations(rule: str, line: int) -> None:
    found = scan_source(PLANTED, "planted.py")
    assert any(f.rule.startswith(rule) and f.line == line for f in found), [str(f) for f in found]


def test_the_scanner_accepts_the_exact_forms() -> None:
    found = scan_source(PLANTED, "planted.py")
    assert {f.line for f in found} == {10, 11, 12, 13, 19}, [str(f) for f in found]
    assert {f.line for f in scan_source(PLANTED, "planted.py", exempt=True)} == {10, 11, 12}


def test_cpu_and_gpu_kernels_have_the_same_signature() -> None:
    """Issue 20: every (family, op) registered on both backends takes the same parameters, in the
    same order, with the same defaults (the codec calls them through one code path)."""
    import inspect

    from lowbit.kernels import registry

    families = {fam for (fam, _be, _op) in registry.KERNELS} | {
        p.stem for p in GPU_DIR.glob("*.py") if not p.stem.startswith("_")}
    for fam in sorted(families):
        for be in ("cpu", "gpu"):
            try:
                registry._import_family(fam, be)
            except ImportError:
                continue
    pairs = 0
    for (fam, be, op), fn in sorted(registry.KERNELS.items()):
        if be != "cpu" or (fam, "gpu", op) not in registry.KERNELS:
            continue
        g = registry.KERNELS[(fam, "gpu", op)]
        cs = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        gs = [(p.name, p.kind, p.default) for p in inspect.signature(g).parameters.values()]
        assert cs == gs, f"{fam}.{op}: cpu {inspect.signature(fn)} != gpu {inspect.signature(g)}"
        pairs += 1
    assert pairs >= 20, f"only {pairs} cpu/gpu kernel pairs found"
