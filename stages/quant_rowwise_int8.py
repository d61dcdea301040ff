"""quant_rowwise_int8: dynamic per-row A8 quantization, or per (row, group of lanes).

`amax[t] = max(floor, max_j |x[t, j]|)`, `sq = 127 / amax` (one correctly rounded division, as the
kernels compute it; pypto-lib's goldens write `127.0 / amax` in torch, which rounds `1 / amax` first and
so is an ulp off at times), `q = int8(round_half_even(x * sq))`, and the dequant scale `sdq = 1 / sq`
for the W8A8 projection that follows.

With `groups: G` each row's lanes are cut into G equal groups, each with its own amax and scale:
`sdq` is [T, G] (DeepSeek-V4-Pro's per-(token, o-group) quantisation of the o-projection; `groups: 1`
writes qkv_proj_rope's `[T, 1]` `qr_scale` column). pypto-lib casts `rint` to int32, then to fp16 and
int8; every value is within 127 in magnitude, so that is `round_half_even` exactly.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder import expr
from builder.spec import DimExpr, DType, Float
from builder.stage_api import Axis, Dim, Op, Params, StageError, TensorType, expect


def golden_quant_rowwise_int8(x, *, amax_floor):
    """int8(round_half_even(x * 127 / amax)) per row, and the dequant scale amax / 127 (as 1 / sq)."""
    import torch

    x = x.float()
    amax = x.abs().amax(dim=-1).clamp_min(amax_floor)
    sq = torch.full_like(amax, 127.0) / amax  # a true division: torch's `127.0 / amax` is 127 * (1 / amax)
    return {"q": torch.round(x * sq[:, None]).to(torch.int8), "dequant": 1.0 / sq}


def golden_quant_groups_int8(x, *, amax_floor, groups):
    """The same per (row, group of lanes): dequant scales [T, groups]."""
    import torch

    x = x.float().unflatten(-1, (groups, -1))
    amax = x.abs().amax(dim=-1, keepdim=True).clamp_min(amax_floor)
    sq = torch.full_like(amax, 127.0) / amax  # a true division, as above
    return {"q": torch.round(x * sq).to(torch.int8).flatten(-2), "dequant": (1.0 / sq).squeeze(-1)}


class QuantParams(Params):
    amax_floor: Float = Field(1e-4, gt=0, description="lower bound of a row's amax (all-zero rows)")
    groups: Optional[DimExpr] = Field(None, description="equal groups of lanes per row, each quantized on its own "
                                                        "(dequant scales [T, groups]); default: whole rows, [T]")


class QuantRowwiseInt8(Op):
    name = "quant_rowwise_int8"
    summary = "per-row (or per-group) dynamic int8 quantization (round half to even)"
    inputs = {"x": "[T, N] activations"}
    outputs = {"q": "[T, N] int8 quantized activations",
               "dequant": "[T] fp32 per-row dequant scale (1 / sq), or [T, groups] per group"}
    Params = QuantParams
    golden_fn = golden_quant_rowwise_int8

    def infer(self, ins, p, dims):
        x = ins["x"]
        expect("x", x, rank=2)
        scales = x.shape[:1]
        if p.groups is not None:
            groups = self.groups(x, p, dims)
            scales = (x.shape[0], groups)
        return {"q": TensorType(x.shape, DType.int8), "dequant": TensorType(scales, DType.fp32)}

    @staticmethod
    def groups(x: TensorType, p, dims) -> Dim:
        groups = dims.dim(p.groups)
        if not isinstance(groups.value, int) or groups.value < 1 or x.shape[1].value % groups.value:
            raise StageError("bad-value", f"`groups` = {groups.text} = {groups.value} must divide "
                                          f"{x.shape[1].text} = {x.shape[1].value} lanes", param="groups")
        return groups

    def domain(self, ins, p, dims):
        tokens = Axis("t", ins["x"].shape[0], parallel=True)
        if p.groups is None:
            return (tokens,)
        return (tokens, Axis("g", self.groups(ins["x"], p, dims), parallel=True))

    def golden_function(self, p, types):
        return golden_quant_rowwise_int8 if p.groups is None else golden_quant_groups_int8

    def golden_args(self, p, dims, types):
        if p.groups is None:
            return {"amax_floor": p.amax_floor}
        return {"amax_floor": p.amax_floor, "groups": int(dims.value(p.groups))}

    def flops(self, ins, outs, p):
        t, n = ins["x"].numel_shape
        return 3 * t * n

    def _lanes(self, c) -> tuple[str, str, Dim]:
        """(first lane of this program's row or group as code, lanes per program as code, as a Dim)."""
        x = c.type("x")
        if c.p.groups is None:
            return f"t * {c.dim('x', 1)}", c.dim("x", 1), x.shape[1]
        width = c.dims.dim(expr.quotient(x.shape[1].text, c.dims.dim(c.p.groups).text))
        return f"t * {c.dim('x', 1)} + g * {c.expr(width.text)}", c.expr(width.text), width

    def triton(self, c):
        first, _, width = self._lanes(c)
        floor = c.const("AMAX_FLOOR", c.p.amax_floor, "lower bound of a row's amax")
        scale_at = "t" if c.p.groups is None else f"t * {c.dim('dequant', 1)} + g"
        return c.span("j", width, "N") + [  # one program quantizes a whole row, or a group of it
            "x = " + c.load(f"{c.src('x')} + {first} + j", "j") + ".to(tl.float32)",  # padding: |0| adds nothing
            f"sq = 127.0 / tl.maximum(tl.max(tl.abs(x), axis=0), {floor})",
            c.store(f"{c.dst('q')} + {first} + j", f"{c.helper('round_half_even')}(x * sq).to(tl.int8)", "j"),
            f"tl.store({c.dst('dequant')} + {scale_at}, 1.0 / sq)",
        ]

    def pypto(self, c):
        floor = c.const("AMAX_FLOOR", c.p.amax_floor, "lower bound of a row's amax")
        x, amax, sq, q = (c.local(v) for v in ("x", "amax", "sq", "q"))
        if c.p.groups is None:
            lanes, scale_at = f"0:{c.dim('x', 1)}", "[0:1, t : t + 1]"
        else:
            width = self._lanes(c)[1]
            j0 = c.let("j0", f"g * {width}", "this group's first lane")
            lanes, scale_at = f"{j0} : {j0} + {width}", "[t : t + 1, g : g + 1]"
        tile = f"{c.src('x')}[t : t + 1, {lanes}]"
        return [
            f"{x} = " + c.fp32("x", tile),
            f"{amax} = pl.maximum(pl.row_max(pl.abs({x})), pl.full([1, 1], dtype=pl.FP32, value={floor}))",
            f"{sq} = pl.div(pl.full([1, 1], dtype=pl.FP32, value=127.0), {amax})",
            f"{q} = pl.cast(pl.row_expand_mul({x}, {sq}), target_type=pl.INT32, mode=\"rint\")  # half to even",
            f"{q} = pl.cast(pl.cast({q}, target_type=pl.FP16, mode=\"round\"), target_type=pl.INT8, mode=\"trunc\")",
            f"{c.dst('q')}[t : t + 1, {lanes}] = {q}",
            f"{c.dst('dequant')}{scale_at} = pl.recip({sq})",
        ]


OP = QuantRowwiseInt8()
