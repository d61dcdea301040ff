"""A torch-backed executor for the subset of PyPTO's `pl` language that the pypto backend emits.

It runs the emitted file's text as Python, with `import pypto.language as pl` bound to this module's
`PlLanguage`: tensors are torch tensors (a subclass that checks slice stores), orchestration loops
and `pl.at` scopes are plain control flow, and each op follows its documented semantics (matmul
accumulates in fp32, or int32 for int8; casts honour their rounding mode; row reductions keep a
`[M, 1]` shape; no implicit dtype promotion). Anything outside the subset raises `Unsupported`;
nothing is silently approximated. So do constructs of the subset that PyPTO's parser or its a2a3
backend reject, each as the real compiler answered: plain Python calls in a kernel, `tile.expands`,
int8 -> fp32 casts, a one-column `pl.arange`, and a tile name changing type across a `pl.range` loop.
New buffers start as NaN (or a poison integer), so a region the program forgot to write shows up in
the comparison.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import sys
import types
from typing import Any, Callable

import torch

from . import dtypes

POISON_INT = -0x5A5A5A5


class Unsupported(Exception):
    """The program uses a construct the executor does not implement (it must never be guessed)."""


class PlTensor(torch.Tensor):
    """A torch tensor whose slice stores behave like `pl.assemble`: same dtype, same shape, no casts."""

    def __setitem__(self, index, value):
        target = torch.Tensor.__getitem__(self, index)
        if not isinstance(value, torch.Tensor):
            raise Unsupported(f"storing a {type(value).__name__} into a tensor slice; store a tile")
        if value.dtype != target.dtype:
            raise Unsupported(f"storing a {_name(value.dtype)} tile into a {_name(target.dtype)} tensor: "
                              "`pl` never casts implicitly, add pl.cast")
        if tuple(value.shape) != tuple(target.shape):
            raise Unsupported(f"storing a tile of shape {list(value.shape)} into a slice of shape {list(target.shape)}")
        torch.Tensor.__setitem__(self, index, value)


def _pl(t: torch.Tensor) -> PlTensor:
    return t if isinstance(t, PlTensor) else t.as_subclass(PlTensor)


def _name(dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


# `pl` dtype constants: the spec's dtypes (builder/dtypes.py), plus FP16 (a cast hop the backend uses)
# and INDEX (loop indices and scalars)
DTYPES = {**{info.pl: getattr(torch, info.torch) for info in dtypes.TABLE.values()},
          "FP16": torch.float16, "INDEX": torch.int64}
MODES = ("none", "rint", "round", "floor", "ceil", "trunc", "odd")


class _TypeMarker:
    """`pl.Tensor[[shape], dtype]`, `pl.Out[...]`: annotations only."""

    def __init__(self, kind: str):
        self.kind = kind

    def __getitem__(self, item):
        return (self.kind, item)


class _Jit:
    """`@pl.jit`: the function runs as plain Python; `pl.jit.inline` and friends are not emitted."""

    def __call__(self, fn):
        return fn

    def __getattr__(self, name):
        raise Unsupported(f"pl.jit.{name}")


@dataclasses.dataclass(frozen=True)
class _CrossCoreSlot:
    """pl.cross_core_slot: the depth of a scope's cross-core pipe ring."""
    slot_num: int


class PlLanguage(types.ModuleType):
    """The `pl` namespace the emitted program sees."""

    def __init__(self, on_scope=None):
        super().__init__("pypto.language")
        self._depth = 0  # inside how many pl.at scopes
        self.scopes: list[str] = []
        self._on_scope = on_scope  # progress: called with a scope's name_hint as a run of that scope starts
        for name, dtype in DTYPES.items():
            setattr(self, name, dtype)
        self.Tensor, self.Out, self.InOut = _TypeMarker("in"), _TypeMarker("out"), _TypeMarker("inout")
        self.jit = _Jit()
        self.Level = types.SimpleNamespace(CORE_GROUP="CORE_GROUP")

    def __getattr__(self, name):  # only called for names not defined here
        raise Unsupported(f"pl.{name} is outside the subset this executor implements")

    # --- orchestration -------------------------------------------------------------------------
    @contextlib.contextmanager
    def at(self, *, level, name_hint, optimizations=()):
        if level != "CORE_GROUP":
            raise Unsupported(f"pl.at(level={level!r})")
        for option in optimizations:  # scheduling hints: the results do not depend on them
            if not isinstance(option, _CrossCoreSlot):
                raise Unsupported(f"pl.at optimization {option!r}")
        self._depth += 1
        if self._on_scope is not None and (not self.scopes or self.scopes[-1] != name_hint):
            self._on_scope(name_hint)
        self.scopes.append(name_hint)
        try:
            yield None
        finally:
            self._depth -= 1

    @staticmethod
    def cross_core_slot(*, slot_num: int) -> "_CrossCoreSlot":
        if not isinstance(slot_num, int) or slot_num < 1:
            raise Unsupported(f"pl.cross_core_slot(slot_num={slot_num!r}): a positive int")
        return _CrossCoreSlot(slot_num)

    def _orchestration_only(self, what: str):
        if self._depth:
            raise Unsupported(f"{what} inside a pl.at scope (an orchestration construct)")

    def _incore_only(self, what: str):
        if not self._depth:
            raise Unsupported(f"tensor op {what} outside any pl.at scope (PyPTO rejects it in orchestration)")

    def parallel(self, *bounds):
        self._orchestration_only("pl.parallel")
        return range(*(int(b) for b in bounds))

    def range(self, *bounds):
        return builtins.range(*(int(b) for b in bounds))

    def create_tensor(self, shape, dtype):
        self._orchestration_only("pl.create_tensor")
        if dtype.is_floating_point:
            return _pl(torch.full(list(shape), float("nan"), dtype=dtype))
        return _pl(torch.full(list(shape), POISON_INT, dtype=torch.int64).to(dtype))

    def reshape(self, x, shape):
        if x.numel() != _numel(shape):
            raise Unsupported(f"pl.reshape of {list(x.shape)} to {list(shape)}")
        return _pl(x.view(list(shape)) if x.is_contiguous() else x.reshape(list(shape)))

    def slice(self, x, shape, offset, valid_shape=None):
        """A tile of `shape` read from tensor `x` at `offset`; with `valid_shape`, only that leading part
        is read (it may be all the tensor holds) and the rest is poison, which must never reach a result."""
        self._incore_only("pl.slice")
        shape, offset = [int(s) for s in shape], [int(o) for o in offset]
        valid = [int(v) for v in valid_shape] if valid_shape is not None else shape
        if len(shape) != x.dim() or len(offset) != x.dim() or len(valid) != x.dim():
            raise Unsupported(f"pl.slice of a rank-{x.dim()} tensor with shape {shape}, offset {offset}")
        if any(v > s or o + v > n for v, s, o, n in zip(valid, shape, offset, x.shape)):
            raise Unsupported(f"pl.slice of {list(x.shape)}: valid {valid} at {offset} runs past it (or the tile)")
        tile = torch.full(shape, float("nan")) if x.is_floating_point() else torch.full(shape, POISON_INT)
        tile = tile.to(x.dtype)
        tile[tuple(slice(0, v) for v in valid)] = x[tuple(slice(o, o + v) for o, v in zip(offset, valid))]
        return _pl(tile)

    # --- scalars -------------------------------------------------------------------------------
    def read(self, t, index):
        value = t[tuple(int(i) for i in index)].item()
        return _Scalar(value) if isinstance(value, int) else value

    def write(self, t, index, value):
        self._incore_only("pl.write")
        torch.Tensor.__setitem__(t, tuple(int(i) for i in index), value)
        return t

    def const(self, value, dtype):
        return int(value) if not dtype.is_floating_point else float(value)

    def min(self, a, b):
        return _index(builtins.min(a, b))

    def max(self, a, b):
        return _index(builtins.max(a, b))

    # --- tiles ---------------------------------------------------------------------------------
    def full(self, shape, dtype, value):
        self._incore_only("pl.full")
        if len(shape) == 2 and int(shape[1]) == 1 and int(shape[0]) > 1:
            # PyPTO lays such a column out row-major; its vector ops then mix it with the col-major
            # columns of row reductions and loads and fail ("tile.reshape: cannot reshape tile ...").
            raise Unsupported(f"pl.full of a {list(shape)} column: start column vectors from a row reduction")
        return _pl(torch.full(list(shape), value, dtype=dtype))

    def arange(self, start, shape, dtype):
        """Values start, start + 1, ... laid along the last axis of a one-row `shape`."""
        self._incore_only("pl.arange")
        if len(shape) != 2 or shape[0] != 1 or shape[1] == 1:  # PyPTO: "tensor.ci requires Cols != 1"
            raise Unsupported(f"pl.arange with shape {list(shape)} (only [1, N], N > 1)")
        return _pl(torch.arange(start, start + shape[1], dtype=torch.int64).to(dtype).reshape(1, -1))

    def cast(self, x, target_type, mode="round"):
        if not isinstance(x, torch.Tensor):  # scalar cast (e.g. to pl.INDEX): only the default mode
            if target_type not in (torch.int64, torch.int32):
                raise Unsupported(f"scalar pl.cast to {_name(target_type)}")
            return _index(int(x)) if target_type == torch.int64 else _Scalar(int(x))
        self._incore_only("pl.cast")
        if mode not in MODES:
            raise Unsupported(f"pl.cast mode {mode!r}")
        if x.dtype == target_type:  # PyPTO rejects it: "same-dtype cast is not a valid operation"
            raise Unsupported(f"pl.cast of a {_name(x.dtype)} tile to {_name(target_type)}")
        if x.dtype == torch.int8 and target_type == torch.float32:  # a2a3: "no native cast path"
            raise Unsupported("pl.cast of an INT8 tile to FP32 (a2a3 converts INT8 through FP16)")
        return _pl(_cast(x, target_type, mode))

    def matmul(self, a, b, out_dtype=None, a_trans=False, b_trans=False):
        self._incore_only("pl.matmul")
        return _pl(_matmul(a, b, out_dtype, a_trans, b_trans))

    def matmul_acc(self, acc, a, b, a_trans=False, b_trans=False):
        self._incore_only("pl.matmul_acc")
        product = _matmul(a, b, acc.dtype, a_trans, b_trans)
        _same(acc, product, "pl.matmul_acc")
        return _pl(acc + product)

    def gather(self, x, dim, index):
        self._incore_only("pl.gather")
        if dim != -1 or index.dim() != 2 or x.dim() != 2 or index.shape[0] != x.shape[0]:
            raise Unsupported(f"pl.gather(dim={dim}) of {list(x.shape)} by index {list(index.shape)}")
        if x.dtype not in (torch.float16, torch.float32, torch.int16, torch.int32):
            raise Unsupported(f"pl.gather of a {_name(x.dtype)} tile (PyPTO gathers FP16, FP32, INT16 or INT32)")
        if index.dtype != torch.int32:
            raise Unsupported(f"pl.gather index of dtype {_name(index.dtype)} (INT32 expected)")
        if int(index.min()) < 0 or int(index.max()) >= x.shape[-1]:
            raise Unsupported("pl.gather index out of range")
        return _pl(torch.gather(x, -1, index.long()))

    def expands(self, target, scalar):
        """Refused: PyPTO parses it, but its a2a3 backend has no code for `tile.expands`."""
        raise Unsupported("pl.expands (no a2a3 codegen for tile.expands): use pl.full or a scalar operand")

    def rsqrt(self, x, high_precision=False):
        """1 / sqrt(x); `high_precision=True` (the tensor-level form) is taken to be correctly rounded:
        computed in fp64 and rounded once, as pypto-lib's goldens model A5's high-precision path."""
        self._incore_only("pl.rsqrt")
        if x.dtype not in (torch.float16, torch.float32):
            raise Unsupported(f"pl.rsqrt of a {_name(x.dtype)} tile (FP16 or FP32)")
        return _pl(torch.rsqrt(x.double()).to(x.dtype) if high_precision else torch.rsqrt(x))

    def concat(self, a, b):
        self._incore_only("pl.concat")
        if a.dtype != b.dtype or a.shape[:-1] != b.shape[:-1]:
            raise Unsupported(f"pl.concat of {list(a.shape)} {_name(a.dtype)} and {list(b.shape)} {_name(b.dtype)}")
        return _pl(torch.cat([a, b], dim=-1))


class _Scalar(int):
    """An integer scalar read from a tensor (INT32). As in PyPTO's parser, arithmetic on it gives an
    INDEX scalar."""


def _index_op(name: str):
    def apply(self, other):
        result = getattr(int, name)(self, other)
        return result if result is NotImplemented else _index(result)
    return apply


for _op in ("add", "sub", "mul", "floordiv", "mod"):
    setattr(_Scalar, f"__{_op}__", _index_op(f"__{_op}__"))
    setattr(_Scalar, f"__r{_op}__", _index_op(f"__r{_op}__"))


class _Index(_Scalar):
    """An INDEX scalar: PyPTO takes INDEX values to be non-negative."""


def _index(value):
    """An INDEX scalar. PyPTO's arithmetic analysis takes every INDEX value to be non-negative (its
    Simplify pass folds a guard like `x >= 0` on one to true), so a negative one is refused."""
    if not isinstance(value, int):
        return value
    if value < 0:
        raise Unsupported(f"INDEX scalar of negative value {value}: PyPTO assumes INDEX values are "
                          "non-negative and folds guards such as `x >= 0` away; compare before subtracting")
    return _Index(value)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _same(a, b, op: str):
    if a.dtype != b.dtype:
        raise Unsupported(f"{op} of {_name(a.dtype)} and {_name(b.dtype)}: no implicit promotion, add pl.cast")
    if tuple(a.shape) != tuple(b.shape):
        raise Unsupported(f"{op} of shapes {list(a.shape)} and {list(b.shape)} (use a row/col expand op)")


def _binary(op: str, fn):
    def apply(self, a, b):
        self._incore_only(f"pl.{op}")
        if isinstance(b, (int, float)):
            if not a.is_floating_point():
                raise Unsupported(f"pl.{op} of an integer tile and a scalar")
            return _pl(fn(a, torch.tensor(b, dtype=a.dtype)))
        _same(a, b, f"pl.{op}")
        return _pl(fn(a, b))
    return apply


def _expand(op: str, fn, axis: int):
    """row_expand_* ([M, N] with [M, 1]) and col_expand_* ([M, N] with [1, N])."""
    def apply(self, x, v):
        self._incore_only(f"pl.{op}")
        want = (x.shape[0], 1) if axis == 0 else (1, x.shape[1])
        if x.dim() != 2 or tuple(v.shape) != want:
            raise Unsupported(f"pl.{op} of {list(x.shape)} with {list(v.shape)} (needs {list(want)})")
        if x.dtype != v.dtype:
            raise Unsupported(f"pl.{op} of {_name(x.dtype)} and {_name(v.dtype)}: add pl.cast")
        return _pl(fn(x, v))
    return apply


def _unary(op: str, fn, floats_only: bool = True):
    def apply(self, x):
        self._incore_only(f"pl.{op}")
        if floats_only and not x.is_floating_point():
            raise Unsupported(f"pl.{op} of a {_name(x.dtype)} tile")
        return _pl(fn(x))
    return apply


def _row(op: str, fn):
    def apply(self, x):
        self._incore_only(f"pl.{op}")
        if x.dim() != 2:
            raise Unsupported(f"pl.{op} of a rank-{x.dim()} tile")
        return _pl(fn(x))
    return apply


for _op, _fn in {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                 "maximum": torch.maximum, "minimum": torch.minimum}.items():
    setattr(PlLanguage, _op, _binary(_op, _fn))
for _op, _fn in {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}.items():
    setattr(PlLanguage, f"row_expand_{_op}", _expand(f"row_expand_{_op}", _fn, 0))
    setattr(PlLanguage, f"col_expand_{_op}", _expand(f"col_expand_{_op}", _fn, 1))
for _op, _fn in {"exp": torch.exp, "neg": torch.neg, "recip": torch.reciprocal, "sqrt": torch.sqrt}.items():
    setattr(PlLanguage, _op, _unary(_op, _fn))
for _op, _fn in {"abs": _unary("abs", torch.abs, floats_only=False),
                 "row_sum": _row("row_sum", lambda x: x.sum(dim=-1, keepdim=True)),
                 "row_max": _row("row_max", lambda x: x.amax(dim=-1, keepdim=True)),
                 "row_min": _row("row_min", lambda x: x.amin(dim=-1, keepdim=True))}.items():
    setattr(PlLanguage, _op, _fn)


def _matmul(a, b, out_dtype, a_trans, b_trans):
    if a.dim() != 2 or b.dim() != 2:
        raise Unsupported("pl.matmul of tiles that are not 2-D")
    if a.dtype != b.dtype:
        raise Unsupported(f"pl.matmul of {_name(a.dtype)} and {_name(b.dtype)}: cast one side")
    a = a.T if a_trans else a
    b = b.T if b_trans else b
    if a.shape[1] != b.shape[0]:
        raise Unsupported(f"pl.matmul of {list(a.shape)} and {list(b.shape)}")
    if a.dtype == torch.int8:
        if out_dtype not in (None, torch.int32):
            raise Unsupported(f"int8 pl.matmul into {_name(out_dtype)}")
        return (a.long() @ b.long()).to(torch.int32)  # exact int32 accumulation
    if a.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise Unsupported(f"pl.matmul of {_name(a.dtype)} tiles")
    if out_dtype not in (None, torch.float32):
        raise Unsupported(f"pl.matmul into {_name(out_dtype)} (the accumulator is FP32)")
    return a.float() @ b.float()  # products exact in fp32 for 16-bit inputs, fp32 accumulation


def _cast(x: torch.Tensor, dtype, mode: str) -> torch.Tensor:
    src = x.dtype
    if src == dtype:  # PyPTO: "same-dtype cast is not a valid operation"
        raise Unsupported(f"pl.cast of a {_name(src)} tile to {_name(dtype)}: remove the cast")
    if not src.is_floating_point:  # integer source
        if dtype.is_floating_point:
            return x.to(dtype)  # exact for the ranges in use; large int32 round to nearest even
        info = torch.iinfo(dtype)
        if int(x.min()) < info.min or int(x.max()) > info.max:
            raise Unsupported(f"pl.cast {_name(src)} -> {_name(dtype)} of out-of-range values")
        return x.to(dtype)
    if not dtype.is_floating_point:  # float -> integer: the mode decides the rounding
        modes: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "rint": torch.round, "round": lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5),
            "floor": torch.floor, "ceil": torch.ceil, "trunc": torch.trunc}
        rounded = modes.get(mode)
        if rounded is None:
            raise Unsupported(f"pl.cast float -> {_name(dtype)} with mode {mode!r}")
        r = rounded(x.double())
        info = torch.iinfo(dtype)
        if int(r.min()) < info.min or int(r.max()) > info.max:
            raise Unsupported(f"pl.cast float -> {_name(dtype)} of out-of-range values")
        return r.to(dtype)
    if torch.finfo(dtype).bits >= torch.finfo(src).bits:  # widening: exact
        return x.to(dtype)
    if mode in ("rint", "none"):
        return x.to(dtype)  # round to nearest even
    if dtype == torch.bfloat16 and src == torch.float32 and mode in ("round", "trunc"):
        bits = x.contiguous().view(torch.int32).long() & 0xFFFFFFFF
        if mode == "round":  # half away from zero on the magnitude bits
            bits = bits + 0x8000
        bits = (bits & 0xFFFF0000).to(torch.int64)
        bits = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
        return bits.view(torch.float32).to(torch.bfloat16)
    raise Unsupported(f"pl.cast {_name(src)} -> {_name(dtype)} with mode {mode!r}")


# --- running an emitted program --------------------------------------------------------------------

def _jit_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
            and any(ast.unparse(d).startswith("pl.jit") for d in fn.decorator_list)]


def _check_kernel_calls(fn: ast.FunctionDef) -> None:
    """The `pl` parser reads a `@pl.jit` body as `pl` code: a call of a plain Python function there
    (`float(...)`, `int(...)`, `len(...)`) is rejected ("Unsupported function call"), so refuse it too."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            raise Unsupported(f"call of `{node.func.id}(...)` in the @pl.jit body of {fn.name} "
                              f"(line {node.lineno}): the pl parser accepts only pl.* calls there")


_BIND = "__pl_bind__"


class _NoteBindings(ast.NodeTransformer):
    """Each `x = v` (or `x, y = v`) of a `@pl.jit` function becomes `x = __pl_bind__(fn, ("x",), v, line,
    in_range)`, `in_range` telling whether it lies in the body of a `pl.range` loop."""

    def __init__(self, function: str):
        self.function, self.ranges = function, 0

    def visit_For(self, node: ast.For) -> ast.For:
        sequential = ast.unparse(node.iter).startswith("pl.range(")
        self.ranges += sequential
        self.generic_visit(node)
        self.ranges -= sequential
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.Assign:
        elements = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets[:1]
        if len(node.targets) != 1 or not all(isinstance(e, ast.Name) for e in elements):
            return node  # a slice store (`y[...] = tile`): PlTensor checks it
        names = tuple(e.id for e in elements)  # type: ignore[attr-defined]
        node.value = ast.Call(ast.Name(_BIND, ast.Load()), [
            ast.Constant(self.function), ast.Tuple([ast.Constant(n) for n in names], ast.Load()), node.value,
            ast.Constant(node.lineno), ast.Constant(bool(self.ranges))], [])
        return node


@dataclasses.dataclass(frozen=True)
class _Binding:
    shape: tuple
    dtype: Any
    line: int

    def describe(self) -> str:
        return f"a {list(self.shape)} {_name(self.dtype)} tile (line {self.line})"


class _LoopCarriedTypes:
    """PyPTO's parser rejects `Cannot reassign 'x' with a different type` when a tile's name changes type
    across a `pl.range` loop. A name first bound in a loop body keeps that type in the whole function;
    a name bound before a loop keeps, in the loop body, the type it has as the loop starts. Any other
    rebinding (straight-line code, after a loop, in another `pl.at` scope) may change it. Each case is
    the real compiler's answer (tests/test_pypto.py); scalars are not modelled."""

    def __init__(self):
        self.current: dict[tuple[str, str], _Binding] = {}  # (function, name) -> its latest binding
        self.locked: dict[tuple[str, str], _Binding] = {}  # -> its first binding, when in a loop body

    def __call__(self, function: str, names: tuple, value, line: int, in_range: bool):
        for name, v in zip(names, value if len(names) > 1 else (value,)):
            if not isinstance(v, torch.Tensor):
                continue
            key, new = (function, name), _Binding(tuple(v.shape), v.dtype, line)
            old, locked = self.current.get(key), self.locked.get(key)
            if old is None and in_range:
                self.locked[key] = locked = new
            self.current[key] = new
            if locked is not None and (locked.shape, locked.dtype) != (new.shape, new.dtype):
                why = f"a pl.range loop first bound it as {locked.describe()}"
            elif in_range and old is not None and (old.shape, old.dtype) != (new.shape, new.dtype):
                why = f"it was {old.describe()} as the pl.range loop started"
            else:
                continue
            raise Unsupported(f"`{name}` in {function} is rebound as {new.describe()}, but {why}: PyPTO rejects "
                              "reassigning a loop-carried name with a different type")
        return value


def load(source: str, filename: str, on_scope=None) -> tuple[dict, PlLanguage]:
    """Execute the program text with `pypto.language` bound to a fresh `PlLanguage`, each `@pl.jit`
    function checked as the `pl` parser checks it: only `pl` calls, and loop-carried names of one type."""
    tree = ast.parse(source, filename)
    for fn in _jit_functions(tree):
        _check_kernel_calls(fn)
        _NoteBindings(fn.name).visit(fn)
    ast.fix_missing_locations(tree)
    pl = PlLanguage(on_scope)
    package = types.ModuleType("pypto")
    vars(package)["language"] = pl

    def importer(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "pypto.language" or name == "pypto":
            return pl if fromlist else package
        return builtins.__import__(name, globals, locals, fromlist, level)

    namespace: dict[str, Any] = {"__name__": "generated_pypto", "__file__": filename, _BIND: _LoopCarriedTypes(),
                                 "__builtins__": {**vars(builtins), "__import__": importer}}
    exec(compile(tree, filename, "exec"), namespace)
    return namespace, pl


def run(source: str, filename: str, kernel: str, inputs: dict, outputs: dict, on_scope=None) -> dict:
    """Call `kernel` with `inputs` then freshly poisoned `outputs` (name -> (shape, torch dtype)).
    `on_scope(name_hint)` is told each time the program enters a `pl.at` scope other than the last.

    Returns every local tensor of the kernel at its return (its buffers and outputs), by name."""
    namespace, pl = load(source, filename, on_scope)
    fn = namespace[kernel]
    args = [_pl(t.clone()) for t in inputs.values()]
    args += [pl.create_tensor(shape, dtype) for shape, dtype in outputs.values()]
    captured: dict = {}

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code is fn.__code__:
            captured.update({k: v for k, v in frame.f_locals.items() if isinstance(v, torch.Tensor)})

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        fn(*args)
    finally:
        sys.setprofile(previous)
    return captured
