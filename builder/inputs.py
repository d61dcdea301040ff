"""Caller-supplied tensors, checked before they reach a kernel: every problem names the input and the
YAML line that declares it.

Shape, dtype, contiguity (strides are not supported: the generated code addresses tensors densely)
and device are checked always; index values (page ids inside their pool, key counts inside their page
table) by each op's `check_values`, a cheap vectorised pass that `check_values=False` skips.
"""
from __future__ import annotations

from typing import Mapping

from .dtypes import torch_dtype
from .graph import TypedGraph
from .spec import DType


class InputError(ValueError):
    """One or more inputs cannot be given to the kernel; the message has one line per problem."""


def expected_device(backend: str):
    import torch

    return torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")


def check(tg: TypedGraph, inputs: Mapping, backend: str, values: bool = True) -> None:
    """Raise InputError listing every input that the kernel could not run on correctly."""
    import torch

    problems = []
    where = {name: f"`{name}` ({tg.input_locs[name]})" if name in tg.input_locs else f"`{name}`"
             for name in tg.inputs}
    missing = [n for n in tg.inputs if n not in inputs]
    unexpected = [n for n in inputs if n not in tg.inputs]
    problems += [f"{where[n]}: missing" for n in missing]
    problems += [f"`{n}`: not an input of kernel {tg.spec.name}" for n in unexpected]
    device = expected_device(backend)
    for name, t in tg.inputs.items():
        x = inputs.get(name)
        if x is None:
            continue
        want = f"{t.dtype.value} {list(t.numel_shape)}"
        if not isinstance(x, torch.Tensor):
            problems.append(f"{where[name]}: expected a tensor ({want}), got {type(x).__name__}")
            continue
        if x.dtype != torch_dtype(t.dtype) or tuple(x.shape) != t.numel_shape:
            problems.append(f"{where[name]}: expected {want}, got {_dtype_name(x.dtype)} {list(x.shape)}")
            continue
        if not x.is_contiguous():
            problems.append(f"{where[name]}: not contiguous (strides {tuple(x.stride())}); pass x.contiguous()")
        if x.device != device and not (x.device.type == device.type == "cuda"):
            problems.append(f"{where[name]}: on {x.device}, the {backend} backend runs on {device}")
    if not problems and values:
        for st in tg.stages.values():
            given = {port: inputs[ref] for port, ref in st.inputs.items() if ref in tg.inputs}
            for port, message in st.op.check_values(given, st.in_types, st.params, tg.dims):
                problems.append(f"{where[st.inputs[port]]}: {message} (stage `{st.id}`, {st.loc})")
    if problems:
        raise InputError(f"kernel {tg.spec.name} cannot run on these inputs:\n  " + "\n  ".join(problems))


def _dtype_name(dtype) -> str:
    """The spec's name of a torch dtype (`bf16`), else torch's own."""
    return next((d.value for d in DType if torch_dtype(d) == dtype), str(dtype).replace("torch.", ""))
