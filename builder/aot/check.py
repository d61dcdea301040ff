"""Whether each compiled block fits and fills the target, as diagnostics located at its stage.

Errors (`gpu-resources`): the block does not compile, needs more shared memory than one program may
have, or spills registers. Warnings (`gpu-underuse`): a tl.dot that does not use tensor cores, or a
block moving FILL_BYTES or more with fewer programs than the target has SMs. Every hint names the
tile params (`block_*`) of the block's stages, the knobs that change all four.
"""
from __future__ import annotations

from ..diagnostics import Diagnostic
from ..rules import CATALOGUE
from ..schedule import LoopBlock
from ..sol import Cost, human
from ..targets import FILL_BYTES, Target
from .resources import Resources

RULES = tuple(r.id for r in CATALOGUE if r.kind == "target")


def tile_params(block: LoopBlock) -> list[str]:
    """`stage.param (value)` for every tile param of the block's stages, as chosen (`default` marked)."""
    return [f"{st.id}.{t.param} ({t.value}{', default' if t.defaulted else ''})"
            for st in block.stages for t in st.tiles.values()]


def _stage(block: LoopBlock):
    """The stage a block's finding is reported at: the first with tile params, else the first."""
    return next((st for st in block.stages if st.tiles), block.stages[0])


def findings(block: LoopBlock, res: Resources, cost: Cost, target: Target) -> list[Diagnostic]:
    arch, dev = target.arch, target.device
    loc = _stage(block).loc
    params = tile_params(block)
    knobs = (f"change the tile params of this loop block: {', '.join(params)}" if params
             else "this loop block has no tile params; its op's tile body decides its resources")
    what = f"loop block {block.index} `{block.name}` compiled for {target.name}"
    out = []

    def error(message: str, hint: str = "") -> None:
        out.append(Diagnostic("gpu-resources", message, loc, hint or knobs))

    def warn(message: str, hint: str = "") -> None:
        out.append(Diagnostic("gpu-underuse", message, loc, hint or knobs, severity="warning"))

    if res.error is not None:
        error(f"{what} does not compile: {res.error}")
        return out
    if res.shared > arch.smem_per_block:
        error(f"{what} needs {res.shared} B of shared memory per program; {dev.name} ({target.sm}) allows "
              f"{arch.smem_per_block} B")
    if res.spill:
        error(f"{what} spills registers: {res.spill_stores} B stored and {res.spill_loads} B loaded per thread "
              f"(stack frame {res.stack} B, {res.registers} registers)")
    if res.dots > res.tensor_core_dots:
        warn(f"{what}: {res.dots - res.tensor_core_dots} of {res.dots} tl.dot run on CUDA cores, not tensor cores",
             "tensor cores need bf16, fp16, int8 or tf32 operands (an fp32 dot with input_precision=\"ieee\" "
             "never uses them) and at least 16 rows, columns and depth")
    if cost.bytes >= FILL_BYTES and block.programs < target.sms:
        warn(f"{what} moves {human(cost.bytes, 'B')} with {block.programs} programs; {dev.name} has {dev.sms} SMs")
    return out
