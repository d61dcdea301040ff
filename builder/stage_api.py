"""What a stage op module provides, and the typed values the graph step hands to it.

An op (one module in `stages/`) owns its ports, params model, shape/dtype/layout rule, iteration
domain, torch golden, per-backend tile bodies and cost. Nothing here knows a particular op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional

from pydantic import BaseModel, ConfigDict

from . import dtypes, expr
from .spec import DType, Layout
from .targets import FILL_BYTES, FILL_PROGRAMS  # here, not per call: importing cost more than choose_tile

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
        return n * dtypes.info(self.dtype).bytes




class Dims(Mapping[str, int | float]):
    """The dims of one kernel at one size set (a derived dim may be fractional: `H / 3`); builds `Dim`s
    from expressions."""

    def __init__(self, values: Mapping[str, int | float], size_set: str, derived: Mapping[str, Any] = {}):
        self._values, self.size_set = dict(values), size_set
        # `ROPE // 2` is written `HALF_ROPE` when the kernel defines that dim: generated code reads better
        self._names = {expr.normalize(text): name for name, text in derived.items()}

    def __getitem__(self, k: str) -> int | float:
        return self._values[k]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def dim(self, text: Any) -> Dim:
        value = expr.evaluate(text, self._values)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        # a non-integer value is possible here; every extent is checked whole and >= 1 (graph._dim)
        return Dim(self._names.get(expr.normalize(text), str(text)), value)  # type: ignore[arg-type]

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


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Tile:
    """How one extent is cut: `size` elements per piece, the last piece holding `tail` when the size
    does not divide the extent (backends mask it, or run it as a separate, smaller piece).

    Sizes are powers of two (every backend can use them: Triton's `tl.arange` needs one). A tile the
    YAML leaves out is `defaulted`: the op's preferred size, capped at the extent rounded up to a power
    of two, and raised to the op's minimum (a `tl.dot` operand needs 16)."""

    param: str
    size: int
    extent: Dim
    defaulted: bool
    counts_pieces: bool = False  # the param gives the number of pieces (a split), not their size

    @property
    def pieces(self) -> int:
        return -(-self.extent.value // self.size)

    @property
    def tail(self) -> int:
        return self.extent.value % self.size

    @property
    def value(self) -> int:
        """What the param means: the size, or for a split the number of pieces."""
        return self.pieces if self.counts_pieces else self.size

    def describe(self) -> str:
        return f"{self.param}={self.value}" + (" (default)" if self.defaulted else "")


def choose_tile(param: str, explicit: Optional[int], extent: Dim, preferred: int, minimum: int = 1,
                fill: Optional[tuple[int, int]] = None) -> Tile:
    """The tile for `extent`: `explicit` when it fits, else a StageError (bad-value) listing the sizes
    that fit; the default when `explicit` is None. `fill`: (programs along the other axes, bytes the
    stage moves) — a stage moving FILL_BYTES or more gets a default small enough (down to `minimum`)
    for its grid to fill the largest GPU (builder/targets.py)."""
    top = max(next_pow2(extent.value), minimum)
    fits = [1 << i for i in range(min(32, top.bit_length())) if minimum <= 1 << i]  # 1 << i <= top
    if explicit is None:
        size = max(f for f in fits if f <= max(preferred, minimum))
        if fill is not None and fill[1] >= FILL_BYTES:
            while size > fits[0] and fill[0] * -(-extent.value // size) < FILL_PROGRAMS:
                size //= 2
        return Tile(param, size, extent, True)
    if explicit not in fits:
        why = "a power of two" if explicit & (explicit - 1) else f"between {fits[0]} and {fits[-1]}"
        raise StageError("bad-value", f"`{param}` = {explicit} cannot tile {extent.text} = {extent.value}: it must "
                                      f"be {why}",
                         hint=f"values that fit: {', '.join(map(str, fits))}; or leave `{param}` out to get "
                              f"{choose_tile(param, None, extent, preferred, minimum).size}",
                         param=param)
    return Tile(param, explicit, extent, False)


def choose_split(param: str, explicit: Optional[int], extent: Dim, step: int, programs: int, moved: int) -> Tile:
    """How to cut a reduction over `extent` (in steps of `step`) across programs: `explicit` pieces, or
    by default one piece unless the stage moves FILL_BYTES or more and its `programs` cannot fill the
    largest GPU, then the fewest pieces (a power of two) that can. The Tile's size is the elements one
    piece covers (a multiple of `step`); its `pieces` may come out below the count asked for."""
    steps = -(-extent.value // step)
    if explicit is not None and not 1 <= explicit <= steps:
        raise StageError("bad-value", f"`{param}` = {explicit} cannot split {extent.text} = {extent.value} in steps "
                                      f"of {step}: at most {steps} pieces", param=param,
                         hint=f"use 1 to {steps}, or leave `{param}` out")
    pieces = explicit or 1
    if explicit is None and moved >= FILL_BYTES:
        while programs * pieces < FILL_PROGRAMS and pieces * 2 <= steps:
            pieces *= 2
    return Tile(param, -(-steps // pieces) * step, extent, explicit is None, counts_pieces=True)


@dataclass(frozen=True)
class Axis:
    """One loop of a stage's iteration domain: `for var in range(ceil(extent / tile))`."""

    var: str
    extent: Dim
    tile: int = 1
    parallel: bool = False
    source: Optional[Tile] = field(default=None, compare=False)  # the tile param that cuts it (not part of
                                                                 # the iteration space: fusion compares those)

    @staticmethod
    def tiled(var: str, tile: Tile, parallel: bool = True) -> "Axis":
        return Axis(var, tile.extent, tile.size, parallel, tile)

    @property
    def trips(self) -> int:
        return -(-self.extent.value // self.tile)

    @property
    def tail(self) -> int:
        """Elements of the last, partial tile (0 when the tile divides the extent)."""
        return self.extent.value % self.tile

    def describe(self) -> str:
        kind = "parallel" if self.parallel else "sequential"
        tile = f" in tiles of {self.tile}" if self.tile != 1 else ""
        if self.tail:
            tile += f" (last tile {self.tail})"
        return f"{self.var} over {self.extent.text}={self.extent.value}{tile} ({kind})"


@dataclass(frozen=True)
class Phase:
    """One loop block of a stage that runs as several: a reduction split across programs (so that a
    small grid fills a GPU), then a phase that combines the pieces. Phases hand each other op-private
    tensors (`Op.private`); `reads`/`writes` name the stage's own ports each phase touches."""

    name: str
    domain: tuple[Axis, ...]
    reads: tuple[str, ...] = ()           # input ports
    writes: tuple[str, ...] = ()          # output ports
    private_reads: tuple[str, ...] = ()
    private_writes: tuple[str, ...] = ()


class Op:
    """Base class of stage ops. Subclasses set the ClassVars and implement the methods.

    `infer`, `tiles`, `private`, `domain` and `phases` are functions of their arguments alone (no state,
    no other input): the graph and schedule steps call them once per (op, params, input types) and give
    every alike stage the same answer."""

    name: ClassVar[str]
    summary: ClassVar[str]
    inputs: ClassVar[Mapping[str, str]]   # port -> meaning (goes into generated docstrings)
    outputs: ClassVar[Mapping[str, str]]
    Params: ClassVar[type[Params]] = Params
    # input ports whose tiles a fused consumer reads only at its own domain point
    pointwise_inputs: ClassVar[frozenset[str]] = frozenset()
    # input ports a stage may leave unwired: its golden then gets no such argument and its tile bodies
    # see no such port in `stage.inputs`
    optional_inputs: ClassVar[frozenset[str]] = frozenset()

    def ports(self, p: Any) -> Mapping[str, str]:
        """The input ports (port -> meaning) of a stage with params `p`: `inputs`, unless the op's params
        name its ports. Raises StageError (naming the param) when the params cannot give any."""
        return self.inputs

    def infer(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> dict[str, TensorType]:
        raise NotImplementedError

    def phases(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> tuple[Phase, ...]:
        """The loop blocks the stage runs as, in order; () means one block over `domain`. A body then
        sees the phase it emits as `c.phase`."""
        return ()

    def private(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> dict[str, TensorType]:
        """Tensors the stage's phases hand each other (by name; `phases` says who writes and reads)."""
        return {}

    def tiles(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> dict[str, Tile]:
        """The tile sizes the stage uses, by param (explicit, or defaulted to fit the extents); raises
        StageError (bad-value, naming the param) for an explicit size that cannot work."""
        return {}

    def domain(self, ins: Mapping[str, TensorType], p: Any, dims: Dims) -> tuple[Axis, ...]:
        raise NotImplementedError

    # Module-level torch function `golden_<op>(**input tensors, **golden_args) -> {output port: tensor}`.
    # Self-contained (it imports torch itself, reads no globals), so a backend can copy its source
    # next to the generated kernel: that copy and this golden can never drift apart.
    golden_fn: ClassVar[Callable]

    def golden_args(self, p: Any, dims: Dims, types: Mapping[str, TensorType]) -> dict[str, Any]:
        """The golden's non-tensor arguments as Python literals (ints, floats, strings)."""
        return {}

    def golden_function(self, p: Any, types: Mapping[str, TensorType]) -> Callable:
        """The golden a stage with params `p` and port types `types` runs (and a PyPTO file copies):
        `golden_fn`, unless the op keeps a second golden for a variant whose math differs (each
        self-contained, like `golden_fn`)."""
        return type(self).golden_fn

    def golden(self, ins: Mapping[str, "torch.Tensor"], p: Any, dims: Dims,
               types: Mapping[str, TensorType]) -> dict[str, "torch.Tensor"]:
        """Torch reference of this stage; `types` holds the inferred type of every port."""
        return self.golden_function(p, types)(**ins, **self.golden_args(p, dims, types))

    def check_values(self, ins: Mapping[str, Any], types: Mapping[str, TensorType], p: Any,
                     dims: Dims) -> list[tuple[str, str]]:
        """(port, problem) for caller-supplied input values the tile code cannot take, such as page ids
        outside their pool (it would read outside a tensor). `ins` holds the ports fed by kernel
        inputs only; vectorised torch, run before the kernel."""
        return []

    # which peak rate of a device profile bounds this op's arithmetic
    flops_kind: ClassVar[str] = "bf16"

    def flops(self, ins: Mapping[str, TensorType], outs: Mapping[str, TensorType], p: Any) -> int:
        return 0

    def min_bytes(self, ins: Mapping[str, TensorType], outs: Mapping[str, TensorType], p: Any) -> dict[str, int]:
        """Fewest bytes each port must move: `in:PORT` / `out:PORT` -> bytes. Default: every tensor once.
        Ops that touch only part of an input (a gather) override this; other keys name extra traffic."""
        return {**{f"in:{k}": t.nbytes for k, t in ins.items()}, **{f"out:{k}": t.nbytes for k, t in outs.items()}}

    def key_params(self, p: Any, tiles: Mapping[str, Tile] = {}) -> str:
        """Params worth showing on a graph node; tiles as chosen, defaults marked."""
        shown = {k: f"{k}={v.value if hasattr(v, 'value') else v}" for k, v in p.model_dump().items()
                 if v is not None}
        shown.update({k: t.describe() for k, t in tiles.items()})
        return ", ".join(shown.values())

    # --- tile bodies: one per backend (builder/emit/<backend>.py hands them a context) --------------
    def triton(self, c: Any) -> list[str]:
        """Lines of the stage's Triton tile body (see builder.emit.triton.TritonCtx). A body reads only the
        context: `c.stage` (a StageView), `c.p`, `c.dims`, `c.phase` and its methods, which give every
        name; its code is shared by every alike block (builder/emit/template.py)."""
        raise NotImplementedError

    def pypto(self, c: Any) -> list[str]:
        """Lines of the stage's `pl` tile body (see builder.emit.pypto.PyptoCtx)."""
        raise NotImplementedError
