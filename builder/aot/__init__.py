"""`build --target`: compile the Triton backend ahead of time for a CUDA GPU, on any machine.

    jobs.py       what to compile: one self-contained source per loop block, deduplicated, in processes
    worker.py     such a process (`python -m builder.aot.worker`): Triton's compiler, ptxas's log
    resources.py  what a compiled block needs: registers, spills, shared memory, warps, tensor cores
    model.py      occupancy and a modelled time from those resources, the grid and the block's bytes/FLOPs
    check.py      diagnostics for blocks that do not fit (errors) or do not fill (warnings) the target
    report.py     text, JSON and graph-cluster summaries

Nothing here imports torch or triton in the calling process; the workers import triton.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

from ..emit.triton import emit_with_interfaces
from ..sol import block_cost
from ..targets import Target
from . import report
from .jobs import Job, block_source, run_jobs

__all__ = ["analyze", "compile_kernels", "default_workers", "report"]


def default_workers() -> int:
    return os.cpu_count() or 1


def analyze(views: Sequence[tuple], targets: Sequence[Target], workers: int = 0,
            progress: Optional[Callable[[str], None]] = None) -> dict[tuple[str, str], report.TargetReport]:
    """`views`: (TypedGraph, Schedule) per kernel. Returns a report per (kernel name, target name);
    each block is compiled once however many kernels share its code."""
    planned = {}
    for tg, sched in views:
        source, interfaces = emit_with_interfaces(tg, sched)
        for t in targets:
            for b, face in zip(sched.blocks, interfaces):
                cost = block_cost(b)
                planned[(tg.spec.name, t.name, b.index)] = Job(
                    face.name, block_source(source, face.name), tuple(face.signature(tg).items()), t.arch.cc,
                    weight=cost.bytes + cost.total_flops)
    results = run_jobs(planned.values(), workers or default_workers(), progress)
    return {(tg.spec.name, t.name): report.build(tg, sched, t, [results[planned[(tg.spec.name, t.name, b.index)].key]
                                                                for b in sched.blocks])
            for tg, sched in views for t in targets}


def compile_kernels(kernels: Sequence, sizes: Optional[str], targets: Sequence[Target], workers: Optional[int] = None,
                    progress: Optional[Callable[[str], None]] = None) -> tuple[dict, float]:
    """`analyze` for `builder.Kernel`s at a size set; also returns the wall time it took."""
    start = time.perf_counter()
    views = [k.typed(sizes) for k in kernels]
    return analyze(views, targets, workers or default_workers(), progress), time.perf_counter() - start
