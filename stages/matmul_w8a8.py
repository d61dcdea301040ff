"""matmul_w8a8: int8 activations x int8 weights, int32 accumulation, dequantized to `out_dtype`.

`y[t, n] = float(sum_k a[t, k] * w[n, k]) * a_scale[t] * w_scale[n]` (per-row activation scale times
per-output-channel weight scale). The weight is stored `[N, K]` (`weight_layout: nk`, a linear layer's
rows) or `[K, N]` (`kn`, qkv_proj_rope's `wq_b`).

With per-group activation scales (`a_scale` [T, G], G dividing K: quant_rowwise_int8 with `groups`),
K is cut into G equal groups and `y[t, n] = (sum_g float(acc_g[t, n]) * a_scale[t, g]) * w_scale[n]`,
`acc_g` the exact int32 sum over group g, the groups added in ascending order in fp32 from zero. That
is DeepSeek-V4-Pro's o-projection B in pypto-lib's order (proj_b_act), bit for bit: each group's sum
is an exact integer below 2**24, so only the ordered fp32 products and sums round, as in the golden.
A `[T, 1]` scale (G = 1) is the per-row scale as a column (qkv_proj_rope's `qr_scale`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from builder import dtypes, expr
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


def golden_matmul_w8a8_groups(a, a_scale, w, w_scale, *, out_dtype, weight_layout="nk"):
    """Per K group g: float(int8 a_g @ int8 w_g^T, exact) * a_scale[:, g], summed over g in ascending
    order from zero in fp32; times the channel scale, then rounded."""
    import torch

    if weight_layout == "kn":
        w = w.T
    groups = a_scale.shape[1]
    step = a.shape[1] // groups
    y = torch.zeros(a.shape[0], w.shape[0])
    for g in range(groups):
        part = (a[:, g * step:(g + 1) * step].double() @ w[:, g * step:(g + 1) * step].double().T).float()
        y = y + part * a_scale.float()[:, g:g + 1]
    return {"y": (y * w_scale.float()[None, :]).to(getattr(torch, out_dtype))}


class W8A8Params(MatmulParams):
    weight_layout: Literal["nk", "kn"] = Field("nk", description="`nk`: w is [N, K]; `kn`: w is [K, N]")


# (block_n, block_k) defaults: an Ascend cube's 512 KiB L1 holds a [512, 512] int8 weight step next to
# the activation step, not a [512, 1024] one (measured with PyPTO's compile() at the full sizes)
DEFAULT_TILES = (512, 512)
# a default step's int8 operands (rows padded to 16, plus the weight tile) stay within 16 kB: beyond
# that, the Triton int8 dot spills registers on sm_80 and sm_90 (`build --target`: mtp_projection's
# 32-row h_proj at block_n 32 x block_k 512, qkv_proj_rope's q_proj at 256 x 512)
STEP_BYTES = 16 * 1024


def _groups(types) -> int:
    """Activation-scale groups along K: 0 for one scale per row ([T])."""
    scale = types["a_scale"]
    return scale.shape[1].value if len(scale.shape) == 2 else 0


class MatmulW8A8(Op):
    name = "matmul_w8a8"
    summary = "int8 x int8 -> int32 matmul with row (or row and K-group) and channel dequant scales"
    inputs = {"a": "[T, K] int8 activations",
              "a_scale": "[T] fp32 per-row dequant scale, or [T, G] per row and K group",
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
        expect("a_scale", a_scale, dtype=DType.fp32, dims={0: a.shape[0]})
        if len(a_scale.shape) not in (1, 2) or len(a_scale.shape) == 2 and a.shape[1].value % a_scale.shape[1].value:
            raise StageError("shape-mismatch", f"input `a_scale` is {a_scale.describe()}; this op reads [T], or [T, G] "
                                               f"with G dividing {a.shape[1].text} = {a.shape[1].value}", "a_scale")
        expect("w_scale", ins["w_scale"], rank=1, dtype=DType.fp32, dims={0: w.shape[n_axis]})
        return {"y": TensorType((a.shape[0], w.shape[n_axis]), p.out_dtype)}

    @staticmethod
    def _n_axis(p) -> int:
        return 0 if p.weight_layout == "nk" else 1

    def tiles(self, ins, p, dims):
        moved = sum(t.nbytes for t in ins.values())
        k = ins["a"].shape[1]
        if _groups(ins) > 1:  # block_k steps through one group's depth
            k = dims.dim(expr.quotient(k.text, ins["a_scale"].shape[1].text))
        return matmul_tiles(p, ins["w"].shape[self._n_axis(p)], k, *DEFAULT_TILES, programs=1, moved=moved,
                            rows=ins["a"].shape[0].value, step_bytes=STEP_BYTES)

    def domain(self, ins, p, dims):
        return (Axis.tiled("nb", self.tiles(ins, p, dims)["block_n"]),)

    def golden_function(self, p, types):
        return golden_matmul_w8a8_groups if _groups(types) else golden_matmul_w8a8

    def golden_args(self, p, dims, types):
        args = {"out_dtype": dtypes.info(p.out_dtype).torch}
        return args | ({"weight_layout": p.weight_layout} if p.weight_layout != "nk" else {})

    def flops(self, ins, outs, p):
        t, k = ins["a"].numel_shape
        return 2 * t * k * outs["y"].numel_shape[1]

    def _k_loop_args(self, c) -> dict:
        return dict(a=c.src("a"), a_row0="0", w=c.src("w"), rows=c.dim("a", 0), rows_dim=c.type("a").shape[0],
                    k_dim=c.dim("a", 1), dtype=DType.int8, w_kn=c.p.weight_layout == "kn",
                    split_k=max(1, _groups(c.stage.in_types)))

    def triton(self, c):
        n_dim = c.dim("y", 1)
        lines = triton_k_loop(c, w_row0="0", n_dim=n_dim, **self._k_loop_args(c))  # first: it defines the mask
        store = c.store(f"{c.dst('y')} + r[:, None] * {n_dim} + n[None, :]", c.cast_for("y", "y"), "r", "n",
                        mask="live[:, None]")
        w_scale = "w_scale = " + c.load(f"{c.src('w_scale')} + n", "n")
        if _groups(c.stage.in_types) > 1:
            return _triton_group_scales(lines, c) + [w_scale, "y = acc * w_scale[None, :]", store]
        return lines + [
            f"a_scale = tl.load({c.src('a_scale')} + r, mask=live, other=0.0)",
            w_scale,
            "y = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]",
            store,
        ]

    def pypto(self, c):
        t, bn = c.dim("a", 0), c.tile("nb")
        acc, y = c.local("acc"), c.local("y")
        n0 = c.let("n0", f"nb * {c.stride('nb')}", "this tile's output channels")
        lines = pypto_k_loop(c, w_row0=n0, acc=acc, **self._k_loop_args(c))
        if _groups(c.stage.in_types) > 1:
            lines = _pypto_group_scales(lines, c, acc, y)
        else:
            lines.append(f"{y} = pl.row_expand_mul(pl.cast({acc}, target_type=pl.FP32), "
                         f"{_pypto_scale_column(c, '0')})")
        return lines + [
            f"{y} = pl.col_expand_mul({y}, {c.src('w_scale')}[0:1, {n0} : {n0} + {bn}])",
            f"{c.dst('y')}[0:{t}, {n0} : {n0} + {bn}] = {c.cast(y, 'y')}",
        ]


def _pypto_scale_column(c, group: str) -> str:
    """`pl` code of the [T, 1] activation scales of K group `group` (the only one for [T] scales)."""
    t = c.dim("a", 0)
    if len(c.type("a_scale").shape) == 1:
        return f"pl.reshape({c.src('a_scale')}[0:1, 0:{t}], [{t}, 1])"
    cols = "0:1" if group == "0" else f"{group} : {group} + 1"
    return f"{c.src('a_scale')}[0:{t}, {cols}]"


# The group scales reuse matmul_tiles' split-K loops, whose K slices are the groups: each slice's exact
# int32 sum is dequantised by its group's scale before the ascending fp32 sum, in place of the plain
# slice sum. The lines edited are checked, so a change to those loops fails here, loudly.
def _replace(lines: list[str], old: str, new: list[str]) -> list[str]:
    at = [i for i, line in enumerate(lines) if line == old]
    if len(at) != 1:
        raise AssertionError(f"matmul_w8a8: the split-K loop no longer has one line `{old}`")
    return lines[:at[0]] + new + lines[at[0] + 1:]


def _triton_group_scales(lines: list[str], c) -> list[str]:
    pad = next(line for line in lines if line.startswith("acc = tl.zeros(")).split("(", 1)[1]
    groups = c.dim("a_scale", 1)
    lines = _replace(lines, f"acc = tl.zeros({pad}", [f"acc = tl.zeros({pad.replace('tl.int32', 'tl.float32')}"])
    return _replace(lines, "    acc += part", [
        f"    a_scale = tl.load({c.src('a_scale')} + r * {groups} + s, mask=live, other=0.0)",
        "    acc += part.to(tl.float32) * a_scale[:, None]  # group s dequantised, groups added in order"])


def _pypto_group_scales(lines: list[str], c, acc: str, y: str) -> list[str]:
    part, s = c.local("part"), c.local("s")
    first = next(i for i, line in enumerate(lines) if line.startswith(f"for {s} in pl.range(1, "))
    start = [f"{y} = pl.row_expand_mul(pl.cast({acc}, target_type=pl.FP32), {_pypto_scale_column(c, '0')})"]
    lines = lines[:first] + start + lines[first:]
    return _replace(lines, f"    {acc} = pl.add({acc}, {part})", [
        f"    {y} = pl.add({y}, pl.row_expand_mul(pl.cast({part}, target_type=pl.FP32), "
        f"{_pypto_scale_column(c, s)}))"])


OP = MatmulW8A8()
