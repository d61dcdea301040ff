"""grouped_matmul: per-group projection `y[t, g, n] = sum_k x[g * T + t, k] * w[g, n, k]`.

The model's `einsum("bsgd,grd->bsgr")` on group-major rows; fp32 accumulation over K tiles, result
rounded to `out_dtype` and flattened to `[T, groups * N]`.
"""
from __future__ import annotations

from pydantic import Field

from builder import expr
from builder import dtypes
from builder.spec import DimExpr
from builder.stage_api import Axis, Op, StageError, TensorType, Tile, expect
from builder.targets import FILL_BYTES
from stages.matmul_tiles import MatmulParams, matmul_tiles, pypto_k_loop, triton_k_loop


def golden_grouped_matmul(x, w, *, out_dtype):
    """y[t, g * N + n] = sum_k x[g * T + t, k] * w[g, n, k], fp32 accumulation, then rounded."""
    import torch

    w = w.float()
    groups, n, k = w.shape
    y = torch.einsum("gtk,gnk->tgn", x.float().reshape(groups, -1, k), w)
    return {"y": y.reshape(y.shape[0], groups * n).to(getattr(torch, out_dtype))}


class GroupedParams(MatmulParams):
    groups: DimExpr = Field(description="number of groups (leading dim of the weight)")


DEFAULT_TILES = (256, 512)  # (block_n, block_k) when not given, capped at the extents
# A GPU thread widens its share of a weight step to fp32: at 4 warps a [32, 512] step fits sm_80's and
# sm_90's registers, a [64, 512] one spills (`build --target`, DeepSeek-V4-Pro's proj_a: K = 4096)
WEIGHT_STEP = 32 * 512


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
        if groups.value < 1:
            raise StageError("bad-value", f"`groups` = {groups.text} = {groups.value}; at least 1 group is needed",
                             param="groups")
        expect("w", w, rank=3, dtype=x.dtype, dims={0: groups, 2: x.shape[1]})
        if x.shape[0].value % groups.value:
            raise StageError("shape-mismatch", f"input `x` has {x.shape[0].text} = {x.shape[0].value} rows, "
                                               f"not a multiple of {groups.text} = {groups.value} groups", "x")
        t = dims.dim(expr.quotient(x.shape[0].text, groups.text))
        return {"y": TensorType((t, dims.dim(f"{groups.text} * {w.shape[1].text}")), p.out_dtype)}

    def tiles(self, ins, p, dims):
        w = ins["w"]
        moved = sum(t.nbytes for t in ins.values())
        tiles = matmul_tiles(p, w.shape[1], ins["x"].shape[1], *DEFAULT_TILES, programs=w.shape[0].value, moved=moved)
        n = tiles["block_n"]
        # a default tuned to fill a GPU (the stage moves FILL_BYTES or more) also fits its registers
        while n.defaulted and moved >= FILL_BYTES and n.size * tiles["block_k"].size > WEIGHT_STEP and n.size > 16:
            n = Tile(n.param, n.size // 2, n.extent, True)
        return {**tiles, "block_n": n}

    def domain(self, ins, p, dims):
        return (Axis("g", ins["w"].shape[0], parallel=True), Axis.tiled("nb", self.tiles(ins, p, dims)["block_n"]))

    def golden_args(self, p, dims, types):
        return {"out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        g, n, k = ins["w"].numel_shape
        return 2 * ins["x"].numel_shape[0] * n * k

    def _k_loop_args(self, c) -> dict:
        return dict(a=c.src("x"), a_row0=f"g * {c.dim('y', 0)}", w=c.src("w"), rows=c.dim("y", 0),
                    rows_dim=c.type("y").shape[0], k_dim=c.dim("x", 1), dtype=c.type("x").dtype)

    def triton(self, c):
        col0 = f"g * {c.dim('w', 1)}"  # group g's first output column = its first weight row
        return triton_k_loop(c, w_row0=col0, **self._k_loop_args(c)) + [
            c.store(f"{c.dst('y')} + r[:, None] * {c.dim('y', 1)} + ({col0} + n)[None, :]", c.cast_for("y", "acc"),
                    "r", "n", mask="live[:, None]"),
        ]

    def pypto(self, c):
        acc, bn = c.local("acc"), c.tile("nb")
        n0 = c.let("n0", f"g * {c.dim('w', 1)} + nb * {c.stride('nb')}", "this tile's output columns = weight rows")
        return pypto_k_loop(c, w_row0=n0, acc=acc, **self._k_loop_args(c)) + [
            f"{c.dst('y')}[0:{c.dim('y', 0)}, {n0} : {n0} + {bn}] = {c.cast(acc, 'y')}"]


OP = GroupedMatmul()
