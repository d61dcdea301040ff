"""elementwise: inputs combined lane by lane by a small expression, with explicit broadcasting.

`expr` is written over the stage's input ports (its free names are the ports: `in:` wires exactly
those), numbers, `+ - * /`, unary `-`, and the functions below. Every input is widened to fp32, the
expression is evaluated in fp32 (each operation rounded to fp32, in the order written), and the
result is rounded once to `out_dtype` (round to nearest even). Functions, exactly:

    min(a, b), max(a, b)   torch.minimum / torch.maximum
    clamp(x, lo, hi)       min(max(x, lo), hi)
    exp(a), sqrt(a), abs(a)
    rsqrt(a)               1 / sqrt(a)
    sigmoid(a)             1 / (exp(-a) + 1)          (pypto-lib expert_shared's form)
    silu(a)                a * (1 / (exp(-a) + 1))    (torch's F.silu divides: within an ulp or two)

Constant subexpressions (`1 / 3`, `-10`) are folded in double precision when the text is read; the
folded number is rounded to fp32 where it meets a tensor. Example, clamped SwiGLU:
`silu(min(gate, 10)) * clamp(up, -10, 10)`.

Broadcasting is explicit: every input is read with the same rank as the output. `views: {e: [T, 1, D]}`
reads input `e` ([T, D]) with that shape; a view may only add or drop extents of 1 and keeps the last
(lane) extent unless it is 1. Per axis, the extents are equal or 1, and the output takes the other
one: `out[t, hc, :] = e[t, 0, :] + h[t, hc, :]` is `expr: e + h, views: {e: [T, 1, D]}`. Outputs have
rank 1 to 3. The text is data: it is parsed with `ast` against a whitelist and translated to torch
(the golden interprets the parsed program), Triton and `pl` code; it is never evaluated or pasted.

Backends: Triton evaluates in fp32 with correctly rounded division and square root (`tl.div_rn`,
`tl.sqrt_rn`) and `tl.exp`; PyPTO maps each function onto `pl` ops (`pl.minimum(x, 10.0)`, sigmoid as
`pl.recip(pl.add(pl.exp(pl.neg(x)), 1.0))`, rsqrt as `pl.rsqrt(x, high_precision=True)`), and reads a
broadcast input once, expanding it to the tile by multiplying a tile of ones (exact).
"""
from __future__ import annotations

import ast
import math
from functools import lru_cache
from typing import Annotated, Optional

from pydantic import Field

from builder import dtypes, expr
from builder.emit.naming import literal
from builder.names import name_problem
from builder.spec import DimExpr, DType, Int
from builder.stage_api import Axis, Dim, Op, Params, StageError, TensorType, choose_tile

MAX_TEXT = 400    # characters of an expression
MAX_NODES = 64    # its syntax-tree nodes
FUNCTIONS = {"min": 2, "max": 2, "clamp": 3, "exp": 1, "sqrt": 1, "rsqrt": 1, "abs": 1, "sigmoid": 1, "silu": 1}
BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}
# fp32 operations per output element, by program node
FLOPS = {"add": 1, "sub": 1, "mul": 1, "div": 1, "neg": 1, "min": 1, "max": 1, "clamp": 2, "exp": 1, "sqrt": 1,
         "rsqrt": 2, "abs": 1, "sigmoid": 4, "silu": 5}
GOLDEN_KEYWORDS = frozenset({"program", "shape", "out_dtype"})  # the golden's own arguments: not ports
DEFAULT_ROWS, DEFAULT_COLUMNS = 8, 512

Node = tuple  # ("in", port) | ("const", value) | (op, *operands)


def golden_elementwise(*, program, shape, out_dtype, **tensors):
    """Interpret the parsed expression (`["in", port, view shape]`, `["const", number]` or
    `[op, *operands]`) in fp32 over the viewed inputs, broadcasting, then round once to `out_dtype`."""
    import torch

    def value(node):
        kind = node[0]
        if kind == "in":
            return tensors[node[1]].float().reshape(node[2])
        if kind == "const":
            return torch.tensor(node[1], dtype=torch.float32)
        a = [value(n) for n in node[1:]]
        if kind == "add":
            return a[0] + a[1]
        if kind == "sub":
            return a[0] - a[1]
        if kind == "mul":
            return a[0] * a[1]
        if kind == "div":
            return a[0] / a[1]
        if kind == "neg":
            return -a[0]
        if kind == "min":
            return torch.minimum(a[0], a[1])
        if kind == "max":
            return torch.maximum(a[0], a[1])
        if kind == "clamp":
            return torch.minimum(torch.maximum(a[0], a[1]), a[2])
        if kind == "exp":
            return torch.exp(a[0])
        if kind == "sqrt":
            return torch.sqrt(a[0])
        if kind == "rsqrt":
            return 1 / torch.sqrt(a[0])
        if kind == "abs":
            return torch.abs(a[0])
        if kind == "sigmoid":
            return 1 / (torch.exp(-a[0]) + 1)
        if kind == "silu":
            return a[0] * (1 / (torch.exp(-a[0]) + 1))
        raise ValueError(f"unknown elementwise node {kind!r}")

    out = torch.empty(shape, dtype=getattr(torch, out_dtype))
    out.copy_(value(program))
    return {"y": out}


# --- reading the expression ------------------------------------------------------------------------

def _fold(kind: str, args: list[float]) -> float:
    """A constant subexpression, in double precision (the same definitions as the golden)."""
    a = args
    ops = {"add": lambda: a[0] + a[1], "sub": lambda: a[0] - a[1], "mul": lambda: a[0] * a[1],
           "div": lambda: a[0] / a[1], "neg": lambda: -a[0], "min": lambda: min(a[0], a[1]),
           "max": lambda: max(a[0], a[1]), "clamp": lambda: min(max(a[0], a[1]), a[2]),
           "exp": lambda: math.exp(a[0]), "sqrt": lambda: math.sqrt(a[0]), "rsqrt": lambda: 1 / math.sqrt(a[0]),
           "abs": lambda: abs(a[0]), "sigmoid": lambda: 1 / (math.exp(-a[0]) + 1),
           "silu": lambda: a[0] * (1 / (math.exp(-a[0]) + 1))}
    return ops[kind]()


@lru_cache(maxsize=1024)
def parse(text: str) -> tuple[Node, tuple[str, ...]]:
    """(program, ports in order of first use) of an expression; StageError (param `expr`) when the text
    is not one (`bad-expr`) or too large (`expr-too-complex`)."""

    def fail(kind: str, message: str, hint: str = "") -> StageError:
        return StageError(kind, message, param="expr", hint=hint or (
            "write + - * / and unary - over input ports and numbers, and " + ", ".join(f"{f}()" for f in FUNCTIONS)))

    if not isinstance(text, str) or not text.strip():
        raise fail("bad-expr", "`expr` is empty")
    if len(text) > MAX_TEXT:
        raise fail("expr-too-complex", f"`expr` is longer than {MAX_TEXT} characters", "split it into stages")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        raise fail("bad-expr", f"`{text}` is not an expression") from None
    except (RecursionError, MemoryError):
        raise fail("expr-too-complex", "`expr` nests too deeply", "split it into stages") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise fail("expr-too-complex", f"`expr` has more than {MAX_NODES} terms and operators", "split it into stages")
    ports: list[str] = []

    def node(n: ast.expr) -> Node:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
            if not math.isfinite(n.value) or abs(n.value) > 2.0 ** 64:
                raise fail("bad-expr", f"`{ast.unparse(n)}` in `{text}` is not a finite number of fp32 range")
            return ("const", float(n.value))
        if isinstance(n, ast.Name):
            problem = name_problem(n.id)
            if problem or n.id in FUNCTIONS or n.id in GOLDEN_KEYWORDS:
                raise fail("bad-expr", f"`{n.id}` in `{text}` cannot name an input port: "
                                       f"{problem or 'it is reserved by this op'}")
            if n.id not in ports:
                ports.append(n.id)
            return ("in", n.id)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            inner = node(n.operand)
            return inner if isinstance(n.op, ast.UAdd) else _make("neg", [inner])
        if isinstance(n, ast.BinOp) and type(n.op) in BINARY:
            return _make(BINARY[type(n.op)], [node(n.left), node(n.right)])
        if isinstance(n, ast.Call):
            name = n.func.id if isinstance(n.func, ast.Name) else ast.unparse(n.func)
            if name not in FUNCTIONS:
                raise fail("bad-expr", f"`{text}` calls `{name}`, which is not one of the functions")
            if n.keywords or any(isinstance(a, ast.Starred) for a in n.args) or len(n.args) != FUNCTIONS[name]:
                raise fail("bad-expr", f"`{ast.unparse(n)}`: {name}() takes {FUNCTIONS[name]} plain argument(s)")
            return _make(name, [node(a) for a in n.args])
        if isinstance(n, (ast.BinOp, ast.UnaryOp)):
            symbol = {ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.Not: "not",
                      ast.Invert: "~"}.get(type(n.op), type(n.op).__name__)
            raise fail("bad-expr", f"`{text}` uses the operator `{symbol}`")
        raise fail("bad-expr", f"`{text}` uses `{ast.unparse(n)}`")

    def _make(kind: str, args: list[Node]) -> Node:
        if all(a[0] == "const" for a in args):
            try:
                value = _fold(kind, [a[1] for a in args])
            except (ZeroDivisionError, ValueError, OverflowError):
                raise fail("bad-expr", f"`{text}`: a constant part has no finite value") from None
            if not math.isfinite(value):
                raise fail("bad-expr", f"`{text}`: a constant part has no finite value")
            return ("const", value)
        return (kind, *args)

    program = node(tree)
    if not ports:
        raise fail("bad-expr", f"`{text}` reads no input port")
    return program, tuple(ports)


def _walk(n: Node):
    yield n
    if n[0] not in ("in", "const"):
        for a in n[1:]:
            yield from _walk(a)


# --- the op ----------------------------------------------------------------------------------------

class ElementwiseParams(Params):
    expr: str = Field(description="the expression over the input ports (see the module docstring)")
    views: dict[str, Annotated[list[DimExpr], Field(min_length=1, max_length=3)]] = Field(
        default_factory=dict, description="port -> the shape it is read as (extents of 1 added or dropped), for "
                                          "broadcasting")
    out_dtype: DType = DType.fp32
    block_m: Optional[Int] = Field(None, ge=1, description="rows (second-to-last axis) per program (default: up to 8)")
    block_n: Optional[Int] = Field(None, ge=1, description="lanes per program (default: up to 512)")


class Elementwise(Op):
    name = "elementwise"
    summary = "lane-wise expression over inputs (fp32), explicit broadcasting, one final cast"
    inputs = {"<port>": "one per name in `expr`, read with its view's shape"}
    outputs = {"y": "the broadcast shape of the (viewed) inputs"}
    Params = ElementwiseParams
    golden_fn = golden_elementwise
    flops_kind = "fp32"

    def key_params(self, p, tiles=None):
        """As every op's, leaving out an empty `views`."""
        return super().key_params(p if p.views else p.model_copy(update={"views": None}), tiles or {})

    def ports(self, p):
        _, ports = parse(p.expr)
        for port in p.views:
            if port not in ports:
                raise StageError("bad-value", f"`views` names `{port}`, which `expr` does not read", param="views",
                                 hint=f"ports of `{p.expr}`: {', '.join(ports)}")
        return {port: "an operand of `expr`" for port in ports}

    def viewed(self, ins, p, dims) -> dict[str, tuple[Dim, ...]]:
        """Each input's shape as read (its view, checked against its declared shape)."""
        shapes = {}
        for port, t in ins.items():
            if port not in p.views:
                shapes[port] = t.shape
                continue
            try:
                view = tuple(dims.dim(d) for d in p.views[port])
            except expr.ExprError as e:
                raise StageError(e.kind, f"`views.{port}`: {e}", param="views") from None
            ones = lambda shape: [d.value for d in shape if d.value != 1]
            keeps_lanes = view and (view[-1].value == 1 or view[-1].value == t.shape[-1].value)
            if ones(view) != ones(t.shape) or not keeps_lanes:
                shown = ", ".join(d.text for d in view)
                raise StageError("bad-value", f"`views.{port}` = [{shown}] is not input `{port}` "
                                              f"({t.describe()}) with extents of 1 added or dropped, keeping its "
                                              "last extent", param="views",
                                 hint="a view only inserts or removes axes of extent 1, such as [T, 1, D] for [T, D]")
            shapes[port] = view
        return shapes

    def infer(self, ins, p, dims):
        shapes = self.viewed(ins, p, dims)
        ranks = {port: len(s) for port, s in shapes.items()}
        rank = max(ranks.values())
        for port, r in ranks.items():
            if r != rank:
                longest = next(q for q, s in ranks.items() if s == rank)
                raise StageError("shape-mismatch", f"input `{port}` is read with rank {r} and `{longest}` with rank "
                                                   f"{rank}: broadcasting needs them equal", port,
                                 f"give `{port}` a view of rank {rank} under `views:`, with 1 where it broadcasts")
        if not 1 <= rank <= 3:
            raise StageError("shape-mismatch", f"the inputs have rank {rank}; elementwise writes ranks 1 to 3",
                             next(iter(ins)))
        out = []
        for axis in range(rank):
            extents = [(port, s[axis]) for port, s in shapes.items()]
            wide = [(port, d) for port, d in extents if d.value != 1]
            for port, d in wide:
                if d.value != wide[0][1].value:
                    raise StageError("shape-mismatch", f"axis {axis}: input `{port}` has {d.text} = {d.value}, "
                                                       f"`{wide[0][0]}` has {wide[0][1].text} = {wide[0][1].value}; "
                                                       "extents must be equal or 1", port)
            out.append(wide[0][1] if wide else extents[0][1])
        layouts = {ins[port].layout for port, s in shapes.items() if s[-1].value != 1 and ins[port].layout}
        if len(layouts) > 1:
            raise StageError("layout-mismatch", "the inputs carry RoPE lanes in different layouts: "
                                                + ", ".join(sorted(l.value for l in layouts)), next(iter(ins)))
        if p.out_dtype not in (DType.bf16, DType.fp32):
            raise StageError("bad-value", f"`out_dtype` = {p.out_dtype.value}: elementwise writes bf16 or fp32",
                             param="out_dtype")
        if rank == 1 and p.block_m is not None:
            raise StageError("bad-value", "`block_m` tiles the second-to-last axis; this output has rank 1",
                             param="block_m", hint="drop `block_m`")
        return {"y": TensorType(tuple(out), p.out_dtype, layouts.pop() if layouts else None)}

    def tiles(self, ins, p, dims):
        out = self.infer(ins, p, dims)["y"].shape
        tiles = {"block_n": choose_tile("block_n", p.block_n, out[-1], DEFAULT_COLUMNS)}
        if len(out) > 1:
            tiles["block_m"] = choose_tile("block_m", p.block_m, out[-2], DEFAULT_ROWS)
        return tiles

    def domain(self, ins, p, dims):
        out = self.infer(ins, p, dims)["y"].shape
        tiles = self.tiles(ins, p, dims)
        axes = [Axis("a", out[0], parallel=True)] if len(out) == 3 else []
        if len(out) > 1:
            axes.append(Axis.tiled("rb", tiles["block_m"]))
        return tuple(axes + [Axis.tiled("cb", tiles["block_n"])])

    def golden_args(self, p, dims, types):
        program, _ = parse(p.expr)
        views = {port: [d.value for d in types[port].shape] for port in _ports(program)}
        for port, shape in p.views.items():
            views[port] = [int(dims.value(d)) for d in shape]

        def lists(n: Node):
            if n[0] == "in":
                return ["in", n[1], views[n[1]]]
            if n[0] == "const":
                return list(n)
            return [n[0]] + [lists(a) for a in n[1:]]

        return {"program": lists(program), "shape": [d.value for d in types["y"].shape],
                "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        program, _ = parse(p.expr)
        n = 1
        for v in outs["y"].numel_shape:
            n *= v
        return n * sum(FLOPS.get(node[0], 0) for node in _walk(program))

    # --- tile bodies ----------------------------------------------------------------------------------
    def _layout(self, c) -> dict[str, tuple[bool, ...]]:
        """Per port, whether it runs along the output's (batch, row, lane) axes (False: broadcast)."""
        rank = len(c.type("y").shape)
        flags: dict[str, tuple[bool, ...]] = {}
        for port in c.stage.inputs:
            view = [d.value for d in self.viewed({port: c.type(port)}, c.p, c.dims)[port]]
            wide = [v != 1 for v in view]
            flags[port] = tuple([False] * (3 - rank) + wide)
        return flags

    def triton(self, c):
        program, ports = parse(c.p.expr)
        rank = len(c.type("y").shape)
        n_dim = c.dim("y", -1)
        m_dim = c.dim("y", -2) if rank > 1 else "1"
        lines = (c.lanes("r", "rb") if rank > 1 else []) + c.lanes("n", "cb")
        r_ok, n_ok = (c.mask("r") if rank > 1 else None), c.mask("n")
        local = {}
        for i, (port, (va, vm, vn)) in enumerate(self._layout(c).items()):
            terms, masks = [], []
            if va:
                stride = _product([m_dim if vm else "", n_dim if vn else ""])
                terms.append("a" if stride == "1" else f"a * {stride}")
            if vm:
                terms.append(f"r[:, None] * {n_dim}" if vn else ("r[:, None]" if rank > 1 else "r"))
                masks += [f"{r_ok}[:, None]"] if r_ok else []
            if vn:
                terms.append("n[None, :]" if rank > 1 else "n")
                masks += [(f"{n_ok}[None, :]" if rank > 1 else n_ok)] if n_ok else []
            address = " + ".join([c.src(port)] + terms)
            mask = " & ".join(masks)
            local[port] = f"x{i}"
            lines.append(f"x{i} = tl.load({address}" + (f", mask={mask}, other=0.0)" if mask else ")")
                         + ".to(tl.float32)")
        result = _ssa(program, local, _TRITON, lines)
        out_terms = ([f"a * {m_dim} * {n_dim}"] if rank == 3 else []) + (
            [f"r[:, None] * {n_dim}", "n[None, :]"] if rank > 1 else ["n"])
        out_mask = " & ".join(([f"{r_ok}[:, None]"] if r_ok else []) + (
            [f"{n_ok}[None, :]" if rank > 1 else n_ok] if n_ok else []))
        lines.append(f"tl.store({' + '.join([c.dst('y')] + out_terms)}, {c.cast_for('y', result)}"
                     + (f", mask={out_mask})" if out_mask else ")"))
        return lines

    def pypto(self, c):
        program, ports = parse(c.p.expr)
        out = c.type("y").shape
        rank = len(out)
        m_dim = c.dim("y", -2) if rank > 1 else "1"
        bn, bn_size = c.tile("cb"), _size(c, "cb")
        bm, bm_size = (c.tile("rb"), _size(c, "rb")) if rank > 1 else ("1", 1)
        n0 = c.let("n0", f"cb * {c.stride('cb')}", "first lane of this tile")
        r0 = c.let("r0", f"rb * {c.stride('rb')}", "first row of this tile") if rank > 1 else "0"
        lines: list[str] = []
        local = {}

        rows: dict[str, str] = {}

        def first_row(code: str) -> str:
            """`code` itself when it is a name or 0, else a local holding it (one per distinct sum)."""
            if code.isidentifier() or code == "0":
                return code
            if code not in rows:
                rows[code] = c.let(f"row{len(rows)}", code, "first view row of this tile")
            return rows[code]

        for port, (va, vm, vn) in self._layout(c).items():
            t, view = c.type(port), c.src(port)
            lane_extent = t.shape[-1].value
            row = first_row(_sum([f"a * {m_dim}" if va and vm else ("a" if va else ""), r0 if vm else ""]))
            if vn:  # the input's 2-D view holds lanes as ours: rows are (batch, row) as far as it runs along them
                tile, shape = f"{view}[{_span(row, bm if vm else '1')}, {_span(n0, bn)}]", (vm or bm_size == 1, True)
            elif lane_extent == 1:  # one element per view row: a column
                tile = f"{view}[{_span(row, bm if vm else '1')}, 0:1]"
                shape = (vm or bm_size == 1, bn_size == 1)
            elif vm:  # the view's lanes are our rows: a row, turned into a column
                tile = f"{view}[{_span('a' if va else '0', '1')}, {_span(r0, bm)}]"
                tile = tile if bm_size == 1 else f"pl.reshape({tile}, [{bm}, 1])"
                shape = (True, bn_size == 1)
            else:  # one element: the view's lanes are the batch axis
                tile = f"{view}[0:1, {_span('a', '1')}]"
                shape = (bm_size == 1, bn_size == 1)
            name = c.local(f"in_{len(local)}")
            lines.append(f"{name} = {c.fp32(port, tile)}")
            lines += _expand(name, shape, bm, bm_size, bn, bn_size)
            local[port] = name
        result = _ssa(program, local, _Pl(c), lines)
        row = first_row(_sum([f"a * {m_dim}" if rank == 3 else "", r0 if rank > 1 else ""]))
        lines.append(f"{c.dst('y')}[{_span(row, bm)}, {_span(n0, bn)}] = {c.cast(result, 'y')}")
        return lines


def _ports(program: Node) -> list[str]:
    return list(dict.fromkeys(n[1] for n in _walk(program) if n[0] == "in"))


def _product(parts: list[str]) -> str:
    return " * ".join(p for p in parts if p) or "1"


def _sum(parts: list[str]) -> str:
    return " + ".join(p for p in parts if p) or "0"


def _span(start: str, size: str) -> str:
    """The slice `start : start + size`, written plainly from 0."""
    return f"0:{size}" if start == "0" else f"{start} : {start} + {size}"


def _size(c, var: str) -> int:
    """The static size of this nest's tile of `var` (the partial last tile runs as its own nest)."""
    axis = c.axis(var)
    return axis.tail if c.tile(var) != c.stride(var) else axis.tile


def _expand(name: str, shape: tuple[bool, bool], bm: str, bm_size: int, bn: str, bn_size: int) -> list[str]:
    """Lines widening tile `name` ((rows full, lanes full)) to [bm, bn] by multiplying ones (exact)."""
    rows, lanes = shape
    lines = []
    if not lanes:  # [r, 1] -> [r, bn]
        r = bm if rows else "1"
        lines.append(f"{name} = pl.row_expand_mul(pl.full([{r}, {bn}], dtype=pl.FP32, value=1.0), {name})")
    if not rows:  # [1, bn] -> [bm, bn]
        if bn_size == 1:  # no [bm, 1] tile of ones (a column must come from a row reduction): reshape a row
            lines.append(f"{name} = pl.reshape(pl.row_expand_mul(pl.full([1, {bm}], dtype=pl.FP32, value=1.0), "
                         f"{name}), [{bm}, 1])")
        else:
            lines.append(f"{name} = pl.col_expand_mul(pl.full([{bm}, {bn}], dtype=pl.FP32, value=1.0), {name})")
    return lines


# --- code of a program, one value per line ---------------------------------------------------------

class _TRITON:
    """Triton code of each program node over fp32 tiles (constants as literals)."""

    @staticmethod
    def local(i: int) -> str:
        return f"v{i}"

    @staticmethod
    def code(kind: str, a: list[str], const: list[bool]) -> str:
        if kind in ("add", "sub", "mul"):
            return f"{a[0]} {dict(add='+', sub='-', mul='*')[kind]} {a[1]}"
        if kind == "div":
            return f"tl.div_rn({a[0]}, {a[1]})"
        if kind == "neg":
            return f"-{a[0]}"
        if kind in ("min", "max"):
            x, y = (a[1], a[0]) if const[0] else (a[0], a[1])
            return f"tl.{kind}imum({x}, {y})"
        if kind == "clamp":
            return f"tl.minimum(tl.maximum({a[0]}, {a[1]}), {a[2]})"
        if kind == "exp":
            return f"tl.exp({a[0]})"
        if kind == "sqrt":
            return f"tl.sqrt_rn({a[0]})"
        if kind == "rsqrt":
            return f"tl.div_rn(1.0, tl.sqrt_rn({a[0]}))"
        if kind == "abs":
            return f"tl.abs({a[0]})"
        if kind == "sigmoid":
            return f"tl.div_rn(1.0, tl.exp(-{a[0]}) + 1.0)"
        if kind == "silu":
            return f"{a[0]} * tl.div_rn(1.0, tl.exp(-{a[0]}) + 1.0)"
        raise ValueError(kind)


class _Pl:
    """`pl` code of each program node: tiles first, a number only as the scalar (right) operand."""

    def __init__(self, c):
        self.c = c

    def local(self, i: int) -> str:
        return self.c.local(f"v{i}")

    @staticmethod
    def code(kind: str, a: list[str], const: list[bool]) -> str:
        if kind == "clamp":  # max, then min: each a binary op below
            return _Pl.code("min", [_Pl.code("max", a[:2], const[:2]), a[2]], [False, const[2]])
        if kind in ("add", "mul", "min", "max"):
            op = {"min": "minimum", "max": "maximum"}.get(kind, kind)
            x, y = (a[1], a[0]) if const[0] else (a[0], a[1])  # commutative: the number goes right
            return f"pl.{op}({x}, {y})"
        if kind == "sub":
            return f"pl.add(pl.neg({a[1]}), {a[0]})" if const[0] else f"pl.sub({a[0]}, {a[1]})"
        if kind == "div":
            if const[0]:  # a number over a tile: c * (1 / x) (pl.expands, the tile of c, has no a2a3 codegen)
                return f"pl.recip({a[1]})" if float(a[0]) == 1.0 else f"pl.mul(pl.recip({a[1]}), {a[0]})"
            return f"pl.div({a[0]}, {a[1]})"
        if kind == "neg":
            return f"pl.neg({a[0]})"
        if kind in ("exp", "sqrt", "abs"):
            return f"pl.{kind}({a[0]})"
        if kind == "rsqrt":
            return f"pl.rsqrt({a[0]}, high_precision=True)"
        sigmoid = f"pl.recip(pl.add(pl.exp(pl.neg({a[0]})), 1.0))"
        if kind == "sigmoid":
            return sigmoid
        if kind == "silu":
            return f"pl.mul({a[0]}, {sigmoid})"
        raise ValueError(kind)


def _ssa(program: Node, leaves: dict[str, str], backend, lines: list[str]) -> str:
    """Append one line per operation of `program` (operands: leaf tiles, earlier values, literals) and
    return the code of its value."""
    count = [0]

    def visit(n: Node) -> tuple[str, bool]:
        if n[0] == "in":
            return leaves[n[1]], False
        if n[0] == "const":
            return literal(float(n[1])), True
        args = [visit(a) for a in n[1:]]
        code = backend.code(n[0], [a for a, _ in args], [k for _, k in args])
        name = backend.local(count[0])
        count[0] += 1
        lines.append(f"{name} = {code}")
        return name, False

    return visit(program)[0]


OP = Elementwise()
