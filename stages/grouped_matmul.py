"""grouped_matmul: per-group projection `y[t, g, n] = sum_k x[g * T + t, k] * w[g, n, k]`.

The model's `einsum("bsgd,grd->bsgr")` on group-major rows; fp32 accumulation over K tiles, result
rounded to `out_dtype` and flattened to `[T, groups * N]`.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder import expr
from builder.spec import DimExpr, DType
from builder.stage_api import TORCH_NAMES, Axis, Op, Params, StageError, TensorType, expect


def golden_grouped_matmul(x, w, *, out_dtype):
    """y[t, g * N + n] = sum_k x[g * T + t, k] * w[g, n, k], fp32 accumulation, then rounded."""
    import torch

    w = w.float()
    groups, n, k = w.shape
    y = torch.einsum("gtk,gnk->tgn", x.float().reshape(groups, -1, k), w)
    return {"y": y.reshape(y.shape[0], groups * n).to(getattr(torch, out_dtype))}


class GroupedParams(Params):
    groups: DimExpr = Field(description="number of groups (leading dim of the weight)")
    block_n: Optional[int] = Field(None, ge=16, description="output columns per program (default: min(N, 256))")
    block_k: Optional[int] = Field(None, ge=16, description="reduction depth per step (default: min(K, 512))")
    out_dtype: DType = DType.bf16


def tiles(p, n, k, default_n: int, default_k: int) -> tuple[int, int]:
    """(block_n, block_k): the params, or the defaults capped at the extents; each a power of two
    dividing its extent, or a StageError."""
    chosen = []
    for name, tile, dim, default in (("block_n", p.block_n, n, default_n), ("block_k", p.block_k, k, default_k)):
        tile = tile or min(dim.value, default)
        if dim.value % tile or tile & (tile - 1):
            raise StageError("bad-value", f"`{name}` = {tile} must be a power of two dividing {dim.text} = {dim.value}",
                             param=name)
        chosen.append(tile)
    return tuple(chosen)


def dot_rows(rows: int) -> int:
    """Row tile for tl.dot: a power of two of at least 16 (the tensor-core minimum)."""
    return max(16, 1 << (rows - 1).bit_length())


DEFAULT_TILES = (256, 512)


class GroupedMatmul(Op):
    name = "grouped_matmul"
    summary = "per-group x @ w[g]^T with fp32 accumulation"
    inputs = {"x": "[groups * T, K] group-major rows", "w": "[groups, N, K] per-group weights"}
    outputs = {"y": "[T, groups * N] per-token concatenation of the group results"}
    Params = GroupedParams
    golden_fn = golden_grouped_matmul

    def infer(self, ins, p, dims):
        x, w = ins["x"], ins["w"]
        expect("x", x, rank=2)
        groups = dims.dim(p.groups)
        expect("w", w, rank=3, dtype=x.dtype, dims={0: groups, 2: x.shape[1]})
        if x.shape[0].value % groups.value:
            raise StageError("shape-mismatch", f"input `x` has {x.shape[0].text} = {x.shape[0].value} rows, "
                                               f"not a multiple of {groups.text} = {groups.value} groups", "x")
        tiles(p, w.shape[1], x.shape[1], *DEFAULT_TILES)
        t = dims.dim(expr.quotient(x.shape[0].text, groups.text))
        return {"y": TensorType((t, dims.dim(f"{groups.text} * {w.shape[1].text}")), p.out_dtype)}

    def domain(self, ins, p, dims):
        w = ins["w"]
        block_n, _ = tiles(p, w.shape[1], w.shape[2], *DEFAULT_TILES)
        return (Axis("g", w.shape[0], parallel=True), Axis("nb", w.shape[1], tile=block_n, parallel=True))

    def golden_args(self, p, dims, types):
        return {"out_dtype": TORCH_NAMES[p.out_dtype]}

    def flops(self, ins, outs, p):
        g, n, k = ins["w"].numel_shape
        return 2 * ins["x"].numel_shape[0] * n * k

    def triton(self, c):
        k_dim, n_dim = c.dim("x", 1), c.dim("w", 1)
        t = c.dim("y", 0)
        rows = c.const("ROWS", dot_rows(c.type("y").shape[0].value), f"{t} rows padded for tl.dot")
        _, block_k = tiles(c.p, c.type("w").shape[1], c.type("x").shape[1], *DEFAULT_TILES)
        bk = c.const("BLOCK_K", block_k, "reduction depth per step")
        bn = c.tile("nb")
        return [
            f"r = tl.arange(0, {rows})",
            f"n = nb * {bn} + tl.arange(0, {bn})",
            f"live = r < {t}",
            f"acc = tl.zeros([{rows}, {bn}], tl.float32)",
            f"for k0 in range(0, {k_dim}, {bk}):",
            f"    k = k0 + tl.arange(0, {bk})",
            f"    x = tl.load({c.src('x')} + (g * {t} + r)[:, None] * {k_dim} + k[None, :], mask=live[:, None],"
            " other=0.0)",
            f"    w = tl.load({c.src('w')} + (g * {n_dim} + n)[:, None] * {k_dim} + k[None, :])",
            "    acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision=\"ieee\")",
            f"y = {c.cast_for('y', 'acc')}",
            f"tl.store({c.dst('y')} + r[:, None] * {c.dim('y', 1)} + (g * {n_dim} + n)[None, :], y,"
            " mask=live[:, None])",
        ]

    def pypto(self, c):
        k_dim, n_dim, t = c.dim("x", 1), c.dim("w", 1), c.dim("y", 0)
        _, block_k = tiles(c.p, c.type("w").shape[1], c.type("x").shape[1], *DEFAULT_TILES)
        bk = c.const("BLOCK_K", block_k, "reduction depth per step")
        bn = c.tile("nb")
        acc = c.local("acc")
        x0 = c.let("x0", f"g * {t}", "this group's rows of x")
        n0 = c.let("n0", f"g * {n_dim} + nb * {bn}", "this tile's output columns (rows of w)")
        x = lambda k0, k1: f"{c.src('x')}[{x0} : {x0} + {t}, {k0} : {k1}]"
        w = lambda k0, k1: f"{c.src('w')}[{n0} : {n0} + {bn}, {k0} : {k1}]"
        return [
            f"{acc} = pl.matmul({x(0, bk)}, {w(0, bk)}, b_trans=True, out_dtype=pl.FP32)",
            f"for k0 in pl.range({bk}, {k_dim}, {bk}):",
            f"    {acc} = pl.matmul_acc({acc}, {x('k0', f'k0 + {bk}')}, {w('k0', f'k0 + {bk}')}, b_trans=True)",
            f"{c.dst('y')}[0:{t}, {n0} : {n0} + {bn}] = {c.cast(acc, 'y')}",
        ]


OP = GroupedMatmul()
