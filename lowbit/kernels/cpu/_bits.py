"""Scalar bit casts for Numba kernels.

Numba has no scalar ``view``: these intrinsics emit a single LLVM ``bitcast`` between float32 and
uint32, the same reinterpretation C does with a union. They cost nothing at run time.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

__all__ = ["f32_bits", "bits_f32"]


@intrinsic
def f32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """uint32 bit pattern of a float32 scalar."""
    if not (isinstance(x, types.Float) and x.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(x), codegen


@intrinsic
def bits_f32(typingctx, u):  # type: ignore[no-untyped-def]
    """float32 whose bit pattern is the low 32 bits of an integer scalar."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        low = context.cast(builder, args[0], signature.args[0], types.uint32)
        return builder.bitcast(low, context.get_value_type(types.float32))

    return types.float32(u), codegen
