"""Typed graph -> schedule: stages in topological order, grouped into separate loop blocks.

Default: one stage per block (the seed PR's "distinct loop blocks"). `fuse:` groups adjacent stages
with the same iteration domain whose in-group edges are pointwise in that domain.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

from .diagnostics import DiagnosticSink, Location
from .graph import Stage, TypedGraph
from .stage_api import Axis, Phase
from .stagefault import in_stage


@dataclass(frozen=True)
class LoopBlock:
    index: int
    stages: tuple[Stage, ...]
    domain: tuple[Axis, ...]
    reads: tuple[str, ...]     # tensors read from outside the block (kernel inputs or earlier blocks)
    writes: tuple[str, ...]    # tensors the block leaves for later blocks or kernel outputs
    scratch: tuple[str, ...]   # tensors produced and consumed inside the block only
    phase: Optional[Phase] = None  # which of its stage's phases, for a stage that runs as several blocks
    phase_index: int = 0

    @property
    def name(self) -> str:
        return "_".join(s.id for s in self.stages) + (f"_{self.phase.name}" if self.phase else "")

    @functools.cached_property  # asked for each name a block's code requests
    def tensors(self) -> tuple[str, ...]:
        """Every tensor the block touches, in a fixed order: what it reads, writes, and keeps to itself."""
        return self.reads + self.writes + self.scratch

    def describe_domain(self) -> str:
        return " x ".join(a.describe() for a in self.domain)

    @property
    def programs(self) -> int:
        """Programs one launch runs: the product of the domain's trip counts (the launcher's grid)."""
        n = 1
        for axis in self.domain:
            n *= axis.trips
        return n


@dataclass(frozen=True)
class Schedule:
    blocks: tuple[LoopBlock, ...]

    def block_of(self, stage_id: str) -> LoopBlock:
        """The (last) block that runs the stage: the one that writes its outputs."""
        return [b for b in self.blocks if any(s.id == stage_id for s in b.stages)][-1]

    @property
    def crossing(self) -> tuple[str, ...]:
        """Tensors that cross a block boundary (materialized buffers between loop blocks)."""
        return tuple(sorted({r for b in self.blocks for r in b.writes}))


def make_schedule(tg: TypedGraph, sink: DiagnosticSink, where: Callable[[tuple, bool], Location]) -> Schedule | None:
    order = list(tg.stages)
    position = {sid: i for i, sid in enumerate(order)}
    domains: dict[str, tuple[Axis, ...]] = {}
    phases = {}
    computed: dict[tuple, tuple] = {}  # alike stages (the same op, params and input type objects) share one
    for sid, st in tg.stages.items():
        key = (st.op, id(st.params), tuple(st.in_types), tuple(map(id, st.in_types.values())))
        if key not in computed:
            with in_stage(sid, st.op.name, st.loc, "computing its iteration domain"):
                computed[key] = (st.op.domain(st.in_types, st.params, tg.dims),
                                 st.op.phases(st.in_types, st.params, tg.dims))
        domains[sid], phases[sid] = computed[key]
    group_of: dict[str, int] = {}
    errors_before = sink.error_count
    for gi, group in enumerate(tg.spec.fuse):
        loc = where(("fuse", gi), False)
        unknown = [s for s in group if s not in tg.stages]
        if unknown:
            sink.error("illegal-fuse", f"`fuse` group {gi} names unknown stage(s) {', '.join(unknown)}", loc,
                       f"stages: {', '.join(order)}")
            continue
        again = [s for s in group if s in group_of]
        if again or len(group) < 2:
            sink.error("illegal-fuse", f"`fuse` group {gi} must name at least two stages, each in one group only"
                       + (f" ({', '.join(again)} already fused)" if again else ""), loc)
            continue
        members = sorted(group, key=position.__getitem__)
        span = order[position[members[0]]:position[members[-1]] + 1]
        if span != members:
            between = [s for s in span if s not in group]
            sink.error("illegal-fuse", f"`fuse` group {gi} is not adjacent in the schedule: "
                                       f"{', '.join(between)} runs between its stages", loc,
                       "fuse only consecutive stages, or add the stages in between to the group")
            continue
        first = members[0]
        bad = [s for s in members if domains[s] != domains[first]]
        if bad:
            sink.error("illegal-fuse", f"`fuse` group {gi}: `{bad[0]}` iterates "
                                       f"{' x '.join(a.describe() for a in domains[bad[0]])} but `{first}` iterates "
                                       f"{' x '.join(a.describe() for a in domains[first])}", loc,
                       "fused stages must share one iteration domain")
            continue
        illegal = [(s, port, ref) for s in members for port, ref in tg.stages[s].inputs.items()
                   if tg.producer(ref) in group and (port not in tg.stages[s].op.pointwise_inputs
                                                     or port in tg.stages[s].spec.reshape)]
        if illegal:
            s, port, ref = illegal[0]
            sink.error("illegal-fuse", f"`fuse` group {gi}: `{s}` reads `{ref}` (port `{port}`) beyond its own "
                                       f"domain point, so it needs all of `{tg.producer(ref)}` done first", loc,
                       "keep these stages in separate loop blocks")
            continue
        split = [s for s in members if phases[s]]
        if split:
            sink.error("illegal-fuse", f"`fuse` group {gi}: `{split[0]}` runs as {len(phases[split[0]])} loop blocks "
                                       f"({', '.join(ph.name for ph in phases[split[0]])}) to fill the GPU", loc,
                       f"set `split_keys: 1` on `{split[0]}` to fuse it, or keep it out of `fuse:` groups")
            continue
        for s in members:
            group_of[s] = gi
    if sink.error_count > errors_before:
        return None

    groups: list[list[str]] = []
    for sid in order:
        if groups and sid in group_of and group_of.get(groups[-1][0]) == group_of[sid]:
            groups[-1].append(sid)
        else:
            groups.append([sid])

    last_reader: dict[str, int] = {}  # the last block reading each tensor (groups are in topological order)
    for bi, members in enumerate(groups):
        for sid in members:
            for ref in tg.stages[sid].inputs.values():
                last_reader[ref] = bi
    outputs = set(tg.outputs.values())
    rank = _ref_order(tg)
    blocks: list[LoopBlock] = []
    for bi, members in enumerate(groups):
        made = [st.ref(p) for sid in members for st in [tg.stages[sid]] for p in st.out_types]
        inside = set(made)
        reads = sorted({ref for sid in members for ref in tg.stages[sid].inputs.values() if ref not in inside},
                       key=rank.__getitem__)
        writes = [r for r in made if r in outputs or last_reader.get(r, bi) > bi]  # read by a later block
        scratch = [r for r in made if r not in writes]
        if phases[members[0]]:
            blocks += _phase_blocks(len(blocks), tg.stages[members[0]], phases[members[0]], set(writes), scratch)
            continue
        blocks.append(LoopBlock(len(blocks), tuple(tg.stages[s] for s in members), domains[members[0]],
                                tuple(reads), tuple(writes), tuple(scratch)))
    return Schedule(tuple(blocks))


def _phase_blocks(first: int, st: Stage, phases: tuple[Phase, ...], needed: set[str],
                  scratch: list[str]) -> list[LoopBlock]:
    """One block per phase of a stage that runs as several: each reads the inputs and private
    tensors it names, and writes its private tensors and the outputs later blocks need."""
    blocks = []
    for i, ph in enumerate(phases):
        reads = tuple(dict.fromkeys(st.inputs[p] for p in ph.reads))
        reads += tuple(st.private_ref(n) for n in ph.private_reads)
        outs = [st.ref(p) for p in ph.writes]
        writes = tuple(r for r in outs if r in needed) + tuple(st.private_ref(n) for n in ph.private_writes)
        blocks.append(LoopBlock(first + i, (st,), ph.domain, reads, writes,
                                tuple(r for r in outs if r in scratch), ph, i))
    return blocks


def _ref_order(tg: TypedGraph) -> dict[str, int]:
    """Position of each tensor reference: inputs first, then in typing order (one dict, not a list
    search per reference, so scheduling stays linear in the stages)."""
    rank: dict[str, int] = {}
    for ref in list(tg.inputs) + list(tg.types):
        rank.setdefault(ref, len(rank))
    return rank
