"""Run emitted code on deterministic inputs and compare it with the golden of the same graph.

Every output is checked under its tolerance policy. Every loop block is also checked locally: its
stage goldens are run on the very buffers the emitted code gave it, so the first block whose own
work is wrong is named (with its YAML line) even when earlier blocks differ within tolerance.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from .comparators import judge
from .golden import run_given, run_stages
from .spec import Tolerance


@dataclass(frozen=True)
class Stats:
    max_abs_err: float
    max_rel_err: float
    mismatch_ratio: float
    nonfinite: int
    ok: bool
    bad: int = 0          # points outside the tolerance (codes: that differ)
    allowed: int = 0      # bad points the tolerance allows: round(max_error_ratio * numel)
    problem: str = ""     # what fails the output whatever the count (a code step, a full row, a value <= 0)


def compare(actual, expected, tol: Tolerance) -> Stats:
    """`actual` against `expected` under the policy of `tol` (builder/comparators.py): NaN/Inf on either
    side always fail; at most `max_error_ratio * numel` points may be bad,
    rounded down or half to even as `allowed_bad` says."""
    if tuple(actual.shape) != tuple(expected.shape):
        return Stats(float("inf"), float("inf"), 1.0, 0, False, problem=f"shape {list(actual.shape)} is not "
                                                                          f"{list(expected.shape)}")
    ok, f = judge(actual, expected, **policy(tol))
    return Stats(f["max_abs_err"], f["max_rel_err"], f["bad"] / max(actual.numel(), 1), f["nonfinite"], ok,
                 f["bad"], f["allowed"], f["problem"])


def policy(tol: Tolerance) -> dict:
    """`judge`'s keyword arguments for a tolerance (its `given` is the caller's business)."""
    return tol.model_dump(exclude={"given"}, exclude_defaults=False)


@dataclass
class StageCheck:
    stage: str
    op: str
    line: int
    block: int
    buffers: dict[str, Stats]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.buffers.values())


@dataclass
class Report:
    kernel: str
    backend: str
    sizes: str
    outputs: dict[str, Stats] = field(default_factory=dict)
    stages: list[StageCheck] = field(default_factory=list)
    loop_block_count: int = 0
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.ok for s in self.outputs.values()) and all(c.ok for c in self.stages)

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("error" if self.error else "mismatch")

    @property
    def first_bad_stage(self) -> Optional[StageCheck]:
        return next((c for c in self.stages if not c.ok), None)

    def as_json(self) -> dict:
        bad = self.first_bad_stage
        return {
            "kernel": self.kernel, "backend": self.backend, "sizes": self.sizes, "status": self.status,
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "loop_block_count": self.loop_block_count,
            "first_bad_stage": None if bad is None else {
                "stage": bad.stage, "op": bad.op, "line": bad.line, "block": bad.block,
                "buffers": {k: asdict(v) for k, v in bad.buffers.items()}},
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def _fmt(s: Stats) -> str:
    return (f"max_abs_err {s.max_abs_err:.3g}, max_rel_err {s.max_rel_err:.3g}, "
            f"{s.bad} bad of {s.allowed} allowed ({s.mismatch_ratio:.2%})"
            + (f", {s.nonfinite} NaN/Inf" if s.nonfinite else "") + (f", {s.problem}" if s.problem else ""))


def describe(report: Report, file: str) -> list[str]:
    """Human-readable lines for a report."""
    lines = [f"  {report.backend}: {report.status} ({report.seconds:.1f} s)"]
    if report.error:
        lines.append(f"    error: {report.error}")
    for name, s in report.outputs.items():
        lines.append(f"    {name}: {'ok' if s.ok else 'FAILED'}: {_fmt(s)}")
    bad = report.first_bad_stage
    if bad:
        lines.append(f"    first bad stage: {bad.stage} ({bad.op}) in loop block {bad.block}, {file}:{bad.line}")
        for ref, s in bad.buffers.items():
            lines.append(f"      {ref}: {'ok' if s.ok else 'FAILED'}: {_fmt(s)}")
    return lines


def check_blocks(tg, sched, buffers: dict, inputs: dict) -> list[StageCheck]:
    """Each stage's golden on the very tensors the emitted code handed it, against what it wrote (a
    stage fused with others, or run as several blocks, is checked on its own all the same)."""
    tol = tg.spec.tolerance
    checks = []
    for stage in tg.stages.values():
        values = {ref: buffers[ref] if ref in buffers else inputs[ref] for ref in stage.inputs.values()}
        expected = run_stages(tg, (stage,), values)
        stats = {stage.ref(p): compare(buffers[stage.ref(p)], expected[stage.ref(p)], tol) for p in stage.out_types}
        checks.append(StageCheck(stage.id, stage.op.name, stage.loc.line, sched.block_of(stage.id).index, stats))
    return sorted(checks, key=lambda c: c.block)


def _block_tracker(sched, backend: str, on_block: Callable[[int, str], None]) -> Callable[[str], None]:
    """Runtime announcements -> (block index, block name). Triton launches its block kernels in
    schedule order; PyPTO scopes carry the block's name (set-up scopes of constants are no block)."""
    index = {b.name: b.index for b in sched.blocks}
    launched = [0]

    def started(name: str) -> None:
        if backend == "triton":
            i: Optional[int] = min(launched[0], len(sched.blocks) - 1)
            launched[0] += 1
        else:
            i = index.get(name)
        if i is not None:
            on_block(i, sched.blocks[i].name)

    return started


def verify(kernel, backend: str, sizes: str, seed: int = 0,
           progress: Optional[Callable[[str], None]] = None, check_values: bool = True,
           on_block: Optional[Callable[[int, str], None]] = None, fixtures: Optional[dict] = None) -> Report:
    """`progress(message)` is told each step, `on_block(index, name)` each loop block as it starts.
    `fixtures` is a dict the caller keeps from one backend to the next: the inputs and golden of the
    last (kernel, sizes, seed) stay there, and each run gets copies of the inputs, so that no backend
    sees what another one's code did to them."""
    from .inputs import check
    from .runtime import run_emitted

    say = progress or (lambda msg: None)
    tg, sched = kernel.typed(sizes)
    report = Report(kernel.name, backend, sizes, loop_block_count=len(sched.blocks))
    start = time.perf_counter()
    key = (kernel.name, sizes, seed)
    if fixtures is not None and key in fixtures:
        say("inputs and golden as made for the previous backend")
        inputs, golden = fixtures[key]
    else:
        say("making inputs")
        inputs = kernel.make_inputs(seed, sizes)
        say("running the golden")
        golden = kernel.golden(inputs, sizes=sizes)
        if fixtures is not None:  # one kernel's at a time: full-size fixtures are large
            fixtures.clear()
            fixtures[key] = inputs, golden
    say(f"emitting and running {backend} code ({len(sched.blocks)} loop blocks)")
    if fixtures is not None:
        inputs = {name: t.clone() for name, t in inputs.items()}
    try:
        check(tg, inputs, backend, check_values)
        result = run_emitted(kernel.emit(backend, sizes), backend, tg, inputs,
                             _block_tracker(sched, backend, on_block) if on_block else None)
    except Exception as exc:  # the emitted code itself failed: report it, do not crash the build
        report.error = f"{type(exc).__name__}: {exc}"
        report.seconds = time.perf_counter() - start
        return report
    say("comparing")
    for name, ref in tg.outputs.items():
        tol = tg.spec.outputs[name].tolerance or tg.spec.tolerance
        expected = golden[name]
        if tol.given:  # the reference recomputed from the kernel's own values of those outputs
            expected = run_given(tg, inputs, {tg.outputs[g]: result[g] for g in tol.given}, ref)
        report.outputs[name] = compare(result[name], expected, tol)
    report.stages = check_blocks(tg, sched, result, inputs)
    report.seconds = time.perf_counter() - start
    return report
