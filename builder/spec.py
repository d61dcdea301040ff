"""Typed, located spec models (pydantic v2, frozen, unknown keys forbidden).

A `KernelSpec` is exactly what the YAML says, after `extends:` merging; nothing is inferred here.
Shapes, dims and params stay as written (expressions are evaluated by the graph step).
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator
from pydantic_core import PydanticCustomError

from .diagnostics import Location
from .names import name_problem


def _dim_expr(v: Any) -> Any:
    """One error for a value that is neither an integer nor an expression (not one per union member)."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise PydanticCustomError("dim_type", "a dim must be an integer or an expression string such as "
                                              "`D - ROPE`")
    return v


DimExpr = Annotated[Union[int, str], BeforeValidator(_dim_expr)]


def _name(v: Any) -> Any:
    problem = name_problem(v)
    if problem:
        raise PydanticCustomError("bad_name", problem)
    return v


# A user-given name (kernel, size set, dim, input, stage, output): it becomes an identifier in
# generated code and part of an output path (builder/names.py says which names are allowed).
Name = Annotated[str, BeforeValidator(_name)]
# Numbers are numbers: YAML's `true` or `"2"` is not silently read as one.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
MAX_EXTENT = 2**31 - 1  # extents index int32 offsets in every backend
SizeSet = dict[Name, Annotated[int, Strict(), Field(ge=0, le=MAX_EXTENT)]]


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
    rtol: Float = Field(1e-3, ge=0.0)
    atol: Float = Field(1e-3, ge=0.0)
    max_error_ratio: Float = Field(0.0, ge=0.0, le=1.0,
                                   description="fraction of points allowed outside atol + rtol*|golden|")
    allowed_bad: Literal["floor", "round_half_even"] = Field(
        "floor", description="how max_error_ratio x points becomes the count of bad points allowed: rounded "
                             "down, or to nearest with ties to even (pypto-lib's ratio_allclose)")


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
    name: str  # checked as a `Name` where the file's kernels are read (builder/specload.py)
    doc: str
    dims: dict[Name, DimExpr] = Field(default_factory=dict, description="derived dims: name -> expression")
    sizes: dict[Name, SizeSet] = Field(description="size sets: name -> {free dim: value}")
    default_sizes: str = "small"
    inputs: dict[Name, TensorSpec]
    stages: dict[Name, StageSpec]
    outputs: dict[Name, OutputSpec]
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
    kernels: dict[str, Any]
    sizes: dict[Name, SizeSet] = Field(default_factory=dict,
                                             description="size sets shared by kernels (use YAML anchors)")
