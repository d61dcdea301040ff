"""rope_apply: rotate (real, imaginary) pairs by the per-token angle, forward or inverse.

With `c = cos[t, :R/2]`, `s = sin[t, :R/2]` broadcast over heads:
inverse (multiply by conj(c + i s)): `re' = re*c + im*s`, `im' = im*c - re*s`;
forward: `re' = re*c - im*s`, `im' = re*s + im*c`. Computed in fp32, each result rounded to `out_dtype`.
"""
from __future__ import annotations

from typing import Literal


from builder import dtypes
from builder.spec import DType
from builder.stage_api import Op, StageError, TensorType, expect
from stages.rope_extract import HeadTiles, head_domain, head_tiles

ROTATIONS = {  # (real', imaginary'), each `a * b op c * d` over re, im and the cos/sin rows c, s
    "inverse": (("re", "c", "+", "im", "s"), ("im", "c", "-", "re", "s")),
    "forward": (("re", "c", "-", "im", "s"), ("re", "s", "+", "im", "c")),
}


def triton_rotation(c, sources: tuple[tuple[str, str], ...], targets: tuple[tuple[str, str], ...]) -> list[str]:
    """Triton lines rotating a [h, k] tile of pairs by this token's angles (cos and sin rows read at pair k):
    `sources` and `targets` are the real and imaginary parts' (port, offset) addresses."""
    cols = c.dim("cos", 1)
    rotated = [f"{a} * {b} {op} {x} * {y}" for a, b, op, x, y in ROTATIONS[c.p.direction]]
    return ([f"{part} = " + c.load(f"{c.src(port)} + {at}", "h", "k") + ".to(tl.float32)"
             for part, (port, at) in zip(("re", "im"), sources)]
            + [f"{v} = " + c.load(f"{c.src(port)} + t * {cols} + k", "k") + ".to(tl.float32)[None, :]"
               for v, port in (("c", "cos"), ("s", "sin"))]
            + [c.store(f"{c.dst(port)} + {at}", c.cast_for(port, value), "h", "k")
               for (port, at), value in zip(targets, rotated)])


def golden_rope_apply(even, odd, cos, sin, *, direction, out_dtype):
    """Rotate pairs by the token's angle (inverse: times conj(c + i s)); fp32, then rounded."""
    import torch

    half = even.shape[-1]
    re, im = even.float(), odd.float()
    c = cos.float()[:, None, :half]
    s = sin.float()[:, None, :half]
    if direction == "inverse":
        new_re, new_im = re * c + im * s, im * c - re * s
    else:
        new_re, new_im = re * c - im * s, re * s + im * c
    dtype = getattr(torch, out_dtype)
    return {"even": new_re.to(dtype), "odd": new_im.to(dtype)}


class ApplyParams(HeadTiles):
    direction: Literal["forward", "inverse"]
    out_dtype: DType = DType.bf16


class RopeApply(Op):
    name = "rope_apply"
    summary = "rotate RoPE pairs by cos/sin tables (forward or inverse)"
    inputs = {"even": "[T, H, R/2] real parts", "odd": "[T, H, R/2] imaginary parts",
              "cos": "[T, >= R/2] cos table (first R/2 columns read)", "sin": "[T, >= R/2] sin table"}
    outputs = {"even": "[T, H, R/2] rotated real parts", "odd": "[T, H, R/2] rotated imaginary parts"}
    Params = ApplyParams
    golden_fn = golden_rope_apply
    pointwise_inputs = frozenset({"even", "odd", "cos", "sin"})

    def infer(self, ins, p, dims):
        even = ins["even"]
        expect("even", even, rank=3)
        expect("odd", ins["odd"], rank=3, dtype=even.dtype, dims=dict(enumerate(even.shape)), layout=even.layout)
        for table in ("cos", "sin"):
            expect(table, ins[table], rank=2, dtype=ins["cos"].dtype, dims={0: even.shape[0]})
            if ins[table].shape[1].value < even.shape[2].value:
                raise StageError("shape-mismatch", f"input `{table}` has {ins[table].shape[1].text} = "
                                 f"{ins[table].shape[1].value} columns, fewer than the {even.shape[2].value} pairs",
                                 table)
        out = TensorType(even.shape, p.out_dtype, even.layout)
        return {"even": out, "odd": out}

    def tiles(self, ins, p, dims):
        return head_tiles(ins["even"], p)

    def domain(self, ins, p, dims):
        return head_domain(ins["even"], p)

    def golden_args(self, p, dims, types):
        return {"direction": p.direction, "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        t, h, half = ins["even"].numel_shape
        return 6 * t * h * half

    def triton(self, c):
        h, half = c.dim("even", 1), c.dim("even", 2)
        pairs = (("even", "pair"), ("odd", "pair"))
        return c.lanes("h", "hb") + c.span("k", c.type("even").shape[2], "HALF") + [
            f"pair = (t * {h} + h)[:, None] * {half} + k[None, :]"] + triton_rotation(c, pairs, pairs)

    def pypto(self, c):
        half, bh = c.dim("even", 2), c.tile("hb")
        row = c.first_row()
        names = {v: c.local(v) for v in ("re", "im", "c", "s")}

        lines = [
            f"{names['re']} = " + c.fp32("even", f"{c.src('even')}[{row} : {row} + {bh}, 0:{half}]"),
            f"{names['im']} = " + c.fp32("odd", f"{c.src('odd')}[{row} : {row} + {bh}, 0:{half}]"),
            f"{names['c']} = " + c.fp32("cos", f"{c.src('cos')}[t : t + 1, 0:{half}]"),
            f"{names['s']} = " + c.fp32("sin", f"{c.src('sin')}[t : t + 1, 0:{half}]")]
        for port, (a, b, op, x, y) in zip(("even", "odd"), ROTATIONS[c.p.direction]):
            value = (f"pl.{'add' if op == '+' else 'sub'}(pl.col_expand_mul({names[a]}, {names[b]}), "
                     f"pl.col_expand_mul({names[x]}, {names[y]}))")
            lines.append(f"{c.dst(port)}[{row} : {row} + {bh}, 0:{half}] = {c.cast(value, port)}")
        return lines


OP = RopeApply()
