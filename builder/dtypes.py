"""Every fact about a spec dtype, in one table: its size and its name in torch, Triton and `pl`.

Adding a dtype is adding a row here (and its member to `builder.spec.DType`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import DType


@dataclass(frozen=True)
class DTypeInfo:
    bytes: int
    torch: str          # attribute of the torch module
    triton: str         # attribute of triton.language
    triton_pointee: str  # a pointer's element type in Triton's compile signatures (`*bf16`)
    pl: str             # constant of pypto.language
    floating: bool
    pl_gather: bool     # `pl.gather` reads it as a source (FP16, FP32, INT16, INT32)


TABLE: dict[DType, DTypeInfo] = {
    DType.bf16: DTypeInfo(2, "bfloat16", "bfloat16", "bf16", "BF16", floating=True, pl_gather=False),
    DType.fp32: DTypeInfo(4, "float32", "float32", "fp32", "FP32", floating=True, pl_gather=True),
    DType.int32: DTypeInfo(4, "int32", "int32", "i32", "INT32", floating=False, pl_gather=True),
    DType.int8: DTypeInfo(1, "int8", "int8", "i8", "INT8", floating=False, pl_gather=False),
}
assert set(TABLE) == set(DType)


def info(dtype: DType) -> DTypeInfo:
    return TABLE[dtype]


def torch_code(dtype: DType) -> str:
    return f"torch.{TABLE[dtype].torch}"


def triton_code(dtype: DType) -> str:
    return f"tl.{TABLE[dtype].triton}"


def pl_code(dtype: DType) -> str:
    return f"pl.{TABLE[dtype].pl}"


def torch_dtype(dtype: DType):
    """The torch dtype object (imports torch: only for running and verifying)."""
    import torch

    return getattr(torch, TABLE[dtype].torch)
