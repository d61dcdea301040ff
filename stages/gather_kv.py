"""gather_kv: collect each token's key list from a paged window pool and a paged compressed pool.

Two ways to name the keys:

- **slots** (`indices`, `seqused`, both page tables; pypto-lib PR #253): slot `raw` of a token's index
  row is a window key when `0 <= raw < min(window, seq)`, a compressed key when
  `window <= raw < window + max(seq - window, 0)`; anything else (-1 padding, out of range) is invalid.
- **parts** (no `indices`): the keys are the window part, then the compressed part, each optional:
  - window part, from `window_rows` [T, W]: physical rows of `ori_kv` (page * BLOCK + offset), -1
    invalid (DeepSeek-V4's `window_swa_indices`); or, without `window_rows`, the dense prefix of
    positions 0 .. `window` - 1 through `ori_block_table` (a paged KV cache, as in Qwen3 decode).
    With `seqused`, column k of the part is valid only while k < seqused[t] (`swa_lens`, `seq_lens`).
  - compressed part, from `cmp_slots` [T, C]: slots of the compressed cache through
    `cmp_block_table`, -1 invalid (already masked: `causal_index_mask`, HCA's `cmp_sparse_indices`).
  Page tables have one row per request of `tokens_per_request` consecutive tokens: token t reads
  row t // tokens_per_request (DeepSeek-V4's per-request `cmp_block_table`, b = t // S).

Gathered rows serve as both K and V (shared-KV MQA) or feed either; invalid rows are zero and flagged.
Pools are [PAGES, BLOCK, 1, D] or [PAGES, BLOCK, D].
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from pydantic import Field

from builder.spec import DimExpr, DType, Int
from builder.stage_api import Axis, Op, Params, StageError, TensorType, choose_tile, expect, next_pow2


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


def golden_gather_kv_parts(ori_kv, window_rows=None, ori_block_table=None, seqused=None, cmp_slots=None,
                           cmp_kv=None, cmp_block_table=None, *, window, tokens_per_request):
    """The window part (physical rows, or the paged prefix 0 .. window - 1) then the compressed part (slots
    through the page table); rows zero where invalid, and the validity."""
    import torch

    def paged(pool, table, pos, ok):
        """Rows of the flattened pool for logical positions `pos` through table row t // tokens_per_request."""
        block = pool.shape[1]
        pos = torch.where(ok, pos, 0)
        request = torch.arange(pos.shape[0]) // tokens_per_request
        return table.long()[request[:, None], pos // block] * block + pos % block

    def rows(pool, row, ok):
        flat = pool.reshape(-1, pool.shape[-1])
        kv = flat[torch.where(ok, row, 0)]
        return torch.where(ok[..., None], kv, torch.zeros_like(kv))

    kv, valid = [], []
    if window_rows is not None or window:
        if window_rows is not None:
            raw = window_rows.long()
            ok, row = raw >= 0, raw
        else:
            pos = torch.arange(window).expand(seqused.shape[0], window)
            ok = torch.ones_like(pos, dtype=torch.bool)
            row = paged(ori_kv, ori_block_table, pos, ok)
        if seqused is not None:
            ok = ok & (torch.arange(ok.shape[1]) < seqused.long()[:, None])
        kv.append(rows(ori_kv, row, ok))
        valid.append(ok)
    if cmp_slots is not None:
        raw = cmp_slots.long()
        ok = raw >= 0
        kv.append(rows(cmp_kv, paged(cmp_kv, cmp_block_table, raw, ok), ok))
        valid.append(ok)
    return {"kv": torch.cat(kv, dim=1), "valid": torch.cat(valid, dim=1).int()}


def _where(mask) -> str:
    """The first few indices where `mask` is set, for messages."""
    idx = mask.nonzero().flatten().tolist()
    return ", ".join(map(str, idx[:5])) + (f" (and {len(idx) - 5} more)" if len(idx) > 5 else "")



class _Geometry(NamedTuple):
    """Window and compressed-part geometry of the parts addressing, as counts and as code."""

    window: int       # W: window slots (0: none)
    compressed: int   # C: compressed slots (0: none)
    w: str            # W as code
    n: str            # key slots per token, as code
    d_axis: int       # the pool's lane axis
    d: str            # lanes per row, as code
    block: str        # rows per page, as code
    request: str      # token t's page-table row, as code

class GatherParams(Params):
    window: Optional[DimExpr] = Field(None, description="with `indices`: the sliding-window length (slots below "
                                                        "it index the window pool); without `indices` and "
                                                        "`window_rows`: the length of the dense paged prefix")
    tokens_per_request: Optional[DimExpr] = Field(None, description="consecutive tokens sharing one page-table row "
                                                                    "(parts addressing): token t reads row t // "
                                                                    "tokens_per_request (default 1)")
    block_j: Optional[Int] = Field(None, ge=1, description="index slots per program (default: up to 32)")


SLOTS = ("indices", "seqused", "ori_kv", "ori_block_table", "cmp_kv", "cmp_block_table")  # PR #253's ports


class GatherKV(Op):
    name = "gather_kv"
    summary = "gather key rows from paged window + compressed KV pools"
    inputs = {
        "indices": "[T, TOPK] int32 key slots: window slots, then compressed slots offset by window (slots addressing)",
        "seqused": "[T] int32 valid keys per token (slots), or valid window columns per token (parts)",
        "ori_kv": "[PAGES, BLOCK, 1, D] or [PAGES, BLOCK, D] paged window KV pool",
        "ori_block_table": "[T or requests, PAGES_PER_TOKEN] int32 window page table",
        "cmp_kv": "[PAGES, BLOCK, 1, D] or [PAGES, BLOCK, D] paged compressed KV pool",
        "cmp_block_table": "[T or requests, PAGES_PER_TOKEN] int32 compressed page table",
        "window_rows": "[T, W] int32 physical rows of `ori_kv` for the window part, -1 invalid (parts addressing)",
        "cmp_slots": "[T, C] int32 compressed-cache slots for the compressed part, -1 invalid (parts addressing)",
    }
    optional_inputs = frozenset(set(inputs) - {"ori_kv"})
    outputs = {"kv": "[T, N, D] gathered key/value rows (zero where invalid)",
               "valid": "[T, N] int32: 1 where the slot holds a real key"}
    Params = GatherParams
    golden_fn = golden_gather_kv

    @staticmethod
    def per_request(p, dims) -> int | float:
        return 1 if p.tokens_per_request is None else dims.value(p.tokens_per_request)

    @staticmethod
    def by_slots(ins) -> bool:
        return "indices" in ins

    def golden_function(self, p, types):
        return golden_gather_kv if "indices" in types else golden_gather_kv_parts

    def infer(self, ins, p, dims):
        if self.by_slots(ins):
            return self._infer_slots(ins, p, dims)
        return self._infer_parts(ins, p, dims)

    @staticmethod
    def _pool(port: str, pool: TensorType) -> None:
        if len(pool.shape) not in (3, 4):
            raise StageError("shape-mismatch", f"input `{port}` has rank {len(pool.shape)} ({pool.describe()}); a "
                                               "pool is [PAGES, BLOCK, 1, D] or [PAGES, BLOCK, D]", port)
        if len(pool.shape) == 4 and pool.shape[2].value != 1:
            raise StageError("shape-mismatch", f"input `{port}` axis 2 must be 1 (one shared KV head)", port)

    def _infer_slots(self, ins, p, dims):
        extra = sorted(set(ins) - set(SLOTS))
        if extra:
            raise StageError("unknown-key", f"input `{extra[0]}` belongs to parts addressing, and `indices` "
                                            "(slots addressing) is wired", extra[0],
                             "wire either `indices` or the parts (`window_rows`, `cmp_slots`)")
        missing = [port for port in SLOTS if port not in ins]
        if missing or p.window is None:
            raise StageError("missing-key", "slots addressing (`indices`) needs " + (
                f"input `{missing[0]}`" if missing else "the `window` param"), hint="wire " + ", ".join(SLOTS))
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

    def _parts(self, ins, p, dims) -> tuple[int, int]:
        """(W, C): the key columns of the window part and of the compressed part (0 when absent)."""
        if "window_rows" in ins:
            window = ins["window_rows"].shape[1].value
        else:
            window = int(dims.value(p.window)) if p.window is not None else 0
        return window, ins["cmp_slots"].shape[1].value if "cmp_slots" in ins else 0

    def _infer_parts(self, ins, p, dims):
        ori = ins["ori_kv"]
        self._pool("ori_kv", ori)
        rows_in = "window_rows" in ins
        if rows_in and p.window is not None:
            raise StageError("bad-value", "`window` is the length of a paged prefix; with `window_rows` the window "
                                          "part has the rows' columns", param="window", hint="drop `window`")
        if rows_in and "ori_block_table" in ins:
            raise StageError("unknown-key", "`window_rows` are physical rows of `ori_kv`: no page table reads them",
                             "ori_block_table", "drop `ori_block_table`, or the rows for a paged prefix")
        if not rows_in and p.window is not None and not {"ori_block_table", "seqused"} <= set(ins):
            raise StageError("missing-key", "a paged prefix (`window` without `window_rows`) needs `ori_block_table` "
                                            "and `seqused`", param="window")
        if "cmp_slots" in ins and not {"cmp_kv", "cmp_block_table"} <= set(ins):
            raise StageError("missing-key", "`cmp_slots` need `cmp_kv` and `cmp_block_table`", "cmp_slots")
        for port in ("cmp_kv", "cmp_block_table"):
            if port in ins and "cmp_slots" not in ins:
                raise StageError("unknown-key", f"`{port}` serves the compressed part, and no `cmp_slots` name its "
                                                "keys", port, "wire `cmp_slots`, or drop it")
        if p.window is not None and not float(dims.value(p.window)).is_integer():
            raise StageError("bad-value", f"`window` = {p.window} = {dims.value(p.window)} must be a whole number",
                             param="window")
        window, compressed = self._parts(ins, p, dims)
        if "seqused" in ins and not window:
            raise StageError("unknown-key", "`seqused` limits the window part's columns, and there is no window "
                                            "part", "seqused", "drop `seqused`, or wire `window_rows`")
        if window + compressed == 0:
            raise StageError("missing-key", "no keys: wire `indices`, or `window_rows` / a `window` prefix and "
                                            "`cmp_slots`", param="window")
        index = ins.get("window_rows") or ins.get("cmp_slots") or ins["seqused"]
        t_dim = index.shape[0]
        for port in ("window_rows", "cmp_slots"):
            if port in ins:
                expect(port, ins[port], rank=2, dtype=DType.int32, dims={0: t_dim})
        if "seqused" in ins:
            expect("seqused", ins["seqused"], rank=1, dtype=DType.int32, dims={0: t_dim})
        per = self.per_request(p, dims)
        if not float(per).is_integer() or not 1 <= per <= t_dim.value:
            raise StageError("bad-value", f"`tokens_per_request` = {p.tokens_per_request} = {per} must be a whole "
                                          f"number in [1, {t_dim.text} = {t_dim.value}]", param="tokens_per_request")
        requests = -(-t_dim.value // int(per))
        for table in ("ori_block_table", "cmp_block_table"):
            if table in ins:
                expect(table, ins[table], rank=2, dtype=DType.int32)
                if ins[table].shape[0].value != requests:
                    raise StageError("shape-mismatch", f"input `{table}` has {ins[table].shape[0].value} rows; "
                                                       f"{t_dim.text} = {t_dim.value} tokens in requests of "
                                                       f"{p.tokens_per_request} = {int(per)} need {requests}", table)
        if not rows_in and p.window is not None:
            table, block = ins["ori_block_table"].shape[1], ori.shape[1]
            if not 0 < window <= table.value * block.value:
                raise StageError("bad-value", f"`window` = {p.window} = {window} must be a whole number in [1, "
                                              f"{table.value * block.value}] (the {table.text} pages of {block.text} "
                                              "that `ori_block_table` holds per request)", param="window")
        layout = ori.layout
        if "cmp_kv" in ins:
            cmp = ins["cmp_kv"]
            self._pool("cmp_kv", cmp)
            expect("cmp_kv", cmp, dtype=ori.dtype, dims={1: ori.shape[1], len(cmp.shape) - 1: ori.shape[-1]})
            if ori.layout and cmp.layout and ori.layout != cmp.layout:
                raise StageError("layout-mismatch", f"`ori_kv` is {ori.layout.value} but `cmp_kv` is "
                                                    f"{cmp.layout.value}", "cmp_kv", "both pools must store one layout")
            layout = layout or cmp.layout
        n_dim = dims.dim(self._keys_text(ins, p))
        return {"kv": TensorType((t_dim, n_dim, ori.shape[-1]), ori.dtype, layout),
                "valid": TensorType((t_dim, n_dim), DType.int32)}

    @staticmethod
    def _keys_text(ins, p) -> str:
        """The key count as a dim expression: the window part's columns plus the compressed part's."""
        parts = []
        if "window_rows" in ins:
            parts.append(ins["window_rows"].shape[1].text)
        elif p.window is not None:
            parts.append(str(p.window))
        if "cmp_slots" in ins:
            parts.append(ins["cmp_slots"].shape[1].text)
        return " + ".join(f"({x})" if len(parts) > 1 and not x.isidentifier() else x for x in parts)

    def tiles(self, ins, p, dims):
        keys = ins["indices"].shape[1] if self.by_slots(ins) else dims.dim(self._keys_text(ins, p))
        lanes = next_pow2(ins["ori_kv"].shape[-1].value)
        preferred = max(1, min(32, 16384 // lanes))  # a GPU program holds 16K rows x lanes (addresses too)
        if not self.by_slots(ins) and "window_rows" not in ins and p.window is not None:
            block = ins["ori_kv"].shape[1].value  # a paged prefix: tiles inside one page (one copy each)
            preferred = min(preferred, block & -block)
        return {"block_j": choose_tile("block_j", p.block_j, keys, preferred)}

    def domain(self, ins, p, dims):
        t_dim = (ins.get("indices") or ins.get("window_rows") or ins.get("cmp_slots") or ins["seqused"]).shape[0]
        return (Axis("t", t_dim, parallel=True), Axis.tiled("jb", self.tiles(ins, p, dims)["block_j"]))

    def check_values(self, ins, types, p, dims):
        if "indices" in types:
            return self._check_slots(ins, types, p, dims)
        return self._check_parts(ins, types, p, dims)

    def _check_slots(self, ins, types, p, dims):
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

    def _check_parts(self, ins, types, p, dims):
        """Window rows lie in their pool; each token's compressed slots and prefix fit its request's page
        table row, and the pages they use lie in their pools (else the tile code reads outside a tensor)."""
        import torch

        problems = []
        per = int(self.per_request(p, dims))
        seq = ins.get("seqused")
        if seq is not None and (seq < 0).any():
            problems.append(("seqused", f"negative counts at tokens {_where(seq < 0)}"))
            return problems
        rows = ins.get("window_rows")
        if rows is not None:
            pool = types["ori_kv"].shape[0].value * types["ori_kv"].shape[1].value
            bad = (rows >= pool) | (rows < -1)
            if bad.any():
                problems.append(("window_rows", f"rows outside the pool's {pool} rows (or below -1) at tokens "
                                                f"{_where(bad.any(1))}"))
        needs = []  # (table, pool, positions used per token: [T, n] with -1 where unused)
        if "window_rows" not in types and p.window is not None and seq is not None:
            window = int(dims.value(p.window))
            pos = torch.arange(window).expand(seq.shape[0], window)
            needs.append(("ori_block_table", "ori_kv", torch.where(pos < seq.long()[:, None], pos, -1)))
        if "cmp_slots" in ins:
            needs.append(("cmp_block_table", "cmp_kv", ins["cmp_slots"].long()))
        for table, pool, pos in needs:
            pages, block = types[pool].shape[0].value, types[pool].shape[1].value
            cols = types[table].shape[1].value
            beyond = (pos >= cols * block) | (pos < -1)
            if beyond.any():
                port = "cmp_slots" if table == "cmp_block_table" else "seqused"
                problems.append((port, f"positions past the {cols} pages of `{table}` (or below -1) at tokens "
                                       f"{_where(beyond.any(1))}"))
                continue
            if table in ins:
                request = torch.arange(pos.shape[0]) // per
                page = ins[table].long()[request[:, None], pos.clamp(min=0) // block]
                bad = (pos >= 0) & ((page < 0) | (page >= pages))
                if bad.any():
                    problems.append((table, f"page ids outside the pool's {pages} pages at tokens "
                                            f"{_where(bad.any(1))}"))
        return problems

    def golden_args(self, p, dims, types):
        if "indices" in types:
            return {"window": int(dims.value(p.window))}
        window = int(dims.value(p.window)) if p.window is not None else 0
        return {"window": window, "tokens_per_request": int(self.per_request(p, dims))}

    def min_bytes(self, ins, outs, p):
        """Only the gathered rows of the pools are read, not the whole pools."""
        traffic = super().min_bytes(ins, outs, p)
        for pool in ("ori_kv", "cmp_kv"):
            if pool in ins:
                traffic[f"in:{pool}"] = 0
        traffic["gathered pool rows"] = outs["kv"].nbytes
        return traffic

    def triton(self, c):
        return self._triton_slots(c) if "indices" in c.stage.in_types else self._triton_parts(c)

    def pypto(self, c):
        return self._pypto_slots(c) if "indices" in c.stage.in_types else self._pypto_parts(c)

    def _triton_slots(self, c):
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

    def _pypto_slots(self, c):
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

    def _geometry(self, c) -> _Geometry:
        """The geometry both backends' parts addressing is written from."""
        ins = c.stage.in_types
        window, compressed = self._parts(ins, c.p, c.dims)
        w = c.dim("window_rows", 1) if "window_rows" in ins else c.expr(c.p.window) if window else "0"
        d_axis = len(ins["ori_kv"].shape) - 1
        per = int(self.per_request(c.p, c.dims))
        request = "t" if per == 1 else f"t // {c.expr(c.p.tokens_per_request)}"  # token t's page-table row
        return _Geometry(window, compressed, w, c.dim("kv", 1), d_axis, c.dim("ori_kv", d_axis), c.dim("ori_kv", 1),
                      request)

    def _triton_parts(self, c):
        ins = c.stage.in_types
        window, compressed, w, n, d_axis, d, block, request = self._geometry(c)
        request = request if request == "t" else f"({request})"
        lines = [f"j = jb * {c.tile('jb')} + tl.arange(0, {c.tile('jb')})",
                 *c.span("d", ins["ori_kv"].shape[d_axis], "D"),
                 f"in_row = j < {n}"]
        ok, rows = [], []
        if window:
            lines.append(f"ok_w = j < {w}" if compressed else "ok_w = in_row")
            if "window_rows" in ins:
                lines += [f"row_w = tl.load({c.src('window_rows')} + t * {w} + j, mask=ok_w, other=-1)",
                          "ok_w = ok_w & (row_w >= 0)"]
            if "seqused" in ins:
                lines.append(f"ok_w = ok_w & (j < tl.load({c.src('seqused')} + t))")
            if "window_rows" not in ins:  # the paged prefix: position j through the page table
                lines += [f"page_w = tl.load({c.src('ori_block_table')} + {request} * "
                          f"{c.dim('ori_block_table', 1)} + j // {block}, mask=ok_w, other=0)",
                          f"row_w = page_w * {block} + j % {block}"]
            lines.append("k_w = " + c.load(f"{c.src('ori_kv')} + row_w[:, None] * {d} + d[None, :]", "j", "d",
                                            mask="ok_w[:, None]"))
            ok.append("ok_w")
            rows.append("k_w")
        if compressed:
            first = f"(j >= {w}) & in_row" if window else "in_row"
            slot = f"j - {w}" if window else "j"
            lines += [f"slot = tl.load({c.src('cmp_slots')} + t * {c.dim('cmp_slots', 1)} + {slot}, mask={first}, "
                      "other=-1)",
                      "ok_c = slot >= 0",
                      f"page_c = tl.load({c.src('cmp_block_table')} + {request} * {c.dim('cmp_block_table', 1)} + "
                      f"slot // {block}, mask=ok_c, other=0)",
                      f"row_c = page_c * {block} + slot % {block}",
                      "k_c = " + c.load(f"{c.src('cmp_kv')} + row_c[:, None] * {d} + d[None, :]", "j", "d",
                                        mask="ok_c[:, None]")]
            ok.append("ok_c")
            rows.append("k_c")
        value = rows[0] if len(rows) == 1 else f"tl.where(ok_w[:, None], {rows[0]}, {rows[1]})"
        return lines + [
            c.store(f"{c.dst('kv')} + (t * {n} + j)[:, None] * {d} + d[None, :]", value, "j", "d",
                    mask="in_row[:, None]"),
            f"tl.store({c.dst('valid')} + t * {n} + j, ({' | '.join(ok)}).to(tl.int32), mask=in_row)",
        ]

    def _pypto_parts(self, c):
        ins = c.stage.in_types
        window, compressed, w, n, _, d, block, request = self._geometry(c)
        raw, slot, row, seq, page, src = (c.local(x) for x in ("raw", "slot", "row", "seq", "page", "src"))
        kv, valid = c.dst("kv"), c.dst("valid")
        step, tile = c.stride("jb"), c.tile("jb")
        end = f"(jb + 1) * {step}" if tile == step else f"jb * {step} + {tile}"  # the last tile is shorter

        def copy(pool: str, at: str, pad: str) -> list[str]:
            return [f"{pad}{src} = pl.cast({at}, pl.INDEX)",
                    f"{pad}{kv}[{row} : {row} + 1, 0:{d}] = {c.src(pool)}[{src} : {src} + 1, 0:{d}]",
                    f"{pad}{valid} = pl.write({valid}, [t, j], pl.const(1, pl.INT32))"]

        body = [f"{row} = t * {n} + j",
                f"{kv}[{row} : {row} + 1, 0:{d}] = pl.full([1, {d}], dtype=pl.BF16, value=0.0)",
                f"{valid} = pl.write({valid}, [t, j], pl.const(0, pl.INT32))"]
        if window:
            part = ["# the window part"] + ([f"if j < {w}:"] if compressed else [])
            pad = "    " if compressed else ""
            conds = []
            if "seqused" in ins:
                conds.append(f"j < {seq}")
            if "window_rows" in ins:  # a physical row of the pool, -1 invalid
                part.append(f"{pad}{raw} = pl.read({c.scalar_src('window_rows')}, [t, j])")
                conds.append(f"{raw} >= 0")
                at = raw
            else:  # the paged prefix: position j through the page table
                at = f"{page} * {block} + j % {block}"
            for i, cond in enumerate(conds):
                part.append(f"{pad}{'    ' * i}if {cond}:")
            pad += "    " * len(conds)
            if "window_rows" not in ins:
                part.append(f"{pad}{page} = pl.read({c.scalar_src('ori_block_table')}, [{request}, j // {block}])")
            body += part + copy("ori_kv", at, pad)
        if compressed:
            pad = "    " if window else ""
            # PyPTO takes INDEX scalars to be non-negative, so the compressed column j - W is formed only once
            # j >= W (see the slots addressing)
            body += ["# the compressed part"] + ([f"if j >= {w}:"] if window else []) + [
                f"{pad}{slot} = pl.read({c.scalar_src('cmp_slots')}, [t, j - {w}])" if window
                else f"{pad}{slot} = pl.read({c.scalar_src('cmp_slots')}, [t, j])",
                f"{pad}if {slot} >= 0:",
                f"{pad}    {page} = pl.read({c.scalar_src('cmp_block_table')}, [{request}, {slot} // {block}])",
            ] + copy("cmp_kv", f"{page} * {block} + {slot} % {block}", pad + "    ")
        head = [f"{seq} = pl.read({c.scalar_src('seqused')}, [t])"] if "seqused" in ins and window else []
        rows = [f"for j in pl.range(jb * {step}, {end}):"] + ["    " + line for line in body]
        paged = not ("window_rows" in ins or compressed) and "seqused" in ins
        if not paged or ins["ori_kv"].shape[1].value % c.size("block_j"):
            return head + rows
        # a paged prefix in tiles inside one page each: a tile of valid rows is one copy of contiguous pool
        # rows, a tile past the length is zeros; only the tile holding a request's end goes row by row.
        # `valid` takes scalar writes only (PyPTO cannot mix them with tile stores into one tensor)
        j0, first = c.local("j0"), c.local("first")

        def flags(value: int) -> list[str]:
            return [f"    for j in pl.range({j0}, {j0} + {tile}):",
                    f"        {valid} = pl.write({valid}, [t, j], pl.const({value}, pl.INT32))"]

        return head + [
            f"{j0} = jb * {step}",
            f"{first} = t * {n} + {j0}",
            f"if {j0} + {tile} <= {seq}:  # every row of the tile is a key",
            f"    {page} = pl.read({c.scalar_src('ori_block_table')}, [{request}, {j0} // {block}])",
            f"    {src} = pl.cast({page} * {block} + {j0} % {block}, pl.INDEX)",
            f"    {kv}[{first} : {first} + {tile}, 0:{d}] = {c.src('ori_kv')}[{src} : {src} + {tile}, 0:{d}]",
        ] + flags(1) + [
            f"elif {j0} >= {seq}:  # no row is",
            f"    {kv}[{first} : {first} + {tile}, 0:{d}] = pl.full([{tile}, {d}], dtype=pl.BF16, value=0.0)",
        ] + flags(0) + ["else:"] + ["    " + line for line in rows]


OP = GatherKV()
