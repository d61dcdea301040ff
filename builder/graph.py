"""KernelSpec -> typed stage DAG (networkx) for one size set, applying every graph rule.

Nodes: `input:NAME`, `stage:ID`, `output:NAME`. Edges carry the tensor reference, the consumer port
and the `TensorType` that flows on them. Errors are collected, never raised one at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import networkx as nx
from pydantic import ValidationError

from . import expr
from .diagnostics import DiagnosticSink, Location, did_you_mean
from .dims import resolve_dims
from .inits import RECIPES
from .spec import KernelSpec, StageSpec
from .specload import report_validation
from .stage_api import Dims, Op, StageError, TensorType, Tile
from .stagefault import in_stage
from .yamlsource import frozen_data

Where = Callable[[tuple, bool], Location]
PRIVATE = "~"  # marks an op-private tensor reference (`attn.~part_m`): no port or name can contain it


@dataclass(frozen=True)
class Stage:
    id: str
    op: Op
    params: Any
    spec: StageSpec
    loc: Location
    inputs: Mapping[str, str]            # port -> tensor reference (`q` or `attn.o`)
    in_types: Mapping[str, TensorType]
    out_types: Mapping[str, TensorType]
    tiles: Mapping[str, Tile] = field(default_factory=dict)  # tile param -> size as chosen
    private: Mapping[str, TensorType] = field(default_factory=dict)  # tensors its phases hand each other

    def ref(self, port: str) -> str:
        return f"{self.id}.{port}"

    def private_ref(self, name: str) -> str:
        return f"{self.id}.{PRIVATE}{name}"


@dataclass
class TypedGraph:
    """One kernel at one size set: dims, tensor types and the DAG."""

    spec: KernelSpec
    dims: Dims
    inputs: dict[str, TensorType]
    stages: dict[str, Stage]              # in topological order (ties broken by YAML order)
    outputs: dict[str, str]               # output name -> tensor reference
    types: dict[str, TensorType]          # every tensor reference -> type
    graph: nx.DiGraph = field(repr=False, default_factory=nx.DiGraph)
    input_locs: dict[str, Location] = field(default_factory=dict)  # where each input is declared

    def producer(self, ref: str) -> str | None:
        """The stage id producing `ref`, or None for a kernel input."""
        return ref.split(".", 1)[0] if "." in ref else None


def _split_ref(ref: str) -> tuple[str, str | None]:
    stage, _, port = ref.partition(".")
    return (stage, port) if port else (stage, None)


class _DimError(Exception):
    def __init__(self, error: expr.ExprError, path: tuple):
        super().__init__(str(error))
        self.error, self.path = error, path


def _dim(dims: Dims, text: Any, path: tuple):
    try:
        d = dims.dim(text)
    except expr.ExprError as e:
        raise _DimError(e, path) from None
    if not isinstance(d.value, int) or d.value < 1:
        raise _DimError(expr.ExprError("bad-value", f"extent `{text}` = {d.value} is not a whole number >= 1"),
                        path)
    return d


def _from_broken(ref: str, broken: set[str], spec: KernelSpec, ops: Mapping[str, Op]) -> bool:
    """Whether `ref` names a broken kernel input, or a real output port of a broken stage."""
    if ref in broken:
        return True
    sid, port = _split_ref(ref)
    if sid not in broken or port is None or sid not in spec.stages:
        return False
    op = ops.get(spec.stages[sid].op)
    return op is None or port in op.outputs


def _check_init_recipes(spec: KernelSpec, dims: Dims, types: Mapping[str, TensorType], sink: DiagnosticSink,
                        where: Where) -> None:
    """Each input's `init:` names a known recipe whose arguments validate and evaluate (no torch needed)."""
    recipes = {}
    for name, t in types.items():
        (recipe, args), = spec.inputs[name].init.items()
        path = ("inputs", name, "init", recipe)
        if recipe not in RECIPES:
            sink.error("unknown-key", f"input `{name}`: unknown init recipe `{recipe}`", where(path, True),
                       did_you_mean(str(recipe), RECIPES) or f"recipes: {', '.join(sorted(RECIPES))}")
            continue
        try:
            recipes[name] = ([d.value for d in t.shape], RECIPES[recipe].model_validate(args or {}), 0)
        except ValidationError as exc:
            report_validation(exc, sink, lambda p, key, path=path: where(path + tuple(p), key), RECIPES[recipe])
    for name, (shape, model, seed) in recipes.items():
        try:
            model.check_rank(name, shape)
            model.call(dims, shape, seed, recipes)
        except expr.ExprError as e:
            sink.error(e.kind, f"input `{name}` init: {e}", where(("inputs", name, "init"), False))
        except ValueError as e:
            sink.error("bad-value", f"input `{name}` init: {e}", where(("inputs", name, "init"), False))


def _check_bytes(types: Mapping[str, TensorType], size_set: str, max_bytes: int, sink: DiagnosticSink,
                 where: Where) -> bool:
    """The tensors a size set implies (inputs and every stage output) fit in `max_bytes` together."""
    total = sum(t.nbytes for t in types.values())
    if total <= max_bytes:
        return True
    largest = sorted(types.items(), key=lambda item: -item[1].nbytes)[:3]
    shown = ", ".join(f"`{ref}` {t.describe()} ({t.nbytes:,} B)" for ref, t in largest)
    sink.error("tensor-too-large", f"size set `{size_set}` makes the kernel's tensors {total:,} bytes, more than "
                                   f"the limit of {max_bytes:,}; largest: {shown}",
               where(("sizes", size_set), False), "use smaller sizes, or raise the limit with `--max-bytes`")
    return False


def build_graph(spec: KernelSpec, size_set: str, ops: Mapping[str, Op], sink: DiagnosticSink,
                where: Where, max_bytes: int) -> TypedGraph | None:
    """Type-check `spec` at `size_set`; returns None when an error makes a typed graph impossible."""
    return _GraphBuilder(spec, ops, sink, where).build(size_set, max_bytes)


class _GraphBuilder:
    """The steps of type-checking one kernel at one size set, in order; each reports its own errors
    and records what later steps need. `broken` holds inputs and stages whose error is already
    reported, so that references to them add no noise."""

    def __init__(self, spec: KernelSpec, ops: Mapping[str, Op], sink: DiagnosticSink, where: Where):
        self.spec, self.ops, self.sink, self.where = spec, ops, sink, where
        self.g: nx.DiGraph = nx.DiGraph()
        self.broken: set[str] = set()
        self.input_types: dict[str, TensorType] = {}
        self.parsed: dict[str, tuple[Op, Any]] = {}     # stage id -> (op, validated params)
        self.ports: dict[str, Mapping[str, str]] = {}   # stage id -> its op's input ports for its params
        self.producers: dict[str, str] = {}             # `stage.port` -> stage id
        self.outputs: dict[str, str] = {}
        self.available: dict[str, TensorType] = {}      # every tensor reference typed so far
        self.stages: dict[str, Stage] = {}
        self.topo: list[str] = []                       # stage ids in topological order, once acyclic
        self.forward = True                             # every stage reads only stages above it in the file
        # Alike stages (a chain of one op, a model's repeated layers) are checked once: params by their YAML
        # data, each op's rules by (op, params, input types), whose values are shared by equal ones.
        self._params: dict[tuple, Any] = {}
        self._inferred: dict[tuple, tuple] = {}
        self._types: dict[TensorType, TensorType] = {}

    def build(self, size_set: str, max_bytes: int) -> TypedGraph | None:
        errors_before = self.sink.error_count
        dims = resolve_dims(self.spec, size_set, self.sink, self.where)
        if dims is None:
            return None
        self.type_inputs(dims)
        if not _check_bytes(self.input_types, size_set, max_bytes, self.sink, self.where):
            return None  # nothing else about these sizes is worth checking
        _check_init_recipes(self.spec, dims, self.input_types, self.sink, self.where)
        self.parse_stages()
        self.wire_stages()
        self.wire_outputs()
        if self.report_cycle():
            return None
        self.infer_stages(dims)
        self.warn_unused()
        fits = _check_bytes(self.available, size_set, max_bytes, self.sink, self.where)
        if self.sink.error_count > errors_before or not fits:
            return None
        for _, _, data in self.g.edges(data=True):
            data["type"] = self.available[data["ref"]]
        locs = {name: self.where(("inputs", name), True) for name in self.input_types}
        return TypedGraph(self.spec, dims, self.input_types, self.stages, self.outputs, self.available, self.g,
                          locs)

    def type_inputs(self, dims: Dims) -> None:
        for name, t in self.spec.inputs.items():
            try:
                shape = tuple(_dim(dims, d, ("inputs", name, "shape", i)) for i, d in enumerate(t.shape))
            except _DimError as e:
                self.sink.error(e.error.kind, f"input `{name}`: {e.error}", self.where(e.path, False),
                                "define the dim under `dims:` or in every size set"
                                if e.error.kind == "undefined-dim" else "")
                self.broken.add(name)
                continue
            self.input_types[name] = self._shared(TensorType(shape, t.dtype, t.layout))
            self.g.add_node(f"input:{name}", kind="input", name=name)
        self.available.update(self.input_types)

    def parse_stages(self) -> None:
        """Ops and params first: they decide which ports exist."""
        for sid, st in self.spec.stages.items():
            op = self.ops.get(st.op)
            if op is None:
                self.sink.error("unknown-op", f"stage `{sid}`: unknown op `{st.op}`",
                                self.where(("stages", sid, "op"), False),
                                did_you_mean(st.op, self.ops) or f"known ops: {', '.join(sorted(self.ops))}")
                self.broken.add(sid)
                continue
            try:
                params = self._validated(op, st.params)
            except ValidationError as exc:
                report_validation(exc, self.sink,
                                  lambda p, key, sid=sid: self.where(("stages", sid, "params") + tuple(p), key),
                                  op.Params)
                self.broken.add(sid)
                continue
            try:
                self.ports[sid] = op.ports(params)
            except StageError as e:
                self.sink.error(e.rule, f"stage `{sid}` ({op.name}): {e}",
                                self.where(("stages", sid, "params") + ((e.param,) if e.param else ()), False), e.hint)
                self.broken.add(sid)
                continue
            self.parsed[sid] = (op, params)
            self.g.add_node(f"stage:{sid}", kind="stage", name=sid)
        self.producers = {f"{sid}.{port}": sid for sid, (op, _) in self.parsed.items() for port in op.outputs}

    def _validated(self, op: Op, params: dict) -> Any:
        """`op`'s params model of `params`, one object for equal YAML data (params are frozen)."""
        key = (op, frozen_data(params))
        if key not in self._params:
            self._params[key] = op.Params.model_validate(params)
        return self._params[key]

    def _shared(self, t: TensorType) -> TensorType:
        """The one object standing for types equal to `t`."""
        return self._types.setdefault(t, t)

    def wire_stages(self) -> None:
        above: set[str] = set()
        edges: list[tuple[str, str, dict]] = []  # added at once, in order (one edge per pair: the last wins)
        for sid, (op, _) in self.parsed.items():
            st, ports = self.spec.stages[sid], self.ports[sid]
            for port in ports:
                if port not in st.inputs and port not in op.optional_inputs:
                    self.sink.error("missing-key", f"stage `{sid}` ({op.name}) does not wire input port `{port}`",
                                    self.where(("stages", sid, "in"), False), f"add `{port}: <tensor>` under `in:`")
            for port, ref in st.inputs.items():
                if port not in ports:
                    self.sink.error("unknown-key", f"op `{op.name}` has no input port `{port}`",
                                    self.where(("stages", sid, "in", port), True),
                                    did_you_mean(port, ports) or f"its ports: {', '.join(ports)}")
                elif ref in self.input_types:
                    edges.append((f"input:{ref}", f"stage:{sid}", {"ref": ref, "port": port}))
                elif ref in self.producers:
                    edges.append((f"stage:{self.producers[ref]}", f"stage:{sid}", {"ref": ref, "port": port}))
                    self.forward = self.forward and self.producers[ref] in above
                elif not _from_broken(ref, self.broken, self.spec, self.ops):  # else: it has its own error
                    self.sink.error("unknown-ref", f"stage `{sid}` input `{port}` reads `{ref}`, which no kernel "
                                                   "input or stage output provides",
                                    self.where(("stages", sid, "in", port), False),
                                    did_you_mean(ref, list(self.input_types) + list(self.producers))
                                    or "write a kernel input name or `stage_id.output_port`")
            above.add(sid)
        self.g.add_edges_from(edges)

    def wire_outputs(self) -> None:
        for name, out in self.spec.outputs.items():
            for i, other in enumerate(out.tolerance.given if out.tolerance else []):
                if other == name or other not in self.spec.outputs:
                    self.sink.error("unknown-ref", f"output `{name}`: `given` names `{other}`, which is not another "
                                                   "output of this kernel",
                                    self.where(("outputs", name, "tolerance", "given", i), False),
                                    did_you_mean(other, [o for o in self.spec.outputs if o != name])
                                    or "name outputs whose produced values the reference starts from")
            ref = out.from_
            if ref in self.producers or ref in self.input_types:
                self.outputs[name] = ref
                src = f"stage:{self.producers[ref]}" if ref in self.producers else f"input:{ref}"
                self.g.add_node(f"output:{name}", kind="output", name=name)
                self.g.add_edge(src, f"output:{name}", ref=ref, port=name)
            elif not _from_broken(ref, self.broken, self.spec, self.ops):
                self.sink.error("output-not-produced", f"output `{name}` is taken from `{ref}`, which nothing "
                                                       "produces", self.where(("outputs", name, "from"), False),
                                did_you_mean(ref, list(self.producers) + list(self.input_types))
                                or "name `stage_id.output_port`")

    def report_cycle(self) -> bool:
        """Report a dependency cycle at the reference that reads "backwards" in file order (the one
        that closes the loop); True when there is one. The topological order is kept for inference:
        one sort serves both, and the (slower) cycle search runs only when the sort fails. When every stage
        reads only stages above it, there is no cycle and the sort's order of stages is the file's."""
        if self.forward:
            self.topo = list(self.parsed)
            return False
        order = {sid: i for i, sid in enumerate(self.spec.stages)}
        try:
            nodes = nx.lexicographical_topological_sort(
                self.g, key=lambda n: (order.get(n.split(":", 1)[1], -1) if n.startswith("stage:") else -1, n))
            self.topo = [n.split(":", 1)[1] for n in nodes if n.startswith("stage:")]
            return False
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self.g)
        edges = [(u.split(":", 1)[1], v.split(":", 1)[1]) for u, v in cycle]
        start = next((i for i, (u, v) in enumerate(edges) if order[v] <= order[u]), 0)
        edges = edges[start:] + edges[:start]
        producer, consumer = edges[0]
        edge = self.g.edges[f"stage:{producer}", f"stage:{consumer}"]
        path = [v for _, v in edges] + [edges[0][1]]
        self.sink.error("cycle", f"stages form a cycle: {' -> '.join(path)} (stage `{consumer}` input "
                                 f"`{edge['port']}` reads `{edge['ref']}`, produced later in the loop)",
                        self.where(("stages", consumer, "in", edge["port"]), False),
                        "a stage may only read tensors produced before it")
        return True

    def infer_stages(self, dims: Dims) -> None:
        """Each stage's shape rule and tiles, in topological order (ties broken by YAML order)."""
        for sid in self.topo:
            self.infer_stage(sid, dims)

    def infer_stage(self, sid: str, dims: Dims) -> None:
        op, params = self.parsed[sid]
        st = self.spec.stages[sid]
        ports = self.ports[sid]
        found = {port: self.available.get(ref) for port, ref in st.inputs.items() if port in ports}
        ins = {port: t for port, t in found.items() if t is not None}
        if len(ins) < len(found) or not ins.keys() >= set(ports) - op.optional_inputs:
            return  # an upstream error already explains this stage
        if st.reshape:
            read = self.reshaped(sid, st, ins, dims)
            if read is None:
                return
            ins = read
        stage_loc = self.where(("stages", sid), True)
        key = (op, id(params), tuple(ins), tuple(map(id, ins.values())))  # params and types: shared objects
        try:
            if key not in self._inferred:
                with in_stage(sid, op.name, stage_loc, "inferring its types and tiles", (StageError, expr.ExprError)):
                    outs = op.infer(ins, params, dims)
                    tiles = op.tiles(ins, params, dims)  # explicit sizes checked, defaults chosen to fit
                    private = op.private(ins, params, dims)
                self._inferred[key] = ({port: self._shared(t) for port, t in outs.items()}, tiles,
                                       {name: self._shared(t) for name, t in private.items()})
            outs, tiles, private = self._inferred[key]
        except StageError as e:
            if e.port is not None:
                ref = st.inputs[e.port]
                src = f"stage `{ref.split('.')[0]}`" if "." in ref else "kernel input"
                msg = f"stage `{sid}` ({op.name}): {e} — `{ref}` comes from {src} as {ins[e.port].describe()}"
                loc = self.where(("stages", sid, "in", e.port), False)
            else:
                msg = f"stage `{sid}` ({op.name}): {e}"
                loc = self.where(("stages", sid, "params") + ((e.param,) if e.param else ()), False)
            self.sink.error(e.rule, msg, loc, e.hint)
            return
        except expr.ExprError as e:
            self.sink.error(e.kind, f"stage `{sid}`: {e}", self.where(("stages", sid, "params"), False))
            return
        for port, t in outs.items():
            self.available[f"{sid}.{port}"] = t
        stage = Stage(sid, op, params, st, stage_loc, dict(st.inputs), ins, dict(outs), dict(tiles), dict(private))
        for name, t in private.items():
            self.available[stage.private_ref(name)] = t
        self.stages[sid] = stage

    def reshaped(self, sid: str, st: StageSpec, ins: dict[str, TensorType],
                 dims: Dims) -> dict[str, TensorType] | None:
        """The stage's inputs with `reshape:` applied: the same elements read with another shape (a
        RoPE layout stays only on a tensor whose lanes keep their extent). None after an error."""
        out = dict(ins)
        for port, texts in st.reshape.items():
            path = ("stages", sid, "reshape", port)
            if port not in ins:
                self.sink.error("unknown-key", f"stage `{sid}` reshapes `{port}`, which is not one of its wired "
                                               "inputs", self.where(path, True),
                                did_you_mean(port, ins) or f"its inputs: {', '.join(ins)}")
                return None
            try:
                shape = tuple(_dim(dims, d, path + (i,)) for i, d in enumerate(texts))
            except _DimError as e:
                self.sink.error(e.error.kind, f"stage `{sid}` reshape `{port}`: {e.error}", self.where(e.path, False))
                return None
            t = ins[port]
            if math.prod(d.value for d in shape) != math.prod(t.numel_shape):
                self.sink.error("shape-mismatch", f"stage `{sid}` reads `{st.inputs[port]}` ({t.describe()}) as "
                                                  f"[{', '.join(d.text for d in shape)}] = "
                                                  f"{[d.value for d in shape]}: not the same number of elements",
                                self.where(path, False), "a reshape keeps every element: the extents' products must "
                                                         "be equal")
                return None
            keeps_lanes = bool(shape) and bool(t.shape) and shape[-1].value == t.shape[-1].value
            if t.layout is not None and not keeps_lanes:
                self.sink.error("layout-mismatch", f"stage `{sid}` reshape `{port}` changes the last axis of a tensor "
                                                   f"carrying RoPE lanes in `{t.layout.value}` layout",
                                self.where(path, False), "keep the last extent when reshaping rotary lanes")
                return None
            out[port] = self._shared(TensorType(shape, t.dtype, t.layout))
        return out

    def warn_unused(self) -> None:
        """Unused inputs and stages are warnings: the kernel still runs."""
        read = {ref for st in self.spec.stages.values() for ref in st.inputs.values()} | set(self.outputs.values())
        for name in self.spec.inputs:
            if name not in read:
                self.sink.warn("unused", f"input `{name}` is never read", self.where(("inputs", name), True),
                               "remove it, or wire it into a stage")
        for sid, (op, _) in self.parsed.items():
            if not any(f"{sid}.{port}" in read for port in op.outputs):
                self.sink.warn("unused", f"stage `{sid}` produces nothing that a stage or output reads",
                               self.where(("stages", sid), True), "remove it, or take one of its outputs")
