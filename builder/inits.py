"""Deterministic input fixtures from the YAML `init:` recipes (torch; only imported to run kernels).

Each recipe is a typed model; every tensor gets its own generator seeded from (seed, tensor name), so
adding an input never changes the others' values.
"""
from __future__ import annotations

import zlib
from typing import Literal, Union

from pydantic import Field

from .spec import DimExpr
from .stage_api import Dims, Params, TensorType, torch_dtype


class Uniform(Params):
    low: float = -0.5
    high: float = 0.5
    scale: DimExpr = Field(1, description="multiplier applied after sampling, e.g. `O_GROUP_IN ** -0.5`")

    def make(self, t: TensorType, dims: Dims, gen, torch, made):
        x = torch.rand(t.numel_shape, generator=gen) * (self.high - self.low) + self.low
        return x * float(dims.value(self.scale))


class Zeros(Params):
    def make(self, t, dims, gen, torch, made):
        return torch.zeros(t.numel_shape)


class Fill(Params):
    value: DimExpr

    def make(self, t, dims, gen, torch, made):
        return torch.full(t.numel_shape, float(dims.value(self.value)))


class BlockTable(Params):
    """Identity page table: row t maps logical page j to physical page t * pages_per_row + j."""

    def make(self, t, dims, gen, torch, made):
        rows, cols = t.numel_shape
        return torch.arange(rows)[:, None] * cols + torch.arange(cols)[None, :]


class SparseIndices(Params):
    """Per-token key slots: `window` window slots, then `compressed` slots offset by `window`, then -1."""

    window: DimExpr
    compressed: DimExpr

    def make(self, t, dims, gen, torch, made):
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

    def make(self, t, dims, gen, torch, made):
        rows, width = t.numel_shape
        angles = torch.arange(rows * (width // 2), dtype=torch.float64).reshape(rows, width // 2) * self.step
        return getattr(torch, self.fn)(angles).repeat(1, 2).float()


RECIPES: dict[str, type[Params]] = {"uniform": Uniform, "zeros": Zeros, "fill": Fill, "block_table": BlockTable,
                                    "sparse_indices": SparseIndices, "rope_table": RopeTable}


def recipe_of(init: dict) -> Params:
    (name, args), = init.items()
    return RECIPES[name].model_validate(args or {})


def make_inputs(tg, seed: int = 0) -> dict:
    import torch

    made: dict = {}
    for name, t in tg.inputs.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        value = recipe_of(tg.spec.inputs[name].init).make(t, tg.dims, gen, torch, made)
        made[name] = value.to(torch_dtype(t.dtype)).contiguous()
    return made
