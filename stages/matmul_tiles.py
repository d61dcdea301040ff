"""The K loop shared by the matmul stages: one output tile of `rows x block_n`, accumulated over K.

`grouped_matmul` and `matmul_w8a8` differ only in where their rows start, their dtypes and their
epilogue; the tiling, row padding and accumulation live here once per backend.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from builder.spec import DType, Int
from builder.stage_api import Dim, Params, Tile, choose_tile
from stages.dots import exact_dot


class MatmulParams(Params):
    """Tile params of a matmul stage; each op documents its own defaults (`DEFAULT_TILES`)."""

    block_n: Optional[Int] = Field(None, ge=16, description="output columns per program (default: the op's)")
    block_k: Optional[Int] = Field(None, ge=16, description="reduction depth per step (default: the op's)")
    out_dtype: DType = DType.bf16


def matmul_tiles(p, n: Dim, k: Dim, default_n: int, default_k: int, programs: int, moved: int) -> dict[str, Tile]:
    """block_n over the output columns, block_k over the reduction: the params, or the op's defaults
    capped at the extents (a `tl.dot` operand needs at least 16 of each). A matmul streaming a big
    weight gets a block_n small enough to fill the GPU (`programs`: those along its other axes)."""
    return {"block_n": choose_tile("block_n", p.block_n, n, default_n, minimum=16, fill=(programs, moved)),
            "block_k": choose_tile("block_k", p.block_k, k, default_k, minimum=16)}


def dot_rows(rows: int) -> int:
    """Row tile for tl.dot: a power of two of at least 16 (the tensor-core minimum)."""
    return max(16, 1 << (rows - 1).bit_length())


def _block_k(c) -> tuple[str, Tile]:
    tile = c.stage.tiles["block_k"]
    note = ", block_k default" if tile.defaulted else ""
    return c.const("BLOCK_K", tile.size, f"reduction depth per step{note}"), tile


def triton_k_loop(c, *, a: str, a_row0: str, w: str, w_row0: str, rows: str, rows_dim: Dim, k_dim: str,
                  dtype: DType) -> list[str]:
    """`acc[r, n] = sum_k a[a_row0 + r, k] * w[w_row0 + n, k]` for the program's rows `r < rows` and
    columns `n` (a tile of axis `nb`): fp32 accumulation for float inputs, int32 for int8. Columns
    and depth past their extents are masked."""
    pad = c.const("ROWS", dot_rows(rows_dim.value), f"{rows_dim.text} rows padded for tl.dot")
    bk, k_tile = _block_k(c)
    bn = c.tile("nb")
    if dtype is DType.int8:
        acc_type, dot = "tl.int32", "tl.dot(a, tl.trans(w), out_dtype=tl.int32)"
    else:  # on tensor cores, exactly (stages/dots.py)
        acc_type = "tl.float32"
        exact = dtype is DType.bf16
        _, dot = exact_dot("a.to(tl.float32)", "tl.trans(w.to(tl.float32))", exact, exact)
    a_rows = f"({a_row0} + r)" if a_row0 != "0" else "r"
    w_rows = f"({w_row0} + n)" if w_row0 != "0" else "n"
    columns = c.lanes("n", "nb")  # first: it defines the columns' mask
    depth = ["k_ok[None, :]"] if k_tile.tail else []
    w_mask = " & ".join(filter(None, [c.mask("n", "k")] + depth))
    return [f"r = tl.arange(0, {pad})", *columns, f"live = r < {rows}",
            f"acc = tl.zeros([{pad}, {bn}], {acc_type})",
            f"for k0 in range(0, {k_dim}, {bk}):",
            f"    k = k0 + tl.arange(0, {bk})",
            ] + [f"    k_ok = k < {k_dim}"] * bool(k_tile.tail) + [
            f"    a = tl.load({a} + {a_rows}[:, None] * {k_dim} + k[None, :], "
            f"mask={' & '.join(['live[:, None]'] + depth)}, other=0)",
            f"    w = tl.load({w} + {w_rows}[:, None] * {k_dim} + k[None, :]"
            + (f", mask={w_mask}, other=0)" if w_mask else ")"),
            f"    acc += {dot}",
    ]


def pypto_k_loop(c, *, a: str, a_row0: str, w: str, w_row0: str, rows: str, rows_dim: Dim, k_dim: str,
                 dtype: DType, acc: str) -> list[str]:
    """The same product as `pl.matmul` + `pl.matmul_acc` steps over K into the local `acc`; here
    `w_row0` is the first weight row of this tile (Triton's `n` already carries the tile offset). A
    depth that `block_k` does not divide ends with a shorter step."""
    bk, k_tile = _block_k(c)
    bn = c.tile("nb")
    out = "pl.INT32" if dtype is DType.int8 else "pl.FP32"
    a_tile = lambda k0, k1: (f"{a}[{a_row0} : {a_row0} + {rows}, {k0} : {k1}]" if a_row0 != "0"
                             else f"{a}[0:{rows}, {k0} : {k1}]")
    w_tile = lambda k0, k1: f"{w}[{w_row0} : {w_row0} + {bn}, {k0} : {k1}]"
    depth, size = k_tile.extent.value, k_tile.size
    first = bk if depth >= size else k_dim
    lines = [f"{acc} = pl.matmul({a_tile(0, first)}, {w_tile(0, first)}, b_trans=True, out_dtype={out})"]
    if depth >= 2 * size:
        end = k_dim if not k_tile.tail else f"{k_dim} // {bk} * {bk}"
        lines += [f"for k0 in pl.range({bk}, {end}, {bk}):",
                  f"    {acc} = pl.matmul_acc({acc}, {a_tile('k0', f'k0 + {bk}')}, {w_tile('k0', f'k0 + {bk}')}, "
                  "b_trans=True)"]
    if k_tile.tail and depth > size:
        tail = c.const("K_TAIL", k_tile.tail, f"{k_tile.extent.text} % {size}: the last reduction step")
        k0 = f"{k_dim} - {tail}"
        lines.append(f"{acc} = pl.matmul_acc({acc}, {a_tile(k0, k_dim)}, {w_tile(k0, k_dim)}, b_trans=True)")
    return lines
