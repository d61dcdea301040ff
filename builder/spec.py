"""Typed, located spec models (pydantic v2, frozen, unknown keys forbidden).

A `KernelSpec` is exactly what the YAML says, after `extends:` merging; nothing is inferred here.
Shapes, dims and params stay as written (expressions are evaluated by the graph step).
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from .diagnostics import Location


def _dim_expr(v: Any) -> Any:
    """One error for a value that is neither an integer nor an expression (not one per union member)."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise PydanticCustomError("dim_type", "a dim must be an integer or an expression string such as "
                                              "`D - ROPE`")
    return v


DimExpr = Annotated[Union[int, str], BeforeValidator(_dim_expr)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"
    int32 = "int32"
    int8 = "int8"


class Layout(str, Enum):
    """How the rotary lanes of a head store their (real, imaginary) pairs."""

    interleave = "interleave"  # lane 2k real, lane 2k+1 imaginary
    split_half = "split_half"  # lanes [0, R/2) real, [R/2, R) imaginary


class Tolerance(Frozen):
    rtol: float = 1e-3
    atol: float = 1e-3
    max_error_ratio: float = Field(0.0, ge=0.0, le=1.0,
                                   description="fraction of points allowed outside atol + rtol*|golden|")


class TensorSpec(Frozen):
    shape: list[DimExpr]
    dtype: DType
    layout: Optional[Layout] = None
    init: dict[str, Any] = Field(description="one init recipe: `{recipe_name: {params}}`")
    doc: str = ""

    @field_validator("init")
    @classmethod
    def _one_recipe(cls, v: dict) -> dict:
        if len(v) != 1:
            raise ValueError("`init` takes exactly one recipe, e.g. `{uniform: {low: -0.5, high: 0.5}}`")
        return v


class StageSpec(Frozen):
    op: str
    inputs: dict[str, str] = Field(alias="in")
    params: dict[str, Any] = Field(default_factory=dict)
    doc: str = ""


class OutputSpec(Frozen):
    from_: str = Field(alias="from")
    doc: str = ""
    tolerance: Optional[Tolerance] = None


class KernelSpec(Frozen):
    name: str
    doc: str
    dims: dict[str, DimExpr] = Field(default_factory=dict, description="derived dims: name -> expression")
    sizes: dict[str, dict[str, int]] = Field(description="size sets: name -> {free dim: value}")
    default_sizes: str = "small"
    inputs: dict[str, TensorSpec]
    stages: dict[str, StageSpec]
    outputs: dict[str, OutputSpec]
    tolerance: Tolerance = Tolerance()
    fuse: list[list[str]] = Field(default_factory=list)
    extends: Optional[str] = None
    loc: Location = Field(exclude=True)

    @field_validator("sizes")
    @classmethod
    def _some_sizes(cls, v: dict) -> dict:
        if not v:
            raise ValueError("give at least one size set")
        return v


class FileSpec(Frozen):
    version: Literal[1]
    kernels: dict[str, dict[str, Any]]
    sizes: dict[str, dict[str, int]] = Field(default_factory=dict,
                                             description="size sets shared by kernels (use YAML anchors)")
