"""quant_rowwise_int8: dynamic per-row A8 quantization.

`amax[t] = max(floor, max_j |x[t, j]|)`, `sq = 127 / amax`, `q = int8(round_half_even(x * sq))`,
and the dequant scale `sdq = 1 / sq` for the W8A8 projection that follows.
"""
from __future__ import annotations

from pydantic import Field

from builder.spec import DType, Float
from builder.stage_api import Axis, Op, Params, TensorType, expect


def golden_quant_rowwise_int8(x, *, amax_floor):
    """int8(round_half_even(x * 127 / amax)) per row, and the dequant scale amax / 127 (as 1 / sq)."""
    import torch

    x = x.float()
    sq = 127.0 / x.abs().amax(dim=-1).clamp_min(amax_floor)
    return {"q": torch.round(x * sq[:, None]).to(torch.int8), "dequant": 1.0 / sq}


class QuantParams(Params):
    amax_floor: Float = Field(1e-4, gt=0, description="lower bound of a row's amax (all-zero rows)")


class QuantRowwiseInt8(Op):
    name = "quant_rowwise_int8"
    summary = "per-row dynamic int8 quantization (round half to even)"
    inputs = {"x": "[T, N] activations"}
    outputs = {"q": "[T, N] int8 quantized activations", "dequant": "[T] fp32 per-row dequant scale (1 / sq)"}
    Params = QuantParams
    golden_fn = golden_quant_rowwise_int8

    def infer(self, ins, p, dims):
        x = ins["x"]
        expect("x", x, rank=2)
        return {"q": TensorType(x.shape, DType.int8), "dequant": TensorType(x.shape[:1], DType.fp32)}

    def domain(self, ins, p, dims):
        return (Axis("t", ins["x"].shape[0], parallel=True),)

    def golden_args(self, p, dims, types):
        return {"amax_floor": p.amax_floor}

    def flops(self, ins, outs, p):
        t, n = ins["x"].numel_shape
        return 3 * t * n

    def triton(self, c):
        n = c.dim("x", 1)
        floor = c.const("AMAX_FLOOR", c.p.amax_floor, "lower bound of a row's amax")
        return c.span("j", c.type("x").shape[1], "N") + [  # one program quantizes a whole row
            "x = " + c.load(f"{c.src('x')} + t * {n} + j", "j") + ".to(tl.float32)",  # padding: |0| adds nothing
            f"sq = 127.0 / tl.maximum(tl.max(tl.abs(x), axis=0), {floor})",
            c.store(f"{c.dst('q')} + t * {n} + j", f"{c.helper('round_half_even')}(x * sq).to(tl.int8)", "j"),
            f"tl.store({c.dst('dequant')} + t, 1.0 / sq)",
        ]

    def pypto(self, c):
        n = c.dim("x", 1)
        floor = c.const("AMAX_FLOOR", c.p.amax_floor, "lower bound of a row's amax")
        x, amax, sq, q = (c.local(v) for v in ("x", "amax", "sq", "q"))
        return [
            f"{x} = pl.cast({c.src('x')}[t : t + 1, 0:{n}], target_type=pl.FP32)",
            f"{amax} = pl.maximum(pl.row_max(pl.abs({x})), pl.full([1, 1], dtype=pl.FP32, value={floor}))",
            f"{sq} = pl.div(pl.full([1, 1], dtype=pl.FP32, value=127.0), {amax})",
            f"{q} = pl.cast(pl.row_expand_mul({x}, {sq}), target_type=pl.INT32, mode=\"rint\")  # half to even",
            f"{q} = pl.cast(pl.cast({q}, target_type=pl.FP16, mode=\"round\"), target_type=pl.INT8, mode=\"trunc\")",
            f"{c.dst('q')}[t : t + 1, 0:{n}] = {q}",
            f"{c.dst('dequant')}[0:1, t : t + 1] = pl.recip({sq})",
        ]


OP = QuantRowwiseInt8()
