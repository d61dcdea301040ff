"""matmul_w8a8: int8 activations x int8 weights, int32 accumulation, dequantized to `out_dtype`.

`y[t, n] = float(sum_k a[t, k] * w[n, k]) * a_scale[t] * w_scale[n]` (per-row activation scale times
per-output-channel weight scale). The weight is stored `[N, K]` (`weight_layout: nk`, a linear layer's
rows) or `[K, N]` (`kn`, qkv_proj_rope's `wq_b`); the row scale is `[T]` or a `[T, 1]` column.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder import dtypes
from builder.spec import DType
from builder.stage_api import Axis, Op, StageError, TensorType, expect
from stages.matmul_tiles import MatmulParams, matmul_tiles, pypto_k_loop, triton_k_loop


def golden_matmul_w8a8(a, a_scale, w, w_scale, *, out_dtype, weight_layout="nk"):
    """float(int8 a @ int8 w^T, exact) * row scale * channel scale, then rounded."""
    import torch

    w = w.double().T if weight_layout == "nk" else w.double()
    acc = (a.double() @ w).float()  # exact: |acc| < 2**53
    y = acc * a_scale.float().reshape(-1, 1) * w_scale.float()[None, :]
    return {"y": y.to(getattr(torch, out_dtype))}


class W8A8Params(MatmulParams):
    weight_layout: Literal["nk", "kn"] = Field("nk", description="`nk`: w is [N, K]; `kn`: w is [K, N]")


# (block_n, block_k) defaults: an Ascend cube's 512 KiB L1 holds a [512, 512] int8 weight step next to
# the activation step, not a [512, 1024] one (measured with PyPTO's compile() at the full sizes)
DEFAULT_TILES = (512, 512)
# a default step's int8 operands (rows padded to 16, plus the weight tile) stay within 16 kB: beyond
# that, the Triton int8 dot spills registers on sm_80 and sm_90 (`build --target`: mtp_projection's
# 32-row h_proj at block_n 32 x block_k 512, qkv_proj_rope's q_proj at 256 x 512)
STEP_BYTES = 16 * 1024


class MatmulW8A8(Op):
    name = "matmul_w8a8"
    summary = "int8 x int8 -> int32 matmul with row and channel dequant scales"
    inputs = {"a": "[T, K] int8 activations", "a_scale": "[T] or [T, 1] fp32 per-row dequant scale",
              "w": "[N, K] or [K, N] int8 weights, as `weight_layout` says",
              "w_scale": "[N] fp32 per-output-channel dequant scale"}
    outputs = {"y": "[T, N] dequantized result"}
    Params = W8A8Params
    golden_fn = golden_matmul_w8a8
    flops_kind = "int8"

    def infer(self, ins, p, dims):
        a, w, a_scale = ins["a"], ins["w"], ins["a_scale"]
        n_axis = self._n_axis(p)
        expect("a", a, rank=2, dtype=DType.int8)
        expect("w", w, rank=2, dtype=DType.int8, dims={1 - n_axis: a.shape[1]})
        if len(a_scale.shape) == 2 and a_scale.shape[1].value != 1:
            raise StageError("shape-mismatch", f"input `a_scale` is {a_scale.describe()}: a row scale is [T] or a "
                                               "[T, 1] column", "a_scale")
        expect("a_scale", a_scale, rank=len(a_scale.shape) if len(a_scale.shape) == 2 else 1, dtype=DType.fp32,
               dims={0: a.shape[0]})
        expect("w_scale", ins["w_scale"], rank=1, dtype=DType.fp32, dims={0: w.shape[n_axis]})
        return {"y": TensorType((a.shape[0], w.shape[n_axis]), p.out_dtype)}

    @staticmethod
    def _n_axis(p) -> int:
        return 0 if p.weight_layout == "nk" else 1

    def tiles(self, ins, p, dims):
        moved = sum(t.nbytes for t in ins.values())
        return matmul_tiles(p, ins["w"].shape[self._n_axis(p)], ins["a"].shape[1], *DEFAULT_TILES, programs=1,
                            moved=moved, rows=ins["a"].shape[0].value, step_bytes=STEP_BYTES)

    def domain(self, ins, p, dims):
        return (Axis.tiled("nb", self.tiles(ins, p, dims)["block_n"]),)

    def golden_args(self, p, dims, types):
        args = {"out_dtype": dtypes.info(p.out_dtype).torch}
        return args | ({"weight_layout": p.weight_layout} if p.weight_layout != "nk" else {})

    def flops(self, ins, outs, p):
        t, k = ins["a"].numel_shape
        return 2 * t * k * outs["y"].numel_shape[1]

    def _k_loop_args(self, c) -> dict:
        return dict(a=c.src("a"), a_row0="0", w=c.src("w"), rows=c.dim("a", 0), rows_dim=c.type("a").shape[0],
                    k_dim=c.dim("a", 1), dtype=DType.int8, w_kn=c.p.weight_layout == "kn")

    def triton(self, c):
        n_dim = c.dim("y", 1)
        return triton_k_loop(c, w_row0="0", n_dim=n_dim, **self._k_loop_args(c)) + [
            f"a_scale = tl.load({c.src('a_scale')} + r, mask=live, other=0.0)",
            "w_scale = " + c.load(f"{c.src('w_scale')} + n", "n"),
            "y = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]",
            c.store(f"{c.dst('y')} + r[:, None] * {n_dim} + n[None, :]", c.cast_for("y", "y"), "r", "n",
                    mask="live[:, None]"),
        ]

    def pypto(self, c):
        t, bn = c.dim("a", 0), c.tile("nb")
        acc, y = c.local("acc"), c.local("y")
        n0 = c.let("n0", f"nb * {c.stride('nb')}", "this tile's output channels")
        column = len(c.type("a_scale").shape) == 2  # [T, 1]: its 2-D view is the column itself
        a_scale = (f"{c.src('a_scale')}[0:{t}, 0:1]" if column
                   else f"pl.reshape({c.src('a_scale')}[0:1, 0:{t}], [{t}, 1])")
        return pypto_k_loop(c, w_row0=n0, acc=acc, **self._k_loop_args(c)) + [
            f"{y} = pl.row_expand_mul(pl.cast({acc}, target_type=pl.FP32), {a_scale})",
            f"{y} = pl.col_expand_mul({y}, {c.src('w_scale')}[0:1, {n0} : {n0} + {bn}])",
            f"{c.dst('y')}[0:{t}, {n0} : {n0} + {bn}] = {c.cast(y, 'y')}",
        ]


OP = MatmulW8A8()
