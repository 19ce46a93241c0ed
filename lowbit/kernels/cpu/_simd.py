"""Eight 32-bit lanes as one Numba value, for the GGUF kernels.

ggml's ``make_q*_quants`` try candidate scales one after the other, and every candidate's sums run
over the elements in order: the additions of one candidate cannot be reordered, so SIMD has to go
*across* candidates (or across elements whose results do not feed each other). Numba has no
vector type and LLVM does not keep eight array-held accumulators in registers, so this module
gives Numba two: ``vf8`` is an LLVM ``<8 x float>`` and ``vi8`` an ``<8 x i32>`` (``vm8``, the
result of a compare, is ``<8 x i1>``). Every operation emits the one IEEE instruction C would:
``fadd``/``fsub``/``fmul``/``fdiv`` carry no fast-math flags, so LLVM never contracts them into
FMAs or reorders them, and lane ``k`` of a result is bit for bit the float32 C computes.

    v = vsplat(F(1.5)); w = vload(a, 8); s = v * w + w   # lane-wise, in C's order
    vstore(out, 0, vnint_clamp(s, 0, 15))                 # nearest_int, clamped, as float
    q = vload_u8(b, 16); y = vtof((q >> 4) & 15)          # bytes -> int lanes -> float

Integer rounding is ggml's ``nearest_int`` (add 1.5*2**23, keep the low 23 bits, subtract 2**22)
done in 32-bit lanes, so out-of-range values wrap exactly as in C. Loads and stores take a
C-contiguous 1-d array and an element index and do no bounds check: the caller keeps
``idx + 8 <= len``.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, overload, register_model

__all__ = ["W", "vf8", "vi8", "vm8", "vsplat", "visplat", "vlanes", "vload", "vstore", "vload_u8", "vload_i8",
           "vstore_u8", "vabs", "vnint", "vnint_clamp", "vimin", "vimax", "vtof", "vgt", "vlt", "vne", "vand",
           "vbits", "vsel", "vcanon", "vlane", "vilane", "vhmax", "vilanes", "vlut", "vtrunc", "vsext8",
           "vge", "vle", "vmi"]

W = 8
_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VF = ir.VectorType(_F32, W)
_VI = ir.VectorType(_I32, W)
_VB = ir.VectorType(ir.IntType(1), W)
_V8 = ir.VectorType(ir.IntType(8), W)


class VF8Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="vf8")


class VI8Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="vi8")


class VM8Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="vm8")


vf8 = VF8Type()
vi8 = VI8Type()
vm8 = VM8Type()


@register_model(VF8Type)
class _VF8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, _VF)


@register_model(VI8Type)
class _VI8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, _VI)


@register_model(VM8Type)
class _VM8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):  # type: ignore[no-untyped-def]
        super().__init__(dmm, fe_type, _VB)


# ---- construction, loads, stores ---------------------------------------------------------------

def _splat(builder, val, vty):  # type: ignore[no-untyped-def]
    und = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(und, val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, und, ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _i32(context, builder, val, ty):  # type: ignore[no-untyped-def]
    return builder.trunc(context.cast(builder, val, ty, types.int64), _I32)


@intrinsic
def vsplat(typingctx, f):  # type: ignore[no-untyped-def]
    """All lanes = float32 ``f``."""
    if not (isinstance(f, types.Float) and f.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return _splat(builder, args[0], _VF)

    return vf8(f), codegen


@intrinsic
def visplat(typingctx, i):  # type: ignore[no-untyped-def]
    """All lanes = the low 32 bits of integer ``i``."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return _splat(builder, _i32(context, builder, args[0], sig.args[0]), _VI)

    return vi8(i), codegen


@intrinsic
def vlanes(typingctx):  # type: ignore[no-untyped-def]
    """The lane numbers 0.0, 1.0, ..., 7.0."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return ir.Constant(_VF, [float(k) for k in range(W)])

    return vf8(), codegen


def _elem_ptr(context, builder, arrty, arr, idx, idxty):  # type: ignore[no-untyped-def]
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [context.cast(builder, idx, idxty, types.intp)])


def _array_of(a, dtype):  # type: ignore[no-untyped-def]
    return isinstance(a, types.Array) and a.dtype == dtype and a.layout == "C" and a.ndim == 1


@intrinsic
def vilanes(typingctx):  # type: ignore[no-untyped-def]
    """The int lane numbers 0, 1, ..., 7."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return ir.Constant(_VI, list(range(W)))

    return vi8(), codegen


@intrinsic
def vlut(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Lanes = float32 ``arr[idx[k]]``: a table lookup per lane (eight scalar loads; LLVM may make
    it a gather). No bounds check: every index must be in range (callers mask them, e.g. ``& 15``)."""
    if not (_array_of(arr, types.float32) and isinstance(idx, VI8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        v = ir.Constant(_VF, ir.Undefined)
        for k in range(W):
            i = builder.sext(builder.extract_element(args[1], ir.Constant(_I32, k)), ir.IntType(64))
            v = builder.insert_element(v, builder.load(builder.gep(data, [i])), ir.Constant(_I32, k))
        return v

    return vf8(arr, idx), codegen


@intrinsic
def vload(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Lanes = float32 ``arr[idx:idx+8]``."""
    if not (_array_of(arr, types.float32) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(builder.bitcast(p, _VF.as_pointer()), align=4)

    return vf8(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):  # type: ignore[no-untyped-def]
    """float32 ``arr[idx:idx+8] = lanes``."""
    if not (_array_of(arr, types.float32) and isinstance(idx, types.Integer) and isinstance(v, VF8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(p, _VF.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


def _load8(signed):  # type: ignore[no-untyped-def]
    @intrinsic
    def impl(typingctx, arr, idx):  # type: ignore[no-untyped-def]
        if not (_array_of(arr, types.uint8) and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            v = builder.load(builder.bitcast(p, _V8.as_pointer()), align=1)
            return builder.sext(v, _VI) if signed else builder.zext(v, _VI)

        return vi8(arr, idx), codegen

    return impl


#: int lanes = the bytes ``arr[idx:idx+8]`` of a uint8 array, as unsigned (``vload_u8``) or as
#: int8 (``vload_i8``)
vload_u8, vload_i8 = _load8(False), _load8(True)


@intrinsic
def vstore_u8(typingctx, arr, idx, v):  # type: ignore[no-untyped-def]
    """``arr[idx:idx+8] = lanes & 0xFF`` (uint8 array; C's store of an int to a uint8_t/int8_t)."""
    if not (_array_of(arr, types.uint8) and isinstance(idx, types.Integer) and isinstance(v, VI8Type)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(builder.trunc(args[2], _V8), builder.bitcast(p, _V8.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


# ---- arithmetic ----------------------------------------------------------------------------------

def _binop(op, ty):  # type: ignore[no-untyped-def]
    cls = type(ty)

    @intrinsic
    def impl(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not (isinstance(a, cls) and isinstance(b, cls)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            return getattr(builder, op)(args[0], args[1])

        return ty(a, b), codegen

    return impl


def _shift(op):  # type: ignore[no-untyped-def]
    @intrinsic
    def impl(typingctx, a, k):  # type: ignore[no-untyped-def]
        if not (isinstance(a, VI8Type) and isinstance(k, types.Integer)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            return getattr(builder, op)(args[0], _splat(builder, _i32(context, builder, args[1], sig.args[1]), _VI))

        return vi8(a, k), codegen

    return impl


def _register(op, fn, lty, rty):  # type: ignore[no-untyped-def]
    def ov(a, b):  # type: ignore[no-untyped-def]
        if isinstance(a, lty) and isinstance(b, rty):
            return lambda a, b: fn(a, b)
        return None

    overload(op, inline="always")(ov)


for _op, _name in ((operator.add, "fadd"), (operator.sub, "fsub"), (operator.mul, "fmul"), (operator.truediv, "fdiv")):
    _register(_op, _binop(_name, vf8), VF8Type, VF8Type)
for _op, _name in ((operator.add, "add"), (operator.sub, "sub"), (operator.mul, "mul"), (operator.and_, "and_"),
                   (operator.or_, "or_")):
    _register(_op, _binop(_name, vi8), VI8Type, VI8Type)
#: ``vi8 >> k`` is a logical shift (the lanes hold unsigned bytes or small non-negative values)
_register(operator.rshift, _shift("lshr"), VI8Type, types.Integer)
_register(operator.lshift, _shift("shl"), VI8Type, types.Integer)
#: ``vi8 >> vi8``: each lane shifted by its own count (logical; counts must be 0..31, as in C)
_register(operator.rshift, _binop("lshr", vi8), VI8Type, VI8Type)


@intrinsic
def vabs(typingctx, a):  # type: ignore[no-untyped-def]
    """|lanes| by clearing the sign bit (what C's fabsf compiles to)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        i = builder.and_(builder.bitcast(args[0], _VI), ir.Constant(_VI, [0x7FFFFFFF] * W))
        return builder.bitcast(i, _VF)

    return vf8(a), codegen


def _nint(builder, v):  # type: ignore[no-untyped-def]
    v = builder.fadd(v, ir.Constant(_VF, [12582912.0] * W))
    i = builder.and_(builder.bitcast(v, _VI), ir.Constant(_VI, [0x007FFFFF] * W))
    return builder.sub(i, ir.Constant(_VI, [0x00400000] * W))


def _clamp(context, builder, i, sig, args):  # type: ignore[no-untyped-def]
    lo = _splat(builder, _i32(context, builder, args[1], sig.args[1]), _VI)
    hi = _splat(builder, _i32(context, builder, args[2], sig.args[2]), _VI)
    i = builder.select(builder.icmp_signed("<", i, hi), i, hi)  # MIN(hi, l)
    return builder.select(builder.icmp_signed(">", i, lo), i, lo)  # MAX(lo, ...)


@intrinsic
def vnint(typingctx, a):  # type: ignore[no-untyped-def]
    """ggml's ``nearest_int`` per lane (int lanes, bit for bit, out-of-range values wrap as in C)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return _nint(builder, args[0])

    return vi8(a), codegen


@intrinsic
def vnint_clamp(typingctx, a, lo, hi):  # type: ignore[no-untyped-def]
    """float(MAX(lo, MIN(hi, nearest_int(lane)))) per lane."""
    if not (isinstance(a, VF8Type) and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.sitofp(_clamp(context, builder, _nint(builder, args[0]), sig, args), _VF)

    return vf8(a, lo, hi), codegen


def _iminmax(pred):  # type: ignore[no-untyped-def]
    @intrinsic
    def impl(typingctx, a, k):  # type: ignore[no-untyped-def]
        if not (isinstance(a, VI8Type) and isinstance(k, types.Integer)):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            kk = _splat(builder, _i32(context, builder, args[1], sig.args[1]), _VI)
            return builder.select(builder.icmp_signed(pred, args[0], kk), args[0], kk)

        return vi8(a, k), codegen

    return impl


#: ``vimin(v, k)`` = MIN(v, k), ``vimax(v, k)`` = MAX(v, k) per lane (signed)
vimin, vimax = _iminmax("<"), _iminmax(">")


@intrinsic
def vtrunc(typingctx, a):  # type: ignore[no-untyped-def]
    """C's float -> int32 conversion per lane, as x86 ``cvttss2si``/``cvttps2dq`` do it: toward zero,
    and INT_MIN for NaN and out-of-range values (LLVM's plain ``fptosi`` would be undefined there,
    so out-of-range lanes are converted from 0.0 and then replaced)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        v = args[0]
        ok = builder.and_(builder.fcmp_ordered(">", v, ir.Constant(_VF, [-2147483648.0] * W)),
                          builder.fcmp_ordered("<", v, ir.Constant(_VF, [2147483648.0] * W)))
        i = builder.fptosi(builder.select(ok, v, ir.Constant(_VF, [0.0] * W)), _VI)
        return builder.select(ok, i, ir.Constant(_VI, [-2147483648] * W))

    return vi8(a), codegen


@intrinsic
def vsext8(typingctx, a):  # type: ignore[no-untyped-def]
    """The low byte of each lane as a signed int8 (C's ``(int8_t)`` cast of an int)."""
    if not isinstance(a, VI8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.sext(builder.trunc(args[0], _V8), _VI)

    return vi8(a), codegen


@intrinsic
def vtof(typingctx, a):  # type: ignore[no-untyped-def]
    """float32 of each (signed) int lane, as C's int -> float conversion."""
    if not isinstance(a, VI8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.sitofp(args[0], _VF)

    return vf8(a), codegen


# ---- compares, selects, lanes ----------------------------------------------------------------------

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
vge, vle = _cmp(">="), _cmp("<=")


@intrinsic
def vmi(typingctx, m):  # type: ignore[no-untyped-def]
    """Int lanes 1 where the mask is true, else 0."""
    if not isinstance(m, VM8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.zext(args[0], _VI)

    return vi8(m), codegen


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
def vcanon(typingctx, a):  # type: ignore[no-untyped-def]
    """NaN lanes become the canonical quiet NaN 0x7FC00000 (see ``_ggml.canon``)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        nan = builder.bitcast(ir.Constant(_VI, [0x7FC00000] * W), _VF)
        return builder.select(builder.fcmp_unordered("uno", args[0], args[0]), nan, args[0])

    return vf8(a), codegen


@intrinsic
def vlane(typingctx, a, k):  # type: ignore[no-untyped-def]
    """Lane ``k`` of a vf8 as a float32 scalar."""
    if not (isinstance(a, VF8Type) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.extract_element(args[0], _i32(context, builder, args[1], sig.args[1]))

    return types.float32(a, k), codegen


@intrinsic
def vilane(typingctx, a, k):  # type: ignore[no-untyped-def]
    """Lane ``k`` of a vi8 as an int64."""
    if not (isinstance(a, VI8Type) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.sext(builder.extract_element(args[0], _i32(context, builder, args[1], sig.args[1])), ir.IntType(64))

    return types.int64(a, k), codegen


@intrinsic
def vhmax(typingctx, a):  # type: ignore[no-untyped-def]
    """The largest lane (lanes must not be NaN; then the order of the compares cannot matter)."""
    if not isinstance(a, VF8Type):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        v = args[0]
        for half in (4, 2, 1):
            sh = builder.shuffle_vector(v, v, ir.Constant(_VI, [(k + half) % W for k in range(W)]))
            v = builder.select(builder.fcmp_ordered(">", sh, v), sh, v)
        return builder.extract_element(v, ir.Constant(_I32, 0))

    return types.float32(a), codegen
