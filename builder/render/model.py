"""Format-neutral model of what `build --graph` shows, and the diff of two such models.

Every renderer (text, dot, mermaid, json, svg/png) draws a `KernelModel`; none of them looks at the
typed graph directly. Ids are derived from names only (`input:q`, `stage:gather`, `output:o_packed`,
`block:extract_rotate`), never from counters or hashes, so they stay put across edits that do not
touch them. Only stdlib and the builder's graph/schedule types are used here (no torch, no triton).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from .. import sol
from ..graph import PRIVATE

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
MARKS = {ADDED: "+", REMOVED: "-", CHANGED: "~", None: " "}


@dataclass(frozen=True)
class TypeInfo:
    """A tensor type as shown on an edge: dims as written, their values, dtype and RoPE layout."""

    dims: tuple[str, ...]
    values: tuple[int, ...]
    dtype: str
    layout: Optional[str] = None

    @classmethod
    def of(cls, t) -> "TypeInfo":
        layout = t.layout.value if t.layout is not None else None
        return cls(tuple(d.text for d in t.shape), tuple(d.value for d in t.shape), t.dtype.value, layout)

    @property
    def shape(self) -> str:
        return f"[{', '.join(self.dims)}]=[{', '.join(map(str, self.values))}]"

    @property
    def kind(self) -> str:
        return self.dtype + (f" {self.layout}" if self.layout else "")

    def describe(self) -> str:
        return f"{self.shape} {self.kind}"

    def was(self, old: "TypeInfo") -> str:
        """What `old` said, shortened to the part that differs from `self`."""
        return old.kind if old.shape == self.shape else old.describe()


@dataclass
class Node:
    id: str                          # `input:q`, `stage:gather`, `output:o_packed`, `block:NAME` (placeholder)
    kind: str                        # input | stage | output | placeholder
    name: str
    op: Optional[str] = None         # stages
    params: Optional[str] = None     # stages: Op.key_params
    file: Optional[str] = None
    line: Optional[int] = None
    type: Optional[TypeInfo] = None  # inputs and outputs
    ref: Optional[str] = None        # outputs: the tensor they take
    block: Optional[str] = None      # stages: id of their loop block
    outs: tuple[tuple[str, TypeInfo], ...] = ()  # stages: output port -> type
    status: Optional[str] = None
    was: Optional[str] = None        # changed: the old value of what changed

    @property
    def call(self) -> str:
        return f"{self.op}({self.params})"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else ""

    def out_ref(self, port: str) -> str:
        """The tensor a stage node's output `port` is: `ID.port`, or for the node of an earlier phase of
        a stage run as several blocks (`stage:ID:PHASE`), its private `ID.~port`."""
        _, stage, *phase = self.id.split(":")
        return f"{stage}.{PRIVATE}{port}" if phase else f"{stage}.{port}"


@dataclass
class Edge:
    src: str
    dst: str
    ref: str                         # tensor name: `q` or `attn.o`
    port: str                        # consumer port (output name for edges into outputs)
    type: TypeInfo
    crossing: bool                   # a buffer that crosses a loop-block boundary
    status: Optional[str] = None
    was: Optional[str] = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.src, self.ref, self.dst, self.port)

    @property
    def id(self) -> str:
        return f"{self.src}->{self.dst}.{self.port}"

    @property
    def tensor(self) -> str:
        """Tensor name, with the consumer port when it is not the tensor's own port name."""
        leaf = self.ref.rsplit(".", 1)[-1]
        return self.ref if leaf == self.port else f"{self.ref} (as {self.port})"


@dataclass(frozen=True)
class Fit:
    """A loop block compiled for one `--target` GPU: lines for clusters and its JSON figures."""

    target: str
    lines: tuple[str, ...]
    data: dict


@dataclass
class Block:
    id: str                          # `block:` + stage ids joined by `_`
    index: int
    name: str
    stages: tuple[str, ...]          # stage ids
    domain: str
    axes: tuple[dict, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    scratch: tuple[str, ...]
    bytes: Optional[int] = None      # speed of light: bytes of reads + writes
    flops: Optional[int] = None
    status: Optional[str] = None
    was: Optional[str] = None
    fits: tuple[Fit, ...] = ()       # `build --graph --target`: one per target

    @property
    def cost(self) -> str:
        """`172 kB moved, 1.05 MFLOP, 6.10 FLOP/B`, or "" when no speed-of-light figures exist."""
        parts = []
        if self.bytes is not None:
            parts.append(f"{si(self.bytes, 'B')} moved")
        if self.flops is not None:
            parts.append(si(self.flops, "FLOP"))
            if self.bytes and self.flops:
                parts.append(f"{self.flops / self.bytes:.2f} FLOP/B")
        return ", ".join(parts)


@dataclass
class KernelModel:
    name: str
    file: str
    line: int
    sizes: str
    dims: dict[str, int]
    nodes: list[Node]
    edges: list[Edge]
    blocks: list[Block]
    against: Optional[str] = None    # diff: `NAME (FILE:LINE)` of the kernel compared against
    doc: str = ""

    @property
    def title(self) -> str:
        return f"kernel {self.name} ({self.file}:{self.line}), sizes {self.sizes}"

    @property
    def diffing(self) -> bool:
        return self.against is not None

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def block_nodes(self, block: Block) -> list[Node]:
        return [n for n in self.nodes if n.block == block.id]

    def summary(self) -> dict[str, dict[str, int]]:
        """Diff counts: {"stages": {"added": 1, ...}, ...} (statuses that occur only)."""
        out: dict[str, dict[str, int]] = {}
        groups: dict[str, list] = {"inputs": [n for n in self.nodes if n.kind == "input"],
                  "stages": [n for n in self.nodes if n.kind == "stage"],
                  "outputs": [n for n in self.nodes if n.kind == "output"],
                  "edges": self.edges, "loop blocks": self.blocks}
        for what, items in groups.items():
            counts = {s: sum(1 for x in items if x.status == s) for s in (ADDED, REMOVED, CHANGED)}
            out[what] = {s: c for s, c in counts.items() if c}
        return out


def si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix: 172032 B -> `172 kB`; deterministic."""
    if value < 1000:
        return f"{value:g} {unit}"
    for prefix in "kMGTPE":
        value /= 1000
        if value < 1000 or prefix == "E":
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {prefix}{unit}"
    raise AssertionError


def from_view(tg, sched) -> KernelModel:
    """Model of one kernel at one size set from its TypedGraph and Schedule. A stage that runs as
    several loop blocks (phases) has a node in each: the last keeps the stage's id, the others are
    `stage:ID:PHASE`, and the tensors the phases hand each other are edges between them."""
    spec = tg.spec
    crossing = set(sched.crossing)
    block_id = {st.id: f"block:{sched.block_of(st.id).name}" for st in tg.stages.values()}

    def node_id(st, b) -> str:
        return f"stage:{st.id}" if b.phase is None or sched.block_of(st.id) is b else f"stage:{st.id}:{b.phase.name}"

    nodes: list[Node] = []
    for name, t in tg.inputs.items():
        nodes.append(Node(f"input:{name}", "input", name, type=TypeInfo.of(t)))
    for b in sched.blocks:
        for st in b.stages:
            last = node_id(st, b) == f"stage:{st.id}"
            reshapes = "".join(f", {port} read as [{', '.join(d.text for d in st.in_types[port].shape)}]"
                               for port in st.spec.reshape)
            nodes.append(Node(node_id(st, b), "stage", st.id if last else f"{st.id} ({b.phase.name})", op=st.op.name,
                              params=st.op.key_params(st.params, st.tiles) + reshapes, file=st.loc.file,
                              line=st.loc.line,
                              block=f"block:{b.name}",
                              outs=tuple((p, TypeInfo.of(t)) for p, t in st.out_types.items()) if last else
                              tuple((n, TypeInfo.of(st.private[n])) for n in b.phase.private_writes)))
    for name, ref in tg.outputs.items():
        nodes.append(Node(f"output:{name}", "output", name, type=TypeInfo.of(tg.types[ref]), ref=ref))

    def source(ref: str) -> str:
        producer = tg.producer(ref)
        return f"stage:{producer}" if producer else f"input:{ref}"

    edges: list[Edge] = []
    writer: dict[str, str] = {}  # private tensor -> the phase node that writes it
    for b in sched.blocks:
        for st in b.stages:
            ports = b.phase.reads if b.phase else tuple(st.inputs)
            for port in ports:
                ref = st.inputs[port]
                producer = tg.producer(ref)
                cross = ref in crossing and producer is not None and block_id[producer] != f"block:{b.name}"
                edges.append(Edge(source(ref), node_id(st, b), ref, port, TypeInfo.of(tg.types[ref]), cross))
            for name in b.phase.private_reads if b.phase else ():
                ref = st.private_ref(name)
                edges.append(Edge(writer[ref], node_id(st, b), ref, name, TypeInfo.of(st.private[name]), True))
            for name in b.phase.private_writes if b.phase else ():
                writer[st.private_ref(name)] = node_id(st, b)
    for name, ref in tg.outputs.items():
        edges.append(Edge(source(ref), f"output:{name}", ref, name, TypeInfo.of(tg.types[ref]),
                          tg.producer(ref) is not None))

    blocks = [_block(tg, b) for b in sched.blocks]
    return KernelModel(spec.name, spec.loc.file, spec.loc.line, tg.dims.size_set, dict(tg.dims), nodes, edges,
                       blocks, doc=spec.doc)


def _block(tg, b) -> Block:
    axes = tuple({"var": a.var, "extent": a.extent.text, "value": a.extent.value, "tile": a.tile,
                  "trips": a.trips, "parallel": a.parallel} for a in b.domain)
    nbytes, flops = _cost(tg, b)
    return Block(f"block:{b.name}", b.index, b.name, tuple(st.id for st in b.stages), b.describe_domain(), axes,
                 tuple(b.reads), tuple(b.writes), tuple(b.scratch), nbytes, flops)


def _cost(tg, b) -> tuple[int, int]:
    """Speed-of-light bytes and FLOPs of a block (see builder.sol)."""
    cost = sol.block_cost(b)
    return cost.bytes, cost.total_flops


def with_fits(m: KernelModel, fits: dict[str, tuple[Fit, ...]]) -> KernelModel:
    """`m` with compiled-block figures on its blocks, keyed by block name (removed blocks get none)."""
    blocks = [replace(b, fits=fits.get(b.name, ())) if b.status != REMOVED else b for b in m.blocks]
    return replace(m, blocks=blocks)


# --- diff ---------------------------------------------------------------------------------------

def empty_like(other: KernelModel) -> KernelModel:
    return KernelModel(other.name, "", 0, other.sizes, {}, [], [], [])


def diff(new: Optional[KernelModel], old: Optional[KernelModel]) -> KernelModel:
    """`new` annotated against `old`: every node, edge and block gets status added/removed/changed/None.

    Removed items come from `old` and are placed next to where they used to be. Stages compare by id
    (op and key params), inputs by type, outputs by tensor and type, edges by (producer, tensor,
    consumer, port) and then type and buffer-ness, loop blocks by name and then domain and cost.
    Line numbers never count as a change.
    """
    if new is None:
        if old is None:
            raise ValueError("diff needs at least one side")
        new = empty_like(old)
    old = old or empty_like(new)

    nodes: list[Node] = []
    for kind in ("input", "stage", "output"):
        nodes += _merge([n for n in new.nodes if n.kind == kind], [n for n in old.nodes if n.kind == kind],
                        lambda n: n.id, _node_change)
    edges = _merge(new.edges, old.edges, lambda e: e.key, _edge_change)
    blocks = _merge(new.blocks, old.blocks, lambda b: b.id, _block_change)
    # a removed block whose stages all live on in other blocks would be an empty cluster: give it a placeholder
    for b in blocks:
        if b.status == REMOVED and not any(n.block == b.id and n.kind == "stage" for n in nodes):
            nodes.append(Node(b.id, "placeholder", b.name, block=b.id, status=REMOVED,
                              was=f"stages now in other blocks: {', '.join(b.stages)}"))
    against = f"{old.name} ({old.file}:{old.line})" if old.line else "nothing"
    merged = replace(new, nodes=nodes, edges=edges, blocks=blocks, against=against)
    if not new.line:  # the kernel exists only on the old side
        merged = replace(merged, file=old.file, line=old.line, sizes=old.sizes, dims=old.dims, doc=old.doc,
                         against=against)
    return merged


def _merge(new_items: list, old_items: list, key, change) -> list:
    old_by_key = {key(x): x for x in old_items}
    new_keys = {key(x) for x in new_items}
    out = []
    for x in new_items:
        before = old_by_key.get(key(x))
        if before is None:
            out.append(replace(x, status=ADDED))
        else:
            was = change(x, before)
            out.append(replace(x, status=CHANGED, was=was) if was is not None else replace(x, status=None))
    # removed items go right after the item that preceded them on the old side
    at = 0
    for x in old_items:
        if key(x) in new_keys:
            at = next(j for j, y in enumerate(out) if key(y) == key(x)) + 1
        else:
            out.insert(at, replace(x, status=REMOVED))
            at += 1
    return out


def _node_change(new: Node, old: Node) -> Optional[str]:
    if new.kind == "stage":
        return None if (new.op, new.params) == (old.op, old.params) else old.call
    assert new.type is not None and old.type is not None  # inputs and outputs carry their type
    if new.kind == "output" and new.ref != old.ref:
        return f"{old.ref} {old.type.describe()}"
    return None if new.type == old.type else new.type.was(old.type)


def _edge_change(new: Edge, old: Edge) -> Optional[str]:
    parts = []
    if new.type != old.type:
        parts.append(new.type.was(old.type))
    if new.crossing != old.crossing:
        parts.append("a buffer between loop blocks" if old.crossing else "local to its loop block")
    return ", ".join(parts) or None


def _block_change(new: Block, old: Block) -> Optional[str]:
    parts = []
    if new.domain != old.domain:
        parts.append(old.domain)
    if (new.bytes, new.flops) != (old.bytes, old.flops):
        parts.append(old.cost)
    return "; ".join(parts) or None

