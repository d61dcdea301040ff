"""rope_extract: split each head's rotary lanes (the last `rope` lanes) into real and imaginary parts.

Interleaved lanes store pair k at (2k, 2k+1); split-half lanes at (k, R/2 + k). The lane arithmetic
comes from `stages.rope_layout`; no selector matrices are involved.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder.spec import DimExpr, DType, Int, Layout
from builder.stage_api import Axis, Op, Params, StageError, TensorType, Tile, choose_tile, expect
from stages import rope_layout


def golden_rope_extract(x, *, rope, layout):
    """(real, imaginary) halves of the last `rope` lanes: pairs (2k, 2k+1) or (k, rope/2 + k)."""
    lanes = x[..., -rope:]
    if layout == "interleave":
        pairs = lanes.unflatten(-1, (-1, 2))
        return {"even": pairs[..., 0].contiguous(), "odd": pairs[..., 1].contiguous()}
    even, odd = lanes.chunk(2, dim=-1)
    return {"even": even.contiguous(), "odd": odd.contiguous()}


class HeadTiles(Params):
    """The head tile shared by the per-head RoPE and packing stages (one domain, so they can fuse)."""

    block_h: Optional[Int] = Field(None, ge=1, description="heads per program (default: up to 8)")


# 8 heads: pack's [heads, 512] tiles fit a GPU thread's registers at DeepSeek's head dim (16 spill on
# sm_80/sm_90), and every per-head op shares the default so that they can fuse.
HEAD_TILE = 8


def head_tiles(x: TensorType, p: HeadTiles) -> dict[str, Tile]:
    return {"block_h": choose_tile("block_h", p.block_h, x.shape[1], HEAD_TILE)}


def head_domain(x: TensorType, p: HeadTiles) -> tuple[Axis, ...]:
    """(token, head-tile) domain of the per-head stages."""
    return (Axis("t", x.shape[0], parallel=True), Axis.tiled("hb", head_tiles(x, p)["block_h"]))


class ExtractParams(HeadTiles):
    rope: DimExpr = Field(description="rotary lanes at the end of each head")
    layout: Optional[Layout] = Field(None, description="layout this stage expects; default: the input's")


def resolved_layout(port: str, got: TensorType, declared: Optional[Layout]) -> Layout:
    layout = declared or got.layout
    if layout is None:
        raise StageError("layout-mismatch", f"input `{port}` carries no RoPE layout and the stage declares none",
                         port, "declare `layout:` on the kernel input that holds the rotary lanes")
    expect(port, got, layout=layout)
    return layout


class RopeExtract(Op):
    name = "rope_extract"
    summary = "rotary lanes -> (real, imaginary) halves, by layout"
    inputs = {"x": "[T, H, D] heads whose last `rope` lanes are rotary"}
    outputs = {"even": "[T, H, rope/2] real parts", "odd": "[T, H, rope/2] imaginary parts"}
    Params = ExtractParams
    golden_fn = golden_rope_extract
    pointwise_inputs = frozenset({"x"})

    def infer(self, ins, p, dims):
        x = ins["x"]
        expect("x", x, rank=3)
        layout = resolved_layout("x", x, p.layout)
        rope = dims.dim(p.rope)
        if rope.value % 2 or rope.value > x.shape[2].value:
            raise StageError("bad-value", f"`rope` = {rope.text} = {rope.value} must be even and at most "
                                          f"{x.shape[2].text} = {x.shape[2].value}", param="rope")
        half = TensorType((x.shape[0], x.shape[1], dims.dim(f"{rope.text} // 2")), x.dtype, layout)
        return {"even": half, "odd": half}

    def tiles(self, ins, p, dims):
        return head_tiles(ins["x"], p)

    def domain(self, ins, p, dims):
        return head_domain(ins["x"], p)

    def golden_args(self, p, dims, types):
        return {"rope": int(dims.value(p.rope)), "layout": types["even"].layout.value}

    def triton(self, c):
        h, d = c.dim("x", 1), c.dim("x", 2)
        half = c.dim("even", 2)
        layout = c.stage.out_types["even"].layout
        re, im = rope_layout.lane_exprs(layout, "k[None, :]", half)
        return c.lanes("h", "hb") + c.span("k", c.type("even").shape[2], "HALF") + [
            f"row = (t * {h} + h)[:, None] * {d} + ({d} - {c.expr(c.p.rope)})  # first rotary lane",
            f"pair = (t * {h} + h)[:, None] * {half} + k[None, :]",
            c.store(f"{c.dst('even')} + pair", c.load(f"{c.src('x')} + row + {re}", "h", "k"), "h", "k"),
            c.store(f"{c.dst('odd')} + pair", c.load(f"{c.src('x')} + row + {im}", "h", "k"), "h", "k"),
        ]

    def pypto(self, c):
        d, half = c.dim("x", 2), c.dim("even", 2)
        bh = c.tile("hb")
        layout = c.stage.out_types["even"].layout
        row = c.first_row()
        rotary = c.local("rotary")
        lanes_code = f"{c.src('x')}[{row} : {row} + {bh}, {d} - {c.expr(c.p.rope)} : {d}]"
        if rope_layout.is_contiguous(layout):
            lines = [f"{rotary} = {lanes_code}"]
            for port, lanes in zip(("even", "odd"), rope_layout.LANES[layout]):
                first = rope_layout.offset_code(lanes, half)
                lines.append(f"{c.dst(port)}[{row} : {row} + {bh}, 0:{half}] = "
                             f"{rotary}[:, {first} : {first} + {half}]")
            return lines
        dtype = c.type("x").dtype
        lines = [f"{rotary} = {rope_layout.pl_gather_source(lanes_code, dtype)}"]
        k, rows = c.local("k"), c.stride("hb")
        # the pair indices 0 .. half - 1 (pl.arange takes no single-lane row: one pair is the index 0)
        ks = "pl.full([1, 1], dtype=pl.FP32, value=0.0)" if c.type("even").shape[2].value == 1 else \
            f"pl.cast(pl.arange(0, [1, {half}], dtype=pl.INT32), target_type=pl.FP32)"
        setup = [f"{k} = {ks}", f"{k} = pl.col_expand_add(pl.full([{rows}, {half}], dtype=pl.FP32, value=0.0), {k})"]
        buffers = []
        for port, lanes in zip(("even", "odd"), rope_layout.LANES[layout]):
            index = c.local(f"{port}_lanes")
            buffers.append((index, [rows, half], DType.int32))
            setup.append(f"{index}[:, :] = pl.cast({rope_layout.pl_gather_lanes(lanes, k, half)}, "
                         f"target_type=pl.INT32, mode=\"rint\")")
            gathered = rope_layout.pl_gather_result(f"pl.gather({rotary}, dim=-1, index={c.part(index)})", dtype)
            lines.append(f"{c.dst(port)}[{row} : {row} + {bh}, 0:{half}] = {gathered}")
        c.setup(buffers, setup)
        return lines


OP = RopeExtract()
