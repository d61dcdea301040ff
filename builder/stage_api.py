"""What a stage op module provides, and the typed values the graph step hands to it.

An op (one module in `stages/`) owns its ports, params model, shape/dtype/layout rule, iteration
domain, torch golden, per-backend tile bodies and cost. Nothing here knows a particular op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional

from pydantic import BaseModel, ConfigDict

from . import expr
from .spec import DType, Layout

if TYPE_CHECKING:  # torch only when running goldens
    import torch


class Params(BaseModel):
    """Base of every op's params model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Dim:
    """One extent: the expression as written (`O_GROUPS * T`) and its value for a size set."""

    text: str
    value: int

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: DType
    layout: Optional[Layout] = None

    @property
    def numel_shape(self) -> tuple[int, ...]:
        return tuple(d.value for d in self.shape)

    def describe(self) -> str:
        dims = ", ".join(d.text for d in self.shape)
        nums = ", ".join(str(d.value) for d in self.shape)
        text = f"[{dims}]={'[' + nums + ']'} {self.dtype.value}"
        return text + (f" {self.layout.value}" if self.layout else "")

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d.value
        return n * DTYPE_BYTES[self.dtype]


TORCH_NAMES = {DType.bf16: "bfloat16", DType.fp32: "float32", DType.int32: "int32", DType.int8: "int8"}


def torch_dtype(dtype: DType):
    import torch

    return getattr(torch, TORCH_NAMES[dtype])


DTYPE_BYTES = {DType.bf16: 2, DType.fp32: 4, DType.int32: 4, DType.int8: 1}


class Dims(Mapping[str, int]):
    """The dims of one kernel at one size set; builds `Dim`s from expressions."""

    def __init__(self, values: Mapping[str, int], size_set: str, derived: Mapping[str, Any] = {}):
        self._values, self.size_set = dict(values), size_set
        # `ROPE // 2` is written `HALF_ROPE` when the kernel defines that dim: generated code reads better
        self._names = {expr.normalize(text): name for name, text in derived.items()}

    def __getitem__(self, k: str) -> int:
        return self._values[k]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def dim(self, text: Any) -> Dim:
        value = expr.evaluate(text, self._values)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return Dim(self._names.get(expr.normalize(text), str(text)), value)

    def shape(self, *texts: Any) -> tuple[Dim, ...]:
        return tuple(self.dim(t) for t in texts)

    def value(self, text: Any) -> int | float:
        return expr.evaluate(text, self._values)


class StageError(Exception):
    """A rule violation found by an op's `infer`; `port` names the input it concerns."""

    def __init__(self, rule: str, message: str, port: Optional[str] = None, hint: str = "",
                 param: Optional[str] = None):
        super().__init__(message)
        self.rule, self.port, self.hint, self.param = rule, port, hint, param


def expect(port: str, got: TensorType, *, rank: Optional[int] = None, dtype: Optional[DType] = None,
           dims: Optional[Mapping[int, Dim]] = None, layout: Optional[Layout] = None) -> None:
    """Check one input against what the op needs; the message names both sides."""
    if rank is not None and len(got.shape) != rank:
        raise StageError("shape-mismatch", f"input `{port}` has rank {len(got.shape)} ({got.describe()}), "
                                           f"this op needs rank {rank}", port)
    if dtype is not None and got.dtype != dtype:
        raise StageError("dtype-mismatch", f"input `{port}` is {got.dtype.value}, this op needs {dtype.value}",
                         port, f"insert a cast stage or change the producer's dtype to {dtype.value}")
    for axis, want in (dims or {}).items():
        have = got.shape[axis]
        if have.value != want.value:
            raise StageError("shape-mismatch",
                             f"input `{port}` axis {axis} is {have.text}={have.value}, this op needs "
                             f"{want.text}={want.value}", port)
    if layout is not None and got.layout is not None and got.layout != layout:
        raise StageError("layout-mismatch", f"input `{port}` carries RoPE lanes in `{got.layout.value}` "
                                            f"layout, this stage is declared `{layout.value}`", port,
                         "make the producer and this stage agree on `layout:`")


def check_tile(param: str, tile: int, extent: Dim) -> None:
    """A tile parameter must divide the extent it tiles (every backend uses static, whole tiles)."""
    if extent.value % tile:
        raise StageError("bad-value", f"`{param}` = {tile} does not divide {extent.text} = {extent.value}",
                         hint=f"pick a divisor of {extent.value}", param=param)


@dataclass(frozen=True)
class Axis:
    """One loop of a stage's iteration domain: `for var in range(extent // tile)`."""

    var: str
    extent: Dim
    tile: int = 1
    parallel: bool = False

    @property
    def trips(self) -> int:
        return -(-self.extent.value // self.tile)

    def describe(self) -> str:
        kind = "parallel" if self.parallel else "sequential"
        tile = f" in tiles of {self.tile}" if self.tile != 1 else ""
        return f"{self.var} over {self.extent.text}={self.extent.value}{tile} ({kind})"


class Op:
    """Base class of stage ops. Subclasses set the ClassVars and implement the methods."""

    name: ClassVar[str]
    summary: ClassVar[str]
    inputs: ClassVar[Mapping[str, str]]   # port -> meaning (goes into generated docstrings)
    outputs: ClassVar[Mapping[str, str]]
    Params: ClassVar[type[Params]] = Params
    # input ports whose tiles a fused consumer reads only at its own domain point
    pointwise_inputs: ClassVar[frozenset[str]] = frozenset()

    def infer(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> dict[str, TensorType]:
        raise NotImplementedError

    def domain(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> tuple[Axis, ...]:
        raise NotImplementedError

    # Module-level torch function `golden_<op>(**input tensors, **golden_args) -> {output port: tensor}`.
    # Self-contained (it imports torch itself, reads no globals), so a backend can copy its source
    # next to the generated kernel: that copy and this golden can never drift apart.
    golden_fn: ClassVar[Callable]

    def golden_args(self, p: Any, dims: Dims, types: Mapping[str, TensorType]) -> dict[str, Any]:
        """The golden's non-tensor arguments as Python literals (ints, floats, strings)."""
        return {}

    def golden(self, ins: Mapping[str, "torch.Tensor"], p: Any, dims: Dims,
               types: Mapping[str, TensorType]) -> dict[str, "torch.Tensor"]:
        """Torch reference of this stage; `types` holds the inferred type of every port."""
        return type(self).golden_fn(**ins, **self.golden_args(p, dims, types))

    # which peak rate of a device profile bounds this op's arithmetic
    flops_kind: ClassVar[str] = "bf16"

    def flops(self, ins: Mapping[str, TensorType], outs: Mapping[str, TensorType], p: Any) -> int:
        return 0

    def min_bytes(self, ins: Mapping[str, TensorType], outs: Mapping[str, TensorType], p: Any) -> dict[str, int]:
        """Fewest bytes each port must move: `in:PORT` / `out:PORT` -> bytes. Default: every tensor once.
        Ops that touch only part of an input (a gather) override this; other keys name extra traffic."""
        return {**{f"in:{k}": t.nbytes for k, t in ins.items()}, **{f"out:{k}": t.nbytes for k, t in outs.items()}}

    def key_params(self, p: Any) -> str:
        """Params worth showing on a graph node."""
        return ", ".join(f"{k}={v.value if hasattr(v, 'value') else v}" for k, v in p.model_dump().items()
                         if v is not None)
