"""pack: join each head's non-rotary lanes with its new rotary lanes and lay heads out group-major.

Head h goes to group `g = h // (H / groups)`, row `g * T + t`, columns `(h % (H / groups)) * D ... + D`
of `[groups * T, (H / groups) * D]`: the model's `o.view(T, 1, groups, (H / groups) * D)`, group-major.
"""
from __future__ import annotations

from pydantic import Field

from builder.spec import DimExpr
from builder.stage_api import Op, StageError, TensorType, expect
from stages.rope_extract import HeadTiles, head_domain, head_tiles


def golden_pack(x, rope, *, groups):
    """Each head's first D - R lanes of x then its R new lanes; heads group-major [G * T, H / G * D]."""
    import torch

    t, h, d = x.shape
    heads = torch.cat([x[..., : d - rope.shape[-1]], rope], dim=-1)
    return {"packed": heads.reshape(t, groups, h // groups * d).transpose(0, 1).reshape(groups * t, -1)}


class PackParams(HeadTiles):
    groups: DimExpr = Field(description="output-projection groups (heads split evenly among them)")


class Pack(Op):
    name = "pack"
    summary = "NOPE lanes + new RoPE lanes, heads laid out group-major"
    inputs = {"x": "[T, H, D] heads (their first D - R lanes are kept)", "rope": "[T, H, R] new rotary lanes"}
    outputs = {"packed": "[groups * T, (H / groups) * D] group-major heads"}
    Params = PackParams
    golden_fn = golden_pack
    pointwise_inputs = frozenset({"x", "rope"})

    def infer(self, ins, p, dims):
        x, rope = ins["x"], ins["rope"]
        expect("x", x, rank=3)
        expect("rope", rope, rank=3, dtype=x.dtype, dims={0: x.shape[0], 1: x.shape[1]}, layout=x.layout)
        groups = dims.dim(p.groups)
        t, h, d = x.shape
        if rope.shape[2].value > d.value:
            raise StageError("shape-mismatch", f"input `rope` has {rope.shape[2].value} lanes, more than "
                                               f"the {d.value} of `x`", "rope")
        if groups.value < 1:
            raise StageError("bad-value", f"`groups` = {groups.text} = {groups.value}; at least 1 group is needed",
                             param="groups")
        if h.value % groups.value:
            raise StageError("bad-value", f"`groups` = {groups.text} = {groups.value} does not divide "
                                          f"{h.text} = {h.value} heads", param="groups")
        shape = dims.shape(f"{groups.text} * {t.text}", f"{h.text} // {groups.text} * {d.text}")
        return {"packed": TensorType(shape, x.dtype, rope.layout)}

    def tiles(self, ins, p, dims):
        return head_tiles(ins["x"], p)

    def domain(self, ins, p, dims):
        return head_domain(ins["x"], p)

    def golden_args(self, p, dims, types):
        return {"groups": int(dims.value(p.groups))}

    def _nope(self, c) -> str:
        """Code for the count of lanes kept from `x` (the kernel's NOPE dim when it defines one)."""
        return c.expr(f"{c.type('x').shape[2].text} - {c.type('rope').shape[2].text}")

    def triton(self, c):
        h, d, rope = c.dim("x", 1), c.dim("x", 2), c.dim("rope", 2)
        per_group = f"({h} // {c.expr(c.p.groups)})"
        t_dim, nope = c.dim("x", 0), self._nope(c)
        return c.lanes("h", "hb") + c.span("d", c.type("x").shape[2], "D") + [
            f"kept = d < {nope}",
            "x = " + c.load(f"{c.src('x')} + (t * {h} + h)[:, None] * {d} + d[None, :]", "h", "d"),
            "r = " + c.load(f"{c.src('rope')} + (t * {h} + h)[:, None] * {rope} + (d - {nope})[None, :]", "h", "d",
                            mask="~kept[None, :]"),
            f"row = (h // {per_group}) * {t_dim} + t",
            f"col = (h % {per_group}) * {d}",
            c.store(f"{c.dst('packed')} + (row * {per_group} * {d} + col)[:, None] + d[None, :]",
                    "tl.where(kept[None, :], x, r)", "h", "d"),
        ]

    def pypto(self, c):
        t_dim, h, d, rope = c.dim("x", 0), c.dim("x", 1), c.dim("x", 2), c.dim("rope", 2)
        per_group = f"({h} // {c.expr(c.p.groups)})"
        head, row, col, src = (c.local(v) for v in ("head", "row", "col", "src"))
        nope = self._nope(c)
        return [
            f"for {c.local('i')} in pl.range({c.tile('hb')}):",
            f"    {head} = hb * {c.stride('hb')} + {c.local('i')}",
            f"    {src} = t * {h} + {head}",
            f"    {row} = ({head} // {per_group}) * {t_dim} + t",
            f"    {col} = ({head} % {per_group}) * {d}",
            f"    {c.dst('packed')}[{row} : {row} + 1, {col} : {col} + {nope}] = "
            f"{c.src('x')}[{src} : {src} + 1, 0:{nope}]",
            f"    {c.dst('packed')}[{row} : {row} + 1, {col} + {nope} : {col} + {d}] = "
            f"{c.src('rope')}[{src} : {src} + 1, 0:{rope}]",
        ]


OP = Pack()
