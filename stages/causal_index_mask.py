"""causal_index_mask: keep the compressed-KV slots a token may attend to, -1 elsewhere.

`y[t, j] = raw if 0 <= raw < (positions[t] + 1) // ratio else -1`, with `raw = indices[t, j]` for the
first `columns` columns of the raw indexer output (`//` floors). With `ratio` = 4 and `columns` =
IDX_TOPK this is DeepSeek-V4 CSA's compressed-slot mask (dsv4-facts section 1.3, step 2): a token at
position p sees the compressed blocks that end at or before it.

Backends: Triton compares in int32. PyPTO follows pypto-lib's vector form in fp32:
`bound = trunc((p + 1) / ratio)`, `ge = clamp(raw + 1, 0, 1)`, `lt = clamp(bound - raw, 0, 1)`,
`y = ge * lt * (raw + 1) - 1`, exact while indices and positions stay below 2**24 in magnitude and
positions are not negative (checked on caller inputs).
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder.spec import DimExpr, DType, Int
from builder.stage_api import Axis, Op, Params, StageError, TensorType, choose_tile, expect

EXACT = 2 ** 24  # integers below this are exact in fp32 (the PyPTO body computes in fp32)


def golden_causal_index_mask(indices, positions, *, ratio, columns):
    """raw indices[:, :columns] where 0 <= raw < (position + 1) // ratio (floor), else -1."""
    import torch

    raw = indices[:, :columns].long()
    bound = (positions.reshape(-1).long() + 1) // ratio
    keep = (raw >= 0) & (raw < bound[:, None])
    return {"y": torch.where(keep, raw, -1).to(torch.int32)}


class MaskParams(Params):
    ratio: Int = Field(ge=1, description="compress ratio: a compressed slot covers this many positions")
    columns: DimExpr = Field(description="leading columns of `indices` read (e.g. IDX_TOPK)")
    block_n: Optional[Int] = Field(None, ge=1, description="columns per program (default: up to 512)")


class CausalIndexMask(Op):
    name = "causal_index_mask"
    summary = "raw compressed-slot indices -> the ones before the token's position, -1 elsewhere"
    inputs = {"indices": "[T, W] int32 raw indexer output", "positions": "[T, 1] or [T] int32 token positions"}
    outputs = {"y": "[T, columns] int32 indices, -1 where masked"}
    Params = MaskParams
    golden_fn = golden_causal_index_mask

    def infer(self, ins, p, dims):
        idx, pos = ins["indices"], ins["positions"]
        expect("indices", idx, rank=2, dtype=DType.int32)
        expect("positions", pos, dtype=DType.int32, dims={0: idx.shape[0]})
        if len(pos.shape) not in (1, 2) or len(pos.shape) == 2 and pos.shape[1].value != 1:
            raise StageError("shape-mismatch", f"input `positions` is {pos.describe()}; this op reads [T, 1] or [T]",
                             "positions")
        columns = dims.dim(p.columns)
        if not 1 <= columns.value <= idx.shape[1].value:
            raise StageError("bad-value", f"`columns` = {columns.text} = {columns.value} must be between 1 and "
                                          f"{idx.shape[1].text} = {idx.shape[1].value}", param="columns")
        return {"y": TensorType((idx.shape[0], columns), DType.int32)}

    def tiles(self, ins, p, dims):
        return {"block_n": choose_tile("block_n", p.block_n, dims.dim(p.columns), 512)}

    def domain(self, ins, p, dims):
        tokens = Axis("t", ins["indices"].shape[0], parallel=True)
        return (tokens, Axis.tiled("cb", self.tiles(ins, p, dims)["block_n"]))

    def golden_args(self, p, dims, types):
        return {"ratio": p.ratio, "columns": types["y"].shape[1].value}

    def min_bytes(self, ins, outs, p):
        t, columns = outs["y"].numel_shape
        return {"in:indices": t * columns * 4, "in:positions": ins["positions"].nbytes, "out:y": outs["y"].nbytes}

    def check_values(self, ins, types, p, dims):
        problems = []
        if "positions" in ins:
            pos = ins["positions"]
            if bool((pos < 0).any()) or bool((pos >= EXACT - 1).any()):
                problems.append(("positions", f"positions must lie in [0, {EXACT - 1}) (the PyPTO body computes "
                                              "in fp32), got " + f"{int(pos.min())} .. {int(pos.max())}"))
        if "indices" in ins:
            raw = ins["indices"][:, :int(dims.value(p.columns))]
            if bool((raw.abs() >= EXACT).any()):
                problems.append(("indices", f"indices must be smaller than {EXACT} in magnitude (the PyPTO body "
                                            "computes in fp32)"))
        return problems

    def triton(self, c):
        width, columns = c.dim("indices", 1), c.dim("y", 1)
        ratio = c.const("RATIO", c.p.ratio, "compress ratio")
        return c.lanes("j", "cb") + [
            "raw = " + c.load(f"{c.src('indices')} + t * {width} + j", "j", other="-1"),
            f"bound = (tl.load({c.src('positions')} + t) + 1) // {ratio}  # positions are >= 0: floor",
            c.store(f"{c.dst('y')} + t * {columns} + j", "tl.where((raw >= 0) & (raw < bound), raw, -1)", "j"),
        ]

    def pypto(self, c):
        ratio = c.const("RATIO", float(c.p.ratio), "compress ratio, an fp32 divisor")
        bn = c.tile("cb")
        j0 = c.let("j0", f"cb * {c.stride('cb')}", "first column of this tile")
        raw, bound, ge, lt = (c.local(v) for v in ("raw", "bound", "ge", "lt"))
        pos = (f"{c.src('positions')}[t : t + 1, 0:1]" if len(c.type("positions").shape) == 2
               else f"{c.src('positions')}[0:1, t : t + 1]")
        return [
            f"{raw} = pl.cast({c.src('indices')}[t : t + 1, {j0} : {j0} + {bn}], target_type=pl.FP32)",
            f"{bound} = pl.div(pl.add(pl.cast({pos}, target_type=pl.FP32), 1.0), {ratio})",
            f"{bound} = pl.cast(pl.cast({bound}, target_type=pl.INT32, mode=\"trunc\"), target_type=pl.FP32)",
            f"{bound} = pl.row_expand_mul(pl.full([1, {bn}], dtype=pl.FP32, value=1.0), {bound})",
            f"{ge} = pl.minimum(pl.maximum(pl.add({raw}, 1.0), 0.0), 1.0)  # raw >= 0",
            f"{lt} = pl.minimum(pl.maximum(pl.sub({bound}, {raw}), 0.0), 1.0)  # raw < bound",
            f"{c.dst('y')}[t : t + 1, {j0} : {j0} + {bn}] = pl.cast(pl.sub(pl.mul(pl.mul({ge}, {lt}), "
            f"pl.add({raw}, 1.0)), 1.0), target_type=pl.INT32, mode=\"rint\")",
        ]


OP = CausalIndexMask()
