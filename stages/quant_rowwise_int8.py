"""quant_rowwise_int8: dynamic per-row A8 quantization.

`amax[t] = max(floor, max_j |x[t, j]|)`, `sq = 127 / amax` (one correctly rounded division, as the
kernels compute it; pypto-lib's goldens write `127.0 / amax` in torch, which rounds `1 / amax` first and
so is an ulp off at times), `q = int8(round_half_even(x * sq))`,
and the dequant scale `sdq = 1 / sq` for the W8A8 projection that follows: `[T]`, or with `keepdim` a
`[T, 1]` column (qkv_proj_rope's `qr_scale`).
"""
from __future__ import annotations

from pydantic import Field

from builder.spec import DType, Float
from builder.stage_api import Axis, Op, Params, TensorType, expect


def golden_quant_rowwise_int8(x, *, amax_floor, keepdim=False):
    """int8(round_half_even(x * 127 / amax)) per row, and the dequant scale amax / 127 (as 1 / sq)."""
    import torch

    x = x.float()
    amax = x.abs().amax(dim=-1).clamp_min(amax_floor)
    sq = torch.full_like(amax, 127.0) / amax  # a true division: torch's `127.0 / amax` is 127 * (1 / amax)
    dequant = 1.0 / sq
    return {"q": torch.round(x * sq[:, None]).to(torch.int8), "dequant": dequant[:, None] if keepdim else dequant}


class QuantParams(Params):
    amax_floor: Float = Field(1e-4, gt=0, description="lower bound of a row's amax (all-zero rows)")
    keepdim: bool = Field(False, description="write the dequant scale as a [T, 1] column instead of [T]")


class QuantRowwiseInt8(Op):
    name = "quant_rowwise_int8"
    summary = "per-row dynamic int8 quantization (round half to even)"
    inputs = {"x": "[T, N] activations"}
    outputs = {"q": "[T, N] int8 quantized activations",
               "dequant": "[T] (or [T, 1] with `keepdim`) fp32 per-row dequant scale (1 / sq)"}
    Params = QuantParams
    golden_fn = golden_quant_rowwise_int8

    def infer(self, ins, p, dims):
        x = ins["x"]
        expect("x", x, rank=2)
        scale = x.shape[:1] + ((dims.dim(1),) if p.keepdim else ())
        return {"q": TensorType(x.shape, DType.int8), "dequant": TensorType(scale, DType.fp32)}

    def domain(self, ins, p, dims):
        return (Axis("t", ins["x"].shape[0], parallel=True),)

    def golden_args(self, p, dims, types):
        return {"amax_floor": p.amax_floor} | ({"keepdim": True} if p.keepdim else {})

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
        row = f"{c.src('x')}[t : t + 1, 0:{n}]"
        return [
            f"{x} = " + (row if c.type("x").dtype is DType.fp32 else f"pl.cast({row}, target_type=pl.FP32)"),
            f"{amax} = pl.maximum(pl.row_max(pl.abs({x})), pl.full([1, 1], dtype=pl.FP32, value={floor}))",
            f"{sq} = pl.div(pl.full([1, 1], dtype=pl.FP32, value=127.0), {amax})",
            f"{q} = pl.cast(pl.row_expand_mul({x}, {sq}), target_type=pl.INT32, mode=\"rint\")  # half to even",
            f"{q} = pl.cast(pl.cast({q}, target_type=pl.FP16, mode=\"round\"), target_type=pl.INT8, mode=\"trunc\")",
            f"{c.dst('q')}[t : t + 1, 0:{n}] = {q}",
            f"{c.dst('dequant')}[{'t : t + 1, 0:1' if c.p.keepdim else '0:1, t : t + 1'}] = pl.recip({sq})",
        ]


OP = QuantRowwiseInt8()
