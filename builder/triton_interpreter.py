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
- Every op builds its result's `block_type` and `tensor` from scratch: shape unwrapping, power-of-two
  validation, a name string, a `constexpr` per dimension. For a shape seen before, those derived
  fields are the same values, so they are remembered (keyed by element type and shape).
- Shapes are `tl.tuple`s, whose `==` builds an unwrapped copy of the other side on every call (each
  binary op's broadcast check asks). For shapes of plain integers it is a comparison of two tuples.
- A masked load gathers element by element in C++. For tiles of aligned elements numpy's gather over
  the same addresses (a view of the memory between the lowest and highest live address) reads the
  same bytes, several times faster; masked-off lanes take `other` as before. Stores scatter the same way.
- Every op maps its element type to a numpy dtype by building a dict of sixteen entries; the map is
  fixed, so each answer is remembered.
- An int8 `tl.dot` runs as numpy's integer matmul (no BLAS). Through float64 BLAS it is exact: every
  partial sum of int8 products is an integer far below 2**53, and the int32 result wraps the same.
"""
from __future__ import annotations

import ctypes
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
    _remember_block_shapes()
    interpreter._get_np_dtype = _remembered(interpreter._get_np_dtype)
    interpreter._interpreter = _GatherWithNumpy(interpreter._interpreter)
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



def _remember_block_shapes() -> None:
    from triton.language import core

    block_init, tensor_init = core.block_type.__init__, core.tensor.__init__
    blocks: dict[tuple, tuple] = {}  # (id(element type), shape) -> (element type, shape, numel, name)
    tensors: dict[tuple, tuple] = {}  # shape -> (numel, shape) as constexprs

    @functools.wraps(block_init)
    def block_type_init(self, element_ty, shape):
        key = (id(element_ty), tuple(shape))
        known = blocks.get(key) if all(type(d) is int for d in key[1]) else None
        if known is None or known[0] is not element_ty:
            block_init(self, element_ty, shape)  # validates (and raises) as before
            if all(type(d) is int for d in key[1]):
                blocks[key] = (element_ty, self.shape, self.numel, self.name)
            return
        self.element_ty, self.shape, self.numel, self.name = known

    @functools.wraps(tensor_init)
    def tensor_init_(self, handle, type):
        if not type.is_block():
            return tensor_init(self, handle, type)
        key = _ints(type.shape)  # a `tl.tuple` key would compare through its slow `__eq__` on every hit
        known = tensors.get(key) if key is not None else None
        if known is None:
            tensor_init(self, handle, type)
            if key is not None:
                tensors[key] = (self.numel, self.shape)
            return
        self.handle, self.type, self.dtype = handle, type, type.scalar
        self.numel, self.shape = known

    tuple_eq = core.tuple.__eq__

    @functools.wraps(tuple_eq)
    def shapes_equal(self, other):
        mine = _ints(self)
        theirs = _ints(other) if isinstance(other, (list, core.tuple)) else None
        if mine is None or theirs is None:
            return tuple_eq(self, other)
        return core.constexpr(mine == theirs)  # what `tuple_eq` answers for plain integers, minus its unwrapping

    core.block_type.__init__ = block_type_init
    core.tensor.__init__ = tensor_init_
    core.tuple.__eq__ = shapes_equal


def _ints(shape) -> "tuple[int, ...] | None":
    """The dims of a shape (`tl.tuple` or list) as a plain tuple, when every one is a plain int."""
    values = shape.values if not isinstance(shape, list) else shape
    return tuple(values) if all(type(d) is int for d in values) else None


class _GatherWithNumpy:
    """Triton's C++ interpreter module with `load` done by a numpy gather where that is exact."""

    SMALL = 256  # below this many lanes the C++ loop is as fast

    def __init__(self, native):
        self._native = native

    def __getattr__(self, name):
        return getattr(self._native, name)

    def load(self, ptrs, mask, other, dtype):
        size = dtype.itemsize
        if ptrs.size < self.SMALL or ptrs.dtype != np.uint64 or size & (size - 1):
            return self._native.load(ptrs, mask, other, dtype)
        live = ptrs[mask] if not mask.all() else ptrs.reshape(-1)
        if live.size == 0:
            return other.astype(dtype, copy=True)
        low, high = int(live.min()), int(live.max()) + size
        if low % size or high - low > 1 << 40 or np.any(live & np.uint64(size - 1)):
            return self._native.load(ptrs, mask, other, dtype)  # unaligned: not a plain gather
        memory = np.frombuffer((ctypes.c_char * (high - low)).from_address(low), dtype=dtype)
        index = ((ptrs - np.uint64(low)) // np.uint64(size)).astype(np.intp)
        np.putmask(index, ~mask, 0)  # masked-off lanes point anywhere: read the first live element
        return np.where(mask, memory[index], other.astype(dtype, copy=False))

    def store(self, ptrs, value, mask):
        """The same for stores: a numpy scatter into the memory between the lowest and highest live
        address (lanes writing one address: the last lane's value, as the C++ loop leaves it)."""
        size = value.dtype.itemsize
        if ptrs.size < self.SMALL or ptrs.dtype != np.uint64 or size & (size - 1) or ptrs.shape != value.shape:
            return self._native.store(ptrs, value, mask)
        every = mask.all()
        live = ptrs.reshape(-1) if every else ptrs[mask]
        if live.size == 0:
            return None
        low, high = int(live.min()), int(live.max()) + size
        if low % size or high - low > 1 << 40 or np.any(live & np.uint64(size - 1)):
            return self._native.store(ptrs, value, mask)  # unaligned: not a plain scatter
        memory = np.frombuffer((ctypes.c_char * (high - low)).from_address(low), dtype=value.dtype)
        memory[((live - np.uint64(low)) // np.uint64(size)).astype(np.intp)] = \
            value.reshape(-1) if every else value[mask]
        return None


def _remembered(fn):
    """`fn` of a hashable argument, computed once per argument (unhashable ones pass through)."""
    answers: dict = {}

    @functools.wraps(fn)
    def remembered(arg):
        try:
            return answers[arg]
        except KeyError:
            answers[arg] = answer = fn(arg)
            return answer
        except TypeError:
            return fn(arg)

    return remembered
