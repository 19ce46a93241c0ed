"""Eight float32 lanes as one Numba value, for the scale searches of the GGUF kernels.

ggml's ``make_q*_quants`` try candidate scales one after the other, and every candidate's sums run
over the elements in order: the additions of one candidate cannot be reordered, so SIMD has to go
*across* candidates. Numba has no vector type and LLVM does not keep eight array-held accumulators
in a register, so this module gives Numba one: ``vf8`` is an LLVM ``<8 x float>``, and the
operations below each emit the one IEEE instruction C would (``fadd``, ``fmul``, ``fdiv`` with no
fast-math flags, so LLVM never contracts them into FMAs or reorders them). Lane ``k`` of every
result is bit for bit the float32 C computes for that candidate.

    v = vsplat(F(1.5)); w = vload(a, 8); s = v * w + w   # lane-wise, C's order
    vstore(out, 0, vnint_clamp(s, 0, 15))                 # nearest_int, clamped, as float

Integer rounding is ggml's ``nearest_int`` (add 1.5*2**23, keep the low 23 bits, subtract 2**22)
done in 32-bit lanes, so out-of-range values wrap exactly as in C.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, overload, register_model

__all__ = ["vf8", "vm8", "vsplat", "vlanes", "vload", "vstore", "vabs", "vnint_clamp", "vgt", "vlt", "vne", "vand",
           "vbits", "vsel", "vlane", "W"]

W = 8
_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VF = ir.VectorType(_F32, W)
_VI = ir.VectorType(_I32, W)


class VF8Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="vf8")


vf8 = VF8Type()


@register_model(VF8Type)
class _VF8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, _VF)


def _splat(builder, val, vty):  # type: ignore[no-untyped-def]
    n = vty.count
    und = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(und, val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, und, ir.Constant(ir.VectorType(_I32, n), [0] * n))


@intrinsic
def vsplat(typingctx, f):  # type: ignore[no-untyped-def]
    """All lanes = float32 ``f``."""
    if not (isinstance(f, types.Float) and f.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return _splat(builder, args[0], _VF)

    return vf8(f), codegen


@intrinsic
def vlanes(typingctx):  # type: ignore[no-untyped-def]
    """The lane numbers 0.0, 1.0, ..., 7.0."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return ir.Constant(_VF, [float(k) for k in range(W)])

    return vf8(), codegen


def _elem_ptr(context, builder, arrty, arr, idx, idxty):  # type: ignore[no-untyped-def]
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.gep(ary.data, [i])


def _f32_array(a):  # type: ignore[no-untyped-def]
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" and a.ndim == 1


@intrinsic
def vload(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Lanes = ``arr[idx:idx+8]`` (a C-contiguous 1-d float32 array; no bounds check)."""
    if not (_f32_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(builder.bitcast(p, _VF.as_pointer()), align=4)

    return vf8(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):  # type: ignore[no-untyped-def]
    """``arr[idx:idx+8] = lanes`` (a C-contiguous 1-d float32 array; no bounds check)."""
    if not (_f32_array(arr) and isinstance(idx, types.Integer) and isinstance(v, VF8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(p, _VF.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


def _binop(op):  # type: ignore[no-untyped-def]
    @intrinsic
    def impl(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not (isinstance(a, VF8Type) and isinstance(b, VF8Type)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            return getattr(builder, op)(args[0], args[1])

        return vf8(a, b), codegen

    return impl


_vadd, _vsub, _vmul, _vdiv = _binop("fadd"), _binop("fsub"), _binop("fmul"), _binop("fdiv")

for _op, _fn in ((operator.add, _vadd), (operator.sub, _vsub), (operator.mul, _vmul), (operator.truediv, _vdiv)):
    def _make(fn):  # type: ignore[no-untyped-def]
        def ov(a, b):  # type: ignore[no-untyped-def]
            if isinstance(a, VF8Type) and isinstance(b, VF8Type):
                return lambda a, b: fn(a, b)
            return None
        return ov

    overload(_op, inline="always")(_make(_fn))


@intrinsic
def vabs(typingctx, a):  # type: ignore[no-untyped-def]
    """|lanes| by clearing the sign bit (what C's fabsf compiles to)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        i = builder.bitcast(args[0], _VI)
        i = builder.and_(i, ir.Constant(_VI, [0x7FFFFFFF] * W))
        return builder.bitcast(i, _VF)

    return vf8(a), codegen


@intrinsic
def vnint_clamp(typingctx, a, lo, hi):  # type: ignore[no-untyped-def]
    """float(MAX(lo, MIN(hi, nearest_int(lane)))) per lane, ggml's ``nearest_int`` bit for bit."""
    if not (isinstance(a, VF8Type) and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        v = builder.fadd(args[0], ir.Constant(_VF, [12582912.0] * W))
        i = builder.bitcast(v, _VI)
        i = builder.and_(i, ir.Constant(_VI, [0x007FFFFF] * W))
        i = builder.sub(i, ir.Constant(_VI, [0x00400000] * W))
        lo32 = _splat(builder, builder.trunc(context.cast(builder, args[1], sig.args[1], types.int64), _I32), _VI)
        hi32 = _splat(builder, builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), _I32), _VI)
        i = builder.select(builder.icmp_signed("<", i, hi32), i, hi32)
        i = builder.select(builder.icmp_signed(">", i, lo32), i, lo32)
        return builder.sitofp(i, _VF)

    return vf8(a, lo, hi), codegen


class VM8Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="vm8")


vm8 = VM8Type()


@register_model(VM8Type)
class _VM8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), W))


def _cmp(op):  # type: ignore[no-untyped-def]
    @intrinsic
    def impl(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not (isinstance(a, VF8Type) and isinstance(b, VF8Type)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            if op == "!=":  # C's a != b is true for NaN (unordered or not equal)
                return builder.fcmp_unordered("!=", args[0], args[1])
            return builder.fcmp_ordered(op, args[0], args[1])

        return vm8(a, b), codegen

    return impl


#: lane-wise compares as C evaluates them: ordered (false when a lane is NaN), except ``!=``
vgt, vlt, vne = _cmp(">"), _cmp("<"), _cmp("!=")


@intrinsic
def vand(typingctx, a, b):  # type: ignore[no-untyped-def]
    """Lane-wise AND of two masks."""
    if not (isinstance(a, VM8Type) and isinstance(b, VM8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.and_(args[0], args[1])

    return vm8(a, b), codegen


@intrinsic
def vbits(typingctx, m):  # type: ignore[no-untyped-def]
    """The mask as an int64: bit k set where lane k is true."""
    if not isinstance(m, VM8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.zext(builder.bitcast(args[0], ir.IntType(W)), ir.IntType(64))

    return types.int64(m), codegen


@intrinsic
def vsel(typingctx, m, t, f):  # type: ignore[no-untyped-def]
    """Per lane ``m ? t : f``."""
    if not (isinstance(m, VM8Type) and isinstance(t, VF8Type) and isinstance(f, VF8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.select(args[0], args[1], args[2])

    return vf8(m, t, f), codegen


@intrinsic
def vlane(typingctx, a, k):  # type: ignore[no-untyped-def]
    """Lane ``k`` as a float32 scalar."""
    if not (isinstance(a, VF8Type) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        kk = builder.trunc(context.cast(builder, args[1], sig.args[1], types.int64), _I32)
        return builder.extract_element(args[0], kk)

    return types.float32(a, k), codegen

