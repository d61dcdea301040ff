"""Triton backend: one module per kernel, one `@triton.jit` kernel per loop block, one launcher.

The mechanism (constants, signatures, grids, buffer allocation, launch order) lives here; each stage
op supplies only its tile body through `Op.triton(ctx)`. Arithmetic runs in fp32 (the CPU interpreter
computes bf16 on raw bits); bf16 results are rounded to nearest even explicitly, so the CPU
interpreter and a GPU produce the same bits.
"""
from __future__ import annotations

import textwrap

from ..graph import Stage, TypedGraph
from ..schedule import LoopBlock, Schedule
from ..spec import DType
from . import naming
from .common import (WIDTH, BodyCtx, FileContext, default_var, docstring, header, indent, spec_label,
                     tuple_code, wrap_long_lines)
from .naming import NameTable

NAME = "triton"
TL_DTYPE = {DType.bf16: "tl.bfloat16", DType.fp32: "tl.float32", DType.int32: "tl.int32", DType.int8: "tl.int8"}
TORCH_DTYPE = {DType.bf16: "torch.bfloat16", DType.fp32: "torch.float32", DType.int32: "torch.int32",
               DType.int8: "torch.int8"}

# Helpers a tile body may ask for by name; only requested ones are emitted.
HELPERS = {
    "round_bf16": '''@triton.jit
def round_bf16(x):
    """fp32 -> bf16, rounding to nearest even on the bits so that every target agrees."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)''',
    "round_half_even": '''@triton.jit
def round_half_even(x):
    """Round fp32 to the nearest integer, ties to even (torch.round semantics)."""
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)''',
}
NOTE = ("Backend: Triton. Runs unchanged on a GPU and on the CPU under TRITON_INTERPRET=1.\n"
        "RoPE lanes are addressed by layout-specific offsets: no selector matrices exist or are needed.")


def ptr(names: NameTable, ref: str) -> str:
    """Kernel argument of a tensor: `attn.o` -> `attn_o_ptr`."""
    return names.claim(("ptr", ref), default_var(ref) + "_ptr")


class TritonCtx(BodyCtx):
    """Triton specifics: pointer arguments, helper functions, casts with explicit rounding."""

    def __init__(self, stage: Stage, block: LoopBlock, tg: TypedGraph, file: FileContext, helpers: set[str]):
        super().__init__(stage, block, tg, file)
        self._helpers = helpers

    def src(self, port: str) -> str:
        """Pointer argument of input `port`."""
        return ptr(self.names, self.stage.inputs[port])

    def dst(self, port: str) -> str:
        """Pointer argument of output `port`."""
        return ptr(self.names, self.stage.ref(port))

    def helper(self, name: str) -> str:
        self._helpers.add(name)
        return name

    def cast_for(self, port: str, code: str) -> str:
        """Code converting an fp32 tile to the dtype stored at output `port`."""
        dtype = self.stage.out_types[port].dtype
        if dtype is DType.bf16:
            return f"{self.helper('round_bf16')}({code})"
        return code if dtype is DType.fp32 else f"{code}.to({TL_DTYPE[dtype]})"


def _refs(block: LoopBlock) -> list[str]:
    return list(block.reads + block.writes + block.scratch)


def _kernel_name(block: LoopBlock, file: FileContext) -> str:
    return file.table.claim(("block", block.index), f"block{block.index}_{block.name}")


def _block_kernel(block: LoopBlock, tg: TypedGraph, file: FileContext, helpers: set[str]) -> str:
    ops = ", ".join(f"{s.id} ({s.op.name})" for s in block.stages)
    lines = ["@triton.jit",
             f"def {_kernel_name(block, file)}({', '.join(ptr(file.table, r) for r in _refs(block))}):"]
    lines += [f'    """Loop block {block.index}: {ops}.', ""]
    lines += textwrap.wrap(f"One program per point of: {block.describe_domain()}.", WIDTH,
                           initial_indent="    ", subsequent_indent="    ") + ['    """']
    file.add_tile_constants(block, "program")
    for i, axis in enumerate(block.domain):
        lines.append(f"    {axis.var} = tl.program_id({i})")
    for n, stage in enumerate(block.stages):
        if n:
            lines.append("    tl.debug_barrier()  # the next stage reads this program's stores")
        lines.append(f"    # stage {stage.id} ({stage.op.name}), "
                     f"{naming.comment(spec_label(stage.loc.file))}:{stage.loc.line}")
        lines += indent(stage.op.triton(TritonCtx(stage, block, tg, file, helpers)), 4)
    return "\n".join(lines)


def _grid(block: LoopBlock, file: FileContext) -> str:
    return tuple_code([file.expr(a.extent.text) if a.tile == 1
                       else f"triton.cdiv({file.expr(a.extent.text)}, {file.tile(block, a)})" for a in block.domain])


def _shape(t, file: FileContext) -> str:
    return tuple_code([file.expr(d.text) for d in t.shape])


def _launcher(tg: TypedGraph, sched: Schedule, file: FileContext) -> str:
    var = {ref: file.table.fixed(ref) for ref in tg.inputs}
    for b in sched.blocks:
        for ref in b.writes + b.scratch:
            var[ref] = file.table.claim(("buffer", ref), default_var(ref))
    lines = [f"def run({', '.join(['*'] + [var[n] for n in tg.inputs])}):",
        '    """Launch the loop blocks in schedule order on the inputs\' device.',
        "",
        "    Returns the kernel outputs by name, and every buffer the blocks wrote, keyed `stage.port`.",
        '    """',
        "    check_inputs(locals())",
        f"    device = {var[next(iter(tg.inputs))]}.device"]
    for b in sched.blocks:
        for ref in b.writes + b.scratch:
            t = tg.types[ref]
            lines.append(f"    {var[ref]} = torch.empty({_shape(t, file)}, dtype={TORCH_DTYPE[t.dtype]}, device=device)")
    for b in sched.blocks:
        lines.append(f"    {_kernel_name(b, file)}[{_grid(b, file)}]({', '.join(var[r] for r in _refs(b))})")
    lines.append("    return {")
    lines += [f"        {naming.string(name)}: {var[ref]}," for name, ref in tg.outputs.items()]
    lines += [f"        {naming.string(ref)}: {var[ref]}," for b in sched.blocks for ref in b.writes + b.scratch]
    lines.append("    }")
    return "\n".join(lines)


def _expected_inputs(tg: TypedGraph, file: FileContext) -> str:
    lines = ["EXPECTED_INPUTS = {"]
    for name, t in tg.inputs.items():
        lines.append(f"    {naming.string(name)}: ({_shape(t, file)}, {TORCH_DTYPE[t.dtype]}),")
    return "\n".join(lines + ["}"])


def _input_check() -> str:
    return "\n".join([
        "def check_inputs(tensors):",
        '    """Fail early, naming the parameter, when a caller passes a tensor of another shape or dtype."""',
        "    for name, (shape, dtype) in EXPECTED_INPUTS.items():",
        "        t = tensors[name]",
        "        want = tuple(int(s) for s in shape)",
        "        if tuple(t.shape) != want or t.dtype != dtype:",
        '            raise ValueError(f"{name}: expected {dtype} {want}, got {t.dtype} {tuple(t.shape)}")'])


def emit(tg: TypedGraph, sched: Schedule) -> str:
    file, helpers = FileContext(tg), set()
    chunks = [_block_kernel(b, tg, file, helpers) for b in sched.blocks]
    chunks += [_expected_inputs(tg, file), _input_check(), _launcher(tg, sched, file)]
    helper_code = [HELPERS[h] for h in sorted(helpers)]
    dim_lines, const_lines, shown = file.constant_lines("\n".join(chunks),
                                                        lambda n, v: f"tl.constexpr({naming.literal(v)})")
    head = [header(tg, NAME), docstring(tg, sched, shown, NOTE),
            "import torch\nimport triton\nimport triton.language as tl", "\n".join(dim_lines + const_lines)]
    body = helper_code + [file.table.resolve(c) for c in chunks]
    return wrap_long_lines("\n\n".join(head) + "\n\n\n" + "\n\n\n".join(body) + "\n")
