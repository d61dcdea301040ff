"""Typed, located spec models (pydantic v2, frozen, unknown keys forbidden).

A `KernelSpec` is exactly what the YAML says, after `extends:` merging; nothing is inferred here.
Shapes, dims and params stay as written (expressions are evaluated by the graph step).
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator, model_validator
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


POLICY_FIELDS = {"allclose": {"rtol", "atol"}, "reldiff": {"diff"}, "codes": {"max_step", "max_row_ratio"}}


class Tolerance(Frozen):
    """How an output is compared with its reference: one of pypto-lib's comparators, by `compare`.

    `allclose`: a point is bad when `|a - e| > atol + rtol * |e|` (ratio_allclose). `reldiff`: with
    `d = |a - e|`, a point is bad when `d >= diff` and `d / max(|a|, |e|, 2^-14 / diff) > diff`
    (ratio_reldiff). `codes`: integer codes; a point is bad when it differs at all, none may differ
    by more than `max_step`, and no row (last axis) may have more than `int(max_row_ratio * width)`
    bad points (pypto-lib's quantized-code comparator). In every policy at most
    `max_error_ratio * numel` points may be bad, rounded down (`allowed_bad: floor`) or half to even
    (`round_half_even`, as pypto-lib's comparators round), and NaN/Inf fail. `positive` also fails any
    value <= 0; `given` compares with the reference recomputed from the kernel's own values of those
    outputs instead of the golden's (pypto-lib's q against the kernel's own qr)."""

    compare: Literal["allclose", "reldiff", "codes"] = Field("allclose", description="the comparator")
    rtol: Float = Field(1e-3, ge=0.0, description="allclose: relative tolerance")
    atol: Float = Field(1e-3, ge=0.0, description="allclose: absolute tolerance")
    max_error_ratio: Float = Field(0.0, ge=0.0, le=1.0,
                                   description="fraction of points allowed to be bad (rounded to a count as "
                                               "`allowed_bad` says)")
    allowed_bad: Literal["floor", "round_half_even"] = Field(
        "floor", description="how max_error_ratio x points becomes the count of bad points allowed: rounded "
                             "down, or to nearest with ties to even (pypto-lib's comparators)")
    diff: Optional[Float] = Field(None, gt=0.0, description="reldiff: the per-point relative threshold")
    max_step: Optional[Annotated[int, Strict(), Field(ge=0)]] = Field(
        None, description="codes: the largest difference of any one code")
    max_row_ratio: Optional[Float] = Field(None, ge=0.0, le=1.0,
                                           description="codes: fraction of a row's codes allowed to differ")
    positive: bool = Field(False, description="every value must be > 0 on both sides")
    given: list[Name] = Field(default_factory=list, description="outputs of this kernel whose produced values "
                                                                "the reference is recomputed from")

    def fields_read(self) -> set[str]:
        """The fields its comparator reads (besides `given`)."""
        return {"compare", "max_error_ratio", "allowed_bad", "positive"} | POLICY_FIELDS[self.compare]

    @model_validator(mode="after")
    def _policy_fields(self) -> "Tolerance":
        foreign = sorted(f for kind, fields in POLICY_FIELDS.items() if kind != self.compare for f in fields
                         if f in self.model_fields_set)
        if foreign:
            raise ValueError(f"`{', '.join(foreign)}` belong to another `compare:` than `{self.compare}`")
        if self.compare == "reldiff" and self.diff is None:
            raise ValueError("`compare: reldiff` needs `diff:` (the per-point relative threshold)")
        if self.compare == "codes" and self.max_step is None:
            raise ValueError("`compare: codes` needs `max_step:` (the largest difference of one code)")
        return self


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
    reshape: dict[str, list[DimExpr]] = Field(
        default_factory=dict, description="input port -> the shape it is read as: the same elements in the "
                                          "same order (row-major), such as [T, H, HD] for a [T, H * HD] tensor")
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
    tolerance: Tolerance = Field(Tolerance(), description="default for outputs, and for every stage's own check")
    fuse: list[list[str]] = Field(default_factory=list)
    extends: Optional[str] = None
    loc: Location = Field(exclude=True)

    @field_validator("sizes")
    @classmethod
    def _some_sizes(cls, v: dict) -> dict:
        if not v:
            raise ValueError("give at least one size set")
        return v

    @field_validator("tolerance")
    @classmethod
    def _plain_default(cls, v: Tolerance) -> Tolerance:
        if v.compare != "allclose" or v.given:
            raise ValueError("the kernel's `tolerance:` also checks every stage's own buffers: it takes "
                             "`compare: allclose` and no `given:` (set those on an output)")
        return v


class FileSpec(Frozen):
    version: Literal[1]
    kernels: dict[str, Any]
    sizes: dict[Name, SizeSet] = Field(default_factory=dict,
                                             description="size sets shared by kernels (use YAML anchors)")
