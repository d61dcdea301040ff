"""Deterministic input fixtures from the YAML `init:` recipes.

Each recipe is a typed params model (validated when the spec loads) naming a self-contained torch
function `init_<recipe>(shape, seed, **args)`. `make_inputs` calls those functions; the PyPTO backend
copies their source into the generated harness, so both produce the same tensors. Every tensor has
its own seed derived from (seed, tensor name): adding an input never changes the others.
"""
from __future__ import annotations

import zlib
from typing import Callable, Literal

from pydantic import Field

from .spec import DimExpr
from .stage_api import Dims, Params, torch_dtype


def init_uniform(shape, seed, *, low, high, scale):
    """Uniform in [low, high) from a seeded generator, times `scale`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen) * (high - low) + low) * scale


def init_fill(shape, seed, *, value):
    """Every element `value` (zeros: value 0)."""
    import torch

    return torch.full(shape, float(value))


def init_block_table(shape, seed):
    """Identity page table: row t maps logical page j to physical page t * pages_per_row + j."""
    import torch

    rows, cols = shape
    return torch.arange(rows)[:, None] * cols + torch.arange(cols)[None, :]


def init_sparse_indices(shape, seed, *, window, compressed):
    """Per-token key slots: `window` window slots, then `compressed` slots offset by `window`, then -1."""
    import torch

    rows, width = shape
    row = torch.cat([torch.arange(window), window + torch.arange(compressed),
                     torch.full((width - window - compressed,), -1)])
    return row.expand(rows, width).clone()


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
    w = ((torch.rand(shape, generator=gen) * (high - low) + low) * scale).to(torch.bfloat16).float()
    amax = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.round(w * (127.0 / amax)) if part == "values" else (amax / 127.0).squeeze(-1)


class Recipe(Params):
    """A recipe: `function` plus keyword arguments made from its fields (dim expressions evaluated)."""

    def call(self, dims: Dims, shape: list[int], seed: int, recipes: dict) -> tuple[Callable, dict]:
        raise NotImplementedError


class Uniform(Recipe):
    low: float = -0.5
    high: float = 0.5
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
    def call(self, dims, shape, seed, recipes):
        return init_block_table, {}


class SparseIndices(Recipe):
    window: DimExpr
    compressed: DimExpr

    def call(self, dims, shape, seed, recipes):
        w, c = int(dims.value(self.window)), int(dims.value(self.compressed))
        if w + c > shape[-1]:
            raise ValueError(f"sparse_indices: window {w} + compressed {c} exceeds the row width {shape[-1]}")
        return init_sparse_indices, {"window": w, "compressed": c}


class RopeTable(Recipe):
    fn: Literal["cos", "sin"]
    step: float = 1e-3

    def call(self, dims, shape, seed, recipes):
        return init_rope_table, {"fn": self.fn, "step": self.step}


class Int8Rows(Uniform):
    """Per-row int8-quantized weights; the matching scales come from `dequant_scale: {of: NAME}`."""

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
        _, args = Uniform.call(recipe, dims, source_shape, source_seed, recipes)
        return init_int8_rows, {**args, "part": "scales", "shape_of": source_shape, "seed_of": source_seed}


RECIPES: dict[str, type[Recipe]] = {"uniform": Uniform, "zeros": Zeros, "fill": Fill, "block_table": BlockTable,
                                    "sparse_indices": SparseIndices, "rope_table": RopeTable, "int8_rows": Int8Rows,
                                    "dequant_scale": DequantScale}


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
