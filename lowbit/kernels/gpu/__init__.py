"""Triton GPU kernels. Importing a module here imports triton; only do it for the GPU backend.

Bit-exactness rules (research/gpu-probe.md): fp32 ``/`` and ``tl.sqrt`` are approximate in
Triton, so divisions use ``tl.math.div_rn``; ``a*b+c`` fuses into an FMA unless the launch passes
``enable_fp_fusion=False``; and ``TRITON_INTERPRET=1`` casts fp32 to bf16/fp8 wrongly, so every
rounding step is done with integer bit operations, exact on the GPU and in the interpreter alike.
"""
