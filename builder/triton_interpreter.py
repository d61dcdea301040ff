"""Make Triton's CPU interpreter cheaper per operation without changing what it computes.

The interpreter runs a kernel's Python once per program, paying its semantic layer on every `tl`
op, so three of its habits dominate a full-size verification. None changes a result, and the kernel
code is untouched: the interpreter still runs exactly what a GPU would run.

- It re-patches `triton.language` (an `inspect.getmembers` scan of four modules) on every
  device-function call, and `tl.max`, `tl.sum`... are device functions. The scan only finds
  builtins the first time (it swaps them for wrappers), so within a launch we keep the first.
- Integer `+` and `*` shadow each operation in int64 to feed an overflow `device_assert`, which
  this interpreter can never fire (it asserts a handle object, always true). The shadow is skipped.
- bf16 <-> fp32 casts go through a per-bit emulation; for normal numbers and zeros, infinities
  and NaNs its result is a 16-bit shift, so those take the shift and subnormals keep the emulation
  (tests/test_triton_interpreter.py checks every bf16 pattern and a spread of fp32 ones).
- An int8 `tl.dot` runs as numpy's integer matmul (no BLAS). Through float64 BLAS it is exact: every
  partial sum of int8 products is an integer far below 2**53, and the int32 result wraps the same.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

_installed = False


def install() -> None:
    """Idempotent; leaves the interpreter alone when its internals are not the ones this was written for."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    needed = ("GridExecutor", "_patch_lang", "_LangPatchScope", "_convert_float", "interpreter_builder")
    if not all(hasattr(interpreter, name) for name in needed):
        return
    _patch_lang_once_per_launch(interpreter)
    options = interpreter.interpreter_builder.options
    if dataclasses.is_dataclass(options) and not isinstance(options, type) and hasattr(options, "sanitize_overflow"):
        interpreter.interpreter_builder.options = dataclasses.replace(options, sanitize_overflow=False)
    interpreter._convert_float = _shift_when_exact(interpreter._convert_float)
    builder_cls = type(interpreter.interpreter_builder)
    if hasattr(builder_cls, "create_dot"):
        builder_cls.create_dot = _int8_dot_through_blas(builder_cls.create_dot)


def _patch_lang_once_per_launch(interpreter) -> None:
    import triton.language as tl

    patch_lang, grid_call = interpreter._patch_lang, interpreter.GridExecutor.__call__
    patched: set[tuple[int, ...]] = set()  # language modules patched in the launch now running

    @functools.wraps(patch_lang)
    def patch_once(fn):
        key = tuple(sorted(id(v) for v in fn.__globals__.values() if v is tl or v is tl.core))
        if key in patched:
            return interpreter._LangPatchScope()
        patched.add(key)
        return patch_lang(fn)

    @functools.wraps(grid_call)
    def launch(self, *args, **kwargs):
        patched.clear()  # a launch restores what it patched when it ends
        try:
            with np.errstate(over="ignore"):  # an fp32 overflow to inf is what a GPU computes too: no warning
                return grid_call(self, *args, **kwargs)
        finally:
            patched.clear()

    interpreter._patch_lang = patch_once
    interpreter.GridExecutor.__call__ = launch


def _shift_when_exact(convert_float):
    import triton.language as tl

    # (bits dtype, exponent mask, mantissa mask, shift) of the input, per exact direction
    widen = (np.uint16, 0x7F80, 0x007F, 16)
    truncate = (np.uint32, 0x7F800000, 0x007FFFFF, 16)

    @functools.wraps(convert_float)
    def convert(data, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.bfloat16 and output_dtype == tl.float32:
            layout = widen
        elif input_dtype == tl.float32 and output_dtype == tl.bfloat16 and rounding_mode is None:
            layout = truncate
        else:
            return convert_float(data, input_dtype, output_dtype, rounding_mode)
        bits_dtype, exponent, mantissa, shift = layout
        bits = np.ascontiguousarray(data).view(bits_dtype)
        if np.any(((bits & exponent) == 0) & ((bits & mantissa) != 0)):
            return convert_float(data, input_dtype, output_dtype, rounding_mode)
        if layout is widen:
            return (bits.astype(np.uint32) << shift).reshape(np.shape(data))
        return (bits >> shift).astype(np.uint16).reshape(np.shape(data))

    return convert


def _int8_dot_through_blas(create_dot):
    @functools.wraps(create_dot)
    def dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype == np.int8 and b.data.dtype == np.int8 and d.data.dtype == np.int32:
            exact = np.matmul(a.data.astype(np.float64), b.data.astype(np.float64))
            return type(d)(exact.astype(np.int64).astype(np.int32) + d.data, d.dtype.scalar)
        return create_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    return dot

