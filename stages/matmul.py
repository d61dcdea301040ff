"""matmul: `y[t, n] = sum_k x[t, k] * w[k, n]` with float operands, fp32 accumulation, one rounding.

`weight_layout: kn` stores the weight `[K, N]` (qkv_proj_rope's `wq_a [7168, 1536]`, `wkv`), `nk` stores
it `[N, K]` (a linear layer's rows). `x` and `w` are both bf16 or both fp32. The golden computes in
fp32 (`x.float() @ w.float()`, torch's order of summation); with `split_k: S`, K is cut into S equal
slices, each slice's product is computed on its own and the slices are added in ascending order in
fp32 (`((P0 + P1) + P2) + ...`, qkv_proj_rope's QR_OK = 2 and KV_OK = 4). The result is rounded once to
`out_dtype`. pypto-lib's qkv golden further mirrors the A5 cube's accumulation inside a slice (16-deep
fp64 dot products added to an fp32 sum in order); this golden does not: the difference is a few fp32
ulps of the sum, which can move a later int8 code by one step at a rounding boundary (qkv_proj_rope's
`qr` comparator allows such steps).

Backends: Triton accumulates `block_k` steps in ascending order with `tl.dot` on tensor cores, exactly
for bf16 operands (stages/dots.py), over all rows at once (padded to 16 for `tl.dot`); PyPTO with
`pl.matmul` / `pl.matmul_acc` steps into an fp32 accumulator. With `split_k`, both run as two loop
blocks, as pypto-lib's qkv_proj_rope does: `partial` (one program per column tile and slice) writes
each slice's product, and `reduce` adds them in ascending order.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder import dtypes, expr
from builder.spec import DType, Int
from builder.stage_api import Axis, Dim, Op, Phase, StageError, TensorType, expect
from stages.matmul_tiles import MatmulParams, matmul_tiles, pypto_k_loop, triton_k_loop


def golden_matmul(x, w, *, weight_layout, split_k, out_dtype):
    """fp32 x @ w (w read as [K, N]); with split_k > 1, equal K slices added in ascending order."""
    import torch

    x, w = x.float(), w.float()
    if weight_layout == "nk":
        w = w.T
    step = x.shape[-1] // split_k
    y = x[:, :step] @ w[:step]
    for s in range(1, split_k):
        y = y + x[:, s * step:(s + 1) * step] @ w[s * step:(s + 1) * step]
    return {"y": y.to(getattr(torch, out_dtype))}


class MatmulParams2(MatmulParams):
    weight_layout: Literal["kn", "nk"] = Field(description="`kn`: w is [K, N]; `nk`: w is [N, K]")
    split_k: Int = Field(1, ge=1, le=64, description="equal K slices, each summed on its own, added in "
                                                      "ascending order")


# (block_n, block_k) when not given, capped at the extents: a [64, 128] step of an fp32-widened bf16 weight
# needs 132 registers on sm_90 without spilling (`build --target cuda:sm_90`, T = 8, K = 7168, N = 1536)
DEFAULT_TILES = (64, 128)


class Matmul(Op):
    name = "matmul"
    summary = "float x @ w with fp32 accumulation, [K, N] or [N, K] weight, optional ordered K slices"
    inputs = {"x": "[T, K] activations (bf16 or fp32)", "w": "[K, N] or [N, K] weight, as `weight_layout` says"}
    outputs = {"y": "[T, N] product"}
    Params = MatmulParams2
    golden_fn = golden_matmul

    def infer(self, ins, p, dims):
        x, w = ins["x"], ins["w"]
        expect("x", x, rank=2)
        if x.dtype not in (DType.bf16, DType.fp32):
            raise StageError("dtype-mismatch", f"input `x` is {x.dtype.value}; matmul multiplies bf16 or fp32 "
                                               "(int8 operands: matmul_w8a8)", "x")
        k_axis = 0 if p.weight_layout == "kn" else 1
        expect("w", w, rank=2, dtype=x.dtype, dims={k_axis: x.shape[1]})
        if p.out_dtype not in (DType.bf16, DType.fp32):
            raise StageError("bad-value", f"`out_dtype` = {p.out_dtype.value}: matmul writes bf16 or fp32",
                             param="out_dtype")
        if x.shape[1].value % p.split_k:
            raise StageError("bad-value", f"`split_k` = {p.split_k} does not divide {x.shape[1].text} = "
                                          f"{x.shape[1].value}", param="split_k",
                             hint="the slices are equal: use a divisor of K")
        return {"y": TensorType((x.shape[0], w.shape[1 - k_axis]), p.out_dtype)}

    def tiles(self, ins, p, dims):
        x, w = ins["x"], ins["w"]
        k = x.shape[1] if p.split_k == 1 else dims.dim(expr.quotient(x.shape[1].text, p.split_k))
        moved = sum(t.nbytes for t in ins.values())
        return matmul_tiles(p, w.shape[1 if p.weight_layout == "kn" else 0], k, *DEFAULT_TILES, programs=p.split_k,
                            moved=moved)

    def domain(self, ins, p, dims):
        return (Axis.tiled("nb", self.tiles(ins, p, dims)["block_n"]),)

    def phases(self, ins, p, dims):
        if p.split_k == 1:
            return ()
        out = self.domain(ins, p, dims)
        return (Phase("partial", out + (Axis("s", Dim(str(p.split_k), p.split_k), parallel=True),), reads=("x", "w"),
                      private_writes=("parts",)),
                Phase("reduce", out, writes=("y",), private_reads=("parts",)))

    def private(self, ins, p, dims):
        if p.split_k == 1:
            return {}
        y = self.infer(ins, p, dims)["y"]
        return {"parts": TensorType((Dim(str(p.split_k), p.split_k),) + y.shape, DType.fp32)}

    def golden_args(self, p, dims, types):
        return {"weight_layout": p.weight_layout, "split_k": p.split_k, "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        t, k = ins["x"].numel_shape
        return 2 * t * k * outs["y"].numel_shape[1]

    def _k_loop_args(self, c) -> dict:
        return dict(a=c.src("x"), a_row0="0", w=c.src("w"), rows=c.dim("x", 0), rows_dim=c.type("x").shape[0],
                    k_dim=c.dim("x", 1), dtype=c.type("x").dtype, w_kn=c.p.weight_layout == "kn",
                    k_slice=c.phase == "partial")

    def triton(self, c):
        t, n_dim = c.dim("x", 0), c.dim("y", 1)
        if c.phase == "reduce":  # the slices' products, added in ascending order
            split = c.const("SPLIT_K", c.p.split_k, "K slices, each summed on its own, added in ascending order")
            at = f"r[:, None] * {n_dim} + n[None, :]"
            lines = c.lanes("n", "nb") + c.span("r", c.type("y").shape[0], "T")
            parts = c.private("parts")
            lines += [f"acc = {c.load(f'{parts} + {at}', 'r', 'n')}", f"for s in range(1, {split}):",
                      f"    acc += {c.load(f'{parts} + s * {t} * {n_dim} + {at}', 'r', 'n')}"]
            return lines + [c.store(f"{c.dst('y')} + {at}", c.cast_for("y", "acc"), "r", "n")]
        lines = triton_k_loop(c, w_row0="0", n_dim=n_dim, **self._k_loop_args(c))
        if c.phase == "partial":
            return lines + [c.store(f"{c.private('parts')} + (s * {t} + r[:, None]) * {n_dim} + n[None, :]", "acc",
                                    "r", "n", mask="live[:, None]")]
        return lines + [c.store(f"{c.dst('y')} + r[:, None] * {n_dim} + n[None, :]", c.cast_for("y", "acc"), "r",
                                "n", mask="live[:, None]")]

    def pypto(self, c):
        t, bn = c.dim("x", 0), c.tile("nb")
        acc = c.local("acc")
        n0 = c.let("n0", f"nb * {c.stride('nb')}", "this tile's output columns")
        cols = f"{n0} : {n0} + {bn}"
        if c.phase == "reduce":
            split = c.const("SPLIT_K", c.p.split_k, "K slices, each summed on its own, added in ascending order")
            s = c.local("s")
            return [f"{acc} = {c.private('parts')}[0:{t}, {cols}]",
                    f"for {s} in pl.range(1, {split}):",
                    f"    {acc} = pl.add({acc}, {c.private('parts')}[{s} * {t} : {s} * {t} + {t}, {cols}])",
                    f"{c.dst('y')}[0:{t}, {cols}] = {c.cast(acc, 'y')}"]
        lines = pypto_k_loop(c, w_row0=n0, acc=acc, **self._k_loop_args(c))
        if c.phase == "partial":
            return lines + [f"{c.private('parts')}[s * {t} : s * {t} + {t}, {cols}] = {acc}"]
        return lines + [f"{c.dst('y')}[0:{t}, {cols}] = {c.cast(acc, 'y')}"]


OP = Matmul()
