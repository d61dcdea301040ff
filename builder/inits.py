"""Deterministic input fixtures from the YAML `init:` recipes.

Each recipe is a typed params model (validated when the spec loads) naming a self-contained torch
function `init_<recipe>(shape, seed, **args)`. `make_inputs` calls those functions; the PyPTO backend
copies their source into the generated harness, so both produce the same tensors. Every tensor has
its own seed derived from (seed, tensor name): adding an input never changes the others.
"""
from __future__ import annotations

import zlib
from typing import Callable, ClassVar, Literal, Optional

from pydantic import Field

from .spec import DimExpr, Float, Int
from .dtypes import torch_dtype
from .stage_api import Dims, Params


def init_uniform(shape, seed, *, low, high, scale):
    """Uniform in [low, high) from a seeded generator, times `scale`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    # in place, in the order of `(rand * (high - low) + low) * scale`: the same values, no temporaries
    return torch.rand(shape, generator=gen).mul_(high - low).add_(low).mul_(scale)


def init_fill(shape, seed, *, value):
    """Every element `value` (zeros: value 0)."""
    import torch

    return torch.full(shape, float(value))


def init_block_table(shape, seed, *, pages):
    """Page table: each (row, logical page) gets its own physical page of a pool of `pages`, in a
    seeded random order (an identity table would hide a gather that ignores the table)."""
    import torch

    rows, cols = shape
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(pages, generator=gen)[: rows * cols].reshape(rows, cols)


def init_sparse_indices(shape, seed, *, window, compressed, holes):
    """Per-token key slots: `window` window slots, then `compressed` slots offset by `window`, then -1.
    One slot in every `holes` (0: none) of each row's valid part is -1 too, at a seeded place, and so is
    its last valid slot, so that every key block of a row can hold an invalid slot."""
    import torch

    rows, width = shape
    row = torch.cat([torch.arange(window), window + torch.arange(compressed),
                     torch.full((width - window - compressed,), -1)])
    table = row.expand(rows, width).clone()
    valid = window + compressed
    if holes and valid:
        gen = torch.Generator().manual_seed(seed)
        for r in range(rows):
            drop = torch.randperm(valid, generator=gen)[: max(1, valid // holes)]
            table[r, drop] = -1
            table[r, valid - 1] = -1
    return table


def init_cache_rows(shape, seed, *, rows, holes):
    """Per token, distinct rows of a cache of `rows` rows in a seeded random order, then -1 in one slot of
    every `holes` (0: none) and in the last slot, like `init_sparse_indices` (physical rows or paged slots)."""
    import torch

    tokens, width = shape
    gen = torch.Generator().manual_seed(seed)
    table = torch.stack([torch.randperm(rows, generator=gen)[:width] for _ in range(tokens)])
    if holes:
        for r in range(tokens):
            table[r, torch.randperm(width, generator=gen)[: max(1, width // holes)]] = -1
            table[r, width - 1] = -1
    return table


def init_randint(shape, seed, *, low, high):
    """Integers uniform in [low, high), seeded (e.g. per-request sequence lengths)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=gen)


def init_ragged_lens(shape, seed, *, longest, step):
    """Per-request lengths `longest`, `longest - step`, ... (at least 1): ragged, as pypto-lib's paged
    attention driver makes them with `--ragged` (step = context // (2 * batch))."""
    import torch

    return (longest - step * torch.arange(shape[0])).clamp(min=1)


def init_rope_table(shape, seed, *, fn, step):
    """Angles `arange(T * R/2).reshape(T, R/2) * step`; cos or sin of the R/2 values, repeated twice."""
    import torch

    rows, width = shape
    angles = torch.arange(rows * (width // 2), dtype=torch.float64).reshape(rows, width // 2) * step
    return getattr(torch, fn)(angles).repeat(1, 2).float()


def init_int8_rows(shape, seed, *, low, high, scale, part):
    """Weights sampled like `init_uniform`, rounded to bf16, quantized per row (scale 127 / amax, round
    half to even). `part` picks the int8 values ("values") or the dequant scales amax / 127 ("scales")."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(shape, generator=gen).mul_(high - low).add_(low).mul_(scale).to(torch.bfloat16).float()
    amax = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return w.mul_(127.0 / amax).round_() if part == "values" else (amax / 127.0).squeeze(-1)


class Recipe(Params):
    """A recipe: `function` plus keyword arguments made from its fields (dim expressions evaluated).
    `call` raises ValueError when the recipe cannot fill a tensor of that shape."""

    ranks: ClassVar[Optional[tuple[int, ...]]] = None  # tensor ranks the recipe can fill (None: any)

    def call(self, dims: Dims, shape: list[int], seed: int, recipes: dict) -> tuple[Callable, dict]:
        raise NotImplementedError

    def check_rank(self, name: str, shape: list[int]) -> None:
        if self.ranks is not None and len(shape) not in self.ranks:
            want = " or ".join(f"{r}-D" for r in self.ranks)
            raise ValueError(f"this recipe fills {want} tensors, and the input is {len(shape)}-D")


def _count(dims: Dims, text, what: str, low: int = 0) -> int:
    """An integer recipe argument of at least `low`."""
    value = dims.value(text)
    if not float(value).is_integer() or value < low:
        raise ValueError(f"`{what}` = {text} = {value} must be a whole number >= {low}")
    return int(value)


class Uniform(Recipe):
    low: Float = -0.5
    high: Float = 0.5
    scale: DimExpr = Field(1, description="multiplier applied after sampling, e.g. `O_GROUP_IN ** -0.5`")

    def call(self, dims, shape, seed, recipes):
        return init_uniform, {"low": self.low, "high": self.high, "scale": float(dims.value(self.scale))}


class Zeros(Recipe):
    def call(self, dims, shape, seed, recipes):
        return init_fill, {"value": 0}


class Fill(Recipe):
    value: DimExpr

    def call(self, dims, shape, seed, recipes):
        return init_fill, {"value": dims.value(self.value)}


class BlockTable(Recipe):
    pages: DimExpr = Field(description="physical pages of the pool the table addresses")
    ranks = (2,)

    def call(self, dims, shape, seed, recipes):
        pages = _count(dims, self.pages, "pages", 1)
        if shape[0] * shape[1] > pages:
            raise ValueError(f"block_table: {shape[0]} x {shape[1]} logical pages need more than the pool's "
                             f"{pages} physical pages (`pages: {self.pages}`)")
        return init_block_table, {"pages": pages}


class SparseIndices(Recipe):
    window: DimExpr
    compressed: DimExpr
    holes: Int = Field(0, ge=0, description="one slot in every `holes` of a row's valid part is -1 (0: none)")
    ranks = (2,)

    def call(self, dims, shape, seed, recipes):
        w, c = _count(dims, self.window, "window"), _count(dims, self.compressed, "compressed")
        if w + c > shape[-1]:
            raise ValueError(f"sparse_indices: window {w} + compressed {c} exceeds the row width {shape[-1]}")
        return init_sparse_indices, {"window": w, "compressed": c, "holes": self.holes}


class CacheRows(Recipe):
    rows: DimExpr = Field(description="rows the indices address (a pool's pages x block, or a page table's slots)")
    holes: Int = Field(0, ge=0, description="one slot in every `holes` of a row is -1, and so is its last (0: none)")
    ranks = (2,)

    def call(self, dims, shape, seed, recipes):
        rows = _count(dims, self.rows, "rows", 1)
        if shape[1] > rows:
            raise ValueError(f"cache_rows: {shape[1]} distinct rows per token need more than the {rows} rows "
                             f"(`rows: {self.rows}`)")
        return init_cache_rows, {"rows": rows, "holes": self.holes}


class RandInt(Recipe):
    low: DimExpr
    high: DimExpr = Field(description="exclusive upper bound")

    def call(self, dims, shape, seed, recipes):
        low, high = _count(dims, self.low, "low", -2**31), _count(dims, self.high, "high", -2**31)
        if high <= low or high > 2**31:
            raise ValueError(f"randint: needs low < high <= 2**31 (low = {low}, high = {high})")
        return init_randint, {"low": low, "high": high}


class RaggedLens(Recipe):
    longest: DimExpr = Field(description="the first request's length")
    step: DimExpr = Field(description="how much shorter each next request is (lengths stay at least 1)")
    ranks = (1,)

    def call(self, dims, shape, seed, recipes):
        longest, step = _count(dims, self.longest, "longest", 1), _count(dims, self.step, "step")
        if longest >= 2**31:
            raise ValueError(f"ragged_lens: longest = {longest} does not fit int32")
        return init_ragged_lens, {"longest": longest, "step": step}


class RopeTable(Recipe):
    fn: Literal["cos", "sin"]
    step: Float = 1e-3
    ranks = (2,)

    def call(self, dims, shape, seed, recipes):
        if shape[1] % 2:
            raise ValueError(f"rope_table: the width {shape[1]} must be even (cos/sin of width/2 angles, twice)")
        return init_rope_table, {"fn": self.fn, "step": self.step}


class Int8Rows(Uniform):
    """Per-row int8-quantized weights; the matching scales come from `dequant_scale: {of: NAME}`."""

    ranks = (2, 3)

    def call(self, dims, shape, seed, recipes):
        _, args = super().call(dims, shape, seed, recipes)
        return init_int8_rows, {**args, "part": "values"}


class DequantScale(Recipe):
    """Per-row dequant scales (amax / 127) of the `int8_rows` input named by `of`."""

    of: str

    def call(self, dims, shape, seed, recipes):
        source = recipes.get(self.of)
        if source is None or not isinstance(source[1], Int8Rows):
            raise ValueError(f"dequant_scale: `{self.of}` is not an input initialised with `int8_rows`")
        source_shape, recipe, source_seed = source
        if list(shape) != list(source_shape[:-1]):
            raise ValueError(f"dequant_scale: `{self.of}` has shape {source_shape}, so its scales have shape "
                             f"{source_shape[:-1]}, not {shape}")
        _, args = Uniform.call(recipe, dims, source_shape, source_seed, recipes)
        return init_int8_rows, {**args, "part": "scales", "shape_of": source_shape, "seed_of": source_seed}


RECIPES: dict[str, type[Recipe]] = {"uniform": Uniform, "zeros": Zeros, "fill": Fill, "block_table": BlockTable,
                                    "randint": RandInt, "cache_rows": CacheRows,
                                    "sparse_indices": SparseIndices, "rope_table": RopeTable, "int8_rows": Int8Rows,
                                    "dequant_scale": DequantScale, "ragged_lens": RaggedLens}


def recipe_of(init: dict) -> Recipe:
    (name, args), = init.items()
    return RECIPES[name].model_validate(args or {})


def input_seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode())


def recipe_call(tg, name: str, run_seed: int) -> tuple[Callable, dict]:
    """(function, keyword arguments including shape and seed) that initialise kernel input `name`."""
    recipes = {n: ([d.value for d in t.shape], recipe_of(tg.spec.inputs[n].init), input_seed(run_seed, n))
               for n, t in tg.inputs.items()}
    shape, recipe, seed = recipes[name]
    fn, args = recipe.call(tg.dims, shape, seed, recipes)
    shape = args.pop("shape_of", shape)
    seed = args.pop("seed_of", seed)
    return fn, {"shape": shape, "seed": seed, **args}


def make_inputs(tg, seed: int = 0) -> dict:
    made = {}
    for name, t in tg.inputs.items():
        fn, args = recipe_call(tg, name, seed)
        made[name] = fn(**args).to(torch_dtype(t.dtype)).contiguous()
    return made
