"""rope_interleave: write rotated (real, imaginary) halves back into rotary lanes of a given layout.

Interleaved: `out[2k] = re[k]`, `out[2k+1] = im[k]`; split-half: `out = cat(re, im)`. The layout
defaults to the one the pairs were extracted from; lane arithmetic comes from `stages.rope_layout`.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder.spec import DimExpr, DType, Layout
from builder.stage_api import Op, StageError, TensorType, expect
from stages import rope_layout
from stages.rope_extract import HeadTiles, head_domain, head_tiles


def golden_rope_interleave(even, odd, *, layout):
    """Rotary lanes from (real, imaginary) halves: stacked pairwise, or concatenated."""
    import torch

    if layout == "interleave":
        return {"rope": torch.stack([even, odd], dim=-1).flatten(-2)}
    return {"rope": torch.cat([even, odd], dim=-1)}


class InterleaveParams(HeadTiles):
    rope: DimExpr = Field(description="rotary lanes written per head (twice the pairs)")
    layout: Optional[Layout] = Field(None, description="layout to write; default: the pairs' source layout")


class RopeInterleave(Op):
    name = "rope_interleave"
    summary = "(real, imaginary) halves -> rotary lanes, by layout"
    inputs = {"even": "[T, H, R/2] real parts", "odd": "[T, H, R/2] imaginary parts"}
    outputs = {"rope": "[T, H, R] rotary lanes in `layout`"}
    Params = InterleaveParams
    golden_fn = golden_rope_interleave
    pointwise_inputs = frozenset({"even", "odd"})

    def infer(self, ins, p, dims):
        even = ins["even"]
        expect("even", even, rank=3)
        expect("odd", ins["odd"], rank=3, dtype=even.dtype, dims=dict(enumerate(even.shape)), layout=even.layout)
        rope = dims.dim(p.rope)
        if rope.value != 2 * even.shape[2].value:
            raise StageError("shape-mismatch", f"`rope` = {rope.text} = {rope.value} lanes, but input `even` holds "
                                               f"{even.shape[2].text} = {even.shape[2].value} pairs", "even")
        layout = p.layout or even.layout
        if layout is None:
            raise StageError("layout-mismatch", "the pairs carry no layout and the stage declares none", "even",
                             "declare `layout:` on this stage")
        return {"rope": TensorType((even.shape[0], even.shape[1], rope), even.dtype, layout)}

    def tiles(self, ins, p, dims):
        return head_tiles(ins["even"], p)

    def domain(self, ins, p, dims):
        return head_domain(ins["even"], p)

    def golden_args(self, p, dims, types):
        return {"layout": types["rope"].layout.value}

    def triton(self, c):
        h, half, rope = c.dim("even", 1), c.dim("even", 2), c.dim("rope", 2)
        re, im = rope_layout.lane_exprs(c.stage.out_types["rope"].layout, "k[None, :]", half)
        return c.lanes("h", "hb") + c.span("k", c.type("even").shape[2], "HALF") + [
            f"pair = (t * {h} + h)[:, None] * {half} + k[None, :]",
            f"lanes = (t * {h} + h)[:, None] * {rope}",
            c.store(f"{c.dst('rope')} + lanes + {re}", c.load(f"{c.src('even')} + pair", "h", "k"), "h", "k"),
            c.store(f"{c.dst('rope')} + lanes + {im}", c.load(f"{c.src('odd')} + pair", "h", "k"), "h", "k"),
        ]

    def pypto(self, c):
        half, rope = c.dim("even", 2), c.dim("rope", 2)
        bh = c.tile("hb")
        layout = c.stage.out_types["rope"].layout
        row = c.first_row()
        parts = {port: f"{c.src(port)}[{row} : {row} + {bh}, 0:{half}]" for port in ("even", "odd")}
        if rope_layout.is_contiguous(layout):
            lines = []
            for port, lanes in zip(("even", "odd"), rope_layout.LANES[layout]):
                first = rope_layout.offset_code(lanes, half)
                lines.append(f"{c.dst('rope')}[{row} : {row} + {bh}, {first} : {first} + {half}] = {parts[port]}")
            return lines
        lane, index, rows = c.local("lane"), c.local("lanes"), c.stride("hb")
        setup = [f"{lane} = pl.cast(pl.arange(0, [1, {rope}], dtype=pl.INT32), target_type=pl.FP32)",
                 f"{lane} = pl.col_expand_add(pl.full([{rows}, {rope}], dtype=pl.FP32, value=0.0), {lane})"]
        source = c.local("lane_src")
        setup += rope_layout.pl_source_lanes(layout, lane, half, c.local("pair"), source)
        setup.append(f"{index}[:, :] = pl.cast({source}, target_type=pl.INT32, mode=\"rint\")")
        c.setup([(index, [rows, rope], DType.int32)], setup)
        pairs = c.local("pairs")
        dtype = c.type("even").dtype
        concat = f"pl.concat({parts['even']}, {parts['odd']})"
        gathered = rope_layout.pl_gather_result(f"pl.gather({pairs}, dim=-1, index={c.part(index)})", dtype)
        return [f"{pairs} = {rope_layout.pl_gather_source(concat, dtype)}",
                f"{c.dst('rope')}[{row} : {row} + {bh}, 0:{rope}] = {gathered}"]


OP = RopeInterleave()
