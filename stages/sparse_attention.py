"""sparse_attention: softmax attention of every query head over its token's gathered keys, with a sink.

`s_j = scale * <q, k_j>`, `o = sum_j exp(s_j - m) v_j / (sum_j exp(s_j - m) + exp(sink - m))`; the sink
enters the denominator only. A token without valid keys outputs zeros. Tiled online softmax over key
blocks of `block_n`; output rounded to the output dtype.

When a token's heads give too few programs to fill a GPU (decode: few tokens, many keys), the keys are
split into `split_keys` pieces, each its own program (phase `partial`: the running max, sum and
unnormalised output of its keys), and a `combine` phase merges the pieces in ascending order
(`m = max(m, m_s)`, `l = e^(m - m') l + e^(m_s - m') l_s`, the same for the output) before the sink
and the division. The merge reorders fp32 sums, well inside every tolerance.

**Key tiles** (`key_tile`: pypto-lib's ATTN_K_TILE, DeepSeek-V4-Pro's decode): each tile of
`key_tile` keys takes a softmax of its own, `m_i = max_j s_j` over its valid keys, `p = exp(s - m_i)`
(0 for invalid keys), `l_i = sum p`, `o_i = P @ V` with P rounded to `p_dtype` first (bf16: the
cube's operand), and the tiles are merged in ascending order with the merge above, the first tile
starting it. That is Ascend's order of operations, which pypto-lib's golden mirrors. What differs:
Triton computes a tile in sub-blocks of `block_n` keys (two passes, the tile's max first, so that a
GPU's registers hold a [block_n, D] step), so its `l_i` and `o_i` are sums of sub-block sums; the
split into pieces merges whole tiles in two levels; each `l_i` is a `tl.sum`/`pl.row_sum`, not torch's
summation order. These reorder fp32 sums only: the roundings of P are the golden's.

**Grouped heads, separate values, no sink** (Qwen3's paged GQA decode): with `kv_heads` = G the key
rows hold G heads side by side (`[T, N, G * D]`, a paged cache row of G heads), and query head h reads
KV head `h // (H / G)`; each program then takes a tile of one group's heads. `v` (same shape as `kv`)
holds the values when they are not the keys; without `sink` the denominator is the sum alone.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder import dtypes
from builder.spec import DimExpr, DType, Int
from builder.stage_api import (Axis, Dim, Op, Params, Phase, StageError, TensorType, choose_split, choose_tile,
                               expect, next_pow2)
from stages.dots import exact_dot
from stages.matmul_tiles import CUBE_ROWS

VECTOR_BUFFER_BYTES = 188416  # an a2a3 AIV core's buffer as PyPTO plans it (the smallest of its targets)
DEFAULT_PIPE_SLOTS = 2  # PyPTO's cross-core ring depth when a scope does not set one


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


def golden_sparse_attention_grouped(q, kv, valid, sink=None, v=None, *, scale, kv_heads, key_tile, p_dtype,
                                    out_dtype):
    """Grouped-query attention: kv (and v, else kv) [T, N, G * D] hold G KV heads; query head h reads KV
    head h // (H / G). Key tiles of `key_tile` keys each take their own softmax with P rounded to `p_dtype`
    before P @ V, merged in ascending order (one tile of all keys: the closed form); the sink, when given,
    enters the denominator only. fp32 math."""
    import torch

    t, h, d = q.shape
    group = h // kv_heads
    q = q.float().reshape(t, kv_heads, group, d)
    k = kv.float().reshape(t, kv.shape[1], kv_heads, d)
    vals = k if v is None else v.float().reshape(t, v.shape[1], kv_heads, d)
    ok = valid.bool()
    m = l = acc = None
    for k0 in range(0, k.shape[1], key_tile):
        live = ok[:, None, None, k0:k0 + key_tile]
        s = (torch.einsum("tgjd,tngd->tgjn", q, k[:, k0:k0 + key_tile]) * scale).masked_fill(~live, -1.0e30)
        m_i = s.amax(dim=-1, keepdim=True)
        p = torch.exp(s - m_i).masked_fill(~live, 0.0)
        l_i = p.sum(dim=-1, keepdim=True)
        o_i = torch.einsum("tgjn,tngd->tgjd", p.to(getattr(torch, p_dtype)).float(), vals[:, k0:k0 + key_tile])
        if m is None:
            m, l, acc = m_i, l_i, o_i
            continue
        m_new = torch.maximum(m, m_i)
        alpha, beta = torch.exp(m - m_new), torch.exp(m_i - m_new)
        m, l, acc = m_new, alpha * l + beta * l_i, alpha * acc + beta * o_i
    if sink is not None:
        l = l + torch.exp(sink.float().reshape(1, kv_heads, group, 1) - m)
    o = (acc / torch.where(l > 0, l, torch.ones_like(l))).reshape(t, h, d)
    o = torch.where(ok.any(-1)[:, None, None], o, torch.zeros_like(o))
    return {"o": o.to(getattr(torch, out_dtype))}


class AttentionParams(Params):
    scale: Optional[DimExpr] = Field(None, description="softmax scale; default `D ** -0.5`")
    block_n: Optional[Int] = Field(None, ge=16, description="keys per online-softmax step (default: up to 32)")
    block_h: Optional[Int] = Field(None, ge=16, description="query heads per program (default 16; a tl.dot "
                                                            "operand needs 16 rows, masked when H is smaller)")
    split_keys: Optional[Int] = Field(None, ge=1, description="pieces the keys are split into, one program "
                                                              "each, then combined (default: 1, or enough to "
                                                              "fill a GPU when the stage moves 8 MB or more)")
    block_d: Optional[Int] = Field(None, ge=16, description="head-dim lanes per program of the combine phase "
                                                            "(default: all of them, or few enough to fill a GPU)")
    out_dtype: DType = DType.bf16
    key_tile: Optional[DimExpr] = Field(None, description="keys per softmax tile: each tile takes its own max, "
                                                          "sum and P @ V, and the tiles are merged in ascending "
                                                          "order (a power of two; default: one online softmax)")
    p_dtype: Optional[DType] = Field(None, description="with `key_tile`: P rounded to this dtype before P @ V "
                                                       "(bf16, as Ascend's cube takes it; default: not rounded)")
    kv_heads: Optional[DimExpr] = Field(None, description="KV heads side by side in each key row (`kv` [T, N, "
                                                          "kv_heads * D]): query head h reads KV head h // (H / "
                                                          "kv_heads), grouped-query attention (default 1)")


PARTS = ("part_m", "part_l", "part_acc")  # what a piece of split keys hands the combine phase


class SparseAttention(Op):
    name = "sparse_attention"
    summary = "tiled online-softmax attention with per-head sink over a sparse key list"
    inputs = {"q": "[T, H, D] queries", "kv": "[T, N, G * D] gathered keys (and values without `v`), G KV heads",
              "valid": "[T, N] int32 key validity", "sink": "[H] fp32 per-head sink logit (none: no sink)",
              "v": "[T, N, G * D] gathered values, when they are not the keys"}
    optional_inputs = frozenset({"sink", "v"})
    outputs = {"o": "[T, H, D] attention output"}
    Params = AttentionParams
    golden_fn = golden_sparse_attention

    @staticmethod
    def grouped(p, types) -> bool:
        """The grouped variant: KV heads, separate values or no sink."""
        return p.kv_heads is not None or "v" in types or "sink" not in types

    @staticmethod
    def kv_heads(p, dims) -> int:
        return 1 if p.kv_heads is None else int(dims.value(p.kv_heads))

    def group(self, ins, p, dims) -> Dim:
        """Query heads per KV head, as a Dim (H itself without `kv_heads`)."""
        heads = ins["q"].shape[1]
        if p.kv_heads is None:
            return heads
        return dims.dim(f"({heads.text}) // ({p.kv_heads})")

    def infer(self, ins, p, dims):
        q, kv = ins["q"], ins["kv"]
        expect("q", q, rank=3)
        groups = 1
        if p.kv_heads is not None:
            groups = dims.value(p.kv_heads)
            heads = q.shape[1].value
            if not float(groups).is_integer() or groups < 1 or heads % groups:
                raise StageError("bad-value", f"`kv_heads` = {p.kv_heads} = {groups} must be a whole number that "
                                              f"divides the {q.shape[1].text} = {heads} query heads",
                                 param="kv_heads")
        width = q.shape[2] if groups == 1 else dims.dim(f"({p.kv_heads}) * ({q.shape[2].text})")
        expect("kv", kv, rank=3, dims={0: q.shape[0], 2: width}, layout=q.layout)
        if "v" in ins:
            expect("v", ins["v"], rank=3, dtype=kv.dtype, dims={0: kv.shape[0], 1: kv.shape[1], 2: width})
        expect("valid", ins["valid"], rank=2, dtype=DType.int32, dims={0: kv.shape[0], 1: kv.shape[1]})
        if "sink" in ins:
            expect("sink", ins["sink"], rank=1, dtype=DType.fp32, dims={0: q.shape[1]})
        if p.key_tile is not None:
            self.key_tile(p, dims)
        elif p.p_dtype is not None:
            raise StageError("bad-value", "`p_dtype` rounds each key tile's P: it needs `key_tile`", param="p_dtype",
                             hint="set `key_tile`, or drop `p_dtype`")
        if p.p_dtype not in (None, DType.bf16, DType.fp32) or p.out_dtype not in (DType.bf16, DType.fp32):
            which = "out_dtype" if p.out_dtype not in (DType.bf16, DType.fp32) else "p_dtype"
            raise StageError("bad-value", f"`{which}` = {getattr(p, which).value}: attention computes bf16 or fp32",
                             param=which)
        return {"o": TensorType(q.shape, p.out_dtype, q.layout or kv.layout)}

    @staticmethod
    def key_tile(p, dims) -> Dim:
        """The softmax tile of `key_tile` keys (checked: a power of two of at least 16, a tl.dot operand)."""
        tile = dims.dim(p.key_tile)
        if not isinstance(tile.value, int) or tile.value < 16 or tile.value & (tile.value - 1):
            raise StageError("bad-value", f"`key_tile` = {p.key_tile} = {tile.value} must be a power of two of at "
                                          "least 16", param="key_tile")
        return tile

    def scale(self, types, p, dims) -> tuple[str, float]:
        """(expression, value) of the softmax scale; default `D ** -0.5` with D the head dim."""
        text = p.scale if p.scale is not None else f"{types['q'].shape[2].text} ** -0.5"
        return str(text), float(dims.value(text))

    def tiles(self, ins, p, dims):
        q, kv = ins["q"], ins["kv"]
        heads = choose_tile("block_h", p.block_h, self.group(ins, p, dims), 16, minimum=16)
        if p.key_tile is None:
            keys = choose_tile("block_n", p.block_n, kv.shape[1], 32, minimum=16)
        else:  # sub-blocks of a key tile (Triton): 8K keys x lanes keep a GPU thread's registers below 255 (16
            # at D = 512, 64 at D = 128; 128 at D = 128 spills on sm_80)
            preferred = max(16, 8192 // next_pow2(q.shape[2].value))
            keys = choose_tile("block_n", p.block_n, self.key_tile(p, dims), preferred, minimum=16)
        step = keys.size if p.key_tile is None else keys.extent.value  # pieces hold whole key tiles
        moved = sum(t.nbytes for t in ins.values()) + q.nbytes
        programs = q.shape[0].value * self.kv_heads(p, dims) * heads.pieces
        split = choose_split("split_keys", p.split_keys, kv.shape[1], step, programs, moved)
        tiles = {"block_h": heads, "block_n": keys, "split_keys": split}
        if split.pieces > 1:  # the combine phase reads every piece's output and writes o: it fills the GPU too
            heads = q.numel_shape[0] * q.numel_shape[1] * q.numel_shape[2]
            moved_by_combine = heads * (split.pieces * 4 + dtypes.info(p.out_dtype).bytes)
            tiles["block_d"] = choose_tile("block_d", p.block_d, q.shape[2], q.shape[2].value, 16,
                                           fill=(programs, moved_by_combine))
        return tiles

    def domain(self, ins, p, dims):
        heads = Axis.tiled("hb", self.tiles(ins, p, dims)["block_h"])
        if p.kv_heads is None:
            return (Axis("t", ins["q"].shape[0], parallel=True), heads)
        return (Axis("t", ins["q"].shape[0], parallel=True), Axis("g", dims.dim(p.kv_heads), parallel=True), heads)

    def phases(self, ins, p, dims):
        split = self.tiles(ins, p, dims)["split_keys"]
        if split.pieces == 1:
            return ()
        out = self.domain(ins, p, dims)
        lanes = self.tiles(ins, p, dims)["block_d"]
        reads = ("q", "kv") + (("v",) if "v" in ins else ()) + ("valid",)
        return (Phase("partial", out + (Axis.tiled("ks", split),), reads=reads, private_writes=PARTS),
                Phase("combine", out + (Axis.tiled("db", lanes),), reads=("sink",) if "sink" in ins else (),
                      writes=("o",), private_reads=PARTS))

    def private(self, ins, p, dims):
        pieces = self.tiles(ins, p, dims)["split_keys"].pieces
        if pieces == 1:
            return {}
        t, h, d = ins["q"].shape
        s = Dim(str(pieces), pieces)
        return {"part_m": TensorType((s, t, h), DType.fp32), "part_l": TensorType((s, t, h), DType.fp32),
                "part_acc": TensorType((s, t, h, d), DType.fp32)}

    def golden_function(self, p, types):
        """Key tiles, KV heads, separate values or no sink: the tiled, grouped golden (one KV head when
        `kv_heads` is not set); the closed form otherwise."""
        if self.grouped(p, types) or p.key_tile is not None:
            return golden_sparse_attention_grouped
        return golden_sparse_attention

    def golden_args(self, p, dims, types):
        args = {"scale": self.scale(types, p, dims)[1], "out_dtype": dtypes.info(p.out_dtype).torch}
        if self.golden_function(p, types) is golden_sparse_attention:
            return args
        # no key tiles: one tile of all keys, P not rounded (the closed form)
        tile = types["kv"].shape[1].value if p.key_tile is None else self.key_tile(p, dims).value
        return {**args, "kv_heads": self.kv_heads(p, dims), "key_tile": tile,
                "p_dtype": dtypes.info(p.p_dtype or DType.fp32).torch}

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

    def _group(self, c) -> str:
        """Query heads per KV head as code (grouped-query attention only)."""
        return c.expr(self.group(c.stage.in_types, c.p, c.dims).text)

    def _rows(self, c, rows: str, port: str = "kv") -> str:
        """Triton address of the [rows, D] tile of `port` at key rows `rows` (this group's lanes)."""
        d = c.dim("q", 2)
        if c.p.kv_heads is None:
            return f"{c.src(port)} + ({rows})[:, None] * {d} + d[None, :]"
        return f"{c.src(port)} + ({rows})[:, None] * {c.dim('kv', 2)} + g * {d} + d[None, :]"

    def _values(self, c, mask: str, pad: str = "") -> tuple[list[str], str]:
        """(lines loading the values of this key block, their tile's name): `kv` itself, or `vv` from `v`."""
        if "v" not in c.stage.in_types:
            return [], "kv"
        return [pad + "vv = " + c.load("v_at", "n", "d", mask=mask), pad + "vv = vv.to(tl.float32)"], "vv"

    def _triton_out(self, c) -> str:
        """The division by the softmax denominator: with the sink, or the sum alone (0 keys: 0, not 0 / 0)."""
        if "sink" in c.stage.in_types:
            return "o = acc / (l + tl.exp(sink - m))[:, None]"
        return "o = acc / tl.where(l > 0.0, l, 1.0)[:, None]"

    def triton(self, c):
        h, d, keys, scale, bn, bh = self._names(c)
        heads = f"(t * {h} + h)[:, None] * {d} + d[None, :]"
        lanes = c.lanes("d", "db") if c.phase == "combine" else c.span("d", c.type("q").shape[2], "D")
        lines = c.lanes("h", "hb")
        if c.p.kv_heads is not None:
            lines.append(f"h = g * {self._group(c)} + h  # the heads of KV head g (the mask is the group's)")
        lines += lanes
        if c.phase != "combine":
            lines += self._triton_keys(c, heads) if c.p.key_tile is None else self._triton_tiles(c, heads)
        if c.phase == "partial":  # this piece's running max, sum and output, for the combine phase
            part = f"((ks * {c.dim('q', 0)} + t) * {h} + h)"
            return lines + [c.store(f"{c.private('part_m')} + {part}", "m", "h"),
                            c.store(f"{c.private('part_l')} + {part}", "l", "h"),
                            c.store(f"{c.private('part_acc')} + {part}[:, None] * {d} + d[None, :]", "acc", "h", "d")]
        if c.phase == "combine":
            lines += self._triton_merge(c)
        if "sink" in c.stage.in_types:
            lines.append("sink = " + c.load(f"{c.src('sink')} + h", "h"))
        return lines + [self._triton_out(c), c.store(f"{c.dst('o')} + {heads}", c.cast_for("o", "o"), "h", "d")]

    @staticmethod
    def _triton_key_range(c, keys: str) -> tuple[str, str, list[str]]:
        """(first key, end, the line defining `first`) of this program's keys: all of them, or its piece."""
        if c.phase != "partial":
            return "0", keys, []
        piece = c.stride("ks")
        return "first", f"tl.minimum(first + {piece}, {keys})", [f"first = ks * {piece}"]

    def _triton_keys(self, c, heads: str) -> list[str]:
        """The online softmax over this program's keys: all of them, or its piece of the split keys."""
        h, d, keys, scale, bn, bh = self._names(c)
        _, qk = exact_dot("q", "tl.trans(kv)")  # q and kv hold bf16 values: exact on tensor cores
        load_v, vals = self._values(c, "live[:, None]", "    ")
        split, pv = exact_dot("p", vals, a_exact=False, acc="acc")
        width = d if c.p.kv_heads is None else c.dim("kv", 2)
        first, end, loop = self._triton_key_range(c, keys)
        # addresses advanced by a step each iteration; a per-step `n` only when the last step is short
        tail = c.stage.tiles["block_n"].tail
        keys_at = f"{first} + tl.arange(0, {bn})" if first != "0" else f"tl.arange(0, {bn})"
        loop += [f"n = {keys_at}",
                 f"valid_at = {c.src('valid')} + t * {keys} + n",
                 f"kv_at = {self._rows(c, f't * {keys} + n')}"]
        if vals == "vv":
            loop.append(f"v_at = {self._rows(c, f't * {keys} + n', 'v')}")
        loop.append(f"for n0 in range({first}, {end}, {bn}):")
        if tail:
            live = [f"    n = n0 + tl.arange(0, {bn})",
                    f"    live = (n < {keys}) & (tl.load(valid_at, mask=n < {keys}, other=0) != 0)"]
        else:
            live = ["    live = tl.load(valid_at) != 0"]
        return [
            "q = " + c.load(f"{c.src('q')} + {heads}", "h", "d") + ".to(tl.float32)",
            f"m = tl.full([{bh}], -1.0e30, tl.float32)  # finite: a token with no valid key ends with o = 0",
            f"l = tl.zeros([{bh}], tl.float32)",
            f"acc = tl.zeros([{bh}, {c.span_width('d')}], tl.float32)",
            *loop,
            *live,
            "    kv = " + c.load("kv_at", "n", "d", mask="live[:, None]"),
            "    kv = kv.to(tl.float32)",
            *load_v,
            f"    s = {qk} * {scale}",
            "    s = tl.where(live[None, :], s, float(\"-inf\"))",
            "    m_new = tl.maximum(m, tl.max(s, axis=1))",
            "    alpha = tl.exp(m - m_new)",
            "    p = tl.exp(s - m_new[:, None])",
            "    l = l * alpha + tl.sum(p, axis=1)",
            *("    " + line for line in split),
            "    acc = acc * alpha[:, None]",
            f"    acc = {pv}",
            "    m = m_new",
            f"    valid_at += {bn}",
            f"    kv_at += {bn} * {width}",
        ] + ([f"    v_at += {bn} * {width}"] if vals == "vv" else [])

    def _triton_tiles(self, c, heads: str) -> list[str]:
        """Key tiles, each with its own softmax, merged into the running max, sum and output in ascending
        order (all of this program's keys, or its piece of whole tiles). A tile is read in sub-blocks of
        `block_n` keys: a first pass for the tile's max, a second for its sum and P @ V (one pass when
        `block_n` is the tile)."""
        h, d, keys, scale, bn, bh = self._names(c)
        n_keys = c.type("kv").shape[1].value
        tile = self.key_tile(c.p, c.dims)
        kt = c.const("KEY_TILE", tile.value, f"{tile.text}: keys per softmax tile")
        _, qk = exact_dot("q", "tl.trans(kv)")  # q and kv hold bf16 values: exact on tensor cores
        rounded = c.p.p_dtype is DType.bf16
        p_code = f"{c.helper('round_bf16')}(p).to(tl.float32)" if rounded else "p"
        load_v, vals = self._values(c, "live[:, None]")
        split, pv = exact_dot("pb" if rounded else "p", vals, a_exact=rounded, acc="o_i")
        first, end, loop = self._triton_key_range(c, keys)
        one_pass = c.size("block_n") == tile.value
        ragged = n_keys % tile.value != 0  # the last tile's sub-blocks can run past the keys

        live = (f"(n < {keys}) & (tl.load({c.src('valid')} + t * {keys} + n, mask=n < {keys}, other=0) != 0)"
                if ragged else f"tl.load({c.src('valid')} + t * {keys} + n) != 0")
        scores = [f"n = k0 + tl.arange(0, {bn})" if one_pass else f"n = k0 + n0 + tl.arange(0, {bn})",
                  f"live = {live}",  # this sub-block's scores, -1e30 at invalid keys
                  "kv = " + c.load(self._rows(c, f"t * {keys} + n"), "n", "d", mask="live[:, None]"),
                  "kv = kv.to(tl.float32)",
                  f"s = tl.where(live[None, :], {qk} * {scale}, -1.0e30)"]

        def sub_blocks(body: list[str]) -> list[str]:
            """`body` for each sub-block of the tile at `k0`. Addresses are computed per sub-block: a GPU
            thread has no room for address tiles carried across the two passes."""
            if one_pass:
                return body
            return [f"for n0 in range(0, {kt}, {bn}):"] + ["    " + x for x in body]

        tile_max = scores + ["m_i = tl.maximum(m_i, tl.max(s, axis=1))"]
        tile_sum = ([] if one_pass else scores) + [
            "p = tl.where(live[None, :], tl.exp(s - m_i[:, None]), 0.0)",
            "l_i += tl.sum(p, axis=1)",
        ] + ([f"pb = {p_code}"] if rounded else []) + [
            *([f"v_at = {self._rows(c, f't * {keys} + n', 'v')}"] if vals == "vv" else []), *load_v,
        ] + split + [f"o_i = {pv}"]
        if one_pass:
            body = sub_blocks(tile_max + tile_sum)
        else:  # the second pass reads the tile again
            body = sub_blocks(tile_max) + sub_blocks(tile_sum)
        # a tile without a valid key (past a request's length) is skipped: its max, sum and output stay
        # -1e30, 0 and 0, which the merge leaves out (beta = 0, or a running state still empty). Not at
        # head dims above 256: there the branch costs registers the tile needs (D = 512 spills on sm_80)
        if next_pow2(c.type("q").shape[2].value) <= 256:
            kn = f"k0 + tl.arange(0, {kt})"
            tile_live = (f"tl.load({c.src('valid')} + t * {keys} + {kn}, mask={kn} < {keys}, other=0)" if ragged
                         else f"tl.load({c.src('valid')} + t * {keys} + {kn})")
            body = [f"if tl.max({tile_live}) != 0:"] + ["    " + x for x in body]
        return [
            "q = " + c.load(f"{c.src('q')} + {heads}", "h", "d") + ".to(tl.float32)",
            f"m = tl.full([{bh}], -1.0e30, tl.float32)  # finite: a token with no valid key ends with o = 0",
            f"l = tl.zeros([{bh}], tl.float32)",
            f"acc = tl.zeros([{bh}, {c.span_width('d')}], tl.float32)",
            *loop,
            f"for k0 in range({first}, {end}, {kt}):",
        ] + ["    " + x for x in [
            f"m_i = tl.full([{bh}], -1.0e30, tl.float32)",
            f"l_i = tl.zeros([{bh}], tl.float32)",
            f"o_i = tl.zeros([{bh}, {c.span_width('d')}], tl.float32)",
            *body,
            "# merged into the running max, sum and output (a first tile: alpha = 0, beta = 1)",
            "m_new = tl.maximum(m, m_i)",
            "alpha = tl.exp(m - m_new)",
            "beta = tl.exp(m_i - m_new)",
            "l = l * alpha + l_i * beta",
            "acc = acc * alpha[:, None] + o_i * beta[:, None]",
            "m = m_new",
        ]]

    def _triton_merge(self, c) -> list[str]:
        """The pieces of the split keys merged in ascending order."""
        h, d, t_dim = c.dim("q", 1), c.dim("q", 2), c.dim("q", 0)
        pieces = c.const("SPLITS", c.stage.tiles["split_keys"].pieces, "pieces of the split keys")

        def piece(suffix: str, part: str) -> list[str]:
            return [f"row = {part}",
                    f"m{suffix} = " + c.load(f"{c.private('part_m')} + row", "h"),
                    f"l{suffix} = " + c.load(f"{c.private('part_l')} + row", "h"),
                    f"acc{suffix} = " + c.load(f"{c.private('part_acc')} + row[:, None] * {d} + d[None, :]", "h", "d")]

        first, later = f"t * {h} + h", f"(ks * {t_dim} + t) * {h} + h"
        return [*piece("", first), f"for ks in range(1, {pieces}):"] + ["    " + line for line in piece("_s", later) + [
            "m_new = tl.maximum(m, m_s)",
            "alpha = tl.exp(m - m_new)",
            "beta = tl.exp(m_s - m_new)",
            "l = l * alpha + l_s * beta",
            "acc = acc * alpha[:, None] + acc_s * beta[:, None]",
            "m = m_new",
        ]]

    def pypto(self, c):
        h, d, keys, scale, bn, bh = self._names(c)
        m, l, acc, sink, den = (c.local(x) for x in ("m", "l", "acc", "sink", "den"))
        if c.p.key_tile is not None and c.phase != "combine":
            self._fit_vector_buffer(c)
        head0 = f"hb * {c.stride('hb')}"
        if c.p.kv_heads is not None:  # a tile of KV head g's query heads
            head0 = c.let("h0", f"g * {self._group(c)} + {head0}", "first query head of this tile")
        row = c.let("r0", f"t * {h} + {head0}", "first row of this head tile")
        lines = [] if c.phase == "combine" else self._pypto_keys(c, row)
        cols = f"db * {c.stride('db')} : db * {c.stride('db')} + {c.tile('db')}" if c.phase == "combine" else f"0:{d}"
        if c.phase == "partial":  # this piece's running max, sum and output, for the combine phase
            part = c.let("part", f"ks * {c.dim('q', 0)} + t", "this piece's row of the partial max and sum")
            return lines + [
                f"{c.private('part_m')}[{part} : {part} + 1, {head0} : {head0} + {bh}] = pl.reshape({m}, [1, {bh}])",
                f"{c.private('part_l')}[{part} : {part} + 1, {head0} : {head0} + {bh}] = pl.reshape({l}, [1, {bh}])",
                f"{c.private('part_acc')}[{part} * {h} + {head0} : {part} * {h} + {head0} + {bh}, 0:{d}] = {acc}",
            ]
        if c.phase == "combine":
            lines += self._pypto_merge(c, head0, cols)
        if "sink" not in c.stage.in_types:  # the sum alone (never 0 here: an invalid key adds exp(0) x 0 rows)
            return lines + [f"{c.dst('o')}[{row} : {row} + {bh}, {cols}] = "
                            f"{c.cast(f'pl.row_expand_div({acc}, {l})', 'o')}"]
        return lines + [
            f"{sink} = pl.reshape({c.src('sink')}[0:1, {head0} : {head0} + {bh}], [{bh}, 1])",
            f"{den} = pl.add({l}, pl.exp(pl.sub({sink}, {m})))",
            f"{c.dst('o')}[{row} : {row} + {bh}, {cols}] = {c.cast(f'pl.row_expand_div({acc}, {den})', 'o')}",
        ]

    @staticmethod
    def _fit_vector_buffer(c) -> None:
        """Key tiles merged on the vector core keep [heads, D] fp32 tiles live (the running output, the
        tile's own and their rescaled copies; the partial phase also a copy it stores), beside the
        cross-core ring of cube results (2 slots of the same size by default). When both do not fit an
        AIV core's buffer, the ring gets the slots that do (at least 1). Counts measured on PyPTO's
        memory planning at D = 512: 4 tiles in the partial phase, 2 otherwise."""
        tile_bytes = c.tile_value("hb") * c.type("q").shape[2].value * 4
        live = 4 if c.phase == "partial" else 2
        spare = VECTOR_BUFFER_BYTES - live * tile_bytes
        if spare < DEFAULT_PIPE_SLOTS * tile_bytes:
            c.limit_pipe_slots(max(1, spare // tile_bytes))

    def _pypto_keys(self, c, row: str) -> list[str]:
        """The online softmax over this task's keys (all of them, or its piece of the split keys), in
        blocks of `block_n`: the first starts the running max, sum and output (PyPTO lays a
        `pl.full([M, 1])` column out row-major, which its vector ops cannot mix with the col-major
        columns of row reductions); whole blocks follow, then a shorter last block when `block_n`
        does not divide the keys. A finite -1e30 bias keeps an all-invalid block harmless."""
        h, d, keys, scale, bn, bh = self._names(c)
        pad = CUBE_ROWS if c.tile_value("hb") < CUBE_ROWS else 0
        # padded rows: the running max, sum and output carry the padded shape (the pl scope is flat, and
        # the combine phase's are the real rows'), and are cut back to the real rows at the end
        padded = (lambda x: c.local(f"{x}_pad")) if pad else c.local
        q, kv, vv, bias, s, p = (c.local(x) for x in ("q", "kv", "v", "bias", "s", "p"))
        m, l, acc, m_new, alpha, beta = (padded(x) for x in ("m", "l", "acc", "m_new", "alpha", "beta"))
        lanes = f"0:{d}"
        if c.p.kv_heads is not None:  # KV head g's lanes of the key rows
            lane0 = c.let("lane0", f"g * {d}", "this KV head's first lane")
            lanes = f"{lane0} : {lane0} + {d}"
        values = kv if "v" not in c.stage.in_types else vv
        key0 = c.let("key0", f"t * {keys}", "this token's first gathered row")
        if c.phase == "partial":  # this piece's keys: [first, first + count)
            first = c.let("first", f"ks * {c.stride('ks')}", "this piece's first key")
            n_keys, count = c.tile_value("ks"), c.tile("ks")
        else:
            first, n_keys, count = "0", c.type("kv").shape[1].value, keys

        def at(n0: str) -> str:
            return n0 if first == "0" else (first if n0 == "0" else f"{first} + {n0}")

        def scores(n0: str, size: str) -> list[str]:
            k0 = at(n0)
            rows = f"{key0} + {k0} : {key0} + {k0} + {size}" if k0 != "0" else f"{key0} : {key0} + {size}"
            cols = f"{k0} : {k0} + {size}" if k0 != "0" else f"0:{size}"
            return [
                f"{kv} = {c.src('kv')}[{rows}, {lanes}]",
                *([f"{vv} = {c.src('v')}[{rows}, {lanes}]"] if values == vv else []),
                f"{bias} = pl.cast({c.src('valid')}[t : t + 1, {cols}], target_type=pl.FP32)",
                f"{bias} = pl.mul(pl.sub({bias}, 1.0), 1.0e30)  # 0 for a valid key, -1e30 otherwise",
                f"{s} = pl.matmul({q}, {kv}, b_trans=True, out_dtype=pl.FP32)",
                f"{s} = pl.col_expand_add(pl.mul({s}, {scale}), {bias})",
            ]

        if c.p.p_dtype is DType.bf16:  # P rounded for the cube, which multiplies it with the bf16 keys
            pv = f"pl.matmul(pl.cast({p}, target_type=pl.BF16, mode=\"rint\"), {values}, out_dtype=pl.FP32)"
        else:
            pv = f"pl.matmul({p}, pl.cast({values}, target_type=pl.FP32), out_dtype=pl.FP32)"

        def online_step(n0: str, size: str) -> list[str]:
            return scores(n0, size) + [
                f"{m_new} = pl.maximum({m}, pl.row_max({s}))",
                f"{p} = pl.exp(pl.row_expand_sub({s}, {m_new}))",
                f"{alpha} = pl.exp(pl.sub({m}, {m_new}))",
                f"{l} = pl.add(pl.mul({l}, {alpha}), pl.row_sum({p}))",
                f"{acc} = pl.add(pl.row_expand_mul({acc}, {alpha}), {pv})",
                f"{m} = {m_new}",
            ]

        def tile_step(n0: str, size: str) -> list[str]:
            """A key tile's own softmax, merged into the running one."""
            m_i, l_i, o_i = (c.local(x) for x in ("m_i", "l_i", "o_i"))
            return scores(n0, size) + [
                f"{m_i} = pl.row_max({s})",
                f"{p} = pl.exp(pl.row_expand_sub({s}, {m_i}))",
                f"{l_i} = pl.row_sum({p})",
                f"{o_i} = {pv}",
                f"{m_new} = pl.maximum({m}, {m_i})",
                f"{alpha} = pl.exp(pl.sub({m}, {m_new}))",
                f"{beta} = pl.exp(pl.sub({m_i}, {m_new}))",
                f"{l} = pl.add(pl.mul({l}, {alpha}), pl.mul({l_i}, {beta}))",
                f"{acc} = pl.add(pl.row_expand_mul({acc}, {alpha}), pl.row_expand_mul({o_i}, {beta}))",
                f"{m} = {m_new}",
            ]

        step = online_step
        block = c.size("block_n")
        if c.p.key_tile is not None:
            tile = self.key_tile(c.p, c.dims)
            step, block = tile_step, tile.value
            bn = c.const("KEY_TILE", tile.value, f"{tile.text}: keys per softmax tile")
        tail = n_keys % block if n_keys > block else 0
        if pad:  # a cube matmul takes 16 rows at least: the real ones, then rows nothing reads
            q_tile = f"pl.slice({c.src('q')}, [{pad}, {d}], [{row}, 0], valid_shape=[{bh}, {d}])"
        else:
            q_tile = f"{c.src('q')}[{row} : {row} + {bh}, 0:{d}]"
        lines = [f"{q} = {q_tile}", "# the first key block starts the running max, sum and output"] + \
            scores("0", bn if n_keys >= block else count) + [
            f"{m} = pl.row_max({s})",
            f"{p} = pl.exp(pl.row_expand_sub({s}, {m}))",
            f"{l} = pl.row_sum({p})",
            f"{acc} = {pv}",
        ]
        if n_keys >= 2 * block:
            end = count if not tail else f"{count} // {bn} * {bn}"
            lines += [f"for n0 in pl.range({bn}, {end}, {bn}):"] + ["    " + line for line in step("n0", bn)]
        if tail:
            size = c.const("KEY_TAIL", tail, f"{n_keys} % {block}: the last key " + (
                "block" if c.p.key_tile is None else "tile"))
            lines += ["# the last, shorter key block"] + step(f"({count} - {size})", size)
        if pad:  # the max only where a sink or the combine phase reads it
            kept = ("m", "l", "acc") if c.phase == "partial" or "sink" in c.stage.in_types else ("l", "acc")
            lines += [f"{c.local(x)} = {padded(x)}[0:{bh}, :]  # the real rows" for x in kept]
        return lines

    def _pypto_merge(self, c, head0: str, cols: str) -> list[str]:
        """The pieces of the split keys merged in ascending order (the first starts the merge)."""
        h, t_dim = c.dim("q", 1), c.dim("q", 0)
        bh = c.tile("hb")
        m, l, acc, m_s, l_s, acc_s, m_new, alpha, beta = (c.local(x) for x in (
            "m", "l", "acc", "m_s", "l_s", "acc_s", "m_new", "alpha", "beta"))
        pieces = c.const("SPLITS", c.stage.tiles["split_keys"].pieces, "pieces of the split keys")

        def piece(suffix_m: str, suffix_l: str, suffix_acc: str, part: str) -> list[str]:
            heads, row0 = f"{head0} : {head0} + {bh}", f"({part}) * {h} + {head0}"
            return [
                f"{suffix_m} = pl.reshape({c.private('part_m')}[{part} : {part} + 1, {heads}], [{bh}, 1])",
                f"{suffix_l} = pl.reshape({c.private('part_l')}[{part} : {part} + 1, {heads}], [{bh}, 1])",
                f"{suffix_acc} = {c.private('part_acc')}[{row0} : {row0} + {bh}, {cols}]",
            ]

        later = piece(m_s, l_s, acc_s, f"ks * {t_dim} + t")
        return ["# the first piece of the split keys starts the merge", *piece(m, l, acc, "t"),
                f"for ks in pl.range(1, {pieces}):"] + ["    " + line for line in later + [
            f"{m_new} = pl.maximum({m}, {m_s})",
            f"{alpha} = pl.exp(pl.sub({m}, {m_new}))",
            f"{beta} = pl.exp(pl.sub({m_s}, {m_new}))",
            f"{l} = pl.add(pl.mul({l}, {alpha}), pl.mul({l_s}, {beta}))",
            f"{acc} = pl.add(pl.row_expand_mul({acc}, {alpha}), pl.row_expand_mul({acc_s}, {beta}))",
            f"{m} = {m_new}",
        ]]


OP = SparseAttention()
