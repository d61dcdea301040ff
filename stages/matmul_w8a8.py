"""matmul_w8a8: int8 activations x int8 weights, int32 accumulation, dequantized to `out_dtype`.

`y[t, n] = float(sum_k a[t, k] * w[n, k]) * a_scale[t] * w_scale[n]` (per-row activation scale times
per-output-channel weight scale).
"""
from __future__ import annotations

from builder import dtypes
from builder.spec import DType
from builder.stage_api import Axis, Op, TensorType, expect
from stages.matmul_tiles import MatmulParams, matmul_tiles, pypto_k_loop, triton_k_loop


def golden_matmul_w8a8(a, a_scale, w, w_scale, *, out_dtype):
    """float(int8 a @ int8 w^T, exact) * row scale * channel scale, then rounded."""
    import torch

    acc = (a.double() @ w.double().T).float()  # exact: |acc| < 2**53
    y = acc * a_scale.float()[:, None] * w_scale.float()[None, :]
    return {"y": y.to(getattr(torch, out_dtype))}


# (block_n, block_k) defaults: an Ascend cube's 512 KiB L1 holds a [512, 512] int8 weight step next to
# the activation step, not a [512, 1024] one (measured with PyPTO's compile() at the full sizes)
DEFAULT_TILES = (512, 512)


class MatmulW8A8(Op):
    name = "matmul_w8a8"
    summary = "int8 x int8 -> int32 matmul with row and channel dequant scales"
    inputs = {"a": "[T, K] int8 activations", "a_scale": "[T] fp32 per-row dequant scale",
              "w": "[N, K] int8 weights", "w_scale": "[N] fp32 per-output-channel dequant scale"}
    outputs = {"y": "[T, N] dequantized result"}
    Params = MatmulParams
    golden_fn = golden_matmul_w8a8
    flops_kind = "int8"

    def infer(self, ins, p, dims):
        a, w = ins["a"], ins["w"]
        expect("a", a, rank=2, dtype=DType.int8)
        expect("w", w, rank=2, dtype=DType.int8, dims={1: a.shape[1]})
        expect("a_scale", ins["a_scale"], rank=1, dtype=DType.fp32, dims={0: a.shape[0]})
        expect("w_scale", ins["w_scale"], rank=1, dtype=DType.fp32, dims={0: w.shape[0]})
        return {"y": TensorType((a.shape[0], w.shape[0]), p.out_dtype)}

    def tiles(self, ins, p, dims):
        moved = sum(t.nbytes for t in ins.values())
        return matmul_tiles(p, ins["w"].shape[0], ins["a"].shape[1], *DEFAULT_TILES, programs=1, moved=moved)

    def domain(self, ins, p, dims):
        return (Axis.tiled("nb", self.tiles(ins, p, dims)["block_n"]),)

    def golden_args(self, p, dims, types):
        return {"out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        t, k = ins["a"].numel_shape
        return 2 * t * k * ins["w"].numel_shape[0]

    def _k_loop_args(self, c) -> dict:
        return dict(a=c.src("a"), a_row0="0", w=c.src("w"), rows=c.dim("a", 0), rows_dim=c.type("a").shape[0],
                    k_dim=c.dim("a", 1), dtype=DType.int8)

    def triton(self, c):
        return triton_k_loop(c, w_row0="0", **self._k_loop_args(c)) + [
            f"a_scale = tl.load({c.src('a_scale')} + r, mask=live, other=0.0)",
            "w_scale = " + c.load(f"{c.src('w_scale')} + n", "n"),
            "y = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]",
            c.store(f"{c.dst('y')} + r[:, None] * {c.dim('w', 0)} + n[None, :]", c.cast_for("y", "y"), "r", "n",
                    mask="live[:, None]"),
        ]

    def pypto(self, c):
        t, bn = c.dim("a", 0), c.tile("nb")
        acc, y = c.local("acc"), c.local("y")
        n0 = c.let("n0", f"nb * {c.stride('nb')}", "this tile's output channels")
        return pypto_k_loop(c, w_row0=n0, acc=acc, **self._k_loop_args(c)) + [
            f"{y} = pl.row_expand_mul(pl.cast({acc}, target_type=pl.FP32), "
            f"pl.reshape({c.src('a_scale')}[0:1, 0:{t}], [{t}, 1]))",
            f"{y} = pl.col_expand_mul({y}, {c.src('w_scale')}[0:1, {n0} : {n0} + {bn}])",
            f"{c.dst('y')}[0:{t}, {n0} : {n0} + {bn}] = {c.cast(y, 'y')}",
        ]


OP = MatmulW8A8()
