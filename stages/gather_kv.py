"""gather_kv: collect each token's sparse key list from the paged window and compressed KV pools.

Slot `raw` of a token's index row is a window key when `0 <= raw < min(window, seq)`, a compressed key
when `window <= raw < window + max(seq - window, 0)`; anything else (-1 padding, out of range) is
invalid. Gathered rows serve as both K and V (shared-KV MQA); invalid rows are zero and flagged.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder.spec import DimExpr, DType, Int
from builder.stage_api import Axis, Op, Params, StageError, TensorType, choose_tile, expect


def golden_gather_kv(indices, seqused, ori_kv, ori_block_table, cmp_kv, cmp_block_table, *, window):
    """Gathered rows (zero where invalid) and their validity; -1 and out-of-range slots are skipped."""
    import torch

    idx, seq = indices.long(), seqused.long()[:, None]
    win = seq.clamp(max=window)
    cmp = (seq - win).clamp(min=0)
    is_win = (idx >= 0) & (idx < win)
    slot = idx - window
    is_cmp = (idx >= window) & (slot < cmp)

    def rows(pool, table, pos, ok):
        block = pool.shape[1]
        pos = torch.where(ok, pos, 0)
        page = torch.gather(table.long(), 1, (pos // block).clamp(max=table.shape[1] - 1))
        return pool[page, pos % block, 0]

    kv = torch.where(is_win[..., None], rows(ori_kv, ori_block_table, idx, is_win),
                     rows(cmp_kv, cmp_block_table, slot, is_cmp))
    valid = is_win | is_cmp
    return {"kv": torch.where(valid[..., None], kv, torch.zeros_like(kv)), "valid": valid.int()}


def _where(mask) -> str:
    """The first few indices where `mask` is set, for messages."""
    idx = mask.nonzero().flatten().tolist()
    return ", ".join(map(str, idx[:5])) + (f" (and {len(idx) - 5} more)" if len(idx) > 5 else "")


class GatherParams(Params):
    window: DimExpr = Field(description="sliding-window length: slots below it index the window pool")
    block_j: Optional[Int] = Field(None, ge=1, description="index slots per program (default: up to 32)")


class GatherKV(Op):
    name = "gather_kv"
    summary = "gather sparse key rows from paged window + compressed KV pools"
    inputs = {
        "indices": "[T, TOPK] int32 per-token key slots: window slots, then compressed slots offset by window",
        "seqused": "[T] int32 valid keys per token",
        "ori_kv": "[PAGES, BLOCK, 1, D] paged window KV pool",
        "ori_block_table": "[T, PAGES_PER_TOKEN] int32 window page table",
        "cmp_kv": "[PAGES, BLOCK, 1, D] paged compressed KV pool",
        "cmp_block_table": "[T, PAGES_PER_TOKEN] int32 compressed page table",
    }
    outputs = {"kv": "[T, TOPK, D] gathered key/value rows (zero where invalid)",
               "valid": "[T, TOPK] int32: 1 where the slot holds a real key"}
    Params = GatherParams
    golden_fn = golden_gather_kv

    def infer(self, ins, p, dims):
        idx = ins["indices"]
        expect("indices", idx, rank=2, dtype=DType.int32)
        t_dim, n_dim = idx.shape
        expect("seqused", ins["seqused"], rank=1, dtype=DType.int32, dims={0: t_dim})
        pools = []
        for pool, table in (("ori_kv", "ori_block_table"), ("cmp_kv", "cmp_block_table")):
            expect(pool, ins[pool], rank=4)
            expect(table, ins[table], rank=2, dtype=DType.int32, dims={0: t_dim})
            if ins[pool].shape[2].value != 1:
                raise StageError("shape-mismatch", f"input `{pool}` axis 2 must be 1 (one shared KV head)", pool)
            pools.append(ins[pool])
        window = dims.value(p.window)
        if not float(window).is_integer() or not 0 <= window <= n_dim.value:
            raise StageError("bad-value", f"`window` = {p.window} = {window} must be a whole number in "
                                          f"[0, {n_dim.text} = {n_dim.value}]", param="window")
        table, block = ins["ori_block_table"].shape[1], ins["ori_kv"].shape[1]
        if window > table.value * block.value:
            raise StageError("bad-value", f"`window` = {p.window} = {window} keys need more than the {table.text} = "
                                          f"{table.value} pages of {block.text} = {block.value} that "
                                          "`ori_block_table` holds per token", param="window",
                             hint="raise the table's pages, or lower the window")
        ori, cmp = pools
        expect("cmp_kv", cmp, dtype=ori.dtype, dims={1: ori.shape[1], 3: ori.shape[3]})
        if ori.layout and cmp.layout and ori.layout != cmp.layout:
            raise StageError("layout-mismatch", f"`ori_kv` is {ori.layout.value} but `cmp_kv` is "
                                                f"{cmp.layout.value}", "cmp_kv", "both pools must store one layout")
        return {"kv": TensorType((t_dim, n_dim, ori.shape[3]), ori.dtype, ori.layout or cmp.layout),
                "valid": TensorType((t_dim, n_dim), DType.int32)}

    def tiles(self, ins, p, dims):
        return {"block_j": choose_tile("block_j", p.block_j, ins["indices"].shape[1], 32)}

    def domain(self, ins, p, dims):
        t_dim = ins["indices"].shape[0]
        return (Axis("t", t_dim, parallel=True), Axis.tiled("jb", self.tiles(ins, p, dims)["block_j"]))

    def check_values(self, ins, types, p, dims):
        """Each token's window and compressed keys fit its page tables, and the pages they use lie in
        their pools (else the tile code reads past a table row or a pool)."""
        import torch

        problems = []
        window = int(dims.value(p.window))
        seq = ins.get("seqused")
        if seq is not None and (seq < 0).any():
            problems.append(("seqused", f"negative key counts at tokens {_where(seq < 0)}"))
            return problems
        counts = {}
        if seq is not None:
            win = seq.long().clamp(max=window)
            counts = {"ori_block_table": win, "cmp_block_table": seq.long() - win}
        for table, pool in (("ori_block_table", "ori_kv"), ("cmp_block_table", "cmp_kv")):
            pages, block = types[pool].shape[0].value, types[pool].shape[1].value
            cols = types[table].shape[1].value
            need = ((counts[table] + block - 1) // block if table in counts
                    else torch.full((types[table].shape[0].value,), cols))
            short = need > cols
            if short.any():
                problems.append(("seqused", f"tokens {_where(short)} need more than the {cols} pages of `{table}`"))
                continue
            if table in ins:
                used = torch.arange(cols)[None, :] < need[:, None]
                page = ins[table].long()
                bad = used & ((page < 0) | (page >= pages))
                if bad.any():
                    problems.append((table, f"page ids outside the pool's {pages} pages at tokens "
                                            f"{_where(bad.any(1))}"))
        return problems

    def golden_args(self, p, dims, types):
        return {"window": int(dims.value(p.window))}

    def min_bytes(self, ins, outs, p):
        """Only the gathered rows of the pools are read, not the whole pools."""
        traffic = super().min_bytes(ins, outs, p)
        traffic["in:ori_kv"] = traffic["in:cmp_kv"] = 0
        traffic["gathered pool rows"] = outs["kv"].nbytes
        return traffic

    def triton(self, c):
        n, d = c.dim("indices", 1), c.dim("ori_kv", 3)
        block = c.dim("ori_kv", 1)
        window = c.const("WINDOW", int(c.dims.value(c.p.window)), str(c.p.window))
        ori, cmp, kv = c.src("ori_kv"), c.src("cmp_kv"), c.dst("kv")
        # rows are masked by `in_row` (and a padded head dim by `d_ok`, through `c.load`/`c.store`)
        return [
            f"j = jb * {c.tile('jb')} + tl.arange(0, {c.tile('jb')})",
            *c.span("d", c.type("ori_kv").shape[3], "D"),
            f"in_row = j < {n}",
            f"raw = tl.load({c.src('indices')} + t * {n} + j, mask=in_row, other=-1)",
            f"seq = tl.load({c.src('seqused')} + t)",
            f"win = tl.minimum(seq, {window})",
            "cmp = tl.maximum(seq - win, 0)",
            "is_win = (raw >= 0) & (raw < win)",
            f"slot = raw - {window}",
            f"is_cmp = (raw >= {window}) & (slot < cmp)",
            f"ori_page = tl.load({c.src('ori_block_table')} + t * {c.dim('ori_block_table', 1)} + raw // {block},"
            " mask=is_win, other=0)",
            f"cmp_page = tl.load({c.src('cmp_block_table')} + t * {c.dim('cmp_block_table', 1)} + slot // {block},"
            " mask=is_cmp, other=0)",
            f"ori_row = ori_page * {block} + raw % {block}",
            f"cmp_row = cmp_page * {block} + slot % {block}",
            "k_win = " + c.load(f"{ori} + ori_row[:, None] * {d} + d[None, :]", "j", "d", mask="is_win[:, None]"),
            "k_cmp = " + c.load(f"{cmp} + cmp_row[:, None] * {d} + d[None, :]", "j", "d", mask="is_cmp[:, None]"),
            c.store(f"{kv} + (t * {n} + j)[:, None] * {d} + d[None, :]", "tl.where(is_win[:, None], k_win, k_cmp)",
                    "j", "d", mask="in_row[:, None]"),
            f"tl.store({c.dst('valid')} + t * {n} + j, (is_win | is_cmp).to(tl.int32), mask=in_row)",
        ]

    def pypto(self, c):
        n, d, block = c.dim("indices", 1), c.dim("ori_kv", 3), c.dim("ori_kv", 1)
        window = c.const("WINDOW", int(c.dims.value(c.p.window)), str(c.p.window))
        raw, slot, row, seq, win, cmp, page, src = (c.local(x) for x in
                                                    ("raw", "slot", "row", "seq", "win", "cmp", "page", "src"))
        kv, valid = c.dst("kv"), c.dst("valid")
        step, tile = c.stride("jb"), c.tile("jb")
        end = f"(jb + 1) * {step}" if tile == step else f"jb * {step} + {tile}"  # the last tile is shorter
        # PyPTO takes INDEX scalars to be non-negative (its Simplify pass folds `x >= 0` on one to
        # true), so the compressed position `raw - window` is formed only once `raw >= window`.
        pools = []
        for part, first, pos, limit, pool, table in (
                ("window", "0", raw, win, "ori_kv", "ori_block_table"),
                ("compressed", window, slot, cmp, "cmp_kv", "cmp_block_table")):
            pools.append(f"if {raw} >= {first}:  # a {part} key when 0 <= position < its count")
            if pos != raw:
                pools.append(f"    {pos} = {raw} - {first}")
            pools += [
                f"    if {pos} < {limit}:",
                f"        {page} = pl.read({c.scalar_src(table)}, [t, {pos} // {block}])",
                f"        {src} = pl.cast({page} * {block} + {pos} % {block}, pl.INDEX)",
                f"        {kv}[{row} : {row} + 1, 0:{d}] = {c.src(pool)}[{src} : {src} + 1, 0:{d}]",
                f"        {valid} = pl.write({valid}, [t, j], pl.const(1, pl.INT32))",
            ]
        return [
            f"{seq} = pl.read({c.scalar_src('seqused')}, [t])",
            f"{win} = pl.min({seq}, {window})",
            f"{cmp} = pl.max({seq} - {win}, 0)",
            f"for j in pl.range(jb * {c.stride('jb')}, {end}):",
            f"    {raw} = pl.read({c.scalar_src('indices')}, [t, j])",
            f"    {row} = t * {n} + j",
            f"    {kv}[{row} : {row} + 1, 0:{d}] = pl.full([1, {d}], dtype=pl.BF16, value=0.0)",
            f"    {valid} = pl.write({valid}, [t, j], pl.const(0, pl.INT32))",
        ] + ["    " + line for line in pools]


OP = GatherKV()
