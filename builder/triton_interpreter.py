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
- It runs the programs of a launch one after another. Programs of one launch never depend on each
  other (that is what a grid means), so on Linux a launch's programs are dealt out round-robin to
  forked workers (one per CPU; `KB_INTERPRETER_WORKERS` overrides), its tensors in shared memory.
  A launch with atomics is left serial: forked workers would race on them.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys

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
    if sys.platform == "linux":
        _deal_programs_to_workers(interpreter)


def workers() -> int:
    """Processes a launch's programs are dealt to: `KB_INTERPRETER_WORKERS`, else one per CPU."""
    text = os.environ.get("KB_INTERPRETER_WORKERS", "")
    if text.isdigit() and int(text) > 0:
        return min(int(text), 64)
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


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


def _deal_programs_to_workers(interpreter) -> None:
    """Wrap each launch so that program `i` of the grid runs in worker `i % workers()`; worker 0 is
    this process, the others are forked at the first program and leave after the last one."""
    import torch

    executor = interpreter.GridExecutor
    serial_call = executor.__call__

    def tensors(args, kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                yield value

    def launch(self, *args, **kwargs):
        grid = self.grid
        count = workers()
        if callable(grid) or np.prod(grid) < 2 * count or _may_use_atomics(self.fn):
            return serial_call(self, *args, **kwargs)
        for t in tensors(args, kwargs):
            t.share_memory_()  # in place for every view of the storage: the workers' writes land here
        serial_fn, dims = self.fn, tuple(grid) + (1,) * (3 - len(grid))
        team = _Team(count, dims)

        program = _Program(serial_fn, team, dims, interpreter.interpreter_builder)
        self.fn = program
        try:
            return serial_call(self, *args, **kwargs)
        finally:
            self.fn = serial_fn
            team.join()

    executor.__call__ = functools.wraps(serial_call)(launch)


@functools.lru_cache(maxsize=None)
def _may_use_atomics(fn) -> bool:
    try:
        return "atomic" in inspect.getsource(fn)
    except (OSError, TypeError):
        return True  # unknown: stay serial


class _Program:
    """Stands in for the kernel function: runs the programs dealt to this worker, skips the others.
    It shows the executor the kernel's signature (to bind arguments) and globals (to patch `tl`)."""

    def __init__(self, fn, team: "_Team", dims: tuple[int, ...], builder):
        self.fn, self.team, self.dims, self.builder = fn, team, dims, builder
        self.__globals__ = fn.__globals__
        self.__signature__ = inspect.signature(fn)
        self.__name__ = fn.__name__

    def __call__(self, **named):
        team = self.team
        team.start()
        x, y, z = self.builder.grid_idx
        index = (x * self.dims[1] + y) * self.dims[2] + z
        try:
            if index % team.count == team.worker:
                self.fn(**named)
        except BaseException as e:
            team.fail(e)
            raise
        team.finish_if_last(index)


class _Team:
    """The forked workers of one launch. Worker 0 is the launching process."""

    def __init__(self, count: int, dims: tuple[int, ...]):
        self.count, self.last = count, dims[0] * dims[1] * dims[2] - 1
        self.worker = 0
        self.children: list[tuple[int, int]] = []  # (pid, read end of its error pipe)
        self.started = False
        self.error_pipe = -1

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        for worker in range(1, self.count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                self.worker, self.error_pipe, self.children = worker, write, []
                return
            os.close(write)
            self.children.append((pid, read))

    def fail(self, error: BaseException) -> None:
        if self.worker:
            os.write(self.error_pipe, repr(error).encode()[:4000])
            os._exit(1)

    def finish_if_last(self, index: int) -> None:
        # a worker leaves before the executor copies results back: that is the launching process's job
        if self.worker and index == self.last:
            os._exit(0)

    def join(self) -> None:
        errors = []
        for pid, read in self.children:
            _, status = os.waitpid(pid, 0)
            message = os.read(read, 4096).decode(errors="replace")
            os.close(read)
            if status:
                errors.append(message or f"worker {pid} ended with status {status}")
        self.children = []
        if errors:
            from triton.runtime.errors import InterpreterError

            raise InterpreterError(errors[0])
