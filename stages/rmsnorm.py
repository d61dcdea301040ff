"""rmsnorm: `y = x * rsqrt(mean(x^2 over the last axis) + eps) [* gamma]`, over rows of any rank.

Every row of the last axis (D lanes: `[T, D]` rows, `[T, H, D]` per head, `[T, 4, D]` per (token, hc)
row) is normalized on its own, in fp32 (`x` and `gamma` are widened first):

1. `sq = 0`; for each chunk of `chunk` lanes in ascending order (the last one may be shorter; no
   `chunk`: the whole row is one chunk) `sq = sq + s(chunk * chunk)`, where `s` sums the chunk's lanes:
   - `order: plain`: `torch.sum` (its order is torch's own, not specified; mtp_projection's golden);
   - `order: a5`: pypto-lib's mirror of A5 TROWSUM: the chunk is cut into 64-lane groups from its start
     (the last one padded with zeros), each group reduced by adjacent pairs `v[2i] + v[2i+1]` in 6
     levels, and the group sums added in order to 0: `((0 + g0) + g1) + ...` (qkv_proj_rope's golden).
2. `arg = sq * fp32(1 / D) + eps` (fp32; multiplying by the rounded reciprocal like the kernels, where
   `torch.mean` would divide: the two differ by at most an ulp when D is not a power of two).
3. `inv = torch.rsqrt(arg)` in fp32 (`plain`), or `fp32(rsqrt(fp64(arg)))` (`a5`: A5's high-precision
   rsqrt without a host double rounding).
4. `y = (x * inv) * gamma` in that order (no gamma: `x * inv`), rounded once to `out_dtype`.

Backends: Triton steps through each row in chunks (`block_d` lanes when `chunk` is not set) and sums
a chunk with `tl.sum` (`plain`: not torch's order) or, for `a5`, exactly as above (64-lane groups,
adjacent pairs by reshape, groups in order), with rsqrt as `1 / sqrt` in fp64 (`a5`) or correctly
rounded fp32 `1 / sqrt` (`plain`). PyPTO sums each chunk (each `block_d` step when `chunk` is not set) with
`pl.row_sum` (the hardware's order: on A5 the TROWSUM order above) and uses
`pl.rsqrt(..., high_precision=True)` for both orders, as pypto-lib's kernels do.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from builder import dtypes
from builder.spec import DType, Float, Int
from builder.stage_api import Axis, Op, Params, StageError, TensorType, choose_tile, expect, next_pow2

A5_LANES = 64  # lanes of an A5 fp32 vector: the TROWSUM group


def golden_rmsnorm(x, gamma=None, *, eps, chunk, order, out_dtype):
    """Rows of the last axis: chunked sum of squares (plain or A5 TROWSUM order), fp32 rsqrt (A5: via
    fp64), `(x * inv) * gamma`, then rounded once."""
    import torch

    x = x.float()
    d = x.shape[-1]
    step = chunk or d
    sq = torch.zeros(x.shape[:-1], dtype=torch.float32)
    for k0 in range(0, d, step):
        part = x[..., k0:k0 + step]
        part = part * part
        if order == "a5":
            groups = torch.nn.functional.pad(part, (0, -part.shape[-1] % 64)).unflatten(-1, (-1, 64))
            while groups.shape[-1] > 1:  # adjacent pairs, 6 levels
                groups = groups[..., 0::2] + groups[..., 1::2]
            total = torch.zeros_like(sq)
            for g in range(groups.shape[-2]):  # group sums in order
                total = total + groups[..., g, 0]
            sq = sq + total
        else:
            sq = sq + part.sum(dim=-1)
    arg = sq * (1.0 / d) + eps
    inv = torch.rsqrt(arg.double()).float() if order == "a5" else torch.rsqrt(arg)
    y = x * inv[..., None]
    if gamma is not None:
        y = y * gamma.float()
    return {"y": y.to(getattr(torch, out_dtype))}


class RmsnormParams(Params):
    eps: Float = Field(1e-6, gt=0, description="added to the mean of squares")
    chunk: Optional[Int] = Field(None, ge=1, description="lanes per partial sum of squares, summed in "
                                                         "ascending order (default: the whole row)")
    order: Literal["plain", "a5"] = Field("plain", description="how a chunk is summed and rsqrt rounded")
    out_dtype: DType = DType.bf16
    block_m: Optional[Int] = Field(None, ge=1, description="rows per program (default: up to 8)")
    block_d: Optional[Int] = Field(None, ge=1, description="lanes per step when `chunk` is not set "
                                                           "(default: up to 512)")


DEFAULT_ROWS, DEFAULT_LANES = 8, 512


class Rmsnorm(Op):
    name = "rmsnorm"
    summary = "RMS normalization of each row of the last axis, optional gamma"
    inputs = {"x": "[..., D] rows of the last axis", "gamma": "[D] optional per-lane weight"}
    outputs = {"y": "[..., D] normalized rows"}
    optional_inputs = frozenset({"gamma"})
    Params = RmsnormParams
    golden_fn = golden_rmsnorm
    flops_kind = "fp32"

    def infer(self, ins, p, dims):
        x = ins["x"]
        if not x.shape:
            raise StageError("shape-mismatch", "input `x` has rank 0; rmsnorm normalizes rows of the last axis", "x")
        if not dtypes.info(x.dtype).floating:
            raise StageError("dtype-mismatch", f"input `x` is {x.dtype.value}; rmsnorm normalizes bf16 or fp32",
                             "x")
        if "gamma" in ins:
            gamma = ins["gamma"]
            expect("gamma", gamma, rank=1, dims={0: x.shape[-1]})
            if not dtypes.info(gamma.dtype).floating:
                raise StageError("dtype-mismatch", f"input `gamma` is {gamma.dtype.value}, not bf16 or fp32",
                                 "gamma")
        if p.out_dtype not in (DType.bf16, DType.fp32):
            raise StageError("bad-value", f"`out_dtype` = {p.out_dtype.value}: rmsnorm writes bf16 or fp32",
                             param="out_dtype")
        if p.chunk is not None and p.block_d is not None:
            raise StageError("bad-value", "`block_d` is the step when no `chunk` is set; with `chunk` = "
                                          f"{p.chunk} the backends step by the chunk", param="block_d",
                             hint="drop `block_d`")
        return {"y": TensorType(x.shape, p.out_dtype, x.layout)}

    def tiles(self, ins, p, dims):
        x = ins["x"]
        tiles = {"block_m": choose_tile("block_m", p.block_m, self._rows(x, dims), DEFAULT_ROWS)}
        if p.chunk is None:
            tiles["block_d"] = choose_tile("block_d", p.block_d, x.shape[-1], DEFAULT_LANES)
        return tiles

    @staticmethod
    def _rows(x: TensorType, dims):
        """The extent of the rows: the product of the leading dims (1 for a single row)."""
        lead = [d.text if d.text.isidentifier() or d.text.isdigit() else f"({d.text})" for d in x.shape[:-1]]
        return dims.dim(" * ".join(lead) or "1")

    def domain(self, ins, p, dims):
        return (Axis.tiled("rb", self.tiles(ins, p, dims)["block_m"]),)

    def golden_args(self, p, dims, types):
        return {"eps": p.eps, "chunk": p.chunk, "order": p.order, "out_dtype": dtypes.info(p.out_dtype).torch}

    def flops(self, ins, outs, p):
        n = 1
        for v in ins["x"].numel_shape:
            n *= v
        return n * (4 if "gamma" in ins else 3)  # square, add, scale (, gamma)

    # --- tile bodies ----------------------------------------------------------------------------------
    def _step(self, c) -> tuple[int, str]:
        """(lanes per step, its constant): the chunk, or block_d."""
        return self._step_size(c), self._step_const(c)

    @staticmethod
    def _step_size(c) -> int:
        return c.p.chunk if c.p.chunk is not None else c.size("block_d")

    @staticmethod
    def _step_const(c) -> str:
        if c.p.chunk is not None:
            return c.const("CHUNK", c.p.chunk, "lanes per partial sum of squares")
        default = ", block_d default" if c.stage.tiles["block_d"].defaulted else ""
        return c.const("STEP", c.size("block_d"), "lanes per step" + default)

    def _scalars(self, c) -> tuple[str, str]:
        d = c.type("x").shape[-1].value
        inv_d = c.const("INV_D", 1.0 / d, "1 / D, rounded to fp32 where used")
        eps = c.const("EPS", c.p.eps, "added to the mean of squares")
        return inv_d, eps

    def triton(self, c):
        d_dim = c.type("x").shape[-1]
        d = c.dim("x", -1)
        step, step_c = self._step(c)
        lanes = next_pow2(step)
        width = step_c if lanes == step else c.const("STEP_LANES", lanes, "step padded to a power of two")
        inv_d, eps = self._scalars(c)
        bm = c.tile("rb")
        lines = c.lanes("r", "rb")  # first: it defines the rows' mask
        row_ok = c.mask("r")

        def load(conds: list[str]) -> list[str]:
            """`at`, `ok` and the fp32 tile `x` at lanes `k` of rows `r`; `conds` are the lanes' conditions."""
            ok = " & ".join(([f"{row_ok}[:, None]"] if row_ok else []) + [f"({k})[None, :]" for k in conds])
            return ([f"at = r[:, None] * {d} + k[None, :]"] + [f"ok = {ok}"] * bool(ok)
                    + [f"x = tl.load({c.src('x')} + at" + (", mask=ok, other=0.0)" if ok else ")") + ".to(tl.float32)"])

        def indent(body: list[str], n: int = 1) -> list[str]:
            return ["    " * n + line for line in body]

        # lanes of a step that are real: past D when the steps overrun it, past the chunk when it is padded
        in_step = ([f"k < c0 + {step_c}"] if lanes != step else []) + ([f"k < {d}"] if d_dim.value % step else [])
        lines.append(f"sq = tl.zeros([{bm}], tl.float32)")
        if c.p.order == "a5":
            group = c.const("GROUP", A5_LANES, "lanes of an A5 fp32 vector: one TROWSUM group")
            chunk = c.p.chunk
            in_group = ([f"k < c0 + {step_c}"] if chunk and chunk % A5_LANES else []) + (
                [f"k < {d}"] if d_dim.value % (chunk or A5_LANES) else [])
            group_sum = [f"k = g0 + tl.arange(0, {group})"] + load(in_group) + ["s = x * x"]
            half = A5_LANES
            while half > 1:  # adjacent pairs, level by level
                half //= 2
                group_sum.append(f"s = tl.sum(tl.reshape(s, [{bm}, {half}, 2]), axis=2)")
            if chunk is None:  # one chunk: the group sums, in order, straight into sq
                lines += [f"for g0 in range(0, {d}, {group}):"] + indent(group_sum)
                lines.append(f"    sq += tl.reshape(s, [{bm}])")
            else:
                lines += [f"for c0 in range(0, {d}, {step_c}):", f"    part = tl.zeros([{bm}], tl.float32)",
                          f"    for g0 in range(c0, c0 + {step_c}, {group}):"] + indent(group_sum, 2)
                lines += [f"        part += tl.reshape(s, [{bm}])  # the group sums, in order", "    sq += part"]
            inv = "(1.0 / tl.sqrt(arg.to(tl.float64))).to(tl.float32)  # rsqrt in fp64, rounded once"
        else:
            lines += [f"for c0 in range(0, {d}, {step_c}):", f"    k = c0 + tl.arange(0, {width})"]
            lines += indent(load(in_step)) + ["    sq += tl.sum(x * x, axis=1)"]
            inv = "tl.div_rn(1.0, tl.sqrt_rn(arg))  # correctly rounded 1 / sqrt"
        lines += [f"arg = sq * {inv_d} + {eps}", f"inv = {inv}",
                  f"for c0 in range(0, {d}, {step_c}):", f"    k = c0 + tl.arange(0, {width})"]
        lines += indent(load(in_step)) + ["    y = x * inv[:, None]"]
        if "gamma" in c.stage.inputs:
            g_mask = " & ".join(in_step)
            lines.append(f"    g = tl.load({c.src('gamma')} + k" + (f", mask={g_mask}, other=0.0)" if g_mask else ")")
                         + ".to(tl.float32)")
            lines.append("    y = y * g[None, :]")
        has_mask = bool(row_ok or in_step)
        lines.append(f"    tl.store({c.dst('y')} + at, {c.cast_for('y', 'y')}" + (", mask=ok)" if has_mask else ")"))
        return lines

    def pypto(self, c):
        d_dim = c.type("x").shape[-1]
        d = c.dim("x", -1)
        step = self._step_size(c)
        inv_d, eps = self._scalars(c)
        bm = c.tile("rb")
        r0 = c.let("r0", f"rb * {c.stride('rb')}", "first row of this tile")
        sq, inv, k0 = (c.local(v) for v in ("sq", "inv", "k0"))

        def chunk(start: str, end: str) -> str:
            return c.fp32("x", f"{c.src('x')}[{r0} : {r0} + {bm}, {start} : {end}]")

        def sum_step(start: str, end: str, kind: str) -> list[str]:
            xk = c.local("x" + kind)
            return [f"{xk} = {chunk(start, end)}",
                    f"{sq} = pl.add({sq}, pl.reshape(pl.row_sum(pl.mul({xk}, {xk})), [1, {bm}]))"]

        def norm_step(start: str, end: str, kind: str) -> list[str]:
            xk, y = c.local("x" + kind), c.local("y" + kind)
            lines = [f"{xk} = {chunk(start, end)}", f"{y} = pl.row_expand_mul({xk}, {inv})"]
            if "gamma" in c.stage.inputs:
                g = c.fp32("gamma", f"{c.src('gamma')}[0:1, {start} : {end}]")
                lines.append(f"{y} = pl.col_expand_mul({y}, {g})")
            return lines + [f"{c.dst('y')}[{r0} : {r0} + {bm}, {start} : {end}] = {c.cast(y, 'y')}"]

        whole, tail = divmod(d_dim.value, step)
        step_c = self._step_const(c) if whole else None
        tail_c = c.const("TAIL", tail, f"{d_dim.text} % {step}: the last step") if tail and whole else None

        def steps(body) -> list[str]:
            lines = []
            if whole == 1:
                lines += body("0", step_c, "")
            elif whole > 1:
                end = d if not tail else f"{d} - {tail_c}"
                lines += [f"for {k0} in pl.range(0, {end}, {step_c}):"]
                lines += ["    " + s for s in body(k0, f"{k0} + {step_c}", "")]
            if tail:  # the last, shorter step: its tiles under names of their own (one shape per name in pl)
                lines += body(f"{d} - {tail_c}" if whole else "0", d, "_tail" if whole else "")
            return lines

        return ([f"{sq} = pl.full([1, {bm}], dtype=pl.FP32, value=0.0)"] + steps(sum_step)
                + [f"{inv} = pl.reshape(pl.rsqrt(pl.add(pl.mul({sq}, {inv_d}), {eps}), high_precision=True), "
                   f"[{bm}, 1])"]
                + steps(norm_step))


OP = Rmsnorm()
