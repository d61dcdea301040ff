"""rotary: RoPE on the last `rope` lanes of every row, the other lanes copied; one rounding per lane.

`x` is `[T, D]` or `[T, H, D]` (rows of the last axis, `cos` and `sin` rows per token `t`). Among a
row's last R = `rope` lanes, pair k sits at lanes (2k, 2k + 1) (`interleave`) or (k, R/2 + k)
(`split_half`); with `c = cos[t, k]`, `s = sin[t, k]` (the first R/2 columns are read):

    forward: re' = re * c - im * s,  im' = re * s + im * c
    inverse: re' = re * c + im * s,  im' = im * c - re * s

in fp32 (`x`, `cos`, `sin` widened), then every lane, rotated or copied, is rounded once to
`out_dtype`. This is qkv_proj_rope's "normalize, then rotate" tail: its fp32 normalized q heads and
kv row become bf16 with their rotary lanes turned (pypto-lib's golden rounds the rotated and the
other lanes separately, from the same fp32 values: the same bits).

Backends: Triton loads each pair's two lanes and applies the formulas above; PyPTO turns a
`[rows, R]` tile at once as `x * cos[pair] + x[partner] * sign * sin[pair]`, the partner lanes and
the table columns fetched with `pl.gather` (pypto-lib's swap-gather form; `sign` is -1 or +1, so
every lane gets the same two products and sum as the formulas).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from builder import dtypes
from builder.spec import DimExpr, DType, Int, Layout
from builder.stage_api import Axis, Op, Params, StageError, TensorType, choose_tile, expect
from stages import rope_layout
from stages.rope_apply import triton_rotation

# per direction, the sign of the partner's product in (real', imaginary') = x * c + partner * sign * s
SIGNS = {"forward": (-1.0, 1.0), "inverse": (1.0, -1.0)}
DEFAULT_ROWS = 8  # rows of one token per program


def golden_rotary(x, cos, sin, *, rope, layout, direction, out_dtype):
    """The last `rope` lanes of each row rotated by the token's (cos, sin) in fp32, then one rounding."""
    import torch

    x = x.float()
    d, half = x.shape[-1], rope // 2
    lanes = x[..., d - rope:]
    if layout == "interleave":
        re, im = lanes[..., 0::2], lanes[..., 1::2]
    else:
        re, im = lanes[..., :half], lanes[..., half:]
    per_token = [x.shape[0]] + [1] * (x.dim() - 2) + [half]
    c = cos.float()[:, :half].reshape(per_token)
    s = sin.float()[:, :half].reshape(per_token)
    if direction == "forward":
        new_re, new_im = re * c - im * s, re * s + im * c
    else:
        new_re, new_im = re * c + im * s, im * c - re * s
    if layout == "interleave":
        rotated = torch.stack([new_re, new_im], dim=-1).flatten(-2)
    else:
        rotated = torch.cat([new_re, new_im], dim=-1)
    return {"y": torch.cat([x[..., :d - rope], rotated], dim=-1).to(getattr(torch, out_dtype))}


class RotaryParams(Params):
    rope: DimExpr = Field(description="rotary lanes at the end of each row (an even count)")
    direction: Literal["forward", "inverse"]
    layout: Optional[Layout] = Field(None, description="where the pairs sit; default: the input's layout")
    out_dtype: DType = DType.bf16
    block_h: Optional[Int] = Field(None, ge=1, description="rows of one token per program (default: up to 8)")


class Rotary(Op):
    name = "rotary"
    summary = "RoPE on the last `rope` lanes of each row, other lanes copied, one rounding"
    inputs = {"x": "[T, D] or [T, H, D] rows, their last `rope` lanes rotary",
              "cos": "[T, >= rope/2] cos table (first rope/2 columns read)", "sin": "[T, >= rope/2] sin table"}
    outputs = {"y": "x with its rotary lanes turned, in `out_dtype`"}
    Params = RotaryParams
    golden_fn = golden_rotary
    pointwise_inputs = frozenset({"x", "cos", "sin"})

    def infer(self, ins, p, dims):
        x = ins["x"]
        if len(x.shape) not in (2, 3):
            raise StageError("shape-mismatch", f"input `x` has rank {len(x.shape)} ({x.describe()}); rotary takes "
                                               "[T, D] or [T, H, D]", "x")
        if not dtypes.info(x.dtype).floating:
            raise StageError("dtype-mismatch", f"input `x` is {x.dtype.value}; rotary turns bf16 or fp32", "x")
        if p.out_dtype not in (DType.bf16, DType.fp32):
            raise StageError("bad-value", f"`out_dtype` = {p.out_dtype.value}: rotary writes bf16 or fp32",
                             param="out_dtype")
        self.layout(x, p)
        rope = dims.dim(p.rope)
        if rope.value < 2 or rope.value % 2 or rope.value > x.shape[-1].value:
            raise StageError("bad-value", f"`rope` = {rope.text} = {rope.value} must be even, at least 2 and at "
                                          f"most {x.shape[-1].text} = {x.shape[-1].value}", param="rope")
        for table in ("cos", "sin"):
            expect(table, ins[table], rank=2, dtype=ins["cos"].dtype, dims={0: x.shape[0]})
            if ins[table].shape[1].value < rope.value // 2:
                raise StageError("shape-mismatch", f"input `{table}` has {ins[table].shape[1].text} = "
                                                   f"{ins[table].shape[1].value} columns, fewer than the "
                                                   f"{rope.value // 2} pairs", table)
        return {"y": TensorType(x.shape, p.out_dtype, x.layout)}

    @staticmethod
    def layout(x: TensorType, p) -> Layout:
        layout = p.layout or x.layout
        if layout is None:
            raise StageError("layout-mismatch", "input `x` carries no RoPE layout and the stage declares none", "x",
                             "declare `layout:` on this stage")
        expect("x", x, layout=layout)
        return layout

    def tiles(self, ins, p, dims):
        return {"block_h": choose_tile("block_h", p.block_h, self._rows(ins["x"], dims), DEFAULT_ROWS)}

    @staticmethod
    def _rows(x: TensorType, dims):
        """Rows per token: H for [T, H, D], 1 for [T, D]."""
        return x.shape[1] if len(x.shape) == 3 else dims.dim(1)

    def domain(self, ins, p, dims):
        return (Axis("t", ins["x"].shape[0], parallel=True), Axis.tiled("hb", self.tiles(ins, p, dims)["block_h"]))

    def golden_args(self, p, dims, types):
        return {"rope": int(dims.value(p.rope)), "layout": self.layout(types["x"], p).value,
                "direction": p.direction, "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        rows = 1
        for v in ins["x"].numel_shape[:-1]:
            rows *= v
        return 3 * rows * int(outs["y"].numel_shape[-1])  # an upper bound: 6 per pair of rotary lanes

    # --- tile bodies ----------------------------------------------------------------------------------
    def _sizes(self, c) -> tuple[str, str, str, str]:
        """Code of (lanes per row, rotary lanes, the lanes before them, pairs)."""
        d = c.dim("x", -1)
        rope = c.expr(c.p.rope)
        return d, rope, c.expr(f"{c.type('x').shape[-1].text} - ({c.p.rope})"), c.expr(f"({c.p.rope}) // 2")

    def _per_token(self, c) -> str:
        return c.dim("x", 1) if len(c.type("x").shape) == 3 else "1"

    def triton(self, c):
        d, rope, nope, half = self._sizes(c)
        layout = self.layout(c.type("x"), c.p)
        re_lane, im_lane = rope_layout.lane_exprs(layout, "k[None, :]", half)
        x_type = c.type("x")
        half_dim = c.dims.dim(f"({c.p.rope}) // 2")
        lines = c.lanes("h", "hb") + c.span("d", x_type.shape[-1], "D") + c.span("k", half_dim, "HALF") + [
            f"row = (t * {self._per_token(c)} + h)[:, None] * {d}",
            f"kept = d < {nope}  # lanes before the rotary ones: copied",
            "x = " + c.load(f"{c.src('x')} + row + d[None, :]", "h", "d", mask="kept[None, :]") + ".to(tl.float32)",
            c.store(f"{c.dst('y')} + row + d[None, :]", c.cast_for("y", "x"), "h", "d", mask="kept[None, :]"),
            f"re_at = row + {nope} + {re_lane}",
            f"im_at = row + {nope} + {im_lane}",
        ]
        return lines + triton_rotation(c, (("x", "re_at"), ("x", "im_at")), (("y", "re_at"), ("y", "im_at")))

    def pypto(self, c):
        d, rope, nope, half = self._sizes(c)
        layout = self.layout(c.type("x"), c.p)
        bh, rows = c.tile("hb"), c.stride("hb")
        r0 = c.let("r0", f"t * {self._per_token(c)} + hb * {rows}", "first row of this tile")
        names = {v: c.local(v) for v in ("lane", "part", "pair", "partner", "sign", "turned", "c", "s")}
        lane, part, pair, partner, sign = (names[v] for v in ("lane", "part", "pair", "partner", "sign"))
        # lane j of the rotary part: its pair k, its part (0 real, 1 imaginary) and its partner lane
        if rope_layout.is_contiguous(layout):  # split-half: j = part * R/2 + k, partner j + R/2 or j - R/2
            pairs = int(c.dims.value(c.p.rope)) // 2
            inv = c.const("INV_HALF", 1.0 / pairs, "1 / (rope / 2)")
            halves, lanes = c.const("HALF", float(pairs), "rope / 2"), c.const("LANES", 2.0 * pairs, "rope")
            parts = [f"{part} = pl.cast(pl.cast(pl.mul(pl.add({lane}, 0.5), {inv}), target_type=pl.INT32, "
                     f"mode=\"floor\"), target_type=pl.FP32)  # lanes at R/2 and up: 1",
                     f"{pair} = pl.sub({lane}, pl.mul({part}, {halves}))",
                     f"{partner} = pl.sub(pl.add({lane}, {halves}), pl.mul({part}, {lanes}))"]
        else:  # interleaved: j = 2k + part, partner j + 1 or j - 1
            parts = [f"{pair} = pl.cast(pl.cast(pl.mul({lane}, 0.5), target_type=pl.INT32, mode=\"floor\"), "
                     f"target_type=pl.FP32)",
                     f"{part} = pl.sub({lane}, pl.mul({pair}, 2.0))",
                     f"{partner} = pl.sub(pl.add({lane}, 1.0), pl.mul({part}, 2.0))"]
        real, imag = SIGNS[c.p.direction]
        pair_index, partner_index, signs = c.local("pair_index"), c.local("partner_index"), c.local("signs")
        setup = [f"{lane} = pl.cast(pl.arange(0, [1, {rope}], dtype=pl.INT32), target_type=pl.FP32)"] + parts + [
            f"{sign} = pl.add(pl.mul({part}, {imag - real}), {real})",
            f"{pair_index}[:, :] = pl.cast({pair}, target_type=pl.INT32, mode=\"rint\")",
            f"{signs}[:, :] = {sign}",
            f"{partner_index}[:, :] = pl.cast(pl.col_expand_add(pl.full([{rows}, {rope}], dtype=pl.FP32, "
            f"value=0.0), {partner}), target_type=pl.INT32, mode=\"rint\")"]
        c.setup([(pair_index, ["1", rope], DType.int32), (signs, ["1", rope], DType.fp32),
                 (partner_index, [rows, rope], DType.int32)], setup)

        def tile(lo: str, hi: str) -> str:
            return c.fp32("x", f"{c.src('x')}[{r0} : {r0} + {bh}, {lo} : {hi}]")

        def table(port: str) -> str:
            return f"pl.gather({c.fp32(port, f'{c.src(port)}[t : t + 1, 0:{half}]')}, dim=-1, index={pair_index})"

        turned, cs, sn = names["turned"], names["c"], names["s"]
        kept = f"{c.src('x')}[{r0} : {r0} + {bh}, 0:{nope}]"
        out = c.stage.out_types["y"].dtype
        if out is not c.type("x").dtype:  # bf16 -> fp32 widens exactly; fp32 -> bf16 rounds once
            kept = c.cast(kept, "y") if out is DType.bf16 else f"pl.cast({kept}, target_type=pl.FP32)"
        copy = [f"{c.dst('y')}[{r0} : {r0} + {bh}, 0:{nope}] = {kept}"] * (c.type("x").shape[-1].value
                                                                         > c.dims.value(c.p.rope))
        return copy + [
            f"{turned} = {tile(nope, d)}",
            f"{cs} = {table('cos')}",
            f"{sn} = pl.mul({table('sin')}, {signs})",
            f"{turned} = pl.add(pl.col_expand_mul({turned}, {cs}), "
            f"pl.col_expand_mul(pl.gather({turned}, dim=-1, index={c.part(partner_index)}), {sn}))",
            f"{c.dst('y')}[{r0} : {r0} + {bh}, {nope} : {d}] = {c.cast(turned, 'y')}",
        ]


OP = Rotary()
