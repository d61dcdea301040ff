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
from .common import (WIDTH, BodyCtx, Constants, add_tile_constants, call, dim_code, dim_constants, docstring, header, indent, tile_name,
                     tuple_code, var, wrap_long_lines)

NAME = "triton"
TL_DTYPE = {DType.bf16: "tl.bfloat16", DType.fp32: "tl.float32", DType.int32: "tl.int32", DType.int8: "tl.int8"}
SIGNATURE_DTYPE = {DType.bf16: "bf16", DType.fp32: "fp32", DType.int32: "i32", DType.int8: "i8"}
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
NOTE = ("Backend: Triton. Verified on the CPU under TRITON_INTERPRET=1; `build --target cuda:sm_90`\n"
        "compiles it for a GPU ahead of time and reports what each block needs there.\n"
        "RoPE lanes are addressed by layout-specific offsets: no selector matrices exist or are needed.")


def ptr(ref: str) -> str:
    """Kernel argument of a tensor: `attn.o` -> `attn_o_ptr` (never clashes with a tile body's locals)."""
    return var(ref) + "_ptr"


class TritonCtx(BodyCtx):
    """Triton specifics: pointer arguments, helper functions, casts with explicit rounding."""

    def __init__(self, stage: Stage, block: LoopBlock, tg: TypedGraph, consts: Constants, helpers: set[str]):
        super().__init__(stage, block, tg, consts)
        self._helpers = helpers

    def src(self, port: str) -> str:
        """Pointer argument of input `port`."""
        return ptr(self.stage.inputs[port])

    def dst(self, port: str) -> str:
        """Pointer argument of output `port`."""
        return ptr(self.stage.ref(port))

    def helper(self, name: str) -> str:
        self._helpers.add(name)
        return name

    def cast_for(self, port: str, code: str) -> str:
        """Code converting an fp32 tile to the dtype stored at output `port`."""
        dtype = self.stage.out_types[port].dtype
        if dtype is DType.bf16:
            return f"{self.helper('round_bf16')}({code})"
        return code if dtype is DType.fp32 else f"{code}.to({TL_DTYPE[dtype]})"


def block_refs(block: LoopBlock) -> list[str]:
    """Tensors a block kernel takes, in argument order (one pointer each)."""
    return list(block.reads + block.writes + block.scratch)


def kernel_name(block: LoopBlock) -> str:
    return f"block{block.index}_{block.name}"


def signature(block: LoopBlock, tg: TypedGraph) -> dict[str, str]:
    """Triton's compile signature of a block kernel: pointer argument -> `*bf16`, `*fp32`, ..."""
    return {ptr(ref): "*" + SIGNATURE_DTYPE[tg.types[ref].dtype] for ref in block_refs(block)}


def _block_kernel(block: LoopBlock, tg: TypedGraph, consts: Constants, helpers: set[str]) -> list[str]:
    ops = ", ".join(f"{s.id} ({s.op.name})" for s in block.stages)
    lines = ["@triton.jit"] + call(f"def {kernel_name(block)}", [ptr(r) for r in block_refs(block)], tail=":")
    lines += [f'    """Loop block {block.index}: {ops}.', ""]
    lines += textwrap.wrap(f"One program per point of: {block.describe_domain()}.", WIDTH,
                           initial_indent="    ", subsequent_indent="    ") + ['    """']
    add_tile_constants(block, consts, "program")
    for i, axis in enumerate(block.domain):
        lines.append(f"    {axis.var} = tl.program_id({i})")
    for n, stage in enumerate(block.stages):
        if n:
            lines.append("    tl.debug_barrier()  # the next stage reads this program's stores")
        lines.append(f"    # stage {stage.id} ({stage.op.name}), {stage.loc.file}:{stage.loc.line}")
        lines += indent(stage.op.triton(TritonCtx(stage, block, tg, consts, helpers)), 4)
    return lines


def _grid(block: LoopBlock) -> str:
    return tuple_code([dim_code(a.extent.text) if a.tile == 1
                       else f"triton.cdiv({dim_code(a.extent.text)}, {tile_name(block, a)})" for a in block.domain])


def _launcher(tg: TypedGraph, sched: Schedule) -> list[str]:
    lines = call("def run", ["*"] + list(tg.inputs), tail=":") + [
        '    """Launch the loop blocks in schedule order on the inputs\' device.',
        "",
        "    Returns the kernel outputs by name, and every buffer the blocks wrote, keyed `stage.port`.",
        '    """',
        "    check_inputs(locals())",
        f"    device = {next(iter(tg.inputs))}.device"]
    for b in sched.blocks:
        for ref in b.writes + b.scratch:
            t = tg.types[ref]
            shape = tuple_code([dim_code(d.text) for d in t.shape])
            lines.append(f"    {var(ref)} = torch.empty({shape}, dtype={TORCH_DTYPE[t.dtype]}, device=device)")
    for b in sched.blocks:
        lines += call(f"{kernel_name(b)}[{_grid(b)}]", [var(r) for r in block_refs(b)], indent=4)
    lines.append("    return {")
    lines += [f'        "{name}": {var(ref)},' for name, ref in tg.outputs.items()]
    lines += [f'        "{ref}": {var(ref)},' for b in sched.blocks for ref in b.writes + b.scratch]
    lines.append("    }")
    return lines


def _input_check(tg: TypedGraph) -> list[str]:
    lines = ["EXPECTED_INPUTS = {"]
    for name, t in tg.inputs.items():
        shape = tuple_code([dim_code(d.text) for d in t.shape])
        lines.append(f'    "{name}": ({shape}, {TORCH_DTYPE[t.dtype]}),')
    return lines + [
        "}", "", "",
        "def check_inputs(tensors):",
        '    """Fail early, naming the parameter, when a caller passes a tensor of another shape or dtype."""',
        "    for name, (shape, dtype) in EXPECTED_INPUTS.items():",
        "        t = tensors[name]",
        "        want = tuple(int(s) for s in shape)",
        "        if tuple(t.shape) != want or t.dtype != dtype:",
        '            raise ValueError(f"{name}: expected {dtype} {want}, got {t.dtype} {tuple(t.shape)}")']


def emit(tg: TypedGraph, sched: Schedule) -> str:
    consts, helpers = Constants(), set()
    sections = ["\n".join(_block_kernel(b, tg, consts, helpers)) for b in sched.blocks]
    sections += ["\n".join(_input_check(tg)), "\n".join(_launcher(tg, sched))]
    helper_code = [HELPERS[h] for h in sorted(helpers)]
    body = "\n".join(helper_code + sections)
    dims = dim_constants(tg, body)
    const_lines = [f"{n} = tl.constexpr({v})" + (f"  # {c}" if c else "") for n, v, c in dims]
    const_lines += [f"{n} = tl.constexpr({v!r})  # {c}" for n, (v, c) in consts.items.items()]
    derived = [(n, c, v) for n, v, c in dims if c] + [(n, c, v) for n, (v, c) in consts.items.items()]
    head = [header(tg, NAME), docstring(tg, sched, derived, NOTE),
            "import torch\nimport triton\nimport triton.language as tl", "\n".join(const_lines)]
    return wrap_long_lines("\n\n".join(head) + "\n\n\n" + "\n\n\n".join(helper_code + sections) + "\n")
