"""sparse_attention: softmax attention of every query head over its token's gathered keys, with a sink.

`s_j = scale * <q, k_j>`, `o = sum_j exp(s_j - m) v_j / (sum_j exp(s_j - m) + exp(sink - m))`; the sink
enters the denominator only. A token without valid keys outputs zeros. Tiled online softmax over key
blocks of `block_n`; output rounded to the output dtype.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder import dtypes
from builder.spec import DimExpr, DType, Int
from builder.stage_api import Axis, Op, Params, TensorType, choose_tile, expect
from stages.dots import exact_dot


def golden_sparse_attention(q, kv, valid, sink, *, scale, out_dtype):
    """Closed-form softmax over the valid keys with the sink in the denominator; fp32 math."""
    import torch

    q, kv = q.float(), kv.float()
    valid = valid.bool()[:, None, :]
    s = scale * torch.einsum("thd,tnd->thn", q, kv)
    s = s.masked_fill(~valid, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m_safe)
    den = e.sum(-1, keepdim=True) + torch.exp(sink.float()[None, :, None] - m_safe)
    o = torch.einsum("thn,tnd->thd", e / den, kv)
    o = torch.where(valid.any(-1, keepdim=True), o, torch.zeros_like(o))
    return {"o": o.to(getattr(torch, out_dtype))}


class AttentionParams(Params):
    scale: Optional[DimExpr] = Field(None, description="softmax scale; default `D ** -0.5`")
    block_n: Optional[Int] = Field(None, ge=16, description="keys per online-softmax step (default: up to 32)")
    block_h: Optional[Int] = Field(None, ge=16, description="query heads per program (default 16; a tl.dot "
                                                            "operand needs 16 rows, masked when H is smaller)")
    out_dtype: DType = DType.bf16


class SparseAttention(Op):
    name = "sparse_attention"
    summary = "tiled online-softmax attention with per-head sink over a sparse key list"
    inputs = {"q": "[T, H, D] queries", "kv": "[T, N, D] gathered keys (= values)",
              "valid": "[T, N] int32 key validity", "sink": "[H] fp32 per-head sink logit"}
    outputs = {"o": "[T, H, D] attention output"}
    Params = AttentionParams
    golden_fn = golden_sparse_attention

    def infer(self, ins, p, dims):
        q, kv = ins["q"], ins["kv"]
        expect("q", q, rank=3)
        expect("kv", kv, rank=3, dims={0: q.shape[0], 2: q.shape[2]}, layout=q.layout)
        expect("valid", ins["valid"], rank=2, dtype=DType.int32, dims={0: kv.shape[0], 1: kv.shape[1]})
        expect("sink", ins["sink"], rank=1, dtype=DType.fp32, dims={0: q.shape[1]})
        return {"o": TensorType(q.shape, p.out_dtype, q.layout or kv.layout)}

    def scale(self, types, p, dims) -> tuple[str, float]:
        """(expression, value) of the softmax scale; default `D ** -0.5` with D the head dim."""
        text = p.scale if p.scale is not None else f"{types['q'].shape[2].text} ** -0.5"
        return str(text), float(dims.value(text))

    def tiles(self, ins, p, dims):
        return {"block_h": choose_tile("block_h", p.block_h, ins["q"].shape[1], 16, minimum=16),
                "block_n": choose_tile("block_n", p.block_n, ins["kv"].shape[1], 32, minimum=16)}

    def domain(self, ins, p, dims):
        return (Axis("t", ins["q"].shape[0], parallel=True), Axis.tiled("hb", self.tiles(ins, p, dims)["block_h"]))

    def golden_args(self, p, dims, types):
        return {"scale": self.scale(types, p, dims)[1], "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        t, h, d = ins["q"].numel_shape
        n = ins["kv"].numel_shape[1]
        return 4 * t * h * n * d

    def _names(self, c) -> tuple[str, ...]:
        """(H, D, keys, scale constant, key-block constant, head tile constant) as code, for any backend."""
        text, value = self.scale(c.stage.in_types, c.p, c.dims)
        block_n = c.stage.tiles["block_n"]
        return (c.dim("q", 1), c.dim("q", 2), c.dim("kv", 1), c.const("SCALE", value, text),
                c.const("BLOCK_N", block_n.size, "keys per online-softmax step"
                        + (", block_n default" if block_n.defaulted else "")), c.tile("hb"))

    def triton(self, c):
        h, d, keys, scale, bn, bh = self._names(c)
        heads = f"(t * {h} + h)[:, None] * {d} + d[None, :]"
        _, qk = exact_dot("q", "tl.trans(kv)")  # q and kv hold bf16 values: exact on tensor cores
        split, pv = exact_dot("p", "kv", a_exact=False)
        return c.lanes("h", "hb") + c.span("d", c.type("q").shape[2], "D") + [
            "q = " + c.load(f"{c.src('q')} + {heads}", "h", "d") + ".to(tl.float32)",
            f"m = tl.full([{bh}], -1.0e30, tl.float32)  # finite: a token with no valid key ends with o = 0",
            f"l = tl.zeros([{bh}], tl.float32)",
            f"acc = tl.zeros([{bh}, {c.span_width('d')}], tl.float32)",
            f"for n0 in range(0, {keys}, {bn}):",
            f"    n = n0 + tl.arange(0, {bn})",
            f"    live = (n < {keys}) & (tl.load({c.src('valid')} + t * {keys} + n, mask=n < {keys}, other=0) != 0)",
            "    kv = " + c.load(f"{c.src('kv')} + (t * {keys} + n)[:, None] * {d} + d[None, :]", "n", "d",
                              mask="live[:, None]"),
            "    kv = kv.to(tl.float32)",
            f"    s = {qk} * {scale}",
            "    s = tl.where(live[None, :], s, float(\"-inf\"))",
            "    m_new = tl.maximum(m, tl.max(s, axis=1))",
            "    alpha = tl.exp(m - m_new)",
            "    p = tl.exp(s - m_new[:, None])",
            "    l = l * alpha + tl.sum(p, axis=1)",
            *("    " + line for line in split),
            f"    pv = {pv}",
            "    acc = acc * alpha[:, None] + pv",
            "    m = m_new",
            "sink = " + c.load(f"{c.src('sink')} + h", "h"),
            "o = acc / (l + tl.exp(sink - m))[:, None]",
            c.store(f"{c.dst('o')} + {heads}", c.cast_for("o", "o"), "h", "d"),
        ]

    def pypto(self, c):
        h, d, keys, scale, bn, bh = self._names(c)
        q, m, l, acc, kv, bias, s, m_new, p, alpha, sink, den = (c.local(x) for x in (
            "q", "m", "l", "acc", "kv", "bias", "s", "m_new", "p", "alpha", "sink", "den"))
        row = c.let("r0", f"t * {h} + hb * {c.stride('hb')}", "first row of this head tile")
        head0 = f"hb * {c.stride('hb')}"

        key0 = c.let("key0", f"t * {keys}", "this token's first gathered row")

        def scores(n0: str, size: str) -> list[str]:
            rows = f"{key0} + {n0} : {key0} + {n0} + {size}" if n0 != "0" else f"{key0} : {key0} + {size}"
            cols = f"{n0} : {n0} + {size}" if n0 != "0" else f"0:{size}"
            return [
                f"{kv} = {c.src('kv')}[{rows}, 0:{d}]",
                f"{bias} = pl.cast({c.src('valid')}[t : t + 1, {cols}], target_type=pl.FP32)",
                f"{bias} = pl.mul(pl.sub({bias}, 1.0), 1.0e30)  # 0 for a valid key, -1e30 otherwise",
                f"{s} = pl.matmul({q}, {kv}, b_trans=True, out_dtype=pl.FP32)",
                f"{s} = pl.col_expand_add(pl.mul({s}, {scale}), {bias})",
            ]

        pv = f"pl.matmul({p}, pl.cast({kv}, target_type=pl.FP32), out_dtype=pl.FP32)"

        def step(n0: str, size: str) -> list[str]:
            return scores(n0, size) + [
                f"{m_new} = pl.maximum({m}, pl.row_max({s}))",
                f"{p} = pl.exp(pl.row_expand_sub({s}, {m_new}))",
                f"{alpha} = pl.exp(pl.sub({m}, {m_new}))",
                f"{l} = pl.add(pl.mul({l}, {alpha}), pl.row_sum({p}))",
                f"{acc} = pl.add(pl.row_expand_mul({acc}, {alpha}), {pv})",
                f"{m} = {m_new}",
            ]

        # Key blocks of `block_n`: the first starts the running max, sum and output (PyPTO lays a
        # `pl.full([M, 1])` column out row-major, which its vector ops cannot mix with the col-major
        # columns of row reductions); whole blocks follow, then a shorter last block when `block_n`
        # does not divide the keys. A finite -1e30 bias keeps an all-invalid block harmless.
        n_keys, block = c.type("kv").shape[1].value, c.size("block_n")
        first = bn if n_keys >= block else keys
        tail = n_keys % block if n_keys > block else 0
        lines = [f"{q} = {c.src('q')}[{row} : {row} + {bh}, 0:{d}]",
                 "# the first key block starts the running max, sum and output"] + scores("0", first) + [
            f"{m} = pl.row_max({s})",
            f"{p} = pl.exp(pl.row_expand_sub({s}, {m}))",
            f"{l} = pl.row_sum({p})",
            f"{acc} = {pv}",
        ]
        if n_keys >= 2 * block:
            end = keys if not tail else f"{keys} // {bn} * {bn}"
            lines += [f"for n0 in pl.range({bn}, {end}, {bn}):"] + ["    " + line for line in step("n0", bn)]
        if tail:
            size = c.const("KEY_TAIL", tail, f"{c.type('kv').shape[1].text} % {block}: the last key block")
            lines += ["# the last, shorter key block"] + step(f"({keys} - {size})", size)
        return lines + [
            f"{sink} = pl.reshape({c.src('sink')}[0:1, {head0} : {head0} + {bh}], [{bh}, 1])",
            f"{den} = pl.add({l}, pl.exp(pl.sub({sink}, {m})))",
            f"{c.dst('o')}[{row} : {row} + {bh}, 0:{d}] = {c.cast(f'pl.row_expand_div({acc}, {den})', 'o')}",
        ]


OP = SparseAttention()
