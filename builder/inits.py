"""Deterministic input fixtures from the YAML `init:` recipes (torch; only imported to run kernels).

Each recipe is a typed model; every tensor gets its own generator seeded from (seed, tensor name), so
adding an input never changes the others' values.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import Field

from .spec import DimExpr
from .stage_api import Dims, Params, TensorType, torch_dtype


@dataclass(frozen=True)
class InitContext:
    """What a recipe may know beyond its own tensor: every input's (type, recipe), and the seed."""

    recipes: dict
    seed: int


class Uniform(Params):
    low: float = -0.5
    high: float = 0.5
    scale: DimExpr = Field(1, description="multiplier applied after sampling, e.g. `O_GROUP_IN ** -0.5`")

    def make(self, t: TensorType, dims: Dims, gen, torch, ctx):
        x = torch.rand(t.numel_shape, generator=gen) * (self.high - self.low) + self.low
        return x * float(dims.value(self.scale))


class Zeros(Params):
    def make(self, t, dims, gen, torch, ctx):
        return torch.zeros(t.numel_shape)


class Fill(Params):
    value: DimExpr

    def make(self, t, dims, gen, torch, ctx):
        return torch.full(t.numel_shape, float(dims.value(self.value)))


class BlockTable(Params):
    """Identity page table: row t maps logical page j to physical page t * pages_per_row + j."""

    def make(self, t, dims, gen, torch, ctx):
        rows, cols = t.numel_shape
        return torch.arange(rows)[:, None] * cols + torch.arange(cols)[None, :]


class SparseIndices(Params):
    """Per-token key slots: `window` window slots, then `compressed` slots offset by `window`, then -1."""

    window: DimExpr
    compressed: DimExpr

    def make(self, t, dims, gen, torch, ctx):
        rows, width = t.numel_shape
        w, c = int(dims.value(self.window)), int(dims.value(self.compressed))
        if w + c > width:
            raise ValueError(f"sparse_indices: window {w} + compressed {c} exceeds the row width {width}")
        row = torch.cat([torch.arange(w), w + torch.arange(c), torch.full((width - w - c,), -1)])
        return row.expand(rows, width)


class RopeTable(Params):
    """Angles `arange(T * R/2).reshape(T, R/2) * step`; the R/2 values repeated twice along the row."""

    fn: Literal["cos", "sin"]
    step: float = 1e-3

    def make(self, t, dims, gen, torch, ctx):
        rows, width = t.numel_shape
        angles = torch.arange(rows * (width // 2), dtype=torch.float64).reshape(rows, width // 2) * self.step
        return getattr(torch, self.fn)(angles).repeat(1, 2).float()


class Int8Rows(Uniform):
    """Weights sampled like `uniform`, rounded to bf16, then quantized per row: scale 127 / amax, round
    half to even, int8. The matching dequant scales come from `dequant_scale: {of: NAME}`."""

    def quantize(self, t: TensorType, dims: Dims, gen, torch):
        w = super().make(t, dims, gen, torch, None).to(torch.bfloat16).float()
        amax = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.round(w * (127.0 / amax)), (amax / 127.0).squeeze(-1)

    def make(self, t, dims, gen, torch, ctx):
        return self.quantize(t, dims, gen, torch)[0]


class DequantScale(Params):
    """Per-row dequant scale (amax / 127) of the `int8_rows` input named by `of`."""

    of: str

    def make(self, t, dims, gen, torch, ctx):
        source_type, recipe = ctx.recipes.get(self.of, (None, None))
        if not isinstance(recipe, Int8Rows):
            raise ValueError(f"dequant_scale: `{self.of}` is not an input initialised with `int8_rows`")
        return recipe.quantize(source_type, dims, _generator(torch, ctx.seed, self.of), torch)[1]


RECIPES: dict[str, type[Params]] = {"uniform": Uniform, "zeros": Zeros, "fill": Fill, "block_table": BlockTable,
                                    "sparse_indices": SparseIndices, "rope_table": RopeTable, "int8_rows": Int8Rows,
                                    "dequant_scale": DequantScale}


def recipe_of(init: dict) -> Params:
    (name, args), = init.items()
    return RECIPES[name].model_validate(args or {})


def _generator(torch, seed: int, name: str):
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def make_inputs(tg, seed: int = 0) -> dict:
    import torch

    ctx = InitContext({name: (t, recipe_of(tg.spec.inputs[name].init)) for name, t in tg.inputs.items()}, seed)
    made: dict = {}
    for name, (t, recipe) in ctx.recipes.items():
        value = recipe.make(t, tg.dims, _generator(torch, seed, name), torch, ctx)
        made[name] = value.to(torch_dtype(t.dtype)).contiguous()
    return made
