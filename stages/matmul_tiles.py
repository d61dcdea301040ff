"""The K loop shared by the matmul stages: one output tile of `rows x block_n`, accumulated over K.

`grouped_matmul`, `matmul_w8a8` and `matmul` differ only in where their rows start, their dtypes,
their weight layout (`[N, K]` rows, or `[K, N]`) and their epilogue; the tiling, row padding, K
slices and accumulation live here once per backend.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from pydantic import Field

from builder.spec import DType, Int
from builder.stage_api import Dim, Params, Tile, choose_tile
from stages.dots import exact_dot


class MatmulParams(Params):
    """Tile params of a matmul stage; each op documents its own defaults (`DEFAULT_TILES`)."""

    block_n: Optional[Int] = Field(None, ge=16, description="output columns per program (default: the op's)")
    block_k: Optional[Int] = Field(None, ge=16, description="reduction depth per step (default: the op's)")
    out_dtype: DType = DType.bf16


def matmul_tiles(p, n: Dim, k: Dim, default_n: int, default_k: int, programs: int, moved: int, rows: int = 0,
                 step_bytes: int = 0) -> dict[str, Tile]:
    """block_n over the output columns, block_k over the reduction: the params, or the op's defaults
    capped at the extents (a `tl.dot` operand needs at least 16 of each). A matmul streaming a big
    weight gets a block_n small enough to fill the GPU (`programs`: those along its other axes).
    With `step_bytes`, defaulted tiles shrink until one reduction step's operands (`rows` padded for
    `tl.dot`, plus the weight tile, one byte per element) fit: block_k down to 128, then block_n down
    to 16, then block_k down to 32."""
    tiles = {"block_n": choose_tile("block_n", p.block_n, n, default_n, minimum=16, fill=(programs, moved)),
             "block_k": choose_tile("block_k", p.block_k, k, default_k, minimum=16)}
    pad = dot_rows(rows) if rows else 0
    while step_bytes and (pad + tiles["block_n"].size) * tiles["block_k"].size > step_bytes:
        bn, bk = tiles["block_n"], tiles["block_k"]
        param = ("block_k" if bk.defaulted and bk.size > 128 else "block_n" if bn.defaulted and bn.size > 16
                 else "block_k" if bk.defaulted and bk.size > 32 else None)
        if param is None:
            break
        tiles[param] = replace(tiles[param], size=tiles[param].size // 2)
    return tiles


CUBE_ROWS = 16  # the fewest rows an Ascend cube matmul takes (fewer: PyPTO's hint PH-AT-005)


def dot_rows(rows: int) -> int:
    """Row tile for tl.dot: a power of two of at least 16 (the tensor-core minimum)."""
    return max(16, 1 << (rows - 1).bit_length())


def _block_k(c) -> tuple[str, Tile]:
    tile = c.stage.tiles["block_k"]
    note = ", block_k default" if tile.defaulted else ""
    return c.const("BLOCK_K", tile.size, f"reduction depth per step{note}"), tile


def k_slice_const(c) -> str:
    """Constant holding the depth of one K slice (`block_k`'s extent, for a stage cut into slices)."""
    k_tile = c.stage.tiles["block_k"]
    return c.const("K_SLICE", k_tile.extent.value, f"{k_tile.extent.text}: the depth of one of the K slices")


def triton_k_loop(c, *, a: str, a_row0: str, w: str, w_row0: str, rows: str, rows_dim: Dim, k_dim: str,
                  dtype: DType, w_kn: bool = False, n_dim: str = "", k_slice: bool = False,
                  split_k: int = 1) -> list[str]:
    """`acc[r, n] = sum_k a[a_row0 + r, k] * w[w_row0 + n, k]` for the program's rows `r < rows` and
    columns `n` (a tile of axis `nb`): fp32 accumulation for float inputs, int32 for int8. Columns
    and depth past their extents are masked.

    `w_kn`: the weight is stored `[K, N]` (`n_dim` columns) and read as `w[k, w_row0 + n]`.
    `k_slice`: the sum runs over K slice `s` only (`block_k`'s extent deep; `s` a domain axis).
    `split_k` > 1: K is cut into that many slices of `block_k`'s extent, each accumulated on its own
    from zero (into `part`) and added to `acc` in ascending order, in one program."""
    pad = c.const("ROWS", dot_rows(rows_dim.value), f"{rows_dim.text} rows padded for tl.dot")
    bk, k_tile = _block_k(c)
    bn = c.tile("nb")
    into = "part" if split_k > 1 else "acc"
    w_tile = "w.to(tl.float32)" if w_kn else "tl.trans(w.to(tl.float32))"
    if dtype is DType.int8:
        w_int = "w" if w_kn else "tl.trans(w)"
        acc_type, dot = "tl.int32", f"tl.dot(a, {w_int}, {into}, out_dtype=tl.int32)"
    else:  # on tensor cores, exactly (stages/dots.py)
        acc_type = "tl.float32"
        exact = dtype is DType.bf16
        _, dot = exact_dot("a.to(tl.float32)", w_tile, exact, exact, acc=into)
    a_rows = f"({a_row0} + r)" if a_row0 != "0" else "r"
    w_rows = f"({w_row0} + n)" if w_row0 != "0" else "n"
    columns = c.lanes("n", "nb")  # first: it defines the columns' mask
    # Both tiles' addresses are computed once and advanced by a step of K each iteration, and the
    # masks that do not depend on K are built before the loop: fewer integer ops per step.
    if w_kn:
        w_at, w_step, w_cols = f"k[:, None] * {n_dim} + {w_rows}[None, :]", f"{bk} * {n_dim}", c.mask("k", "n")
    else:
        w_at, w_step, w_cols = f"{w_rows}[:, None] * {k_dim} + k[None, :]", bk, c.mask("n", "k")
    a_mask, w_mask = "a_ok", "w_ok" if w_cols else None
    if k_tile.tail:  # the last step runs past K: its lanes are masked too
        a_mask += " & k_ok[None, :]"
        w_mask = " & ".join(filter(None, [w_mask, "k_ok[:, None]" if w_kn else "k_ok[None, :]"]))
    if k_slice or split_k > 1:
        slice_ = k_slice_const(c)
        start, end = "s * " + slice_, f"s * {slice_} + {slice_}"
    else:
        start, end = "0", k_dim
    first = f"{start} + tl.arange(0, {bk})" if start != "0" else f"tl.arange(0, {bk})"
    head = [f"r = tl.arange(0, {pad})", *columns, f"live = r < {rows}", f"acc = tl.zeros([{pad}, {bn}], {acc_type})",
            "a_ok = live[:, None]"] + [f"w_ok = {w_cols}"] * bool(w_cols)
    loop = [f"k = {first}",
            f"a_at = {a} + {a_rows}[:, None] * {k_dim} + k[None, :]",
            f"w_at = {w} + {w_at}",
            f"for k0 in range({start}, {end}, {bk}):",
            ] + [f"    k_ok = k0 + tl.arange(0, {bk}) < {end}"] * bool(k_tile.tail) + [
            f"    a = tl.load(a_at, mask={a_mask}, other=0)",
            "    w = tl.load(w_at" + (f", mask={w_mask}, other=0)" if w_mask else ")"),
            f"    {into} = {dot}",
            f"    a_at += {bk}",
            f"    w_at += {w_step}",
    ]
    if split_k > 1:
        split = c.const("SPLIT_K", split_k, "K slices, each summed on its own, added in ascending order")
        return head + [f"for s in range(0, {split}):", f"    part = tl.zeros([{pad}, {bn}], {acc_type})"] + [
            "    " + line for line in loop] + ["    acc += part"]
    return head + loop


def pypto_k_loop(c, *, a: str, a_row0: str, w: str, w_row0: str, rows: str, rows_dim: Dim, k_dim: str,
                 dtype: DType, acc: str, w_kn: bool = False, k_slice: bool = False, split_k: int = 1) -> list[str]:
    """The same product as `pl.matmul` + `pl.matmul_acc` steps over K into the local `acc`; here
    `w_row0` is the first weight row of this tile (Triton's `n` already carries the tile offset) or,
    with `w_kn`, its first weight column. A depth that `block_k` does not divide ends with a shorter
    step; `k_slice`: only K slice `s` (a domain axis) is summed. Fewer rows than the cube's 16 are
    read as a 16-row `pl.slice` whose `valid_shape` holds the real rows (as pypto-lib pads its decode
    matmuls), and `acc` keeps the real rows of the padded accumulator. With `split_k` > 1, each K slice
    is its own such product (into a local `part`), added to `acc` in ascending order."""
    pad = CUBE_ROWS if rows_dim.value < CUBE_ROWS else 0
    into = c.local("acc_pad") if pad else acc
    args: dict[str, Any] = dict(a=a, a_row0=a_row0, w=w, w_row0=w_row0, rows=rows, k_dim=k_dim, dtype=dtype,
                                w_kn=w_kn, pad=pad)
    real = [f"{acc} = {into}[0:{rows}, :]  # the real rows"] * bool(pad)
    if k_slice:
        slice_ = k_slice_const(c)
        k0 = c.let("k0", f"s * {slice_}", "this K slice's first column")
        return _pypto_k_range(c, acc=into, base=k0, end=f"{k0} + {slice_}", depth=slice_, **args) + real
    if split_k == 1:
        return _pypto_k_range(c, acc=into, base="0", end=k_dim, depth=k_dim, **args) + real
    slice_ = k_slice_const(c)
    split = c.const("SPLIT_K", split_k, "K slices, each summed on its own, added in ascending order")
    part, ks, s = c.local("part"), c.local("ks"), c.local("s")
    part_into = c.local("part_pad") if pad else part
    lines = _pypto_k_range(c, acc=into, base="0", end=slice_, depth=slice_, **args) + real
    lines += [f"for {s} in pl.range(1, {split}):", f"    {ks} = {s} * {slice_}"]
    lines += ["    " + line for line in _pypto_k_range(c, acc=part_into, base=ks, end=f"{ks} + {slice_}",
                                                          depth=slice_, **args)]
    lines += [f"    {part} = {part_into}[0:{rows}, :]  # the real rows"] * bool(pad)
    return lines + [f"    {acc} = pl.add({acc}, {part})"]


def _pypto_k_range(c, *, a: str, a_row0: str, w: str, w_row0: str, rows: str, k_dim: str, dtype: DType, acc: str,
                   w_kn: bool, pad: int, base: str, end: str, depth: str) -> list[str]:
    """`acc` = the product over depth `base` to `end` = `base + depth` (the extent of `block_k`'s tile);
    `pad`: the rows the activation tile is padded to (0: none)."""
    k_tile = c.stage.tiles["block_k"]
    bk = _block_k(c)[0] if k_tile.extent.value >= k_tile.size else ""  # a depth under one step needs no constant
    bn = c.tile("nb")
    out = "pl.INT32" if dtype is DType.int8 else "pl.FP32"

    def a_tile(k0: str, k1: str, width: str) -> str:
        if pad:
            return f"pl.slice({a}, [{pad}, {width}], [{a_row0}, {k0}], valid_shape=[{rows}, {width}])"
        return (f"{a}[{a_row0} : {a_row0} + {rows}, {k0} : {k1}]" if a_row0 != "0"
                else f"{a}[0:{rows}, {k0} : {k1}]")

    if w_kn:
        w_tile = lambda k0, k1: f"{w}[{k0} : {k1}, {w_row0} : {w_row0} + {bn}]"
        trans = ""
    else:
        w_tile = lambda k0, k1: f"{w}[{w_row0} : {w_row0} + {bn}, {k0} : {k1}]"
        trans = ", b_trans=True"
    plus = lambda x: x if base == "0" else f"{base} + {x}"
    extent, size = k_tile.extent.value, k_tile.size
    first = plus(bk) if extent >= size else end
    lines = [f"{acc} = pl.matmul({a_tile(base, first, bk or depth)}, {w_tile(base, first)}{trans}, out_dtype={out})"]
    if extent >= 2 * size:
        whole = end if not k_tile.tail else plus(f"{depth} // {bk} * {bk}")
        lines += [f"for k0 in pl.range({plus(bk)}, {whole}, {bk}):",
                  f"    {acc} = pl.matmul_acc({acc}, {a_tile('k0', f'k0 + {bk}', bk)}, {w_tile('k0', f'k0 + {bk}')}"
                  f"{trans})"]
    if k_tile.tail and extent > size:
        tail = c.const("K_TAIL", k_tile.tail, f"{k_tile.extent.text} % {size}: the last reduction step")
        k0 = f"{end} - {tail}"
        lines.append(f"{acc} = pl.matmul_acc({acc}, {a_tile(k0, end, tail)}, {w_tile(k0, end)}{trans})")
    return lines
