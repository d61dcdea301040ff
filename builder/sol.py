"""Speed of light: the fewest bytes and FLOPs each stage, loop block and kernel needs, from shapes and
dtypes alone, and the time floor they imply on a device profile.

A block's bytes are the traffic of what crosses its boundary (its reads and writes); the kernel's ideal
bytes count only kernel inputs and outputs, as if everything were fused. The floor of a block is
`max(bytes / bandwidth, flops / peak)`; the schedule's floor sums its blocks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .graph import Stage, TypedGraph
from .schedule import Schedule
from .targets import DEVICES as ALL_DEVICES, Device

# the profiles every summary shows floors for (the full table: builder/targets.py)
DEVICES = {key: ALL_DEVICES[key] for key in ("H100", "H200", "Ascend910B")}


@dataclass(frozen=True)
class Cost:
    bytes: int
    flops: dict  # kind -> flops

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    def floor_s(self, dev: Device) -> Optional[float]:
        if dev.bandwidth is None or any(k not in dev.peaks for k in self.flops):
            return None
        return max(self.bytes / dev.bandwidth, sum(f / dev.peaks[k] for k, f in self.flops.items()))


def _traffic(stage: Stage) -> dict[str, int]:
    """Per-tensor traffic of a stage, keyed by tensor reference (or `stage:extra` for op-specific keys)."""
    out = {}
    for key, n in stage.op.min_bytes(stage.in_types, stage.out_types, stage.params).items():
        kind, _, port = key.partition(":")
        if kind == "in" and port in stage.inputs:
            out[stage.inputs[port]] = n
        elif kind == "out" and port in stage.out_types:
            out[stage.ref(port)] = n
        else:
            out[f"{stage.id}:{key}"] = n
    return out


def _flops(stages) -> dict:
    flops: dict = {}
    for st in stages:
        kind = st.op.flops_kind
        flops[kind] = flops.get(kind, 0) + st.op.flops(st.in_types, st.out_types, st.params)
    return {k: v for k, v in flops.items() if v}


def stage_cost(stage: Stage) -> Cost:
    return Cost(sum(_traffic(stage).values()), _flops([stage]))


def block_cost(block) -> Cost:
    """A block's boundary traffic and FLOPs. A stage run as several blocks (phases) counts its input
    traffic where each input is read, its private tensors where they cross, and its FLOPs once, in
    its first phase."""
    boundary = set(block.reads) | set(block.writes)
    traffic: dict = {}
    for st in block.stages:
        for ref, n in _traffic(st).items():
            if ref in boundary or (":" in ref and block.phase_index == 0):
                traffic[ref] = max(traffic.get(ref, 0), n)
        for name, t in st.private.items():
            if st.private_ref(name) in boundary:
                traffic[st.private_ref(name)] = t.nbytes
    return Cost(sum(traffic.values()), _flops(block.stages) if block.phase_index == 0 else {})


def kernel_cost(tg: TypedGraph) -> Cost:
    """Ideal: only kernel inputs (as much of them as the stages must read) and outputs move."""
    edge = set(tg.inputs) | set(tg.outputs.values())
    traffic: dict = {}
    for st in tg.stages.values():
        for ref, n in _traffic(st).items():
            if ref in edge or ":" in ref:
                traffic[ref] = max(traffic.get(ref, 0), n)
    return Cost(sum(traffic.values()), _flops(tg.stages.values()))


def report(tg: TypedGraph, sched: Schedule) -> dict:
    """JSON-ready speed-of-light figures for `build --json` and the summary."""
    blocks = [block_cost(b) for b in sched.blocks]
    ideal = kernel_cost(tg)

    def floors(costs: list[Cost]) -> dict:
        result = {}
        for key, dev in DEVICES.items():
            parts = [c.floor_s(dev) for c in costs]
            known = [p for p in parts if p is not None]
            result[key] = round(sum(known) * 1e6, 3) if len(known) == len(parts) else None
        return result

    return {
        "devices": {k: asdict(d) for k, d in DEVICES.items()},
        "stages": {st.id: {"bytes": c.bytes, "flops": c.total_flops}
                   for st in tg.stages.values() for c in [stage_cost(st)]},
        "blocks": [{"block": b.index, "name": b.name, "bytes": c.bytes, "flops": c.total_flops,
                    "floor_us": floors([c])} for b, c in zip(sched.blocks, blocks)],
        "kernel": {"bytes": ideal.bytes, "flops": ideal.total_flops, "ideal_floor_us": floors([ideal]),
                   "schedule_floor_us": floors(blocks)},
    }


def human(n: float, unit: str) -> str:
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g} {prefix}{unit}"
        n /= 1000
    return f"{n:.3g} P{unit}"


def summary(tg: TypedGraph, sched: Schedule) -> str:
    r = report(tg, sched)["kernel"]
    known = [(dev, us, r["ideal_floor_us"][dev]) for dev, us in r["schedule_floor_us"].items() if us is not None]
    unknown = [dev for dev, us in r["schedule_floor_us"].items() if us is None]
    floors = ", ".join(f"{dev} {us:.2f} us (fused {fused:.2f})" for dev, us, fused in known)
    tail = f"; {', '.join(unknown)} to be measured" if unknown else ""
    return f"  speed of light: {human(r['bytes'], 'B')}, {human(r['flops'], 'FLOP')}; floor {floors}{tail}"
