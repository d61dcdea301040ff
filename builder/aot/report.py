"""One kernel on one target: per-block resources, grid, floor and modelled time, as text, JSON and
the one-line summaries `build --graph --target` puts on loop-block clusters."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from importlib.metadata import version
from typing import Optional

from ..diagnostics import Diagnostic
from ..graph import TypedGraph
from ..render.model import Fit
from ..schedule import LoopBlock, Schedule
from ..sol import Cost, block_cost, human
from ..targets import Target
from .check import findings
from .model import ASSUMPTIONS, Prediction, predict
from .resources import Resources


@dataclass(frozen=True)
class BlockReport:
    block: LoopBlock
    resources: Resources
    cost: Cost
    floor_s: Optional[float]
    prediction: Prediction

    @property
    def tensor_cores(self) -> str:
        """`2/2` tensor-core dots of all dots, or `no dot`."""
        r = self.resources
        return f"{r.tensor_core_dots}/{r.dots}" if r.dots else "no dot"


@dataclass(frozen=True)
class TargetReport:
    kernel: str
    target: Target
    blocks: tuple[BlockReport, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    @property
    def floor_s(self) -> Optional[float]:
        return _total([b.floor_s for b in self.blocks])

    @property
    def predicted_s(self) -> Optional[float]:
        return _total([b.prediction.time_s for b in self.blocks])

    @property
    def compile_s(self) -> float:
        return sum(b.resources.compile_s for b in self.blocks)


def _total(parts: list[Optional[float]]) -> Optional[float]:
    """The sum, or None when any part is unknown."""
    known = [p for p in parts if p is not None]
    return sum(known) if len(known) == len(parts) else None


def build(tg: TypedGraph, sched: Schedule, target: Target, resources: list[Resources]) -> TargetReport:
    blocks, diags = [], []
    for b, res in zip(sched.blocks, resources):
        cost = block_cost(b)
        blocks.append(BlockReport(b, res, cost, cost.floor_s(target.device), predict(cost, b.programs, res, target)))
        diags += findings(b, res, cost, target)
    return TargetReport(tg.spec.name, target, tuple(blocks), tuple(diags))


def _us(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.2f}"


def _model(p: Prediction) -> str:
    return _us(p.time_s) + ("" if p.fits else "*")


def heading(target: Target) -> str:
    dev, arch = target.device, target.arch
    return (f"target {target.name}: {dev.name}, {target.sms} SMs, {human(target.bandwidth, 'B/s')}, "
            f"{arch.smem_per_block} B shared memory per program; Triton {version('triton')} ahead of time")


def text(r: TargetReport) -> list[str]:
    """The report as lines for the terminal; compile times vary from run to run, nothing else does."""
    width = max(len(f"{b.block.index} {b.block.name}") for b in r.blocks)
    head = (f"    {'block':<{width}}  regs  spill B   smem B  warps  programs  per SM  tensor cores"
            f"  compile s  floor us  model us")
    lines = [f"  {heading(r.target)}", head]
    for b in r.blocks:
        res, p = b.resources, b.prediction
        name = f"{b.block.index} {b.block.name}"
        if res.error is not None:
            lines.append(f"    {name:<{width}}  does not compile ({res.compile_s:.2f} s)")
            continue
        lines.append(f"    {name:<{width}}  {res.registers:>4}  {res.spill_stores:>7}  {res.shared:>7}  "
                     f"{res.warps:>5}  {b.block.programs:>8}  {p.occupancy.programs_per_sm:>6}  {b.tensor_cores:<12}  "
                     f"{res.compile_s:>9.2f}  {_us(b.floor_s):>8}  {_model(p):>8}")
    errors = sum(d.severity == "error" for d in r.diagnostics)
    warnings = len(r.diagnostics) - errors
    lines.append(f"    predicted {_us(r.predicted_s)} us beside the floor of {_us(r.floor_s)} us on "
                 f"{r.target.device.name} ({errors} error{'s' * (errors != 1)}, "
                 f"{warnings} warning{'s' * (warnings != 1)}; compile {r.compile_s:.1f} s)")
    if not all(b.prediction.fits for b in r.blocks):
        lines.append("    * cannot launch as compiled (see the errors); modelled as if one program per SM fit")
    lines += textwrap.wrap(f"predicted = {ASSUMPTIONS}", 100, initial_indent="    ", subsequent_indent="      ")
    return lines


def as_json(r: TargetReport) -> dict:
    t = r.target
    return {
        "target": t.name, "device": t.device.name, "sms": t.device.sms, "bandwidth": t.device.bandwidth,
        "smem_per_block": t.arch.smem_per_block, "triton": version("triton"),
        "blocks": [_block_json(b) for b in r.blocks],
        "floor_us": _round_us(r.floor_s), "predicted_us": _round_us(r.predicted_s), "compile_s": round(r.compile_s, 3),
        "model": ASSUMPTIONS, "ok": r.ok, "diagnostics": [d.as_json() for d in r.diagnostics],
    }


def _round_us(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1e6, 3)


def _block_json(b: BlockReport) -> dict:
    res, p, st = b.resources, b.prediction, b.block.stages[0]
    return {"block": b.block.index, "name": b.block.name, "file": st.loc.file, "line": st.loc.line,
            "registers": res.registers, "spill_stores": res.spill_stores, "spill_loads": res.spill_loads,
            "stack": res.stack, "shared": res.shared, "warps": res.warps, "programs": b.block.programs,
            "programs_per_sm": p.occupancy.programs_per_sm, "occupancy_limit": p.occupancy.limit,
            "dots": res.dots, "tensor_core_dots": res.tensor_core_dots, "mma": list(res.mma),
            "compile_s": res.compile_s, "error": res.error, "bytes": b.cost.bytes, "flops": b.cost.total_flops,
            "floor_us": _round_us(b.floor_s), "predicted_us": _round_us(p.time_s), "bound": p.bound,
            "fits": p.fits}


def cluster_fit(b: BlockReport, target: Target) -> Fit:
    """What `build --graph --target` shows on a loop block: deterministic, so no compile time."""
    res, p = b.resources, b.prediction
    data = {k: v for k, v in _block_json(b).items() if k not in ("block", "name", "file", "line", "compile_s")}
    if res.error is not None:
        return Fit(target.name, (f"{target.sm}: does not compile",), data)
    spill = f"spill {human(res.spill_stores, 'B')}" if res.spill else "no spill"
    dots = f"tensor cores {b.tensor_cores}" if res.dots else "no dot"
    return Fit(target.name, (f"{target.sm}: {res.registers} regs, {spill}, smem {human(res.shared, 'B')}, "
                             f"{res.warps} warps x {b.block.programs} programs, {dots}",
                             f"{target.sm}: model {_model(p)} us beside the floor {_us(b.floor_s)} us "
                             "(not measured)"), data)
